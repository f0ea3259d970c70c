//! The denoising step (wgsl/sampler.wgsl): the UNet's batch from the
//! candidates, composable classifier-free guidance, and the sampler update
//! from a per-step coefficient table computed once per run on the host.

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::gpu::{Access, Context, Dispatch, Launch};
use crate::ops::{expect_shape, grid_1d, groups, SAMPLER};

/// `clip` value meaning "no clipping": finite, so a GPU compiled with
/// no-infinity assumptions still clamps to the identity.
pub const NO_CLIP: f32 = f32::MAX;

/// One step's scalars, the same linear form for every sampler (the formulas:
/// [`crate::schedulers`]' module docs), computed on the host once per run.
///
/// `#[repr(C)]` and `Pod`: a run's table uploads as is (`bytemuck::cast_slice`) to a
/// storage buffer read in WGSL as `array<Step>` with `struct Step { timestep: f32,
/// in_scale: f32, x0_x: f32, x0_m: f32, clip: f32, a: f32, b: f32, e: f32, c: f32,
/// d: f32 }` (40-byte stride, valid for storage buffers; not for uniforms).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepCoefficients {
    /// The timestep fed to the UNet (fractional for Euler with linspace spacing).
    pub timestep: f32,
    /// Model input = `in_scale · x`.
    pub in_scale: f32,
    /// Predicted clean sample x0 = clamp(`x0_x · x + x0_m · model_out`, ±`clip`).
    pub x0_x: f32,
    pub x0_m: f32,
    /// [`NO_CLIP`] unless DDIM's `clip_sample` is on.
    pub clip: f32,
    /// x_next = `a · x + b · model_out + e · x0 + c · x0_prev + d · noise`.
    pub a: f32,
    pub b: f32,
    pub e: f32,
    pub c: f32,
    pub d: f32,
}

impl StepCoefficients {
    /// Does this step read the previous step's x0?
    pub fn uses_x0_prev(&self) -> bool {
        self.c != 0.0
    }

    /// Does this step add fresh noise?
    pub fn uses_noise(&self) -> bool {
        self.d != 0.0
    }
}

/// Floats per row of the step table: one [`StepCoefficients`] (40 bytes).
pub const STEP_ROW: usize = std::mem::size_of::<StepCoefficients>() / 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    k: u32,
    prompts: u32,
    step: u32,
    guidance: f32,
    level_x: f32,
    level_noise: f32,
    /// Elements per item of the UNet's input (`n` but for `prepare` and `condition`).
    in_n: u32,
}

const WORKGROUP: usize = 256;

fn params(x: &Tensor, prompts: usize, step: usize, guidance: f32) -> Params {
    let k = x.shape[0];
    let n = (x.numel() / k) as u32;
    Params {
        n,
        k: k as u32,
        prompts: prompts as u32,
        step: step as u32,
        guidance,
        level_x: 0.0,
        level_noise: 0.0,
        in_n: n,
    }
}

fn check_table(op: &str, table: &Tensor, step: usize) -> Result<()> {
    if table.shape.len() != 2 || table.shape[1] != STEP_ROW || step >= table.shape[0] {
        return Err(Error::BadInput(format!(
            "{op}: step table has shape {:?}, needs [steps > {step}, {STEP_ROW}]",
            table.shape
        )));
    }
    Ok(())
}

/// Candidates `x` `[K, C, ...]` → UNet input `[(1+P)K, C_in, ...]` scaled by
/// the step's `in_scale`, and the timestep of every batch item `[(1+P)K]`. A
/// UNet input with more channels than the samples (a dedicated inpainting
/// UNet's, `C_in` 9 for `C` 4) gets the samples in its first `C`; the rest is
/// [`condition`]'s, written once per run.
pub fn prepare(
    ctx: &Context,
    table: &Tensor,
    step: usize,
    x: &Tensor,
    prompts: usize,
    model_in: &Tensor,
    timesteps: &Tensor,
) -> Result<Dispatch> {
    check_table("prepare", table, step)?;
    let k = x.shape[0];
    let mut in_shape = x.shape.clone();
    in_shape[0] = (prompts + 1) * k;
    if let Some(&c_in) = model_in.shape.get(1).filter(|&&c| c > x.shape[1]) {
        in_shape[1] = c_in; // extra channels after the samples'
    }
    expect_shape("prepare", "model input", model_in, &in_shape)?;
    expect_shape("prepare", "timesteps", timesteps, &[(prompts + 1) * k])?;
    let total = x.numel() * (prompts + 1);
    let mut params = params(x, prompts, step, 0.0);
    params.in_n = (model_in.numel() / in_shape[0]) as u32;
    Launch {
        shader: &SAMPLER,
        entry: "prepare",
        constants: &[],
        tensors: &[
            (table, Access::Read),
            (x, Access::Read),
            (model_in, Access::ReadWrite),
            (timesteps, Access::ReadWrite),
        ],
        workgroups: grid_1d(groups(total, WORKGROUP)),
        flops: total as u64,
        bytes: 8 * total as u64,
    }
    .build(ctx, &params)
}

