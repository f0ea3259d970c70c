// Batched matrix multiply: c[b] = alpha * op(a[b]) · op(b[b]) + bias.
//
// op(x) is x or xᵀ per the TRANSPOSE_* override constants; b has batch
// stride 0 when it is shared by every batch item (nn.Linear's weight, stored
// [out, in] by PyTorch, so TRANSPOSE_B is the hot path). bias [N] is added to
// every row.
//
// Two kernel shapes, chosen per adapter (DESIGN.md "Engine rules"):
// - `matmul_gpu`: 64×64 output tile per workgroup staged through workgroup
//   memory with barriers, 4×4 outputs per thread. What a real GPU wants.
//   `matmul_gpu_wide`: 128×128, 8×8 per thread, for large problems. The tiles
//   are wgsl/gemm_tile.wgsl, shared with conv2d.
// - `matmul_cpu` / `matmul_cpu_vec4`: no workgroup memory, no barriers; each
//   thread keeps a block of outputs in registers (4×8, `_vec4` 8×8) and reads
//   global memory directly (a CPU driver's caches do the sharing). `_vec4`
//   reads 4 floats per load along the contiguous dimension and needs it to be a
//   multiple of 4; the plain entry point takes any shape. Where subgroups exist,
//   wgsl/matmul_subgroup.wgsl improves on `_vec4`.
//
// Bindings: `a` and `a4` are two views of one buffer; each entry point uses
// only one of them. `b` (binding 2) is read through weight_at / weight4_at,
// which wgsl/weight_f32.wgsl or wgsl/weight_f16.wgsl supply (an f16 nn.Linear
// weight is read as is and widened). `col0` and `ldc` place the output in a
// wider matrix: a weight above the binding limit runs as one dispatch per
// block of its rows (output features), each writing its columns.

override TRANSPOSE_A: bool = false;
override TRANSPOSE_B: bool = false;
override HAS_BIAS: bool = false;
// c (and the residual) stored [N, M] per batch item, col0 counting its rows:
// a per-pixel layer writing NCHW from tokens (MatmulOptions::transpose_out).
override TRANSPOSE_C: bool = false;
// The epilogue adds a residual of c's layout and scales the sum (a transformer
// block's `attn(x) + x`), saving the separate add's launch and its pass over c.
override HAS_RESIDUAL: bool = false;
// GEGLU in the store (a feed-forward's net.0.proj, whose weight rows the loader
// interleaves: column 2q is hidden q, 2q + 1 its gate): c [batch, M, N / 2]
// receives hidden · gelu(gate), saving the GEGLU launch and a pass over the
// [M, N] intermediate. Never with TRANSPOSE_C or HAS_RESIDUAL (the op refuses).
override GEGLU: bool = false;
// c is several parts of ldc columns each (a self-attention's q, k and v from
// one GEMM over their stacked weights), part q of the product's columns stored
// [batch, M, ldc] at element q · part_stride, so each part is a tensor of its own.
override SPLIT: bool = false;
// An activation of product + bias (ops::elementwise::Activation's code, 0 for
// none: wgsl/activation.wgsl), the value rounded to `act` first as the separate
// launch read it, so fusing changes no bits. Never with HAS_RESIDUAL.
override ACTIVATION: u32 = 0u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // Elements between consecutive batch items; stride_b is 0 when b is shared.
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    alpha: f32,
    // Output column of this product's column 0, and the row stride of c (N
    // unless the weight is split into row blocks; N / 2 with GEGLU, where
    // column j of the product lands in column (col0 + j) / 2).
    col0: u32,
    ldc: u32,
    // (product + bias + residual) · residual_scale when HAS_RESIDUAL.
    residual_scale: f32,
    // Elements between the parts of c when SPLIT.
    part_stride: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<act>;   // [batch, M, K], or [batch, K, M] if TRANSPOSE_A
// binding 2, b: [batch or 1, K, N], or [batch or 1, N, K] if TRANSPOSE_B (weight_at)
@group(0) @binding(3) var<storage, read> bias: array<f32>; // [ldc]; any buffer when !HAS_BIAS
@group(0) @binding(4) var<storage, read_write> c: array<act>; // [batch, M, ldc], or [batch, ldc, M] if TRANSPOSE_C
@group(0) @binding(5) var<storage, read> residual: array<act>; // as c; any buffer when !HAS_RESIDUAL
@group(0) @binding(1) var<storage, read> a4: array<vec4<act>>;

