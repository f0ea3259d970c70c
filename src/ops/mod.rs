//! GPU ops: one Rust wrapper per file in wgsl/, with the same name.
//!
//! An op is a constructor that checks shapes and returns a [`Dispatch`]
//! record (pipeline, bind group, workgroup counts). Recording and submitting
//! happen elsewhere ([`encode`], [`run`]), so a whole denoising step is one
//! command buffer and per-step work only encodes dispatches.
//!
//! Binding convention shared by every kernel: `@binding(0)` is a uniform
//! `Params` struct; `@binding(1..)` are storage buffers in the order the op
//! passes them.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Access, Context, Kernel, KernelSpec, Shader};
use crate::tensor::{DType, Tensor};

pub mod attention;
pub mod conv2d;
pub mod elementwise;
pub mod embedding;
pub mod image;
pub mod layout;
pub mod matmul;
pub mod noise;
pub mod norm;
pub mod peak;
pub mod resample;
pub mod sampler;
pub mod score;

macro_rules! shaders {
    ($($ident:ident => [$($file:literal),+]),* $(,)?) => {
        $(pub static $ident: Shader = Shader {
            name: last!($($file),+),
            parts: &[$($file),+],
            source: concat!($(include_str!(concat!("../../wgsl/", $file, ".wgsl"))),+),
        };)*
        /// Every embedded shader, for validation tests and warm-up.
        pub static ALL_SHADERS: &[&Shader] = &[$(&$ident),*];
    };
}

macro_rules! last {
    ($file:literal) => { $file };
    ($_first:literal, $($rest:literal),+) => { last!($($rest),+) };
}

// A shader is its files concatenated: the subgroup kernels reuse their base
// file's Params, bindings and helpers, and stay separate files because a module
// that calls subgroup builtins does not compile where the feature is missing.
// conv2d and matmul share their GPU tile (gemm_tile), which comes first so the
// shader keeps its kernel file's name (WGSL declarations may come in any order).
shaders! {
    ATTENTION => ["attention"],
    ATTENTION_SUBGROUP => ["attention", "subgroup", "attention_subgroup"],
    CONV2D => ["gemm_tile", "conv2d"],
    CONV2D_SUBGROUP => ["gemm_tile", "conv2d", "subgroup", "conv2d_subgroup"],
    ELEMENTWISE => ["elementwise"],
    EMBEDDING => ["embedding"],
    IMAGE => ["image"],
    LAYOUT => ["layout"],
    MATMUL => ["gemm_tile", "matmul"],
    MATMUL_SUBGROUP => ["gemm_tile", "matmul", "subgroup", "matmul_subgroup"],
    NOISE => ["noise"],
    NORM => ["norm"],
    PEAK => ["peak"],
    RESAMPLE => ["resample"],
    SAMPLER => ["sampler"],
    SCORE => ["score"],
}

/// How many workgroups to launch.
#[derive(Clone, Debug)]
pub enum Workgroups {
    Direct([u32; 3]),
    /// Sizes read from a GPU buffer at `offset`, so a kernel can cancel later work.
    Indirect(Arc<wgpu::Buffer>, u64),
}

/// A recorded-later kernel launch. Holds everything it binds alive.
#[derive(Debug)]
pub struct Dispatch {
    pub kernel: Arc<Kernel>,
    pub bind_group: wgpu::BindGroup,
    /// Binding 0, the kernel's `Params`: kept so a planned dispatch can be given
    /// new values (e.g. a seed) without rebinding.
    pub uniform: wgpu::Buffer,
    pub workgroups: Workgroups,
    /// Floating-point operations and bytes moved, for `easel bench`.
    pub flops: u64,
    pub bytes: u64,
}

/// Everything an op constructor needs to build a [`Dispatch`].
pub struct Launch<'a> {
    pub shader: &'static Shader,
    pub entry: &'a str,
    pub constants: &'a [(&'a str, f64)],
    /// Storage buffers in binding order (1..), with how the kernel uses each.
    pub tensors: &'a [(&'a Tensor, Access)],
    pub workgroups: [u32; 3],
    pub flops: u64,
    pub bytes: u64,
}

