//! A single-file Stable Diffusion 1.x / 2.x checkpoint (`model.safetensors`
//! as model sites share them): the original layout (`model.diffusion_model.*`,
//! `first_stage_model.*`, `cond_stage_model.transformer.*` for 1.x,
//! `cond_stage_model.model.*` (OpenCLIP) for 2.x) read through [`names`] as the
//! diffusers models easel builds, with configs [`infer`]red from the shapes, as
//! diffusers' `from_single_file` does.
//!
//! What the file cannot hold comes from [`ModelOptions`]: the tokenizer
//! (`--tokenizer DIR`, else the bundled CLIP tokenizer), the prediction type
//! (`--prediction`, else the file's metadata, else the release's: epsilon for
//! 1.x, v for 2.x), or every config (`--config DIR`, a diffusers folder: for a
//! checkpoint whose settings no shape tells, as diffusers' `config=`).
//! A pickle (`.ckpt`, `.pt`, `.bin`) is refused, never unpickled.

pub mod infer;
pub mod names;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::models::clip::{self, CLIPTextConfig, CLIPTextModel};
use crate::models::layers::{build_with, component_config, CheckedConfig};
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{self, AutoencoderKLConfig, AutoencoderKLDecoder, AutoencoderKLEncoder};
use crate::schedulers::{PredictionType, SchedulerConfig};
use crate::tokenizer::ClipTokenizer;
use crate::weights::{Config, NameMap, SafetensorsFile, WeightPrecision, Weights};

/// Which Stable Diffusion release's layout a file has, by its text encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// OpenAI CLIP ViT-L/14 (`cond_stage_model.transformer.*`).
    V1,
    /// OpenCLIP ViT-H/14 (`cond_stage_model.model.*`).
    V2,
}

impl Version {
    pub fn detect(file: &SafetensorsFile) -> Result<Self> {
        let names = file.names();
        let any = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
        let refuse = |what: &str| Err(Error::model(&file.path, what.to_string()));
        if any("conditioner.embedders.") {
            return refuse("a Stable Diffusion XL checkpoint (`conditioner.embedders.*`): easel runs SD 1.x and 2.x single files");
        }
        if !any(names::UNET) {
            let first = names
                .first()
                .map_or("none".to_string(), |n| format!("`{n}`"));
            return refuse(&format!(
                "not a Stable Diffusion checkpoint: no `{}*` tensors (first tensor: {first}); a diffusers folder goes to --model as the folder",
                names::UNET
            ));
        }
        match (any(names::CLIP), any(names::OPEN_CLIP)) {
            (true, false) => Ok(Version::V1),
            (false, true) => Ok(Version::V2),
            (true, true) => refuse("both `cond_stage_model.transformer.*` and `cond_stage_model.model.*`: which text encoder?"),
            (false, false) => refuse("no text encoder: expected `cond_stage_model.transformer.*` (SD 1.x) or `cond_stage_model.model.*` (SD 2.x)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "Stable Diffusion 1.x (CLIP ViT-L/14 text encoder)",
            Version::V2 => "Stable Diffusion 2.x (OpenCLIP ViT-H/14 text encoder)",
        }
    }
}

/// The bundled CLIP tokenizer (49,408 ids, as every SD 1.x/2.x release has): a
/// folder of the default model.
pub const CLIP_TOKENIZER: &str = "clip_tokenizer";

/// What a single file cannot say (`--tokenizer`, `--prediction`, `--config`).
#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    pub tokenizer: Option<PathBuf>,
    pub prediction: Option<PredictionType>,
    pub config: Option<PathBuf>,
}

/// `--prediction`: `epsilon` or `v` (also diffusers' spelling `v_prediction`).
pub fn parse_prediction(s: &str) -> std::result::Result<PredictionType, String> {
    match s {
        "epsilon" => Ok(PredictionType::Epsilon),
        "v" | "v_prediction" => Ok(PredictionType::VPrediction),
        _ => Err(format!("`{s}`: expected epsilon or v")),
    }
}

/// The single file behind a [`PipelineConfig`].
#[derive(Clone, Debug)]
pub struct SingleFile {
    pub path: PathBuf,
    pub version: Version,
    /// The tokenizer folder, and whether it is the bundled one (said on stderr).
    pub tokenizer: PathBuf,
    pub bundled_tokenizer: bool,
}