// a as four elements 4q..4q+3, widened to f32 (wgsl/act_f32.wgsl).
fn a4_at(q: u32) -> vec4<f32> {
    return vec4<f32>(a4[q]);
}

// op(a)[i, kk] of batch item `batch`.
fn a_at(batch: u32, i: u32, kk: u32) -> f32 {
    if (TRANSPOSE_A) {
        return f32(a[batch * p.stride_a + kk * p.m + i]);
    }
    return f32(a[batch * p.stride_a + i * p.k + kk]);
}

// op(b)[kk, j] of batch item `batch`.
fn b_at(batch: u32, kk: u32, j: u32) -> f32 {
    if (TRANSPOSE_B) {
        return weight_at(batch * p.stride_b + j * p.k + kk);
    }
    return weight_at(batch * p.stride_b + kk * p.n + j);
}

// The product's column j with alpha and bias applied.
fn scaled(j: u32, acc: f32) -> f32 {
    var y = acc * p.alpha;
    if (HAS_BIAS) {
        y += bias[p.col0 + j];
    }
    return y;
}

// Write one output with alpha and bias applied; out-of-range outputs are dropped.
fn store(batch: u32, i: u32, j: u32, acc: f32) {
    if (i >= p.m || j >= p.n) {
        return;
    }
    var y = scaled(j, acc);
    if (ACTIVATION != 0u) {
        y = activation(ACTIVATION, vec4(f32(act(y)))).x;
    }
    var at = batch * p.stride_c + i * p.ldc + p.col0 + j;
    if (TRANSPOSE_C) {
        at = batch * p.stride_c + (p.col0 + j) * p.m + i;
    }
    if (SPLIT) {
        let part = (p.col0 + j) / p.ldc;
        at = part * p.part_stride + batch * p.stride_c + i * p.ldc + p.col0 + j - part * p.ldc;
    }
    if (HAS_RESIDUAL) {
        y = (y + f32(residual[at])) * p.residual_scale;
    }
    c[at] = act(y);
}

// Outputs (i, j) and (i, j + 1), j even: two stores, or with GEGLU the one
// output hidden · gelu(gate) at column (col0 + j) / 2. Hidden and gate are
// rounded to `act` first, as the separate GEGLU kernel read them from memory,
// so fusing changes no bits.
fn store_pair(batch: u32, i: u32, j: u32, acc0: f32, acc1: f32) {
    if (!GEGLU) {
        store(batch, i, j, acc0);
        store(batch, i, j + 1u, acc1);
        return;
    }
    if (i >= p.m || j >= p.n) {
        return;
    }
    let hidden = f32(act(scaled(j, acc0)));
    let gate = f32(act(scaled(j + 1u, acc1)));
    let y = gated_gelu(hidden, gate);
    c[batch * p.stride_c + i * p.ldc + (p.col0 + j) / 2u] = act(y);
}

// ---------------------------------------------------------------------------
// GPU: the 64×64 tile of wgsl/gemm_tile.wgsl with A = op(a) and B = op(b).

// op(a)[i, kk] of batch item `batch`, 0 outside the matrix.
fn load_a(batch: u32, i: u32, kk: u32) -> f32 {
    if (i < p.m && kk < p.k) {
        return a_at(batch, i, kk);
    }
    return 0.0;
}

// op(b)[kk, j] of batch item `batch`, 0 outside the matrix.
fn load_b(batch: u32, kk: u32, j: u32) -> f32 {
    if (j < p.n && kk < p.k) {
        return b_at(batch, kk, j);
    }
    return 0.0;
}

// 16×16 threads: wgsl/gemm_tile.wgsl says why.
@compute @workgroup_size(16, 16)
fn matmul_gpu(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // a is contiguous along k unless transposed; b along n unless transposed.
    gemm_tile(wg, lid, t, !TRANSPOSE_A, TRANSPOSE_B);
}

// The same with the 128×128 tile (the `GpuWide` variant).
@compute @workgroup_size(16, 16)
fn matmul_gpu_wide(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    gemm_tile_wide(wg, lid, t, !TRANSPOSE_A, TRANSPOSE_B);
}

