//! Step 1 of the loop, the start: static from Philox for a run from noise, or
//! a picture (`request::start`) noised to the run's first step, every
//! candidate with its own draw (img2img); with a mask, the kept region is
//! pulled back to the picture after every step (inpainting).

use crate::error::Result;
use crate::gpu::{Context, Dispatch, Tensor};
use crate::models::pipeline::Pipeline;
use crate::models::Graph;
use crate::ops::noise::{self, NoiseKey};
use crate::ops::sampler;
use crate::request::{Request, Settings};

use super::passes::Candidates;

/// Noise streams: independent draws sharing (seed, candidate, step).
pub(super) const STREAM_START: u32 = 0;

/// The start of a run, planned once with the rest of the plan.
pub(crate) struct Start {
    /// In order: the picture's encoding, the noise draw, the start itself.
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
    /// `[1, C, h, w]`, 1 repaints, written per run.
    mask: Option<Tensor>,
}

impl Start {
    /// Plan the start of `cands` (the state, the largest K) for a run of `s`.
    pub fn plan(
        ctx: &Context,
        pipeline: &Pipeline,
        s: &Settings,
        cands: &Candidates,
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
        let samples = match pipeline.vae_encoder(ctx)? {
            Some(encoder) => encoder.encode(&mut g, &pixels).map_err(|e| {
                e.advise("an activation of the VAE encoder: a smaller --size needs less")
            })?,
            None => pixels.clone(),
        }; // [1, C, h, w]
        let noise = Tensor::zeros(ctx, "start noise", &cands.x.shape)?;
        let draw = g.dispatches.len();
        g.push(noise::gaussian(ctx, &noise, key, 1.0)?);
        let level = start.levels[0];
        g.push(sampler::add_noise(
            ctx, &samples, &noise, level, &cands.x, &cands.x0,
        )?);
        let mask = match start.masked {
            true => Some(Tensor::zeros(ctx, "mask", &samples.shape)?),
            false => None,
        };
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
    /// the run has a mask.
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
        let Some(mask) = &p.mask else {
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
        if let (Some(mask), Some(values)) = (&p.mask, start.mask_samples(size, s.sample)) {
            mask.write(ctx, &values)?;
        }
        Ok(())
    }
}
