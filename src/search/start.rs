//! Step 1 of the loop, the start: static from Philox for a run from noise, or
//! a picture (`request::start`) noised to the run's first step, every
//! candidate with its own draw (img2img); with a mask, the kept region is
//! pulled back to the picture after every step (inpainting), or a dedicated
//! inpainting UNet reads the mask and the masked picture as extra channels.

use crate::error::Result;
use crate::gpu::{Context, DType, Dispatch, Tensor};
use crate::models::pipeline::Pipeline;
use crate::models::Graph;
use crate::ops::noise::{self, NoiseKey};
use crate::ops::{layout, sampler};
use crate::request::start::Masking;
use crate::request::{Request, Settings};

use super::passes::Candidates;

/// Noise streams: independent draws sharing (seed, candidate, step).
pub(super) const STREAM_START: u32 = 0;

/// The start of a run, planned once with the rest of the plan.
pub(crate) struct Start {
    /// In order: the picture's encoding, the noise draw, the start itself (and
    /// a dedicated inpainting UNet's extra channels).
    pub dispatches: Vec<Dispatch>,
    /// Index of the noise draw in `dispatches`, reseeded per run.
    draw: usize,
    picture: Option<Picture>,
}

/// A start picture's tensors.
struct Picture {
    /// `[1, 3, H, W]` in [-1, 1], written per run.
    pixels: Tensor,
    /// `[1, C, h, w]`: what the UNet samples of it (the VAE's latents, or the pixels).
    samples: Tensor,
    /// `[K, C, h, w]`: every candidate's start noise (unit variance).
    noise: Tensor,
    /// What the mask needs, written per run.
    mask: Mask,
}

/// A start's mask on the GPU (see [`Masking`]).
enum Mask {
    None,
    /// `[1, C, h, w]`, 1 repaints.
    Keep(Tensor),
    /// The masked picture `[1, 3, H, W]` and the extra channels `[1, 1 + C, h, w]`
    /// (the mask, then the masked picture's latents, which the plan fills).
    Condition {
        pixels: Tensor,
        extra: Tensor,
    },
}

impl Start {
    /// Plan the start of `cands` (the state, the largest K) for a run of `s`,
    /// the VAE encoder's activations in `precision` (the memory plan's).
    pub fn plan(
        ctx: &Context,
        pipeline: &Pipeline,
        s: &Settings,
        (cands, precision): (&Candidates, DType),
    ) -> Result<Self> {
        let key = NoiseKey {
            seed: 0, // set per run (see `Start::load`)
            candidate: 0,
            step: 0,
            stream: STREAM_START,
        };
        let Some(start) = &s.start else {
            let draw = noise::gaussian(ctx, &cands.x, key, s.init_noise_sigma)?;
            return Ok(Self {
                dispatches: vec![draw],
                draw: 0,
                picture: None,
            });
        };
        // The inputs and what every step reads outlive the graph: tensors of their own.
        let pixels = Tensor::zeros(ctx, "start pixels", &[1, 3, s.height, s.width])?;
        let mut g = Graph::new(ctx, "start");
        g.set_precision(precision);
        let samples = encode(ctx, pipeline, &mut g, &pixels)?; // [1, C, h, w]
        let noise = Tensor::zeros(ctx, "start noise", &cands.x.shape)?;
        let draw = g.dispatches.len();
        g.push(noise::gaussian(ctx, &noise, key, 1.0)?);
        let level = start.levels[0];
        g.push(sampler::add_noise(
            ctx, &samples, &noise, level, &cands.x, &cands.x0,
        )?);
        let mask = match start.masking {
            Masking::None => Mask::None,
            Masking::Keep => Mask::Keep(Tensor::zeros(ctx, "mask", &samples.shape)?),
            Masking::Condition => condition(ctx, (pipeline, &mut g), &pixels, cands)?,
        };
        g.make_buffers();
        Ok(Self {
            dispatches: g.dispatches,
            draw,
            picture: Some(Picture {
                pixels,
                samples,
                noise,
                mask,
            }),
        })
    }

    /// Inpainting's pull-back after step `step` of `cands` (a phase's K), if
    /// the run's mask pulls back.
    pub fn keep(
        &self,
        ctx: &Context,
        s: &Settings,
        cands: &Candidates,
        step: usize,
    ) -> Result<Option<Dispatch>> {
        let (Some(p), Some(start)) = (&self.picture, &s.start) else {
            return Ok(None);
        };
        let Mask::Keep(mask) = &p.mask else {
            return Ok(None);
        };
        let noise = p.noise.prefix(&cands.x.shape)?;
        let level = start.levels[step + 1];
        let keep = sampler::keep(ctx, &p.samples, &noise, mask, level, (&cands.x, &cands.x0))?;
        Ok(Some(keep))
    }

    /// Write a run's inputs: the seed, and the picture and mask at the run's size.
    pub fn load(&self, ctx: &Context, request: &Request, s: &Settings) -> Result<()> {
        noise::set_seed(ctx, &self.dispatches[self.draw], request.seed);
        let (Some(p), Some(start)) = (&self.picture, &request.start) else {
            return Ok(());
        };
        let size = (s.width, s.height);
        p.pixels.write(ctx, &start.pixels(size))?;
        match &p.mask {
            Mask::None => {}
            Mask::Keep(mask) => {
                if let Some(values) = start.mask_samples(size, s.sample) {
                    mask.write(ctx, &values)?;
                }
            }
            Mask::Condition { pixels, extra } => {
                if let Some((masked, small)) = start.conditioning(size, s.sample) {
                    pixels.write(ctx, &masked)?;
                    extra.head(small.len())?.write(ctx, &small)?;
                }
            }
        }
        Ok(())
    }
}

/// What the UNet samples of `pixels` `[1, 3, H, W]`: the VAE's latents
/// `[1, C, h, w]` (a latent model), or the pixels themselves.
fn encode(ctx: &Context, pipeline: &Pipeline, g: &mut Graph, pixels: &Tensor) -> Result<Tensor> {
    match pipeline.vae_encoder(ctx)? {
        Some(encoder) => encoder
            .encode(g, pixels)
            .map_err(|e| e.advise("an activation of the VAE encoder: a smaller --size needs less")),
        None => Ok(pixels.clone()),
    }
}

/// A dedicated inpainting UNet's extra channels, as diffusers'
/// `prepare_mask_latents`: the masked picture (shaped as the start's `pixels`)
/// encoded like the start, after the mask in `extra` `[1, 1 + C, h, w]`,
/// copied once into the last `1 + C` channels of every item of the UNet's
/// input (the unconditional half of guidance and every candidate alike;
/// `prepare` writes only the first `C`).
fn condition(
    ctx: &Context,
    (pipeline, g): (&Pipeline, &mut Graph),
    pixels: &Tensor,
    cands: &Candidates,
) -> Result<Mask> {
    let masked = Tensor::zeros(ctx, "masked pixels", &pixels.shape)?;
    let latents = encode(ctx, pipeline, g, &masked)?; // [1, C, h, w]
    let mut shape = latents.shape.clone();
    shape[1] += 1;
    let extra = Tensor::zeros(ctx, "inpainting channels", &shape)?; // [1, 1 + C, h, w]
    g.push(layout::copy_into(ctx, &latents, &extra, 1, 1)?);
    g.push(sampler::condition(ctx, &extra, &cands.model_in)?);
    Ok(Mask::Condition {
        pixels: masked,
        extra,
    })
}