/// A dedicated inpainting UNet's extra input channels: `extra` `[1, E, ...]`
/// (the mask and the masked image's latents, the same for every item) into
/// the last `E` channels of every item of `model_in` `[B, C_in, ...]`, as
/// diffusers' `torch.cat([latents, mask, masked_image_latents], dim=1)`.
/// Constant over a run: written once, [`prepare`] leaves them alone.
pub fn condition(ctx: &Context, extra: &Tensor, model_in: &Tensor) -> Result<Dispatch> {
    let (rank, e) = (model_in.shape.len(), extra.shape.get(1).copied());
    let fits = extra.shape.len() == rank
        && rank > 1
        && extra.shape[0] == 1
        && e.is_some_and(|e| e <= model_in.shape[1])
        && extra.shape[2..] == model_in.shape[2..];
    if !fits {
        return Err(Error::BadInput(format!(
            "condition: extra channels {:?} do not fit a model input {:?}",
            extra.shape, model_in.shape
        )));
    }
    let items = model_in.shape[0];
    let total = items * extra.numel();
    let mut params = params(extra, 0, 0, 0.0);
    params.k = items as u32;
    params.in_n = (model_in.numel() / items) as u32;
    Launch {
        shader: &SAMPLER,
        entry: "condition",
        constants: &[],
        tensors: &[(extra, Access::Read), (model_in, Access::ReadWrite)],
        workgroups: grid_1d(groups(total, WORKGROUP)),
        flops: 0,
        bytes: 8 * total as u64,
    }
    .build(ctx, &params)
}

/// `eps = u + g · Σ_i w_i (e_i − u)` over the UNet output `[(1+P)K, ...]`
/// (group 0 unconditional); `weights` `[P]` are already normalised.
pub fn guide(
    ctx: &Context,
    model_out: &Tensor,
    weights: &Tensor,
    guidance: f32,
    guided: &Tensor,
) -> Result<Dispatch> {
    let prompts = weights.numel();
    let k = guided.shape[0];
    let mut out_shape = guided.shape.clone();
    out_shape[0] = (prompts + 1) * k;
    expect_shape("guide", "model output", model_out, &out_shape)?;
    let n = guided.numel();
    Launch {
        shader: &SAMPLER,
        entry: "guide",
        constants: &[],
        tensors: &[
            (weights, Access::Read),
            (model_out, Access::Read),
            (guided, Access::ReadWrite),
        ],
        workgroups: grid_1d(groups(n, WORKGROUP)),
        flops: (3 * prompts + 2) as u64 * n as u64,
        bytes: 4 * ((prompts + 2) * n) as u64,
    }
    .build(ctx, &params(guided, prompts, 0, guidance))
}

/// Upload a run's step table `[steps, STEP_ROW]`.
pub fn upload_table(ctx: &Context, steps: &[StepCoefficients]) -> Result<Tensor> {
    Tensor::from_f32(
        ctx,
        "step table",
        &[steps.len(), STEP_ROW],
        bytemuck::cast_slice(steps),
    )
}

