//! What a user asks for and what they get: a [`Request`], checked once
//! against a model's configs by [`Request::check`] (before any GPU work: the
//! CLI, the farm, `easel bench` and the loop itself all call it), and the
//! finished [`Image`] with the [`Round`]s that led to it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::memory_plan::Precision;
use crate::models::pipeline::PipelineConfig;
use crate::models::vae_tiles::VaeTiles;
use crate::ops::sampler::StepCoefficients;
use crate::ops::score::Certainty;
use crate::output::Parameters;
use crate::phases::{self, Defaults, Phase, Schedule};
use crate::schedulers::Sampler;

mod defaults;
pub(crate) mod start;

use defaults::check_phase;
pub use defaults::{note, CANDIDATES_WITH_SCORER};
pub use start::{Picture, Start};

/// What to make. `None` fields take the model's defaults.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: String,
    /// `--negative`: replaces the model's unconditional text in guidance (A1111's).
    pub negative: Option<String>,
    pub seed: u64,
    /// (width, height); default: the UNet's `sample_size`.
    pub size: Option<(usize, usize)>,
    pub steps: Option<usize>,
    /// `None`: 4 with a scorer, else 1 ([`Request::candidates_for`]).
    pub candidates: Option<usize>,
    pub guidance: Option<f32>,
    pub sampler: Option<Sampler>,
    /// `--karras`: Karras sigmas (Euler a, DPM++ 2M; `schedulers::karras`).
    pub karras: bool,
    /// 1, 2 or 4: the learned upscaler's factor; `None`: the model's
    /// upscaler's own, else 1 ([`Request::upscale_for`]).
    pub upscale: Option<usize>,
    /// Scoring rounds happen every this many steps, and after the last.
    pub score_every: Option<usize>,
    /// Stop early once the winner's weighted score reaches this.
    pub until_score: Option<f32>,
    /// Stop early once the winner leads the runner-up by this much.
    pub until_margin: Option<f32>,
    /// Told after each sampler step; the loop itself prints nothing.
    pub progress: Option<Arc<dyn Progress>>,
    /// Write a contact sheet of every scoring round here (extra readbacks).
    pub trace: Option<PathBuf>,
    /// Phases with their own sampler, candidates, scoring interval and guidance
    /// (`--schedule`); the fields above are what a phase does not set.
    pub schedule: Option<Schedule>,
    /// Keep every scoring round's candidates in [`Image::rounds`] (extra
    /// readbacks, like `trace`; for tests and tools).
    pub keep_rounds: bool,
    /// Start from a picture (img2img, inpainting): see [`Start`].
    pub start: Option<Start>,
    /// Whether a latent model's VAE decodes in tiles (`--vae-tiles`).
    pub vae_tiles: VaeTiles,
    /// The UNet's and the VAE decoder's activations (`--precision`).
    pub precision: Precision,
}

impl Request {
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative: None,
            seed: 0,
            size: None,
            steps: None,
            candidates: None,
            guidance: None,
            sampler: None,
            karras: false,
            upscale: None,
            score_every: None,
            until_score: None,
            until_margin: None,
            progress: None,
            trace: None,
            schedule: None,
            keep_rounds: false,
            start: None,
            vae_tiles: VaeTiles::Auto,
            precision: Precision::Auto,
        }
    }
}

/// What a caller hears while a request runs: after each sampler step, how many
/// of how many are done. The loop knows no terminal; the CLI draws a bar
/// (src/cli/progress.rs), a library user may log or ignore it.
pub trait Progress: std::fmt::Debug + Send + Sync {
    fn step(&self, done: usize, total: usize);
}

/// A finished image and what the run did.
#[derive(Clone, Debug)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// RGBA8, row-major.
    pub rgba: Vec<u8>,
    pub parameters: Parameters,
    /// Sampler steps actually run (fewer than asked when stopped early).
    pub steps_run: usize,
    pub stopped_early: bool,
    /// The winner's cosine similarity to each sub-prompt, then the weighted total.
    pub scores: Vec<f32>,
    /// The last scoring round's rows for every candidate (same layout), before the
    /// winner was copied over them: the evidence that the kept one was best.
    pub candidate_scores: Vec<Vec<f32>>,
    pub sub_prompts: Vec<String>,
    /// Every scoring round's candidates and scores, with `Request::keep_rounds`.
    pub rounds: Vec<Round>,
    /// Every scoring round's scores and winner (always: read back with the image).
    pub round_scores: Vec<RoundScores>,
    pub seconds: f64,
    /// The learned upscaling applied (1: none).
    pub upscale: usize,
    /// The most GPU memory easel held at once during the run, in bytes:
    /// the weights plus the run's plan (see `gpu::memory` for what counts).
    pub gpu_peak_bytes: u64,
}

