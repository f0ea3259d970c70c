//! Activations in f16 (wgsl/act_f16.wgsl, `--precision f16`): every op with an
//! f16 form against its CPU reference, on every kernel variant that runs here.
//!
//! Inputs are rounded to f16 on the host and the reference computes in f64 on
//! the same rounded values, so what differs is the kernels' f32 arithmetic
//! (the f32 tolerances of the op's own tests) and the one rounding of each
//! output to f16: at most 2^-11 (4.9e-4) of its magnitude, or 2^-25 near 0.
//! The tolerances below are rtol 1e-3 (twice that rounding) plus the f32
//! atol; a kernel that read f16 as f32 (or the halves of a word swapped)
//! would be off by orders of magnitude.

use half::f16;

use crate::common::{assert_close, ctx, random, Rng};
use crate::reference::attention::{self as attention_ref, Shape as AttnShape};
use crate::reference::conv2d::Conv2d;
use crate::reference::elementwise as elementwise_ref;
use crate::reference::layout as layout_ref;
use crate::reference::matmul::Matmul;
use crate::reference::norm as norm_ref;
use crate::reference::resample as resample_ref;
use easel::gpu::{dispatch, AdapterClass, DType, Dispatch, Tensor};
use easel::ops::attention::{self, AttentionVariant, Sdpa};
use easel::ops::cast;
use easel::ops::conv2d::{self, Conv2dOptions, ConvVariant};
use easel::ops::elementwise::{self, Activation, BinaryOp};
use easel::ops::layout::{self, PermuteVariant};
use easel::ops::matmul::{self, Epilogue, MatmulOptions, MatmulVariant};
use easel::ops::norm::{self, GroupNorm};
use easel::ops::resample;
use easel::weights::RowOrder;

const RTOL: f64 = 1e-3;

/// Seeded values in [-1, 1) rounded to f16, as an f16 activation; the host
/// copy holds the rounded values.
fn half_input(rng: &mut Rng, shape: &[usize]) -> (Tensor, Vec<f32>) {
    half_of(&rng.vec(shape.iter().product()), shape)
}

fn half_of(values: &[f32], shape: &[usize]) -> (Tensor, Vec<f32>) {
    let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
    let t = Tensor::from_f16(ctx(), "f16 activation", shape, &halves).unwrap();
    (t, halves.iter().map(|h| h.to_f32()).collect())
}

/// An f32 weight whose values lie on the f16 grid: the cooperative kernels
/// stage operands as f16, so on them too only the output's rounding remains.
fn grid_f32(rng: &mut Rng, shape: &[usize]) -> (Tensor, Vec<f32>) {
    let values: Vec<f32> = (rng.vec(shape.iter().product()).iter())
        .map(|&v| f16::from_f32(v).to_f32())
        .collect();
    (
        Tensor::from_f32(ctx(), "f32 weight", shape, &values).unwrap(),
        values,
    )
}

fn half_output(shape: &[usize]) -> Tensor {
    let zeros = vec![f16::ZERO; shape.iter().product()];
    Tensor::from_f16(ctx(), "f16 output", shape, &zeros).unwrap()
}

fn run(dispatches: &[Dispatch], out: &Tensor) -> Vec<f32> {
    assert_eq!(out.dtype, DType::F16);
    dispatch::run(ctx(), dispatches).unwrap();
    out.to_vec(ctx()).unwrap()
}

