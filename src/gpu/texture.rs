//! Layer weights read through the texture unit. On llvmpipe (lavapipe's CPU
//! driver) a storage-buffer load inside a loop costs a branch and a scalar
//! load per SIMD lane and component (before Mesa 23 inside a loop over the
//! lanes), while a texel fetch is straight-line code: a vec4 per invocation
//! costs 1.8-2.5 ns from a texture against 15-19 ns from a buffer on Mesa 22
//! (`examples/bench_loads`, docs/benchmarks.md). The subgroup GEMM kernels
//! spend most of their time loading their weight operand, so where
//! [`Context::weight_textures`] says so, a weight gets a texture copy, made
//! once, when a kernel first binds it (`Access::Texture`), and those kernels
//! read it through wgsl/weight_texture.wgsl.
//!
//! The copy holds the weight's own values: `rgba32float` for f32 weights,
//! `rgba16float` for f16 ones (a texel is the same four halves a `vec2<u32>`
//! of wgsl/weight_f16.wgsl unpacks, widened exactly), so a kernel computes the
//! same bits from either. Texel t holds elements 4t..4t+3 at (t % WIDTH,
//! t / WIDTH). Weights do not change once a model is built (LoRA patches are
//! merged as each weight is uploaded); [`Tensor::write`] copies again.
//!
//! A layer loaded for such kernels is held in its copy alone ([`hold`]): its
//! buffer is dropped and made again from the texture only if something else
//! binds or reads it (a kernel pinned to another variant, a readback), so the
//! copy costs no memory beside the buffer it replaces.
//!
//! A convolution's input image changes every launch, so where
//! [`Context::image_textures`] says so (Mesa 22's llvmpipe, where the image
//! gathers are most of a convolution's time) a kernel copies it into an
//! r32float [`scratch`] texture just before the convolution, which then
//! gathers from the texture (`ops::conv2d`, wgsl/stage_image.wgsl,
//! wgsl/image_texture.wgsl). The convolutions of a context share one scratch
//! texture per size class: each staging is recorded with its convolution
//! (`Dispatch::with_stage`), and a queue runs what it is given in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::gpu::{Buffer, Context, DType, Policy, Tensor};

/// Texels per row of a copy: wgsl/weight_texture.wgsl's `WEIGHT_TEXELS_PER_ROW`.
/// A power of two (the shader divides by it) whose rows are whole 256-byte
/// copy rows in both formats.
pub const WIDTH: u32 = 2048;

/// A weight's texture copy; its bytes count with its buffer's.
#[derive(Debug)]
pub struct Texture {
    pub(crate) texture: wgpu::Texture,
    pub(crate) view: wgpu::TextureView,
}

impl Texture {
    pub(crate) fn bytes(&self) -> u64 {
        let size = self.texture.size();
        u64::from(size.width) * u64::from(size.height) * texel_bytes(&self.texture)
    }
}

/// Whether kernels read `weight` through its texture copy on `ctx`: by
/// `EASEL_WEIGHT_TEXTURES` (auto: on llvmpipe), where the copy can exist.
pub fn reads_weight(ctx: &Context, weight: &Tensor) -> bool {
    wanted(ctx.weight_textures, &ctx.info.driver) && fits(ctx, weight)
}

/// Whether `policy` reads weights through textures on a `driver`: `auto` on
/// llvmpipe only, where a storage load in a loop is a branch per lane; GPUs
/// and other CPU drivers load buffers as fast as textures.
pub fn wanted(policy: Policy, driver: &str) -> bool {
    match policy {
        Policy::Off => false,
        Policy::Auto => driver == "llvmpipe",
        Policy::Always => true,
    }
}

/// Whether the driver loads storage buffers one SIMD lane at a time, even
/// where the lanes' addresses are consecutive: llvmpipe before Mesa 23 runs each
/// component of each load as a loop over the 8 lanes, with a bounds check and a
/// vector written and read back through the stack per lane (seen in its machine
/// code). There loads, not FMAs, bound the GEMM kernels, and `CpuTall`'s fewer
/// loads per FMA run matmul 1024³ 2.3x faster than `CpuSubgroup` (an AMD EPYC
/// VM, Mesa 22.3.6); Mesa 25 gathers whole vectors, and `CpuTall`'s spilled
/// accumulators make it the slower one there.
pub fn lane_by_lane_loads(info: &wgpu::AdapterInfo) -> bool {
    let mesa = |s: &str| {
        s.split("Mesa ")
            .nth(1)?
            .split('.')
            .next()?
            .parse::<u32>()
            .ok()
    };
    info.driver == "llvmpipe" && mesa(&info.driver_info).is_some_and(|major| major < 23)
}

