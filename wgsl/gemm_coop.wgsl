// wgsl/gemm_tile.wgsl's `gemm_tile` on cooperative matrices (tensor cores):
// the same contract (load_a, load_b, store, p.k; 16×16 threads), so matmul_gpu
// and conv2d_gpu run it unchanged when the ops compile this file in place of
// gemm_tile.wgsl, after wgsl/coop8.wgsl or wgsl/coop16.wgsl (CoopA/B/C, FRAG).
//
// Operands are rounded to f16 as they are staged (activations included, as
// PyTorch's fp16 path does), products accumulate in f32. Per workgroup:
// - the K loop stages TILE_K-deep slabs of A and B in workgroup memory, double
//   buffered: the next slab is loaded while the current one is multiplied, so
//   one barrier per step;
// - each subgroup owns a block of BLOCK_ROWS × 2 FRAG×FRAG output fragments
//   (1×2, or 2×2 where the output has the rows: each A fragment then feeds two
//   products, each B fragment two), so the tile is 64 columns by `coop_rows()`
//   rows: 64 or 128 for 16×16 fragments on 32-lane subgroups and for 8×8 on
//   8-lane ones (src/gpu/coop.rs picks, and refuses a pairing that does not fit);
// - results leave through a per-subgroup FRAG×FRAG scratch, so `store` sees one
//   element at a time (alpha, bias and the output layout stay the kernel's;
//   TRANSPOSE_C says which way the output runs), `store_pair` two neighbouring
//   columns with GEGLU.
// Subgroup s is taken to be invocations s·SUBGROUP_SIZE.. of the workgroup, as
// Vulkan and Metal lay them out; the start-up self-test (src/ops/matmul.rs)
// compares this kernel with gemm_tile.wgsl's before easel chooses it.
// naga's SPIR-V writer needs every coopLoad/coopStore pointer index and stride
// to be a named `let` (an inline expression panics: "Expression [N] is not cached").

// Lanes per subgroup (the adapter's, fixed: subgroup_min_size == max).
override SUBGROUP_SIZE: u32 = 32u;
// Fragment rows of each subgroup's block: 1 or 2.
override BLOCK_ROWS: u32 = 1u;

const THREADS: u32 = 256u;
const COLS: u32 = 64u;
const MAX_ROWS: u32 = 128u;
const TILE_K: u32 = 32u;
const SLAB_A: u32 = 4096u; // MAX_ROWS × TILE_K
const SLAB_B: u32 = 2048u; // TILE_K × COLS

var<workgroup> coop_a: array<f16, 8192>;  // 2 slabs [rows, TILE_K], row-major
var<workgroup> coop_b: array<f16, 4096>;  // 2 slabs [TILE_K, COLS], row-major
var<workgroup> coop_c: array<f32, 2048>;  // FRAG × FRAG per subgroup

// Rows of the output tile: BLOCK_ROWS × 2 fragments per subgroup, COLS / FRAG
// per row of fragments.
fn coop_rows() -> u32 {
    return (THREADS / SUBGROUP_SIZE) * 2u * BLOCK_ROWS * FRAG * FRAG / COLS;
}

// An operand rounded to f16; clamped so a large activation saturates rather
// than becoming an indeterminate value.
fn to_half(x: f32) -> f16 {
    return f16(clamp(x, -65504.0, 65504.0));
}

// Stage slab `k0..k0 + TILE_K` of A (rows i0..) and B (columns j0..) into
// slab `buf`. Consecutive threads take consecutive addresses of the operand as
// stored (`*_along_k`: contiguous along k), as in gemm_tile.wgsl.
fn coop_stage(z: u32, i0: u32, j0: u32, k0: u32, buf: u32, t: u32, rows: u32,
              a_along_k: bool, b_along_k: bool) {
    for (var e = t; e < rows * TILE_K; e += THREADS) {
        var i = e % rows;
        var kk = e / rows;
        if (a_along_k) {
            i = e / TILE_K;
            kk = e % TILE_K;
        }
        coop_a[buf * SLAB_A + i * TILE_K + kk] = to_half(load_a(z, i0 + i, k0 + kk));
    }
    for (var e = t; e < TILE_K * COLS; e += THREADS) {
        var j = e % COLS;
        var kk = e / COLS;
        if (b_along_k) {
            j = e / TILE_K;
            kk = e % TILE_K;
        }
        coop_b[buf * SLAB_B + kk * COLS + j] = to_half(load_b(z, k0 + kk, j0 + j));
    }
}