/// One sampler step in place with row `step` of `table`:
/// `x0 ← clamp(x0_x·x + x0_m·m, ±clip)`, `x ← a·x + b·m + e·x0 + c·x0_prev + d·noise`.
/// Also adds 1 to `steps_run` `[1]` (u32): the count of steps the GPU really
/// executed, which an early stop (zeroed indirect sizes) keeps below the plan.
#[allow(clippy::too_many_arguments)]
pub fn step(
    ctx: &Context,
    table: &Tensor,
    step: usize,
    model_out: &Tensor,
    noise: &Tensor,
    x: &Tensor,
    x0: &Tensor,
    steps_run: &Tensor,
) -> Result<Dispatch> {
    check_table("step", table, step)?;
    for (what, t) in [("model output", model_out), ("noise", noise), ("x0", x0)] {
        expect_shape("step", what, t, &x.shape)?;
    }
    expect_shape("step", "steps run", steps_run, &[1])?;
    let n = x.numel();
    Launch {
        shader: &SAMPLER,
        entry: "step",
        constants: &[],
        tensors: &[
            (table, Access::Read),
            (model_out, Access::Read),
            (noise, Access::Read),
            (x, Access::ReadWrite),
            (x0, Access::ReadWrite),
            (steps_run, Access::ReadWrite),
        ],
        workgroups: grid_1d(groups(n, WORKGROUP)),
        flops: 13 * n as u64,
        bytes: 24 * n as u64,
    }
    .build(ctx, &params(x, 0, step, 0.0))
}

/// A start image's noise level `(level_x, level_noise)`: diffusers' `add_noise`
/// at a step's timestep, `x = level_x · image + level_noise · noise`, in the
/// step's own convention (see `request::start`).
pub type NoiseLevel = (f32, f32);

/// img2img's start: every candidate of `x` `[K, ...]` is `init` `[1, ...]`
/// noised to `level` with its own draw of `noise` `[K, ...]`; `x0` `[K, ...]`
/// is `init` (what a run of no steps returns).
pub fn add_noise(
    ctx: &Context,
    init: &Tensor,
    noise: &Tensor,
    level: NoiseLevel,
    x: &Tensor,
    x0: &Tensor,
) -> Result<Dispatch> {
    start_shapes("add_noise", init, &[("noise", noise), ("x0", x0)], x)?;
    let n = x.numel();
    let mut params = params(x, 0, 0, 0.0);
    (params.level_x, params.level_noise) = level;
    Launch {
        shader: &SAMPLER,
        entry: "add_noise",
        constants: &[],
        tensors: &[
            (init, Access::Read),
            (noise, Access::Read),
            (x, Access::ReadWrite),
            (x0, Access::ReadWrite),
        ],
        workgroups: grid_1d(groups(n, WORKGROUP)),
        flops: 3 * n as u64,
        bytes: 16 * n as u64,
    }
    .build(ctx, &params)
}

/// Inpainting with any model, after a step: where `mask` `[1, ...]` (1 =
/// repaint) is below 1, `x` is pulled back to `init` noised to `level` with
/// `noise` `[K, ...]` and `x0` to `init`: `x = m·x + (1 − m)·(level_x·init +
/// level_noise·noise)`, `x0 = m·x0 + (1 − m)·init`.
pub fn keep(
    ctx: &Context,
    init: &Tensor,
    noise: &Tensor,
    mask: &Tensor,
    level: NoiseLevel,
    (x, x0): (&Tensor, &Tensor),
) -> Result<Dispatch> {
    start_shapes("keep", init, &[("noise", noise), ("x0", x0)], x)?;
    expect_shape("keep", "mask", mask, &init.shape)?;
    let n = x.numel();
    let mut params = params(x, 0, 0, 0.0);
    (params.level_x, params.level_noise) = level;
    Launch {
        shader: &SAMPLER,
        entry: "keep",
        constants: &[],
        tensors: &[
            (init, Access::Read),
            (noise, Access::Read),
            (mask, Access::Read),
            (x, Access::ReadWrite),
            (x0, Access::ReadWrite),
        ],
        workgroups: grid_1d(groups(n, WORKGROUP)),
        flops: 9 * n as u64,
        bytes: 28 * n as u64,
    }
    .build(ctx, &params)
}

/// `init` is one sample `[1, ...]` of `x`'s `[K, ...]`; `others` are shaped as `x`.
fn start_shapes(op: &str, init: &Tensor, others: &[(&str, &Tensor)], x: &Tensor) -> Result<()> {
    let mut one = x.shape.clone();
    one[0] = 1;
    expect_shape(op, "init", init, &one)?;
    for (what, t) in others {
        expect_shape(op, what, t, &x.shape)?;
    }
    Ok(())
}
