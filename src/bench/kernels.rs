//! `easel bench kernels`: every kernel family, and every variant of it, at the
//! shapes the default model runs (batch 8 = 4 candidates × (1 + 1 prompt) in the
//! UNet), each timed alone by the profiler and set against the adapter's
//! attainable peak from [`crate::bench::peak`]: FLOP-bound kernels (matmul,
//! conv2d, attention) against the FMA figure, memory-bound ones (elementwise,
//! norms) against copy bandwidth. `quick` runs tiny shapes and only the
//! variant the adapter would use, for tests.
//!
//! With a model folder (`--model DIR`), the rows are instead the launches of
//! that model's own forward passes, as the engine plans them: the UNet at batch
//! 2 (one candidate with guidance) at its `sample_size`, and the VAE decoder
//! on latents of that size. Each distinct launch (same kernel, workgroups,
//! FLOPs and bytes) is timed alone once, with how often the pass makes it
//! ([`crate::bench::model_kernels`]), and with `--variant` also on other kernels.

use serde_json::{json, Value};

use crate::bench::model_kernels::model_launches;
use crate::bench::peak;
use crate::bench::row::{table, Bound};
pub use crate::bench::runner::KernelOptions;
use crate::bench::runner::Runner;
use crate::error::{Error, Result};
use crate::gpu::profiler::Profiler;
use crate::gpu::{AdapterClass, Context};
use crate::ops::attention::{self, AttentionVariant, Sdpa};
use crate::ops::conv2d::{self, Conv2dOptions};
use crate::ops::elementwise::{self, Activation, BinaryOp};
use crate::ops::matmul::{self, MatmulOptions, MatmulVariant};
use crate::ops::norm::{self, GroupNorm};

/// Measure the peak, then every kernel; returns the `peak` and `kernels` sections.
pub fn run(ctx: &Context, profiler: &Profiler, opts: &KernelOptions) -> Result<(Value, Value)> {
    println!("attainable peak:");
    let (peak, peak_section) = peak::run(ctx, profiler, opts.quick)?;
    println!("\nkernels (% of the FMA peak if compute-bound, of copy bandwidth if memory-bound):");
    let mut r = Runner {
        ctx,
        profiler,
        opts,
        peak,
        table: table(),
        rows: Vec::new(),
    };
    if let Some(dir) = &opts.model {
        for name in ["unet", "vae"] {
            // A pixel-space model (the default one) has no VAE to time.
            if name == "vae" && !dir.join(name).exists() {
                eprintln!("no vae in {}: a pixel-space model", dir.display());
                continue;
            }
            model_launches(&mut r, &dir.join(name), name)?;
        }
        return Ok((peak_section, json!(r.rows)));
    }
    matmuls(&mut r)?;
    convs(&mut r)?;
    attentions(&mut r)?;
    norms(&mut r)?;
    elementwises(&mut r)?;
    Ok((peak_section, json!(r.rows)))
}

