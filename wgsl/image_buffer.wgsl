// A convolution's input image read from its storage buffer: `image_at`, the
// one read wgsl/conv2d.wgsl's gathers make. wgsl/image_texture.wgsl gives the
// same function for the image staged in a texture.

@group(0) @binding(1) var<storage, read> x: array<act>; // [N, Cin, H, W]

fn image_at(i: u32) -> f32 {
    return f32(x[i]);
}
