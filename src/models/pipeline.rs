//! A model folder in the diffusers layout (`model_index.json`, `tokenizer/`,
//! `text_encoder/`, `unet/`, `scheduler/`, and optionally `vae/`, `scorer/`,
//! `upscaler/`), read in two stages:
//!
//! 1. [`PipelineConfig::read`] parses every config and opens no weights and no
//!    GPU, so a request can be checked against the model before any GPU work
//!    (`Request::check`), and a bad folder is reported before an adapter is opened;
//! 2. [`Pipeline::load`] builds each model on the GPU from its weights, by exact
//!    checkpoint names, refusing tensors a model left unused.
//!
//! `easel bench models` loads single components through the same loaders.
//! [`PipelineConfig::open`] also takes a single-file checkpoint
//! (`models::single_file`), read as the same models.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::gpu::{Context, Tensor};
use crate::lora::{self, Component, Lora, LoraSpec};
use crate::models::clip::{self, CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel};
use crate::models::layers::{build_with, component_config, CheckedConfig, Vars};
use crate::models::scorer::{ModelFallback, Scorer, ScorerConfig};
use crate::models::single_file::{self, ModelOptions, SingleFile};

mod settings;

use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::upscaler::{self, SRVGGNetCompact, SRVGGNetCompactConfig};
use crate::models::vae::{self, AutoencoderKLConfig, AutoencoderKLDecoder, AutoencoderKLEncoder};
use crate::models::vae_tiles::Tiling;
use crate::models::Graph;
use crate::schedulers::SchedulerConfig;
use crate::tokenizer::ClipTokenizer;
use crate::weights::{SafetensorsFile, WeightPrecision, Weights, TEXT_MODEL_PREFIX};
use settings::read_settings;
pub use settings::PipelineSettings;

/// Every config of a model folder: what a request is checked against.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub dir: PathBuf,
    /// The model's name for metadata: its folder's name (`easel-emoji`).
    pub name: String,
    pub settings: PipelineSettings,
    pub text_encoder: CLIPTextConfig,
    pub unet: UNet2DConditionConfig,
    pub scheduler: SchedulerConfig,
    /// `vae/`: a latent model, whose UNet samples latents the VAE decodes.
    pub vae: Option<AutoencoderKLConfig>,
    /// The check-output process (a transformers `CLIPModel`): the folder's own
    /// `scorer/`, or the one [`PipelineConfig::with_scorer`] names.
    pub scorer: Option<ScorerConfig>,
    pub upscaler: Option<SRVGGNetCompactConfig>,
    /// Where the upscaler's weights are: the folder's `upscaler/`, or what
    /// [`PipelineConfig::with_upscaler`] names (a folder or a `.safetensors` file).
    pub upscaler_path: PathBuf,
    /// Precision of layer weights on the GPU (`--weights`); `read` leaves `Auto`.
    pub weights: WeightPrecision,
    /// The single-file checkpoint the models come from (`dir` is that file).
    pub single_file: Option<SingleFile>,
    /// LoRAs merged into the UNet and text encoder at load (`--lora`); `read` leaves none.
    pub loras: Vec<LoraSpec>,
}

impl PipelineConfig {
    /// A model folder ([`PipelineConfig::read`]) or a single-file checkpoint
    /// (`models::single_file`), by what `path` is; `options.prediction`
    /// overrides the scheduler's prediction type of either.
    pub fn open(path: &Path, options: &ModelOptions) -> Result<Self> {
        if path.is_dir() || !path.exists() {
            if options.tokenizer.is_some() || options.config.is_some() {
                return Err(Error::BadInput(format!(
                    "--tokenizer and --config apply to a single-file --model; {} is a folder",
                    path.display()
                )));
            }
            let mut config = Self::read(path)?;
            if let Some(prediction) = options.prediction {
                config.scheduler.prediction_type = prediction;
            }
            return Ok(config);
        }
        crate::weights::regular_file(path)?;
        let (file, c) = single_file::read(path, options)?;
        let name = path.file_stem().unwrap_or(path.as_os_str());
        Ok(Self {
            dir: path.to_path_buf(),
            // As A1111 names a checkpoint: the file's name without its extension.
            name: name.to_string_lossy().into_owned(),
            settings: read_settings(c.index.as_deref(), &c.scheduler)?,
            text_encoder: c.text_encoder,
            unet: c.unet,
            scheduler: c.scheduler,
            vae: Some(c.vae),
            scorer: None,
            upscaler: None,
            weights: WeightPrecision::Auto,
            upscaler_path: path.to_path_buf(),
            single_file: Some(file),
            loras: Vec::new(),
        })
    }

