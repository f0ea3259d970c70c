//! The loop's NaN/Inf guard (wgsl/finite.wgsl): a check records its code in a
//! status word when any value of a tensor is not finite; the lowest code wins,
//! so the run's one readback says where the first non-finite value appeared.

use crate::error::{Error, Result};
use crate::gpu::{Access, Context, DType, Dispatch, Launch, Tensor};
use crate::ops::{expect_dtype, grid_1d, groups, FINITE};

/// `status[0]` when every check passed.
pub const ALL_FINITE: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    code: u32,
    _pad: [u32; 2],
}

/// Check that every value of `x` (f32) is finite; if not, lower `status[0]`
/// (u32, reset to [`ALL_FINITE`] by the caller) to `code`.
pub fn check_finite(ctx: &Context, x: &Tensor, code: u32, status: &Tensor) -> Result<Dispatch> {
    const OP: &str = "check_finite";
    expect_dtype(OP, "x", x, DType::F32)?;
    expect_dtype(OP, "status", status, DType::U32)?;
    if status.numel() == 0 {
        return Err(Error::BadInput(format!("{OP}: status needs one word")));
    }
    let n = x.numel();
    Launch {
        shader: &FINITE,
        entry: "check_finite",
        constants: &[],
        tensors: &[(x, Access::Read), (status, Access::ReadWrite)],
        workgroups: grid_1d(groups(n, 256)),
        flops: 0,
        bytes: 4 * n as u64,
    }
    .build(
        ctx,
        &Params {
            n: n as u32,
            code,
            _pad: [0; 2],
        },
    )
}
