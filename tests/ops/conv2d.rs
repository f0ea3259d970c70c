//! wgsl/conv2d.wgsl against tests/reference/conv2d.rs, for every kernel variant.

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::conv2d::Conv2d;
use easel::gpu::dispatch;
use easel::ops::conv2d::{self, Conv2dOptions, ConvVariant};

const VARIANTS: [ConvVariant; 5] = ConvVariant::F32_OPERANDS;

/// (N, Cin, H, W, Cout, kh, kw, stride, padding)
type Case = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    (usize, usize),
    (usize, usize),
);

/// Run one case on `variant` with a bias (weights and inputs uniform in [-1, 1)
/// from `seed`): the output and the reference's.
fn run(case: Case, variant: ConvVariant, seed: u64) -> (Vec<f32>, Vec<f64>) {
    let (n, cin, h, w, cout, kh, kw, stride, padding) = case;
    let mut rng = Rng::new(seed);
    let (x, xh) = random(&mut rng, &[n, cin, h, w]);
    let (weight, wh) = random(&mut rng, &[cout, cin, kh, kw]);
    let (bias, bh) = random(&mut rng, &[cout]);
    let reference = Conv2d {
        x: &xh,
        weight: &wh,
        bias: Some(&bh),
        n,
        cin,
        h,
        w,
        cout,
        kh,
        kw,
        stride,
        padding,
    };
    let (hout, wout) = reference.out_size();
    let out = zeros(&[n, cout, hout, wout]);
    let opts = Conv2dOptions {
        stride,
        padding,
        variant: Some(variant),
        ..Conv2dOptions::default()
    };
    let d = conv2d::conv2d(ctx(), &x, &weight, Some(&bias), &out, &opts).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    (out.to_vec(ctx()).unwrap(), reference.run())
}

/// [`run`] and compare. Each output sums K = Cin·kh·kw products: f32 rounding
/// grows like √K, bounded with margin by 1e-5·√K absolute plus 1e-5 relative.
fn check(case: Case, variant: ConvVariant, seed: u64) {
    let (_, cin, _, _, _, kh, kw, _, _) = case;
    let (got, want) = run(case, variant, seed);
    let atol = 1e-5 * ((cin * kh * kw) as f64).sqrt();
    assert_close(&format!("{variant:?} {case:?}"), &got, &want, atol, 1e-5);
}

/// The subgroup kernels broadcast the weight blocks `Cpu`'s vec4 kernel loads
/// and add them in its order: the same bits, in channel blocks past Cout (70:
/// a 64-channel tall block and one of 6; 12: the 16-channel block), 3x3 padded
/// and 1x1.
#[test]
fn subgroup_kernels_match_vec4_bit_for_bit() {
    let cases: [Case; 3] = [
        (2, 4, 6, 5, 70, 3, 3, (1, 1), (1, 1)),
        (1, 8, 7, 9, 12, 3, 3, (2, 2), (1, 1)),
        (2, 16, 5, 5, 36, 1, 1, (1, 1), (0, 0)),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let (vec4, _) = run(case, ConvVariant::Cpu, 300 + i as u64);
        for variant in [ConvVariant::CpuSubgroup, ConvVariant::CpuTall] {
            let (got, _) = run(case, variant, 300 + i as u64);
            assert!(vec4 == got, "Cpu and {variant:?} differ: {case:?}");
        }
    }
}