/// One scoring round as the scorer saw it.
#[derive(Clone, Debug)]
pub struct Round {
    /// The step it followed (0-based).
    pub step: usize,
    /// The candidates' predicted clean images x0 as the scorer saw them (VAE
    /// decoded for a latent model), `[K, 3, H, W]` in [-1, 1].
    pub images: Vec<f32>,
    /// `[K, P + 1]`: each candidate's cosine to each sub-prompt, then the weighted total.
    pub scores: Vec<f32>,
    pub winner: usize,
}

/// One scoring round's scores, kept on the GPU and read back with the image.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundScores {
    /// The step it followed (0-based).
    pub step: usize,
    /// `[K][P + 1]`: each candidate's cosine to each sub-prompt, then the weighted total.
    pub candidate_scores: Vec<Vec<f32>>,
    /// The candidate kept: the highest total, the first of equals (as the pick kernel).
    pub winner: usize,
}

/// A request checked against a model: everything the loop needs, settled.
pub struct Settled {
    /// What the GPU plan depends on (a plan is reused while this stays equal).
    pub(crate) settings: Settings,
    pub(crate) prompts: Prompts,
    /// When the pick kernel stops the run early.
    pub(crate) certainty: Certainty,
}

/// The sub-prompts of a request and their normalised weights (the
/// unconditional prompt is the model's, added by the loop).
pub(crate) struct Prompts {
    pub texts: Vec<String>,
    pub weights: Vec<f32>,
}

/// The shape of a run: sizes, phases and the sampler's step table.
#[derive(Debug, PartialEq)]
pub(crate) struct Settings {
    /// The image's size in pixels (before upscaling).
    pub width: usize,
    pub height: usize,
    /// The UNet's sample per candidate, `[C, h, w]`: the image itself for a
    /// pixel-space model, latents for a latent one.
    pub sample: [usize; 3],
    pub steps: usize,
    /// The run's phases (one without `--schedule`).
    pub phases: Vec<Phase>,
    /// One row per step (see [`phases::step_table`]).
    pub table: Vec<StepCoefficients>,
    pub init_noise_sigma: f32,
    /// The steps after which the scorer runs (sorted; every phase ends with one).
    pub rounds: Vec<usize>,
    /// The learned upscaler's factor (1: none).
    pub upscale: usize,
    /// A run started from a picture: its noise levels and mask.
    pub start: Option<start::StartSettings>,
    /// Sub-prompts (the batch is `(1 + prompts)·K`).
    pub prompts: usize,
    pub vae_tiles: VaeTiles,
    pub precision: Precision,
}

impl Settings {
    /// The phase that step `step` belongs to.
    pub fn phase(&self, step: usize) -> &Phase {
        let i = self.phases.iter().position(|p| p.steps.contains(&step));
        &self.phases[i.expect("phases cover every step")]
    }

    /// The most candidates any phase has: the state's slot count.
    pub fn k_max(&self) -> usize {
        self.phases.iter().map(|p| p.candidates).max().unwrap_or(1)
    }
}

impl Request {
    /// Check the request against `model` and settle every default: the prompt's
    /// grammar, the size against the model's downsampling, steps, phases,
    /// candidates and upscaling against what the folder has, and the largest
    /// tensors these counts make against what a kernel can index (checked
    /// arithmetic: a count never wraps or sizes an allocation unchecked).
    /// Touches no GPU.
    pub fn check(&self, model: &PipelineConfig) -> Result<Settled> {
        let prompts = self.prompts()?;
        let (width, height, sample) = self.sample(model)?;
        let (steps, skip) = start::steps(self.start.as_ref(), self.steps(model)?);
        let phases = self.phases(model, steps)?;
        for phase in &phases {
            check_phase(model, phase)?;
        }
        self.check_upscale(model)?;
        crate::memory_plan::check_vae_tiles(self.vae_tiles, model)?;
        let upscale = self.upscale_for(model);
        let k_max = phases.iter().map(|p| p.candidates).max().unwrap_or(1);
        let run = Extents {
            k: k_max,
            prompts: prompts.texts.len(),
            sample,
            size: (width, height),
            upscale,
        };
        run.check(model)?;
        check_finite_inputs(self, &phases, &prompts)?;
        let rounds: Vec<usize> = match model.scorer {
            Some(_) => phases.iter().flat_map(Phase::rounds).collect(),
            None => Vec::new(),
        };
        let samplers = phases.iter().map(|p| p.sampler);
        let scheduler = crate::schedulers::karras::config(&model.scheduler, self.karras, samplers)?;
        let (table, init_noise_sigma) =
            phases::step_table_from(&phases, &rounds, &scheduler, skip)?;
        let levels = (&table[..], init_noise_sigma);
        let start = start::settle(self.start.as_ref(), levels, &scheduler, model);
        let settings = Settings {
            width,
            height,
            sample,
            steps,
            phases,
            table,
            init_noise_sigma,
            rounds,
            upscale,
            start,
            prompts: prompts.texts.len(),
            vae_tiles: self.vae_tiles,
            precision: self.precision,
        };
        let certainty = Certainty {
            min_score: self.until_score.unwrap_or(f32::INFINITY),
            min_margin: self.until_margin.unwrap_or(f32::INFINITY),
        };
        Ok(Settled {
            settings,
            prompts,
            certainty,
        })
    }

