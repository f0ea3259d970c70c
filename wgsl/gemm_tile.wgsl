// The GEMM tiles behind matmul_gpu (wgsl/matmul.wgsl) and conv2d_gpu
// (wgsl/conv2d.wgsl): out[z][i, j] = sum_kk A[z][i, kk] · B[z][kk, j] over
// kk < p.k, both operands staged through workgroup memory with barriers. Not a
// shader of its own: the ops compile it before the kernel file
// (src/ops/mod.rs), which supplies the operands and the output:
//   p.k                                          the shared dimension K
//   fn load_a(z: u32, i: u32, kk: u32) -> f32    A[z][i, kk], 0 outside A
//   fn load_b(z: u32, kk: u32, j: u32) -> f32    B[z][kk, j], 0 outside B
//   fn store(z: u32, i: u32, j: u32, acc: f32)   writes out[z][i, j], drops it outside
//   fn store_pair(z, i, j, acc0, acc1)           out[z][i, j] and [i, j + 1], j even
//   TRANSPOSE_C                                  out is contiguous along i, not j
//   GEGLU                                        store_pair combines its two values into
//                                                one output (matmul), so a thread must own
//                                                both columns of every pair it stores
//
// Two tiles, one workgroup of 16×16 threads (256 is the WebGPU baseline limit):
// - 64×64 (`Gpu`, gemm_tile): TILE_K 16 deep, each thread owning rows ty + 16r
//   and columns tx + 16c (r, c < 4), so neighbouring threads read neighbouring
//   workgroup-memory words (with GEGLU columns 2tx, 2tx + 1, 32 + 2tx, 33 + 2tx:
//   pairs, still without bank conflicts, since the 16 threads along x then
//   read every other word);
// - 128×128 (`GpuWide`, gemm_tile_wide): TILE_K 8 deep, each thread owning an
//   8×8 block (rows 4ty.. and 64 + 4ty.., columns 4tx.. and 64 + 4tx..) read as
//   vec4 from workgroup memory: 64 FMAs per 4 vec4 reads against 16 per 8
//   scalar reads, for large problems, where the grid still fills the GPU
//   (src/ops/matmul.rs).
// Where out runs along i (TRANSPOSE_C: matmul writing NCHW from tokens), each
// thread takes the rows the other would take as columns, so neighbouring
// threads still store neighbouring words. Each tile's slabs take 8 KiB; the two
// together the baseline's 16 KiB.
// wgsl/gemm_coop.wgsl stands in for both.

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [TILE_K, TILE]: A[i0 + i, k0 + kk] at kk * TILE + i
var<workgroup> tile_b: array<f32, 1024>; // [TILE_K, TILE]: B[k0 + kk, j0 + j] at kk * TILE + j

// Element e of a `tile` × `depth` slab as (index along the tile, index along k).
// Consecutive e run along k when `along_k`, else along the tile, so consecutive
// threads take consecutive addresses of an operand stored that way.
fn slab(e: u32, along_k: bool, tile: u32, depth: u32) -> vec2<u32> {
    if (along_k) {
        return vec2(e / depth, e % depth);
    }
    return vec2(e % tile, e / tile);
}

// Stage one TILE_K-deep slab of A and B; each thread loads 4 elements of each.
fn load_tiles(z: u32, i0: u32, j0: u32, k0: u32, t: u32, a_along_k: bool, b_along_k: bool) {
    for (var q = 0u; q < 4u; q++) {
        let e = t + 256u * q;
        let a = slab(e, a_along_k, TILE, TILE_K);
        tile_a[a.y * TILE + a.x] = load_a(z, i0 + a.x, k0 + a.y);
        let b = slab(e, b_along_k, TILE, TILE_K);
        tile_b[b.y * TILE + b.x] = load_b(z, k0 + b.y, j0 + b.x);
    }
}

