//! The seed's loop (DESIGN.md "The loop"), everything on the GPU:
//!
//! 1. **Start image**: static from Philox keyed by (seed, candidate), one per
//!    candidate slot; candidate 0's is the same whatever the candidate count.
//! 2. **Art process**: one sampler step of the UNet on every candidate and every
//!    sub-prompt at once (batch `(1 + P)·K`), combined by composable guidance.
//! 3. **Check output process**: every `score_every` steps and after the last, the
//!    scorer embeds each candidate's predicted clean image x0, rates it against
//!    the sub-prompts (weighted cosine), picks the winner and copies it into every
//!    slot, so the next steps branch from the best with different noise.
//! 4. **Certain enough**: the pick kernel zeroes the later steps' indirect
//!    dispatch sizes once the winner's score (or margin) passes the threshold:
//!    the GPU decides, the host never reads anything back mid-run.
//! 5. **Post-processing**: x0 of the winner to [0, 1], the learned upscaler,
//!    RGBA8, and the single readback (pixels + the pick's record + scores).
//!
//! The whole run is planned up front: every tensor and every dispatch (with its
//! uniforms) exists before the first step; a step only encodes.

use std::time::Instant;

use crate::engine::{Engine, Image, Request, Round};
use crate::error::{Error, Result};
use crate::gpu::pool::STORAGE;
use crate::gpu::{readback, Context};
use crate::models::Graph;
use crate::ops::image::{self, Normalize};
use crate::ops::noise::{self, NoiseKey};
use crate::ops::score::{self, Certainty, CHOICE_WORDS, NOT_STOPPED};
use crate::ops::{layout, resample, sampler, Dispatch, Workgroups};
use crate::output::Parameters;
use crate::phases::{self, Defaults, Phase};
use crate::schedulers::StepCoefficients;
use crate::tensor::{DType, Tensor};

/// Noise streams: independent draws sharing (seed, candidate, step).
const STREAM_START: u32 = 0;
const STREAM_STEP: u32 = 1;

/// The sub-prompts of a request, with the unconditional prompt first.
struct Prompts {
    texts: Vec<String>,
    weights: Vec<f32>,
}

fn prompts(request: &Request) -> Result<Prompts> {
    let parsed = crate::prompt::parse(&request.prompt)?;
    let weights = parsed
        .normalized_weights()
        .iter()
        .map(|&w| w as f32)
        .collect();
    let texts = parsed.parts.into_iter().map(|p| p.text).collect();
    Ok(Prompts { texts, weights })
}

/// Everything one request needs, settled and checked before any GPU work.
#[derive(PartialEq)]
struct Settings {
    /// The image's size in pixels (before upscaling).
    width: usize,
    height: usize,
    /// The UNet's sample per candidate, `[C, h, w]`: the image itself for a
    /// pixel-space model, latents for a latent one.
    sample: [usize; 3],
    steps: usize,
    /// The run's phases (one without `--schedule`).
    phases: Vec<Phase>,
    /// One row per step (see [`phases::step_table`]).
    table: Vec<StepCoefficients>,
    init_noise_sigma: f32,
    /// The steps after which the scorer runs (sorted; every phase ends with one).
    rounds: Vec<usize>,
}

impl Settings {
    fn phase(&self, step: usize) -> &Phase {
        let i = self.phases.iter().position(|p| p.steps.contains(&step));
        &self.phases[i.expect("phases cover every step")]
    }

    /// The most candidates any phase has: the state's slot count.
    fn k_max(&self) -> usize {
        self.phases.iter().map(|p| p.candidates).max().unwrap_or(1)
    }
}

