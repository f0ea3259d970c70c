//! Slices along one axis: `narrow`, `copy_into` and `concat`, whose two-input
//! case (the UNet's skip connections) is a single launch.

use super::{launch, strided_copy, Box4, Params, WORKGROUP};
use crate::error::{Error, Result};
use crate::gpu::{Access, Context, Dispatch, Tensor};
use crate::ops::{expect_dtype, grid_1d, groups};

/// `out.copy_(x.narrow(dim, start, out.shape[dim]))`: a slice of x along one axis
/// (e.g. `chunk` for GEGLU's two halves).
pub fn narrow(
    ctx: &Context,
    x: &Tensor,
    dim: usize,
    start: usize,
    out: &Tensor,
) -> Result<Dispatch> {
    let len = out.shape.get(dim).copied().unwrap_or(0);
    slice_copy(ctx, "narrow", x, start, out, 0, dim, len)
}

/// `out.narrow(dim, start, x.shape[dim]).copy_(x)`: write x into a slice of out.
pub fn copy_into(
    ctx: &Context,
    x: &Tensor,
    out: &Tensor,
    dim: usize,
    start: usize,
) -> Result<Dispatch> {
    let len = x.shape.get(dim).copied().unwrap_or(0);
    slice_copy(ctx, "copy_into", x, 0, out, start, dim, len)
}

/// `torch.cat(xs, dim)` into `out`. Two inputs (the UNet's skip connections,
/// `torch.cat([h, skip], dim=1)`) are one launch; more are one copy per input,
/// to be run in order (they write disjoint slices, so any order gives the same
/// result).
pub fn concat(ctx: &Context, xs: &[&Tensor], dim: usize, out: &Tensor) -> Result<Vec<Dispatch>> {
    let total: usize = xs
        .iter()
        .map(|x| x.shape.get(dim).copied().unwrap_or(0))
        .sum();
    if out.shape.get(dim) != Some(&total) {
        return Err(Error::BadInput(format!(
            "concat: inputs add up to {total} along dim {dim}, but out has shape {:?}",
            out.shape
        )));
    }
    if let [head, tail] = xs {
        return Ok(vec![concat_pair(ctx, head, tail, dim, out)?]);
    }
    let mut start = 0;
    xs.iter()
        .map(|x| {
            let d = slice_copy(ctx, "concat", x, 0, out, start, dim, x.shape[dim])?;
            start += x.shape[dim];
            Ok(d)
        })
        .collect()
}

/// `torch.cat([head, tail], dim)`: out's rows along `dim` read head below the
/// split and tail from it, so out is written once, contiguously, in one launch
/// (in units of 4 words where each row along `dim` is a whole number of them).
fn concat_pair(
    ctx: &Context,
    head: &Tensor,
    tail: &Tensor,
    dim: usize,
    out: &Tensor,
) -> Result<Dispatch> {
    let len = |x: &Tensor| x.shape.get(dim).copied().unwrap_or(0);
    let split = len(head);
    let (outer, inner) = check_slice("concat", head, 0, out, 0, dim, split)?;
    check_slice("concat", tail, 0, out, split, dim, len(tail))?;
    let (entry, unit) = match inner.is_multiple_of(4) {
        true => ("concat_pair4", 4),
        false => ("concat_pair", 1),
    };
    let row = inner / unit;
    let strides = |len: usize| [0, (len * row) as u32, row as u32, 1];
    let total = out.shape[dim];
    let params = Params {
        n: (outer * total * row) as u32,
        split: split as u32,
        dims: [1, outer as u32, total as u32, row as u32],
        src_strides: strides(split),
        tail_strides: strides(len(tail)),
        ..Params::default()
    };
    let workgroups = grid_1d(groups(params.n as usize, WORKGROUP));
    let tensors = [
        (head, Access::Read),
        (out, Access::ReadWrite),
        (tail, Access::Read),
    ];
    let mut dispatch = launch(ctx, entry, &tensors, &params, workgroups)?;
    // `launch` counts the launch's elements, which are vec4s for concat_pair4.
    dispatch.bytes = 8 * (outer * total * inner) as u64;
    Ok(dispatch)
}

/// Copy `len` entries along `dim` from `src[.., src_start.., ..]` to
/// `dst[.., dst_start.., ..]`, both viewed as [outer, dim, inner].
#[allow(clippy::too_many_arguments)]
fn slice_copy(
    ctx: &Context,
    op: &str,
    src: &Tensor,
    src_start: usize,
    dst: &Tensor,
    dst_start: usize,
    dim: usize,
    len: usize,
) -> Result<Dispatch> {
    let (outer, inner) = check_slice(op, src, src_start, dst, dst_start, dim, len)?;
    let (src_dim, dst_dim) = (src.shape[dim], dst.shape[dim]);
    let copy = Box4 {
        dims: [1, outer, len, inner],
        src_base: src_start * inner,
        src_strides: [0, src_dim * inner, inner, 1],
        dst_base: dst_start * inner,
        dst_strides: [0, dst_dim * inner, inner, 1],
    };
    strided_copy(ctx, src, dst, &copy)
}

/// Checks that `len` entries along `dim` from `src_start` of src fit into dst from
/// `dst_start`, the shapes agreeing elsewhere; returns dst as [outer, dim, inner].
#[allow(clippy::too_many_arguments)]
fn check_slice(
    op: &str,
    src: &Tensor,
    src_start: usize,
    dst: &Tensor,
    dst_start: usize,
    dim: usize,
    len: usize,
) -> Result<(usize, usize)> {
    let rank = dst.shape.len();
    let same_elsewhere =
        src.shape.len() == rank && (0..rank).all(|d| d == dim || src.shape[d] == dst.shape[d]);
    if dim >= rank || !same_elsewhere {
        return Err(Error::BadInput(format!(
            "{op}: shapes {:?} and {:?} must match except along dim {dim}",
            src.shape, dst.shape
        )));
    }
    let (src_dim, dst_dim) = (src.shape[dim], dst.shape[dim]);
    if src_start + len > src_dim || dst_start + len > dst_dim {
        return Err(Error::BadInput(format!(
            "{op}: {len} entries along dim {dim} from {src_start} (of {src_dim}) to {dst_start} (of {dst_dim}) run past the end"
        )));
    }
    expect_dtype(op, "out", dst, src.dtype)?;
    let outer: usize = dst.shape[..dim].iter().product();
    let inner: usize = dst.shape[dim + 1..].iter().product();
    Ok((outer, inner))
}
