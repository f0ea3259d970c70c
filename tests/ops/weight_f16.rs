//! Weights in f16 (packed pairs, wgsl/weight_f16.wgsl) and weights bound in
//! row blocks: matmul, conv2d and the CLIP token table against
//! tests/reference/, and split launches against unsplit ones at a tiny binding
//! limit forced with `Context::limit_bindings_for_tests`.
//!
//! The f16 weights are rounded on the host and the reference multiplies the
//! same rounded values in f64, so the tolerances are the f32 ones of
//! tests/ops/matmul.rs and tests/ops/conv2d.rs: only f32 accumulation differs.

use half::f16;

use crate::common::{assert_close, ctx, new_context, random, zeros, Rng};
use crate::reference::conv2d::Conv2d;
use crate::reference::embedding as embedding_ref;
use crate::reference::matmul::Matmul;
use easel::gpu::{dispatch, Context, DType, Dispatch, Tensor};
use easel::ops::conv2d::{self, Conv2dOptions, ConvVariant};
use easel::ops::embedding;
use easel::ops::matmul::{self, MatmulOptions, MatmulVariant};

/// Seeded values rounded to f16, uploaded as f16 on `ctx`; the host copy
/// holds the rounded values.
fn random_f16(ctx: &Context, rng: &mut Rng, shape: &[usize]) -> (Tensor, Vec<f32>) {
    let halves: Vec<f16> = rng
        .vec(shape.iter().product())
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let t = Tensor::from_f16(ctx, "f16 weight", shape, &halves).unwrap();
    assert_eq!(t.dtype, DType::F16);
    (t, halves.iter().map(|h| h.to_f32()).collect())
}

fn run(ctx: &Context, dispatches: &[Dispatch], out: &Tensor) -> Vec<f32> {
    dispatch::run(ctx, dispatches).unwrap();
    out.to_vec(ctx).unwrap()
}

/// nn.Linear (`x · Wᵀ + b`, W f16 `[N, K]`) and a plain `a · B` with B f16
/// `[K, N]`, on every variant; odd K and N reach the scalar entry points and
/// an odd element count leaves half of the last u32 unused.
#[test]
fn f16_matmul_matches_reference_on_every_variant() {
    for variant in MatmulVariant::F32_OPERANDS {
        for (m, n, k, transpose_b) in [
            (5, 13, 7, true),
            (33, 70, 64, true),
            (9, 12, 16, false),
            (3, 5, 9, false),
        ] {
            let mut rng = Rng::new(7 + k as u64);
            let (a, ah) = random(&mut rng, &[m, k]);
            let b_shape = if transpose_b { [n, k] } else { [k, n] };
            let (b, bh) = random_f16(ctx(), &mut rng, &b_shape);
            let (bias, bias_h) = random(&mut rng, &[n]);
            let out = zeros(&[m, n]);
            let opts = MatmulOptions {
                transpose_b,
                variant: Some(variant),
                ..MatmulOptions::default()
            };
            let d = matmul::matmul(ctx(), &a, &b, Some(&bias), &out, &opts).unwrap();
            let want = Matmul {
                a: &ah,
                b: &bh,
                bias: Some(&bias_h),
                batch: 1,
                m,
                n,
                k,
                transpose_a: false,
                transpose_b,
                b_shared: true,
                alpha: 1.0,
            }
            .run();
            let what =
                format!("f16 matmul {variant:?} m={m} n={n} k={k} transpose_b={transpose_b}");
            let got = run(ctx(), &[d], &out);
            assert_close(&what, &got, &want, 1e-5 * (k as f64).sqrt(), 1e-5);
        }
    }
}