fn settle(engine: &Engine, request: &Request) -> Result<Settings> {
    let unet = &engine.unet.config;
    // A latent model samples latents the VAE decodes `vae_factor` times larger.
    let (channels, vae_factor) = match &engine.vae {
        Some(vae) => (vae.config.latent_channels, vae.upscale_factor()),
        None => (3, 1),
    };
    if unet.in_channels != channels || unet.out_channels != channels {
        let what = match engine.vae {
            Some(_) => "the VAE's latent_channels",
            None => "3 (a pixel-space model: no vae/ folder)",
        };
        return Err(Error::model(
            engine.dir.join("unet"),
            format!(
                "in_channels {} and out_channels {} must both be {what}",
                unet.in_channels, unet.out_channels
            ),
        ));
    }
    let default = unet.sample_size.unwrap_or(32) * vae_factor;
    let (width, height) = request.size.unwrap_or((default, default));
    let factor = unet.downscale_factor() * vae_factor;
    if width == 0 || height == 0 || width % factor != 0 || height % factor != 0 {
        return Err(Error::BadInput(format!(
            "--size {width}x{height}: both sides must be positive multiples of {factor} for this model"
        )));
    }
    let sample = [channels, height / vae_factor, width / vae_factor];
    let defaults = Defaults {
        sampler: request
            .sampler
            .unwrap_or_else(|| engine.scheduler.default_sampler()),
        candidates: request.candidates,
        score_every: request.score_every,
        guidance: request.guidance.unwrap_or(engine.settings.default_guidance),
    };
    let default_steps = engine.settings.default_steps;
    let (steps, phases) = match &request.schedule {
        Some(schedule) => {
            let steps = schedule.total_steps(request.steps, default_steps);
            (steps, schedule.resolve(steps, &defaults)?)
        }
        None => {
            let steps = request.steps.unwrap_or(default_steps);
            (steps, phases::single(steps, &defaults))
        }
    };
    if steps == 0 {
        return Err(Error::BadInput("--steps 0: need at least 1 step".into()));
    }
    for phase in &phases {
        check_phase(engine, phase)?;
    }
    if !matches!(request.upscale, 1 | 2 | 4) {
        return Err(Error::BadInput(format!(
            "--upscale {}: must be 1, 2 or 4",
            request.upscale
        )));
    }
    if request.upscale > 1 && engine.upscaler.is_none() {
        return Err(Error::model(
            &engine.dir,
            "--upscale needs an upscaler/ folder",
        ));
    }
    let rounds: Vec<usize> = if engine.scorer.is_some() {
        phases.iter().flat_map(Phase::rounds).collect()
    } else {
        Vec::new()
    };
    let (table, init_noise_sigma) = phases::step_table(&phases, &rounds, &engine.scheduler)?;
    Ok(Settings {
        width,
        height,
        sample,
        steps,
        phases,
        table,
        init_noise_sigma,
        rounds,
    })
}

fn check_phase(engine: &Engine, phase: &Phase) -> Result<()> {
    if phase.candidates == 0 {
        return Err(Error::BadInput(
            "--candidates 0: need at least one candidate".into(),
        ));
    }
    if phase.candidates > 1 && engine.scorer.is_none() {
        return Err(Error::model(
            &engine.dir,
            "--candidates > 1 needs a scorer/ folder",
        ));
    }
    Ok(())
}

/// The candidates' state and the buffers every step reuses, sized for the
/// largest candidate count; a phase with fewer works on a prefix of each.
struct State {
    /// `[K, 3, H, W]`: the current samples.
    x: Tensor,
    /// `[K, 3, H, W]`: their predicted clean images (and DPM-Solver's previous x0).
    x0: Tensor,
    noise: Tensor,
    guided: Tensor,
    model_in: Tensor,
    timesteps: Tensor,
    table: Tensor,
    weights: Tensor,
    /// Winner, best score, margin, stopped-at step (u32 words).
    choice: Tensor,
    /// `[1]` u32: steps the GPU executed (the sampler step counts itself).
    steps_run: Tensor,
    scores: Tensor,
}

/// What one candidate count needs: views of the state for its K, the UNet pass
/// over its `(1 + P)·K` batch and the scoring pass over its K candidates.
struct Passes {
    k: usize,
    x: Tensor,
    x0: Tensor,
    noise: Tensor,
    guided: Tensor,
    model_in: Tensor,
    timesteps: Tensor,
    scores: Tensor,
    unet: Vec<Dispatch>,
    model_out: Tensor,
    /// The candidates as the scorer sees them, `[K, 3, H, W]` in [-1, 1]: `x0`,
    /// or its VAE decoding (made by the scoring pass) for a latent model.
    images: Tensor,
    score: Vec<Dispatch>,
}

/// A step block: its own dispatches around its candidate count's UNet pass.
struct Block {
    /// Index into the plan's [`Passes`].
    passes: usize,
    /// UNet input and timesteps from the candidates.
    prepare: Dispatch,
    /// Guidance, the sampler's fresh noise (if its row uses any), the update.
    after: Vec<Dispatch>,
    /// Index of the noise draw in `after`, reseeded per run.
    noise: Option<usize>,
    /// Is there a scoring round after this step?
    round: bool,
}

/// The inputs a run writes into a plan: token ids and EOS positions of the
/// text encoder's and the scorer's prompts.
struct Inputs {
    text: (Tensor, Tensor),
    scorer: Option<(Tensor, Tensor)>,
}

