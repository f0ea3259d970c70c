//! Resampling of NCHW tensors (wgsl/resample.wgsl): the UNet's `Upsample2D`
//! (nearest ×2), the upscaler's pixel shuffle and nearest ×4 residual, bilinear
//! resize to feed the scorer, and 2×2 average pooling.
//!
//! All four are gathers with one thread per output element, coalesced on every
//! adapter and free of barriers, so there is one kernel variant for both
//! adapter classes (nothing to tile: each input element is read at most a few times).

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::gpu::{Access, Context, Dispatch, Launch};
use crate::ops::{expect_activations, expect_shape, grid_1d, groups, RESAMPLE};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    factor: u32,
    scale_h: f32,
    scale_w: f32,
}

const WORKGROUP: usize = 256;

/// `F.interpolate(x, scale_factor=factor, mode="nearest")`:
/// x [N, C, H, W] -> out [N, C, H*factor, W*factor].
pub fn upsample_nearest2d(
    ctx: &Context,
    x: &Tensor,
    out: &Tensor,
    factor: usize,
) -> Result<Dispatch> {
    const OP: &str = "upsample_nearest2d";
    let [n, c, h, w] = nchw(OP, "x", x)?;
    positive(OP, "factor", factor)?;
    expect_shape(OP, "out", out, &[n, c, h * factor, w * factor])?;
    let params = params(x, out, factor);
    launch(ctx, "upsample_nearest2d", x, out, &params, 0)
}

/// `torch.nn.PixelShuffle(r)`: x [N, C*r², H, W] -> out [N, C, H*r, W*r].
pub fn pixel_shuffle(ctx: &Context, x: &Tensor, out: &Tensor, r: usize) -> Result<Dispatch> {
    const OP: &str = "pixel_shuffle";
    let [n, cr2, h, w] = nchw(OP, "x", x)?;
    positive(OP, "upscale_factor", r)?;
    if cr2 % (r * r) != 0 {
        return Err(Error::BadInput(format!(
            "{OP}: x has {cr2} channels, not a multiple of r² = {}",
            r * r
        )));
    }
    expect_shape(OP, "out", out, &[n, cr2 / (r * r), h * r, w * r])?;
    let params = params(x, out, r);
    launch(ctx, "pixel_shuffle", x, out, &params, 0)
}

/// `F.interpolate(x, size=(Ho, Wo), mode="bilinear", align_corners=False,
/// antialias=False)`, the size taken from `out` [N, C, Ho, Wo]. Up or down, any
/// ratio. Downscaling without antialias aliases, as PyTorch's default does.
pub fn interpolate_bilinear(ctx: &Context, x: &Tensor, out: &Tensor) -> Result<Dispatch> {
    const OP: &str = "interpolate_bilinear";
    let [n, c, h, w] = nchw(OP, "x", x)?;
    let [_, _, ho, wo] = nchw(OP, "out", out)?;
    expect_shape(OP, "out", out, &[n, c, ho, wo])?;
    let mut params = params(x, out, 1);
    // PyTorch's `area_pixel_compute_scale`: (float)in / out, rounded once in f32.
    params.scale_h = h as f32 / ho as f32;
    params.scale_w = w as f32 / wo as f32;
    launch(ctx, "upsample_bilinear2d", x, out, &params, 8)
}

/// `F.avg_pool2d(x, 2)`: x [N, C, H, W] -> out [N, C, H/2, W/2] (floor).
pub fn avg_pool2d(ctx: &Context, x: &Tensor, out: &Tensor) -> Result<Dispatch> {
    const OP: &str = "avg_pool2d";
    let [n, c, h, w] = nchw(OP, "x", x)?;
    if h < 2 || w < 2 {
        return Err(Error::BadInput(format!(
            "{OP}: x is {h}×{w}, smaller than the 2×2 kernel"
        )));
    }
    expect_shape(OP, "out", out, &[n, c, h / 2, w / 2])?;
    let params = params(x, out, 2);
    launch(ctx, "avg_pool2d", x, out, &params, 4)
}

/// A 4-D tensor's dims, or an error naming the op and the tensor.
fn nchw(op: &str, what: &str, t: &Tensor) -> Result<[usize; 4]> {
    t.shape.as_slice().try_into().map_err(|_| {
        Error::BadInput(format!(
            "{op}: {what} has shape {:?}, expected [N, C, H, W]",
            t.shape
        ))
    })
}

fn positive(op: &str, what: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::BadInput(format!("{op}: {what} must be at least 1")));
    }
    Ok(())
}

fn params(x: &Tensor, out: &Tensor, factor: usize) -> Params {
    Params {
        n: out.numel() as u32,
        h: x.dim(-2) as u32,
        w: x.dim(-1) as u32,
        ho: out.dim(-2) as u32,
        wo: out.dim(-1) as u32,
        factor: factor as u32,
        scale_h: 1.0,
        scale_w: 1.0,
    }
}

fn launch(
    ctx: &Context,
    entry: &str,
    x: &Tensor,
    out: &Tensor,
    params: &Params,
    flops_per_output: u64,
) -> Result<Dispatch> {
    expect_activations(entry, x, &[("out", out)])?;
    let n = out.numel();
    Launch {
        shader: &RESAMPLE,
        entry,
        constants: &[],
        tensors: &[(x, Access::Read), (out, Access::ReadWrite)],
        workgroups: grid_1d(groups(n, WORKGROUP)),
        flops: flops_per_output * n as u64,
        bytes: (x.bytes() + out.bytes()),
    }
    .build(ctx, params)
}
