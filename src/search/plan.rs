//! The plan of a run: every tensor and every dispatch (with its bind group and
//! uniforms) of the loop, made before the first step, so a step only encodes.
//!
//! Two layouts are written here once each: a step block's launches in order
//! ([`Block::slots`], from which the indirect arguments' offsets and sizes and
//! the recording order all follow), and the one readback ([`Plan::readback`],
//! from which its buffer is sized, filled and parsed).

use crate::error::Result;
use crate::gpu::tensor::STORAGE;
use crate::gpu::{Context, DType, Dispatch, Tensor};
use crate::models::arena::{self, Arena, SharedArena};
use crate::models::pipeline::Pipeline;
use crate::models::Graph;
use crate::ops::finite;
use crate::ops::noise::{self, NoiseKey};
use crate::ops::score::{self, Certainty, CHOICE_WORDS};
use crate::ops::{layout, sampler};
use crate::postprocess::{self, Post};
use crate::request::Settings;

use super::passes::{memory_plan, plan_passes, plan_text, state, Inputs, Passes, State};
use super::start::Start;

/// The sampler's noise stream (the start's is `start::STREAM_START`).
const STREAM_STEP: u32 = 1;

/// A step block: its own dispatches around its candidate count's UNet pass.
pub(crate) struct Block {
    /// Index into the plan's [`Passes`].
    pub passes: usize,
    /// UNet input and timesteps from the candidates.
    prepare: Dispatch,
    /// Guidance, the sampler's fresh noise (if its row uses any), the update,
    /// the NaN/Inf guard on the new samples.
    after: Vec<Dispatch>,
    /// Index of the noise draw in `after`, reseeded per run.
    noise: Option<usize>,
    /// The round's pick (made once the blocks' offsets are known).
    pick: Option<Dispatch>,
    /// The NaN/Inf guard on the scores of the round after this step, if any.
    score_check: Option<Dispatch>,
    /// The round's scores copied into the history.
    history: Option<Dispatch>,
}

/// Where the NaN/Inf guard looks, in the order a step meets them: a check's
/// code is `4·step + stage`, so the lowest code is the earliest failure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Stage {
    /// The samples after a denoising step.
    Denoise = 0,
    /// The scores of a round.
    Score = 1,
    /// The final image, after decoding and upscaling.
    Post = 2,
}

impl Stage {
    pub fn code(self, step: usize) -> u32 {
        (4 * step + self as usize) as u32
    }

    /// The stage and step of a code.
    pub fn of(code: u32) -> (Stage, usize) {
        let stage = match code % 4 {
            0 => Stage::Denoise,
            1 => Stage::Score,
            _ => Stage::Post,
        };
        (stage, (code / 4) as usize)
    }
}

/// One launch of a step block, in recording order.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Slot {
    Prepare,
    Unet(usize),
    After(usize),
    Score(usize),
    /// The NaN/Inf guard on the round's scores.
    ScoreCheck,
    /// The round's scores into the history.
    History,
    /// Writes the indirect sizes, so it cannot read its own from them: it runs
    /// directly (and leaves a stopped run's decision alone).
    Pick,
    /// Copies the winner's `x` (0) and `x0` (1) into every slot.
    Broadcast(usize),
}

impl Block {
    /// Is there a scoring round after this step?
    pub fn round(&self) -> bool {
        self.score_check.is_some()
    }

    /// The block layout: prepare, the UNet pass, guidance/noise/update, and on
    /// a round the scoring pass, its NaN/Inf guard, the pick and the two broadcasts.
    pub fn slots(&self, pass: &Passes) -> Vec<Slot> {
        let mut slots = vec![Slot::Prepare];
        slots.extend((0..pass.unet.len()).map(Slot::Unet));
        slots.extend((0..self.after.len()).map(Slot::After));
        if self.round() {
            slots.extend((0..pass.score.len()).map(Slot::Score));
            slots.push(Slot::ScoreCheck);
            slots.push(Slot::History);
            slots.push(Slot::Pick);
            slots.extend((0..2).map(Slot::Broadcast));
        }
        slots
    }
}

