//! Row reductions (wgsl/norm.wgsl): group_norm, layer_norm, l2_normalize, softmax.
//!
//! They live together because each one reduces a contiguous segment of its input
//! (a row, or a group of channels) and rewrites it, so they share the kernel
//! layout, the reduction and the per-adapter variants. Softmax over a whole row is
//! here rather than in attention.wgsl, whose fused kernel never materialises one.
//!
//! Variants: on a CPU driver (lavapipe) one invocation walks a whole segment with
//! no barriers (4 elements per access where they fit); on a GPU a workgroup
//! shares a segment and reduces in workgroup memory, and a group norm of few,
//! long segments splits each into chunks ([`group_norm_split`], two launches).
//! Every op takes the variant from `ctx.class`; the `*_with` forms choose.

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::gpu::{Access, AdapterClass, Context, Dispatch, Launch};
use crate::gpu::{DType, Policy};
use crate::ops::{expect_activations, expect_dtype, expect_shape, grid_1d, groups};
use crate::ops::{CPU_LOOP_LIMIT, NORM};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    segments: u32,
    len: u32,
    spatial: u32,
    groups: u32,
    /// eps for the norms, the scale on x for softmax.
    scalar: f32,
    /// The split group norm's chunks: elements per chunk, chunks per segment.
    chunk_len: u32,
    chunks: u32,
    _pad: u32,
}

/// `torch.nn.GroupNorm`'s arguments, plus an activation fused after the affine.
#[derive(Clone, Copy, Debug)]
pub struct GroupNorm {
    pub num_groups: usize,
    pub eps: f32,
    /// Apply SiLU to the output (diffusers' ResnetBlock2D: `norm1` then `nonlinearity`).
    pub silu: bool,
}

/// Segments per workgroup in the serial (CPU driver) layout: one SIMD row of
/// lavapipe (8 lanes), so a few dozen segments still spread over every core.
/// Measured on lavapipe (2 cores), fastest or tied for every op here, e.g.
/// group_norm [2, 128, 32, 32] / 32 groups: 1.66 ms serial (1.67 ms with 16 lanes,
/// 5.5 ms with 1), against 1.76 ms for 8-wide workgroups with barriers and
/// 3.3 ms for 256-wide ones; softmax [2048, 77]: 0.73 ms against 1.5-85 ms.
const SERIAL_LANES: usize = 8;

/// One launch of a norm.wgsl entry point over `segments` segments of `len` elements.
struct Segments<'a> {
    op: &'static str,
    x: &'a Tensor,
    out: &'a Tensor,
    affine: Option<(&'a Tensor, &'a Tensor)>,
    segments: usize,
    len: usize,
    spatial: usize,
    groups: usize,
    scalar: f32,
    silu: bool,
    /// The entry point's vec4 form (`op` + "4", wgsl/norm.wgsl) fits, used where
    /// the layout is serial and segments are whole vec4s: group_norm's planes
    /// must be whole vec4s too (each vec4 in one channel).
    vec4: bool,
    /// Floating-point operations per element, for `easel bench`.
    flops_per_element: u64,
}

impl<'a> Segments<'a> {
    fn affine(mut self, weight: &'a Tensor, bias: &'a Tensor) -> Self {
        self.affine = Some((weight, bias));
        self
    }

    /// Checks out against x and that there is something to reduce.
    fn check(&self) -> Result<()> {
        expect_shape(self.op, "out", self.out, &self.x.shape)?;
        expect_activations(self.op, self.x, &[("out", self.out)])?;
        if self.segments == 0 || self.len == 0 {
            return Err(Error::BadInput(format!(
                "{}: x has shape {:?}, which has no elements to reduce",
                self.op, self.x.shape
            )));
        }
        Ok(())
    }

    /// The kernel's parameters, unsplit (`chunks` 0).
    fn params(&self) -> Params {
        Params {
            segments: self.segments as u32,
            len: self.len as u32,
            spatial: self.spatial as u32,
            groups: self.groups as u32,
            scalar: self.scalar,
            chunk_len: 0,
            chunks: 0,
            _pad: 0,
        }
    }