impl SingleFile {
    /// The line that says where the tokenizer came from, when the user did not say.
    pub fn notice(&self) -> Option<String> {
        self.bundled_tokenizer.then(|| {
            format!(
                "{}: a single file holds no tokenizer; using the bundled CLIP tokenizer (--tokenizer DIR to choose one)",
                self.path.display()
            )
        })
    }
}

/// A pickle is code, not data: refuse it before reading a byte of it as a model.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut f| f.read(&mut magic));
    // torch.save writes a zip (PK\x03\x04), older ones a bare pickle (\x80 + protocol).
    let pickled = matches!(read, Ok(4))
        && (magic == *b"PK\x03\x04" || (magic[0] == 0x80 && (2..=5).contains(&magic[1])));
    let named = matches!(ext.as_deref(), Some("ckpt" | "pt" | "pth" | "bin" | "pkl"));
    if !(pickled || named) {
        return Ok(());
    }
    Err(Error::model(
        path,
        "a PyTorch pickle checkpoint: easel reads only .safetensors and never unpickles (a pickle can run code); \
         convert it once: python tools/convert_ckpt.py IN.ckpt OUT.safetensors",
    ))
}

/// A single file's model configs; `index` is `--config`'s model_index.json
/// (its `_easel` settings), if any.
#[derive(Clone, Debug)]
pub struct Configs {
    pub text_encoder: CLIPTextConfig,
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub scheduler: SchedulerConfig,
    pub index: Option<PathBuf>,
}

/// The configs of a single-file checkpoint (no weights read, no GPU).
pub fn read(path: &Path, options: &ModelOptions) -> Result<(SingleFile, Configs)> {
    refuse_pickle(path)?;
    let file = SafetensorsFile::open(path)?;
    let version = Version::detect(&file)?;
    let stated = options.prediction.or_else(|| metadata_prediction(&file));
    let mut configs = match &options.config {
        Some(dir) => from_folder(dir)?,
        None => {
            let v = stated.unwrap_or(match version {
                // diffusers reads a 2.x file as stable-diffusion-2-1 (768, v).
                Version::V1 => PredictionType::Epsilon,
                Version::V2 => PredictionType::VPrediction,
            });
            inferred(&file, version, v == PredictionType::VPrediction)?
        }
    };
    if let Some(prediction) = stated {
        configs.scheduler.prediction_type = prediction;
    }
    let given = options.tokenizer.clone().or_else(|| {
        let dir = options.config.as_ref()?.join("tokenizer");
        dir.is_dir().then_some(dir)
    });
    let bundled_tokenizer = given.is_none();
    let tokenizer = match given {
        Some(dir) => dir,
        // CLIP's whole vocabulary: the default model's own tokenizer/ keeps only
        // the rows its captions reach (tools/prune_vocab.py).
        None => crate::model_dir::default_model()?.join(CLIP_TOKENIZER),
    };
    let file = SingleFile {
        path: path.to_path_buf(),
        version,
        tokenizer,
        bundled_tokenizer,
    };
    Ok((file, configs))
}

/// `modelspec.prediction_type` (Stability's model spec, written by kohya's
/// sd-scripts and ComfyUI), or an `-v` `modelspec.architecture`.
pub fn metadata_prediction(file: &SafetensorsFile) -> Option<PredictionType> {
    let meta = file.metadata()?;
    if let Some(p) = meta.get("modelspec.prediction_type") {
        return parse_prediction(p).ok();
    }
    let arch = meta.get("modelspec.architecture")?;
    arch.ends_with("-v").then_some(PredictionType::VPrediction)
}

/// A config inferred by [`infer`], checked like a config.json (errors name the file).
fn checked<C: CheckedConfig>(path: &Path, value: Value) -> Result<C> {
    let fields = match value {
        Value::Object(fields) => fields,
        _ => unreachable!("infer builds objects"),
    };
    let config: C = Config {
        path: path.to_path_buf(),
        fields,
    }
    .parse()?;
    config
        .check()
        .map_err(|message| Error::model(path, format!("inferred config: {message}")))?;
    Ok(config)
}

fn inferred(file: &SafetensorsFile, version: Version, v: bool) -> Result<Configs> {
    let path = &file.path;
    Ok(Configs {
        text_encoder: checked(path, infer::text_encoder(file, version)?)?,
        unet: checked(path, infer::unet(file, version, v)?)?,
        vae: checked(path, infer::vae(file)?)?,
        scheduler: SchedulerConfig::from_json(&infer::scheduler(v).to_string(), path)?,
        index: None,
    })
}

