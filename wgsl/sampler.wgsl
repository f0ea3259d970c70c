// The denoising step on the GPU: build the UNet's batch from the candidates,
// combine its predictions with composable classifier-free guidance, and apply
// one sampler step whose coefficients the host computed once per run.
//
// Batch layout of the UNet input/output: [(1 + P) * K, C, H, W], group j of K
// candidates is the unconditional prompt (j = 0) or sub-prompt j - 1. A
// dedicated inpainting UNet's input has more channels than its samples
// ([.., 4 + 1 + 4, H, W]: latents, mask, masked-image latents): `prepare`
// writes the first C of each item, `condition` the rest once per run.
//
// Per-step coefficients, one `Step` per step (schedulers::StepCoefficients):
//   model_in = in_scale * x
//   x0       = clamp(x0_x * x + x0_m * model_out, -clip, clip)
//   x_next   = a * x + b * model_out + e * x0 + c * x0_prev + d * noise
// A start image (img2img, inpainting) enters as diffusers' `add_noise` at a
// noise level the host computed: x = level_x * init + level_noise * noise.
// One thread per element; 256 per workgroup (WebGPU baseline).

struct Params {
    // Elements per candidate, candidates, sub-prompts.
    n: u32,
    k: u32,
    prompts: u32,
    // Row of the coefficient table to use.
    step: u32,
    // Classifier-free guidance scale.
    guidance: f32,
    // The start image's noise level: x = level_x * init + level_noise * noise.
    level_x: f32,
    level_noise: f32,
    // Elements per item of the UNet's input (n, or more with extra channels).
    in_n: u32,
}

struct Step {
    timestep: f32,
    in_scale: f32,
    x0_x: f32,
    x0_m: f32,
    clip: f32,
    a: f32,
    b: f32,
    e: f32,
    c: f32,
    d: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * 256u + gid.x;
}

// ---- prepare: x [K, n] -> the first n of each item of model_in [(1+P)K, in_n],
// timesteps [(1+P)K] ----
@group(0) @binding(1) var<storage, read> steps: array<Step>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> model_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> timesteps: array<f32>;

@compute @workgroup_size(256)
fn prepare(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    let per_group = p.k * p.n;
    let groups = p.prompts + 1u;
    if (i >= groups * per_group) { return; }
    let s = steps[p.step];
    let item = i / p.n;
    model_in[item * p.in_n + i % p.n] = s.in_scale * x[i % per_group];
    if (i % p.n == 0u) {
        timesteps[item] = s.timestep;
    }
}

// ---- condition: the extra channels `extra` [n] (the same for every item) into
// the last n of each of the k items of model_in [k, in_n] ----
@group(0) @binding(1) var<storage, read> extra: array<f32>;
@group(0) @binding(2) var<storage, read_write> conditioned: array<f32>;

@compute @workgroup_size(256)
fn condition(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.k * p.n) { return; }
    conditioned[(i / p.n) * p.in_n + (p.in_n - p.n) + i % p.n] = extra[i % p.n];
}

// ---- guide: model_out [(1+P)K, n] -> eps [K, n] ----
// eps = u + g * sum_i w_i (e_i - u), w already normalised by the sum of positive weights.
@group(0) @binding(1) var<storage, read> weights: array<f32>;
@group(0) @binding(2) var<storage, read> model_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> guided: array<f32>;

@compute @workgroup_size(256)
fn guide(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    let per_group = p.k * p.n;
    if (i >= per_group) { return; }
    let u = model_out[i];
    var sum = 0.0;
    for (var j = 0u; j < loop_bound(p.prompts, i); j++) {
        sum += weights[j] * (model_out[(j + 1u) * per_group + i] - u);
    }
    guided[i] = u + p.guidance * sum;
}

// ---- step: x, x0 updated in place from model_out and noise ----
@group(0) @binding(1) var<storage, read> step_table: array<Step>;
@group(0) @binding(2) var<storage, read> m: array<f32>;
@group(0) @binding(3) var<storage, read> noise: array<f32>;
@group(0) @binding(4) var<storage, read_write> state_x: array<f32>;
@group(0) @binding(5) var<storage, read_write> state_x0: array<f32>;
// [1] u32: steps executed so far (one invocation adds 1 per step).
@group(0) @binding(6) var<storage, read_write> steps_run: array<u32>;

@compute @workgroup_size(256)
fn step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i == 0u) { steps_run[0] += 1u; }
    if (i >= p.k * p.n) { return; }
    let s = step_table[p.step];
    let xi = state_x[i];
    let mi = m[i];
    let x0_prev = state_x0[i];
    let x0 = clamp(s.x0_x * xi + s.x0_m * mi, -s.clip, s.clip);
    state_x0[i] = x0;
    state_x[i] = s.a * xi + s.b * mi + s.e * x0 + s.c * x0_prev + s.d * noise[i];
}

// ---- add_noise: every candidate starts from the image `init` [n] noised with
// its own draw: x[k] = level_x * init + level_noise * noise[k]; x0[k] = init ----
@group(0) @binding(1) var<storage, read> init: array<f32>;
@group(0) @binding(2) var<storage, read> start_noise: array<f32>;
@group(0) @binding(3) var<storage, read_write> start_x: array<f32>;
@group(0) @binding(4) var<storage, read_write> start_x0: array<f32>;

@compute @workgroup_size(256)
fn add_noise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.k * p.n) { return; }
    let clean = init[i % p.n];
    start_x[i] = p.level_x * clean + p.level_noise * start_noise[i];
    start_x0[i] = clean;
}

// ---- keep: inpainting with any model. Where the mask [n] is below 1 the
// samples are pulled back to the start image noised to the next step's level
// (the clean image after the last step): x = m*x + (1-m)*(level_x*init +
// level_noise*noise[k]), x0 = m*x0 + (1-m)*init ----
@group(0) @binding(1) var<storage, read> kept: array<f32>;
@group(0) @binding(2) var<storage, read> kept_noise: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> keep_x: array<f32>;
@group(0) @binding(5) var<storage, read_write> keep_x0: array<f32>;

@compute @workgroup_size(256)
fn keep(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.k * p.n) { return; }
    let m = mask[i % p.n];
    let clean = kept[i % p.n];
    let noised = p.level_x * clean + p.level_noise * kept_noise[i];
    keep_x[i] = mix(noised, keep_x[i], m);
    keep_x0[i] = mix(clean, keep_x0[i], m);
}
