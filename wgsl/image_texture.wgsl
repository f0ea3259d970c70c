// wgsl/image_buffer.wgsl's `image_at` for a convolution's input image staged
// in an r32float texture just before the convolution (wgsl/stage_image.wgsl,
// src/gpu/texture.rs): element i at texel (i % width, i / width). Mesa 22's
// llvmpipe runs a storage-buffer load in a loop as a loop over the SIMD lanes,
// each lane's value passed through the stack, while a texel fetch is
// straight-line code; the gathers are most of a convolution's time there. The
// texels hold the image's own values (f16 ones widened exactly), so the
// kernels compute the same bits either way.

@group(0) @binding(1) var image_texels: texture_2d<f32>;

// src/gpu/texture.rs's WIDTH.
const IMAGE_TEXELS_PER_ROW: u32 = 2048u;

fn image_at(i: u32) -> f32 {
    return textureLoad(image_texels, vec2(i % IMAGE_TEXELS_PER_ROW, i / IMAGE_TEXELS_PER_ROW), 0).x;
}
