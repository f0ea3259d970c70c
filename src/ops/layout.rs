//! Data movement (wgsl/layout.wgsl): permute, narrow, concat, and row gathers
//! whose indices live on the GPU.
//!
//! Kernels move raw 32-bit words, so every op here is exact and works on f32
//! and u32 tensors alike. The UNet uses `concat` for skip connections
//! (`torch.cat([h, skip], dim=1)`) and `permute` around its transformers
//! (NCHW <-> [N, H*W, C]); CLIP uses `select_rows` for its pooled EOS token; the
//! search loop uses `broadcast_row_in_place` to copy the scorer's winner into
//! every candidate slot without reading anything back.

use crate::error::{Error, Result};
use crate::gpu::{Access, AdapterClass, Context, Dispatch, Launch};
use crate::gpu::{DType, Tensor};
use crate::ops::{expect_dtype, expect_shape, grid_1d, groups, LAYOUT};

mod slices;

pub use slices::{concat, copy_into, narrow};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    src_base: u32,
    dst_base: u32,
    split: u32,
    dims: [u32; 4],
    src_strides: [u32; 4],
    dst_strides: [u32; 4],
    tile_axes: [u32; 4],
    gather: [u32; 4],
    tail_strides: [u32; 4],
}

const WORKGROUP: usize = 256;
const TILE: usize = 32;

/// How a permute that moves the contiguous axis is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermuteVariant {
    /// One thread per output element gathering from the input: writes are
    /// contiguous, reads strided. Best on CPU adapters, whose caches absorb the
    /// strided reads and which pay dearly for barriers.
    Direct,
    /// 32×32 tiles through workgroup memory, so reads and writes both coalesce:
    /// the textbook GPU transpose.
    Tiled,
}

impl PermuteVariant {
    pub fn for_adapter(class: AdapterClass) -> Self {
        match class {
            AdapterClass::Cpu => PermuteVariant::Direct,
            AdapterClass::Gpu => PermuteVariant::Tiled,
        }
    }
}

/// A 4-D box copied between buffers: the element at coordinate c moves from
/// `src_base + c·src_strides` to `dst_base + c·dst_strides`.
struct Box4 {
    dims: [usize; 4],
    src_base: usize,
    src_strides: [usize; 4],
    dst_base: usize,
    dst_strides: [usize; 4],
}

impl Box4 {
    fn params(&self) -> Params {
        let u = |a: [usize; 4]| a.map(|v| v as u32);
        Params {
            n: self.dims.iter().product::<usize>() as u32,
            src_base: self.src_base as u32,
            dst_base: self.dst_base as u32,
            dims: u(self.dims),
            src_strides: u(self.src_strides),
            dst_strides: u(self.dst_strides),
            ..Params::default()
        }
    }

    /// The same copy in units of 4 words, when rows are contiguous on both sides
    /// and every base and stride is a multiple of 4.
    fn in_vec4s(&self) -> Option<Box4> {
        let fits = self.dims[3].is_multiple_of(4)
            && self.src_strides[3] == 1
            && self.dst_strides[3] == 1
            && [self.src_base, self.dst_base]
                .iter()
                .chain(&self.src_strides[..3])
                .chain(&self.dst_strides[..3])
                .all(|v| v.is_multiple_of(4));
        let quarter = |a: [usize; 4]| [a[0] / 4, a[1] / 4, a[2] / 4, 1];
        fits.then(|| Box4 {
            dims: [self.dims[0], self.dims[1], self.dims[2], self.dims[3] / 4],
            src_base: self.src_base / 4,
            src_strides: quarter(self.src_strides),
            dst_base: self.dst_base / 4,
            dst_strides: quarter(self.dst_strides),
        })
    }
}

/// `out = x.permute(dims).contiguous()`, the kernel variant chosen for the adapter.
pub fn permute(ctx: &Context, x: &Tensor, dims: &[usize], out: &Tensor) -> Result<Dispatch> {
    permute_with(ctx, x, dims, out, PermuteVariant::for_adapter(ctx.class))
}