    fn build(self, ctx: &Context, class: AdapterClass) -> Result<Dispatch> {
        self.check()?;
        // The two layouts of wgsl/norm.wgsl. On a GPU, short rows get narrower
        // workgroups so fewer lanes idle.
        // A serial invocation loops over its segment three times (statistics
        // twice, then the output), which CPU drivers cap (CPU_LOOP_LIMIT): longer
        // segments (the VAE decoder's 16 x 64 x 64, SD's UNet at 512x512) take
        // the workgroup layout there too.
        let serial = class == AdapterClass::Cpu && 3 * self.len < CPU_LOOP_LIMIT;
        let wg = match (serial, self.len >= 2048) {
            (true, _) => SERIAL_LANES,
            (false, true) => 256,
            (false, false) => 64,
        };
        let vec4 = serial && self.vec4 && self.len.is_multiple_of(4);
        let entry4 = format!("{}4", self.op);
        let workgroups = if serial {
            groups(self.segments, wg)
        } else {
            self.segments as u32
        };
        let mut tensors = vec![(self.x, Access::Read), (self.out, Access::ReadWrite)];
        if let Some((weight, bias)) = self.affine {
            tensors.extend([(weight, Access::Read), (bias, Access::Read)]);
        }
        let n = (self.segments * self.len) as u64;
        Launch {
            shader: &NORM,
            entry: if vec4 { &entry4 } else { self.op },
            constants: &[
                ("SERIAL", serial as u32 as f64),
                ("WG", wg as f64),
                ("SILU", self.silu as u32 as f64),
            ],
            tensors: &tensors,
            workgroups: grid_1d(workgroups),
            flops: self.flops_per_element * n,
            // Read three times (statistics, then output), written once.
            bytes: 4 * self.x.dtype.size() as u64 * n,
        }
        .build(ctx, &self.params())
    }
}

/// `torch.nn.GroupNorm` on `x` `[N, C, *spatial]` (NCHW, or `[N, C, L]`) with
/// affine `weight`, `bias` `[C]`; `out` has `x`'s shape and may not alias it.
pub fn group_norm(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    out: &Tensor,
    cfg: GroupNorm,
) -> Result<Dispatch> {
    group_norm_with(ctx, x, weight, bias, out, cfg, ctx.class)
}

/// [`group_norm`] with the kernel variant chosen by the caller.
pub fn group_norm_with(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    out: &Tensor,
    cfg: GroupNorm,
    class: AdapterClass,
) -> Result<Dispatch> {
    group_segments(x, weight, bias, out, cfg)?.build(ctx, class)
}

/// Group norm's launch over its segments, its operands checked against each other.
fn group_segments<'a>(
    x: &'a Tensor,
    weight: &'a Tensor,
    bias: &'a Tensor,
    out: &'a Tensor,
    cfg: GroupNorm,
) -> Result<Segments<'a>> {
    if x.shape.len() < 2 {
        return Err(Error::BadInput(format!(
            "group_norm: x has shape {:?}, expected [N, C, *spatial]",
            x.shape
        )));
    }
    let (n, c) = (x.shape[0], x.shape[1]);
    let g = cfg.num_groups;
    if g == 0 || !c.is_multiple_of(g) {
        return Err(Error::BadInput(format!(
            "group_norm: x has {c} channels, not divisible into {g} groups"
        )));
    }
    expect_shape("group_norm", "weight", weight, &[c])?;
    expect_shape("group_norm", "bias", bias, &[c])?;
    let spatial: usize = x.shape[2..].iter().product();
    Ok(Segments {
        op: "group_norm",
        x,
        out,
        affine: Some((weight, bias)),
        segments: n * g,
        len: c / g * spatial,
        spatial,
        groups: g,
        scalar: cfg.eps,
        silu: cfg.silu,
        vec4: spatial.is_multiple_of(4),
        flops_per_element: if cfg.silu { 12 } else { 8 },
    })
}

/// Elements per chunk of the split group norm: 256 invocations, 64 each.
const CHUNK: usize = 16_384;

/// Chunks per segment for [`group_norm_split`] on x of `shape` (`[N, C,
/// *spatial]`, `groups` groups), or 1 where one workgroup per segment fills the
/// adapter. `Auto`: on GPUs, fewer than 256 segments of 2 chunks or more (SD's
/// VAE decoder at 512x512: 32 segments of 1M elements, 64 chunks each; its UNet:
/// 64 of 40,960, 3 chunks); CPU drivers keep one invocation per segment.
/// `Always`: at least 2 chunks wherever a segment has 2 elements (`EASEL_SPLIT_NORMS`).
pub fn group_norm_chunks(
    class: AdapterClass,
    policy: Policy,
    shape: &[usize],
    groups: usize,
) -> usize {
    let segments = shape.first().unwrap_or(&0) * groups.max(1);
    let len = shape.iter().product::<usize>() / segments.max(1);
    let chunks = len.div_ceil(CHUNK);
    match (policy, class) {
        (Policy::Always, _) if len >= 2 => chunks.max(2),
        (Policy::Auto, AdapterClass::Gpu) if segments < 256 && chunks >= 2 => chunks,
        _ => 1,
    }
}

