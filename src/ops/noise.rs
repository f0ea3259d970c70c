//! Seeded Gaussian noise (wgsl/noise.wgsl): Philox 4x32-10 keyed by
//! (seed, candidate, step, element), then Box-Muller.

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::gpu::{Access, Context, Dispatch, Launch};
use crate::ops::{grid_1d, groups, NOISE};

/// Which draw this is: the same key always gives the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseKey {
    pub seed: u64,
    /// Candidate index of `out[0]`.
    pub candidate: u32,
    pub step: u32,
    /// Independent streams sharing (seed, candidate, step): start image, sampler noise, branching.
    pub stream: u32,
}

/// The seed comes first: [`set_seed`] rewrites these two words in place.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    seed_lo: u32,
    seed_hi: u32,
    candidate_base: u32,
    step: u32,
    n: u32,
    count: u32,
    stream: u32,
    scale: f32,
}

/// Fill `out` `[K, ...]` with `scale`·N(0, 1) noise; row k is candidate `key.candidate + k`.
pub fn gaussian(ctx: &Context, out: &Tensor, key: NoiseKey, scale: f32) -> Result<Dispatch> {
    let count = *out
        .shape
        .first()
        .ok_or_else(|| Error::BadInput("noise: output must have a candidate dimension".into()))?;
    let n = out.numel() / count.max(1);
    let params = Params {
        seed_lo: key.seed as u32,
        seed_hi: (key.seed >> 32) as u32,
        candidate_base: key.candidate,
        step: key.step,
        n: n as u32,
        count: count as u32,
        stream: key.stream,
        scale,
    };
    let blocks = count * n.div_ceil(4);
    Launch {
        shader: &NOISE,
        entry: "gaussian",
        constants: &[],
        tensors: &[(out, Access::ReadWrite)],
        workgroups: grid_1d(groups(blocks, 64)),
        flops: 40 * blocks as u64, // 10 rounds of 2 mulhilo, plus Box-Muller
        bytes: 4 * out.numel() as u64,
    }
    .build(ctx, &params)
}

/// Give a planned [`gaussian`] dispatch another seed (the rest of its key stays):
/// how a reused plan draws a new job's noise without rebinding anything.
pub fn set_seed(ctx: &Context, d: &Dispatch, seed: u64) {
    let words = [seed as u32, (seed >> 32) as u32];
    ctx.queue
        .write_buffer(&d.uniform, 0, bytemuck::cast_slice(&words));
}