    /// Read `dir`'s configs (no weights, no GPU).
    pub fn read(dir: &Path) -> Result<Self> {
        check_model_dir(dir)?;
        let scheduler = SchedulerConfig::load(dir.join("scheduler").join("scheduler_config.json"))?;
        let settings = read_settings(Some(&dir.join("model_index.json")), &scheduler)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            name: model_name(dir),
            text_encoder: component_config(&dir.join("text_encoder"))?,
            unet: component_config(&dir.join("unet"))?,
            scheduler,
            vae: optional_config(dir, "vae")?,
            scorer: own_scorer(dir, &settings)?,
            upscaler: optional_config(dir, "upscaler")?,
            upscaler_path: dir.join("upscaler"),
            weights: WeightPrecision::Auto,
            single_file: None,
            loras: Vec::new(),
            settings,
        })
    }

    /// The same model upscaled by the `SRVGGNetCompact` at `path`: a folder like
    /// `upscaler/` (config.json + weights), or one `.safetensors` file in
    /// Real-ESRGAN's layout, its configuration read from the tensors' shapes
    /// ([`upscaler::infer_config`]).
    pub fn with_upscaler(self, path: &Path) -> Result<Self> {
        let config = match path.is_dir() {
            true => component_config(path)?,
            false => {
                let inferred = upscaler::infer_config(&SafetensorsFile::open(path)?)?;
                inferred.check().map_err(|m| Error::model(path, m))?;
                inferred
            }
        };
        Ok(Self {
            upscaler: Some(config),
            upscaler_path: path.to_path_buf(),
            ..self
        })
    }

    /// The same model scored by the `CLIPModel` folder `dir` (`--scorer`,
    /// `EASEL_SCORER`) instead of its own `scorer/`.
    pub fn with_scorer(self, dir: &Path) -> Result<Self> {
        Ok(Self {
            scorer: Some(ScorerConfig::read(dir, None)?),
            ..self
        })
    }

    /// What the UNet samples: `(channels, factor)`, an image of `factor`x
    /// the sample's size: RGB at 1x for a pixel-space model, the VAE's latents
    /// for a latent one.
    pub fn sample_space(&self) -> (usize, usize) {
        match &self.vae {
            Some(vae) => (vae.latent_channels, vae.upscale_factor()),
            None => (3, 1),
        }
    }
}

/// A1111's `Model hash` of the model, streamed on a thread of its own while the
/// models load (seconds for a 1.7 GB file): a single file's own hash, exactly as
/// A1111 computes it; a folder's over its UNet's weights (`weights::hash`).
fn spawn_model_hash(config: &PipelineConfig) -> std::thread::JoinHandle<Result<String>> {
    let single = config.single_file.as_ref().map(|f| f.path.clone());
    let dir = config.dir.clone();
    std::thread::spawn(move || match single {
        Some(file) => crate::weights::hash::short_hash(&[file]),
        None => crate::weights::hash::unet_hash(&dir),
    })
}

/// The loaded models of a folder.
pub struct Pipeline {
    pub config: PipelineConfig,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: CLIPTextModel,
    pub unet: UNet2DConditionModel,
    pub scorer: Option<Scorer>,
    /// The latent decoder of a latent model; `None`: pixel space.
    pub vae: Option<AutoencoderKLDecoder>,
    /// The VAE's encoder, loaded by the first run that starts from an image.
    vae_encoder: OnceLock<AutoencoderKLEncoder>,
    pub upscaler: Option<SRVGGNetCompact>,
    /// A1111's short hash of the model (`weights::hash`), for `Model hash`.
    pub model_hash: String,
    /// The LoRAs merged into `unet` and `text_encoder` (for the PNG's `Lora hashes`).
    pub loras: Vec<Lora>,
}

impl Pipeline {
    /// Build every model of `config` on `ctx` from its weights.
    pub fn load(ctx: &Context, config: PipelineConfig) -> Result<Self> {
        let w = config.weights;
        let hashing = spawn_model_hash(&config);
        let loras = config
            .loras
            .iter()
            .map(Lora::open)
            .collect::<Result<Vec<_>>>()?;
        let (tokenizer, text_encoder, unet, vae) = match &config.single_file {
            Some(file) => {
                if !loras.is_empty() {
                    return Err(Error::BadInput(format!(
                        "--lora with a single-file --model ({}) is not supported yet; \
                         use the model as a diffusers folder",
                        file.path.display()
                    )));
                }
                let vae = config.vae.as_ref().expect("a single file has a VAE");
                let models = (&config.text_encoder, &config.unet, vae);
                let (t, te, u, v) = single_file::load(ctx, file, models, config.weights)?;
                (t, te, u, Some(v))
            }
            None => load_folder(ctx, &config, &loras)?,
        };
        let scorer = match &config.scorer {
            Some(c) => Some(load_scorer_folder(ctx, c, w)?),
            None => None,
        };
        let upscaler = match &config.upscaler {
            Some(c) => Some(load_upscaler(ctx, &config.upscaler_path, c, w)?),
            None => None,
        };
        let model_hash = hashing.join().expect("the hashing thread does not panic")?;
        Ok(Self {
            config,
            tokenizer,
            text_encoder,
            unet,
            scorer,
            vae,
            vae_encoder: OnceLock::new(),
            upscaler,
            model_hash,
            loras,
        })
    }

