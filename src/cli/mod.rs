//! Subcommand bodies of the `easel` binary; main.rs only parses and maps errors.

pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod devices;
pub mod generate;
pub mod inspect;
pub mod progress;
pub mod start;
pub mod tune;

/// Keep Mesa's device-select Vulkan layer from printing
/// "error: XDG_RUNTIME_DIR is invalid or not set in the environment." on headless
/// machines.
///
/// wgpu enables every WSI instance extension the loader offers, including
/// VK_KHR_wayland_surface; Mesa's implicit VK_LAYER_MESA_device_select then calls
/// `wl_display_connect` to find the compositor's GPU, and libwayland prints that
/// line when there is no session. The layer only reorders devices, and easel
/// picks its adapter itself, so on a machine with no Wayland session, when the
/// user has not asked the layer for anything (MESA_VK_DEVICE_SELECT, DRI_PRIME),
/// it is switched off through its documented `NODEVICE_SELECT=1` switch. Must run
/// before any thread starts (it sets an environment variable).
pub fn quiet_headless_vulkan() {
    let set = |name: &str| std::env::var_os(name).is_some();
    let headless = !set("XDG_RUNTIME_DIR") && !set("WAYLAND_DISPLAY");
    let layer_wanted = set("MESA_VK_DEVICE_SELECT") || set("DRI_PRIME") || set("NODEVICE_SELECT");
    if headless && !layer_wanted {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

/// The options of one render, shared by `generate` and `batch` (where they are the
/// defaults a job line can override).
#[derive(clap::Args, Clone, Debug)]
pub struct RenderArgs {
    /// Seed of the start image and of every noise draw, or `random` (drawn from the
    /// OS, printed on stderr and recorded in the PNG and --json).
    #[arg(long, default_value = "0", value_parser = parse_seed)]
    pub seed: Seed,
    /// WxH of the denoised image (before upscaling); default: the model's sample size.
    #[arg(long, value_parser = easel::farm::parse_size)]
    pub size: Option<(usize, usize)>,
    /// Sampler steps; default: the model's (model_index.json `_easel.default_steps`).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Candidates denoised side by side; the scorer keeps the best each round.
    /// Default: 4 with a scorer, else 1.
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Classifier-free guidance scale; default: the model's.
    #[arg(long)]
    pub guidance: Option<f32>,
    /// ddim, euler_a or dpm++2m, or A1111's DDIM, "Euler a", "DPM++ 2M" ("DPM++ 2M
    /// Karras" adds --karras); default: from scheduler_config.json.
    #[arg(long, value_parser = parse_sampler)]
    pub sampler: Option<easel::schedulers::SamplerName>,
    /// Karras sigmas (rho 7) for Euler a and DPM++ 2M: A1111's "Schedule type: Karras".
    #[arg(long)]
    pub karras: bool,
    /// Negative prompt: the text guidance steers away from, in place of the model's
    /// empty unconditional text (as A1111's); combines with `--no` sub-prompts.
    #[arg(long, value_name = "TEXT")]
    pub negative: Option<String>,
    /// Learned upscaling after denoising: 1, 2 or 4; default: the model's
    /// upscaler's factor, else 1.
    #[arg(long)]
    pub upscale: Option<usize>,
    /// Scoring rounds every N steps (and after the last); default: 4 rounds per run.
    #[arg(long)]
    pub score_every: Option<usize>,
    /// Stop early when the winner's weighted score reaches this.
    #[arg(long)]
    pub until_score: Option<f32>,
    /// Stop early when the winner leads the runner-up by this much.
    #[arg(long)]
    pub until_margin: Option<f32>,
    /// Phases with their own sampler, candidates, scoring interval and guidance,
    /// e.g. "40% sampler=euler_a candidates=8; rest sampler=ddim candidates=2"
    /// (README, "Schedules").
    #[arg(long)]
    pub schedule: Option<String>,
    /// Model folder (diffusers layout) or single-file Stable Diffusion 1.x/2.x
    /// checkpoint (.safetensors); default: EASEL_MODEL, else the model built into easel.
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// Tokenizer folder for a single-file --model (the file holds none);
    /// default: the bundled CLIP tokenizer.
    #[arg(long)]
    pub tokenizer: Option<std::path::PathBuf>,
    /// What the UNet predicts: epsilon or v; default: the single file's metadata,
    /// else epsilon for SD 1.x and v for SD 2.x (a folder: its scheduler config).
    #[arg(long, value_parser = easel::models::single_file::parse_prediction)]
    pub prediction: Option<easel::schedulers::PredictionType>,
    /// A diffusers folder whose configs (and tokenizer) a single-file --model
    /// uses instead of inferring them from its tensors.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// The check-output process: a transformers CLIPModel folder (config.json,
    /// model.safetensors, vocab.json + merges.txt, preprocessor_config.json);
    /// default: EASEL_SCORER, else the model's own scorer/.
    #[arg(long, value_name = "DIR")]
    pub scorer: Option<std::path::PathBuf>,
    /// The learned upscaler: an SRVGGNetCompact folder (config.json + weights) or a
    /// .safetensors file in Real-ESRGAN's layout (realesr-general-x4v3); default:
    /// the model's own upscaler/.
    #[arg(long, value_name = "PATH")]
    pub upscaler: Option<std::path::PathBuf>,
    /// Layer weights on the GPU: auto (as the file: f16 stays f16, half the
    /// memory of f32), f32, or f16 (rounds an f32 model's weights at load).
    #[arg(long, default_value = "auto")]
    pub weights: easel::weights::WeightPrecision,
    /// A LoRA merged into the UNet and text encoder at load: FILE[:WEIGHT]
    /// (default weight 1; repeatable). kohya/A1111 (`lora_unet_*`, `lora_te_*`)
    /// and diffusers/peft (`unet.*.lora_A.weight`) safetensors files.
    #[arg(long = "lora", value_name = "FILE[:WEIGHT]")]
    pub loras: Vec<easel::lora::LoraSpec>,
    /// A latent model's VAE decoder in tiles: auto (when the whole image would not
    /// fit the adapter), off, or N (tiles of N pixels a side, overlapping by a quarter).
    #[arg(long, default_value = "auto")]
    pub vae_tiles: easel::models::vae_tiles::VaeTiles,
    /// The UNet's and VAE decoder's activations: auto (f16 on a GPU with
    /// SHADER_F16 when the weights are f16, else f32), f32, or f16 (half the
    /// activation memory; norm statistics, softmax and sums stay f32).
    #[arg(long, default_value = "auto")]
    pub precision: easel::memory_plan::Precision,
    #[command(flatten)]
    pub start: start::StartArgs,
}

impl RenderArgs {
    /// The model folder to load: `--model`, else `EASEL_MODEL`, else the default
    /// model (`easel::model_dir::resolve`).
    pub fn model_dir(&self) -> easel::Result<std::path::PathBuf> {
        easel::model_dir::resolve(self.model.as_deref())
    }

    /// The model's configs (a folder's or a single file's), with `--scorer` (or
    /// `EASEL_SCORER`), `--upscaler`, `--weights` and `--lora` for loading it;
    /// says on stderr when a single file takes the bundled tokenizer.
    pub fn pipeline_config(&self) -> easel::Result<easel::PipelineConfig> {
        let options = easel::models::single_file::ModelOptions {
            tokenizer: self.tokenizer.clone(),
            prediction: self.prediction,
            config: self.config.clone(),
        };
        let mut config = easel::PipelineConfig::open(&self.model_dir()?, &options)?;
        if let Some(notice) = config.single_file.as_ref().and_then(|f| f.notice()) {
            eprintln!("easel: {notice}");
        }
        if let Some(dir) = easel::models::scorer::resolve(self.scorer.as_deref()) {
            config = config.with_scorer(&dir)?;
        }
        if let Some(path) = &self.upscaler {
            config = config.with_upscaler(path)?;
        }
        Ok(easel::PipelineConfig {
            weights: self.weights,
            loras: self.loras.clone(),
            ..config
        })
    }

    /// The request these options describe for `model` (whose UNet sets
    /// `--strength`'s default); fails on a malformed `--schedule`.
    pub fn request(
        &self,
        prompt: String,
        model: &easel::PipelineConfig,
    ) -> easel::Result<easel::Request> {
        let schedule = match &self.schedule {
            Some(text) => Some(easel::phases::Schedule::parse(text)?),
            None => None,
        };
        Ok(easel::Request {
            seed: match self.seed {
                Seed::Fixed(n) => n,
                Seed::Random => random_seed(),
            },
            size: self.size,
            steps: self.steps,
            candidates: self.candidates,
            guidance: self.guidance,
            sampler: self.sampler.map(|s| s.sampler),
            karras: self.karras || self.sampler.is_some_and(|s| s.karras),
            negative: self.negative.clone(),
            upscale: self.upscale,
            score_every: self.score_every,
            until_score: self.until_score,
            until_margin: self.until_margin,
            schedule,
            start: self.start.start(model)?,
            vae_tiles: self.vae_tiles,
            precision: self.precision,
            ..easel::Request::new(prompt)
        })
    }
}

fn parse_sampler(s: &str) -> std::result::Result<easel::schedulers::SamplerName, String> {
    easel::schedulers::SamplerName::parse(s).map_err(|e| e.to_string())
}

/// `--seed`: a number, or `random` for one drawn when the request is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seed {
    Fixed(u64),
    Random,
}

fn parse_seed(s: &str) -> std::result::Result<Seed, String> {
    if s.eq_ignore_ascii_case("random") {
        return Ok(Seed::Random);
    }
    s.parse()
        .map(Seed::Fixed)
        .map_err(|e| format!("{e}: a whole number from 0 to {} or `random`", u64::MAX))
}

/// A seed from the OS: std's `RandomState` keys come from the OS's random source
/// (no extra crate), hashed with the time. Kept below 2^32 like A1111's random
/// seeds, so it is short to read back and type.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u128(now.map(|d| d.as_nanos()).unwrap_or(0));
    hasher.finish() >> 32
}
