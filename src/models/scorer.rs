//! The check-output process's model: any transformers `CLIPModel` folder as
//! `CLIPProcessor.save_pretrained` + `CLIPModel.save_pretrained` write it
//! (`config.json`, `model.safetensors`, the tokenizer's `vocab.json` +
//! `merges.txt`, `preprocessor_config.json`), so ViT-B/32, B/16 and L/14
//! checkpoints score the same way as the default model's own `scorer/`.
//!
//! Which folder: `--scorer DIR`, else `EASEL_SCORER` ([`resolve`]), else the
//! model folder's own `scorer/` (read with the model by `PipelineConfig::read`).
//!
//! The image side follows transformers' `CLIPImageProcessor`
//! ([`ImageProcessor`]): the shortest edge resized to `size.shortest_edge`,
//! a centre crop of `crop_size`, `(v − image_mean) / image_std`; done on the
//! GPU by [`CLIPModel::preprocess`](crate::models::clip::CLIPModel::preprocess)
//! on every candidate's image after the VAE decode. The text side uses the
//! scorer's own tokenizer and is encoded once per request.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::models::clip::{CLIPConfig, CLIPModel, ImageProcessor};
use crate::models::layers::component_config;
use crate::tokenizer::ClipTokenizer;
use crate::weights::Config;

/// The environment variable that names a scorer folder when `--scorer` does not.
pub const ENV: &str = "EASEL_SCORER";

/// OpenAI CLIP's image statistics: `CLIPImageProcessor`'s defaults.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// The scorer folder named by `given` (`--scorer`), else by `EASEL_SCORER` when set
/// and not empty; `None`: the model folder's own `scorer/`, if it has one.
pub fn resolve(given: Option<&Path>) -> Option<PathBuf> {
    given.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// A loaded scorer: the two towers, the tokenizer its text tower was trained
/// with, and how its images are prepared.
pub struct Scorer {
    pub model: CLIPModel,
    pub tokenizer: ClipTokenizer,
    pub processor: ImageProcessor,
}

/// A scorer folder's configs, read with no weights and no GPU.
#[derive(Clone, Debug)]
pub struct ScorerConfig {
    pub dir: PathBuf,
    pub clip: CLIPConfig,
    pub processor: ImageProcessor,
    /// The folder holding its tokenizer's `vocab.json` and `merges.txt`.
    pub tokenizer: PathBuf,
}

/// What a model folder's own `scorer/` may leave out and take from the model:
/// its tokenizer folder and the statistics in `model_index.json` (`_easel`).
pub struct ModelFallback<'a> {
    pub tokenizer: &'a Path,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl ScorerConfig {
    /// Read a `CLIPModel` folder; `fallback` is given for a model's own `scorer/`.
    pub fn read(dir: &Path, fallback: Option<&ModelFallback>) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::model(
                dir,
                "scorer folder not found (expected a transformers CLIPModel folder)",
            ));
        }
        let clip: CLIPConfig = component_config(dir)?;
        let image_size = clip.vision_config.image_size;
        let processor = match (dir.join(PROCESSOR).exists(), fallback) {
            (true, _) => read_processor(&dir.join(PROCESSOR), image_size)?,
            (false, Some(f)) => ImageProcessor {
                image_mean: f.image_mean,
                image_std: f.image_std,
                shortest_edge: image_size,
                crop_size: image_size,
            },
            (false, None) => ImageProcessor {
                image_mean: CLIP_MEAN,
                image_std: CLIP_STD,
                shortest_edge: image_size,
                crop_size: image_size,
            },
        };
        let tokenizer = tokenizer_dir(dir, fallback.map(|f| f.tokenizer))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            clip,
            processor,
            tokenizer,
        })
    }
}

const PROCESSOR: &str = "preprocessor_config.json";
/// The largest `size.shortest_edge` accepted (CLIP checkpoints use 224 to 448).
const MAX_EDGE: usize = 1 << 16;

/// The scorer's own tokenizer: in the folder (as `CLIPProcessor` saves it), in
/// its `tokenizer/`, or for a model's own `scorer/` the model's tokenizer.
fn tokenizer_dir(dir: &Path, model: Option<&Path>) -> Result<PathBuf> {
    let has = |d: &Path| {
        d.join("vocab.json").is_file() && d.join("merges.txt").is_file()
            || d.join("tokenizer.json").is_file()
    };
    if has(dir) {
        return Ok(dir.to_path_buf());
    }
    if has(&dir.join("tokenizer")) {
        return Ok(dir.join("tokenizer"));
    }
    match model {
        Some(tokenizer) => Ok(tokenizer.to_path_buf()),
        None => Err(Error::model(
            dir,
            "no tokenizer: a scorer folder needs its CLIP tokenizer's vocab.json and merges.txt, \
             or tokenizer.json (CLIPProcessor.save_pretrained writes them next to config.json)",
        )),
    }
}

/// `crop_size` and `size` are a number (older files) or `{"height", "width"}` /
/// `{"shortest_edge"}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Side(usize),
    Square { height: usize, width: usize },
    Shortest { shortest_edge: usize },
}

fn read_processor(path: &Path, image_size: usize) -> Result<ImageProcessor> {
    let config = Config::read(path)?;
    let bad = |message: String| Error::model(path, message);
    let crop = match config.get_or("crop_size", Size::Side(image_size))? {
        Size::Side(s) => s,
        Size::Square { height, width } if height == width => height,
        Size::Square { height, width } => {
            return Err(bad(format!(
                "`crop_size` {height}x{width}: the vision tower takes a square"
            )))
        }
        Size::Shortest { shortest_edge } => shortest_edge,
    };
    if crop != image_size {
        return Err(bad(format!(
            "`crop_size` {crop} but the vision tower's image_size is {image_size} (config.json)"
        )));
    }
    let shortest_edge = match config.get_or("size", Size::Side(crop))? {
        Size::Side(s) | Size::Shortest { shortest_edge: s } => s,
        Size::Square { height, width } => height.min(width),
    };
    if !(crop..=MAX_EDGE).contains(&shortest_edge) {
        return Err(bad(format!(
            "`size` {shortest_edge}: must be from `crop_size` {crop} to {MAX_EDGE}"
        )));
    }
    let normalize: bool = config.get_or("do_normalize", true)?;
    let (image_mean, image_std) = match normalize {
        true => (
            config.get_or("image_mean", CLIP_MEAN)?,
            config.get_or("image_std", CLIP_STD)?,
        ),
        false => ([0.0; 3], [1.0; 3]),
    };
    let finite = |v: &[f32; 3]| v.iter().all(|x| x.is_finite());
    if !finite(&image_mean) || !finite(&image_std) || image_std.contains(&0.0) {
        return Err(bad(format!(
            "`image_mean` {image_mean:?} / `image_std` {image_std:?}: must be finite, the std not 0"
        )));
    }
    Ok(ImageProcessor {
        image_mean,
        image_std,
        shortest_edge,
        crop_size: crop,
    })
}
