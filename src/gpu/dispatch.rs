//! Kernel launches as values: a [`Launch`] (shader, entry point, constants,
//! bound tensors) builds a [`Dispatch`] (pipeline, bind group, workgroup
//! counts) once, when a graph is planned; recording and submitting happen
//! later, so a whole denoising step is one command buffer and a step only
//! encodes (web-rwkv's `TensorOp`).
//!
//! A dispatch is recorded with its planned sizes ([`record`]) or with sizes
//! read from a GPU buffer ([`record_indirect`]): the loop launches its steps
//! indirectly so that a kernel can cancel the rest of a run by writing zeros.

use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::gpu::{texture, Access, Buffer, Context, DType, Kernel, KernelSpec, Shader, Tensor};

/// A recorded-later kernel launch. Holds everything it binds alive.
#[derive(Debug)]
pub struct Dispatch {
    pub kernel: Arc<Kernel>,
    /// Made when first recorded ([`Dispatch::bind_group`]): by then the
    /// deferred buffers an arena sized while the plan was made are final.
    bind_group: OnceLock<wgpu::BindGroup>,
    /// Bindings 1.. as (offset, size) windows of `buffers` (`None`: whole).
    windows: Vec<Option<(u64, u64)>>,
    /// How the kernel binds each of `buffers` (a texture: its copy).
    access: Vec<Access>,
    device: wgpu::Device,
    /// Binding 0, the kernel's `Params`: kept so a planned dispatch can be given
    /// new values (e.g. a seed) without rebinding.
    pub uniform: Buffer,
    /// The counted buffers of bindings 1.. : the bind group keeps the wgpu
    /// buffers alive, these keep them counted as live for as long (so a peak
    /// includes every activation a planned pass holds, not only those a
    /// tensor handle still names), and tell an arena who still reads them.
    pub buffers: Vec<Arc<Buffer>>,
    /// Workgroups per dimension as planned (what an indirect launch's arguments
    /// start from).
    pub workgroups: [u32; 3],
    /// Floating-point operations and bytes moved, for `easel bench`.
    pub flops: u64,
    pub bytes: u64,
    /// The GEMM a matmul, conv2d or attention launch computes (`None` for
    /// other kernels): what `easel tune` classes its timings by.
    pub gemm: Option<Gemm>,
    /// A launch recorded just before this one, on this one's grid (or its
    /// indirect arguments): a convolution's image staged in a texture
    /// (`ops::conv2d`, `gpu::texture::scratch`). One value with the launch, so
    /// nothing records, times or cancels one without the other.
    stage: Option<Box<Dispatch>>,
}

/// Which op a GEMM launch belongs to: their tiles share code but load
/// differently (conv2d gathers its A operand from an image); attention is
/// two GEMMs per head with a softmax between (`batch` = images × heads,
/// `rows` queries, `cols` keys, `depth` the head dim).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum GemmOp {
    Matmul,
    Conv2d,
    Attention,
}

/// One GEMM problem: `batch` products of `rows × depth` by `depth × cols`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gemm {
    pub op: GemmOp,
    pub batch: usize,
    pub rows: usize,
    pub cols: usize,
    pub depth: usize,
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
        let limit = ctx.max_binding_size();
        // Tensors bound as textures are no storage bindings.
        let buffer = |a: &Access| !matches!(a, Access::Texture | Access::StorageTexture);
        if let Some((i, (t, _))) = (self.tensors.iter().enumerate())
            .find(|(_, (t, a))| buffer(a) && t.binding_size() > limit)
        {
            return Err(Error::DeviceLimit(format!(
                "{}::{}: binding {} of shape {:?} is {} bytes, above the {limit} bytes {} allows per binding",
                self.shader.name,
                self.entry,
                i + 1,
                t.shape,
                t.binding_size(),
                ctx.info.name
            )));
        }
        let shader = self.activations(ctx)?;
        self.textures(ctx)?;
        let access: Vec<Access> = self.tensors.iter().map(|(_, a)| *a).collect();
        let kernel = ctx.pipelines.get(&KernelSpec {
            shader,
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
        Ok(Dispatch {
            kernel,
            bind_group: OnceLock::new(),
            windows: self.tensors.iter().map(|(t, _)| t.window).collect(),
            access: access.clone(),
            device: ctx.device.clone(),
            uniform,
            buffers: self.tensors.iter().map(|(t, _)| t.buffer.clone()).collect(),
            workgroups: self.workgroups,
            flops: self.flops,
            bytes: self.bytes,
            gemm: None,
            stage: None,
        })
    }
}

