// matmul_cpu_vec4 (wgsl/matmul.wgsl) with the shared operand read once per
// SIMD group instead of once per lane. A separate file because `enable
// subgroups;` makes the whole module fail to compile on adapters without the
// feature; the op only picks it where SUBGROUP exists and subgroups are
// exactly 8 lanes (lavapipe on AVX2/AVX-512 hosts).
//
// Why: lavapipe turns every storage-buffer load into a loop over the 8 lanes
// with a bounds check and branch per lane, even when all lanes read the same
// address. In matmul_cpu_vec4 the 8 lanes of a group share their rows of
// op(a), so each A word was fetched 8 times. Here lane l fetches row i + l
// and subgroupBroadcast hands it to the others (an extract and a splat).
//
// Same Params and bindings as wgsl/matmul.wgsl; TRANSPOSE_A is not supported
// (the op uses matmul_cpu_vec4 for it). Workgroup 8×8: one subgroup per y.

// Shared with matmul.wgsl's constants; this kernel needs TRANSPOSE_A == false.
override TRANSPOSE_A: bool = false;
override TRANSPOSE_B: bool = false;
override HAS_BIAS: bool = false;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    alpha: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>; // [batch, M, K], K % 4 == 0
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>; // [batch or 1, K, N] (N % 4 == 0), or [.., N, K] if TRANSPOSE_B
@group(0) @binding(3) var<storage, read> bias: array<f32>;     // [N]; any buffer when !HAS_BIAS
@group(0) @binding(4) var<storage, read_write> c: array<f32>;  // [batch, M, N]

fn clamp_m(i: u32) -> u32 { return min(i, p.m - 1u); }
fn clamp_n(j: u32) -> u32 { return min(j, p.n - 1u); }

// op(b)[k..k+3, j..j+3] as columns over k (see matmul.wgsl's b_block4).
fn b_block4(batch: u32, k: u32, j: u32) -> mat4x4<f32> {
    let base = batch * p.stride_b;
    if (TRANSPOSE_B) {
        let s = (base + k) / 4u;
        return mat4x4(b4[(clamp_n(j) * p.k) / 4u + s], b4[(clamp_n(j + 1u) * p.k) / 4u + s],
                      b4[(clamp_n(j + 2u) * p.k) / 4u + s], b4[(clamp_n(j + 3u) * p.k) / 4u + s]);
    }
    let q = (base + k * p.n + clamp_n(j)) / 4u;
    let s = p.n / 4u;
    return transpose(mat4x4(b4[q], b4[q + s], b4[q + 2u * s], b4[q + 3u * s]));
}

// The group's A block, rows 0..3 and 4..7, each row broadcast from its lane
// (lane ids must be constants).
fn a_rows_lo(mine: vec4<f32>) -> mat4x4<f32> {
    return mat4x4(subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u),
                  subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u));
}

fn a_rows_hi(mine: vec4<f32>) -> mat4x4<f32> {
    return mat4x4(subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u),
                  subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u));
}

fn store_block(batch: u32, i: u32, j: u32, acc: mat4x4<f32>) {
    for (var r = 0u; r < 4u; r++) {
        for (var cc = 0u; cc < 4u; cc++) {
            let ii = i + r;
            let jj = j + cc;
            if (ii < p.m && jj < p.n) {
                var y = acc[cc][r] * p.alpha;
                if (HAS_BIAS) {
                    y += bias[jj];
                }
                c[batch * p.stride_c + ii * p.n + jj] = y;
            }
        }
    }
}

@compute @workgroup_size(8, 8)
fn matmul_cpu_subgroup(
    @builtin(global_invocation_id) gid: vec3<u32>,
    // With 8-lane subgroups and 8 threads along x, a thread's lane is its x.
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let batch = gid.z;
    let i = gid.y * 8u;
    // Uniform across the subgroup (one y per subgroup), so no lane is left
    // out of the broadcasts below; lanes past N compute clamped columns and
    // drop them at the store.
    if (i >= p.m) {
        return;
    }
    let j = gid.x * 8u;
    let my_row = (clamp_m(i + lid.x) * p.k + batch * p.stride_a) / 4u;
    var acc00 = mat4x4<f32>(); // (rows i..i+3, columns j..j+3), stored acc[col][row]
    var acc01 = mat4x4<f32>();
    var acc10 = mat4x4<f32>();
    var acc11 = mat4x4<f32>();
    for (var k = 0u; k < p.k; k += 4u) {
        let mine = a4[my_row + k / 4u]; // op(a)[i + lid.x, k..k+3]
        let a0 = transpose(a_rows_lo(mine));
        let a1 = transpose(a_rows_hi(mine));
        let b0 = b_block4(batch, k, j);
        let b1 = b_block4(batch, k, j + 4u);
        acc00 += a0 * b0;
        acc01 += a0 * b1;
        acc10 += a1 * b0;
        acc11 += a1 * b1;
    }
    store_block(batch, i, j, acc00);
    store_block(batch, i, j + 4u, acc01);
    store_block(batch, i + 4u, j, acc10);
    store_block(batch, i + 4u, j + 4u, acc11);
}