/// Everything a run needs on the GPU, planned once: every tensor, every
/// dispatch with its bind group, the indirect sizes, the readback buffer.
/// A request that settles to the same [`Settings`], upscale factor and
/// sub-prompt count reuses it: only the prompts' tokens and weights, the seed
/// and the run's counters are written again, so consecutive farm jobs of one
/// shape allocate, compile and bind nothing.
pub struct Plan {
    s: Settings,
    upscale: usize,
    prompts: usize,
    st: State,
    inputs: Inputs,
    /// Text encoder, scorer text tower, the context of each candidate count.
    text_pass: Vec<Dispatch>,
    start: Dispatch,
    passes: Vec<Passes>,
    broadcast: [Dispatch; 2],
    blocks: Vec<Block>,
    /// One pick per round, in step order.
    picks: Vec<Dispatch>,
    /// Each block's first dispatch in the indirect arguments (in dispatches).
    offsets: Vec<usize>,
    /// The indirect sizes as planned; written before every run (a stop zeroes some).
    sizes: Vec<u32>,
    args: Tensor,
    post: Vec<Dispatch>,
    pixels: Tensor,
    out_w: usize,
    out_h: usize,
    out: Tensor,
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
    pub(crate) fn phases(&self) -> PlanPhases<'_> {
        let largest = self.passes.last().expect("a plan has passes"); // sorted by K
        PlanPhases {
            text: &self.text_pass,
            unet: &largest.unet,
            score: &largest.score,
            post: &self.post,
        }
    }

    /// The buffer of the one readback.
    pub(crate) fn readback_buffer(&self) -> &wgpu::Buffer {
        &self.out.buffer
    }

    fn fits(&self, s: &Settings, upscale: usize, prompts: usize) -> bool {
        self.s == *s && self.upscale == upscale && self.prompts == prompts
    }

    /// Each block's dispatches in order, with whether each is launched indirectly.
    /// A pick writes the sizes, so it cannot also read its own from them; it
    /// runs directly (and leaves a stopped run's decision alone).
    fn order(&self) -> Vec<Vec<(&Dispatch, bool)>> {
        let mut picks = self.picks.iter();
        self.blocks
            .iter()
            .map(|block| {
                let pass = &self.passes[block.passes];
                let mut list: Vec<(&Dispatch, bool)> = std::iter::once(&block.prepare)
                    .chain(&pass.unet)
                    .chain(&block.after)
                    .map(|d| (d, true))
                    .collect();
                if block.round {
                    list.extend(pass.score.iter().map(|d| (d, true)));
                    list.push((picks.next().expect("one pick per round"), false));
                    list.extend(self.broadcast.iter().map(|d| (d, true)));
                }
                list
            })
            .collect()
    }
}

pub fn run(engine: &Engine, request: &Request) -> Result<Image> {
    let started = Instant::now();
    let s = settle(engine, request)?;
    let prompts = prompts(request)?;
    let mut cached = engine.plan.lock().unwrap_or_else(|e| e.into_inner());
    let p = prompts.texts.len();
    if !cached
        .as_ref()
        .is_some_and(|plan| plan.fits(&s, request.upscale, p))
    {
        // Free the old plan's buffers before making the new one's.
        *cached = None;
        *cached = Some(plan(engine, s, request.upscale, p)?);
    }
    let plan = cached.as_ref().expect("planned above");
    let certainty = Certainty {
        min_score: request.until_score.unwrap_or(f32::INFINITY),
        min_margin: request.until_margin.unwrap_or(f32::INFINITY),
    };
    load(engine, plan, &prompts, request.seed, certainty)?;
    execute(engine, plan, request, prompts, started)
}