#[test]
fn kernel_sizes_strides_padding() {
    let cases: [Case; 9] = [
        // K = 36 with Cout 13 and 20: the subgroup kernel's 16- and 32-channel
        // blocks, each partly past Cout (Cout 5, 8, 9 below take the 8-channel one).
        (2, 4, 6, 5, 13, 3, 3, (1, 1), (1, 1)),
        (1, 4, 5, 6, 20, 3, 3, (1, 1), (1, 1)),
        // 1x1 shortcut, Cin not a multiple of 4, non-square image.
        (2, 3, 5, 7, 6, 1, 1, (1, 1), (0, 0)),
        // 3x3, pad 1: K = 27 (not a multiple of 4), Cout past the 8-channel block.
        (2, 3, 9, 6, 10, 3, 3, (1, 1), (1, 1)),
        // 3x3, pad 0, K = 36 (the vec4 path), odd output width.
        (1, 4, 7, 9, 5, 3, 3, (1, 1), (0, 0)),
        // Downsample: 3x3 stride 2 pad 1 on an odd size.
        (2, 8, 9, 11, 8, 3, 3, (2, 2), (1, 1)),
        // Anisotropic kernel, stride and padding.
        (1, 5, 8, 10, 7, 2, 3, (2, 1), (0, 1)),
        // Kernel as large as the padded input: one output pixel.
        (1, 2, 3, 3, 3, 5, 5, (1, 1), (1, 1)),
        // 1x1 with K % 4 == 0 on a 1x1 image.
        (3, 8, 1, 1, 9, 1, 1, (1, 1), (0, 0)),
    ];
    let mut seed = 1000;
    for variant in VARIANTS {
        for case in cases {
            check(case, variant, seed);
            seed += 1;
        }
    }
}

#[test]
fn several_gpu_tiles_with_ragged_edges() {
    // Cout 136 and 14×14 = 196 pixels: two of GpuWide's 128×128 tiles each way
    // (three of Gpu's 64×64), the second partly past the edge; K = 45.
    let case: Case = (2, 5, 14, 14, 136, 3, 3, (1, 1), (1, 1));
    for (seed, variant) in [(1500, ConvVariant::Gpu), (1501, ConvVariant::GpuWide)] {
        check(case, variant, seed);
    }
}

/// `pad_end`: diffusers' `Downsample2D(padding=0)` (the VAE encoder's), which
/// pads one zero row and column after the input and runs a 3x3 stride-2 conv
/// without padding. The reference pads the input on the host the same way.
/// Same tolerance as `check`.
#[test]
fn pad_end_is_zeros_after_the_last_row_and_column() {
    for (i, (h, w)) in [(8, 6), (7, 9)].into_iter().enumerate() {
        let (n, cin, cout) = (2, 4, 5);
        let mut rng = Rng::new(4000 + i as u64);
        let (x, xh) = random(&mut rng, &[n, cin, h, w]);
        let (weight, wh) = random(&mut rng, &[cout, cin, 3, 3]);
        let (bias, bh) = random(&mut rng, &[cout]);
        // F.pad(x, (0, 1, 0, 1)) on the host.
        let mut padded = vec![0.0f32; n * cin * (h + 1) * (w + 1)];
        for (plane, src) in xh.chunks(h * w).enumerate() {
            for (y, row) in src.chunks(w).enumerate() {
                let at = (plane * (h + 1) + y) * (w + 1);
                padded[at..at + w].copy_from_slice(row);
            }
        }
        let reference = Conv2d {
            x: &padded,
            weight: &wh,
            bias: Some(&bh),
            n,
            cin,
            h: h + 1,
            w: w + 1,
            cout,
            kh: 3,
            kw: 3,
            stride: (2, 2),
            padding: (0, 0),
        };
        let (hout, wout) = reference.out_size();
        for variant in VARIANTS {
            let out = zeros(&[n, cout, hout, wout]);
            let opts = Conv2dOptions {
                pad_end: (1, 1),
                variant: Some(variant),
                ..Conv2dOptions::new(2, 0)
            };
            let d = conv2d::conv2d(ctx(), &x, &weight, Some(&bias), &out, &opts).unwrap();
            dispatch::run(ctx(), &[d]).unwrap();
            let atol = 1e-5 * ((cin * 9) as f64).sqrt();
            let got = out.to_vec(ctx()).unwrap();
            assert_close(
                &format!("{variant:?} {h}x{w}"),
                &got,
                &reference.run(),
                atol,
                1e-5,
            );
        }
    }
}

