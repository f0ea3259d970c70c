//! Image conversions (wgsl/image.wgsl): clamp + per-channel normalisation
//! between the denoiser's range, the scorer's CLIP normalisation and the
//! upscaler's [0, 1]; packing the final image into RGBA8 for the one readback.

use crate::error::{Error, Result};
use crate::gpu::{Access, Context, Dispatch, Launch};
use crate::gpu::{DType, Tensor};
use crate::ops::{expect_shape, grid_1d, groups, IMAGE};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    channels: u32,
    spatial: u32,
    item: u32,
    scale: f32,
    bias: f32,
    lo: f32,
    hi: f32,
    mean: [f32; 4],
    std: [f32; 4],
}

/// `out = (clamp(x·scale + bias, lo, hi) − mean[c]) / std[c]` on `[N, C ≤ 4, H, W]`.
#[derive(Clone, Copy, Debug)]
pub struct Normalize {
    pub scale: f32,
    pub bias: f32,
    pub lo: f32,
    pub hi: f32,
    pub mean: [f32; 4],
    pub std: [f32; 4],
}

impl Normalize {
    /// [-1, 1] → [0, 1], clamped: the denoiser's range to an image's.
    pub const TO_UNIT: Normalize = Normalize {
        scale: 0.5,
        bias: 0.5,
        lo: 0.0,
        hi: 1.0,
        mean: [0.0; 4],
        std: [1.0; 4],
    };

    /// [-1, 1] → [0, 1] → CLIP's `(v − mean) / std`.
    pub fn clip(mean: [f32; 3], std: [f32; 3]) -> Self {
        Normalize {
            mean: [mean[0], mean[1], mean[2], 0.0],
            std: [std[0], std[1], std[2], 1.0],
            ..Self::TO_UNIT
        }
    }
}

const WORKGROUP: usize = 256;

fn params(x: &Tensor, item: usize, n: &Normalize) -> Params {
    Params {
        n: x.numel() as u32,
        channels: x.shape[1] as u32,
        spatial: (x.dim(-1) * x.dim(-2)) as u32,
        item: item as u32,
        scale: n.scale,
        bias: n.bias,
        lo: n.lo,
        hi: n.hi,
        mean: n.mean,
        std: n.std,
    }
}

fn expect_nchw(op: &str, x: &Tensor, max_channels: usize) -> Result<()> {
    if x.shape.len() != 4 || x.shape[1] == 0 || x.shape[1] > max_channels {
        return Err(Error::BadInput(format!(
            "{op}: x has shape {:?}, expected [N, C <= {max_channels}, H, W]",
            x.shape
        )));
    }
    Ok(())
}

pub fn normalize(ctx: &Context, x: &Tensor, out: &Tensor, n: &Normalize) -> Result<Dispatch> {
    expect_nchw("normalize", x, 4)?;
    expect_shape("normalize", "out", out, &x.shape)?;
    let count = x.numel();
    Launch {
        shader: &IMAGE,
        entry: "normalize",
        constants: &[],
        tensors: &[(x, Access::Read), (out, Access::ReadWrite)],
        workgroups: grid_1d(groups(count, WORKGROUP)),
        flops: 5 * count as u64,
        bytes: 8 * count as u64,
    }
    .build(ctx, &params(x, 0, n))
}

/// Batch item `item` of `x` `[N, 3, H, W]` in [0, 1] → `pixels` `[H, W]` (u32 RGBA8).
pub fn to_rgba8(ctx: &Context, x: &Tensor, item: usize, pixels: &Tensor) -> Result<Dispatch> {
    expect_nchw("to_rgba8", x, 3)?;
    if x.shape[1] != 3 || item >= x.shape[0] {
        return Err(Error::BadInput(format!(
            "to_rgba8: item {item} of an image batch of shape {:?} (needs 3 channels)",
            x.shape
        )));
    }
    expect_shape("to_rgba8", "pixels", pixels, &[x.dim(-2), x.dim(-1)])?;
    if pixels.dtype != DType::U32 {
        return Err(Error::BadInput(
            "to_rgba8: pixels must be a u32 tensor".into(),
        ));
    }
    let spatial = pixels.numel();
    Launch {
        shader: &IMAGE,
        entry: "to_rgba8",
        constants: &[],
        tensors: &[(x, Access::Read), (pixels, Access::ReadWrite)],
        workgroups: grid_1d(groups(spatial, WORKGROUP)),
        flops: 9 * spatial as u64,
        bytes: 16 * spatial as u64,
    }
    .build(ctx, &params(x, item, &Normalize::TO_UNIT))
}
