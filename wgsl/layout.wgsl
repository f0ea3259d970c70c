// Data movement: strided copies (permute, narrow, concat), a 32x32-tiled
// transpose for GPUs, and row gathers whose indices live on the GPU (CLIP's
// pooled EOS token; the scorer's winner copied into every candidate slot
// without a readback).
//
// Buffers are bound as array<bits> (wgsl/act_f32.wgsl): kernels move raw
// words, u32 for f32 and u32 tensors, f16 for f16 activations, so every result
// is bit-exact (NaN payloads included).
// 1-D launches use 256 threads per workgroup (the WebGPU baseline) and fold
// past 65,535 workgroups into y (ops::grid_1d).

struct Params {
    n: u32,           // elements to write
    src_base: u32,    // element offsets of the copied box in each buffer
    dst_base: u32,
    split: u32,       // concat_pair: the first coordinate along d2 read from tail
    // Iteration space [d0, d1, d2, d3] (d3 fastest) and each buffer's element
    // stride along each of those axes.
    dims: vec4<u32>,
    src_strides: vec4<u32>,
    dst_strides: vec4<u32>,
    // permute_tiled: axes (a, b, c, -) of the iteration space; a is the one
    // contiguous in src, axis 3 the one contiguous in dst.
    tile_axes: vec4<u32>,
    // gather_rows: index stride per d1 and per d2, rows in src (the clamp), -.
    gather: vec4<u32>,
    // concat_pair: tail's element strides (its coordinate along d2 less split).
    tail_strides: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<bits>;
@group(0) @binding(2) var<storage, read_write> dst: array<bits>;
// Only bound by gather_rows: u32 row indices, written by the host or a kernel.
@group(0) @binding(3) var<storage, read> index: array<u32>;
// The same buffers 4 words per element (strided_copy4 only).
@group(0) @binding(1) var<storage, read> src4: array<vec4<bits>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<bits>>;
// Only bound by concat_pair: the second input (src is the first).
@group(0) @binding(3) var<storage, read> tail: array<bits>;
@group(0) @binding(3) var<storage, read> tail4: array<vec4<bits>>;
// Only bound by broadcast_row_in_place: the winner's index.
@group(0) @binding(1) var<storage, read> winner_index: array<u32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * 256u + gid.x;
}

// Three divisions (they run lane by lane on a CPU driver), the rest multiplies.
fn coords(i: u32) -> vec4<u32> {
    let t = i / p.dims.w;
    let t2 = t / p.dims.z;
    let c0 = t2 / p.dims.y;
    return vec4<u32>(c0, t2 - c0 * p.dims.y, t - t2 * p.dims.z, i - t * p.dims.w);
}

fn offset(c: vec4<u32>, s: vec4<u32>) -> u32 {
    return c.x * s.x + c.y * s.y + c.z * s.z + c.w * s.w;
}

// dst[dst_base + c . dst_strides] = src[src_base + c . src_strides] for every c.
// Permutes write dst contiguously and gather from src; narrow/concat copy rows.
@compute @workgroup_size(256)
fn strided_copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let c = coords(i);
    dst[p.dst_base + offset(c, p.dst_strides)] = src[p.src_base + offset(c, p.src_strides)];
}

// strided_copy in units of 4 words, where rows are contiguous on both sides and
// every base and stride is a multiple of 4 (the op converts the box): a quarter
// of the threads and index arithmetic.
@compute @workgroup_size(256)
fn strided_copy4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let c = coords(i);
    dst4[p.dst_base + offset(c, p.dst_strides)] = src4[p.src_base + offset(c, p.src_strides)];
}

// torch.cat([src, tail], d2) in one launch, dst written contiguously: the
// UNet's skip connections without a copy per input.
@compute @workgroup_size(256)
fn concat_pair(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let c = coords(i);
    if (c.z < p.split) {
        dst[i] = src[offset(c, p.src_strides)];
    } else {
        dst[i] = tail[offset(c, p.tail_strides) - p.split * p.tail_strides.z];
    }
}

// concat_pair in units of 4 words (rows along d3 a whole number of them).
@compute @workgroup_size(256)
fn concat_pair4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let c = coords(i);
    if (c.z < p.split) {
        dst4[i] = src4[offset(c, p.src_strides)];
    } else {
        dst4[i] = tail4[offset(c, p.tail_strides) - p.split * p.tail_strides.z];
    }
}

// The GPU variant of a permute that moves the contiguous axis: a 32x32 tile is
// read with lanes walking axis a (contiguous in src), then written with lanes
// walking axis 3 (contiguous in dst), so both sides coalesce. The extra column
// keeps the transposed reads off a single shared-memory bank.
var<workgroup> tile: array<array<bits, 33>, 32>;

@compute @workgroup_size(32, 8)
fn permute_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let a = p.tile_axes.x;
    let b = p.tile_axes.y;
    let c = p.tile_axes.z;
    let cb = wg.z / p.dims[c];
    let cc = wg.z % p.dims[c];
    let src_base = p.src_base + cb * p.src_strides[b] + cc * p.src_strides[c];
    let dst_base = p.dst_base + cb * p.dst_strides[b] + cc * p.dst_strides[c];
    let size_a = p.dims[a];
    let size_3 = p.dims.w;
    // Bounds are checked per load and store, never around the barrier.
    let ra = wg.y * 32u + lid.x;
    for (var r = 0u; r < 32u; r += 8u) {
        let r3 = wg.x * 32u + lid.y + r;
        if (ra < size_a && r3 < size_3) {
            tile[lid.y + r][lid.x] = src[src_base + ra * p.src_strides[a] + r3 * p.src_strides.w];
        }
    }
    workgroupBarrier();
    let w3 = wg.x * 32u + lid.x;
    for (var r = 0u; r < 32u; r += 8u) {
        let wa = wg.y * 32u + lid.y + r;
        if (wa < size_a && w3 < size_3) {
            dst[dst_base + wa * p.dst_strides[a] + w3 * p.dst_strides.w] = tile[lid.x][lid.y + r];
        }
    }
}

// Iteration space [1, B, K, D]: dst[b, k, :] = src[b, index[b*gather.x + k*gather.y], :].
// Covers torch's x[arange(B), eos] (K = 1) and copying one row into K slots
// (B = 1, gather.y = 0). Indices past the last row are clamped, not trusted.
@compute @workgroup_size(256)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let c = coords(i);
    let row = min(index[c.y * p.gather.x + c.z * p.gather.y], p.gather.z - 1u);
    let src_at = p.src_base + c.y * p.src_strides.y + row * p.src_strides.z + c.w * p.src_strides.w;
    dst[p.dst_base + offset(c, p.dst_strides)] = src[src_at];
}

// In place over dst [K, D]: every slot k != w becomes a copy of slot w, with
// w = winner_index[0] (bound at binding 1). Slot w is only read,
// never written, so the threads do not race and no scratch buffer is needed.
@compute @workgroup_size(256)
fn broadcast_row_in_place(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let row_len = p.dims.w;
    let winner = min(winner_index[0], p.dims.z - 1u);
    if (i / row_len == winner) { return; }
    dst[i] = dst[winner * row_len + i % row_len];
}