impl Launch<'_> {
    /// Compile (or fetch) the pipeline, upload `params` and bind everything.
    pub fn build<P: bytemuck::Pod>(self, ctx: &Context, params: &P) -> Result<Dispatch> {
        let max = ctx.limits().max_compute_workgroups_per_dimension;
        if let Some(&n) = self.workgroups.iter().find(|&&n| n > max) {
            return Err(Error::DeviceLimit(format!(
                "{}::{}: {n} workgroups in one dimension exceeds the adapter's limit of {max}",
                self.shader.name, self.entry
            )));
        }
        let access: Vec<Access> = self.tensors.iter().map(|(_, a)| *a).collect();
        let kernel = ctx.pipelines.get(&KernelSpec {
            shader: self.shader,
            entry: self.entry,
            constants: self.constants,
            storage: &access,
        });
        let uniform = ctx.create_buffer(
            &kernel.label,
            std::mem::size_of::<P>() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        ctx.queue
            .write_buffer(&uniform, 0, bytemuck::bytes_of(params));
        let entries: Vec<wgpu::BindGroupEntry> = std::iter::once(wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        })
        .chain(
            self.tensors
                .iter()
                .enumerate()
                .map(|(i, (t, _))| wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: t.buffer.as_entire_binding(),
                }),
        )
        .collect();
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&kernel.label),
            layout: &kernel.layout,
            entries: &entries,
        });
        Ok(Dispatch {
            kernel,
            bind_group,
            uniform,
            workgroups: Workgroups::Direct(self.workgroups),
            flops: self.flops,
            bytes: self.bytes,
        })
    }
}

/// Record dispatches, in order, into one compute pass.
pub fn encode(encoder: &mut wgpu::CommandEncoder, dispatches: &[Dispatch]) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("easel"),
        timestamp_writes: None,
    });
    for d in dispatches {
        record(&mut pass, d);
    }
}

/// Record one dispatch into an open compute pass.
pub fn record(pass: &mut wgpu::ComputePass, d: &Dispatch) {
    pass.set_pipeline(&d.kernel.pipeline);
    pass.set_bind_group(0, &d.bind_group, &[]);
    match &d.workgroups {
        Workgroups::Direct([x, y, z]) => pass.dispatch_workgroups(*x, *y, *z),
        Workgroups::Indirect(buffer, offset) => pass.dispatch_workgroups_indirect(buffer, *offset),
    }
}

/// Encode, submit and wait: for tests and one-off work.
pub fn run(ctx: &Context, dispatches: &[Dispatch]) -> Result<()> {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encode(&mut encoder, dispatches);
    ctx.queue.submit([encoder.finish()]);
    ctx.wait()
}

/// Workgroups needed to cover `n` items with `per_group` items each.
pub fn groups(n: usize, per_group: usize) -> u32 {
    n.div_ceil(per_group) as u32
}

/// Spread a 1-D launch of `n` workgroups over x and y so it stays under the
/// 65,535-per-dimension limit; kernels recover the index as `y * (x_count) + x`.
pub fn grid_1d(n: u32) -> [u32; 3] {
    const MAX_X: u32 = 65_535;
    if n <= MAX_X {
        [n, 1, 1]
    } else {
        [MAX_X, n.div_ceil(MAX_X), 1]
    }
}

/// Shape check shared by op constructors: a one-line message naming the op.
pub fn expect_shape(op: &str, what: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape != shape {
        return Err(Error::BadInput(format!(
            "{op}: {what} has shape {:?}, expected {shape:?}",
            t.shape
        )));
    }
    Ok(())
}

/// Dtype check shared by op constructors: a one-line message naming the op.
pub fn expect_dtype(op: &str, what: &str, t: &Tensor, dtype: DType) -> Result<()> {
    if t.dtype != dtype {
        return Err(Error::BadInput(format!(
            "{op}: {what} is {:?}, expected {dtype:?}",
            t.dtype
        )));
    }
    Ok(())
}