// ---------------------------------------------------------------------------
// CPU: register blocks, no workgroup memory, no barriers.
// Thread (x, y) owns rows 4y..4y+3 (`_vec4`: 8y..8y+7) and columns 8x..8x+7.
// Every load is a loop over the lanes on lavapipe, so loads per FMA is what
// to minimise: a 4×4 block costs 8 loads of 4 floats per 64 FMAs, 8×8 costs
// 16 per 256 (measured about 2× faster). Consecutive lanes of a
// SIMD group (lavapipe runs 8 invocations per vector) share rows and take
// neighbouring columns. The k loop advances 4 at a time over 4×4 blocks held
// as mat4x4: A[r] = op(a)[i + r, k..k+3], B[cc] = op(b)[k..k+3, j + cc], so
// the block product is one matrix expression LLVM turns into straight FMAs.
// Accumulators are named variables or struct members, never indexed
// dynamically: dynamically indexed private arrays would live in memory on a
// CPU driver.

// Clamp a row or column index so edge blocks read valid memory; their extra
// outputs are dropped by `store`.
fn clamp_m(i: u32) -> u32 { return min(i, p.m - 1u); }
fn clamp_n(j: u32) -> u32 { return min(j, p.n - 1u); }

// op(a)[i, kk] or 0 past the end of k (the k tail must add nothing).
fn a_or_zero(batch: u32, i: u32, kk: u32) -> f32 {
    return select(0.0, a_at(batch, clamp_m(i), min(kk, p.k - 1u)), kk < p.k);
}

fn b_or_zero(batch: u32, kk: u32, j: u32) -> f32 {
    return select(0.0, b_at(batch, min(kk, p.k - 1u), clamp_n(j)), kk < p.k);
}

// A block (rows i..i+3, k..k+3) from scalar loads: any shape.
fn a_block(batch: u32, i: u32, k: u32) -> mat4x4<f32> {
    var m: mat4x4<f32>;
    for (var r = 0u; r < 4u; r++) {
        m[r] = vec4(a_or_zero(batch, i + r, k), a_or_zero(batch, i + r, k + 1u),
                    a_or_zero(batch, i + r, k + 2u), a_or_zero(batch, i + r, k + 3u));
    }
    return m;
}

// B block (k..k+3, columns j..j+3), column-major like a_block: m[cc] runs over k.
fn b_block(batch: u32, k: u32, j: u32) -> mat4x4<f32> {
    var m: mat4x4<f32>;
    for (var cc = 0u; cc < 4u; cc++) {
        m[cc] = vec4(b_or_zero(batch, k, j + cc), b_or_zero(batch, k + 1u, j + cc),
                     b_or_zero(batch, k + 2u, j + cc), b_or_zero(batch, k + 3u, j + cc));
    }
    return m;
}

// Same blocks from vec4 loads along the contiguous dimension. Needs K % 4 == 0,
// and M % 4 == 0 when TRANSPOSE_A, N % 4 == 0 unless TRANSPOSE_B.
fn a_block4(batch: u32, i: u32, k: u32) -> mat4x4<f32> {
    let base = batch * p.stride_a;
    if (TRANSPOSE_A) {
        // Rows of the stored [K, M] matrix: a[k + r, i..i+3].
        let q = (base + k * p.m + clamp_m(i)) / 4u;
        let s = p.m / 4u;
        return transpose(mat4x4(a4_at(q), a4_at(q + s), a4_at(q + 2u * s), a4_at(q + 3u * s)));
    }
    let s = (base + k) / 4u;
    return mat4x4(a4_at((clamp_m(i) * p.k) / 4u + s), a4_at((clamp_m(i + 1u) * p.k) / 4u + s),
                  a4_at((clamp_m(i + 2u) * p.k) / 4u + s), a4_at((clamp_m(i + 3u) * p.k) / 4u + s));
}

