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
// - `matmul_cpu` / `matmul_cpu_vec4`: no workgroup memory, no barriers; each
//   thread keeps a block of outputs in registers (4×8, `_vec4` 8×8) and reads
//   global memory directly (a CPU driver's caches do the sharing). `_vec4`
//   reads 4 floats per load along the contiguous dimension and needs it to be a
//   multiple of 4; the plain entry point takes any shape. Where subgroups exist,
//   wgsl/matmul_subgroup.wgsl improves on `_vec4`.
//
// Bindings: `a` and `a4` (likewise `b`/`b4`) are two views of one buffer;
// each entry point uses only one of them.

override TRANSPOSE_A: bool = false;
override TRANSPOSE_B: bool = false;
override HAS_BIAS: bool = false;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // Elements between consecutive batch items; stride_b is 0 when b is shared.
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    alpha: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;   // [batch, M, K], or [batch, K, M] if TRANSPOSE_A
@group(0) @binding(2) var<storage, read> b: array<f32>;   // [batch or 1, K, N], or [batch or 1, N, K] if TRANSPOSE_B
@group(0) @binding(3) var<storage, read> bias: array<f32>; // [N]; any buffer when !HAS_BIAS
@group(0) @binding(4) var<storage, read_write> c: array<f32>; // [batch, M, N]
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;

// op(a)[i, kk] of batch item `batch`.
fn a_at(batch: u32, i: u32, kk: u32) -> f32 {
    if (TRANSPOSE_A) {
        return a[batch * p.stride_a + kk * p.m + i];
    }
    return a[batch * p.stride_a + i * p.k + kk];
}

// op(b)[kk, j] of batch item `batch`.
fn b_at(batch: u32, kk: u32, j: u32) -> f32 {
    if (TRANSPOSE_B) {
        return b[batch * p.stride_b + j * p.k + kk];
    }
    return b[batch * p.stride_b + kk * p.n + j];
}

// Write one output with alpha and bias applied; out-of-range outputs are dropped.
fn store(batch: u32, i: u32, j: u32, acc: f32) {
    if (i >= p.m || j >= p.n) {
        return;
    }
    var y = acc * p.alpha;
    if (HAS_BIAS) {
        y += bias[j];
    }
    c[batch * p.stride_c + i * p.n + j] = y;
}

// ---------------------------------------------------------------------------
// GPU: 64×64 tiles through workgroup memory.
// 16×16 threads, each owning rows ty + 16r and columns tx + 16c (r, c < 4) so
// neighbouring threads read neighbouring workgroup-memory words. 256 threads is
// the WebGPU baseline limit; the 2 × 16 × 64 floats (8 KiB) fit its 16 KiB.

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [TILE_K, TILE]: op(a)[i0 + i, k0 + kk] at kk * TILE + i
var<workgroup> tile_b: array<f32, 1024>; // [TILE_K, TILE]: op(b)[k0 + kk, j0 + j] at kk * TILE + j

// Stage one TILE_K-deep slab of op(a) and op(b); zero outside the matrices.
// Each thread loads 4 elements of each; consecutive threads take consecutive
// addresses along each operand's contiguous dimension.
fn load_tiles(batch: u32, i0: u32, j0: u32, k0: u32, t: u32) {
    for (var q = 0u; q < 4u; q++) {
        let e = t + 256u * q;
        // a: contiguous along k unless transposed.
        var kk = e % TILE_K;
        var i = e / TILE_K;
        if (TRANSPOSE_A) {
            kk = e / TILE;
            i = e % TILE;
        }
        var va = 0.0;
        if (i0 + i < p.m && k0 + kk < p.k) {
            va = a_at(batch, i0 + i, k0 + kk);
        }
        tile_a[kk * TILE + i] = va;
        // b: contiguous along n unless transposed.
        var kb = e / TILE;
        var j = e % TILE;
        if (TRANSPOSE_B) {
            kb = e % TILE_K;
            j = e / TILE_K;
        }
        var vb = 0.0;
        if (j0 + j < p.n && k0 + kb < p.k) {
            vb = b_at(batch, k0 + kb, j0 + j);
        }
        tile_b[kb * TILE + j] = vb;
    }
}