/// [`permute`] with an explicit kernel variant (tests run both on any adapter).
/// Any rank whose permutation simplifies to at most 4 axes (size-1 axes dropped,
/// axes that stay neighbours merged), so `[N, C, H, W] -> [N, H, W, C]` is a
/// batched 2-D transpose of `[C, H*W]`.
pub fn permute_with(
    ctx: &Context,
    x: &Tensor,
    dims: &[usize],
    out: &Tensor,
    variant: PermuteVariant,
) -> Result<Dispatch> {
    const OP: &str = "permute";
    let rank = x.shape.len();
    let mut seen = vec![false; rank];
    if dims.len() != rank
        || dims
            .iter()
            .any(|&d| d >= rank || std::mem::replace(&mut seen[d], true))
    {
        return Err(Error::BadInput(format!(
            "{OP}: dims {dims:?} are not a permutation of x's {rank} axes (shape {:?})",
            x.shape
        )));
    }
    let permuted: Vec<usize> = dims.iter().map(|&d| x.shape[d]).collect();
    expect_shape(OP, "out", out, &permuted)?;
    expect_dtype(OP, "out", out, x.dtype)?;
    let (shape, perm) = simplify(&x.shape, dims);
    if shape.len() > 4 {
        return Err(Error::BadInput(format!(
            "{OP}: dims {dims:?} of shape {:?} need {} axes after merging; at most 4 are supported",
            x.shape,
            shape.len()
        )));
    }
    // Pad to 4 axes with leading size-1 axes that stay in place.
    let pad = 4 - shape.len();
    let shape: Vec<usize> = std::iter::repeat_n(1, pad).chain(shape).collect();
    let perm: [usize; 4] = std::array::from_fn(|k| if k < pad { k } else { perm[k - pad] + pad });
    let in_strides = contiguous_strides(&shape);
    let out_dims = perm.map(|p| shape[p]);
    let copy = Box4 {
        dims: out_dims,
        src_base: 0,
        src_strides: perm.map(|p| in_strides[p]),
        dst_base: 0,
        dst_strides: contiguous_strides(&out_dims),
    };
    match (variant, tile_axes(ctx, &perm, &out_dims)) {
        (PermuteVariant::Tiled, Some(axes)) => permute_tiled(ctx, x, out, &copy, axes),
        // Direct asked for, or nothing to transpose (the contiguous axis stays last).
        _ => strided_copy(ctx, x, out, &copy),
    }
}

/// Drop size-1 axes and merge axes that are neighbours in both input and
/// output: the same data movement over fewer, longer axes.
fn simplify(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = (0..shape.len()).filter(|&i| shape[i] != 1).collect();
    let mut shape: Vec<usize> = kept.iter().map(|&i| shape[i]).collect();
    let mut perm: Vec<usize> = perm
        .iter()
        .filter_map(|p| kept.iter().position(|k| k == p))
        .collect();
    let mut k = 0;
    while k + 1 < perm.len() {
        if perm[k + 1] == perm[k] + 1 {
            let i = perm[k];
            shape[i] *= shape.remove(i + 1);
            perm.remove(k + 1);
            perm.iter_mut().filter(|p| **p > i).for_each(|p| *p -= 1);
        } else {
            k += 1;
        }
    }
    (shape, perm)
}

/// The tiled kernel's axes (a, b, c): a is the output axis that is contiguous in
/// the input; b and c index workgroups along z. None when there is no transpose
/// or the grid would not fit the adapter's limits (the direct kernel then runs).
fn tile_axes(ctx: &Context, perm: &[usize; 4], out_dims: &[usize; 4]) -> Option<[usize; 3]> {
    let a = perm.iter().position(|&p| p == 3)?;
    if a == 3 {
        return None;
    }
    let mut rest = (0..3).filter(|&k| k != a);
    let (b, c) = (rest.next()?, rest.next()?);
    let max = ctx.limits().max_compute_workgroups_per_dimension as usize;
    let grid = [
        out_dims[3].div_ceil(TILE),
        out_dims[a].div_ceil(TILE),
        out_dims[b] * out_dims[c],
    ];
    grid.iter().all(|&g| g <= max).then_some([a, b, c])
}