fn b_block4(batch: u32, k: u32, j: u32) -> mat4x4<f32> {
    let base = batch * p.stride_b;
    if (TRANSPOSE_B) {
        // Rows of the stored [N, K] matrix (nn.Linear's weight): b[j + cc, k..k+3].
        let s = (base + k) / 4u;
        return mat4x4(weight4_at((clamp_n(j) * p.k) / 4u + s), weight4_at((clamp_n(j + 1u) * p.k) / 4u + s),
                      weight4_at((clamp_n(j + 2u) * p.k) / 4u + s), weight4_at((clamp_n(j + 3u) * p.k) / 4u + s));
    }
    let q = (base + k * p.n + clamp_n(j)) / 4u;
    let s = p.n / 4u;
    return transpose(mat4x4(weight4_at(q), weight4_at(q + s), weight4_at(q + 2u * s), weight4_at(q + 3u * s)));
}

// Write a 4×4 block held as acc[r][cc] = output (i + r, j + cc).
fn store_block(batch: u32, i: u32, j: u32, acc: mat4x4<f32>) {
    for (var r = 0u; r < 4u; r++) {
        store_pair(batch, i + r, j, acc[r][0], acc[r][1]);
        store_pair(batch, i + r, j + 2u, acc[r][2], acc[r][3]);
    }
}

@compute @workgroup_size(8, 8)
fn matmul_cpu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let batch = gid.z;
    let i = gid.y * 4u;
    let j = gid.x * 8u;
    if (i >= p.m || j >= p.n) {
        return;
    }
    var acc0 = mat4x4<f32>(); // columns j..j+3
    var acc1 = mat4x4<f32>(); // columns j+4..j+7
    for (var k = 0u; k < loop_bound(p.k, gid.x); k += 4u) {
        let ab = transpose(a_block(batch, i, k));
        acc0 += ab * b_block(batch, k, j);
        acc1 += ab * b_block(batch, k, j + 4u);
    }
    store_block(batch, i, j, transpose(acc0));
    store_block(batch, i, j + 4u, transpose(acc1));
}

// An 8×8 block of outputs (rows i..i+7, columns j..j+7) as four 4×4 blocks,
// each held as acc[column][row]: q01 is rows i..i+3, columns j+4..j+7.
struct Acc8x8 {
    q00: mat4x4<f32>,
    q01: mat4x4<f32>,
    q10: mat4x4<f32>,
    q11: mat4x4<f32>,
}

// Add columns k..k+3 of op(a) times rows k..k+3 of op(b) to an 8×8 block.
// a_lo and a_hi are op(a)'s rows i..i+3 and i+4..i+7 over k..k+3 as
// m[r] (like a_block4): how they are fetched is all that matmul_cpu_vec4 and
// matmul_cpu_subgroup (wgsl/matmul_subgroup.wgsl) do differently. They are
// transposed here, in sight of the products: Mesa's SPIR-V translation turns
// transpose(x) * y into dot products of x's rows only where it sees the
// transpose, and any other order of operations would change the output bits.
fn accumulate_8x8(acc: ptr<function, Acc8x8>, a_lo: mat4x4<f32>, a_hi: mat4x4<f32>, batch: u32, k: u32,
                  j: u32) {
    let a0 = transpose(a_lo);
    let a1 = transpose(a_hi);
    let b0 = b_block4(batch, k, j);
    let b1 = b_block4(batch, k, j + 4u);
    (*acc).q00 += a0 * b0;
    (*acc).q01 += a0 * b1;
    (*acc).q10 += a1 * b0;
    (*acc).q11 += a1 * b1;
}

fn store_8x8(batch: u32, i: u32, j: u32, acc: Acc8x8) {
    store_block(batch, i, j, transpose(acc.q00));
    store_block(batch, i, j + 4u, transpose(acc.q01));
    store_block(batch, i + 4u, j, transpose(acc.q10));
    store_block(batch, i + 4u, j + 4u, transpose(acc.q11));
}

@compute @workgroup_size(8, 8)
fn matmul_cpu_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let batch = gid.z;
    let i = gid.y * 8u;
    let j = gid.x * 8u;
    if (i >= p.m || j >= p.n) {
        return;
    }
    var acc = Acc8x8();
    for (var k = 0u; k < loop_bound(p.k, gid.x); k += 4u) {
        accumulate_8x8(&acc, a_block4(batch, i, k), a_block4(batch, i + 4u, k), batch, k, j);
    }
    store_8x8(batch, i, j, acc);
}
