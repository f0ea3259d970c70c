//! Blending decoded tiles into one image (wgsl/blend.wgsl), for the VAE's tiled
//! decode (src/models/vae_tiles.rs): [`clear`] the image and its weight sums,
//! [`accumulate`] each tile with linear ramps across its overlaps, then
//! [`normalize`]. Overlapping tiles cross-fade; a pixel one tile covers keeps
//! its value (up to the rounding of `w·x / w`).

use crate::error::{Error, Result};
use crate::gpu::{Access, Context, Dispatch, Launch, Tensor};
use crate::ops::{expect_shape, grid_1d, groups, BLEND};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    th: u32,
    tw: u32,
    y0: u32,
    x0: u32,
    ramps: [u32; 4],
}

const WORKGROUP: usize = 256;

/// Where a tile goes: its first pixel's `(y0, x0)` in the image, and the
/// lengths in pixels of its weight's ramps at the top, bottom, left and right
/// (0: none, the side is the image's border).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub at: [usize; 2],
    pub ramps: [usize; 4],
}

/// `image = 0; weight = 0`: image `[N, C, H, W]`, weight `[H, W]`.
pub fn clear(ctx: &Context, image: &Tensor, weight: &Tensor) -> Result<Dispatch> {
    let params = params("clear", image, weight)?;
    launch(ctx, "clear", image, weight, None, &params, image.numel())
}

/// `image[.., y0.., x0..] += w · tile; weight[y0.., x0..] += w` with `w` the
/// tile's ramped weight (see [`Placement`]): tile `[N, C, th, tw]`.
pub fn accumulate(
    ctx: &Context,
    tile: &Tensor,
    image: &Tensor,
    weight: &Tensor,
    place: Placement,
) -> Result<Dispatch> {
    const OP: &str = "blend accumulate";
    let mut params = params(OP, image, weight)?;
    let [_, _, th, tw] = nchw(OP, "tile", tile)?;
    expect_shape(
        OP,
        "tile",
        tile,
        &[params.n as usize, params.c as usize, th, tw],
    )?;
    let [y0, x0] = place.at;
    let [top, bottom, left, right] = place.ramps;
    if y0 + th > params.h as usize
        || x0 + tw > params.w as usize
        || top + bottom > th
        || left + right > tw
    {
        return Err(Error::BadInput(format!(
            "{OP}: tile {:?} at ({y0}, {x0}) with ramps {:?} does not fit image {:?}",
            tile.shape, place.ramps, image.shape
        )));
    }
    let u = |v: usize| v as u32;
    (params.th, params.tw, params.y0, params.x0) = (u(th), u(tw), u(y0), u(x0));
    params.ramps = place.ramps.map(u);
    launch(
        ctx,
        "accumulate",
        image,
        weight,
        Some(tile),
        &params,
        th * tw,
    )
}

/// `image /= weight` (broadcast over N and C).
pub fn normalize(ctx: &Context, image: &Tensor, weight: &Tensor) -> Result<Dispatch> {
    let params = params("blend normalize", image, weight)?;
    launch(
        ctx,
        "normalize",
        image,
        weight,
        None,
        &params,
        image.numel(),
    )
}

fn params(op: &str, image: &Tensor, weight: &Tensor) -> Result<Params> {
    let [n, c, h, w] = nchw(op, "image", image)?;
    expect_shape(op, "weight", weight, &[h, w])?;
    let u = |v: usize| v as u32;
    Ok(Params {
        n: u(n),
        c: u(c),
        h: u(h),
        w: u(w),
        th: 0,
        tw: 0,
        y0: 0,
        x0: 0,
        ramps: [0; 4],
    })
}

fn nchw(op: &str, what: &str, t: &Tensor) -> Result<[usize; 4]> {
    t.shape[..].try_into().map_err(|_| {
        Error::BadInput(format!(
            "{op}: {what} has shape {:?}, expected [N, C, H, W]",
            t.shape
        ))
    })
}

fn launch(
    ctx: &Context,
    entry: &str,
    image: &Tensor,
    weight: &Tensor,
    tile: Option<&Tensor>,
    params: &Params,
    invocations: usize,
) -> Result<Dispatch> {
    let mut tensors = vec![(image, Access::ReadWrite), (weight, Access::ReadWrite)];
    tensors.extend(tile.map(|t| (t, Access::Read)));
    let bytes = tensors.iter().map(|(t, _)| t.bytes()).sum();
    Launch {
        shader: &BLEND,
        entry,
        constants: &[],
        tensors: &tensors,
        workgroups: grid_1d(groups(invocations, WORKGROUP)),
        flops: 2 * invocations as u64,
        bytes,
    }
    .build(ctx, params)
}
