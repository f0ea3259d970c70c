//! A run that starts from a picture (`--init`, `--strength`, `--mask`): the
//! host side of img2img and inpainting. The picture is read and checked here,
//! before any GPU work; the loop encodes it (VAE for a latent model, the
//! pixels themselves for a pixel model) and starts every candidate from it
//! (`search::start`).
//!
//! As diffusers' `StableDiffusionImg2ImgPipeline`: a run of `N` steps at
//! strength `S` skips the first `N − ⌊N·S⌋` steps of the `N`-step schedule
//! (`get_timesteps`) and starts from the encoded image noised to the first
//! remaining timestep (`add_noise`), each candidate with its own noise. The
//! latents are the encoder's mean, not a sample of it: the start is the same
//! for every seed but for the noise, and a trained VAE's variance is tiny.
//!
//! Inpainting with any model, as diffusers' inpainting pipeline does for a
//! 4-channel UNet: after every step, where the mask is not white the samples
//! are pulled back to the start image noised to the next step's level (the
//! clean image after the last step), each candidate with its start noise.
//! The mask is resized to the image (bilinear), feathered by a Gaussian of
//! `--mask-blur` pixels, and averaged down to the sample's size.
//!
//! A dedicated inpainting UNet (`in_channels` 9 for 4 latent channels, as
//! SD-1.5-inpainting) as diffusers' inpainting pipeline runs it: the UNet
//! reads the mask and the masked picture's latents as 5 more input channels
//! every step ([`Start::conditioning`]), and nothing is pulled back after a
//! step. Its `--strength` defaults to 1, which starts from the noise alone
//! (`is_strength_max`), as a run without a picture does.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma, RgbImage};

use crate::error::{Error, Result};
use crate::models::pipeline::PipelineConfig;
use crate::ops::sampler::{NoiseLevel, StepCoefficients};
use crate::schedulers::{euler_ancestral, SchedulerConfig};

/// A picture given on the command line, decoded.
#[derive(Clone, Debug)]
pub struct Picture {
    pub path: PathBuf,
    pub rgb: RgbImage,
}

impl Picture {
    /// Read `path` (`flag` names it in errors): a PNG, any bit depth or colour
    /// type (alpha is dropped).
    pub fn open(flag: &str, path: &Path) -> Result<Self> {
        let bad = |why: String| Error::BadInput(format!("{flag} {}: {why}", path.display()));
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => return Err(bad("not a regular file".into())),
            Err(e) => return Err(bad(e.to_string())),
            Ok(_) => {}
        }
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let image = image::load_from_memory(&bytes)
            .map_err(|e| bad(format!("not an image easel can read (PNG): {e}")))?;
        if image.width() == 0 || image.height() == 0 {
            return Err(bad("an empty image".into()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            rgb: image.to_rgb8(),
        })
    }

    pub fn size(&self) -> (usize, usize) {
        (self.rgb.width() as usize, self.rgb.height() as usize)
    }
}

/// Where a run starts: a picture, how much of the schedule repaints it, and
/// optionally what to repaint.
#[derive(Clone, Debug)]
pub struct Start {
    /// `--init`.
    pub init: Picture,
    /// `--strength`, 0 to 1: the share of the schedule that runs (0 returns
    /// the start image, through the VAE for a latent model).
    pub strength: f64,
    /// `--mask`: white repaints, black keeps, grey blends.
    pub mask: Option<Picture>,
    /// `--mask-blur`: the feathering Gaussian's σ in pixels (0: none).
    pub mask_blur: f32,
}

impl Start {
    /// `--strength` when none is given (A1111's).
    pub const DEFAULT_STRENGTH: f64 = 0.75;
    /// `--strength` when none is given, for a dedicated inpainting UNet
    /// (diffusers' inpainting pipeline's: every step, from noise).
    pub const DEFAULT_INPAINTING_STRENGTH: f64 = 1.0;

    /// `--strength` when none is given, for `model`.
    pub fn default_strength(model: &PipelineConfig) -> f64 {
        match inpainting_unet(model) {
            true => Self::DEFAULT_INPAINTING_STRENGTH,
            false => Self::DEFAULT_STRENGTH,
        }
    }
    /// `--mask-blur` when none is given (A1111's).
    pub const DEFAULT_MASK_BLUR: f32 = 4.0;