@compute @workgroup_size(16, 16)
fn matmul_gpu(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let batch = wg.z;
    let i0 = wg.y * TILE;
    let j0 = wg.x * TILE;
    var acc: array<vec4<f32>, 4>; // acc[r][c]: output (i0 + ty + 16r, j0 + tx + 16c)
    // Every thread runs every iteration: the barriers stay in uniform control flow.
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        load_tiles(batch, i0, j0, k0, t);
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let row = kk * TILE;
            let av = vec4(tile_a[row + lid.y], tile_a[row + lid.y + 16u],
                          tile_a[row + lid.y + 32u], tile_a[row + lid.y + 48u]);
            let bv = vec4(tile_b[row + lid.x], tile_b[row + lid.x + 16u],
                          tile_b[row + lid.x + 32u], tile_b[row + lid.x + 48u]);
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        for (var cc = 0u; cc < 4u; cc++) {
            store(batch, i0 + lid.y + 16u * r, j0 + lid.x + 16u * cc, acc[r][cc]);
        }
    }
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
// Accumulators are named variables: dynamically indexed private arrays would
// live in memory on a CPU driver.

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
        return transpose(mat4x4(a4[q], a4[q + s], a4[q + 2u * s], a4[q + 3u * s]));
    }
    let s = (base + k) / 4u;
    return mat4x4(a4[(clamp_m(i) * p.k) / 4u + s], a4[(clamp_m(i + 1u) * p.k) / 4u + s],
                  a4[(clamp_m(i + 2u) * p.k) / 4u + s], a4[(clamp_m(i + 3u) * p.k) / 4u + s]);
}

fn b_block4(batch: u32, k: u32, j: u32) -> mat4x4<f32> {
    let base = batch * p.stride_b;
    if (TRANSPOSE_B) {
        // Rows of the stored [N, K] matrix (nn.Linear's weight): b[j + cc, k..k+3].
        let s = (base + k) / 4u;
        return mat4x4(b4[(clamp_n(j) * p.k) / 4u + s], b4[(clamp_n(j + 1u) * p.k) / 4u + s],
                      b4[(clamp_n(j + 2u) * p.k) / 4u + s], b4[(clamp_n(j + 3u) * p.k) / 4u + s]);
    }
    let q = (base + k * p.n + clamp_n(j)) / 4u;
    let s = p.n / 4u;
    return transpose(mat4x4(b4[q], b4[q + s], b4[q + 2u * s], b4[q + 3u * s]));
}

// Write a 4×4 block held as acc[r][cc] = output (i + r, j + cc).
fn store_block(batch: u32, i: u32, j: u32, acc: mat4x4<f32>) {
    for (var r = 0u; r < 4u; r++) {
        for (var cc = 0u; cc < 4u; cc++) {
            store(batch, i + r, j + cc, acc[r][cc]);
        }
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
    for (var k = 0u; k < p.k; k += 4u) {
        let ab = transpose(a_block(batch, i, k));
        acc0 += ab * b_block(batch, k, j);
        acc1 += ab * b_block(batch, k, j + 4u);
    }
    store_block(batch, i, j, transpose(acc0));
    store_block(batch, i, j + 4u, transpose(acc1));
}

@compute @workgroup_size(8, 8)
fn matmul_cpu_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let batch = gid.z;
    let i = gid.y * 8u;
    let j = gid.x * 8u;
    if (i >= p.m || j >= p.n) {
        return;
    }
    var acc00 = mat4x4<f32>();
    var acc01 = mat4x4<f32>();
    var acc10 = mat4x4<f32>();
    var acc11 = mat4x4<f32>();
    for (var k = 0u; k < p.k; k += 4u) {
        let a0 = transpose(a_block4(batch, i, k));
        let a1 = transpose(a_block4(batch, i + 4u, k));
        let b0 = b_block4(batch, k, j);
        let b1 = b_block4(batch, k, j + 4u);
        acc00 += a0 * b0;
        acc01 += a0 * b1;
        acc10 += a1 * b0;
        acc11 += a1 * b1;
    }
    store_block(batch, i, j, transpose(acc00));
    store_block(batch, i, j + 4u, transpose(acc01));
    store_block(batch, i + 4u, j, transpose(acc10));
    store_block(batch, i + 4u, j + 4u, transpose(acc11));
}
