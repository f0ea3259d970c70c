//! The cooperative-matrix GEMM tile (wgsl/gemm_coop.wgsl) in matmul and conv2d
//! against tests/reference/, where the adapter has cooperative matrices (Mesa
//! 26 lavapipe offers 8x8x8 F16->F32; tools/lavapipe_coop.sh runs the suite
//! there). Elsewhere these tests only check that `Coop` falls back to the
//! tiled kernel; tests/shaders.rs validates the shaders everywhere.
//!
//! The kernel rounds both operands to f16 as it stages them; the reference
//! multiplies the same rounded values in f64, so what remains is f32
//! accumulation: the f32 tolerances of tests/ops/matmul.rs (1e-5·√K + 1e-5 rel).

use half::f16;

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::attention::{self as attention_reference, Shape};
use crate::reference::conv2d::Conv2d;
use crate::reference::matmul::Matmul;
use easel::gpu::{dispatch, AdapterClass, Tensor};
use easel::ops::attention::{self, AttentionVariant, Sdpa};
use easel::ops::conv2d::{self, Conv2dOptions, ConvVariant};
use easel::ops::matmul::{self, coop_ready, MatmulOptions, MatmulVariant};

fn rounded(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

/// Whether this adapter runs the cooperative kernels (else `Coop` is `Gpu`).
fn cooperative() -> bool {
    let on = ctx().coop.is_some();
    if !on {
        eprintln!("no cooperative matrices on this adapter: Coop runs the tiled kernel");
    }
    on
}

#[allow(clippy::too_many_arguments)]
fn check_matmul(batch: usize, m: usize, n: usize, k: usize, ta: bool, tb: bool, f16_b: bool) {
    let mut rng = Rng::new((m * 131 + n * 17 + k) as u64);
    let a_mat = if ta { [k, m] } else { [m, k] };
    let b_mat = if tb { [n, k] } else { [k, n] };
    let (a, ah) = random(&mut rng, &[batch, a_mat[0], a_mat[1]]);
    let bh: Vec<f32> = rounded(&rng.vec(b_mat[0] * b_mat[1]));
    let b = if f16_b {
        let halves: Vec<f16> = bh.iter().map(|&v| f16::from_f32(v)).collect();
        Tensor::from_f16(ctx(), "b", &b_mat, &halves).unwrap()
    } else {
        Tensor::from_f32(ctx(), "b", &b_mat, &bh).unwrap()
    };
    let (bias, bias_h) = random(&mut rng, &[n]);
    let out = zeros(&[batch, m, n]);
    let opts = MatmulOptions {
        transpose_a: ta,
        transpose_b: tb,
        alpha: 0.5,
        variant: Some(MatmulVariant::Coop),
        ..MatmulOptions::default()
    };
    let d = matmul::matmul(ctx(), &a, &b, Some(&bias), &out, &opts).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    let a_rounded = if cooperative() { rounded(&ah) } else { ah };
    let want = Matmul {
        a: &a_rounded,
        b: &bh,
        bias: Some(&bias_h),
        batch,
        m,
        n,
        k,
        transpose_a: ta,
        transpose_b: tb,
        b_shared: true,
        alpha: 0.5,
    }
    .run();
    let what = format!("coop matmul {batch}x{m}x{n}x{k} ta={ta} tb={tb} f16={f16_b}");
    let got = out.to_vec(ctx()).unwrap();
    assert_close(&what, &got, &want, 1e-5 * (k as f64).sqrt(), 1e-5);
}

/// Sizes below, across and past the 64-column tile, the tile's rows (64 for 8x8
/// fragments on 8 lanes and 16x16 on 32; 128, 2x2 fragments per subgroup, from
/// 128 rows on) and the 32-deep K slab; every transpose; the weight as f32 and f16.
#[test]
fn coop_matmul_against_the_reference() {
    for (m, n, k) in [
        (1, 1, 1),
        (7, 13, 5),
        (65, 70, 33),
        (130, 150, 100),
        (300, 70, 40),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            check_matmul(2, m, n, k, ta, tb, false);
        }
        check_matmul(1, m, n, k, false, true, true);
    }
}

#[test]
fn coop_conv2d_against_the_reference() {
    // (N, Cin, H, W, Cout, k, stride, padding): 3x3 pad 1 with K = 36 and 27, a
    // 1x1 shortcut, a stride-2 downsample, and more channels than one tile (260:
    // two 128-row tiles and a ragged one).
    let cases = [
        (2, 4, 9, 7, 13, 3, 1, 1),
        (1, 3, 12, 10, 70, 3, 1, 1),
        (2, 5, 6, 11, 9, 1, 1, 0),
        (1, 8, 17, 9, 20, 3, 2, 1),
        (2, 3, 6, 5, 260, 3, 1, 1),
    ];
    for (n, cin, h, w, cout, kk, stride, pad) in cases {
        let mut rng = Rng::new((cin * 7 + cout) as u64);
        let (x, xh) = random(&mut rng, &[n, cin, h, w]);
        let wh = rounded(&rng.vec(cout * cin * kk * kk));
        let weight = Tensor::from_f32(ctx(), "w", &[cout, cin, kk, kk], &wh).unwrap();
        let (bias, bh) = random(&mut rng, &[cout]);
        let x_rounded = if cooperative() { rounded(&xh) } else { xh };
        let reference = Conv2d {
            x: &x_rounded,
            weight: &wh,
            bias: Some(&bh),
            n,
            cin,
            h,
            w,
            cout,
            kh: kk,
            kw: kk,
            stride: (stride, stride),
            padding: (pad, pad),
        };
        let (hout, wout) = reference.out_size();
        let out = zeros(&[n, cout, hout, wout]);
        let opts = Conv2dOptions {
            variant: Some(ConvVariant::Coop),
            ..Conv2dOptions::new(stride, pad)
        };
        let d = conv2d::conv2d(ctx(), &x, &weight, Some(&bias), &out, &opts).unwrap();
        dispatch::run(ctx(), &[d]).unwrap();
        let got = out.to_vec(ctx()).unwrap();
        let atol = 1e-5 * ((cin * kk * kk) as f64).sqrt();
        assert_close(
            &format!("coop conv2d {cin}->{cout} k{kk}"),
            &got,
            &reference.run(),
            atol,
            1e-5,
        );
    }
}

