//! The residual epilogue of matmul and conv2d ([`matmul::Epilogue`]): a layer
//! and the residual add after it in one kernel. The fused result must be the
//! two-launch result bit for bit (the same f32 sum, since addition commutes),
//! so the PyTorch goldens of every model hold unchanged.

use crate::common::{ctx, random, zeros, Rng};
use easel::gpu::{dispatch, Tensor};
use easel::ops::conv2d::{self, Conv2dOptions};
use easel::ops::elementwise::{self, BinaryOp};
use easel::ops::matmul::{self, Epilogue, MatmulOptions};

fn run(ds: Vec<easel::gpu::Dispatch>) {
    dispatch::run(ctx(), &ds).unwrap();
}

/// `layer` into a fresh tensor, then `(it + residual) · scale` as its own launch
/// (the residual broadcast where it is `[N, C, 1, 1]`).
fn unfused(shape: &[usize], residual: &Tensor, scale: f32, layer: impl Fn(&Tensor)) -> Vec<f32> {
    let (plain, out) = (zeros(shape), zeros(shape));
    layer(&plain);
    let add = elementwise::binary(ctx(), &plain, residual, &out, BinaryOp::Add, scale).unwrap();
    run(vec![add]);
    out.to_vec(ctx()).unwrap()
}

#[test]
fn linear_with_a_residual_is_the_separate_add() {
    let mut rng = Rng::new(71);
    for (m, k, n) in [(37, 24, 19), (64, 64, 64), (5, 128, 320)] {
        let (x, _) = random(&mut rng, &[m, k]);
        let (w, _) = random(&mut rng, &[n, k]);
        let (bias, _) = random(&mut rng, &[n]);
        let (residual, _) = random(&mut rng, &[m, n]);
        let want = unfused(&[m, n], &residual, 1.0, |out| {
            run(matmul::linear(ctx(), &x, &w, Some(&bias), out).unwrap())
        });
        let out = zeros(&[m, n]);
        let epilogue = Epilogue {
            bias: Some(&bias),
            residual: Some((&residual, 1.0)),
        };
        run(matmul::linear_with(ctx(), &x, &w, epilogue, &out, &MatmulOptions::linear()).unwrap());
        assert_eq!(out.to_vec(ctx()).unwrap(), want, "linear {m}x{k} -> {n}");
    }
}

#[test]
fn conv2d_with_a_scaled_residual_is_the_separate_add() {
    let mut rng = Rng::new(72);
    // ResnetBlock2D's conv2 (3x3, pad 1) with output_scale_factor 2, and a 1x1
    // projection without bias.
    for (n, cin, cout, kk, pad, bias, scale) in
        [(2, 5, 6, 3, 1, true, 0.5), (1, 8, 16, 1, 0, false, 1.0)]
    {
        let (h, w) = (9, 7);
        let (x, _) = random(&mut rng, &[n, cin, h, w]);
        let (weight, _) = random(&mut rng, &[cout, cin, kk, kk]);
        let (b, _) = random(&mut rng, &[cout]);
        let b = bias.then_some(&b);
        let (residual, _) = random(&mut rng, &[n, cout, h, w]);
        let opts = Conv2dOptions::new(1, pad);
        let shape = [n, cout, h, w];
        let want = unfused(&shape, &residual, scale, |out| {
            run(conv2d::conv2d_split(ctx(), &x, &weight, b, out, &opts).unwrap())
        });
        let out = zeros(&shape);
        let epilogue = Epilogue {
            bias: b,
            residual: Some((&residual, scale)),
        };
        run(conv2d::conv2d_split_with(ctx(), &x, &weight, epilogue, &out, &opts).unwrap());
        assert_eq!(
            out.to_vec(ctx()).unwrap(),
            want,
            "conv2d {cin}->{cout} k{kk}"
        );
    }
}

#[test]
fn a_residual_of_another_shape_is_refused() {
    let mut rng = Rng::new(73);
    let (x, _) = random(&mut rng, &[4, 8]);
    let (w, _) = random(&mut rng, &[6, 8]);
    let (residual, _) = random(&mut rng, &[4, 5]);
    let epilogue = Epilogue {
        bias: None,
        residual: Some((&residual, 1.0)),
    };
    let e = matmul::linear_with(
        ctx(),
        &x,
        &w,
        epilogue,
        &zeros(&[4, 6]),
        &MatmulOptions::linear(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("residual has shape [4, 5]"), "{e}");
}
