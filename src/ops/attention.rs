//! Multi-head scaled dot-product attention (wgsl/attention.wgsl), fused with an
//! online softmax so the `[Lq, Lk]` scores never exist in memory: attention
//! memory is O(L) for any length and head dim (heads wider than the registers
//! hold, such as the VAE's one head of 512, run `attention_wide`).
//!
//! Tensors are laid out as diffusers' `Attention` and transformers' `CLIPAttention`
//! produce them after the q/k/v projections, heads interleaved in the last dim:
//! `q` `[B, Lq, H*Dh]`, `k`, `v` `[B, Lk, H*Dh]`, `out` `[B, Lq, H*Dh]`, so the
//! op replaces `view/transpose -> F.scaled_dot_product_attention -> transpose/reshape`.

use crate::error::{Error, Result};
use crate::gpu::dispatch::{Gemm, GemmOp};
use crate::gpu::{Access, AdapterClass, Context, Dispatch, Launch, Shader, Tensor};
use crate::ops::matmul::{coop_ready, coop_shader, MatmulVariant};
use crate::ops::variant::subgroups_of_8;
use crate::ops::{expect_activations, expect_shape, groups};
use crate::ops::{ATTENTION, ATTENTION_SUBGROUP, CPU_LOOP_LIMIT};
use crate::ops::{ATTENTION_COOP16, ATTENTION_COOP8};

/// Which kernel runs: `Gpu` stages keys and values in workgroup memory, `Cpu`
/// reads them per lane, `CpuSubgroup` once per 8-lane subgroup
/// (wgsl/attention_subgroup.wgsl; `Cpu` where subgroups are not 8 lanes),
/// `Coop` on cooperative matrices (wgsl/attention_coop.wgsl; `Gpu` without them,
/// and for heads wider than [`MAX_HEAD_DIM`]); `GpuWide` runs `Gpu`'s kernel.
/// A launch's variant is `MatmulVariant::for_problem` of its [`GemmOp::Attention`]
/// problem, so `easel tune`'s measurements choose it as they choose a GEMM's.
pub type AttentionVariant = MatmulVariant;

/// `F.scaled_dot_product_attention`'s options, plus the head count.
#[derive(Clone, Copy, Debug)]
pub struct Sdpa {
    pub heads: usize,
    /// Multiplies `q k^T`; `None` is `1/sqrt(Dh)`, like torch.
    pub scale: Option<f32>,
    /// Query i attends keys j <= i only (torch's `is_causal`, top-left aligned).
    pub is_causal: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    heads: u32,
    lq: u32,
    lk: u32,
    scale: f32,
}

/// Largest head dim the kernel holds in registers (`DH4_MAX` in the shader);
/// wider heads run `attention_wide`, a slice of [`MAX_HEAD_DIM`] columns or
/// fewer per invocation.
pub const MAX_HEAD_DIM: usize = 160;
/// vec4s per K or V tile in workgroup memory (`TILE4` in the shader).
const TILE4: usize = 512;
/// Query rows per workgroup of `attention_coop` (`BQ` in the shader).
const COOP_ROWS: usize = 64;
/// Workgroup memory of `attention_coop`: q [64, 160] and a key tile [16, 160]
/// in f16, scores [64, 16] in f32 and weights in f16, a max and a sum per row.
const COOP_WORKGROUP_BYTES: u32 = 2 * (64 * 160 + 16 * 160) + 4 * 64 * 16 + 2 * 64 * 16 + 8 * 64;

/// `F.scaled_dot_product_attention(q, k, v, is_causal, scale)` per head.
pub fn scaled_dot_product_attention(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    cfg: Sdpa,
) -> Result<Dispatch> {
    let variant = chosen_variant(ctx, q, k, v, out, cfg.heads)?;
    scaled_dot_product_attention_with(ctx, q, k, v, out, cfg, variant)
}

/// The kernel [`scaled_dot_product_attention`] runs for these tensors.
pub fn chosen_variant(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    heads: usize,
) -> Result<AttentionVariant> {
    let dims = Dims::of(q, k, v, out, heads)?;
    Ok(MatmulVariant::for_problem(ctx, dims.problem()))
}

