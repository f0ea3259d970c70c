//! wgsl/elementwise.wgsl against tests/reference/elementwise.rs.

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::elementwise as reference;
use easel::gpu::dispatch;
use easel::ops::elementwise;

#[test]
fn unary_activations_match_reference() {
    use elementwise::Activation::*;
    type Reference = fn(f64) -> f64;
    let cases: [(elementwise::Activation, Reference); 5] = [
        (Identity, |x| x),
        (Silu, reference::silu),
        (Gelu, reference::gelu),
        (GeluTanh, reference::gelu_tanh),
        (QuickGelu, reference::quick_gelu),
    ];
    let mut rng = Rng::new(1);
    // 1155 elements take `unary`, 1540 (a multiple of 4) take `unary4`.
    for (shape, (act, f)) in [[3, 5, 7, 11], [4, 5, 7, 11]]
        .into_iter()
        .flat_map(|shape| cases.map(|case| (shape, case)))
    {
        let (x, xh) = random(&mut rng, &shape);
        let xh: Vec<f32> = xh.iter().map(|v| v * 4.0).collect(); // cover the tails
        x.write(ctx(), &xh).unwrap();
        let out = zeros(&shape);
        let d = elementwise::unary(ctx(), &x, &out, act, 0.5, 0.25).unwrap();
        dispatch::run(ctx(), &[d]).unwrap();
        let want: Vec<f64> = xh.iter().map(|&v| f(v as f64) * 0.5 + 0.25).collect();
        // f32 transcendental functions: 2e-6 absolute + 1e-5 relative.
        assert_close(
            &format!("{act:?} {shape:?}"),
            &out.to_vec(ctx()).unwrap(),
            &want,
            2e-6,
            1e-5,
        );
    }
}

#[test]
fn binary_broadcasts_like_numpy() {
    let mut rng = Rng::new(2);
    // 210 elements take `binary`; 48 of one shape take `binary_same4`; b constant
    // over the last two dims with 12 or 24 elements there takes `binary_rows4`.
    let cases: [(&[usize], &[usize]); 10] = [
        (&[2, 3, 5, 7], &[2, 3, 5, 7]),
        (&[2, 3, 5, 7], &[3, 1, 1]),
        (&[2, 3, 5, 7], &[2, 3, 1, 1]),
        (&[2, 3, 5, 7], &[7]),
        (&[2, 3, 5, 7], &[1]),
        (&[2, 4, 3, 2], &[2, 4, 3, 2]),
        (&[2, 4, 3, 2], &[4, 3, 2]),
        (&[2, 4, 3, 4], &[4, 1, 1]),
        (&[2, 4, 3, 4], &[2, 4, 1, 1]),
        (&[3, 8], &[1]),
    ];
    for (a_shape, b_shape) in cases {
        for op in [
            elementwise::BinaryOp::Add,
            elementwise::BinaryOp::Mul,
            elementwise::BinaryOp::Prelu,
        ] {
            let (a, ah) = random(&mut rng, a_shape);
            let (b, bh) = random(&mut rng, b_shape);
            let out = zeros(a_shape);
            let d = elementwise::binary(ctx(), &a, &b, &out, op, 2.0).unwrap();
            dispatch::run(ctx(), &[d]).unwrap();
            let want: Vec<f64> = (0..ah.len())
                .map(|i| {
                    let (x, y) = (
                        ah[i] as f64,
                        bh[reference::broadcast_index(a_shape, b_shape, i)] as f64,
                    );
                    2.0 * match op {
                        elementwise::BinaryOp::Add => x + y,
                        elementwise::BinaryOp::Mul => x * y,
                        elementwise::BinaryOp::Prelu if x >= 0.0 => x,
                        elementwise::BinaryOp::Prelu => x * y,
                    }
                })
                .collect();
            // Exact up to one f32 rounding.
            assert_close(
                &format!("{op:?} {b_shape:?}"),
                &out.to_vec(ctx()).unwrap(),
                &want,
                1e-6,
                1e-6,
            );
        }
    }
}

#[test]
fn binary_rejects_bad_broadcast() {
    let a = zeros(&[2, 3]);
    let b = zeros(&[4]);
    let err = elementwise::binary(ctx(), &a, &b, &a, elementwise::BinaryOp::Add, 1.0).unwrap_err();
    assert!(err.to_string().contains("does not broadcast"), "{err}");
}

#[test]
fn large_1d_launch_folds_into_y() {
    // 256 * 65,535 < n: needs the y dimension of the grid.
    let n = 256 * 65_535 + 1000;
    let x = easel::gpu::Tensor::from_f32(ctx(), "x", &[n], &vec![1.5; n]).unwrap();
    let out = zeros(&[n]);
    let d =
        elementwise::unary(ctx(), &x, &out, elementwise::Activation::Identity, 2.0, 0.0).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    let got = out.to_vec(ctx()).unwrap();
    assert!(got.iter().all(|&v| v == 3.0), "every element written once");
}

#[test]
fn readback_counter_counts() {
    let before = ctx().readback_count();
    let t = zeros(&[4]);
    t.to_vec(ctx()).unwrap();
    t.to_vec(ctx()).unwrap();
    // Other tests run concurrently on the same context, so at least 2.
    assert!(ctx().readback_count() - before >= 2);
}