    /// Read `--init` and check `--strength`.
    pub fn open(init: &Path, strength: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(Error::BadInput(format!(
                "--strength {strength}: must be from 0 to 1"
            )));
        }
        Ok(Self {
            init: Picture::open("--init", init)?,
            strength,
            mask: None,
            mask_blur: 0.0,
        })
    }

    /// Read `--mask` and check `--mask-blur`.
    pub fn with_mask(self, mask: &Path, blur: f32) -> Result<Self> {
        if !blur.is_finite() || blur < 0.0 {
            return Err(Error::BadInput(format!(
                "--mask-blur {blur}: must be a number of pixels, 0 or more"
            )));
        }
        Ok(Self {
            mask: Some(Picture::open("--mask", mask)?),
            mask_blur: blur,
            ..self
        })
    }

    /// The picture's size rounded down to multiples of `factor` (the default
    /// `--size`), refused when a side is smaller than `factor`.
    pub fn size(&self, factor: usize) -> Result<(usize, usize)> {
        let (w, h) = self.init.size();
        let (width, height) = (w / factor * factor, h / factor * factor);
        if width == 0 || height == 0 {
            return Err(Error::BadInput(format!(
                "--init {}: {w}x{h} is smaller than this model's multiple of {factor}",
                self.init.path.display()
            )));
        }
        Ok((width, height))
    }

    /// A note for the user when the run's size or the mask's differs from the picture's.
    pub fn notes(&self, (width, height): (usize, usize)) -> Vec<String> {
        let (w, h) = self.init.size();
        let mut notes = Vec::new();
        if (w, h) != (width, height) {
            notes.push(format!(
                "note: --init {} is {w}x{h}; resized to {width}x{height} (a multiple of the model's)",
                self.init.path.display()
            ));
        }
        if let Some(mask) = self.mask.as_ref().filter(|m| m.size() != (w, h)) {
            let (mw, mh) = mask.size();
            notes.push(format!(
                "note: --mask {} is {mw}x{mh}, the image {w}x{h}; the mask is resized to it",
                mask.path.display()
            ));
        }
        notes
    }

    /// `(steps run, steps skipped)` of a run of `total` steps: diffusers'
    /// `get_timesteps`, `init_timestep = min(int(total · strength), total)`.
    pub fn steps(&self, total: usize) -> (usize, usize) {
        let run = ((total as f64 * self.strength) as usize).min(total);
        (run, total - run)
    }

    /// The picture resized to `width`x`height` (Lanczos, as diffusers' PIL
    /// resize) as `[3, height, width]` in [-1, 1].
    pub fn pixels(&self, (width, height): (usize, usize)) -> Vec<f32> {
        let rgb = resized(&self.init.rgb, width, height);
        let plane = width * height;
        let mut out = vec![0.0; 3 * plane];
        for (i, p) in rgb.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = p[c] as f32 / 127.5 - 1.0;
            }
        }
        out
    }

    /// The mask for samples `[C, h, w]` of a `width`x`height` image, repeated
    /// over the channels (1 repaints, 0 keeps): [`Start::repainted`] taken at the
    /// samples' size, nearest (`interpolate`'s default), as diffusers' inpainting
    /// pipeline and A1111 blend latents. A grey mask value would compound over the
    /// steps (a sample kept at 10 % per step keeps almost all of the picture after
    /// 50), so the blend is black or white.
    pub fn mask_samples(
        &self,
        (width, height): (usize, usize),
        [c, h, w]: [usize; 3],
    ) -> Option<Vec<f32>> {
        let repainted = self.repainted((width, height))?;
        Some(small_mask(&repainted, (width, height), [h, w]).repeat(c))
    }

    /// A dedicated inpainting UNet's extra inputs for a `width`x`height` image
    /// and samples `[C, h, w]`, as diffusers' inpainting pipeline makes them:
    /// the picture `[3, H, W]` in [-1, 1] with the repainted pixels zeroed
    /// (`init * (mask < 0.5)`), which the VAE encodes; and the mask at the
    /// samples' size `[h, w]` (as [`Start::mask_samples`]). `(masked picture, mask)`.
    pub fn conditioning(
        &self,
        (width, height): (usize, usize),
        [_, h, w]: [usize; 3],
    ) -> Option<(Vec<f32>, Vec<f32>)> {
        let repainted = self.repainted((width, height))?;
        let mut masked = self.pixels((width, height));
        let plane = width * height;
        for (i, v) in masked.iter_mut().enumerate() {
            if repainted[i % plane] {
                *v = 0.0;
            }
        }
        Some((masked, small_mask(&repainted, (width, height), [h, w])))
    }

    /// Which pixels of a `width`x`height` image are repainted: the mask resized
    /// and feathered ([`Start::soft_mask`]), then binarized at 0.5 as diffusers'
    /// `mask_processor` does (so `--mask-blur` rounds the mask's corners).
    fn repainted(&self, (width, height): (usize, usize)) -> Option<Vec<bool>> {
        let soft = self.soft_mask((width, height))?;
        Some(soft.pixels().map(|p| p[0] >= 0.5).collect())
    }

    /// The mask's luma in [0, 1], resized to `width`x`height` (bilinear) and
    /// feathered by `--mask-blur`.
    fn soft_mask(
        &self,
        (width, height): (usize, usize),
    ) -> Option<ImageBuffer<Luma<f32>, Vec<f32>>> {
        let mask = self.mask.as_ref()?;
        let luma = imageops::grayscale(&mask.rgb);
        let luma: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_fn(luma.width(), luma.height(), |x, y| {
                Luma([luma.get_pixel(x, y)[0] as f32 / 255.0])
            });
        let (iw, ih) = (width as u32, height as u32);
        let mut soft = match luma.dimensions() == (iw, ih) {
            true => luma,
            false => imageops::resize(&luma, iw, ih, FilterType::Triangle),
        };
        if self.mask_blur > 0.0 {
            soft = imageops::blur(&soft, self.mask_blur);
        }
        Some(soft)
    }
}

