//! The library API: an [`Engine`] holds a GPU context and a loaded model
//! folder; [`Engine::generate`] turns a [`Request`] into an [`Image`].
//! The CLI is a thin layer over these.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::{AdapterOptions, Context};
use crate::models::clip::{self, CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel};
use crate::models::layers::{check_all_used, open_component, Vars};
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::upscaler::{SRVGGNetCompact, SRVGGNetCompactConfig};
use crate::models::vae::{self, AutoencoderKLConfig, AutoencoderKLDecoder};
use crate::output::Parameters;
use crate::schedulers::{Sampler, SchedulerConfig};
use crate::tokenizer::ClipTokenizer;
use crate::weights::Config;

/// What to make. `None` fields take the model's defaults.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: String,
    pub seed: u64,
    /// (width, height); default: the UNet's `sample_size`.
    pub size: Option<(usize, usize)>,
    pub steps: Option<usize>,
    pub candidates: usize,
    pub guidance: Option<f32>,
    pub sampler: Option<Sampler>,
    /// 1, 2 or 4: the learned upscaler's factor.
    pub upscale: usize,
    /// Scoring rounds happen every this many steps, and after the last.
    pub score_every: Option<usize>,
    /// Stop early once the winner's weighted score reaches this.
    pub until_score: Option<f32>,
    /// Stop early once the winner leads the runner-up by this much.
    pub until_margin: Option<f32>,
    /// Print progress on stderr.
    pub progress: bool,
    /// Write a contact sheet of every scoring round here (extra readbacks).
    pub trace: Option<PathBuf>,
    /// Phases with their own sampler, candidates, scoring interval and guidance
    /// (`--schedule`); the fields above are what a phase does not set.
    pub schedule: Option<crate::phases::Schedule>,
    /// Keep every scoring round's candidates in [`Image::rounds`] (extra
    /// readbacks, like `trace`; for tests and tools).
    pub keep_rounds: bool,
}

impl Request {
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            seed: 0,
            size: None,
            steps: None,
            candidates: 1,
            guidance: None,
            sampler: None,
            upscale: 1,
            score_every: None,
            until_score: None,
            until_margin: None,
            progress: false,
            trace: None,
            schedule: None,
            keep_rounds: false,
        }
    }
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
    pub seconds: f64,
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

/// easel's settings in `model_index.json` (`_easel`), with CLIP's defaults.
#[derive(Clone, Debug, Deserialize)]
pub struct PipelineSettings {
    #[serde(default = "d_mean")]
    pub scorer_image_mean: [f32; 3],
    #[serde(default = "d_std")]
    pub scorer_image_std: [f32; 3],
    #[serde(default = "d_guidance")]
    pub default_guidance: f32,
    #[serde(default = "d_steps")]
    pub default_steps: usize,
    #[serde(default)]
    pub unconditional_prompt: String,
}

fn d_mean() -> [f32; 3] {
    [0.481_454_66, 0.457_827_5, 0.408_210_73]
}
fn d_std() -> [f32; 3] {
    [0.268_629_54, 0.261_302_6, 0.275_777_1]
}
fn d_guidance() -> f32 {
    7.5
}
fn d_steps() -> usize {
    30
}

pub struct Engine {
    pub ctx: Context,
    pub dir: PathBuf,
    pub name: String,
    pub settings: PipelineSettings,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: CLIPTextModel,
    pub unet: UNet2DConditionModel,
    pub scheduler: SchedulerConfig,
    pub scorer: Option<CLIPModel>,
    /// The latent decoder of a latent model (a folder with vae/); `None`: pixel space.
    pub vae: Option<AutoencoderKLDecoder>,
    pub upscaler: Option<SRVGGNetCompact>,
    /// The last run's plan, reused by the next request of the same shape.
    pub(crate) plan: std::sync::Mutex<Option<crate::search::Plan>>,
}

impl Engine {
    /// Open the adapter and load the model folder `dir` (diffusers layout).
    pub fn new(dir: &Path, adapter: &AdapterOptions) -> Result<Self> {
        check_model_dir(dir)?;
        let ctx = Context::new(adapter)?;
        Self::with_context(ctx, dir)
    }

    pub fn with_context(ctx: Context, dir: &Path) -> Result<Self> {
        check_model_dir(dir)?;
        let index = Config::read(dir.join("model_index.json"))?;
        let settings: PipelineSettings =
            index.get_or("_easel", serde_json::from_str("{}").expect("empty object"))?;
        let tokenizer = ClipTokenizer::from_dir(dir.join("tokenizer"))?;

        let (mut weights, config): (_, CLIPTextConfig) = open_component(&dir.join("text_encoder"))?;
        weights.detect_prefix("text_model.");
        let text_encoder = CLIPTextModel::new(&Vars::new(&ctx, &weights), config)?;
        check_all_used(&weights, clip::IGNORED)?;

        let (weights, config): (_, UNet2DConditionConfig) = open_component(&dir.join("unet"))?;
        let unet = UNet2DConditionModel::new(&Vars::new(&ctx, &weights), config)?;
        check_all_used(&weights, &[])?;

        let scheduler = SchedulerConfig::load(dir.join("scheduler").join("scheduler_config.json"))?;

        let scorer = if dir.join("scorer").is_dir() {
            let (weights, config): (_, CLIPConfig) = open_component(&dir.join("scorer"))?;
            let scorer = CLIPModel::new(&Vars::new(&ctx, &weights), config)?;
            check_all_used(&weights, clip::IGNORED)?;
            Some(scorer)
        } else {
            None
        };
        let vae = if dir.join("vae").is_dir() {
            let (weights, config): (_, AutoencoderKLConfig) = open_component(&dir.join("vae"))?;
            let vae = AutoencoderKLDecoder::new(&Vars::new(&ctx, &weights), config)?;
            check_all_used(&weights, vae::UNUSED_PREFIXES)?;
            Some(vae)
        } else {
            None
        };
        let upscaler = if dir.join("upscaler").is_dir() {
            let (weights, config): (_, SRVGGNetCompactConfig) =
                open_component(&dir.join("upscaler"))?;
            let upscaler = SRVGGNetCompact::new(&Vars::new(&ctx, &weights), config)?;
            check_all_used(&weights, &[])?;
            Some(upscaler)
        } else {
            None
        };
        let name = model_name(dir);
        Ok(Self {
            ctx,
            dir: dir.to_path_buf(),
            name,
            settings,
            tokenizer,
            text_encoder,
            unet,
            scheduler,
            scorer,
            vae,
            upscaler,
            plan: Default::default(),
        })
    }

    /// Run the loop of DESIGN.md for one request (see [`crate::search`]).
    pub fn generate(&self, request: &Request) -> Result<Image> {
        crate::search::run(self, request)
    }
}

/// The model's name for metadata: its folder's name (`easel-emoji`).
pub fn model_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

fn check_model_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::model(dir, "model folder not found"));
    }
    if !dir.join("model_index.json").is_file() {
        return Err(Error::model(
            dir,
            "not a model folder: no model_index.json (expected a diffusers-style pipeline folder)",
        ));
    }
    Ok(())
}
