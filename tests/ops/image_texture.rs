//! Convolution images staged in textures (src/gpu/texture.rs,
//! `EASEL_IMAGE_TEXTURES`, wgsl/stage_image.wgsl, wgsl/image_texture.wgsl):
//! the subgroup kernels compute the very bits from the staged image that they
//! compute gathering from its buffer (tolerance 0: the texels hold the
//! image's own values, f16 ones widened exactly), for f32 and f16 images,
//! batches, padding, strides, `pad_end`, upsampling, 1x1 kernels and images
//! whose elements wrap the texture's rows; convolutions of one size class
//! share one scratch texture, each staging recorded with its convolution.

use half::f16;

use crate::common::{new_context, Rng};
use easel::gpu::{dispatch, Context, DType, Dispatch, Policy, Tensor};
use easel::ops::conv2d::{self, Conv2dOptions};
use easel::ops::matmul::Epilogue;
use easel::ops::matmul::MatmulVariant;

/// A context reading weights through textures, and its subgroup variants
/// (none where the adapter has no 8-lane subgroups: nothing to check).
fn context() -> (Context, Vec<MatmulVariant>) {
    let mut ctx = new_context();
    ctx.weight_textures = Policy::Always;
    let available = MatmulVariant::available(&ctx);
    let variants: Vec<MatmulVariant> = [MatmulVariant::CpuSubgroup, MatmulVariant::CpuTall]
        .into_iter()
        .filter(|v| available.contains(v))
        .collect();
    if variants.is_empty() {
        eprintln!("no subgroup kernels on this adapter: nothing to check");
    }
    (ctx, variants)
}

/// `values` as a tensor of `dtype` (f16: rounded on the host).
fn upload(ctx: &Context, label: &str, dtype: DType, shape: &[usize], values: &[f32]) -> Tensor {
    match dtype {
        DType::F16 => {
            let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            Tensor::from_f16(ctx, label, shape, &halves).unwrap()
        }
        _ => Tensor::from_f32(ctx, label, shape, values).unwrap(),
    }
}

fn output(ctx: &Context, dtype: DType, shape: &[usize]) -> Tensor {
    upload(ctx, "out", dtype, shape, &vec![0.0; shape.iter().product()])
}

/// Run what `build` makes gathering from buffers (`Off`) and from staged
/// textures (`Always`); the outputs, and whether the second run staged.
fn both_ways(
    ctx: &mut Context,
    outs: &[&Tensor],
    build: impl Fn(&Context) -> Vec<Dispatch>,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, bool) {
    let mut run = |policy| {
        ctx.image_textures = policy;
        let d = build(ctx);
        let staged = d.iter().all(|d| d.kernel.label.contains("_textures"));
        dispatch::run(ctx, &d).unwrap();
        let values = outs.iter().map(|o| o.to_vec(ctx).unwrap()).collect();
        (values, staged)
    };
    let (buffer, unstaged) = run(Policy::Off);
    assert!(!unstaged, "no staging with EASEL_IMAGE_TEXTURES=off");
    let (texture, staged) = run(Policy::Always);
    (buffer, texture, staged)
}

/// ([N, Cin, H, W, Cout], [k, stride, padding, pad_end, upsample]).
type Case = ([usize; 5], [usize; 5]);