fn permute_tiled(
    ctx: &Context,
    x: &Tensor,
    out: &Tensor,
    copy: &Box4,
    [a, b, c]: [usize; 3],
) -> Result<Dispatch> {
    let mut params = copy.params();
    params.tile_axes = [a as u32, b as u32, c as u32, 0];
    let d = copy.dims;
    let workgroups = [groups(d[3], TILE), groups(d[a], TILE), (d[b] * d[c]) as u32];
    launch(
        ctx,
        "permute_tiled",
        &[(x, Access::Read), (out, Access::ReadWrite)],
        &params,
        workgroups,
    )
}

fn strided_copy(ctx: &Context, src: &Tensor, dst: &Tensor, copy: &Box4) -> Result<Dispatch> {
    let (entry, params) = match copy.in_vec4s() {
        Some(wide) => ("strided_copy4", wide.params()),
        None => ("strided_copy", copy.params()),
    };
    let workgroups = grid_1d(groups(params.n as usize, WORKGROUP));
    let mut dispatch = launch(
        ctx,
        entry,
        &[(src, Access::Read), (dst, Access::ReadWrite)],
        &params,
        workgroups,
    )?;
    // `launch` counts the launch's elements, which are vec4s for strided_copy4.
    dispatch.bytes = 8 * copy.dims.iter().product::<usize>() as u64;
    Ok(dispatch)
}

/// `out = x[arange(B), index]`: row `index[b]` of each batch item, e.g. CLIP's
/// pooled output `last_hidden_state[arange(B), eos_positions]`.
/// x [B, L, ...], index [B] (u32, on the GPU), out [B, ...].
pub fn select_rows(ctx: &Context, x: &Tensor, index: &Tensor, out: &Tensor) -> Result<Dispatch> {
    const OP: &str = "select_rows";
    if x.shape.len() < 2 || x.shape[1] == 0 {
        return Err(Error::BadInput(format!(
            "{OP}: x has shape {:?}, expected [B, L, ...] with L >= 1",
            x.shape
        )));
    }
    let (b, l) = (x.shape[0], x.shape[1]);
    let row: usize = x.shape[2..].iter().product();
    expect_index(OP, index, &[b])?;
    let out_shape: Vec<usize> = [b]
        .into_iter()
        .chain(x.shape[2..].iter().copied())
        .collect();
    expect_shape(OP, "out", out, &out_shape)?;
    expect_dtype(OP, "out", out, x.dtype)?;
    gather_rows(ctx, x, index, out, [b, 1, row], [l * row, row], [1, 0], l)
}

/// `out[m] = x[index[0]]` for every m: one slot copied into all of out's slots,
/// with the slot chosen on the GPU (e.g. the scorer's argmax). x [K, ...],
/// index [1] (u32), out [M, ...]; M may differ from K.
pub fn broadcast_row(ctx: &Context, x: &Tensor, index: &Tensor, out: &Tensor) -> Result<Dispatch> {
    const OP: &str = "broadcast_row";
    let (k, row) = slots(OP, x)?;
    expect_index(OP, index, &[1])?;
    let (m, _) = slots(OP, out)?;
    if out.shape[1..] != x.shape[1..] {
        return Err(Error::BadInput(format!(
            "{OP}: out has shape {:?}, expected [M, {:?}]",
            out.shape,
            &x.shape[1..]
        )));
    }
    expect_dtype(OP, "out", out, x.dtype)?;
    gather_rows(ctx, x, index, out, [1, m, row], [0, row], [0, 0], k)
}

