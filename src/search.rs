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
use crate::schedule::{self, Defaults, Phase};
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
struct Settings {
    width: usize,
    height: usize,
    steps: usize,
    /// The run's phases (one without `--schedule`).
    phases: Vec<Phase>,
    /// One row per step (see [`schedule::step_table`]).
    table: Vec<StepCoefficients>,
    init_noise_sigma: f32,
    /// The steps after which the scorer runs (sorted; every phase ends with one).
    rounds: Vec<usize>,
    certainty: Certainty,
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
    let default = unet.sample_size.unwrap_or(32);
    let (width, height) = request.size.unwrap_or((default, default));
    let factor = unet.downscale_factor();
    if width == 0 || height == 0 || width % factor != 0 || height % factor != 0 {
        return Err(Error::BadInput(format!(
            "--size {width}x{height}: both sides must be positive multiples of {factor} for this model"
        )));
    }
    if unet.in_channels != 3 || unet.out_channels != 3 {
        return Err(Error::model(
            engine.dir.join("unet"),
            "a pixel-space model needs a UNet with 3 input and 3 output channels",
        ));
    }
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
            (steps, schedule::single(steps, &defaults))
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
    let (table, init_noise_sigma) = schedule::step_table(&phases, &rounds, &engine.scheduler)?;
    Ok(Settings {
        width,
        height,
        steps,
        phases,
        table,
        init_noise_sigma,
        rounds,
        certainty: Certainty {
            min_score: request.until_score.unwrap_or(f32::INFINITY),
            min_margin: request.until_margin.unwrap_or(f32::INFINITY),
        },
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
    score: Vec<Dispatch>,
}

/// A step block: its own dispatches around its candidate count's UNet pass.
struct Block {
    /// Index into the run's [`Passes`].
    passes: usize,
    before: Vec<Dispatch>,
    after: Vec<Dispatch>,
    /// Is there a scoring round after this step?
    round: bool,
}

pub fn run(engine: &Engine, request: &Request) -> Result<Image> {
    let started = Instant::now();
    let ctx = &engine.ctx;
    let s = settle(engine, request)?;
    let prompts = prompts(request)?;
    let p = prompts.texts.len();
    let (k_max, h, w) = (s.k_max(), s.height, s.width);

    // 1. Text: the denoiser's conditioning, the scorer's embeddings.
    let mut plan = Graph::new(ctx, "text");
    let hidden = encode_prompts(engine, &mut plan, &prompts)?;
    let text_embeds = match &engine.scorer {
        Some(scorer) => Some(scorer_text(engine, scorer, &mut plan, &prompts)?),
        None => None,
    };

    // 2. State (every planned tensor checks the device's binding limit as it is
    //    created), start image.
    let st = state(ctx, &s, &prompts, [k_max, 3, h, w])?;
    let start = noise::gaussian(
        ctx,
        &st.x,
        key(request.seed, 0, STREAM_START),
        s.init_noise_sigma,
    )?;

    // 3. The UNet and scoring passes of each candidate count, shared by its steps.
    let mut counts: Vec<usize> = s.phases.iter().map(|ph| ph.candidates).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut passes = Vec::with_capacity(counts.len());
    for &k in &counts {
        passes.push(plan_passes(
            engine,
            &mut plan,
            &st,
            &hidden,
            &text_embeds,
            k,
        )?);
    }
    let text_pass = std::mem::take(&mut plan.dispatches);
    let broadcast = [
        layout::broadcast_row_in_place(ctx, &st.x, &st.choice.head(1)?)?,
        layout::broadcast_row_in_place(ctx, &st.x0, &st.choice.head(1)?)?,
    ];

    // 4. One block per step; its dispatches are launched indirectly so a pick can cancel it.
    let mut blocks = Vec::with_capacity(s.steps);
    for step in 0..s.steps {
        let k = s.phase(step).candidates;
        let index = counts.iter().position(|&c| c == k).expect("planned");
        blocks.push(step_block(
            ctx,
            &s,
            &st,
            &passes[index],
            index,
            request.seed,
            step,
        )?);
    }
    let per_block: Vec<usize> = blocks
        .iter()
        .map(|b| {
            let pass = &passes[b.passes];
            b.before.len()
                + pass.unet.len()
                + b.after.len()
                + if b.round { pass.score.len() + 1 + 2 } else { 0 }
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
                s.certainty,
                &st.choice,
                &args,
                cancel,
            )?);
        }
    }