/// [`group_norm`] in two launches over `chunks` chunks of each segment (see
/// [`group_norm_chunks`]): each chunk's moments into `moments` (f32, 2 per
/// chunk), then every chunk normalised with its segment's combined moments.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_split(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    moments: &Tensor,
    out: &Tensor,
    cfg: GroupNorm,
    chunks: usize,
) -> Result<[Dispatch; 2]> {
    let whole = group_segments(x, weight, bias, out, cfg)?;
    whole.check()?;
    let (segments, len) = (whole.segments, whole.len);
    let chunk_len = len.div_ceil(chunks.max(1));
    let chunks = len.div_ceil(chunk_len);
    expect_dtype("group_norm", "moments", moments, DType::F32)?;
    if moments.numel() < 2 * segments * chunks {
        return Err(Error::BadInput(format!(
            "group_norm: moments has {} values, {segments} segments of {chunks} chunks need {}",
            moments.numel(),
            2 * segments * chunks
        )));
    }
    let params = Params {
        chunk_len: chunk_len as u32,
        chunks: chunks as u32,
        ..whole.params()
    };
    let launch = |entry, tensors: &[(&Tensor, Access)], bytes| {
        Launch {
            shader: &NORM,
            entry,
            constants: &[("WG", 256.0), ("SILU", cfg.silu as u32 as f64)],
            tensors,
            workgroups: grid_1d((segments * chunks) as u32),
            flops: 6 * (segments * len) as u64,
            bytes,
        }
        .build(ctx, &params)
    };
    let element = x.dtype.size() as u64 * (segments * len) as u64;
    let moments_pass = launch(
        "group_norm_moments",
        &[(x, Access::Read), (moments, Access::ReadWrite)],
        2 * element,
    )?;
    let apply = launch(
        "group_norm_apply",
        &[
            (x, Access::Read),
            (out, Access::ReadWrite),
            (weight, Access::Read),
            (bias, Access::Read),
            (moments, Access::Read),
        ],
        2 * element,
    )?;
    Ok([moments_pass, apply])
}

/// `torch.nn.LayerNorm(D, eps)` over the last dim of `x` `[*, D]`, with
/// `weight`, `bias` `[D]`.
pub fn layer_norm(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    out: &Tensor,
    eps: f32,
) -> Result<Dispatch> {
    layer_norm_with(ctx, x, weight, bias, out, eps, ctx.class)
}

/// [`layer_norm`] with the kernel variant chosen by the caller.
pub fn layer_norm_with(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    out: &Tensor,
    eps: f32,
    class: AdapterClass,
) -> Result<Dispatch> {
    let d = x.dim(-1);
    expect_shape("layer_norm", "weight", weight, &[d])?;
    expect_shape("layer_norm", "bias", bias, &[d])?;
    let layer_norm = rows("layer_norm", x, out, eps, 8).affine(weight, bias);
    Segments {
        vec4: true,
        ..layer_norm
    }
    .build(ctx, class)
}

/// `F.normalize(x, dim=-1)` (eps 1e-12): each row of `x` `[*, D]` divided by
/// `max(||row||_2, 1e-12)`, e.g. CLIP embeddings before a cosine similarity.
pub fn l2_normalize(ctx: &Context, x: &Tensor, out: &Tensor) -> Result<Dispatch> {
    l2_normalize_with(ctx, x, out, ctx.class)
}

/// [`l2_normalize`] with the kernel variant chosen by the caller.
pub fn l2_normalize_with(
    ctx: &Context,
    x: &Tensor,
    out: &Tensor,
    class: AdapterClass,
) -> Result<Dispatch> {
    rows("l2_normalize", x, out, 1e-12, 3).build(ctx, class)
}

/// `torch.softmax(x * scale, dim=-1)` on `x` `[*, D]`.
pub fn softmax(ctx: &Context, x: &Tensor, out: &Tensor, scale: f32) -> Result<Dispatch> {
    softmax_with(ctx, x, out, scale, ctx.class)
}

/// [`softmax`] with the kernel variant chosen by the caller.
pub fn softmax_with(
    ctx: &Context,
    x: &Tensor,
    out: &Tensor,
    scale: f32,
    class: AdapterClass,
) -> Result<Dispatch> {
    rows("softmax", x, out, scale, 8).build(ctx, class)
}

/// A row-wise launch over the last dim of `x`.
fn rows<'a>(
    op: &'static str,
    x: &'a Tensor,
    out: &'a Tensor,
    scalar: f32,
    flops_per_element: u64,
) -> Segments<'a> {
    let len = x.dim(-1);
    Segments {
        op,
        x,
        out,
        affine: None,
        segments: x.numel() / len.max(1),
        len,
        spatial: 1,
        groups: 1,
        scalar,
        silu: false,
        vec4: false,
        flops_per_element,
    }
}