impl Launch<'_> {
    /// Make the texture copy of every tensor bound as one (`gpu::texture`).
    fn textures(&self, ctx: &Context) -> Result<()> {
        for (i, (t, _)) in
            (self.tensors.iter().enumerate()).filter(|(_, (_, a))| *a == Access::Texture)
        {
            if !texture::fits(ctx, t) {
                return Err(Error::BadInput(format!(
                    "{}::{}: binding {} of shape {:?} ({:?}) cannot be read as a texture",
                    self.shader.name,
                    self.entry,
                    i + 1,
                    t.shape,
                    t.dtype
                )));
            }
            texture::ensure_copy(ctx, t);
        }
        Ok(())
    }

    /// The shader for the activations bound: binding 1 is an activation in
    /// every shader with an f16 twin, and its dtype picks the twin
    /// ([`Shader::for_activations`]), which needs SHADER_F16.
    fn activations(&self, ctx: &Context) -> Result<&'static Shader> {
        let dtype = self.tensors.first().map_or(DType::F32, |(t, _)| t.dtype);
        let shader = self.shader.for_activations(dtype);
        if !std::ptr::eq(shader, self.shader) {
            ctx.check_f16_activations()?;
        }
        Ok(shader)
    }
}

impl Dispatch {
    /// This launch labelled as computing `gemm` (matmul's, conv2d's, attention's).
    pub fn with_gemm(mut self, gemm: Gemm) -> Self {
        self.gemm = Some(gemm);
        self
    }

    /// This launch with `stage` recorded just before it, on the same grid.
    pub fn with_stage(mut self, stage: Dispatch) -> Self {
        self.stage = Some(Box::new(stage));
        self
    }

    /// The counted buffers this launch and its stage bind.
    pub fn bound(&self) -> impl Iterator<Item = &Arc<Buffer>> {
        self.launches().flat_map(|d| d.buffers.iter())
    }

    /// Its stage, if any, then itself: what recording it launches.
    fn launches(&self) -> impl Iterator<Item = &Dispatch> {
        self.stage.as_deref().into_iter().chain([self])
    }

    /// The bind group: the uniform, then each tensor's window of its buffer.
    /// Made on first use, which makes any deferred buffer it binds.
    pub fn bind_group(&self) -> &wgpu::BindGroup {
        self.bind_group.get_or_init(|| {
            let uniform = wgpu::BindGroupEntry {
                binding: 0,
                resource: self.uniform.as_entire_binding(),
            };
            let tensors = self.buffers.iter().zip(&self.windows).zip(&self.access);
            let entries: Vec<wgpu::BindGroupEntry> = std::iter::once(uniform)
                .chain(tensors.enumerate().map(|(i, ((buffer, window), access))| {
                    wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource: match (access, buffer.texture()) {
                            (Access::Texture | Access::StorageTexture, Some(copy)) => {
                                wgpu::BindingResource::TextureView(&copy.view)
                            }
                            _ => Tensor::binding_of(buffer, *window),
                        },
                    }
                }))
                .collect();
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&self.kernel.label),
                layout: &self.kernel.layout,
                entries: &entries,
            })
        })
    }
}

/// Record one dispatch (after its stage, on the same grid), with its planned
/// sizes, into an open compute pass.
pub fn record(pass: &mut wgpu::ComputePass, d: &Dispatch) {
    let [x, y, z] = d.workgroups;
    for d in d.launches() {
        pass.set_pipeline(&d.kernel.pipeline);
        pass.set_bind_group(0, d.bind_group(), &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Record one dispatch (after its stage) whose sizes are the three u32 at byte
/// `offset` of `args` (an `INDIRECT` buffer), so a kernel that runs earlier can
/// change them.
pub fn record_indirect(
    pass: &mut wgpu::ComputePass,
    d: &Dispatch,
    args: &wgpu::Buffer,
    offset: u64,
) {
    for d in d.launches() {
        pass.set_pipeline(&d.kernel.pipeline);
        pass.set_bind_group(0, d.bind_group(), &[]);
        pass.dispatch_workgroups_indirect(args, offset);
    }
}

/// Record dispatches, in order, into one compute pass.
pub fn encode(encoder: &mut wgpu::CommandEncoder, dispatches: &[Dispatch]) {
    pass_into(encoder, |pass| {
        dispatches.iter().for_each(|d| record(pass, d))
    });
}

/// Record one compute pass with `f` into `encoder`.
fn pass_into(encoder: &mut wgpu::CommandEncoder, f: impl FnOnce(&mut wgpu::ComputePass)) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("easel"),
        timestamp_writes: None,
    });
    f(&mut pass);
}

/// Record one compute pass with `f`, submit it and wait for the GPU (this is
/// not a readback).
pub fn submit(ctx: &Context, f: impl FnOnce(&mut wgpu::ComputePass)) -> Result<()> {
    submit_only(ctx, f);
    ctx.wait()
}

/// Record one compute pass with `f` and submit it without waiting: the loop
/// records step s + 1 while the GPU runs step s ([`Context::wait_for`]).
pub fn submit_only(ctx: &Context, f: impl FnOnce(&mut wgpu::ComputePass)) -> wgpu::SubmissionIndex {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    pass_into(&mut encoder, f);
    ctx.queue.submit([encoder.finish()])
}

/// Encode, submit and wait: for tests and one-off work.
pub fn run(ctx: &Context, dispatches: &[Dispatch]) -> Result<()> {
    submit(ctx, |pass| dispatches.iter().for_each(|d| record(pass, d)))
}