    // Fill the indirect sizes in block order, then run.
    let mut sizes: Vec<u32> = Vec::with_capacity(3 * total);
    let mut pick_iter = picks.iter();
    // (dispatch, launched indirectly?): a pick writes the sizes, so it cannot also
    // read its own from them; it runs directly, and harmlessly repeats its decision
    // if an earlier round already cancelled its block.
    let mut order: Vec<Vec<(&Dispatch, bool)>> = Vec::with_capacity(s.steps);
    for block in &blocks {
        let pass = &passes[block.passes];
        let mut list: Vec<(&Dispatch, bool)> = block
            .before
            .iter()
            .chain(&pass.unet)
            .chain(&block.after)
            .map(|d| (d, true))
            .collect();
        if block.round {
            list.extend(pass.score.iter().map(|d| (d, true)));
            list.push((pick_iter.next().expect("one pick per round"), false));
            list.extend(broadcast.iter().map(|d| (d, true)));
        }
        for (d, _) in &list {
            let Workgroups::Direct(g) = d.workgroups else {
                return Err(Error::Gpu("a planned dispatch is already indirect".into()));
            };
            sizes.extend(g);
        }
        order.push(list);
    }
    ctx.queue
        .write_buffer(&args.buffer, 0, bytemuck::cast_slice(&sizes));
    ctx.queue.write_buffer(
        &st.choice.buffer,
        0,
        bytemuck::cast_slice(&[0u32, 0, 0, NOT_STOPPED]),
    );

    // 5. Post-processing, planned like the rest.
    let (post, pixels, out_w, out_h) = postprocess(engine, &st, request.upscale, [h, w])?;
    let readback_words = out_w * out_h + CHOICE_WORDS + 1 + k_max * (p + 1);
    let out = Tensor::wrap(
        ctx.create_buffer("readback", 4 * readback_words as u64, STORAGE),
        &[readback_words],
    );