/// wgsl/attention_coop.wgsl. The kernel stages q·scale, k and v in f16 and
/// rounds the softmax weights p (in [0, 1]) to f16 before p·v; the reference
/// gets the same rounded q·scale, k and v, so what remains is p's rounding:
/// at most 2^-11 of Σ p|v| <= 1, hence 1e-3 absolute (outputs lie in [-1, 1]).
fn check_attention(s: Shape, causal: bool, scale: Option<f32>, q_magnitude: f32) {
    let mut rng = Rng::new((s.lq * 31 + s.lk * 7 + s.dh) as u64);
    let width = s.heads * s.dh;
    let q_shape = [s.b, s.lq, width];
    let kv_shape = [s.b, s.lk, width];
    let scale_f32 = scale.unwrap_or(1.0 / (s.dh as f32).sqrt());
    let qh: Vec<f32> = rng
        .vec(s.b * s.lq * width)
        .iter()
        .map(|v| v * q_magnitude)
        .collect();
    let (kh, vh) = (rng.vec(s.b * s.lk * width), rng.vec(s.b * s.lk * width));
    let coop = cooperative();
    let (kr, vr) = if coop {
        (rounded(&kh), rounded(&vh))
    } else {
        (kh.clone(), vh.clone())
    };
    // The reference multiplies q by scale itself: give it f16(q·scale) / scale.
    let qr: Vec<f32> = match coop {
        true => qh
            .iter()
            .map(|&x| f16::from_f32(x * scale_f32).to_f32() / scale_f32)
            .collect(),
        false => qh.clone(),
    };
    let upload = |shape: &[usize], data: &[f32]| Tensor::from_f32(ctx(), "x", shape, data).unwrap();
    let (q, k, v) = (
        upload(&q_shape, &qh),
        upload(&kv_shape, &kh),
        upload(&kv_shape, &vh),
    );
    let want = attention_reference::scaled_dot_product_attention(
        &qr,
        &kr,
        &vr,
        s,
        scale_f32 as f64,
        causal,
    );
    let cfg = Sdpa {
        heads: s.heads,
        scale,
        is_causal: causal,
    };
    let out = zeros(&q_shape);
    let d = attention::scaled_dot_product_attention_with(
        ctx(),
        &q,
        &k,
        &v,
        &out,
        cfg,
        AttentionVariant::Coop,
    )
    .unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    let what = format!("coop attention {s:?} causal={causal} scale={scale:?}");
    assert_close(&what, &out.to_vec(ctx()).unwrap(), &want, 1e-3, 0.0);
}

/// Lengths across the 64-row workgroup and the 16-key block, head dims that
/// are and are not multiples of 16 (SD's 40, 80 and 160; 4, padded to a whole
/// fragment), CLIP's causal 77 tokens, a scale, and scores up to about ±30.
#[test]
fn coop_attention_against_the_reference() {
    let shape = |b, lq, lk, heads, dh| Shape {
        b,
        lq,
        lk,
        heads,
        dh,
    };
    check_attention(shape(2, 13, 7, 1, 8), false, None, 1.0);
    check_attention(shape(2, 37, 77, 8, 40), false, None, 1.0);
    check_attention(shape(1, 130, 45, 2, 80), false, None, 1.0);
    check_attention(shape(1, 19, 23, 2, 160), false, None, 1.0);
    check_attention(shape(1, 70, 5, 3, 64), false, Some(0.3), 1.0);
    check_attention(shape(1, 77, 77, 8, 64), true, None, 1.0);
    check_attention(shape(1, 66, 66, 1, 4), true, None, 1.0);
    check_attention(shape(1, 30, 30, 1, 32), false, None, 8.0);
}

/// The start-up self-test passes where the kernels run, and a CPU adapter keeps
/// its register-blocked kernels even with cooperative matrices (they are slower
/// there: docs/benchmarks.md).
#[test]
fn the_self_test_passes_and_cpu_adapters_keep_their_kernels() {
    let ready = coop_ready(ctx());
    assert_eq!(ready.is_some(), ctx().coop.is_some(), "self-test");
    if ctx().class == AdapterClass::Cpu {
        assert_ne!(MatmulVariant::for_adapter(ctx()), MatmulVariant::Coop);
    }
    let listed = MatmulVariant::available(ctx()).contains(&MatmulVariant::Coop);
    assert_eq!(listed, ctx().coop.is_some());
}