    /// The VAE's encoder of a latent model (`None` for a pixel model), loaded
    /// on first use: a run that starts from noise never holds its weights.
    pub fn vae_encoder(&self, ctx: &Context) -> Result<Option<&AutoencoderKLEncoder>> {
        let Some(config) = &self.config.vae else {
            return Ok(None);
        };
        if self.vae_encoder.get().is_none() {
            let (dir, w) = (self.config.dir.join("vae"), self.config.weights);
            let encoder = match &self.config.single_file {
                Some(file) => single_file::load_vae_encoder(ctx, file, config, w)?,
                None => load_vae_encoder(ctx, &dir, config, w)?,
            };
            // Engine runs are serialised by its plan lock: no other load races this one.
            let _ = self.vae_encoder.set(encoder);
        }
        Ok(self.vae_encoder.get())
    }

    /// The images in [-1, 1] of UNet samples: the samples themselves for a
    /// pixel-space model, their VAE decoding for a latent one (in tiles when
    /// the request's memory plan says so).
    pub fn to_image(
        &self,
        g: &mut Graph,
        samples: Tensor,
        tiles: Option<Tiling>,
    ) -> Result<Tensor> {
        match (&self.vae, tiles) {
            (Some(vae), Some(tiling)) => vae.decode_tiled(g, &samples, tiling),
            (Some(vae), None) => vae.decode(g, &samples),
            (None, _) => Ok(samples),
        }
    }
}

/// The models every pipeline has, and a latent one's VAE decoder.
type Core = (
    ClipTokenizer,
    CLIPTextModel,
    UNet2DConditionModel,
    Option<AutoencoderKLDecoder>,
);

/// A folder's tokenizer, text encoder and UNet (with `loras` merged in) and (a
/// latent model's) VAE decoder.
fn load_folder(ctx: &Context, config: &PipelineConfig, loras: &[Lora]) -> Result<Core> {
    let (dir, w) = (&config.dir, config.weights);
    let tokenizer = ClipTokenizer::from_dir(dir.join("tokenizer"))?;
    let text_encoder = load_text_encoder(
        ctx,
        &dir.join("text_encoder"),
        &config.text_encoder,
        (w, loras),
    )?;
    let unet = load_unet(ctx, &dir.join("unet"), &config.unet, (w, loras))?;
    let vae = match &config.vae {
        Some(c) => Some(load_vae(ctx, &dir.join("vae"), c, w)?),
        None => None,
    };
    Ok((tokenizer, text_encoder, unet, vae))
}

/// A model folder's own `scorer/`, which may take its tokenizer and image
/// statistics from the model.
fn own_scorer(dir: &Path, settings: &PipelineSettings) -> Result<Option<ScorerConfig>> {
    let scorer = dir.join("scorer");
    if !scorer.is_dir() {
        return Ok(None);
    }
    let tokenizer = dir.join("tokenizer");
    let fallback = ModelFallback {
        tokenizer: &tokenizer,
        image_mean: settings.scorer_image_mean,
        image_std: settings.scorer_image_std,
    };
    ScorerConfig::read(&scorer, Some(&fallback)).map(Some)
}

/// A scorer folder's model and tokenizer; the tokenizer's context must fit
/// the text tower's positions.
pub fn load_scorer_folder(
    ctx: &Context,
    config: &ScorerConfig,
    precision: WeightPrecision,
) -> Result<Scorer> {
    let tokenizer = ClipTokenizer::from_dir(&config.tokenizer)?;
    let positions = config.clip.text_config.max_position_embeddings;
    if tokenizer.model_max_length > positions {
        return Err(Error::model(
            &config.tokenizer,
            format!(
                "the tokenizer pads to model_max_length {} but the scorer's text tower has \
                 max_position_embeddings {positions} ({})",
                tokenizer.model_max_length,
                config.dir.join("config.json").display()
            ),
        ));
    }
    Ok(Scorer {
        model: load_scorer(ctx, &config.dir, &config.clip, precision)?,
        tokenizer,
        processor: config.processor.clone(),
    })
}

