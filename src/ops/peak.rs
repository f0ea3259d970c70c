//! Attainable-peak probes (wgsl/peak.wgsl) for `easel bench peak`: an FMA
//! throughput kernel and a copy-bandwidth kernel. Their figures are the
//! denominators of "% of peak" in `easel bench kernels`.

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::gpu::{Access, Context, Dispatch, Launch};
use crate::ops::{expect_shape, grid_1d, groups, PEAK};

/// Independent vec4 chains per invocation (`c0..c7` in the shader).
pub const CHAINS: usize = 8;
const WORKGROUP: usize = 64;
/// vec4s each `copy` invocation moves (`COPY_PER` in the shader).
const COPY_PER: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    iterations: u32,
    a: f32,
    b: f32,
}

/// Rows of 4 f32 in `t` (`[rows, 4]`), or an error naming the op.
fn vec4_rows(op: &str, what: &str, t: &Tensor) -> Result<usize> {
    match t.shape[..] {
        [rows, 4] if rows > 0 => Ok(rows),
        _ => Err(Error::BadInput(format!(
            "{op}: {what} has shape {:?}, expected [rows, 4] with rows > 0",
            t.shape
        ))),
    }
}

/// `out[i] = Σ_c chain_c` where chain c of invocation i starts at
/// `seeds[i % m] + c` and takes `iterations` steps of `x ← x·a + b` (one vec4 FMA
/// each). `seeds` `[m, 4]`, `out` `[n, 4]`: n invocations. Counts an FMA as 2 FLOPs.
pub fn fma_chains(
    ctx: &Context,
    seeds: &Tensor,
    out: &Tensor,
    iterations: u32,
    a: f32,
    b: f32,
) -> Result<Dispatch> {
    vec4_rows("fma_chains", "seeds", seeds)?;
    let n = vec4_rows("fma_chains", "out", out)?;
    let params = Params {
        n: n as u32,
        iterations,
        a,
        b,
    };
    Launch {
        shader: &PEAK,
        entry: "fma_chains",
        constants: &[],
        tensors: &[(seeds, Access::Read), (out, Access::ReadWrite)],
        workgroups: grid_1d(groups(n, WORKGROUP)),
        flops: 2 * 4 * (CHAINS * n) as u64 * iterations as u64,
        bytes: 2 * out.bytes(),
    }
    .build(ctx, &params)
}

/// `dst = src`, both `[n, 4]`. Moves `2 · src.bytes()` (a read and a write).
pub fn copy(ctx: &Context, src: &Tensor, dst: &Tensor) -> Result<Dispatch> {
    let n = vec4_rows("copy", "src", src)?;
    expect_shape("copy", "dst", dst, &src.shape)?;
    let params = Params {
        n: n as u32,
        iterations: 0,
        a: 0.0,
        b: 0.0,
    };
    Launch {
        shader: &PEAK,
        entry: "copy",
        constants: &[],
        tensors: &[(src, Access::Read), (dst, Access::ReadWrite)],
        workgroups: grid_1d(groups(n, WORKGROUP * COPY_PER)),
        flops: 0,
        bytes: 2 * src.bytes(),
    }
    .build(ctx, &params)
}