    fn prompts(&self) -> Result<Prompts> {
        let parsed = crate::prompt::parse(&self.prompt)?;
        let weights = parsed
            .normalized_weights()
            .iter()
            .map(|&w| w as f32)
            .collect();
        let texts = parsed.parts.into_iter().map(|p| p.text).collect();
        Ok(Prompts { texts, weights })
    }

    /// The image size in pixels and the UNet's sample `[C, h, w]` for it.
    fn sample(&self, model: &PipelineConfig) -> Result<(usize, usize, [usize; 3])> {
        let unet = &model.unet;
        // A latent model samples latents the VAE decodes `vae_factor` times larger.
        let (channels, vae_factor) = model.sample_space();
        start::check_channels(model, self.start.as_ref())?;
        // Both bounded when the configs were read: no product here overflows.
        let default = unet.sample_size.unwrap_or(32) * vae_factor;
        let factor = unet.downscale_factor() * vae_factor;
        let (width, height) = start::size(self.size, self.start.as_ref(), factor, default)?;
        if width == 0 || height == 0 || width % factor != 0 || height % factor != 0 {
            return Err(Error::BadInput(format!(
                "--size {width}x{height}: both sides must be positive multiples of {factor} for this model"
            )));
        }
        Ok((
            width,
            height,
            [channels, height / vae_factor, width / vae_factor],
        ))
    }

    /// The phases of a run of `steps`: `--schedule`'s, or one phase of the flags.
    fn phases(&self, model: &PipelineConfig, steps: usize) -> Result<Vec<Phase>> {
        if self.score_every == Some(0) {
            return Err(Error::BadInput(
                "--score-every 0: need at least 1 (a scoring round every N steps)".into(),
            ));
        }
        let defaults = Defaults {
            sampler: self
                .sampler
                .unwrap_or_else(|| model.scheduler.default_sampler()),
            candidates: self.candidates_for(model),
            score_every: self.score_every,
            guidance: self.guidance.unwrap_or(model.settings.default_guidance),
        };
        Ok(match &self.schedule {
            // A run of no steps (strength 0) has nothing to divide into phases.
            Some(schedule) if steps > 0 => schedule.resolve(steps, &defaults)?,
            _ => phases::single(steps, &defaults),
        })
    }

    /// The run's length: `--steps`, else the sum of `--schedule`'s plain step
    /// counts, else the model's `default_steps`; at least 1 and at most the
    /// scheduler's `num_train_timesteps`, checked before anything is sized by
    /// it, and refused naming where it came from (a flag, or the model's file).
    fn steps(&self, model: &PipelineConfig) -> Result<usize> {
        let default = model.settings.default_steps;
        let counted = self.schedule.as_ref().and_then(Schedule::counted_steps);
        let (steps, given) = match (self.steps, counted) {
            (Some(n), _) => (n as u128, format!("--steps {n}: ")),
            (None, Some(n)) => (n, format!("--schedule: the phases take {n} steps, ")),
            (None, None) => (default as u128, String::new()),
        };
        let train = model.scheduler.num_train_timesteps;
        let problem = match steps {
            0 => "need at least 1 step".to_string(),
            n if n > train as u128 => format!(
                "more than the model's num_train_timesteps {train} ({})",
                model.scheduler.path.display()
            ),
            n => return Ok(n as usize),
        };
        Err(match given.is_empty() {
            true => Error::model(
                model.dir.join("model_index.json"),
                format!("`_easel.default_steps` {default}: {problem}"),
            ),
            false => Error::BadInput(format!("{given}{problem}")),
        })
    }
}