/// `upsample: 2` (diffusers' Upsample2D in one kernel) against the reference
/// convolution of the input upsampled on the host (`F.interpolate(x,
/// scale_factor=2, mode="nearest")`), 3x3 with padding 1, every variant, odd
/// sizes; same tolerance as `check`.
#[test]
fn upsampled_input_is_the_nearest_upsampling() {
    let (n, cin, h, w, cout) = (2, 6, 5, 7, 9);
    let mut rng = Rng::new(4100);
    let (x, xh) = random(&mut rng, &[n, cin, h, w]);
    let (weight, wh) = random(&mut rng, &[cout, cin, 3, 3]);
    let (bias, bh) = random(&mut rng, &[cout]);
    let up: Vec<f32> = crate::reference::resample::upsample_nearest2d(&xh, [n, cin, h, w], 2)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let reference = Conv2d {
        x: &up,
        weight: &wh,
        bias: Some(&bh),
        n,
        cin,
        h: 2 * h,
        w: 2 * w,
        cout,
        kh: 3,
        kw: 3,
        stride: (1, 1),
        padding: (1, 1),
    };
    for variant in VARIANTS {
        let out = zeros(&[n, cout, 2 * h, 2 * w]);
        let opts = Conv2dOptions {
            upsample: 2,
            variant: Some(variant),
            ..Conv2dOptions::new(1, 1)
        };
        let d = conv2d::conv2d(ctx(), &x, &weight, Some(&bias), &out, &opts).unwrap();
        dispatch::run(ctx(), &[d]).unwrap();
        let atol = 1e-5 * ((cin * 9) as f64).sqrt();
        let got = out.to_vec(ctx()).unwrap();
        assert_close(
            &format!("upsample {variant:?}"),
            &got,
            &reference.run(),
            atol,
            1e-5,
        );
    }
}

#[test]
fn tiny_unet_conv() {
    // The default UNet's widest 3x3 conv at its highest resolution:
    // down_blocks.0 resnets, 32 -> 32 channels at 32x32, batch 2. Also
    // up_blocks' 96 -> 64 at 16x16 (concatenated skip; 96·9 = 864 = K).
    let cases: [Case; 2] = [
        (2, 32, 32, 32, 32, 3, 3, (1, 1), (1, 1)),
        (1, 96, 16, 16, 64, 3, 3, (1, 1), (1, 1)),
    ];
    for variant in VARIANTS {
        for (i, case) in cases.into_iter().enumerate() {
            check(case, variant, 2000 + i as u64);
        }
    }
}

#[test]
fn without_bias_and_bad_shapes() {
    let mut rng = Rng::new(3000);
    let (x, xh) = random(&mut rng, &[1, 2, 4, 4]);
    let (weight, wh) = random(&mut rng, &[3, 2, 3, 3]);
    let out = zeros(&[1, 3, 4, 4]);
    for variant in VARIANTS {
        let opts = Conv2dOptions {
            variant: Some(variant),
            ..Conv2dOptions::new(1, 1)
        };
        let d = conv2d::conv2d(ctx(), &x, &weight, None, &out, &opts).unwrap();
        dispatch::run(ctx(), &[d]).unwrap();
        let want = Conv2d {
            x: &xh,
            weight: &wh,
            bias: None,
            n: 1,
            cin: 2,
            h: 4,
            w: 4,
            cout: 3,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            padding: (1, 1),
        }
        .run();
        assert_close(
            &format!("{variant:?} no bias"),
            &out.to_vec(ctx()).unwrap(),
            &want,
            1e-5 * 18f64.sqrt(),
            1e-5,
        );
    }
    let opts = Conv2dOptions::new(1, 1);
    let err = conv2d::conv2d(ctx(), &x, &zeros(&[3, 5, 3, 3]), None, &out, &opts).unwrap_err();
    assert!(err.to_string().contains("input channels"), "{err}");
    let err = conv2d::conv2d(ctx(), &x, &weight, None, &zeros(&[1, 3, 2, 2]), &opts).unwrap_err();
    assert!(err.to_string().contains("conv2d: out"), "{err}");
    let err = conv2d::conv2d(ctx(), &x, &zeros(&[3, 2, 7, 7]), None, &out, &opts).unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}