/// Plan a run of `s` for `p` sub-prompts.
fn plan(engine: &Engine, s: Settings, upscale: usize, p: usize) -> Result<Plan> {
    let ctx = &engine.ctx;
    let k_max = s.k_max();
    let [c, h, w] = s.sample;

    // 1. Text: the denoiser's conditioning, the scorer's embeddings.
    let mut text = Graph::new(ctx, "text");
    let text_ids = token_tensors(ctx, 1 + p, engine.tokenizer.model_max_length)?;
    let hidden = engine
        .text_encoder
        .forward(&mut text, &text_ids.0, &text_ids.1)?
        .last_hidden_state; // [1 + P, 77, D]
    let (scorer_ids, text_embeds) = match &engine.scorer {
        Some(scorer) => {
            let ids = token_tensors(ctx, p, engine.tokenizer.model_max_length)?;
            let embeds = scorer.text_embeds(&mut text, &ids.0, &ids.1)?;
            (Some(ids), Some(embeds))
        }
        None => (None, None),
    };

    // 2. State (every planned tensor checks the device's binding limit as it is
    //    created), start image.
    let st = state(ctx, &s, p, [k_max, c, h, w])?;
    let start = noise::gaussian(ctx, &st.x, key(0, 0, STREAM_START), s.init_noise_sigma)?;

    // 3. The UNet and scoring passes of each candidate count, shared by its steps.
    let mut counts: Vec<usize> = s.phases.iter().map(|ph| ph.candidates).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut passes = Vec::with_capacity(counts.len());
    for &k in &counts {
        passes.push(plan_passes(
            engine,
            &mut text,
            &st,
            &hidden,
            &text_embeds,
            k,
        )?);
    }
    let broadcast = [
        layout::broadcast_row_in_place(ctx, &st.x, &st.choice.head(1)?)?,
        layout::broadcast_row_in_place(ctx, &st.x0, &st.choice.head(1)?)?,
    ];

    // 4. One block per step; its dispatches are launched indirectly so a pick can cancel it.
    let mut blocks = Vec::with_capacity(s.steps);
    for step in 0..s.steps {
        let k = s.phase(step).candidates;
        let index = counts.iter().position(|&c| c == k).expect("planned");
        blocks.push(step_block(ctx, &s, &st, &passes[index], index, step)?);
    }
    let per_block: Vec<usize> = blocks
        .iter()
        .map(|b| {
            let pass = &passes[b.passes];
            1 + pass.unet.len() + b.after.len() + if b.round { pass.score.len() + 1 + 2 } else { 0 }
        })
        .collect();
    let offsets: Vec<usize> = per_block
        .iter()
        .scan(0, |acc, &n| {
            let o = *acc;
            *acc += n;
            Some(o)
        })
        .collect();
    let total: usize = per_block.iter().sum();
    let args = indirect_args(ctx, 3 * total)?;
    let mut picks = Vec::new();
    for (step, block) in blocks.iter().enumerate() {
        if block.round {
            let cancel = 3 * (offsets[step] + per_block[step])..3 * total;
            picks.push(score::pick(
                ctx,
                &passes[block.passes].scores,
                step,
                Certainty::NEVER, // set per run
                &st.choice,
                &args,
                cancel,
            )?);
        }
    }

    // 5. Post-processing and the readback buffer, planned like the rest.
    let (post, pixels, out_w, out_h) = postprocess(engine, &st, upscale, [s.height, s.width])?;
    let readback_words = out_w * out_h + CHOICE_WORDS + 1 + k_max * (p + 1);
    let out = Tensor::wrap(
        ctx.create_buffer("readback", 4 * readback_words as u64, STORAGE),
        &[readback_words],
    );
    let mut plan = Plan {
        s,
        upscale,
        prompts: p,
        st,
        inputs: Inputs {
            text: text_ids,
            scorer: scorer_ids,
        },
        text_pass: text.dispatches,
        start,
        passes,
        broadcast,
        blocks,
        picks,
        offsets,
        sizes: Vec::new(),
        args,
        post,
        pixels,
        out_w,
        out_h,
        out,
    };
    // The indirect sizes, in block order.
    let mut sizes = Vec::with_capacity(3 * total);
    for (d, _) in plan.order().iter().flatten() {
        let Workgroups::Direct(g) = d.workgroups else {
            return Err(Error::Gpu("a planned dispatch is already indirect".into()));
        };
        sizes.extend(g);
    }
    plan.sizes = sizes;
    Ok(plan)
}

/// Write one run's inputs into the plan: tokens, weights, seeds, thresholds,
/// fresh counters.
fn load(
    engine: &Engine,
    plan: &Plan,
    prompts: &Prompts,
    seed: u64,
    certainty: Certainty,
) -> Result<()> {
    let ctx = &engine.ctx;
    let write = |t: &Tensor, words: &[u32]| {
        ctx.queue
            .write_buffer(&t.buffer, 0, bytemuck::cast_slice(words))
    };
    let texts: Vec<String> = std::iter::once(engine.settings.unconditional_prompt.clone())
        .chain(prompts.texts.iter().cloned())
        .collect();
    let rows = token_rows(engine, &texts);
    write(&plan.inputs.text.0, &rows.concat());
    write(
        &plan.inputs.text.1,
        &engine.text_encoder.eos_positions(&rows),
    );
    if let (Some(scorer), Some((ids, eos))) = (&engine.scorer, &plan.inputs.scorer) {
        let rows = token_rows(engine, &prompts.texts);
        write(ids, &rows.concat());
        write(eos, &scorer.text_model.eos_positions(&rows));
    }
    ctx.queue.write_buffer(
        &plan.st.weights.buffer,
        0,
        bytemuck::cast_slice(&prompts.weights),
    );
    noise::set_seed(ctx, &plan.start, seed);
    for block in &plan.blocks {
        if let Some(i) = block.noise {
            noise::set_seed(ctx, &block.after[i], seed);
        }
    }
    for pick in &plan.picks {
        score::set_certainty(ctx, pick, certainty);
    }
    write(&plan.args, &plan.sizes);
    write(&plan.st.choice, &[0, 0, 0, NOT_STOPPED]);
    write(&plan.st.steps_run, &[0]);
    Ok(())
}