/// nn.Linear-shaped products with bias, f32 and f16 weights, on every variant
/// (odd shapes reach the scalar entry points; `Coop` runs the cooperative
/// twins where the adapter has them, else the tiled kernel), and the residual
/// epilogue at the adapter's own variant (`linear_with`).
#[test]
fn f16_matmul_matches_reference_on_every_variant() {
    for variant in MatmulVariant::ALL {
        for (m, n, k, f16_weight) in [(5, 13, 7, false), (33, 70, 64, false), (33, 70, 64, true)] {
            let mut rng = Rng::new(3 + k as u64);
            let (x, xh) = half_input(&mut rng, &[m, k]);
            let (w, wh) = if f16_weight {
                half_input(&mut rng, &[n, k])
            } else {
                grid_f32(&mut rng, &[n, k])
            };
            let (bias, bias_h) = random(&mut rng, &[n]);
            let out = half_output(&[m, n]);
            let opts = MatmulOptions {
                transpose_b: true,
                variant: Some(variant),
                ..MatmulOptions::default()
            };
            let d = matmul::matmul(ctx(), &x, &w, Some(&bias), &out, &opts).unwrap();
            let want = linear_ref(&xh, &wh, &bias_h, [m, n, k]);
            let what = format!("f16 matmul {variant:?} m={m} n={n} k={k} f16 weight {f16_weight}");
            assert_close(&what, &run(&[d], &out), &want, 1e-4, RTOL);
        }
    }
    let (m, n, k) = (9, 24, 16);
    let mut rng = Rng::new(5);
    let (x, xh) = half_input(&mut rng, &[m, k]);
    let (w, wh) = random(&mut rng, &[n, k]);
    let (bias, bias_h) = random(&mut rng, &[n]);
    let (res, res_h) = half_input(&mut rng, &[m, n]);
    let out = half_output(&[m, n]);
    let epilogue = Epilogue {
        bias: Some(&bias),
        residual: Some((&res, 1.0)),
    };
    let ds = matmul::linear_with(ctx(), &x, &w, epilogue, &out, &MatmulOptions::linear()).unwrap();
    let want: Vec<f64> = linear_ref(&xh, &wh, &bias_h, [m, n, k])
        .iter()
        .zip(&res_h)
        .map(|(p, &r)| p + r as f64)
        .collect();
    assert_close("f16 linear + residual", &run(&ds, &out), &want, 1e-4, RTOL);
}

/// `x · wᵀ + bias` in f64.
fn linear_ref(x: &[f32], w: &[f32], bias: &[f32], [m, n, k]: [usize; 3]) -> Vec<f64> {
    Matmul {
        a: x,
        b: w,
        bias: Some(bias),
        batch: 1,
        m,
        n,
        k,
        transpose_a: false,
        transpose_b: true,
        b_shared: true,
        alpha: 1.0,
    }
    .run()
}

/// 3x3 convolution, padding 1, with bias and a residual, on every variant.
#[test]
fn f16_conv2d_matches_reference_on_every_variant() {
    for variant in MatmulVariant::ALL {
        let (n, cin, h, w, cout) = (2, 5, 9, 7, 12);
        let mut rng = Rng::new(17);
        let (x, xh) = half_input(&mut rng, &[n, cin, h, w]);
        let (weight, wh) = grid_f32(&mut rng, &[cout, cin, 3, 3]);
        let (bias, bias_h) = random(&mut rng, &[cout]);
        let (res, res_h) = half_input(&mut rng, &[n, cout, h, w]);
        let out = half_output(&[n, cout, h, w]);
        let opts = Conv2dOptions {
            variant: Some(variant as ConvVariant),
            ..Conv2dOptions::new(1, 1)
        };
        let epilogue = Epilogue {
            bias: Some(&bias),
            residual: Some((&res, 0.5)),
        };
        let ds = conv2d::conv2d_split_with(ctx(), &x, &weight, epilogue, &out, &opts).unwrap();
        let conv = Conv2d {
            x: &xh,
            weight: &wh,
            bias: Some(&bias_h),
            n,
            cin,
            h,
            w,
            cout,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            padding: (1, 1),
        }
        .run();
        let want: Vec<f64> = conv
            .iter()
            .zip(&res_h)
            .map(|(c, &r)| (c + r as f64) * 0.5)
            .collect();
        let what = format!("f16 conv2d {variant:?}");
        assert_close(&what, &run(&ds, &out), &want, 1e-4, RTOL);
    }
}

