// Image conversions at the ends of the pipeline, one thread per output value.
//
// normalize: out = (clamp(x * scale + bias, lo, hi) - mean[c]) / std[c] on NCHW
//   (x0 in [-1, 1] -> scorer input with CLIP's mean/std, -> upscaler input in [0, 1]).
// to_rgba8:  image [N, 3, H, W] in [0, 1] -> one packed RGBA8 u32 per pixel of
//   batch item `item` (alpha 255), rounded like PIL/torchvision's `round(v * 255)`.

struct Params {
    n: u32,
    channels: u32,
    spatial: u32,
    item: u32,
    scale: f32,
    bias: f32,
    lo: f32,
    hi: f32,
    mean: vec4<f32>,
    stdev: vec4<f32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// to_rgba8 writes u32 pixels where normalize writes floats (each entry point uses one view).
@group(0) @binding(2) var<storage, read_write> pixels: array<u32>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * 256u + gid.x;
}

@compute @workgroup_size(256)
fn normalize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let c = (i / p.spatial) % p.channels;
    let v = clamp(x[i] * p.scale + p.bias, p.lo, p.hi);
    out[i] = (v - p.mean[c]) / p.stdev[c];
}

fn byte(v: f32) -> u32 {
    return u32(round(clamp(v, 0.0, 1.0) * 255.0));
}

@compute @workgroup_size(256)
fn to_rgba8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.spatial) { return; }
    let base = p.item * 3u * p.spatial + i;
    let r = byte(x[base]);
    let g = byte(x[base + p.spatial]);
    let b = byte(x[base + 2u * p.spatial]);
    pixels[i] = r | (g << 8u) | (b << 16u) | (255u << 24u);
}