/// [`scaled_dot_product_attention`] with the kernel variant chosen by the caller.
pub fn scaled_dot_product_attention_with(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    cfg: Sdpa,
    variant: AttentionVariant,
) -> Result<Dispatch> {
    let dims = Dims::of(q, k, v, out, cfg.heads)?;
    let Dims { b, lq, lk, h, dh } = dims;
    if let Some(max) = cpu_key_limit(dh).filter(|_| ctx.class == AdapterClass::Cpu) {
        if lk > max {
            return Err(Error::DeviceLimit(format!(
                "attention: {lk} keys of a {dh}-wide head pass what one invocation may loop over \
                 on {} (at most {max} keys); a VAE decodes in tiles that keep within it \
                 (--vae-tiles auto)",
                ctx.info.name
            )));
        }
    }
    expect_activations("attention", q, &[("k", k), ("v", v), ("out", out)])?;
    let entry = Entry::pick(ctx, variant, dh);
    let slices = dh / entry.dv;
    let params = Params {
        heads: h as u32,
        lq: lq as u32,
        lk: lk as u32,
        scale: cfg.scale.unwrap_or(1.0 / (dh as f32).sqrt()),
    };
    let mut constants = vec![
        ("DH", dh as f64),
        ("WG", entry.wg as f64),
        ("TILED", entry.tiled as u32 as f64),
        ("BK", entry.bk as f64),
        ("CAUSAL", cfg.is_causal as u32 as f64),
        ("DV", entry.dv as f64),
    ];
    // q k^T (once per column slice; twice in attention_coop's two passes) and
    // p v: 2 multiply-adds per (query, key, dim); halved when causal.
    let mut score_passes = slices;
    if let Some((subgroup, threads)) = entry.coop {
        constants.extend([
            ("SUBGROUP_SIZE", subgroup as f64),
            ("COOP_THREADS", threads as f64),
        ]);
        score_passes = 2;
    }
    let pairs = (b * h * lq * lk) as u64;
    Launch {
        shader: entry.shader,
        entry: entry.name,
        constants: &constants,
        tensors: &[
            (q, Access::Read),
            (k, Access::Read),
            (v, Access::Read),
            (out, Access::ReadWrite),
        ],
        workgroups: [groups(lq, entry.wg), (b * h) as u32, slices as u32],
        flops: 2 * (score_passes + 1) as u64 * pairs * dh as u64
            / if cfg.is_causal { 2 } else { 1 },
        bytes: (q.dtype.size() * (2 * q.numel() + 2 * k.numel())) as u64,
    }
    .build(ctx, &params)
    .map(|d| d.with_gemm(dims.problem()))
}

/// Batch, query and key lengths, heads and head dim, checked against each other.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    lq: usize,
    lk: usize,
    h: usize,
    dh: usize,
}

impl Dims {
    fn of(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, h: usize) -> Result<Self> {
        const OP: &str = "scaled_dot_product_attention";
        let [b, lq, width] = q.shape[..] else {
            return Err(Error::BadInput(format!(
                "{OP}: q has shape {:?}, expected [B, Lq, H*Dh]",
                q.shape
            )));
        };
        let lk = k.shape.get(1).copied().unwrap_or(0);
        expect_shape(OP, "k", k, &[b, lk, width])?;
        expect_shape(OP, "v", v, &[b, lk, width])?;
        expect_shape(OP, "out", out, &q.shape)?;
        if h == 0 || !width.is_multiple_of(h) || !(width / h).is_multiple_of(4) {
            return Err(Error::BadInput(format!(
                "{OP}: q's last dim {width} with {h} heads needs a head dim that is a multiple of 4"
            )));
        }
        if b == 0 || lq == 0 || lk == 0 {
            return Err(Error::BadInput(format!(
                "{OP}: empty q {:?} or k {:?}",
                q.shape, k.shape
            )));
        }
        let dh = width / h;
        Ok(Self { b, lq, lk, h, dh })
    }

    /// As the tuner classes it: outputs are the score entries, depth the head dim.
    fn problem(&self) -> Gemm {
        Gemm {
            op: GemmOp::Attention,
            batch: self.b * self.h,
            rows: self.lq,
            cols: self.lk,
            depth: self.dh,
        }
    }
}

/// The entry point that runs an attention, with its launch shape: `wg` query
/// rows per workgroup, when `tiled`, `bk` keys per workgroup-memory tile, and
/// `dv` output columns per invocation (the head dim but in `attention_wide`),
/// and for `attention_coop` the subgroup size and threads per workgroup.
struct Entry {
    shader: &'static Shader,
    name: &'static str,
    tiled: bool,
    wg: usize,
    bk: usize,
    dv: usize,
    coop: Option<(u32, u32)>,
}

