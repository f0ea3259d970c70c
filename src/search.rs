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
//! 5. **Post-processing** ([`crate::postprocess`]): x0 of the winner to [0, 1],
//!    the learned upscaler, RGBA8, and the single readback (pixels + the pick's
//!    record + scores).
//!
//! The whole run is planned up front ([`Plan`]): every tensor and every
//! dispatch (with its uniforms) exists before the first step; a step only
//! encodes. A run is: [`Plan::new`] (or the cached plan), [`load`] the
//! request's inputs into it, [`execute`] it.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::dispatch::{self, record, record_indirect, submit_only};
use crate::gpu::{readback, Context, DType, Tensor};
use crate::lora::Lora;
use crate::models::pipeline::Pipeline;
use crate::ops::finite::ALL_FINITE;
use crate::ops::noise;
use crate::ops::score::{self, CHOICE_WORDS, NOT_STOPPED};
use crate::output::Parameters;
use crate::request::{Image, Prompts, Request, Round, RoundScores, Settings, Settled};
use crate::tokenizer::ClipTokenizer;

mod passes;
mod plan;
mod start;

pub use plan::Plan;
use plan::Stage;

/// Run one checked request on `pipeline`, reusing `cached` when it fits and
/// replacing it when it does not.
pub(crate) fn run(
    ctx: &Context,
    pipeline: &Pipeline,
    cached: &mut Option<Plan>,
    request: &Request,
    settled: Settled,
    started: Instant,
) -> Result<Image> {
    let Settled {
        settings,
        prompts,
        certainty,
    } = settled;
    if !cached.as_ref().is_some_and(|plan| plan.fits(&settings)) {
        // Free the old plan's buffers before making the new one's.
        *cached = None;
    }
    // This request's peak: the weights, its plan, nothing an earlier one freed.
    ctx.reset_peak();
    if cached.is_none() {
        *cached = Some(Plan::new(ctx, pipeline, settings)?);
    }
    let plan = cached.as_ref().expect("planned above");
    load(ctx, pipeline, plan, &prompts, request, certainty)?;
    plan.start.load(ctx, request, &plan.s)?;
    let (bytes, rounds) = execute(ctx, plan, request)?;
    let mut image = finish(pipeline, plan, request, &bytes, prompts)?;
    if let Some(path) = &request.trace {
        let (size, p) = ([plan.s.height, plan.s.width], plan.s.prompts);
        crate::trace::write(path, &rounds, size, p, &image.parameters)?;
    }
    if request.keep_rounds {
        image.rounds = rounds;
    }
    image.seconds = started.elapsed().as_secs_f64();
    image.gpu_peak_bytes = ctx.peak_bytes();
    Ok(image)
}

/// Write one run's inputs into the plan: tokens, weights, seeds, thresholds,
/// fresh counters. The unconditional text of guidance is `--negative`'s, else
/// the model's (A1111's negative prompt replaces it the same way).
fn load(
    ctx: &Context,
    pipeline: &Pipeline,
    plan: &Plan,
    prompts: &Prompts,
    request: &Request,
    certainty: score::Certainty,
) -> Result<()> {
    let seed = request.seed;
    let write = |t: &Tensor, words: &[u32]| {
        ctx.queue
            .write_buffer(&t.buffer, 0, bytemuck::cast_slice(words))
    };
    let unconditional = match request.negative.as_deref() {
        Some(negative) if !negative.trim().is_empty() => negative,
        _ => &pipeline.config.settings.unconditional_prompt,
    };
    let texts: Vec<String> = std::iter::once(unconditional.to_string())
        .chain(prompts.texts.iter().cloned())
        .collect();
    let rows = token_rows(&pipeline.tokenizer, &texts);
    (pipeline.text_encoder).write_inputs(ctx, &plan.inputs.text, &rows)?;
    if let (Some(scorer), Some(inputs)) = (&pipeline.scorer, &plan.inputs.scorer) {
        let rows = token_rows(&scorer.tokenizer, &prompts.texts);
        scorer.model.text_model.write_inputs(ctx, inputs, &rows)?;
    }
    ctx.queue.write_buffer(
        &plan.st.weights.buffer,
        0,
        bytemuck::cast_slice(&prompts.weights),
    );
    for draw in plan.noise_draws() {
        noise::set_seed(ctx, draw, seed);
    }
    for pick in plan.picks() {
        score::set_certainty(ctx, pick, certainty);
    }
    write(&plan.args, &plan.sizes);
    write(&plan.st.choice, &[0, 0, 0, NOT_STOPPED]);
    write(&plan.st.steps_run, &[0]);
    write(&plan.st.status, &[ALL_FINITE]);
    Ok(())
}