/// Run a loaded plan: text + start, one submission per step (for progress and
/// `--trace`), post-processing, the one readback.
fn execute(
    engine: &Engine,
    plan: &Plan,
    request: &Request,
    prompts: Prompts,
    started: Instant,
) -> Result<Image> {
    let ctx = &engine.ctx;
    let (s, st) = (&plan.s, &plan.st);
    let (p, k_max) = (plan.prompts, s.k_max());
    let (out_w, out_h) = (plan.out_w, plan.out_h);
    let order = plan.order();
    submit(ctx, |pass| {
        plan.text_pass
            .iter()
            .chain([&plan.start])
            .for_each(|d| crate::ops::record(pass, d))
    })?;
    let keep = request.trace.is_some() || request.keep_rounds;
    let mut rounds: Vec<Round> = Vec::new();
    // A live step counter on a terminal; logs (farms, CI) get only the final line.
    let progress = request.progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    for (step, list) in order.iter().enumerate() {
        // When rounds are kept, a round's block is split before its broadcasts so
        // the candidates can be read back as they were scored (the only extra readbacks).
        let block = &plan.blocks[step];
        let split = if keep && block.round {
            list.len() - plan.broadcast.len()
        } else {
            list.len()
        };
        let parts = [0..split, split..list.len()];
        for (part, range) in parts.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            submit(ctx, |pass| {
                for j in range {
                    let (d, indirect) = list[j];
                    if indirect {
                        let offset = 12 * (plan.offsets[step] + j) as u64;
                        record_indirect(pass, d, &plan.args, offset);
                    } else {
                        crate::ops::record(pass, d);
                    }
                }
            })?;
            if part == 0 && split < list.len() {
                rounds.push(read_round(ctx, &plan.passes[block.passes], st, step)?);
            }
        }
        if progress {
            eprint!("\reasel: step {}/{}", step + 1, s.steps);
        }
    }
    if progress {
        eprintln!();
    }
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    crate::ops::encode(&mut encoder, &plan.post);
    let mut at = 0;
    for (t, bytes) in [
        (&plan.pixels, 4 * (out_w * out_h) as u64),
        (&st.choice, 4 * CHOICE_WORDS as u64),
        (&st.steps_run, 4),
        (&st.scores, st.scores.bytes()),
    ] {
        encoder.copy_buffer_to_buffer(&t.buffer, 0, &plan.out.buffer, at, bytes);
        at += bytes;
    }
    ctx.queue.submit([encoder.finish()]);
    let bytes = readback::read_bytes(ctx, &plan.out.buffer, 0, plan.out.bytes())?;

    if let Some(path) = &request.trace {
        trace::write(path, &rounds, [s.height, s.width], p)?;
    }

    // The one readback: pixels, the pick's record, the step count, the last round's scores.
    let words: &[u32] = bytemuck::cast_slice(&bytes);
    let (rgba, rest) = words.split_at(out_w * out_h);
    let (choice, rest) = rest.split_at(CHOICE_WORDS);
    let (steps_run, scores) = (
        rest[0] as usize,
        bytemuck::cast_slice::<u32, f32>(&rest[1..]),
    );
    debug_assert_eq!(scores.len(), k_max * (p + 1));
    let winner = choice[0] as usize;
    let stopped = choice[3];
    let stopped_early = stopped != NOT_STOPPED && (stopped as usize) + 1 < s.steps;
    // The last round scored the last phase's candidates (or those of the round that stopped the run).
    let k_last = s.phase(steps_run.saturating_sub(1)).candidates;
    let candidate_scores: Vec<Vec<f32>> = if s.rounds.is_empty() {
        Vec::new()
    } else {
        scores[..k_last * (p + 1)]
            .chunks(p + 1)
            .map(<[f32]>::to_vec)
            .collect()
    };
    let row = candidate_scores.get(winner).cloned().unwrap_or_default();
    let first = &s.phases[0];
    let parameters = Parameters {
        prompt: request.prompt.clone(),
        steps: steps_run,
        sampler: first.sampler.a1111_name().to_string(),
        guidance: first.guidance,
        seed: request.seed,
        width: out_w,
        height: out_h,
        model: engine.name.clone(),
        candidates: k_max,
        score: row.last().copied(),
        schedule: request.schedule.as_ref().map(|sch| sch.text.clone()),
    };
    Ok(Image {
        width: out_w,
        height: out_h,
        rgba: bytemuck::cast_slice(rgba).to_vec(),
        parameters,
        steps_run,
        stopped_early,
        scores: row,
        candidate_scores,
        sub_prompts: prompts.texts,
        rounds: if request.keep_rounds {
            rounds
        } else {
            Vec::new()
        },
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn key(seed: u64, step: usize, stream: u32) -> NoiseKey {
    NoiseKey {
        seed,
        candidate: 0,
        step: step as u32,
        stream,
    }
}

/// Token ids `[n, len]` and EOS positions `[n]` (u32), written per run by [`load`].
fn token_tensors(ctx: &Context, n: usize, len: usize) -> Result<(Tensor, Tensor)> {
    let ids = Tensor::from_u32(ctx, "input_ids", &[n, len], &vec![0; n * len])?;
    let eos = Tensor::from_u32(ctx, "eos", &[n], &vec![0; n])?;
    Ok((ids, eos))
}

/// Each text's padded token ids.
fn token_rows(engine: &Engine, texts: &[String]) -> Vec<Vec<u32>> {
    texts
        .iter()
        .map(|t| engine.tokenizer.encode_padded(t).input_ids)
        .collect()
}

/// Each prompt's row of `hidden` repeated for K candidates: `[(1 + P)·K, 77, D]`,
/// in the UNet batch order.
fn repeat_context(ctx: &Context, g: &mut Graph, hidden: &Tensor, k: usize) -> Result<Tensor> {
    let (rows, l, d) = (hidden.shape[0], hidden.shape[1], hidden.shape[2]);
    let context = g.tensor(&[rows * k, l, d])?;
    for j in 0..rows {
        let index = Tensor::from_u32(ctx, "prompt index", &[1], &[j as u32])?;
        let group = g.tensor(&[k, l, d])?;
        g.push(layout::broadcast_row(ctx, hidden, &index, &group)?);
        g.push(layout::copy_into(ctx, &group, &context, 0, j * k)?);
    }
    Ok(context)
}

fn state(ctx: &Context, s: &Settings, prompts: usize, shape: [usize; 4]) -> Result<State> {
    let [k, c, h, w] = shape;
    let batch = (1 + prompts) * k;
    let u32_zeros = |label: &str, n: usize| -> Result<Tensor> {
        let mut t = Tensor::zeros(ctx, label, &[n])?;
        t.dtype = DType::U32;
        Ok(t)
    };
    Ok(State {
        x: Tensor::zeros(ctx, "x", &shape)?,
        x0: Tensor::zeros(ctx, "x0", &shape)?,
        noise: Tensor::zeros(ctx, "noise", &shape)?,
        guided: Tensor::zeros(ctx, "guided", &shape)?,
        model_in: Tensor::zeros(ctx, "model_in", &[batch, c, h, w])?,
        timesteps: Tensor::zeros(ctx, "timesteps", &[batch])?,
        table: sampler::upload_table(ctx, &s.table)?,
        weights: Tensor::zeros(ctx, "weights", &[prompts])?,
        choice: u32_zeros("choice", CHOICE_WORDS)?,
        steps_run: u32_zeros("steps run", 1)?,
        scores: Tensor::zeros(ctx, "scores", &[k, prompts + 1])?,
    })
}

/// The views, UNet pass and scoring pass for K candidates. The context
/// broadcast goes into `text` (run once per run).
fn plan_passes(
    engine: &Engine,
    text: &mut Graph,
    st: &State,
    hidden: &Tensor,
    text_embeds: &Option<Tensor>,
    k: usize,
) -> Result<Passes> {
    let ctx = &engine.ctx;
    let [_, c, h, w] = st.x.shape[..] else {
        unreachable!("x is [K, C, H, W]")
    };
    let candidates = [k, c, h, w];
    let batch = hidden.shape[0] * k;
    let context = repeat_context(ctx, text, hidden, k)?;
    let model_in = st.model_in.prefix(&[batch, c, h, w])?;
    let timesteps = st.timesteps.prefix(&[batch])?;
    let mut unet = Graph::new(ctx, "unet");
    let model_out = engine
        .unet
        .forward(&mut unet, &model_in, &timesteps, &context)?;
    let mut passes = Passes {
        k,
        x: st.x.prefix(&candidates)?,
        x0: st.x0.prefix(&candidates)?,
        noise: st.noise.prefix(&candidates)?,
        guided: st.guided.prefix(&candidates)?,
        model_in,
        timesteps,
        scores: st.scores.prefix(&[k, st.scores.shape[1]])?,
        unet: unet.dispatches,
        model_out,
        images: st.x0.prefix(&candidates)?,
        score: Vec::new(),
    };
    if let (Some(scorer), Some(text)) = (&engine.scorer, text_embeds) {
        let mut g = Graph::new(ctx, "scorer");
        passes.images = decoded(engine, &mut g, passes.x0.clone())?;
        scoring_pass(engine, scorer, &mut g, &passes, &st.weights, text)?;
        passes.score = g.dispatches;
    }
    Ok(passes)
}

/// Images → CLIP-normalised pixels at the scorer's size → image embeddings →
/// similarity to the sub-prompts, recorded into `g`. The same dispatches serve
/// every round of a K.
fn scoring_pass(
    engine: &Engine,
    scorer: &crate::models::clip::CLIPModel,
    g: &mut Graph,
    at: &Passes,
    weights: &Tensor,
    text: &Tensor,
) -> Result<()> {
    let ctx = &engine.ctx;
    let (k, h, w) = (at.k, at.images.dim(1), at.images.dim(0));
    let (mean, std) = (
        engine.settings.scorer_image_mean,
        engine.settings.scorer_image_std,
    );
    let normed = g.tensor(&[k, 3, h, w])?;
    g.push(image::normalize(
        ctx,
        &at.images,
        &normed,
        &Normalize::clip(mean, std),
    )?);
    let size = scorer.vision_model.config.image_size;
    let pixels = if (h, w) == (size, size) {
        normed
    } else {
        let resized = g.tensor(&[k, 3, size, size])?;
        g.push(resample::interpolate_bilinear(ctx, &normed, &resized)?);
        resized
    };
    let image_embeds = scorer.image_embeds(g, &pixels)?;
    for d in score::similarity(ctx, &image_embeds, text, weights, &at.scores)? {
        g.push(d);
    }
    Ok(())
}

/// Step `step`'s own dispatches: the UNet batch before, guidance, noise and the
/// sampler update after (its phase's K, guidance and table row).
fn step_block(
    ctx: &Context,
    s: &Settings,
    st: &State,
    at: &Passes,
    passes: usize,
    step: usize,
) -> Result<Block> {
    let prompts = st.weights.numel();
    let prepare = sampler::prepare(
        ctx,
        &st.table,
        step,
        &at.x,
        prompts,
        &at.model_in,
        &at.timesteps,
    )?;
    let guidance = s.phase(step).guidance;
    let mut after = vec![sampler::guide(
        ctx,
        &at.model_out,
        &st.weights,
        guidance,
        &at.guided,
    )?];
    let mut noise = None;
    if s.table[step].uses_noise() {
        // The seed is set per run (see `load`).
        noise = Some(after.len());
        after.push(noise::gaussian(
            ctx,
            &at.noise,
            key(0, step + 1, STREAM_STEP),
            1.0,
        )?);
    }
    after.push(sampler::step(
        ctx,
        &st.table,
        step,
        &at.guided,
        &at.noise,
        &at.x,
        &at.x0,
        &st.steps_run,
    )?);
    Ok(Block {
        passes,
        prepare,
        after,
        noise,
        round: s.rounds.contains(&step),
    })
}

/// A round's candidates as scored (before the winner is copied over them).
fn read_round(ctx: &Context, at: &Passes, st: &State, step: usize) -> Result<Round> {
    let choice = st.choice.to_vec(ctx)?;
    Ok(Round {
        step,
        images: at.images.to_vec(ctx)?,
        scores: at.scores.to_vec(ctx)?,
        winner: bytemuck::cast_slice::<f32, u32>(&choice)[0] as usize,
    })
}

/// The image in [-1, 1] of samples `x0`: themselves for a pixel-space model,
/// their VAE decoding for a latent one.
fn decoded(engine: &Engine, g: &mut Graph, x0: Tensor) -> Result<Tensor> {
    match &engine.vae {
        Some(vae) => vae.decode(g, &x0),
        None => Ok(x0),
    }
}

/// Winner's x0 (decoded) → [0, 1] → upscaler → RGBA8. Returns the dispatches, the pixel tensor and its size.
fn postprocess(
    engine: &Engine,
    st: &State,
    upscale: usize,
    [h, w]: [usize; 2],
) -> Result<(Vec<Dispatch>, Tensor, usize, usize)> {
    let ctx = &engine.ctx;
    let mut g = Graph::new(ctx, "post");
    let mut shape = st.x0.shape.clone();
    shape[0] = 1;
    let winner = g.tensor(&shape)?;
    g.push(layout::narrow(ctx, &st.x0, 0, 0, &winner)?);
    let winner = decoded(engine, &mut g, winner)?;
    let unit = g.tensor(&[1, 3, h, w])?;
    g.push(image::normalize(ctx, &winner, &unit, &Normalize::TO_UNIT)?);
    let mut img = unit;
    if upscale > 1 {
        let upscaler = engine.upscaler.as_ref().expect("checked in settle");
        let factor = upscaler.config.upscale;
        let up = upscaler.forward(&mut g, &img)?;
        img = if upscale == factor {
            up
        } else if factor == 4 && upscale == 2 {
            let pooled = g.tensor(&[1, 3, 2 * h, 2 * w])?;
            g.push(resample::avg_pool2d(ctx, &up, &pooled)?);
            pooled
        } else {
            return Err(Error::BadInput(format!(
                "--upscale {upscale}: this model's upscaler is x{factor}"
            )));
        };
    }
    let (oh, ow) = (img.dim(1), img.dim(0));
    let mut pixels = g.tensor(&[oh, ow])?;
    pixels.dtype = DType::U32;
    // to_rgba8 clamps to [0, 1] before rounding.
    g.push(image::to_rgba8(ctx, &img, 0, &pixels)?);
    Ok((g.dispatches, pixels, ow, oh))
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

fn record_indirect(pass: &mut wgpu::ComputePass, d: &Dispatch, args: &Tensor, offset: u64) {
    pass.set_pipeline(&d.kernel.pipeline);
    pass.set_bind_group(0, &d.bind_group, &[]);
    pass.dispatch_workgroups_indirect(&args.buffer, offset);
}

/// Record one compute pass with `f`, submit it and wait (progress, not a readback).
fn submit(ctx: &Context, f: impl FnOnce(&mut wgpu::ComputePass)) -> Result<()> {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("easel step"),
            timestamp_writes: None,
        });
        f(&mut pass);
    }
    ctx.queue.submit([encoder.finish()]);
    ctx.wait()
}

