//! `--init`, `--strength`, `--mask`, `--mask-blur`: start from a picture
//! (img2img, inpainting; the library's `easel::Start`).

use std::path::PathBuf;

use easel::{PipelineConfig, Request, Result, Start};

#[derive(clap::Args, Clone, Debug)]
pub struct StartArgs {
    /// Start from this picture (PNG) instead of noise (img2img). The image size
    /// defaults to the picture's, rounded down to the model's multiple.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// How much of the schedule repaints --init: 0 returns it (through the VAE
    /// of a latent model), 1 runs every step; --steps 30 --strength 0.5 runs 15.
    /// Default 0.75; 1 (from noise, as diffusers) for an inpainting model.
    #[arg(long, requires = "init")]
    pub strength: Option<f64>,
    /// Repaint only where this picture is white (black keeps --init, grey
    /// blends); resized to the image if its size differs. An inpainting model
    /// (a UNet of 9 input channels, as SD-1.5-inpainting) needs it.
    #[arg(long, requires = "init")]
    pub mask: Option<PathBuf>,
    /// Feather the mask's edge by a Gaussian of this many pixels.
    #[arg(long, default_value_t = Start::DEFAULT_MASK_BLUR, requires = "mask")]
    pub mask_blur: f32,
}

impl StartArgs {
    /// The start these flags describe for `model` (the pictures read and
    /// checked), if any.
    pub fn start(&self, model: &PipelineConfig) -> Result<Option<Start>> {
        let Some(init) = &self.init else {
            return Ok(None);
        };
        let strength = self.strength.unwrap_or(Start::default_strength(model));
        let start = Start::open(init, strength)?;
        Ok(Some(match &self.mask {
            Some(mask) => start.with_mask(mask, self.mask_blur)?,
            None => start,
        }))
    }
}

/// What a started request does that the user did not say: the size it took
/// from the picture, a mask resized to it. One line each for stderr.
pub fn notes(request: &Request, model: &PipelineConfig) -> Vec<String> {
    let Some(start) = &request.start else {
        return Vec::new();
    };
    let factor = model.unet.downscale_factor() * model.sample_space().1;
    match request.size.map_or_else(|| start.size(factor), Ok) {
        Ok(size) => start.notes(size),
        Err(_) => Vec::new(), // refused by `Request::check` already
    }
}
