// Precision boundaries of an f16 forward pass (`--precision f16`): its inputs
// (latents, text conditioning) rounded to f16 as it starts and its output
// widened to f32 for the sampler, the scorer and the image kernels, which keep
// f32. Needs SHADER_F16 (16-bit storage); only built where the adapter has it.
//
// Values past f16's range become ±65504 rather than infinities: a forward pass
// in f16 saturates the way diffusers' fp16 pipelines' inputs never need to, and
// the run's finite check still catches what overflows inside the model.

enable f16;

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> wide: array<f32>;
@group(0) @binding(2) var<storage, read_write> narrow: array<f16>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * 256u + gid.x;
}

@compute @workgroup_size(256)
fn to_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    narrow[i] = f16(clamp(wide[i], -65504.0, 65504.0));
}

@compute @workgroup_size(256)
fn to_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    wide[i] = f32(narrow[i]);
}