/// Numbers that reach the GPU must be finite: a NaN or infinite guidance or
/// sub-prompt weight (after normalising, in f32), or a NaN threshold, would
/// turn every image black. Infinite thresholds mean "never stop early".
fn check_finite_inputs(r: &Request, phases: &[Phase], prompts: &Prompts) -> Result<()> {
    let bad = |what: String| Err(Error::BadInput(format!("{what}: must be a finite number")));
    // The flag itself too: a phase that sets its own `cfg=` leaves it unused.
    let flag = r.guidance.into_iter();
    if let Some(g) = flag
        .chain(phases.iter().map(|p| p.guidance))
        .find(|g| !g.is_finite())
    {
        return bad(format!("guidance {g}"));
    }
    if let Some(w) = prompts.weights.iter().find(|w| !w.is_finite()) {
        return bad(format!("sub-prompt weight {w} (after normalising, in f32)"));
    }
    for (flag, v) in [
        ("--until-score", r.until_score),
        ("--until-margin", r.until_margin),
    ] {
        if v.is_some_and(f32::is_nan) {
            return bad(format!("{flag} NaN"));
        }
    }
    Ok(())
}

/// The most elements a planned tensor may have: kernels index their bindings
/// with WGSL's `u32`, so no device can run a larger one (a device's own binding
/// limit, usually lower, is checked as the plan creates each tensor).
pub const MAX_ELEMENTS: u64 = u32::MAX as u64;

/// The user-given counts that size a run's tensors.
struct Extents {
    /// The most candidates any phase has.
    k: usize,
    /// Sub-prompts (P).
    prompts: usize,
    /// The UNet's sample per candidate `[C, h, w]`.
    sample: [usize; 3],
    /// (W, H): the image before upscaling.
    size: (usize, usize),
    upscale: usize,
}

impl Extents {
    /// Refuse, before anything is allocated, a run whose largest planned tensors
    /// no kernel could index: the products of candidates, sub-prompts, size and
    /// upscaling with the model's widths, in checked arithmetic (a product past
    /// `u64` is refused as such, never wrapped).
    fn check(&self, model: &PipelineConfig) -> Result<()> {
        for (what, factors) in self.tensors(model) {
            let n = factors
                .iter()
                .try_fold(1u64, |n, &f| n.checked_mul(f as u64));
            if n.is_some_and(|n| n <= MAX_ELEMENTS) {
                continue;
            }
            let product: Vec<String> = factors.iter().map(usize::to_string).collect();
            let count = match n {
                Some(n) => format!("{n} elements"),
                None => format!("more than {} elements", u64::MAX),
            };
            return Err(Error::BadInput(format!(
                "{what} = {} is {count}, but a kernel's u32 index allows at most {MAX_ELEMENTS}: \
                 use fewer candidates or sub-prompts, or a smaller --size or --upscale",
                product.join("·")
            )));
        }
        Ok(())
    }

    /// The largest tensors a plan makes, as products of their dimensions.
    fn tensors(&self, model: &PipelineConfig) -> Vec<(&'static str, Vec<usize>)> {
        let (k, rows, [c, h, w], (width, height)) =
            (self.k, 1 + self.prompts, self.sample, self.size);
        let text = &model.text_encoder;
        let mut tensors = vec![
            (
                "the UNet's input (1 + P)·K·C·h·w",
                vec![rows, k, c.max(model.unet.in_channels), h, w],
            ),
            (
                "the UNet's first activations (1 + P)·K·block_out_channels[0]·h·w",
                vec![rows, k, model.unet.block_out_channels[0], h, w],
            ),
            (
                "the UNet's text context (1 + P)·K·max_position_embeddings·hidden_size",
                vec![rows, k, text.max_position_embeddings, text.hidden_size],
            ),
        ];
        // The scorer sees every candidate as an image, VAE-decoded for a latent model.
        let images = if model.scorer.is_some() { k } else { 1 };
        tensors.push((
            "the candidates' images K·3·H·W",
            vec![images, 3, height, width],
        ));
        if let Some(scorer) = &model.scorer {
            let side = scorer.clip.vision_config.image_size;
            tensors.push((
                "the scorer's pixels K·3·image_size²",
                vec![k, 3, side, side],
            ));
        }
        if let Some(vae) = &model.vae {
            tensors.push((
                "the VAE decoder's last activations K·block_out_channels[0]·H·W",
                vec![images, vae.block_out_channels[0], height, width],
            ));
            let top = vae.block_out_channels.last().copied().unwrap_or(0);
            if vae.mid_block_add_attention && top > crate::ops::attention::MAX_HEAD_DIM {
                // One head wider than the fused kernel: its scores are in memory.
                tensors.push((
                    "the VAE's attention scores K·(h·w)²",
                    vec![images, h, w, h, w],
                ));
            }
        }
        if let Some(up) = model.upscaler.as_ref().filter(|_| self.upscale > 1) {
            let r = up.upscale;
            tensors.push((
                "the upscaler's features num_feat·H·W",
                vec![up.num_feat, height, width],
            ));
            tensors.push((
                "the upscaler's output num_out_ch·r²·H·W",
                vec![up.num_out_ch, r, r, height, width],
            ));
        }
        tensors
    }
}