/// conv2d with an f16 weight on every variant: K = 27 (scalar), 72 and 8
/// (vec4 and subgroup), with stride and padding.
#[test]
fn f16_conv2d_matches_reference_on_every_variant() {
    for variant in ConvVariant::F32_OPERANDS {
        for (n, cin, h, w, cout, kh, stride, padding) in [
            (1, 3, 9, 7, 5, 3, 1, 1),
            (2, 8, 6, 6, 16, 3, 2, 1),
            (1, 8, 5, 5, 40, 1, 1, 0),
        ] {
            let mut rng = Rng::new(31 + cout as u64);
            let (x, xh) = random(&mut rng, &[n, cin, h, w]);
            let (weight, wh) = random_f16(ctx(), &mut rng, &[cout, cin, kh, kh]);
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
                kw: kh,
                stride: (stride, stride),
                padding: (padding, padding),
            };
            let (hout, wout) = reference.out_size();
            let out = zeros(&[n, cout, hout, wout]);
            let opts = Conv2dOptions {
                variant: Some(variant),
                ..Conv2dOptions::new(stride, padding)
            };
            let d = conv2d::conv2d(ctx(), &x, &weight, Some(&bias), &out, &opts).unwrap();
            let k = (cin * kh * kh) as f64;
            let what = format!("f16 conv2d {variant:?} cin={cin} cout={cout} k={kh}");
            assert_close(
                &what,
                &run(ctx(), &[d], &out),
                &reference.run(),
                1e-5 * k.sqrt(),
                1e-5,
            );
        }
    }
}

/// The token table in f16: one gather and one f32 add of exact values, so exact.
#[test]
fn f16_token_embedding_matches_reference() {
    let mut rng = Rng::new(40);
    let (b, l, v, p, d) = (2, 77, 301, 77, 24);
    let ids: Vec<u32> = (0..b * l)
        .map(|_| (rng.next_u64() % v as u64) as u32)
        .collect();
    let input_ids = Tensor::from_u32(ctx(), "input_ids", &[b, l], &ids).unwrap();
    let (token, token_h) = random_f16(ctx(), &mut rng, &[v, d]);
    let (position, position_h) = random(&mut rng, &[p, d]);
    let out = zeros(&[b, l, d]);
    let ds = embedding::clip_text_embeddings(ctx(), &input_ids, &token, &position, &out).unwrap();
    let want = embedding_ref::clip_text_embeddings(&ids, l, &token_h, &position_h, d);
    assert_close(
        "f16 clip_text_embeddings",
        &run(ctx(), &ds, &out),
        &want,
        0.0,
        0.0,
    );
}

/// A context whose bindings stop at `bytes`, and the same upload on it.
fn limited(bytes: u64) -> Context {
    let mut ctx = new_context();
    ctx.limit_bindings_for_tests(bytes);
    ctx
}

fn upload(ctx: &Context, t: &Tensor, host: &[f32]) -> Tensor {
    match t.dtype {
        DType::F16 => {
            let halves: Vec<f16> = host.iter().map(|&v| f16::from_f32(v)).collect();
            Tensor::from_f16(ctx, "split weight", &t.shape, &halves).unwrap()
        }
        _ => Tensor::weight_f32(ctx, "split weight", &t.shape, host).unwrap(),
    }
}

/// nn.Linear with its weight in row blocks (one dispatch per block of output
/// features) gives the same bits as one dispatch, f32 and f16, every variant.
#[test]
fn split_linear_equals_unsplit() {
    let small = limited(4096);
    let (m, n, k) = (5, 70, 64);
    for half in [false, true] {
        for variant in MatmulVariant::F32_OPERANDS {
            let mut rng = Rng::new(50);
            let (x, xh) = random(&mut rng, &[m, k]);
            let (w, wh) = match half {
                true => random_f16(ctx(), &mut rng, &[n, k]),
                false => random(&mut rng, &[n, k]),
            };
            let bias_h = rng.vec(n);
            let bias = Tensor::from_f32(ctx(), "bias", &[n], &bias_h).unwrap();
            let opts = MatmulOptions {
                variant: Some(variant),
                ..MatmulOptions::linear()
            };
            let out = zeros(&[m, n]);
            let whole = matmul::matmul(ctx(), &x, &w, Some(&bias), &out, &opts).unwrap();
            let want = run(ctx(), &[whole], &out);

            let x2 = Tensor::from_f32(&small, "x", &[m, k], &xh).unwrap();
            let w2 = upload(&small, &w, &wh);
            let bias2 = Tensor::from_f32(&small, "bias", &[n], &bias_h).unwrap();
            let out2 = Tensor::zeros(&small, "out", &[m, n]).unwrap();
            let ds = matmul::linear(&small, &x2, &w2, Some(&bias2), &out2).unwrap();
            assert!(ds.len() > 1, "{} bytes in one binding of 4096", w2.bytes());
            // The variant is picked per adapter by `linear`: compare with that one.
            if variant == MatmulVariant::for_adapter(&small) {
                let got = run(&small, &ds, &out2);
                assert_eq!(got, want, "split linear f16={half}: {} blocks", ds.len());
            }
        }
    }
}