impl Entry {
    fn pick(ctx: &Context, variant: AttentionVariant, dh: usize) -> Self {
        if dh > MAX_HEAD_DIM {
            return Self::wide(variant, dh);
        }
        if variant == AttentionVariant::Coop {
            if let Some(entry) = Self::coop(ctx, dh) {
                return entry;
            }
        }
        // Cpu: see CPU_ROWS; Gpu (and Coop without cooperative matrices): 64 rows
        // and the largest tile of at most 64 keys that fits 8 KiB.
        let (shader, name, tiled, wg, bk) = match variant {
            AttentionVariant::Gpu | AttentionVariant::GpuWide | AttentionVariant::Coop => {
                let bk = (4 * TILE4 / dh).min(64) / 4 * 4;
                (&ATTENTION, "attention", true, 64, bk)
            }
            // One subgroup of 8 query rows per workgroup (CPU_ROWS is 8 too).
            AttentionVariant::CpuSubgroup | AttentionVariant::CpuTall if subgroups_of_8(ctx) => {
                (&ATTENTION_SUBGROUP, "attention_cpu_subgroup", false, 8, 4)
            }
            _ => (&ATTENTION, "attention", false, CPU_ROWS, 4),
        };
        Self {
            shader,
            name,
            tiled,
            wg,
            bk,
            dv: dh,
            coop: None,
        }
    }

    /// `attention_coop` (wgsl/attention_coop.wgsl), where the cooperative GEMM
    /// passed its self-test and the adapter holds the kernel's workgroup:
    /// [`COOP_ROWS`] query rows in `COOP_ROWS / FRAG` subgroups.
    fn coop(ctx: &Context, dh: usize) -> Option<Self> {
        let coop = coop_ready(ctx)?;
        let threads = COOP_ROWS as u32 / coop.frag * coop.subgroup;
        let limits = ctx.limits();
        let fits = threads >= COOP_ROWS as u32
            && threads <= limits.max_compute_invocations_per_workgroup
            && threads <= limits.max_compute_workgroup_size_x
            && limits.max_compute_workgroup_storage_size >= COOP_WORKGROUP_BYTES;
        fits.then(|| Self {
            shader: coop_shader(coop, [&ATTENTION_COOP8, &ATTENTION_COOP16]),
            name: "attention_coop",
            tiled: false,
            wg: COOP_ROWS,
            bk: 4,
            dv: dh,
            coop: Some((coop.subgroup, threads)),
        })
    }

    /// `attention_wide`: slices of the widest multiple of 4 that divides `dh`
    /// and fits the registers (128 columns of the VAE's 512: 4 slices).
    fn wide(variant: AttentionVariant, dh: usize) -> Self {
        let dv = wide_slice(dh);
        let wg = match variant {
            AttentionVariant::Gpu | AttentionVariant::GpuWide | AttentionVariant::Coop => 64,
            _ => CPU_ROWS,
        };
        Self {
            shader: &ATTENTION,
            name: "attention_wide",
            tiled: false,
            wg,
            bk: 4,
            dv,
            coop: None,
        }
    }
}

/// `attention_wide`'s columns per invocation for a head of `dh`: the widest
/// multiple of 4 that divides it and fits the registers.
fn wide_slice(dh: usize) -> usize {
    (4..=MAX_HEAD_DIM)
        .rev()
        .step_by(4)
        .find(|dv| dh.is_multiple_of(*dv))
        .unwrap_or(4)
}

/// The most keys a head of `dh` may attend to on a CPU driver, or `None` where
/// there is no such bound. `attention_wide` loops over every key for every column
/// of its slice, about `dh/4 + dv/4 + 3` counted iterations per 4 keys, within
/// [`CPU_LOOP_LIMIT`] (1,472 keys for the VAE's 512: 38x38 latents). The fused
/// kernel's per-key loops are unrolled: 13,000 keys of 40 are tested correct.
pub fn cpu_key_limit(dh: usize) -> Option<usize> {
    (dh > MAX_HEAD_DIM).then(|| 4 * CPU_LOOP_LIMIT / (dh / 4 + wide_slice(dh) / 4 + 3))
}

/// Query rows per workgroup on a CPU driver: one SIMD row of lavapipe. Measured
/// there (2 cores), B=2 Lq=256 Lk=77 H=4 Dh=32: 6.5 ms with 8 to 64 rows, 8.6 ms
/// with 4, 10-16 ms TILED; CLIP's causal 77x77 with 8 heads of 64: 1.2 ms with 8
/// or 16 rows, 2.9-4.4 ms with 32-64 (causal rows diverge), 3.4 ms TILED.
/// Giving each invocation 2-4 query rows (so each key load serves several rows)
/// made lavapipe's shader compile take 20-30 s per pipeline, for no clear gain.
const CPU_ROWS: usize = 8;