/// `--trace`: a contact sheet of every scoring round.
mod trace {
    use crate::engine::Round;
    use crate::error::{Error, Result};

    /// One row per round, one tile per candidate (2x nearest), the winner framed
    /// in green, under each tile one bar per sub-prompt and one for the weighted
    /// total (length ~ cosine in [-1, 1], centre = 0).
    pub fn write(
        path: &std::path::Path,
        rounds: &[Round],
        [h, w]: [usize; 2],
        prompts: usize,
    ) -> Result<()> {
        const SCALE: usize = 2;
        const PAD: usize = 4;
        const BAR: usize = 3;
        let k = rounds
            .iter()
            .map(|r| r.scores.len() / (prompts + 1))
            .max()
            .unwrap_or(1);
        let (tw, th) = (
            w * SCALE + 2 * PAD,
            h * SCALE + 2 * PAD + (prompts + 1) * (BAR + 1),
        );
        let mut sheet = ::image::RgbImage::from_pixel(
            (k * tw) as u32,
            (rounds.len() * th).max(1) as u32,
            ::image::Rgb([255, 255, 255]),
        );
        for (row, round) in rounds.iter().enumerate() {
            let (x0, scores, winner) = (&round.images, &round.scores, &round.winner);
            for c in 0..scores.len() / (prompts + 1) {
                let (ox, oy) = (c * tw, row * th);
                if c == *winner {
                    for y in oy..oy + h * SCALE + 2 * PAD {
                        for x in ox..ox + tw {
                            sheet.put_pixel(x as u32, y as u32, ::image::Rgb([0, 170, 0]));
                        }
                    }
                }
                for y in 0..h * SCALE {
                    for x in 0..w * SCALE {
                        let i =
                            |ch: usize| c * 3 * h * w + ch * h * w + (y / SCALE) * w + x / SCALE;
                        let px = |ch| (((x0[i(ch)] + 1.0) * 127.5).round().clamp(0.0, 255.0)) as u8;
                        sheet.put_pixel(
                            (ox + PAD + x) as u32,
                            (oy + PAD + y) as u32,
                            ::image::Rgb([px(0), px(1), px(2)]),
                        );
                    }
                }
                for j in 0..=prompts {
                    let v = scores[c * (prompts + 1) + j].clamp(-1.0, 1.0);
                    let mid = ox + tw / 2;
                    let len = (v.abs() * (tw / 2 - PAD) as f32) as usize;
                    let (from, to) = if v >= 0.0 {
                        (mid, mid + len)
                    } else {
                        (mid - len, mid)
                    };
                    let colour = if j == prompts {
                        ::image::Rgb([0, 0, 0])
                    } else {
                        ::image::Rgb([60, 90, 200])
                    };
                    let y0 = oy + h * SCALE + 2 * PAD + j * (BAR + 1);
                    for y in y0..y0 + BAR {
                        for x in from..=to {
                            sheet.put_pixel(x as u32, y as u32, colour);
                        }
                    }
                }
            }
        }
        let mut bytes = Vec::new();
        sheet
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                ::image::ImageFormat::Png,
            )
            .map_err(|e| Error::Gpu(format!("trace: {e}")))?;
        crate::output::write_atomic(path, &bytes)
    }
}
