// A convolution's input image copied into the r32float texture its gathers
// then read (wgsl/image_texture.wgsl, src/gpu/texture.rs): element i to texel
// (i % 2048, i / 2048). Recorded just before the convolution and launched on
// the convolution's grid, directly or through the same indirect arguments, so
// a step the loop cancels (zero workgroups) skips its staging too: the
// invocations of that grid stride over the image, whatever its size.

struct Params {
    // Elements to copy.
    n: u32,
    // The convolution's grid as planned (a launch runs it or, cancelled, nothing).
    // Not the num_workgroups builtin: read in an indirect launch on Mesa 25's
    // llvmpipe, it left parts of the image uncopied.
    groups_x: u32,
    groups_y: u32,
    groups_z: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<act>;
@group(0) @binding(2) var dst: texture_storage_2d<r32float, write>;

// src/gpu/texture.rs's WIDTH.
const TEXELS_PER_ROW: u32 = 2048u;

// 64 invocations, as the convolution kernels' 8x8 workgroups.
@compute @workgroup_size(64)
fn stage_image(@builtin(global_invocation_id) gid: vec3<u32>) {
    let width = p.groups_x * 64u;
    let threads = width * p.groups_y * p.groups_z;
    let first = (gid.z * p.groups_y + gid.y) * width + gid.x;
    for (var i = first; i < loop_bound(p.n, first); i += threads) {
        textureStore(dst, vec2(i % TEXELS_PER_ROW, i / TEXELS_PER_ROW), vec4(f32(src[i]), 0.0, 0.0, 0.0));
    }
}