/// (label, batch, M, N, K, transpose_b, b shared by the batch)
type MatmulShape = (&'static str, usize, usize, usize, usize, bool, bool);

const MATMUL_SHAPES: &[MatmulShape] = &[
    ("256^3", 1, 256, 256, 256, false, false),
    ("512^3", 1, 512, 512, 512, false, false),
    ("1024^3", 1, 1024, 1024, 1024, false, false),
    // GEGLU projection of the UNet's 8x8 transformer: 8 images x 64 tokens, 64 -> 512.
    ("linear [512,64]x[512,64]^T", 1, 512, 512, 64, true, true),
    // CLIP text MLP fc1: 8 prompts x 77 tokens, 128 -> 512.
    ("linear [616,128]x[512,128]^T", 1, 616, 512, 128, true, true),
];
const QUICK_MATMUL_SHAPES: &[MatmulShape] = &[("64^3", 1, 64, 64, 64, false, false)];

fn matmuls(r: &mut Runner) -> Result<()> {
    let shapes = r.shapes(MATMUL_SHAPES, QUICK_MATMUL_SHAPES);
    for &(label, batch, m, n, k, transpose_b, b_shared) in shapes {
        if !r.wants("matmul", label) {
            continue;
        }
        let a = r.random(&[batch, m, k], 1)?;
        let b_mat = if transpose_b { [n, k] } else { [k, n] };
        let b = if b_shared {
            r.random(&b_mat, 2)?
        } else {
            r.random(&[batch, b_mat[0], b_mat[1]], 2)?
        };
        let bias = r.random(&[n], 3)?;
        let c = r.zeros(&[batch, m, n])?;
        for variant in r.variants(
            &MatmulVariant::available(r.ctx),
            MatmulVariant::for_adapter(r.ctx),
        ) {
            // `b` is fixed from run to run, as a layer's weight is: read as
            // one (through its texture copy where the adapter does so).
            let opts = MatmulOptions {
                transpose_b,
                variant: Some(variant),
                weight_b: true,
                ..MatmulOptions::default()
            };
            let d = matmul::matmul(r.ctx, &a, &b, Some(&bias), &c, &opts)?;
            r.add("matmul", &format!("{variant:?}"), label, d, Bound::Compute)?;
        }
    }
    Ok(())
}

/// (label, N, Cin, H, W, Cout, kernel, stride, padding)
type ConvShape = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

const CONV_SHAPES: &[ConvShape] = &[
    // Default UNet (block_out_channels 16, 32, 64, 112 at 32, 16, 8, 4 px), batch 8.
    ("8x3x32x32 -> 16, 3x3 (conv_in)", 8, 3, 32, 32, 16, 3, 1, 1),
    ("8x16x32x32 -> 16, 3x3", 8, 16, 32, 32, 16, 3, 1, 1),
    ("8x32x16x16 -> 32, 3x3", 8, 32, 16, 16, 32, 3, 1, 1),
    ("8x64x8x8 -> 64, 3x3", 8, 64, 8, 8, 64, 3, 1, 1),
    ("8x112x4x4 -> 112, 3x3", 8, 112, 4, 4, 112, 3, 1, 1),
    ("8x16x32x32 -> 16, 3x3 s2", 8, 16, 32, 32, 16, 3, 2, 1),
    ("8x32x16x16 -> 64, 1x1", 8, 32, 16, 16, 64, 1, 1, 0),
    // SRVGGNetCompact body (num_feat 32) on the 32x32 winner.
    (
        "1x32x32x32 -> 32, 3x3 (upscaler)",
        1,
        32,
        32,
        32,
        32,
        3,
        1,
        1,
    ),
];
const QUICK_CONV_SHAPES: &[ConvShape] = &[("1x8x8x8 -> 8, 3x3", 1, 8, 8, 8, 8, 3, 1, 1)];

fn convs(r: &mut Runner) -> Result<()> {
    let shapes = r.shapes(CONV_SHAPES, QUICK_CONV_SHAPES);
    for &(label, n, cin, h, w, cout, kernel, stride, padding) in shapes {
        if !r.wants("conv2d", label) {
            continue;
        }
        let x = r.random(&[n, cin, h, w], 4)?;
        let weight = r.random(&[cout, cin, kernel, kernel], 5)?;
        let bias = r.random(&[cout], 6)?;
        let opts = Conv2dOptions::new(stride, padding);
        let (hout, wout) = conv2d::output_size(h, w, kernel, kernel, &opts)
            .ok_or_else(|| Error::BadInput(format!("conv2d {label}: empty output")))?;
        let y = r.zeros(&[n, cout, hout, wout])?;
        for variant in r.variants(
            &MatmulVariant::available(r.ctx),
            MatmulVariant::for_adapter(r.ctx),
        ) {
            let opts = Conv2dOptions {
                variant: Some(variant),
                ..opts
            };
            let d = conv2d::conv2d(r.ctx, &x, &weight, Some(&bias), &y, &opts)?;
            r.add("conv2d", &format!("{variant:?}"), label, d, Bound::Compute)?;
        }
    }
    Ok(())
}

/// (label, B, Lq, Lk, width = heads x head dim, heads, causal)
type AttentionShape = (&'static str, usize, usize, usize, usize, usize, bool);

const ATTENTION_SHAPES: &[AttentionShape] = &[
    // The default UNet's transformers (4 heads), batch 8.
    ("self 8x8: [8,64,64] 4 heads", 8, 64, 64, 64, 4, false),
    ("cross 8x8: [8,64,64] x 77 tokens", 8, 64, 77, 64, 4, false),
    ("self 4x4: [8,16,112] 4 heads", 8, 16, 16, 112, 4, false),
    // CLIP towers (128 wide, 4 heads): causal text, 65-token vision.
    ("clip text: [8,77,128] causal", 8, 77, 77, 128, 4, true),
    ("clip vision: [8,65,128]", 8, 65, 65, 128, 4, false),
];
const QUICK_ATTENTION_SHAPES: &[AttentionShape] = &[("[1,16,16] 2 heads", 1, 16, 16, 16, 2, false)];

const CLASSES: [AdapterClass; 2] = [AdapterClass::Gpu, AdapterClass::Cpu];

fn attentions(r: &mut Runner) -> Result<()> {
    let shapes = r.shapes(ATTENTION_SHAPES, QUICK_ATTENTION_SHAPES);
    for &(label, b, lq, lk, width, heads, is_causal) in shapes {
        if !r.wants("attention", label) {
            continue;
        }
        let q = r.random(&[b, lq, width], 7)?;
        let k = r.random(&[b, lk, width], 8)?;
        let v = r.random(&[b, lk, width], 9)?;
        let out = r.zeros(&[b, lq, width])?;
        let cfg = Sdpa {
            heads,
            scale: None,
            is_causal,
        };
        let own = attention::chosen_variant(r.ctx, &q, &k, &v, &out, heads)?;
        for variant in r.variants(&AttentionVariant::ALL, own) {
            let d = attention::scaled_dot_product_attention_with(
                r.ctx, &q, &k, &v, &out, cfg, variant,
            )?;
            r.add(
                "attention",
                &format!("{variant:?}"),
                label,
                d,
                Bound::Compute,
            )?;
        }
    }
    Ok(())
}

/// (label, shape, group_norm groups or 0 for layer_norm over the last dim)
type NormShape = (&'static str, &'static [usize], usize);

const NORM_SHAPES: &[NormShape] = &[
    // The default UNet's GroupNorm(8) + SiLU at its largest and an inner level.
    ("group [8,16,32,32] / 8 + silu", &[8, 16, 32, 32], 8),
    ("group [8,64,8,8] / 8 + silu", &[8, 64, 8, 8], 8),
    // LayerNorm of the UNet's 8x8 transformer and of CLIP's text tower.
    ("layer [8,64,64]", &[8, 64, 64], 0),
    ("layer [8,77,128]", &[8, 77, 128], 0),
];
const QUICK_NORM_SHAPES: &[NormShape] = &[
    ("group [1,8,8,8] / 4 + silu", &[1, 8, 8, 8], 4),
    ("layer [16,32]", &[16, 32], 0),
];

fn norms(r: &mut Runner) -> Result<()> {
    let shapes = r.shapes(NORM_SHAPES, QUICK_NORM_SHAPES);
    for &(label, shape, groups) in shapes {
        let kernel = if groups > 0 {
            "group_norm"
        } else {
            "layer_norm"
        };
        if !r.wants(kernel, label) {
            continue;
        }
        let x = r.random(shape, 10)?;
        let width = if groups > 0 {
            shape[1]
        } else {
            shape[shape.len() - 1]
        };
        let weight = r.random(&[width], 11)?;
        let bias = r.random(&[width], 12)?;
        let out = r.zeros(shape)?;
        for class in r.variants(&CLASSES, r.ctx.class) {
            let d = if groups > 0 {
                let cfg = GroupNorm {
                    num_groups: groups,
                    eps: 1e-5,
                    silu: true,
                };
                norm::group_norm_with(r.ctx, &x, &weight, &bias, &out, cfg, class)?
            } else {
                norm::layer_norm_with(r.ctx, &x, &weight, &bias, &out, 1e-5, class)?
            };
            r.add(kernel, &format!("{class:?}"), label, d, Bound::Memory)?;
        }
    }
    Ok(())
}

/// (label, a's shape, b's shape or empty for unary SiLU, op)
type ElementwiseShape = (&'static str, &'static [usize], &'static [usize], BinaryOp);

const ELEMENTWISE_SHAPES: &[ElementwiseShape] = &[
    // Residual add and time-embedding broadcast of the default UNet, batch 8.
    (
        "add [8,16,32,32]",
        &[8, 16, 32, 32],
        &[8, 16, 32, 32],
        BinaryOp::Add,
    ),
    (
        "add [8,32,16,16] + [8,32,1,1]",
        &[8, 32, 16, 16],
        &[8, 32, 1, 1],
        BinaryOp::Add,
    ),
    // The upscaler's per-channel PReLU.
    (
        "prelu [1,32,32,32] slope [32,1,1]",
        &[1, 32, 32, 32],
        &[32, 1, 1],
        BinaryOp::Prelu,
    ),
    ("silu [8,16,32,32]", &[8, 16, 32, 32], &[], BinaryOp::Add),
];
const QUICK_ELEMENTWISE_SHAPES: &[ElementwiseShape] =
    &[("add [1,8,8,8]", &[1, 8, 8, 8], &[1, 8, 8, 8], BinaryOp::Add)];

fn elementwises(r: &mut Runner) -> Result<()> {
    let shapes = r.shapes(ELEMENTWISE_SHAPES, QUICK_ELEMENTWISE_SHAPES);
    for &(label, a_shape, b_shape, op) in shapes {
        if !r.wants("elementwise", label) {
            continue;
        }
        let a = r.random(a_shape, 13)?;
        let out = r.zeros(a_shape)?;
        let d = if b_shape.is_empty() {
            elementwise::unary(r.ctx, &a, &out, Activation::Silu, 1.0, 0.0)?
        } else {
            let b = r.random(b_shape, 14)?;
            elementwise::binary(r.ctx, &a, &b, &out, op, 1.0)?
        };
        r.add("elementwise", "-", label, d, Bound::Memory)?;
    }
    Ok(())
}
