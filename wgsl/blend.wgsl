// Blending decoded tiles into one image (src/models/vae_tiles.rs): each tile
// [N, C, th, tw] is added into the image [N, C, H, W] at (y0, x0) with a weight
// that rises linearly across the overlap on each side that has a neighbour tile
// (1 on the image's own border), and the weights are summed alongside in
// `weight` [H, W]; `normalize` then divides, so overlaps cross-fade and a pixel
// only one tile covers keeps that tile's value. `clear` zeroes both first.
//
// One invocation per pixel of the tile (accumulate) or element of the image;
// 256 lanes, a plain gather without barriers on every adapter. Launches beyond
// 65,535 workgroups fold into y (ops::grid_1d).

struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    // The tile's size and where its first pixel lands in the image.
    th: u32,
    tw: u32,
    y0: u32,
    x0: u32,
    // Ramp lengths in pixels at the tile's top, bottom, left and right (0: none).
    ramps: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
// clear and normalize bind the first two only.
@group(0) @binding(1) var<storage, read_write> image: array<f32>;  // [N, C, H, W]
@group(0) @binding(2) var<storage, read_write> weight: array<f32>; // [H, W]
@group(0) @binding(3) var<storage, read> tile: array<f32>;         // [N, C, th, tw]

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * 256u + gid.x;
}

// 1 past the ramp; (d + 0.5) / len at distance d from the tile's edge inside it.
fn ramp(d: u32, len: u32) -> f32 {
    if (len == 0u) { return 1.0; }
    return min(1.0, (f32(d) + 0.5) / f32(len));
}

@compute @workgroup_size(256)
fn clear(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.h * p.w) { return; }
    image[i] = 0.0;
    if (i < p.h * p.w) { weight[i] = 0.0; }
}

@compute @workgroup_size(256)
fn accumulate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.th * p.tw) { return; }
    let ty = i / p.tw;
    let tx = i % p.tw;
    let wt = ramp(ty, p.ramps.x) * ramp(p.th - 1u - ty, p.ramps.y)
           * ramp(tx, p.ramps.z) * ramp(p.tw - 1u - tx, p.ramps.w);
    let o = (p.y0 + ty) * p.w + p.x0 + tx;
    weight[o] += wt;
    for (var nc = 0u; nc < loop_bound(p.n * p.c, i); nc++) {
        image[nc * p.h * p.w + o] += wt * tile[nc * p.th * p.tw + i];
    }
}

@compute @workgroup_size(256)
fn normalize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.h * p.w) { return; }
    image[i] = image[i] / weight[i % (p.h * p.w)];
}