    // Run: text + start, then one submission per step (for progress), then the end.
    submit(ctx, |pass| {
        text_pass
            .iter()
            .chain([&start])
            .for_each(|d| crate::ops::record(pass, d))
    })?;
    let keep = request.trace.is_some() || request.keep_rounds;
    let mut rounds: Vec<Round> = Vec::new();
    // A live step counter on a terminal; logs (farms, CI) get only the final line.
    let progress = request.progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    for (step, list) in order.iter().enumerate() {
        // With --trace, a round's block is split before its broadcasts so the
        // candidates can be read back as they were scored (the only extra readbacks).
        let split = if keep && blocks[step].round {
            list.len() - broadcast.len()
        } else {
            list.len()
        };
        let parts = [0..split, split..list.len()];
        for (part, range) in parts.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
            submit(ctx, |pass| {
                for j in range {
                    let (d, indirect) = list[j];
                    if indirect {
                        record_indirect(pass, d, &args, 12 * (offsets[step] + j) as u64);
                    } else {
                        crate::ops::record(pass, d);
                    }
                }
            })?;
            if part == 0 && split < list.len() {
                rounds.push(read_round(ctx, &passes[blocks[step].passes], &st, step)?);
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
    crate::ops::encode(&mut encoder, &post);
    let mut at = 0;
    for (t, bytes) in [
        (&pixels, 4 * (out_w * out_h) as u64),
        (&st.choice, 4 * CHOICE_WORDS as u64),
        (&st.steps_run, 4),
        (&st.scores, st.scores.bytes()),
    ] {
        encoder.copy_buffer_to_buffer(&t.buffer, 0, &out.buffer, at, bytes);
        at += bytes;
    }
    ctx.queue.submit([encoder.finish()]);
    let bytes = readback::read_bytes(ctx, &out.buffer, 0, 4 * readback_words as u64)?;

    if let Some(path) = &request.trace {
        trace::write(path, &rounds, [h, w], p)?;
    }

    // The one readback: pixels, the pick's record, the step count, the last round's scores.
    let words: &[u32] = bytemuck::cast_slice(&bytes);
    let (rgba, rest) = words.split_at(out_w * out_h);
    let (choice, rest) = rest.split_at(CHOICE_WORDS);
    let (steps_run, scores) = (
        rest[0] as usize,
        bytemuck::cast_slice::<u32, f32>(&rest[1..]),
    );
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

/// Tokenise `texts`: ids `[n, 77]` (u32) and EOS positions `[n]`.
fn tokens(
    engine: &Engine,
    texts: &[String],
    eos_of: impl Fn(&[Vec<u32>]) -> Vec<u32>,
) -> Result<(Tensor, Tensor)> {
    let rows: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| engine.tokenizer.encode_padded(t).input_ids)
        .collect();
    let len = rows[0].len();
    let ids = Tensor::from_u32(&engine.ctx, "input_ids", &[rows.len(), len], &rows.concat())?;
    let eos = Tensor::from_u32(&engine.ctx, "eos", &[rows.len()], &eos_of(&rows))?;
    Ok((ids, eos))
}

/// The text encoder on ["", sub-prompts...]: `[1 + P, 77, D]`.
fn encode_prompts(engine: &Engine, g: &mut Graph, prompts: &Prompts) -> Result<Tensor> {
    let texts: Vec<String> = std::iter::once(engine.settings.unconditional_prompt.clone())
        .chain(prompts.texts.iter().cloned())
        .collect();
    let (ids, eos) = tokens(engine, &texts, |rows| {
        engine.text_encoder.eos_positions(rows)
    })?;
    Ok(engine
        .text_encoder
        .forward(g, &ids, &eos)?
        .last_hidden_state)
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

/// The scorer's text embeddings of the sub-prompts: `[P, proj]`.
fn scorer_text(
    engine: &Engine,
    scorer: &crate::models::clip::CLIPModel,
    g: &mut Graph,
    prompts: &Prompts,
) -> Result<Tensor> {
    let (ids, eos) = tokens(engine, &prompts.texts, |rows| {
        scorer.text_model.eos_positions(rows)
    })?;
    scorer.text_embeds(g, &ids, &eos)
}

fn state(ctx: &Context, s: &Settings, prompts: &Prompts, shape: [usize; 4]) -> Result<State> {
    let [k, c, h, w] = shape;
    let batch = (1 + prompts.texts.len()) * k;
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
        weights: Tensor::from_f32(ctx, "weights", &[prompts.weights.len()], &prompts.weights)?,
        choice: u32_zeros("choice", CHOICE_WORDS)?,
        steps_run: u32_zeros("steps run", 1)?,
        scores: Tensor::zeros(ctx, "scores", &[k, prompts.weights.len() + 1])?,
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
        score: Vec::new(),
    };
    if let (Some(scorer), Some(text)) = (&engine.scorer, text_embeds) {
        passes.score = scoring_pass(engine, scorer, &passes, &st.weights, text)?;
    }
    Ok(passes)
}

/// x0 → CLIP-normalised pixels at the scorer's size → image embeddings →
/// similarity to the sub-prompts. The same dispatches serve every round of a K.
fn scoring_pass(
    engine: &Engine,
    scorer: &crate::models::clip::CLIPModel,
    at: &Passes,
    weights: &Tensor,
    text: &Tensor,
) -> Result<Vec<Dispatch>> {
    let ctx = &engine.ctx;
    let (k, h, w) = (at.k, at.x0.dim(1), at.x0.dim(0));
    let mut g = Graph::new(ctx, "scorer");
    let (mean, std) = (
        engine.settings.scorer_image_mean,
        engine.settings.scorer_image_std,
    );
    let normed = g.tensor(&[k, 3, h, w])?;
    g.push(image::normalize(
        ctx,
        &at.x0,
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
    let image_embeds = scorer.image_embeds(&mut g, &pixels)?;
    let [a, b] = score::similarity(ctx, &image_embeds, text, weights, &at.scores)?;
    g.push(a);
    g.push(b);
    Ok(g.dispatches)
}

/// Step `step`'s own dispatches: the UNet batch before, guidance, noise and the
/// sampler update after (its phase's K, guidance and table row).
fn step_block(
    ctx: &Context,
    s: &Settings,
    st: &State,
    at: &Passes,
    passes: usize,
    seed: u64,
    step: usize,
) -> Result<Block> {
    let prompts = st.weights.numel();
    let before = vec![sampler::prepare(
        ctx,
        &st.table,
        step,
        &at.x,
        prompts,
        &at.model_in,
        &at.timesteps,
    )?];
    let guidance = s.phase(step).guidance;
    let mut after = vec![sampler::guide(
        ctx,
        &at.model_out,
        &st.weights,
        guidance,
        &at.guided,
    )?];
    if s.table[step].uses_noise() {
        after.push(noise::gaussian(
            ctx,
            &at.noise,
            key(seed, step + 1, STREAM_STEP),
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
        before,
        after,
        round: s.rounds.contains(&step),
    })
}

/// A round's candidates as scored (before the winner is copied over them).
fn read_round(ctx: &Context, at: &Passes, st: &State, step: usize) -> Result<Round> {
    let choice = st.choice.to_vec(ctx)?;
    Ok(Round {
        step,
        x0: at.x0.to_vec(ctx)?,
        scores: at.scores.to_vec(ctx)?,
        winner: bytemuck::cast_slice::<f32, u32>(&choice)[0] as usize,
    })
}

/// Winner's x0 → [0, 1] → upscaler → RGBA8. Returns the dispatches, the pixel tensor and its size.
fn postprocess(
    engine: &Engine,
    st: &State,
    upscale: usize,
    [h, w]: [usize; 2],
) -> Result<(Vec<Dispatch>, Tensor, usize, usize)> {
    let ctx = &engine.ctx;
    let mut g = Graph::new(ctx, "post");
    let winner = g.tensor(&[1, 3, h, w])?;
    g.push(layout::narrow(ctx, &st.x0, 0, 0, &winner)?);
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
            let (x0, scores, winner) = (&round.x0, &round.scores, &round.winner);
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