/// In place: `x[k] = x[index[0]]` for every slot k. The winning slot is only
/// read, so no scratch buffer is needed. x [K, ...], index [1] (u32).
pub fn broadcast_row_in_place(ctx: &Context, x: &Tensor, index: &Tensor) -> Result<Dispatch> {
    const OP: &str = "broadcast_row_in_place";
    let (k, row) = slots(OP, x)?;
    expect_index(OP, index, &[1])?;
    let params = Params {
        n: (k * row) as u32,
        dims: [1, 1, k as u32, row as u32],
        ..Params::default()
    };
    let workgroups = grid_1d(groups(k * row, WORKGROUP));
    // Binding 1 carries the index, binding 2 the slots (see the shader).
    launch(
        ctx,
        "broadcast_row_in_place",
        &[(index, Access::Read), (x, Access::ReadWrite)],
        &params,
        workgroups,
    )
}

/// The gather kernel over [1, B, K, D]: out[b, k] = x[b, index[b*is[0] + k*is[1]]],
/// with x's batch and row strides `src` and `rows` rows per batch item.
#[allow(clippy::too_many_arguments)]
fn gather_rows(
    ctx: &Context,
    x: &Tensor,
    index: &Tensor,
    out: &Tensor,
    [b, k, d]: [usize; 3],
    [batch_stride, row_stride]: [usize; 2],
    index_strides: [usize; 2],
    rows: usize,
) -> Result<Dispatch> {
    let copy = Box4 {
        dims: [1, b, k, d],
        src_base: 0,
        src_strides: [0, batch_stride, row_stride, 1],
        dst_base: 0,
        dst_strides: [0, k * d, d, 1],
    };
    let mut params = copy.params();
    params.gather = [
        index_strides[0] as u32,
        index_strides[1] as u32,
        rows as u32,
        0,
    ];
    let workgroups = grid_1d(groups(params.n as usize, WORKGROUP));
    launch(
        ctx,
        "gather_rows",
        &[
            (x, Access::Read),
            (out, Access::ReadWrite),
            (index, Access::Read),
        ],
        &params,
        workgroups,
    )
}

/// A tensor seen as K slots of equal rows: [K, ...] -> (K, row length).
fn slots(op: &str, t: &Tensor) -> Result<(usize, usize)> {
    match t.shape.split_first() {
        Some((&k, rest)) if k > 0 => Ok((k, rest.iter().product())),
        _ => Err(Error::BadInput(format!(
            "{op}: shape {:?} has no slots to copy between",
            t.shape
        ))),
    }
}

fn expect_index(op: &str, index: &Tensor, shape: &[usize]) -> Result<()> {
    expect_dtype(op, "index", index, DType::U32)?;
    expect_shape(op, "index", index, shape)
}

fn contiguous_strides(shape: &[usize]) -> [usize; 4] {
    let mut strides = [0; 4];
    let mut s = 1;
    for i in (0..4).rev() {
        strides[i] = s;
        s *= shape[i];
    }
    strides
}

fn launch(
    ctx: &Context,
    entry: &str,
    tensors: &[(&Tensor, Access)],
    params: &Params,
    workgroups: [u32; 3],
) -> Result<Dispatch> {
    Launch {
        shader: &LAYOUT,
        entry,
        constants: &[],
        tensors,
        workgroups,
        flops: 0,
        bytes: 8 * params.n as u64,
    }
    .build(ctx, params)
}

#[cfg(test)]
mod tests {
    use super::simplify;

    #[test]
    fn simplify_drops_unit_axes_and_merges_neighbours() {
        // NCHW -> NHWC is a batched transpose of [C, H*W].
        assert_eq!(
            simplify(&[2, 3, 4, 5], &[0, 2, 3, 1]),
            (vec![2, 3, 20], vec![0, 2, 1])
        );
        // The identity collapses to one axis.
        assert_eq!(simplify(&[2, 3, 4], &[0, 1, 2]), (vec![24], vec![0]));
        // Size-1 axes vanish.
        assert_eq!(
            simplify(&[1, 3, 1, 5], &[3, 2, 1, 0]),
            (vec![3, 5], vec![1, 0])
        );
        assert_eq!(simplify(&[1, 1], &[1, 0]), (vec![], vec![]));
    }
}