/// A `width`x`height` pixel mask at the samples' size `[h, w]`, nearest: sample
/// `(y, x)` takes pixel `(⌊y·H/h⌋, ⌊x·W/w⌋)`.
fn small_mask(repainted: &[bool], (width, height): (usize, usize), [h, w]: [usize; 2]) -> Vec<f32> {
    (0..h * w)
        .map(|i| (i % w * width / w, i / w * height / h))
        .map(|(x, y)| repainted[y * width + x] as u8 as f32)
        .collect()
}

/// Is `model`'s UNet a dedicated inpainting one: a latent model whose UNet
/// reads its latents, a mask and the masked image's latents (`in_channels`
/// `2·latent_channels + 1`, SD-1.5-inpainting's 9)?
pub fn inpainting_unet(model: &PipelineConfig) -> bool {
    let latent = model.vae.as_ref().map(|vae| vae.latent_channels);
    latent.is_some_and(|c| model.unet.in_channels == 2 * c + 1 && model.unet.out_channels == c)
}

/// The UNet's channels against what it samples: its samples' own in and out,
/// or a dedicated inpainting UNet's ([`inpainting_unet`]), which needs a
/// start picture and a mask.
pub(crate) fn check_channels(model: &PipelineConfig, start: Option<&Start>) -> Result<()> {
    let unet = &model.unet;
    if inpainting_unet(model) {
        return match start.is_some_and(|s| s.mask.is_some()) {
            true => Ok(()),
            false => Err(Error::BadInput(format!(
                "this is an inpainting model ({} input channels): give --init IMAGE and --mask MASK",
                unet.in_channels
            ))),
        };
    }
    let (channels, _) = model.sample_space();
    if unet.in_channels == channels && unet.out_channels == channels {
        return Ok(());
    }
    let what = match &model.vae {
        Some(vae) => format!(
            "the VAE's latent_channels {c} (or in_channels {} for an inpainting UNet)",
            2 * vae.latent_channels + 1,
            c = vae.latent_channels
        ),
        None => "3 (a pixel-space model: no vae/ folder)".to_string(),
    };
    Err(Error::model(
        model.dir.join("unet"),
        format!(
            "in_channels {} and out_channels {} must both be {what}",
            unet.in_channels, unet.out_channels
        ),
    ))
}