/// Everything a run needs on the GPU, planned once: every tensor, every
/// dispatch with its bind group, the indirect sizes, the readback buffer.
/// A request that settles to the same [`Settings`] reuses it: only the
/// prompts' tokens and weights, the seed and the run's counters are written
/// again, so consecutive farm jobs of one shape allocate, compile and bind nothing.
pub struct Plan {
    pub(crate) s: Settings,
    pub(crate) st: State,
    pub(crate) inputs: Inputs,
    /// Text encoder, scorer text tower, the context of each candidate count.
    pub(crate) text_pass: Vec<Dispatch>,
    pub(crate) start: Start,
    pub(crate) passes: Vec<Passes>,
    broadcast: [Dispatch; 2],
    pub(crate) blocks: Vec<Block>,
    /// Each block's first dispatch in the indirect arguments (in dispatches).
    offsets: Vec<usize>,
    /// The indirect sizes as planned; written before every run (a stop zeroes some).
    pub(crate) sizes: Vec<u32>,
    pub(crate) args: Tensor,
    pub(crate) post: Post,
    out: Tensor,
    /// The UNet's and VAE's activations (the memory plan's `--precision`).
    pub(crate) precision: DType,
}

/// Refuse an unsafe shared plan (`arena::check_shared`), then make every
/// activation buffer at its final size, so the run makes none.
fn finish_buffers(arena: &SharedArena, text: &Graph) -> Result<()> {
    arena::check_shared(arena)?;
    arena::lock(arena).make_buffers();
    text.make_buffers();
    Ok(())
}

/// A plan's dispatches by phase of the loop (for `easel bench`): the text
/// encoders, one UNet pass and one scoring pass at the largest K, the
/// post-processing of the winner.
pub(crate) struct PlanPhases<'a> {
    pub text: &'a [Dispatch],
    pub unet: &'a [Dispatch],
    pub score: &'a [Dispatch],
    pub post: &'a [Dispatch],
}

impl Plan {
    /// Plan a run of `s` on `pipeline`'s models.
    pub(crate) fn new(ctx: &Context, pipeline: &Pipeline, s: Settings) -> Result<Self> {
        let [c, h, w] = s.sample;
        let mut text = plan_text(ctx, pipeline, s.prompts)?;
        // Every planned tensor checks the device's binding limit as it is created.
        let c_in = pipeline.config.unet.in_channels;
        let st = state(ctx, &s, [s.k_max(), c, h, w], c_in)?;
        let memory = memory_plan(ctx, pipeline, &s)?;
        let start = Start::plan(ctx, pipeline, &s, (&st.cands, memory.precision))?;
        // The passes share one arena (the largest pass's activations, not their
        // sum); text and start keep their own (`models::arena`).
        let arena = Arena::shared(ctx);
        // The UNet and scoring passes of each candidate count, shared by its steps.
        let counts = candidate_counts(&s);
        let passes = counts
            .iter()
            .map(|&k| plan_passes(ctx, pipeline, (&mut text, &arena), &st, k, &memory))
            .collect::<Result<Vec<_>>>()?;
        let broadcast = [
            layout::broadcast_row_in_place(ctx, &st.cands.x, &st.choice.head(1)?)?,
            layout::broadcast_row_in_place(ctx, &st.cands.x0, &st.choice.head(1)?)?,
        ];
        let mut blocks = (0..s.steps)
            .map(|step| {
                let index = counts.iter().position(|&k| k == s.phase(step).candidates);
                let index = index.expect("every phase's K is planned");
                step_block(ctx, (&s, &start), &st, &passes[index], index, step)
            })
            .collect::<Result<Vec<_>>>()?;
        let (offsets, total) = lay_out(&blocks, &passes);
        let args = indirect_args(ctx, 3 * total)?;
        add_picks(
            ctx,
            &mut blocks,
            &passes,
            &st.choice,
            &args,
            &offsets,
            total,
        )?;
        let post = postprocess::plan(
            ctx,
            pipeline,
            &st.cands.x0,
            s.upscale,
            [s.height, s.width],
            (Stage::Post.code(s.steps), &st.status),
            (&memory, &arena),
        )?;
        finish_buffers(&arena, &text.graph)?;
        let words = readback_parts(&post, &st).iter().map(|(_, n)| n).sum();
        let out = Tensor::wrap(
            ctx.create_buffer("readback", 4 * words as u64, STORAGE),
            &[words],
        );
        let mut plan = Plan {
            s,
            st,
            inputs: text.inputs,
            text_pass: text.graph.dispatches,
            start,
            passes,
            broadcast,
            blocks,
            offsets,
            sizes: Vec::new(),
            args,
            post,
            out,
            precision: memory.precision,
        };
        // The indirect sizes as planned, in recording order.
        plan.sizes = plan
            .order()
            .iter()
            .flatten()
            .flat_map(|(d, _)| d.workgroups)
            .collect();
        Ok(plan)
    }

