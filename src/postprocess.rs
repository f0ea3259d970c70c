//! Post-processing, the loop's last stage on the GPU: the winner's predicted
//! clean sample → its image (VAE-decoded for a latent model) → [0, 1] → the
//! learned upscaler → RGBA8 words, ready for the one readback.

use crate::error::Result;
use crate::gpu::{Context, DType, Dispatch, Tensor};
use crate::memory_plan::MemoryPlan;
use crate::models::arena::SharedArena;
use crate::models::pipeline::Pipeline;
use crate::models::Graph;
use crate::ops::finite;
use crate::ops::image::{self, Normalize};
use crate::ops::{layout, resample};

/// The planned post-processing of a run.
pub struct Post {
    pub dispatches: Vec<Dispatch>,
    /// `[height, width]` u32: RGBA8 pixels, one word each.
    pub pixels: Tensor,
    pub width: usize,
    pub height: usize,
}

/// Plan the post-processing of candidate 0 of `x0` `[K, C, h, w]` (where the
/// last round's winner is) into an image of `[h, w]` pixels before upscaling
/// by `upscale` (checked against the model by `Request::check`). `check`: the
/// NaN/Inf guard's code and status word for the final image; `memory`: the
/// request's memory plan (the VAE's tiles, the decoder's precision); `arena`:
/// the run's, shared by its graphs.
pub fn plan(
    ctx: &Context,
    pipeline: &Pipeline,
    x0: &Tensor,
    upscale: usize,
    [h, w]: [usize; 2],
    (code, status): (u32, &Tensor),
    (memory, arena): (&MemoryPlan, &SharedArena),
) -> Result<Post> {
    let mut g = Graph::in_arena(ctx, "post", arena);
    g.set_precision(memory.precision);
    let mut shape = x0.shape.clone();
    shape[0] = 1;
    let winner = g.tensor(&shape)?;
    g.push(layout::narrow(ctx, x0, 0, 0, &winner)?);
    let winner = pipeline
        .to_image(&mut g, winner, memory.vae_tiling)
        .map_err(|e| {
            let hint = crate::memory_plan::f16_hint(ctx, memory.precision);
            e.advise(&format!(
                "an activation of the VAE decoder: --vae-tiles decodes in tiles; a smaller --size \
             needs less{hint}"
            ))
        })?;
    let unit = g.tensor(&[1, 3, h, w])?;
    g.push(image::normalize(ctx, &winner, &unit, &Normalize::TO_UNIT)?);
    let img = upscaled(&mut g, pipeline, unit, upscale).map_err(|e| {
        e.advise("an activation of the upscaler: a smaller --upscale or --size needs less")
    })?;
    // to_rgba8 would turn NaN into black pixels: the guard sees it first.
    g.push(finite::check_finite(ctx, &img, code, status)?);
    let (height, width) = (img.dim(-2), img.dim(-1));
    let mut pixels = g.tensor(&[height, width])?;
    pixels.dtype = DType::U32;
    // to_rgba8 clamps to [0, 1] before rounding.
    g.push(image::to_rgba8(ctx, &img, 0, &pixels)?);
    Ok(Post {
        dispatches: g.dispatches,
        pixels,
        width,
        height,
    })
}

/// `img` `[1, 3, h, w]` in [0, 1] through the learned upscaler: its own
/// factor, or x2 from an x4 upscaler by 2x2 average pooling.
fn upscaled(g: &mut Graph, pipeline: &Pipeline, img: Tensor, upscale: usize) -> Result<Tensor> {
    if upscale == 1 {
        return Ok(img);
    }
    let upscaler = pipeline
        .upscaler
        .as_ref()
        .expect("checked by Request::check");
    let up = upscaler.forward(g, &img)?;
    if upscale == upscaler.config.upscale {
        return Ok(up);
    }
    // Request::check allows only x2 from x4 here.
    let (h, w) = (img.dim(-2), img.dim(-1));
    let pooled = g.tensor(&[1, 3, 2 * h, 2 * w])?;
    g.push(resample::avg_pool2d(g.ctx, &up, &pooled)?);
    Ok(pooled)
}