/// Group norm (+ SiLU) and layer norm in both layouts: statistics in f32 over
/// f16 inputs (planes of 30 and 24 elements: the CPU layout reads the second
/// 4 at a time).
#[test]
fn f16_norms_match_reference_in_both_layouts() {
    for class in [AdapterClass::Cpu, AdapterClass::Gpu] {
        let mut rng = Rng::new(29);
        for shape in [[2, 8, 6, 5], [2, 8, 4, 6]] {
            let (x, xh) = half_input(&mut rng, &shape);
            let (weight, wh) = random(&mut rng, &[8]);
            let (bias, bh) = random(&mut rng, &[8]);
            let out = half_output(&shape);
            let cfg = GroupNorm {
                num_groups: 4,
                eps: 1e-5,
                silu: true,
            };
            let d = norm::group_norm_with(ctx(), &x, &weight, &bias, &out, cfg, class).unwrap();
            let want = norm_ref::group_norm(&xh, &shape, &wh, &bh, 4, 1e-5, true);
            assert_close(
                &format!("f16 group_norm {shape:?} {class:?}"),
                &run(&[d], &out),
                &want,
                1e-4,
                RTOL,
            );
        }

        let (x, xh) = half_input(&mut rng, &[3, 7, 40]);
        let (weight, wh) = random(&mut rng, &[40]);
        let (bias, bh) = random(&mut rng, &[40]);
        let out = half_output(&[3, 7, 40]);
        let d = norm::layer_norm_with(ctx(), &x, &weight, &bias, &out, 1e-5, class).unwrap();
        let want = norm_ref::layer_norm(&xh, 40, &wh, &bh, 1e-5);
        assert_close(
            &format!("f16 layer_norm {class:?}"),
            &run(&[d], &out),
            &want,
            1e-4,
            RTOL,
        );
    }
}

/// Attention on every variant, a UNet-like head (40) and a VAE-like wide one
/// (512, attention_wide): softmax and sums in f32.
#[test]
fn f16_attention_matches_reference_on_every_variant() {
    for variant in MatmulVariant::ALL {
        for (heads, dh, lq, lk) in [(2, 40, 19, 23), (1, 512, 9, 13)] {
            let s = AttnShape {
                b: 2,
                lq,
                lk,
                heads,
                dh,
            };
            let mut rng = Rng::new(41 + dh as u64);
            let (q, qh) = half_input(&mut rng, &[2, lq, heads * dh]);
            let (k, kh) = half_input(&mut rng, &[2, lk, heads * dh]);
            let (v, vh) = half_input(&mut rng, &[2, lk, heads * dh]);
            let out = half_output(&[2, lq, heads * dh]);
            let cfg = Sdpa {
                heads,
                scale: None,
                is_causal: false,
            };
            let d = attention::scaled_dot_product_attention_with(
                ctx(),
                &q,
                &k,
                &v,
                &out,
                cfg,
                variant as AttentionVariant,
            )
            .unwrap();
            let scale = 1.0 / (dh as f64).sqrt();
            let want = attention_ref::scaled_dot_product_attention(&qh, &kh, &vh, s, scale, false);
            let what = format!("f16 attention {variant:?} dh={dh}");
            // The cooperative kernel also rounds the softmax weights to f16:
            // 1e-3 more (tests/ops/coop.rs), where it runs.
            let coop = variant == MatmulVariant::Coop && ctx().coop.is_some() && dh <= 160;
            let atol = if coop { 2e-3 } else { 1e-4 };
            assert_close(&what, &run(&[d], &out), &want, atol, RTOL);
        }
    }
}

