//! Elementwise ops (wgsl/elementwise.wgsl): activations and broadcast binary ops.

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::gpu::{Access, Context, Dispatch, Launch};
use crate::ops::{expect_activations, grid_1d, groups, ELEMENTWISE};

/// Activations, numbered as `OP` in the shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity = 0,
    Silu = 1,
    /// erf form (`torch.nn.functional.gelu`).
    Gelu = 2,
    /// `gelu(approximate="tanh")`.
    GeluTanh = 3,
    /// CLIP's `x * sigmoid(1.702 x)`.
    QuickGelu = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add = 10,
    Mul = 11,
    /// `a if a >= 0 else b * a`: nn.PReLU with `b` the per-channel slope `[C, 1, 1]`.
    Prelu = 12,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    d1: u32,
    d2: u32,
    d3: u32,
    sb: [u32; 4],
    scale: f32,
    bias: f32,
    _pad: [u32; 2],
}

const WORKGROUP: usize = 256;

/// `out = act(x) * scale + bias`, elementwise. `out` may not alias `x`.
pub fn unary(
    ctx: &Context,
    x: &Tensor,
    out: &Tensor,
    act: Activation,
    scale: f32,
    bias: f32,
) -> Result<Dispatch> {
    crate::ops::expect_shape("unary", "out", out, &x.shape)?;
    expect_activations("unary", x, &[("out", out)])?;
    let n = x.numel();
    let (entry, threads) = if n.is_multiple_of(4) {
        ("unary4", n / 4)
    } else {
        ("unary", n)
    };
    let params = Params {
        n: threads as u32,
        d1: 1,
        d2: 1,
        d3: 1,
        sb: [0; 4],
        scale,
        bias,
        _pad: [0; 2],
    };
    Launch {
        shader: &ELEMENTWISE,
        entry,
        constants: &[("OP", act as u32 as f64)],
        tensors: &[(x, Access::Read), (out, Access::ReadWrite)],
        workgroups: grid_1d(groups(threads, WORKGROUP)),
        flops: n as u64,
        bytes: 2 * (x.dtype.size() * n) as u64,
    }
    .build(ctx, &params)
}

/// `out = (a op b) * scale`, with `b` broadcast to `a`'s shape by NumPy rules
/// (trailing dimensions aligned; size-1 or missing dimensions repeat).
/// Covers residual adds, per-channel bias `[C,1,1]` and time embeddings `[N,C,1,1]`.
pub fn binary(
    ctx: &Context,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    op: BinaryOp,
    scale: f32,
) -> Result<Dispatch> {
    crate::ops::expect_shape("binary", "out", out, &a.shape)?;
    expect_activations("binary", a, &[("b", b), ("out", out)])?;
    let (dims, strides) = broadcast_4d(&a.shape, &b.shape)?;
    let n = a.numel();
    // Same shape (the residual adds) takes a vec4 kernel without index math; b
    // constant over runs of 4 (per-channel [N, C, 1, 1]) one with 2 divisions per 4.
    let (entry, threads) = if b.numel() == n && n.is_multiple_of(4) {
        ("binary_same4", n / 4)
    } else if strides[2] == 0 && strides[3] == 0 && (dims[2] * dims[3]).is_multiple_of(4) {
        ("binary_rows4", n / 4)
    } else {
        ("binary", n)
    };
    let params = Params {
        n: threads as u32,
        d1: dims[1] as u32,
        d2: dims[2] as u32,
        d3: dims[3] as u32,
        sb: strides.map(|s| s as u32),
        scale,
        bias: 0.0,
        _pad: [0; 2],
    };
    Launch {
        shader: &ELEMENTWISE,
        entry,
        constants: &[("OP", op as u32 as f64)],
        tensors: &[
            (a, Access::Read),
            (out, Access::ReadWrite),
            (b, Access::Read),
        ],
        workgroups: grid_1d(groups(threads, WORKGROUP)),
        flops: n as u64,
        bytes: 3 * (a.dtype.size() * n) as u64,
    }
    .build(ctx, &params)
}

/// View `a` as at most 4 dims (merging leading ones) and give `b`'s strides in
/// that view, 0 where `b` broadcasts.
fn broadcast_4d(a: &[usize], b: &[usize]) -> Result<([usize; 4], [usize; 4])> {
    let err = || Error::BadInput(format!("binary: shape {b:?} does not broadcast to {a:?}"));
    if b.len() > a.len() {
        return Err(err());
    }
    // Pad b on the left with 1s, then check each dim.
    let bp: Vec<usize> = std::iter::repeat_n(1, a.len() - b.len())
        .chain(b.iter().copied())
        .collect();
    if a.iter().zip(&bp).any(|(&x, &y)| y != x && y != 1) {
        return Err(err());
    }
    // Row-major strides of b, zeroed where it broadcasts.
    let mut stride = 1;
    let mut sb = vec![0; a.len()];
    for i in (0..a.len()).rev() {
        sb[i] = if bp[i] == 1 { 0 } else { stride };
        stride *= bp[i];
    }
    // Merge leading dims until 4 remain; merging is exact when b's strides
    // are consistent (both broadcast, or contiguous).
    let (mut dims, mut strides) = (a.to_vec(), sb);
    while dims.len() > 4 {
        let (d0, d1) = (dims[0], dims[1]);
        let (s0, s1) = (strides[0], strides[1]);
        let merged = if s0 == 0 && s1 == 0 {
            0
        } else if s0 == s1 * d1 {
            s1
        } else {
            return Err(Error::BadInput(format!(
                "binary: broadcast of {b:?} to {a:?} needs more than 4 dimensions"
            )));
        };
        dims.splice(0..2, [d0 * d1]);
        strides.splice(0..2, [merged]);
    }
    while dims.len() < 4 {
        dims.insert(0, 1);
        strides.insert(0, 0);
    }
    Ok((
        dims.try_into().expect("4 dims"),
        strides.try_into().expect("4 strides"),
    ))
}

#[cfg(test)]
mod tests {
    use super::broadcast_4d;

    #[test]
    fn broadcast_strides() {
        let (d, s) = broadcast_4d(&[2, 3, 4, 5], &[3, 1, 1]).unwrap();
        assert_eq!((d, s), ([2, 3, 4, 5], [0, 1, 0, 0]));
        let (d, s) = broadcast_4d(&[2, 3, 4, 5], &[2, 3, 1, 1]).unwrap();
        assert_eq!((d, s), ([2, 3, 4, 5], [3, 1, 0, 0]));
        let (d, s) = broadcast_4d(&[7], &[7]).unwrap();
        assert_eq!((d, s), ([1, 1, 1, 7], [0, 0, 0, 1]));
        let (d, s) = broadcast_4d(&[2, 2, 3, 4, 5], &[4, 5]).unwrap();
        assert_eq!((d, s), ([4, 3, 4, 5], [0, 0, 5, 1]));
        assert!(broadcast_4d(&[2, 3], &[4]).is_err());
    }
}
