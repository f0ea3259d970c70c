//! wgsl/finite.wgsl against tests/reference/finite.rs: NaN, +Inf and -Inf are
//! caught wherever they sit (first, last, past a workgroup boundary), the
//! lowest failing code wins whatever the order the checks run in, and finite
//! extremes (f32::MAX, subnormals, -0) pass. Exact: the result is an integer.

use crate::common::{ctx, Rng};
use crate::reference::finite::first_non_finite;
use easel::gpu::{dispatch, Tensor};
use easel::ops::finite::{check_finite, ALL_FINITE};

fn status() -> Tensor {
    Tensor::from_u32(ctx(), "status", &[1], &[ALL_FINITE]).unwrap()
}

fn run(checks: &[(&[f32], u32)]) -> u32 {
    let status = status();
    let tensors: Vec<Tensor> = checks
        .iter()
        .map(|(x, _)| Tensor::from_f32(ctx(), "x", &[x.len()], x).unwrap())
        .collect();
    let dispatches: Vec<_> = checks
        .iter()
        .zip(&tensors)
        .map(|((_, code), t)| check_finite(ctx(), t, *code, &status).unwrap())
        .collect();
    dispatch::run(ctx(), &dispatches).unwrap();
    let words = status.to_vec(ctx()).unwrap();
    words[0].to_bits()
}

#[test]
fn non_finite_values_are_found_anywhere() {
    let mut rng = Rng::new(7);
    let n = 1000; // four workgroups, the last one partial
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in [0, 255, 256, 999] {
            let mut x = rng.vec(n);
            x[at] = bad;
            let want = first_non_finite(&[(&x, 5)]);
            assert_eq!(run(&[(&x, 5)]), want, "{bad} at {at}");
            assert_eq!(want, 5);
        }
    }
}

#[test]
fn finite_extremes_pass() {
    let x = [f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45, -0.0, 0.0];
    assert_eq!(run(&[(&x, 1)]), ALL_FINITE);
    assert_eq!(first_non_finite(&[(&x, 1)]), ALL_FINITE);
}

#[test]
fn the_lowest_failing_code_wins() {
    let good = [1.0f32; 300];
    let mut bad = [1.0f32; 300];
    bad[299] = f32::NAN;
    let checks: [(&[f32], u32); 4] = [(&good, 1), (&bad, 9), (&bad, 4), (&good, 0)];
    assert_eq!(run(&checks), first_non_finite(&checks));
    assert_eq!(run(&checks), 4);
}
