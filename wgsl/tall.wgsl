// The tall subgroup tiles' accumulators and their walk over the row groups,
// shared by matmul_cpu_tall (wgsl/matmul_subgroup.wgsl) and conv2d_cpu_tall
// (wgsl/conv2d_subgroup.wgsl). Not a shader of its own: the ops compile it after
// wgsl/subgroup.wgsl and before the kernel file, which supplies `add_share`
// (one group's accumulators plus its rows' products) and `store_rows`.
//
// A subgroup owns TALL_BLOCK rows of the output (8, 16, 32 or 64: the op picks
// the smallest that holds them), in groups of 8, and each lane 4 of its
// columns, so every lane needs every row of the shared operand (each lane loads
// one row of a group, the broadcasts hand them round) but only its own 4 columns
// of the other. Per 4-deep k step a lane then loads 12 vec4s for 1,024 FMAs,
// where the 8×8-per-lane kernels load 9 for 256: on a driver whose every storage
// load is a loop over the lanes (llvmpipe before Mesa 23), loads are what the
// time goes to, and the spilled accumulators cost far less.
override TALL_BLOCK: u32 = 64u;

// Where this invocation's block is, for the kernel's add_share and store_rows:
// batch item (image), first row (output channel), first of the lane's 4
// columns (pixels), and lane. Set once at the kernel's start.
struct TallAt {
    item: u32,
    row: u32,
    col: u32,
    lane: u32,
}

var<private> tall_at: TallAt;

// A lane's accumulators for one group of 8 rows and its 4 columns, each as
// acc[column][row]: `lo` rows 0..3, `hi` rows 4..7 of the group.
struct Rows8 {
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
}

// All TALL_BLOCK rows, 8 groups (those past TALL_BLOCK fold away at pipeline
// creation). Named members, never an indexed array: see wgsl/matmul.wgsl's
// CPU section.
struct Tall {
    g0: Rows8,
    g1: Rows8,
    g2: Rows8,
    g3: Rows8,
    g4: Rows8,
    g5: Rows8,
    g6: Rows8,
    g7: Rows8,
}

// Add rows 0..3 (`lo`) and 4..7 (`hi`) of the shared operand over k..k+3, each
// as m[row] (rows_lo's layout), times the lane's columns `b` (m[column] over k).
// transpose(x) * y in sight of the product, as the 8×8 kernels write it, so the
// same bits.
fn add_rows8(acc: ptr<function, Rows8>, lo: mat4x4<f32>, hi: mat4x4<f32>, b: mat4x4<f32>) {
    (*acc).lo += transpose(lo) * b;
    (*acc).hi += transpose(hi) * b;
}

// k..k+3 of every group: add_share(group's accumulators, its first row, k, b).
// By value: naga 30's SPIR-V writer panics on a pointer to a member of a
// pointed-to struct passed as an argument ("Expression [N] is not cached").
fn add_tall(acc: ptr<function, Tall>, k: u32, b: mat4x4<f32>) {
    (*acc).g0 = add_share((*acc).g0, 0u, k, b);
    if (TALL_BLOCK > 8u) {
        (*acc).g1 = add_share((*acc).g1, 8u, k, b);
    }
    if (TALL_BLOCK > 16u) {
        (*acc).g2 = add_share((*acc).g2, 16u, k, b);
        (*acc).g3 = add_share((*acc).g3, 24u, k, b);
    }
    if (TALL_BLOCK > 32u) {
        (*acc).g4 = add_share((*acc).g4, 32u, k, b);
        (*acc).g5 = add_share((*acc).g5, 40u, k, b);
        (*acc).g6 = add_share((*acc).g6, 48u, k, b);
        (*acc).g7 = add_share((*acc).g7, 56u, k, b);
    }
}

fn store_tall(acc: Tall) {
    store_rows(0u, acc.g0);
    if (TALL_BLOCK > 8u) {
        store_rows(8u, acc.g1);
    }
    if (TALL_BLOCK > 16u) {
        store_rows(16u, acc.g2);
        store_rows(24u, acc.g3);
    }
    if (TALL_BLOCK > 32u) {
        store_rows(32u, acc.g4);
        store_rows(40u, acc.g5);
        store_rows(48u, acc.g6);
        store_rows(56u, acc.g7);
    }
}