/// Each text's padded token ids.
fn token_rows(tokenizer: &ClipTokenizer, texts: &[String]) -> Vec<Vec<u32>> {
    texts
        .iter()
        .map(|t| tokenizer.encode_padded(t).input_ids)
        .collect()
}

/// Run a loaded plan: text + start, one submission per step (for progress and
/// `--trace`), post-processing, the one readback. Returns its bytes and, when
/// the request keeps them, every round as scored. Step s + 1 is recorded and
/// queued while the GPU runs step s (nothing on the host depends on a step's
/// results), so recording ~300 launches per step does not leave it idle.
fn execute(ctx: &Context, plan: &Plan, request: &Request) -> Result<(Vec<u8>, Vec<Round>)> {
    submit_only(ctx, |pass| {
        plan.text_pass
            .iter()
            .chain(&plan.start.dispatches)
            .for_each(|d| record(pass, d))
    });
    let keep = request.trace.is_some() || request.keep_rounds;
    let mut rounds: Vec<Round> = Vec::new();
    let mut in_flight = None;
    let report = |done| {
        if let Some(progress) = &request.progress {
            progress.step(done, plan.s.steps);
        }
    };
    let order = plan.order();
    for (step, list) in order.iter().enumerate() {
        // When rounds are kept, a round's block is split before its broadcasts so
        // the candidates can be read back as they were scored (the only extra readbacks).
        let split = match keep && plan.blocks[step].round() {
            true => plan.before_broadcast(step),
            false => list.len(),
        };
        let mut queued = submit_launches(ctx, plan, step, &list[..split], 0);
        if split < list.len() {
            rounds.push(read_round(ctx, plan, step)?);
            queued = submit_launches(ctx, plan, step, &list[split..], split);
        }
        // The previous step ends before this one starts: report it while this one runs.
        if let Some(previous) = in_flight.replace(queued) {
            ctx.wait_for(previous)?;
            report(step);
        }
    }
    if let Some(last) = in_flight {
        ctx.wait_for(last)?;
        report(order.len());
    }
    Ok((read_out(ctx, plan)?, rounds))
}

/// Queue block `step`'s launches `list` (starting at index `first` of the block).
fn submit_launches(
    ctx: &Context,
    plan: &Plan,
    step: usize,
    list: &[(&dispatch::Dispatch, bool)],
    first: usize,
) -> wgpu::SubmissionIndex {
    submit_only(ctx, |pass| {
        for (j, &(d, indirect)) in list.iter().enumerate() {
            if indirect {
                let offset = plan.indirect_offset(step, first + j);
                record_indirect(pass, d, &plan.args.buffer, offset);
            } else {
                record(pass, d);
            }
        }
    })
}

/// Post-processing, the copies into the readback buffer, and the one readback.
fn read_out(ctx: &Context, plan: &Plan) -> Result<Vec<u8>> {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    dispatch::encode(&mut encoder, &plan.post.dispatches);
    let out = plan.readback_buffer();
    let mut at = 0;
    for (t, words) in plan.readback() {
        let bytes = 4 * words as u64;
        encoder.copy_buffer_to_buffer(&t.buffer, 0, out, at, bytes);
        at += bytes;
    }
    ctx.queue.submit([encoder.finish()]);
    readback::read_bytes(ctx, out, 0, at)
}

/// A round's candidates as scored (before the winner is copied over them).
fn read_round(ctx: &Context, plan: &Plan, step: usize) -> Result<Round> {
    let at = &plan.passes[plan.blocks[step].passes];
    let choice = plan.st.choice.to_vec(ctx)?;
    Ok(Round {
        step,
        images: at.images.to_vec(ctx)?,
        scores: at.cands.scores.to_vec(ctx)?,
        winner: bytemuck::cast_slice::<f32, u32>(&choice)[0] as usize,
    })
}

/// Fail when the NaN/Inf guard saw a value that is not finite, naming where.
/// The inputs were checked before the run, so this is the arithmetic's doing:
/// weights or settings that overflow f32, or f16 activations (`precision`).
fn check_finite(status: u32, steps: usize, precision: DType) -> Result<()> {
    if status == ALL_FINITE {
        return Ok(());
    }
    let (stage, step) = Stage::of(status);
    let what = match stage {
        Stage::Denoise => format!(
            "in the denoiser's samples after step {} of {steps}",
            step + 1
        ),
        Stage::Score => format!("in the scorer's scores after step {} of {steps}", step + 1),
        Stage::Post => "in the final image (decoding or upscaling)".to_string(),
    };
    let cause = match precision {
        DType::F16 => {
            "the arithmetic overflowed (with f16 activations, any activation past ±65504 \
             does; --precision f32 keeps them in f32)"
        }
        _ => "the model's weights or the guidance overflow f32 arithmetic",
    };
    Err(Error::NonFinite(format!(
        "non-finite values (NaN or infinity) {what}: {cause}"
    )))
}