// Workgroup wg's tile: rows wg.y·TILE.., columns wg.x·TILE.. of out[wg.z].
// `lid` and `t` are the thread's local id and index; `a_along_k` / `b_along_k`
// say whether A / B is stored contiguous along k.
fn gemm_tile(wg: vec3<u32>, lid: vec3<u32>, t: u32, a_along_k: bool, b_along_k: bool) {
    let z = wg.z;
    let i0 = wg.y * TILE;
    let j0 = wg.x * TILE;
    let ty = select(lid.y, lid.x, TRANSPOSE_C);
    let tx = select(lid.x, lid.y, TRANSPOSE_C);
    // This thread's columns of the tile.
    let cols = select(vec4(tx, tx + 16u, tx + 32u, tx + 48u),
                      vec4(2u * tx, 2u * tx + 1u, 2u * tx + 32u, 2u * tx + 33u), GEGLU);
    var acc: array<vec4<f32>, 4>; // acc[r][c]: output (i0 + ty + 16r, j0 + cols[c])
    // Every thread runs every iteration: the barriers stay in uniform control flow.
    for (var k0 = 0u; k0 < loop_bound(p.k, wg.x); k0 += TILE_K) {
        load_tiles(z, i0, j0, k0, t, a_along_k, b_along_k);
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let row = kk * TILE;
            let av = vec4(tile_a[row + ty], tile_a[row + ty + 16u],
                          tile_a[row + ty + 32u], tile_a[row + ty + 48u]);
            let bv = vec4(tile_b[row + cols.x], tile_b[row + cols.y],
                          tile_b[row + cols.z], tile_b[row + cols.w]);
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let i = i0 + ty + 16u * r;
        if (GEGLU) {
            store_pair(z, i, j0 + cols.x, acc[r].x, acc[r].y);
            store_pair(z, i, j0 + cols.z, acc[r].z, acc[r].w);
            continue;
        }
        for (var cc = 0u; cc < 4u; cc++) {
            store(z, i, j0 + cols[cc], acc[r][cc]);
        }
    }
}

// ---------------------------------------------------------------------------
// The 128×128 tile.

const WIDE_TILE: u32 = 128u;
const WIDE_K: u32 = 8u;
const WIDE_ROW: u32 = 32u; // vec4s per k row of a slab

var<workgroup> wide_a: array<vec4<f32>, 256>; // [WIDE_K, WIDE_ROW]: A[i0 + 4q + e, k0 + kk] at [kk * WIDE_ROW + q][e]
var<workgroup> wide_b: array<vec4<f32>, 256>; // [WIDE_K, WIDE_ROW]: B[k0 + kk, j0 + 4q + e] at [kk * WIDE_ROW + q][e]

// Stage one WIDE_K-deep slab of A and B; each thread loads 4 elements of each.
fn load_wide(z: u32, i0: u32, j0: u32, k0: u32, t: u32, a_along_k: bool, b_along_k: bool) {
    for (var q = 0u; q < 4u; q++) {
        let e = t + 256u * q;
        let a = slab(e, a_along_k, WIDE_TILE, WIDE_K);
        wide_a[a.y * WIDE_ROW + a.x / 4u][a.x % 4u] = load_a(z, i0 + a.x, k0 + a.y);
        let b = slab(e, b_along_k, WIDE_TILE, WIDE_K);
        wide_b[b.y * WIDE_ROW + b.x / 4u][b.x % 4u] = load_b(z, k0 + b.y, j0 + b.x);
    }
}

// gemm_tile's contract with a 128×128 tile. acc[2r + h] holds row
// i0 + 64(r / 4) + 4ty + r % 4, columns j0 + 64h + 4tx.. + 3 (tx, ty as there).
fn gemm_tile_wide(wg: vec3<u32>, lid: vec3<u32>, t: u32, a_along_k: bool, b_along_k: bool) {
    let z = wg.z;
    let i0 = wg.y * WIDE_TILE;
    let j0 = wg.x * WIDE_TILE;
    let ty = select(lid.y, lid.x, TRANSPOSE_C);
    let tx = select(lid.x, lid.y, TRANSPOSE_C);
    var acc: array<vec4<f32>, 16>;
    // Every thread runs every iteration: the barriers stay in uniform control flow.
    for (var k0 = 0u; k0 < loop_bound(p.k, wg.x); k0 += WIDE_K) {
        load_wide(z, i0, j0, k0, t, a_along_k, b_along_k);
        workgroupBarrier();
        for (var kk = 0u; kk < WIDE_K; kk++) {
            let row = kk * WIDE_ROW;
            let a_lo = wide_a[row + ty];
            let a_hi = wide_a[row + 16u + ty];
            let b_lo = wide_b[row + tx];
            let b_hi = wide_b[row + 16u + tx];
            for (var r = 0u; r < 4u; r++) {
                acc[2u * r] += a_lo[r] * b_lo;
                acc[2u * r + 1u] += a_lo[r] * b_hi;
                acc[8u + 2u * r] += a_hi[r] * b_lo;
                acc[9u + 2u * r] += a_hi[r] * b_hi;
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 8u; r++) {
        let i = i0 + 64u * (r / 4u) + 4u * ty + r % 4u;
        for (var h = 0u; h < 2u; h++) {
            let j = j0 + 64u * h + 4u * tx;
            let v = acc[2u * r + h];
            store_pair(z, i, j, v.x, v.y);
            store_pair(z, i, j + 2u, v.z, v.w);
        }
    }
}
