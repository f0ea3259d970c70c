//! Precision boundaries (wgsl/cast.wgsl): f32 activations rounded to f16 and
//! f16 ones widened to f32, where an f16 forward pass (`--precision f16`)
//! takes its inputs and hands back its output.

use crate::error::{Error, Result};
use crate::gpu::{Access, Context, DType, Dispatch, Launch, Tensor};
use crate::ops::{expect_dtype, expect_shape, grid_1d, groups, CAST};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// `out = x` in `out`'s dtype: f32 → f16 (values past ±65504 saturate) or
/// f16 → f32 (exact). Shapes must match; needs SHADER_F16.
pub fn cast(ctx: &Context, x: &Tensor, out: &Tensor) -> Result<Dispatch> {
    const OP: &str = "cast";
    expect_shape(OP, "out", out, &x.shape)?;
    let (wide, narrow, entry) = match (x.dtype, out.dtype) {
        (DType::F32, DType::F16) => (x, out, "to_f16"),
        (DType::F16, DType::F32) => (out, x, "to_f32"),
        (from, to) => {
            return Err(Error::BadInput(format!(
                "{OP}: {from:?} to {to:?}; only F32 <-> F16"
            )))
        }
    };
    expect_dtype(OP, "f16 side", narrow, DType::F16)?;
    ctx.check_f16_activations()?;
    let n = x.numel();
    Launch {
        shader: &CAST,
        entry,
        constants: &[],
        tensors: &[(wide, Access::ReadWrite), (narrow, Access::ReadWrite)],
        workgroups: grid_1d(groups(n, 256)),
        flops: 0,
        bytes: 6 * n as u64,
    }
    .build(
        ctx,
        &Params {
            n: n as u32,
            _pad: [0; 3],
        },
    )
}