/// conv2d with its weight in blocks of output channels: the same bits.
#[test]
fn split_conv2d_equals_unsplit() {
    let small = limited(4096);
    let (n, cin, h, w, cout) = (1, 8, 6, 6, 24);
    for half in [false, true] {
        let mut rng = Rng::new(60);
        let (x, xh) = random(&mut rng, &[n, cin, h, w]);
        let (weight, wh) = match half {
            true => random_f16(ctx(), &mut rng, &[cout, cin, 3, 3]),
            false => random(&mut rng, &[cout, cin, 3, 3]),
        };
        let bias_h = rng.vec(cout);
        let bias = Tensor::from_f32(ctx(), "bias", &[cout], &bias_h).unwrap();
        let opts = Conv2dOptions::new(1, 1);
        let out = zeros(&[n, cout, h, w]);
        let d = conv2d::conv2d(ctx(), &x, &weight, Some(&bias), &out, &opts).unwrap();
        let want = run(ctx(), &[d], &out);

        let x2 = Tensor::from_f32(&small, "x", &[n, cin, h, w], &xh).unwrap();
        let w2 = upload(&small, &weight, &wh);
        let bias2 = Tensor::from_f32(&small, "bias", &[cout], &bias_h).unwrap();
        let out2 = Tensor::zeros(&small, "out", &[n, cout, h, w]).unwrap();
        let ds = conv2d::conv2d_split(&small, &x2, &w2, Some(&bias2), &out2, &opts).unwrap();
        let blocks = ds.len();
        assert!(
            blocks > 1 || half,
            "{} bytes in one binding of 4096",
            w2.bytes()
        );
        assert_eq!(
            run(&small, &ds, &out2),
            want,
            "split conv2d f16={half}: {blocks} blocks"
        );
    }
}

/// The token table gathered per block of rows: every token written once, exact.
#[test]
fn split_token_embedding_equals_unsplit() {
    let small = limited(4096);
    let (b, l, v, d) = (2, 20, 300, 16);
    for half in [false, true] {
        let mut rng = Rng::new(70);
        let mut ids: Vec<u32> = (0..b * l)
            .map(|_| (rng.next_u64() % v as u64) as u32)
            .collect();
        ids[0] = 0;
        ids[1] = v as u32 - 1;
        ids[2] = v as u32 + 5; // clamped to the last row, as unsplit
        let (token, token_h) = match half {
            true => random_f16(ctx(), &mut rng, &[v, d]),
            false => random(&mut rng, &[v, d]),
        };
        let (position, position_h) = random(&mut rng, &[l, d]);
        let input_ids = Tensor::from_u32(ctx(), "ids", &[b, l], &ids).unwrap();
        let out = zeros(&[b, l, d]);
        let ds =
            embedding::clip_text_embeddings(ctx(), &input_ids, &token, &position, &out).unwrap();
        assert_eq!(ds.len(), 1);
        let want = run(ctx(), &ds, &out);

        let ids2 = Tensor::from_u32(&small, "ids", &[b, l], &ids).unwrap();
        let token2 = upload(&small, &token, &token_h);
        let position2 = Tensor::from_f32(&small, "position", &[l, d], &position_h).unwrap();
        let out2 = Tensor::zeros(&small, "out", &[b, l, d]).unwrap();
        let ds =
            embedding::clip_text_embeddings(&small, &ids2, &token2, &position2, &out2).unwrap();
        assert!(
            ds.len() > 1,
            "{} bytes in one binding of 4096",
            token2.bytes()
        );
        assert_eq!(
            run(&small, &ds, &out2),
            want,
            "split token table f16={half}"
        );
    }
}

/// A launch that binds more than the limit without splitting is refused
/// before wgpu sees it, naming the size and the limit.
#[test]
fn oversized_binding_is_a_clear_error() {
    let small = limited(1024);
    let w = Tensor::weight_f32(&small, "w", &[4, 200], &[0.5; 800]).unwrap();
    let x = Tensor::zeros(&small, "x", &[1, 200]).unwrap();
    let out = Tensor::zeros(&small, "out", &[1, 4]).unwrap();
    let err = matmul::matmul(&small, &x, &w, None, &out, &MatmulOptions::linear())
        .unwrap_err()
        .to_string();
    assert!(err.contains("3200 bytes") && err.contains("1024"), "{err}");
}