/// Whether a convolution on `ctx` reads its input image `x` through a staged
/// [`scratch`] texture: by `EASEL_IMAGE_TEXTURES` (auto: where llvmpipe loads
/// storage buffers lane by lane, [`lane_by_lane_loads`], and the op judges
/// that staging `pays`), for an f32 or f16 image no taller than a texture the
/// adapter allows.
pub fn reads_image(ctx: &Context, x: &Tensor, pays: bool) -> bool {
    let wanted = images_wanted(ctx.image_textures, &ctx.info)
        && (pays || ctx.image_textures == Policy::Always);
    wanted && matches!(x.dtype, DType::F32 | DType::F16) && scratch_rows(ctx, x.numel()).is_some()
}

/// Whether `policy` stages convolution images in textures on an adapter
/// (those of the subgroup kernels reading weights through textures): `auto`
/// where llvmpipe loads storage buffers lane by lane.
pub fn images_wanted(policy: Policy, info: &wgpu::AdapterInfo) -> bool {
    match policy {
        Policy::Off => false,
        Policy::Auto => lane_by_lane_loads(info),
        Policy::Always => true,
    }
}

/// Rows of the scratch texture for `numel` elements: a power of two (the
/// size class textures are shared by), if the adapter allows that many.
fn scratch_rows(ctx: &Context, numel: usize) -> Option<u32> {
    let rows = numel.div_ceil(WIDTH as usize).max(1).next_power_of_two();
    let rows = u32::try_from(rows).ok()?;
    (rows <= ctx.limits().max_texture_dimension_2d).then_some(rows)
}

/// The convolutions' scratch textures of a context, by rows; weak, so one
/// lives as long as the launches that bind it.
#[derive(Debug, Default)]
pub struct Scratch(Mutex<HashMap<u32, Weak<Buffer>>>);

/// The r32float texture a convolution stages an `x` ([`reads_image`]) in, as
/// a tensor of x's dtype (the kernel's activation type) over the texture's
/// elements. Its buffer is never made: kernels bind the texture.
pub fn scratch(ctx: &Context, x: &Tensor) -> Tensor {
    let rows = scratch_rows(ctx, x.numel()).expect("reads_image checked the size");
    let mut shared = ctx.scratch.0.lock().unwrap_or_else(|e| e.into_inner());
    let buffer = match shared.get(&rows).and_then(Weak::upgrade) {
        Some(buffer) => buffer,
        None => {
            let buffer = Arc::new(ctx.deferred_buffer(
                "easel image texture",
                4,
                wgpu::BufferUsages::STORAGE,
            ));
            buffer.texture_or_init(|| make_scratch(ctx, rows));
            shared.insert(rows, Arc::downgrade(&buffer));
            buffer
        }
    };
    Tensor {
        buffer,
        shape: vec![rows as usize * WIDTH as usize],
        dtype: x.dtype,
        window: None,
    }
}

fn make_scratch(ctx: &Context, rows: u32) -> Texture {
    let texture = ctx.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("easel image texture"),
        size: wgpu::Extent3d {
            width: WIDTH,
            height: rows,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::R32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::STORAGE_BINDING,
        view_formats: &[],
    });
    let view = texture.create_view(&Default::default());
    Texture { texture, view }
}

/// Whether `t` can have a texture copy: a whole buffer (not a row block's
/// window), f32 or f16, whole texels, no taller than the adapter allows.
pub fn fits(ctx: &Context, t: &Tensor) -> bool {
    let texels = t.numel() / 4;
    let rows = texels.div_ceil(WIDTH as usize);
    t.window.is_none()
        && matches!(t.dtype, DType::F32 | DType::F16)
        && t.numel().is_multiple_of(4)
        && texels > 0
        && rows <= ctx.limits().max_texture_dimension_2d as usize
}