fn optional_config<C: CheckedConfig>(dir: &Path, component: &str) -> Result<Option<C>> {
    let dir = dir.join(component);
    match dir.is_dir() {
        true => component_config(&dir).map(Some),
        false => Ok(None),
    }
}

/// `text_encoder/`: transformers' `CLIPTextModel`, with or without its
/// `text_model.` prefix (transformers 4 and 5 differ; see `models::clip`),
/// with `loras`' text-encoder modules merged in.
pub fn load_text_encoder(
    ctx: &Context,
    dir: &Path,
    config: &CLIPTextConfig,
    (precision, loras): (WeightPrecision, &[Lora]),
) -> Result<CLIPTextModel> {
    build(
        ctx,
        (dir, precision),
        (Some(TEXT_MODEL_PREFIX), clip::IGNORED),
        (loras, Some(Component::TextEncoder)),
        |vb| CLIPTextModel::new(vb, config.clone()),
    )
}

/// `unet/`, with `loras`' UNet modules merged in.
pub fn load_unet(
    ctx: &Context,
    dir: &Path,
    config: &UNet2DConditionConfig,
    (precision, loras): (WeightPrecision, &[Lora]),
) -> Result<UNet2DConditionModel> {
    build(
        ctx,
        (dir, precision),
        (None, &[]),
        (loras, Some(Component::Unet)),
        |vb| UNet2DConditionModel::new(vb, config.clone()),
    )
}

pub fn load_scorer(
    ctx: &Context,
    dir: &Path,
    config: &CLIPConfig,
    precision: WeightPrecision,
) -> Result<CLIPModel> {
    build(
        ctx,
        (dir, precision),
        (None, clip::IGNORED),
        (&[], None),
        |vb| CLIPModel::new(vb, config.clone()),
    )
}

/// `vae/`: only the decoder half is built (the encoder's tensors are allowed).
pub fn load_vae(
    ctx: &Context,
    dir: &Path,
    config: &AutoencoderKLConfig,
    precision: WeightPrecision,
) -> Result<AutoencoderKLDecoder> {
    build(
        ctx,
        (dir, precision),
        (None, vae::UNUSED_PREFIXES),
        (&[], None),
        |vb| AutoencoderKLDecoder::new(vb, config.clone()),
    )
}

/// `vae/`: the encoder half (the decoder's tensors are allowed).
pub fn load_vae_encoder(
    ctx: &Context,
    dir: &Path,
    config: &AutoencoderKLConfig,
    precision: WeightPrecision,
) -> Result<AutoencoderKLEncoder> {
    build(
        ctx,
        (dir, precision),
        (None, vae::ENCODER_UNUSED),
        (&[], None),
        |vb| AutoencoderKLEncoder::new(vb, config.clone()),
    )
}

pub fn load_upscaler(
    ctx: &Context,
    dir: &Path,
    config: &SRVGGNetCompactConfig,
    precision: WeightPrecision,
) -> Result<SRVGGNetCompact> {
    build(ctx, (dir, precision), (None, &[]), (&[], None), |vb| {
        SRVGGNetCompact::new(vb, config.clone())
    })
}

/// Open `dir`'s weights (or the one `.safetensors` file `dir` names; detecting an optional name `prefix`) for layer
/// weights in `precision`, register the modules of `loras` that adapt
/// `component`, build a model with `new`, and refuse tensors it never read
/// (but those under `ignored`) and LoRA modules no layer took: a checkpoint
/// that does not match its config is an error, not a silent zero.
fn build<M>(
    ctx: &Context,
    (dir, precision): (&Path, WeightPrecision),
    (prefix, ignored): (Option<&str>, &[&str]),
    (loras, component): (&[Lora], Option<Component>),
    new: impl FnOnce(&Vars) -> Result<M>,
) -> Result<M> {
    let mut weights = match dir.is_file() {
        true => Weights::open_files(&[dir.to_path_buf()])?,
        false => Weights::open_dir(dir)?,
    };
    if let Some(prefix) = prefix {
        weights.detect_prefix(prefix);
    }
    if let Some(component) = component {
        lora::patch_all(loras, component, &mut weights)?;
    }
    build_with(ctx, weights, precision, ignored, new)
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
    let index = dir.join("model_index.json");
    crate::weights::regular_file(&index)?;
    if !index.is_file() {
        return Err(Error::model(
            dir,
            "not a model folder: no model_index.json (expected a diffusers-style pipeline folder)",
        ));
    }
    Ok(())
}
