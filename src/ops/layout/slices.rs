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
    Slice {
        src: (x, start),
        dst: (out, 0),
        dim,
        len: len_of(out, dim),
    }
    .copy(ctx, "narrow")
}

/// `out.narrow(dim, start, x.shape[dim]).copy_(x)`: write x into a slice of out.
pub fn copy_into(
    ctx: &Context,
    x: &Tensor,
    out: &Tensor,
    dim: usize,
    start: usize,
) -> Result<Dispatch> {
    Slice {
        src: (x, 0),
        dst: (out, start),
        dim,
        len: len_of(x, dim),
    }
    .copy(ctx, "copy_into")
}

/// `torch.cat(xs, dim)` into `out`. Two inputs (the UNet's skip connections,
/// `torch.cat([h, skip], dim=1)`) are one launch; more are one copy per input,
/// to be run in order (they write disjoint slices, so any order gives the same
/// result).
pub fn concat(ctx: &Context, xs: &[&Tensor], dim: usize, out: &Tensor) -> Result<Vec<Dispatch>> {
    let total: usize = xs.iter().map(|x| len_of(x, dim)).sum();
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
            let d = Slice {
                src: (x, 0),
                dst: (out, start),
                dim,
                len: len_of(x, dim),
            }
            .copy(ctx, "concat")?;
            start += len_of(x, dim);
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
    let split = len_of(head, dim);
    let (outer, inner) = Slice {
        src: (head, 0),
        dst: (out, 0),
        dim,
        len: split,
    }
    .check("concat")?;
    Slice {
        src: (tail, 0),
        dst: (out, split),
        dim,
        len: len_of(tail, dim),
    }
    .check("concat")?;
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
        tail_strides: strides(len_of(tail, dim)),
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

/// x's size along `dim`, 0 past its rank (which [`Slice::check`] then refuses).
fn len_of(x: &Tensor, dim: usize) -> usize {
    x.shape.get(dim).copied().unwrap_or(0)
}

/// `len` entries along `dim` from `src[.., src_start.., ..]` to
/// `dst[.., dst_start.., ..]`, both viewed as [outer, dim, inner].
struct Slice<'a> {
    /// (src, src_start)
    src: (&'a Tensor, usize),
    /// (dst, dst_start)
    dst: (&'a Tensor, usize),
    dim: usize,
    len: usize,
}

impl Slice<'_> {
    /// The copy as one strided launch.
    fn copy(&self, ctx: &Context, op: &str) -> Result<Dispatch> {
        let (outer, inner) = self.check(op)?;
        let ((src, src_start), (dst, dst_start)) = (self.src, self.dst);
        let (src_dim, dst_dim) = (src.shape[self.dim], dst.shape[self.dim]);
        let copy = Box4 {
            dims: [1, outer, self.len, inner],
            src_base: src_start * inner,
            src_strides: [0, src_dim * inner, inner, 1],
            dst_base: dst_start * inner,
            dst_strides: [0, dst_dim * inner, inner, 1],
        };
        strided_copy(ctx, src, dst, &copy)
    }

    /// Checks that the entries fit both tensors, whose shapes must agree off
    /// `dim`; returns dst as [outer, dim, inner].
    fn check(&self, op: &str) -> Result<(usize, usize)> {
        let ((src, src_start), (dst, dst_start)) = (self.src, self.dst);
        let (dim, len) = (self.dim, self.len);
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
}