/// `--config DIR`: a diffusers folder's configs for the file's weights.
fn from_folder(dir: &Path) -> Result<Configs> {
    let index = dir.join("model_index.json");
    Ok(Configs {
        text_encoder: component_config(&dir.join("text_encoder"))?,
        unet: component_config(&dir.join("unet"))?,
        vae: component_config(&dir.join("vae"))?,
        scheduler: SchedulerConfig::load(dir.join("scheduler").join("scheduler_config.json"))?,
        index: index.is_file().then_some(index),
    })
}

/// The models a [`SingleFile`] holds, as `configs` describe them, with layer
/// weights in `precision`: tokenizer, text encoder, UNet, VAE decoder.
pub fn load(
    ctx: &Context,
    file: &SingleFile,
    (text, unet, vae): (
        &CLIPTextConfig,
        &UNet2DConditionConfig,
        &AutoencoderKLConfig,
    ),
    w: WeightPrecision,
) -> Result<(
    ClipTokenizer,
    CLIPTextModel,
    UNet2DConditionModel,
    AutoencoderKLDecoder,
)> {
    let mut tokenizer = ClipTokenizer::from_dir(&file.tokenizer)?;
    if file.version == Version::V2 && file.bundled_tokenizer {
        // OpenCLIP pads with `!` (id 0), as SD 2.x's tokenizer_config.json says.
        tokenizer.pad_token_id = tokenizer.token_id("!").unwrap_or(0);
    }
    let open = |prefix: &str, keep: &dyn Fn(&str) -> bool, names: Box<dyn NameMap>| {
        let mut weights = Weights::open_files(std::slice::from_ref(&file.path))?;
        weights.rename(prefix, keep, names);
        Ok::<_, Error>(weights)
    };
    let text_weights = match file.version {
        Version::V1 => open(names::CLIP, &|_| true, Box::new(names::ClipNames))?,
        Version::V2 => {
            let layers = text.num_hidden_layers;
            let used = move |n: &str| open_clip_used(n, layers);
            open(names::OPEN_CLIP, &used, Box::new(names::OpenClipNames))?
        }
    };
    let text_encoder = build_with(ctx, text_weights, w, clip::IGNORED, |vb| {
        CLIPTextModel::new(vb, text.clone())
    })?;
    let unet_weights = open(names::UNET, &|_| true, Box::new(infer::unet_names(unet)))?;
    let unet = build_with(ctx, unet_weights, w, &[], |vb| {
        UNet2DConditionModel::new(vb, unet.clone())
    })?;
    let vae = build_with(
        ctx,
        vae_weights(file, vae)?,
        w,
        vae::UNUSED_PREFIXES,
        |vb| AutoencoderKLDecoder::new(vb, vae.clone()),
    )?;
    Ok((tokenizer, text_encoder, unet, vae))
}

/// The VAE's encoder of a [`SingleFile`] (for a run that starts from a
/// picture), with layer weights in `precision`.
pub fn load_vae_encoder(
    ctx: &Context,
    file: &SingleFile,
    vae: &AutoencoderKLConfig,
    precision: WeightPrecision,
) -> Result<AutoencoderKLEncoder> {
    build_with(
        ctx,
        vae_weights(file, vae)?,
        precision,
        vae::ENCODER_UNUSED,
        |vb| AutoencoderKLEncoder::new(vb, vae.clone()),
    )
}

/// The file's `first_stage_model.*` under diffusers' `AutoencoderKL` names.
fn vae_weights(file: &SingleFile, vae: &AutoencoderKLConfig) -> Result<Weights> {
    let names = Box::new(names::VaeNames {
        blocks: vae.block_out_channels.len(),
    });
    let mut weights = Weights::open_files(std::slice::from_ref(&file.path))?;
    // The autoencoder's training loss (`loss.*`), where a file kept it, is not a model.
    weights.rename(names::VAE, |n: &str| !n.starts_with("loss."), names);
    Ok(weights)
}

/// OpenCLIP tensors SD 2.x does not use (diffusers' `SD_2_TEXT_ENCODER_KEYS_TO_IGNORE`):
/// the last block (it conditions on the penultimate layer's output), the
/// projection and temperature of the contrastive head, and any image tower.
fn open_clip_used(name: &str, layers: usize) -> bool {
    let last = format!("transformer.resblocks.{layers}.");
    !(name.starts_with(&last)
        || matches!(name, "text_projection" | "logit_scale")
        || name.starts_with("visual."))
}