    pub(crate) fn fits(&self, s: &Settings) -> bool {
        self.s == *s
    }

    /// The dispatch of `slot` in `block`, and whether it is launched indirectly.
    fn resolve<'a>(&'a self, block: &'a Block, slot: Slot) -> (&'a Dispatch, bool) {
        let pass = &self.passes[block.passes];
        match slot {
            Slot::Prepare => (&block.prepare, true),
            Slot::Unet(i) => (&pass.unet[i], true),
            Slot::After(i) => (&block.after[i], true),
            Slot::Score(i) => (&pass.score[i], true),
            Slot::ScoreCheck => (block.score_check.as_ref().expect("a round checks"), true),
            Slot::History => (block.history.as_ref().expect("a round is kept"), true),
            Slot::Pick => (block.pick.as_ref().expect("a round has a pick"), false),
            Slot::Broadcast(i) => (&self.broadcast[i], true),
        }
    }

    /// Each block's dispatches in recording order, with whether each is
    /// launched indirectly.
    pub(crate) fn order(&self) -> Vec<Vec<(&Dispatch, bool)>> {
        self.blocks
            .iter()
            .map(|block| {
                let slots = block.slots(&self.passes[block.passes]);
                slots.into_iter().map(|s| self.resolve(block, s)).collect()
            })
            .collect()
    }

    /// Where block `step`'s `j`-th launch reads its sizes in `args` (bytes).
    pub(crate) fn indirect_offset(&self, step: usize, j: usize) -> u64 {
        12 * (self.offsets[step] + j) as u64
    }

    /// How many of block `step`'s launches come before its broadcasts (all of
    /// them when it has no round): where a kept round is read back.
    pub(crate) fn before_broadcast(&self, step: usize) -> usize {
        let block = &self.blocks[step];
        let slots = block.slots(&self.passes[block.passes]);
        slots
            .iter()
            .position(|s| matches!(s, Slot::Broadcast(_)))
            .unwrap_or(slots.len())
    }

    /// The readback layout, in order: the RGBA8 pixels, the pick's record, the
    /// step counter, the last round's scores, the NaN/Inf guard's status, every
    /// round's scores, each with its length in u32 words.
    pub(crate) fn readback(&self) -> [(&Tensor, usize); 6] {
        readback_parts(&self.post, &self.st)
    }

    /// The buffer of the one readback.
    pub(crate) fn readback_buffer(&self) -> &wgpu::Buffer {
        &self.out.buffer
    }

    pub(crate) fn phases(&self) -> PlanPhases<'_> {
        let largest = self.passes.last().expect("a plan has passes"); // sorted by K
        PlanPhases {
            text: &self.text_pass,
            unet: &largest.unet,
            score: &largest.score,
            post: &self.post.dispatches,
        }
    }

    /// Every block's noise draw, to be given the run's seed.
    pub(crate) fn noise_draws(&self) -> impl Iterator<Item = &Dispatch> {
        self.blocks
            .iter()
            .filter_map(|b| b.noise.map(|i| &b.after[i]))
    }

    pub(crate) fn picks(&self) -> impl Iterator<Item = &Dispatch> {
        self.blocks.iter().filter_map(|b| b.pick.as_ref())
    }
}

/// The readback layout (see [`Plan::readback`]).
fn readback_parts<'a>(post: &'a Post, st: &'a State) -> [(&'a Tensor, usize); 6] {
    [
        (&post.pixels, post.width * post.height),
        (&st.choice, CHOICE_WORDS),
        (&st.steps_run, 1),
        (&st.cands.scores, st.cands.scores.numel()),
        (&st.status, 1),
        (&st.history, st.history.numel()),
    ]
}

/// Each block's first launch in the indirect arguments, and the launches in all.
fn lay_out(blocks: &[Block], passes: &[Passes]) -> (Vec<usize>, usize) {
    let mut offsets = Vec::with_capacity(blocks.len());
    let mut total = 0;
    for b in blocks {
        offsets.push(total);
        total += b.slots(&passes[b.passes]).len();
    }
    (offsets, total)
}