/// SiLU (vec4 and scalar entry points), broadcast and same-shape adds, GEGLU.
#[test]
fn f16_elementwise_matches_reference() {
    let mut rng = Rng::new(53);
    for n in [64, 63] {
        let (x, xh) = half_input(&mut rng, &[n]);
        let out = half_output(&[n]);
        let d = elementwise::unary(ctx(), &x, &out, Activation::Silu, 2.0, 0.5).unwrap();
        let want: Vec<f64> = xh
            .iter()
            .map(|&v| elementwise_ref::silu(v as f64) * 2.0 + 0.5)
            .collect();
        assert_close(
            &format!("f16 silu n={n}"),
            &run(&[d], &out),
            &want,
            1e-5,
            RTOL,
        );
    }
    let shape = [2, 3, 4, 5];
    let (a, ah) = half_input(&mut rng, &shape);
    for b_shape in [vec![2, 3, 1, 1], vec![5], shape.to_vec()] {
        let (b, bh) = half_input(&mut rng, &b_shape);
        let out = half_output(&shape);
        let d = elementwise::binary(ctx(), &a, &b, &out, BinaryOp::Add, 1.0).unwrap();
        let want: Vec<f64> = (0..ah.len())
            .map(|i| {
                ah[i] as f64 + bh[elementwise_ref::broadcast_index(&shape, &b_shape, i)] as f64
            })
            .collect();
        assert_close(
            &format!("f16 add b={b_shape:?}"),
            &run(&[d], &out),
            &want,
            1e-5,
            RTOL,
        );
    }
}

/// GEGLU in net.0.proj's store with f16 activations, on every variant: hidden
/// and gate are rounded to f16 before they are combined (as the separate kernel
/// read them), so the reference rounds them too. What remains is the f32 GEMM
/// error, which may move a hidden or gate value across an f16 rounding
/// boundary (one f16 ulp of values below 4 with x scaled by 1/4: under 2e-3
/// after gelu), and the output's rounding (RTOL).
#[test]
fn f16_linear_geglu_matches_reference_on_every_variant() {
    let (m, d, k) = (19, 12, 32);
    for variant in MatmulVariant::ALL {
        let mut rng = Rng::new(17);
        let x: Vec<f32> = rng.vec(m * k).iter().map(|v| v / 4.0).collect();
        let (x, xh) = half_of(&x, &[m, k]);
        let (_, wh) = grid_f32(&mut rng, &[2 * d, k]);
        let bias_h = rng.vec(2 * d);
        let interleaved = |v: &[f32]| RowOrder::HalvesInterleaved.apply(v, 2 * d).into_owned();
        let w = Tensor::from_f32(ctx(), "w", &[2 * d, k], &interleaved(&wh)).unwrap();
        let bias = Tensor::from_f32(ctx(), "bias", &[2 * d], &interleaved(&bias_h)).unwrap();
        let out = half_output(&[m, d]);
        let opts = MatmulOptions {
            variant: Some(variant),
            ..MatmulOptions::linear_geglu()
        };
        let ds = matmul::linear_with(ctx(), &x, &w, Epilogue::bias(Some(&bias)), &out, &opts);
        let rounded: Vec<f64> = linear_ref(&xh, &wh, &bias_h, [m, 2 * d, k])
            .iter()
            .map(|&y| f16::from_f64(y).to_f64())
            .collect();
        let want = elementwise_ref::geglu(&rounded, d);
        let what = format!("f16 linear GEGLU {variant:?}");
        assert_close(&what, &run(&ds.unwrap(), &out), &want, 2e-3, RTOL);
    }
}

/// Nearest upsampling and average pooling, NCHW.
#[test]
fn f16_resample_matches_reference() {
    let s = [2, 3, 5, 4];
    let mut rng = Rng::new(61);
    let (x, xh) = half_input(&mut rng, &s);
    let out = half_output(&[2, 3, 10, 8]);
    let d = resample::upsample_nearest2d(ctx(), &x, &out, 2).unwrap();
    let want = resample_ref::upsample_nearest2d(&xh, s, 2);
    assert_close("f16 upsample_nearest2d", &run(&[d], &out), &want, 0.0, 0.0);
    let out = half_output(&[2, 3, 2, 2]);
    let d = resample::avg_pool2d(ctx(), &x, &out).unwrap();
    let want = resample_ref::avg_pool2d(&xh, s);
    assert_close("f16 avg_pool2d", &run(&[d], &out), &want, 1e-6, RTOL);
}

