// wgsl/weight_f32.wgsl's two functions for a layer weight read through its
// texture copy (src/gpu/texture.rs): rgba32float for an f32 weight, rgba16float
// for an f16 one, texel t holding elements 4t..4t+3 at (t % width, t / width).
// On llvmpipe a texel fetch is straight-line code where a storage-buffer load
// in a loop is a branch and a scalar load per lane and component; the values
// are the weight's own, so the kernels compute the same bits either way.

@group(0) @binding(2) var weight_texels: texture_2d<f32>;

// src/gpu/texture.rs's WIDTH.
const WEIGHT_TEXELS_PER_ROW: u32 = 2048u;

fn weight4_at(q: u32) -> vec4<f32> {
    return textureLoad(weight_texels, vec2(q % WEIGHT_TEXELS_PER_ROW, q / WEIGHT_TEXELS_PER_ROW), 0);
}

fn weight_at(i: u32) -> f32 {
    return weight4_at(i / 4u)[i % 4u];
}