/// `(steps run, steps skipped)` of a run of `total` steps (all of them run
/// without a start picture).
pub(crate) fn steps(start: Option<&Start>, total: usize) -> (usize, usize) {
    start.map_or((total, 0), |s| s.steps(total))
}

/// The image size: `--size`, else the start picture's (rounded down to
/// `factor`), else the model's `default` square.
pub(crate) fn size(
    size: Option<(usize, usize)>,
    start: Option<&Start>,
    factor: usize,
    default: usize,
) -> Result<(usize, usize)> {
    match (size, start) {
        (Some(size), _) => Ok(size),
        (None, Some(start)) => start.size(factor),
        (None, None) => Ok((default, default)),
    }
}

/// A started run's noise levels for the run's step `table`, and how its mask
/// repaints on `model`. A dedicated inpainting UNet at strength 1 starts from
/// the noise alone, scaled by `init_noise_sigma` (diffusers' `is_strength_max`).
pub(crate) fn settle(
    start: Option<&Start>,
    (table, init_noise_sigma): (&[StepCoefficients], f32),
    config: &SchedulerConfig,
    model: &PipelineConfig,
) -> Option<StartSettings> {
    let conditioned = inpainting_unet(model);
    start.map(|start| {
        let mut levels = levels(table, config);
        if conditioned && start.strength >= 1.0 {
            levels[0] = (0.0, init_noise_sigma);
        }
        let masking = match (&start.mask, conditioned) {
            (None, _) => Masking::None,
            (Some(_), false) => Masking::Keep,
            (Some(_), true) => Masking::Condition,
        };
        StartSettings { levels, masking }
    })
}

/// `rgb` at `width`x`height` (itself when it already is).
fn resized(rgb: &RgbImage, width: usize, height: usize) -> RgbImage {
    match rgb.dimensions() == (width as u32, height as u32) {
        true => rgb.clone(),
        false => imageops::resize(rgb, width as u32, height as u32, FilterType::Lanczos3),
    }
}

/// What a started run adds to the plan's shape: the noise level before each
/// step (diffusers' `add_noise` at its timestep) and after the last (the clean
/// image), and what its mask does.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StartSettings {
    /// `steps + 1` levels: `levels[0]` starts the run, `levels[i + 1]` follows step `i`.
    pub levels: Vec<NoiseLevel>,
    pub masking: Masking,
}

/// What a run's mask does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Masking {
    /// No mask: img2img.
    None,
    /// Any model: the kept region is pulled back to the start after every step.
    Keep,
    /// A dedicated inpainting UNet: the mask and the masked picture's latents
    /// are extra input channels of every step ([`Start::conditioning`]).
    Condition,
}

/// The noise level of each row of `table` in the row's own convention, then
/// the clean image's `(1, 0)`. A row reads `x` into the UNet as `in_scale · x`,
/// which must be the variance-preserving `(x0 + σ·ε) / √(σ² + 1)` at its
/// timestep's σ: so `x = (x0 + σ·ε) / (in_scale · √(σ² + 1))`. That is
/// `√ᾱ·x0 + √(1−ᾱ)·ε` for DDIM and DPM-Solver (in_scale 1) and `x0 + σ·ε` for
/// Euler (in_scale `1/√(σ²+1)`): each scheduler's own `add_noise`.
fn levels(table: &[StepCoefficients], config: &SchedulerConfig) -> Vec<NoiseLevel> {
    let timesteps: Vec<f64> = table.iter().map(|r| r.timestep as f64).collect();
    let sigmas = euler_ancestral::sigmas_at(config, &timesteps);
    table
        .iter()
        .zip(sigmas)
        .map(|(row, sigma)| {
            let x = 1.0 / (row.in_scale as f64 * (sigma * sigma + 1.0).sqrt());
            (x as f32, (sigma * x) as f32)
        })
        .chain([(1.0, 0.0)])
        .collect()
}