/// `weight` (a layer's, just loaded: nn.Linear `[out, in]`, nn.Conv2d
/// `[out, in, kh, kw]`) held in its texture copy alone where kernels read it
/// through one: each output's row of `in · kh · kw` values must be whole
/// texels, as the subgroup kernels need. Otherwise `weight` as it is.
pub fn hold(ctx: &Context, label: &str, weight: Tensor) -> Tensor {
    let rows = weight.shape.first().copied().unwrap_or(1).max(1);
    if !reads_weight(ctx, &weight) || !(weight.numel() / rows).is_multiple_of(4) {
        return weight;
    }
    let copy = make(ctx, &weight);
    let (size, usage) = (weight.buffer.size(), weight.buffer.usage());
    let buffer = ctx.deferred_buffer(label, size, usage);
    Tensor {
        buffer: Arc::new(buffer.held_in(copy, &ctx.queue)),
        ..weight
    }
}

/// Make `t`'s copy if it has none (`t` must [`fits`]); the bind group binds
/// its view.
pub(crate) fn ensure_copy(ctx: &Context, t: &Tensor) {
    t.buffer.texture_or_init(|| make(ctx, t));
}

fn format(dtype: DType) -> wgpu::TextureFormat {
    match dtype {
        DType::F16 => wgpu::TextureFormat::Rgba16Float,
        _ => wgpu::TextureFormat::Rgba32Float,
    }
}

fn texel_bytes(texture: &wgpu::Texture) -> u64 {
    let bytes = texture.format().block_copy_size(None);
    u64::from(bytes.expect("an uncompressed colour format"))
}

fn make(ctx: &Context, t: &Tensor) -> Texture {
    let texels = (t.numel() / 4) as u32;
    let texture = ctx.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("easel weight texture"),
        size: wgpu::Extent3d {
            width: texels.min(WIDTH),
            height: texels.div_ceil(WIDTH),
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: format(t.dtype),
        // COPY_SRC: a held weight's buffer is made again from it.
        usage: wgpu::TextureUsages::TEXTURE_BINDING
            | wgpu::TextureUsages::COPY_DST
            | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    copy(ctx, t, &texture);
    let view = texture.create_view(&Default::default());
    Texture { texture, view }
}

/// Copy `t`'s buffer into `texture`.
pub(crate) fn copy(ctx: &Context, t: &Tensor, texture: &wgpu::Texture) {
    let texels = (t.numel() / 4) as u32;
    let encoder = copy_rows(
        &ctx.device,
        &t.buffer,
        texture,
        texels,
        Direction::ToTexture,
    );
    ctx.queue.submit([encoder.finish()]);
}

/// Fill a held weight's `buffer` from its texture copy (`memory::Buffer::held_in`).
/// The buffer has the weight's bytes exactly (whole texels: [`hold`]), so its
/// size says how many texels hold values.
pub(crate) fn restore(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    copy: &Texture,
    buffer: &wgpu::Buffer,
) {
    let texels = (buffer.size() / texel_bytes(&copy.texture)) as u32;
    let encoder = copy_rows(device, buffer, &copy.texture, texels, Direction::ToBuffer);
    queue.submit([encoder.finish()]);
}

/// Which way [`copy_rows`] copies.
enum Direction {
    ToTexture,
    ToBuffer,
}

/// An encoder copying `texels` texels between `buffer` and `texture`: the
/// whole rows, then the part row.
fn copy_rows(
    device: &wgpu::Device,
    buffer: &wgpu::Buffer,
    texture: &wgpu::Texture,
    texels: u32,
    direction: Direction,
) -> wgpu::CommandEncoder {
    let row_bytes = u64::from(WIDTH) * texel_bytes(texture);
    let (rows, rest) = (texels / WIDTH, texels % WIDTH);
    let mut encoder = device.create_command_encoder(&Default::default());
    let mut rect = |y: u32, width: u32, height: u32| {
        let buffer = wgpu::TexelCopyBufferInfo {
            buffer,
            layout: wgpu::TexelCopyBufferLayout {
                offset: u64::from(y) * row_bytes,
                bytes_per_row: Some(row_bytes as u32),
                rows_per_image: None,
            },
        };
        let texture = wgpu::TexelCopyTextureInfo {
            texture,
            mip_level: 0,
            origin: wgpu::Origin3d { x: 0, y, z: 0 },
            aspect: wgpu::TextureAspect::All,
        };
        let size = wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        };
        match direction {
            Direction::ToTexture => encoder.copy_buffer_to_texture(buffer, texture, size),
            Direction::ToBuffer => encoder.copy_texture_to_buffer(texture, buffer, size),
        }
    };
    if rows > 0 {
        rect(0, WIDTH, rows);
    }
    if rest > 0 {
        rect(rows, rest, 1);
    }
    encoder
}