/// Every round that ran (a stop cancels the later ones) from the scores'
/// history `[rounds·K_max, P + 1]`.
fn scored_rounds(s: &Settings, history: &[f32], steps_run: usize) -> Vec<RoundScores> {
    let (k_max, width) = (s.k_max(), s.prompts + 1);
    let ran = s
        .rounds
        .iter()
        .enumerate()
        .filter(|&(_, &step)| step < steps_run);
    ran.map(|(r, &step)| {
        let k = s.phase(step).candidates;
        let rows = &history[r * k_max * width..][..k * width];
        let candidate_scores: Vec<Vec<f32>> = rows.chunks(width).map(<[f32]>::to_vec).collect();
        // Strictly greater replaces: ties go to the lowest index, as in the pick kernel.
        let winner = (1..k).fold(0, |best, i| {
            match candidate_scores[i][width - 1] > candidate_scores[best][width - 1] {
                true => i,
                false => best,
            }
        });
        RoundScores {
            step,
            candidate_scores,
            winner,
        }
    })
    .collect()
}

/// The image and the run's record from the readback's bytes, split by the
/// plan's readback layout.
fn finish(
    pipeline: &Pipeline,
    plan: &Plan,
    request: &Request,
    bytes: &[u8],
    prompts: Prompts,
) -> Result<Image> {
    let s = &plan.s;
    let p = s.prompts;
    let mut words: &[u32] = bytemuck::cast_slice(bytes);
    let [rgba, choice, steps_run, scores, status, history] = plan.readback().map(|(_, n)| {
        let (part, rest) = words.split_at(n);
        words = rest;
        part
    });
    check_finite(status[0], s.steps, plan.precision)?;
    debug_assert_eq!(choice.len(), CHOICE_WORDS);
    let steps_run = steps_run[0] as usize;
    let scores: &[f32] = bytemuck::cast_slice(scores);
    let winner = choice[0] as usize;
    let stopped = choice[3];
    let stopped_early = stopped != NOT_STOPPED && (stopped as usize) + 1 < s.steps;
    let candidate_scores: Vec<Vec<f32>> = if s.rounds.is_empty() {
        Vec::new()
    } else {
        // The last round scored the last phase's candidates (or those of the round that stopped the run).
        let k_last = s.phase(steps_run.saturating_sub(1)).candidates;
        scores[..k_last * (p + 1)]
            .chunks(p + 1)
            .map(<[f32]>::to_vec)
            .collect()
    };
    let row = candidate_scores.get(winner).cloned().unwrap_or_default();
    let (width, height) = (plan.post.width, plan.post.height);
    let stopped_at = stopped_early.then_some(steps_run);
    let parameters = parameters(pipeline, s, request, stopped_at, row.last().copied());
    Ok(Image {
        width,
        height,
        rgba: bytemuck::cast_slice(rgba).to_vec(),
        parameters,
        steps_run,
        stopped_early,
        scores: row,
        candidate_scores,
        sub_prompts: prompts.texts,
        rounds: Vec::new(),
        round_scores: scored_rounds(s, bytemuck::cast_slice(history), steps_run),
        seconds: 0.0,
        upscale: s.upscale,
        gpu_peak_bytes: 0,
    })
}

/// The PNG's parameters: what was asked, so that pasting them back (prompt,
/// `--negative`, flags) makes the same image, and what came of it.
fn parameters(
    pipeline: &Pipeline,
    s: &Settings,
    request: &Request,
    steps_run: Option<usize>,
    score: Option<f32>,
) -> Parameters {
    let config = &pipeline.config;
    let sampler = request
        .sampler
        .unwrap_or_else(|| config.scheduler.default_sampler());
    Parameters {
        prompt: request.prompt.clone(),
        negative: request.negative.clone().filter(|n| !n.trim().is_empty()),
        steps: s.steps,
        sampler: sampler.a1111_name().to_string(),
        schedule_type: request.karras.then(|| "Karras".to_string()),
        guidance: request.guidance.unwrap_or(config.settings.default_guidance),
        seed: request.seed,
        width: s.width,
        height: s.height,
        model_hash: Some(pipeline.model_hash.clone()),
        model: config.name.clone(),
        start: (request.start.as_ref())
            .map(|start| (start.strength, start.mask.as_ref().map(|_| start.mask_blur))),
        upscale: s.upscale,
        weights: config.weights.asked().map(str::to_string),
        candidates: request.candidates_for(config),
        score_every: request.score_every,
        until_score: request.until_score,
        until_margin: request.until_margin,
        steps_run,
        score,
        schedule: request.schedule.as_ref().map(|sch| sch.text.clone()),
        loras: pipeline.loras.iter().map(Lora::used).collect(),
    }
}