/// Give each round its pick, which cancels every launch after its own block
/// (in u32 words of `args`: three per launch).
fn add_picks(
    ctx: &Context,
    blocks: &mut [Block],
    passes: &[Passes],
    choice: &Tensor,
    args: &Tensor,
    offsets: &[usize],
    total: usize,
) -> Result<()> {
    for (step, block) in blocks.iter_mut().enumerate() {
        if !block.round() {
            continue;
        }
        let end = offsets.get(step + 1).copied().unwrap_or(total);
        let scores = &passes[block.passes].cands.scores;
        // The threshold is set per run (see `search::load`).
        let pick = score::pick(
            ctx,
            scores,
            step,
            Certainty::NEVER,
            choice,
            args,
            3 * end..3 * total,
        )?;
        block.pick = Some(pick);
    }
    Ok(())
}

fn key(seed: u64, step: usize, stream: u32) -> NoiseKey {
    NoiseKey {
        seed,
        candidate: 0,
        step: step as u32,
        stream,
    }
}

/// The distinct candidate counts of the phases, ascending.
fn candidate_counts(s: &Settings) -> Vec<usize> {
    let mut counts: Vec<usize> = s.phases.iter().map(|ph| ph.candidates).collect();
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// Step `step`'s own dispatches: the UNet batch before, guidance, noise and
/// the sampler update after (its phase's K, guidance and table row).
fn step_block(
    ctx: &Context,
    (s, start): (&Settings, &Start),
    st: &State,
    at: &Passes,
    passes: usize,
    step: usize,
) -> Result<Block> {
    let prepare = sampler::prepare(
        ctx,
        &st.table,
        step,
        &at.cands.x,
        s.prompts,
        &at.cands.model_in,
        &at.cands.timesteps,
    )?;
    let guidance = s.phase(step).guidance;
    let mut after = vec![sampler::guide(
        ctx,
        &at.model_out,
        &st.weights,
        guidance,
        &at.cands.guided,
    )?];
    let mut noise = None;
    if s.table[step].uses_noise() {
        // The seed is set per run (see `search::load`).
        noise = Some(after.len());
        after.push(noise::gaussian(
            ctx,
            &at.cands.noise,
            key(0, step + 1, STREAM_STEP),
            1.0,
        )?);
    }
    after.push(sampler::step(
        ctx,
        &st.table,
        step,
        &at.cands.guided,
        &at.cands.noise,
        &at.cands.x,
        &at.cands.x0,
        &st.steps_run,
    )?);
    // Inpainting: the kept region back to the start picture, before the guard looks.
    after.extend(start.keep(ctx, s, &at.cands, step)?);
    after.push(finite::check_finite(
        ctx,
        &at.cands.x,
        Stage::Denoise.code(step),
        &st.status,
    )?);
    let (score_check, history) = match s.rounds.iter().position(|&r| r == step) {
        Some(round) => {
            let (check, kept) = round_records(ctx, st, at, step, round)?;
            (Some(check), Some(kept))
        }
        None => (None, None),
    };
    Ok(Block {
        passes,
        prepare,
        after,
        noise,
        pick: None,
        score_check,
        history,
    })
}

/// A round's NaN/Inf guard on its scores, and their copy into the history
/// (round `round` at row `round·K_max`).
fn round_records(
    ctx: &Context,
    st: &State,
    at: &Passes,
    step: usize,
    round: usize,
) -> Result<(Dispatch, Dispatch)> {
    let scores = &at.cands.scores;
    let check = finite::check_finite(ctx, scores, Stage::Score.code(step), &st.status)?;
    let k_max = st.cands.x.shape[0];
    let kept = layout::copy_into(ctx, scores, &st.history, 0, round * k_max)?;
    Ok((check, kept))
}

fn indirect_args(ctx: &Context, words: usize) -> Result<Tensor> {
    let buffer = ctx.create_buffer(
        "indirect dispatch sizes",
        4 * words.max(1) as u64,
        STORAGE | wgpu::BufferUsages::INDIRECT,
    );
    let mut t = Tensor::wrap(buffer, &[words.max(1)]);
    t.dtype = DType::U32;
    Ok(t)
}