#[test]
fn conv2d_reads_the_same_bits_from_a_staged_image() {
    let (mut ctx, variants) = context();
    let cases: [Case; 6] = [
        // Batch 2, odd sizes, padding.
        ([2, 8, 9, 7, 16], [3, 1, 1, 0, 1]),
        // 4,800 elements: rows of 2,048 texels wrap twice.
        ([1, 4, 40, 30, 8], [3, 1, 1, 0, 1]),
        // Downsample: stride 2, and stride 2 with pad_end (the VAE encoder's).
        ([2, 8, 9, 11, 8], [3, 2, 1, 0, 1]),
        ([1, 8, 9, 9, 12], [3, 2, 0, 1, 1]),
        // Upsample2D: the nearest-upsampled image read through the texture.
        ([1, 8, 5, 6, 16], [3, 1, 1, 0, 2]),
        // 1x1 (auto does not stage these; always does).
        ([2, 16, 5, 5, 36], [1, 1, 0, 0, 1]),
    ];
    for variant in variants {
        for dtype in [DType::F32, DType::F16] {
            for (i, case) in cases.into_iter().enumerate() {
                let ([n, cin, h, w, cout], [k, stride, pad, end, up]) = case;
                let mut rng = Rng::new(500 + i as u64);
                let x = upload(&ctx, "x", dtype, &[n, cin, h, w], &rng.vec(n * cin * h * w));
                // f16 weights (the default model's) every other case.
                let wv = rng.vec(cout * cin * k * k);
                let weight = match i % 2 {
                    0 => Tensor::weight_f32(&ctx, "weight", &[cout, cin, k, k], &wv).unwrap(),
                    _ => upload(&ctx, "weight", DType::F16, &[cout, cin, k, k], &wv),
                };
                let opts = Conv2dOptions {
                    stride: (stride, stride),
                    padding: (pad, pad),
                    pad_end: (end, end),
                    upsample: up,
                    variant: Some(variant),
                };
                let (hout, wout) = conv2d::output_size(h * up, w * up, k, k, &opts).unwrap();
                let out = output(&ctx, dtype, &[n, cout, hout, wout]);
                // Bias, and a residual of out's shape or one per image and
                // channel (ResnetBlock2D's), scaled: every epilogue.
                let bias = Tensor::from_f32(&ctx, "bias", &[cout], &rng.vec(cout)).unwrap();
                let per_channel = [n, cout, 1, 1];
                let r_shape = if i % 2 == 0 {
                    &out.shape[..]
                } else {
                    &per_channel[..]
                };
                let r_len = r_shape.iter().product();
                let residual = upload(&ctx, "residual", dtype, r_shape, &rng.vec(r_len));
                let epilogue = Epilogue {
                    bias: Some(&bias),
                    residual: Some((&residual, 0.5)),
                };
                let (buffer, texture, staged) = both_ways(&mut ctx, &[&out], |ctx| {
                    conv2d::conv2d_split_with(ctx, &x, &weight, epilogue, &out, &opts).unwrap()
                });
                let what = format!("{variant:?} {dtype:?} {case:?}");
                assert!(staged, "{what}: not staged");
                assert!(buffer == texture, "{what}: staged image and buffer differ");
            }
        }
    }
}

/// Two convolutions of one size class in one pass share a scratch texture:
/// each reads its own image (its staging runs just before it), and the
/// texture counts once.
#[test]
fn convolutions_share_a_scratch_texture() {
    let (mut ctx, variants) = context();
    let Some(&variant) = variants.first() else {
        return;
    };
    let (n, cin, hw, cout) = (2, 8, 6, 8);
    let mut rng = Rng::new(600);
    let xs: Vec<Tensor> = (0..2)
        .map(|_| {
            upload(
                &ctx,
                "x",
                DType::F32,
                &[n, cin, hw, hw],
                &rng.vec(n * cin * hw * hw),
            )
        })
        .collect();
    let wv = rng.vec(cout * cin * 9);
    let weight = Tensor::weight_f32(&ctx, "weight", &[cout, cin, 3, 3], &wv).unwrap();
    let outs: Vec<Tensor> = (0..2)
        .map(|_| output(&ctx, DType::F32, &[n, cout, hw, hw]))
        .collect();
    let opts = Conv2dOptions {
        variant: Some(variant),
        ..Conv2dOptions::new(1, 1)
    };
    let build = |ctx: &Context| {
        (xs.iter().zip(&outs))
            .map(|(x, out)| conv2d::conv2d(ctx, x, &weight, None, out, &opts).unwrap())
            .collect::<Vec<Dispatch>>()
    };
    let (buffer, texture, staged) = both_ways(&mut ctx, &[&outs[0], &outs[1]], build);
    assert!(staged);
    assert!(
        buffer != vec![buffer[0].clone(); 2],
        "the two images differ"
    );
    assert!(buffer == texture, "each convolution reads its own image");
    // Bytes the first `count` launches add: the second adds no texture.
    ctx.image_textures = Policy::Always;
    let added = |count: usize| {
        let before = ctx.live_bytes();
        let d: Vec<Dispatch> = build(&ctx).into_iter().take(count).collect();
        let added = ctx.live_bytes() - before;
        drop(d);
        assert_eq!(ctx.live_bytes(), before, "freed with its launches");
        added
    };
    let (one, two) = (added(1), added(2));
    assert_eq!(
        2 * one - two,
        2048 * 4,
        "one scratch texture: a row of r32float texels"
    );
}
