//! The check output process (wgsl/score.wgsl): weighted cosine similarity of
//! every candidate's image embedding to the sub-prompts' text embeddings, the
//! winner, and the GPU-side early stop.

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::gpu::{Access, Context, Dispatch, Launch};
use crate::ops::{expect_shape, groups, SCORE};

/// Words of the `choice` buffer: winner, best score bits, margin bits, stopped-at step.
pub const CHOICE_WORDS: usize = 4;
/// `choice[3]` before any round was certain enough.
pub const NOT_STOPPED: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    prompts: u32,
    dim: u32,
    step: u32,
    min_score: f32,
    min_margin: f32,
    cancel_from: u32,
    cancel_to: u32,
}

/// When a round is certain enough; `f32::INFINITY` disables a test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Certainty {
    pub min_score: f32,
    pub min_margin: f32,
}

impl Certainty {
    pub const NEVER: Certainty = Certainty {
        min_score: f32::INFINITY,
        min_margin: f32::INFINITY,
    };

    /// The two `Params` words a pick compares with (WGSL has no infinity
    /// literal; `f32::MAX` compares the same for finite scores).
    fn words(self) -> [f32; 2] {
        [self.min_score.min(f32::MAX), self.min_margin.min(f32::MAX)]
    }
}

/// Give a planned [`pick`] dispatch another threshold: how a reused plan takes
/// a new request's `--until-score`/`--until-margin` without rebinding.
pub fn set_certainty(ctx: &Context, d: &Dispatch, certainty: Certainty) {
    // min_score and min_margin follow four u32 words in `Params`.
    ctx.queue
        .write_buffer(&d.uniform, 16, bytemuck::cast_slice(&certainty.words()));
}

/// `scores [K, P+1]`: cosine of each image `[K, D]` to each text `[P, D]`, then
/// the weighted total in column P. Two dispatches: per pair, then per candidate.
pub fn similarity(
    ctx: &Context,
    image: &Tensor,
    text: &Tensor,
    weights: &Tensor,
    scores: &Tensor,
) -> Result<[Dispatch; 2]> {
    let (k, dim) = (image.shape[0], image.dim(-1));
    let prompts = weights.numel();
    expect_shape("similarity", "text embeddings", text, &[prompts, dim])?;
    expect_shape("similarity", "scores", scores, &[k, prompts + 1])?;
    let params = Params {
        k: k as u32,
        prompts: prompts as u32,
        dim: dim as u32,
        step: 0,
        min_score: 0.0,
        min_margin: 0.0,
        cancel_from: 0,
        cancel_to: 0,
    };
    let tensors = [
        (image, Access::Read),
        (text, Access::Read),
        (weights, Access::Read),
        (scores, Access::ReadWrite),
    ];
    let launch = |entry, threads: usize, flops| Launch {
        shader: &SCORE,
        entry,
        constants: &[],
        tensors: &tensors,
        workgroups: [groups(threads, 64), 1, 1],
        flops,
        bytes: 4 * ((k + prompts) * dim) as u64,
    };
    Ok([
        launch("similarity", k * prompts, (6 * k * prompts * dim) as u64).build(ctx, &params)?,
        launch("total", k, (2 * k * prompts) as u64).build(ctx, &params)?,
    ])
}

/// Pick the best candidate (by the total in the last column of `scores`) into `choice` and, if `certainty` is met, zero the
/// words `cancel` of `args` (the later steps' indirect dispatch sizes).
pub fn pick(
    ctx: &Context,
    scores: &Tensor,
    step: usize,
    certainty: Certainty,
    choice: &Tensor,
    args: &Tensor,
    cancel: std::ops::Range<usize>,
) -> Result<Dispatch> {
    if scores.shape.len() != 2 || scores.shape[1] < 2 {
        return Err(Error::BadInput(format!(
            "pick: scores have shape {:?}, expected [K, sub-prompts + 1]",
            scores.shape
        )));
    }
    let (k, prompts) = (scores.shape[0], scores.shape[1] - 1);
    expect_shape("pick", "choice", choice, &[CHOICE_WORDS])?;
    if cancel.end > args.numel() || cancel.start > cancel.end {
        return Err(Error::BadInput(format!(
            "pick: cancel range {cancel:?} outside the {} words of the dispatch arguments",
            args.numel()
        )));
    }
    let params = Params {
        k: k as u32,
        prompts: prompts as u32,
        dim: 0,
        step: step as u32,
        min_score: certainty.words()[0],
        min_margin: certainty.words()[1],
        cancel_from: cancel.start as u32,
        cancel_to: cancel.end as u32,
    };
    Launch {
        shader: &SCORE,
        entry: "pick",
        constants: &[],
        tensors: &[
            (scores, Access::Read),
            (choice, Access::ReadWrite),
            (args, Access::ReadWrite),
        ],
        workgroups: [1, 1, 1],
        flops: k as u64,
        bytes: 4 * (k * (prompts + 1) + cancel.len()) as u64,
    }
    .build(ctx, &params)
}