/// Permutes (both variants) and concat move f16 values bit for bit.
#[test]
fn f16_layout_copies_are_exact() {
    let shape = [2, 6, 5, 3];
    let mut rng = Rng::new(67);
    let (x, xh) = half_input(&mut rng, &shape);
    for variant in [PermuteVariant::Direct, PermuteVariant::Tiled] {
        let dims = [0, 2, 3, 1];
        let out = half_output(&[2, 5, 3, 6]);
        let d = layout::permute_with(ctx(), &x, &dims, &out, variant).unwrap();
        let want: Vec<f64> = layout_ref::permute(&xh, &shape, &dims)
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_close(
            &format!("f16 permute {variant:?}"),
            &run(&[d], &out),
            &want,
            0.0,
            0.0,
        );
    }
    // Along dim 1 rows are 15 halves (the scalar kernel), along dim 0 90 (vec4s).
    for (dim, y_shape, out_shape) in [
        (1, [2, 2, 5, 3], [2, 8, 5, 3]),
        (0, [1, 6, 5, 3], [3, 6, 5, 3]),
    ] {
        let (y, yh) = half_input(&mut rng, &y_shape);
        let out = half_output(&out_shape);
        let ds = layout::concat(ctx(), &[&x, &y], dim, &out).unwrap();
        let want: Vec<f64> = layout_ref::concat(&[(&xh, &shape), (&yh, &y_shape)], dim)
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_close(
            &format!("f16 concat dim={dim}"),
            &run(&ds, &out),
            &want,
            0.0,
            0.0,
        );
    }
}

/// f32 -> f16 rounds to nearest even like `half` and saturates past ±65504;
/// f16 -> f32 is exact.
#[test]
fn cast_rounds_like_half_and_saturates() {
    let mut values = Rng::new(71).vec(37);
    values.extend([1e6, -1e6, 65504.0, 6e-8, 0.0, -0.0, 1.0 + 1.0 / 4096.0]);
    let n = values.len();
    let wide = Tensor::from_f32(ctx(), "wide", &[n], &values).unwrap();
    let narrow = half_output(&[n]);
    let back = Tensor::zeros(ctx(), "back", &[n]).unwrap();
    let ds = [
        cast::cast(ctx(), &wide, &narrow).unwrap(),
        cast::cast(ctx(), &narrow, &back).unwrap(),
    ];
    dispatch::run(ctx(), &ds).unwrap();
    let want: Vec<f32> = values
        .iter()
        .map(|&v| f16::from_f32(v.clamp(-65504.0, 65504.0)).to_f32())
        .collect();
    assert_eq!(narrow.to_vec(ctx()).unwrap(), want);
    assert_eq!(back.to_vec(ctx()).unwrap(), want);
}

/// An op whose activations mix f16 and f32 is refused, naming the tensor.
#[test]
fn mixed_activation_dtypes_are_refused() {
    let mut rng = Rng::new(73);
    let (x, _) = half_input(&mut rng, &[4, 8]);
    let out = Tensor::zeros(ctx(), "f32 out", &[4, 8]).unwrap();
    let e = elementwise::unary(ctx(), &x, &out, Activation::Silu, 1.0, 0.0).unwrap_err();
    assert!(e.to_string().contains("out is F32, expected F16"), "{e}");
    let (w, _) = random(&mut rng, &[3, 8]);
    let out = half_output(&[4, 3]);
    let (res, _) = random(&mut rng, &[4, 3]);
    let epilogue = Epilogue {
        bias: None,
        residual: Some((&res, 1.0)),
    };
    let e =
        matmul::linear_with(ctx(), &x, &w, epilogue, &out, &MatmulOptions::linear()).unwrap_err();
    assert!(
        e.to_string().contains("residual is F32, expected F16"),
        "{e}"
    );
}