// One fragment's results through the subgroup's scratch to `store`, laid out
// so that neighbouring lanes store neighbouring words: row-major, or
// column-major where the output runs along i (TRANSPOSE_C).
fn coop_write(acc: CoopC, z: u32, i: u32, j: u32, sg: u32, lane: u32) {
    let base = sg * FRAG * FRAG;
    let stride = FRAG;
    if (TRANSPOSE_C) {
        coopStore(acc, &coop_c[base], stride);
    } else {
        coopStoreT(acc, &coop_c[base], stride);
    }
    workgroupBarrier();
    if (GEGLU) {
        // Each lane two neighbouring columns of a row (row-major: GEGLU never
        // has TRANSPOSE_C).
        for (var e = 2u * lane; e < FRAG * FRAG; e += 2u * SUBGROUP_SIZE) {
            store_pair(z, i + e / FRAG, j + e % FRAG, coop_c[base + e], coop_c[base + e + 1u]);
        }
    } else {
        for (var e = lane; e < FRAG * FRAG; e += SUBGROUP_SIZE) {
            var at = vec2(e / FRAG, e % FRAG); // (row, column) of the fragment
            if (TRANSPOSE_C) {
                at = at.yx;
            }
            store(z, i + at.x, j + at.y, coop_c[base + e]);
        }
    }
    workgroupBarrier();
}

fn gemm_tile(wg: vec3<u32>, lid: vec3<u32>, t: u32, a_along_k: bool, b_along_k: bool) {
    let rows = coop_rows();
    let z = wg.z;
    let i0 = wg.y * rows;
    let j0 = wg.x * COLS;
    let sg = t / SUBGROUP_SIZE;
    let lane = t % SUBGROUP_SIZE;
    // This subgroup's block: fragment rows fr (and fr + 1 when BLOCK_ROWS is 2),
    // columns fc and fc + 1 of the fragment grid.
    let blocks_per_row = COLS / (2u * FRAG);
    let fr = sg / blocks_per_row * BLOCK_ROWS;
    let fc = sg % blocks_per_row * 2u;
    var acc0 = CoopC();
    var acc1 = CoopC();
    var acc2 = CoopC();
    var acc3 = CoopC();
    let steps = loop_bound((p.k + TILE_K - 1u) / TILE_K, wg.x);
    coop_stage(z, i0, j0, 0u, 0u, t, rows, a_along_k, b_along_k);
    workgroupBarrier();
    // Every thread runs every step: the barriers stay in uniform control flow.
    for (var s = 0u; s < steps; s++) {
        let buf = s % 2u;
        if (s + 1u < steps) {
            coop_stage(z, i0, j0, (s + 1u) * TILE_K, 1u - buf, t, rows, a_along_k, b_along_k);
        }
        for (var kk = 0u; kk < TILE_K; kk += FRAG) {
            let a_at = buf * SLAB_A + fr * FRAG * TILE_K + kk;
            let a_stride = TILE_K;
            let b0_at = buf * SLAB_B + kk * COLS + fc * FRAG;
            let b1_at = b0_at + FRAG;
            let b_stride = COLS;
            let fa = coopLoadT<CoopA>(&coop_a[a_at], a_stride);
            let fb0 = coopLoadT<CoopB>(&coop_b[b0_at], b_stride);
            let fb1 = coopLoadT<CoopB>(&coop_b[b1_at], b_stride);
            acc0 = coopMultiplyAdd(fa, fb0, acc0);
            acc1 = coopMultiplyAdd(fa, fb1, acc1);
            if (BLOCK_ROWS == 2u) {
                let a1_at = a_at + FRAG * TILE_K;
                let fa1 = coopLoadT<CoopA>(&coop_a[a1_at], a_stride);
                acc2 = coopMultiplyAdd(fa1, fb0, acc2);
                acc3 = coopMultiplyAdd(fa1, fb1, acc3);
            }
        }
        workgroupBarrier();
    }
    coop_write(acc0, z, i0 + fr * FRAG, j0 + fc * FRAG, sg, lane);
    coop_write(acc1, z, i0 + fr * FRAG, j0 + (fc + 1u) * FRAG, sg, lane);
    if (BLOCK_ROWS == 2u) {
        coop_write(acc2, z, i0 + (fr + 1u) * FRAG, j0 + fc * FRAG, sg, lane);
        coop_write(acc3, z, i0 + (fr + 1u) * FRAG, j0 + (fc + 1u) * FRAG, sg, lane);
    }
}

// The wide entry points (matmul_gpu_wide, conv2d_gpu_wide) name this; easel
// never launches them from a cooperative shader (their grid is gemm_tile.wgsl's
// 128×128), but every entry point of a module must compile.
fn gemm_tile_wide(wg: vec3<u32>, lid: vec3<u32>, t: u32, a_along_k: bool, b_along_k: bool) {
    gemm_tile(wg, lid, t, a_along_k, b_along_k);
}
