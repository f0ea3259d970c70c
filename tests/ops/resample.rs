//! wgsl/resample.wgsl against tests/reference/resample.rs.

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::resample as reference;
use easel::gpu::dispatch;
use easel::ops::resample;

fn shape4(s: &[usize]) -> [usize; 4] {
    s.try_into().unwrap()
}

#[test]
fn upsample_nearest2d_factors_2_and_4() {
    let mut rng = Rng::new(10);
    // Odd sizes, batch 2; the last is a tiny UNet's Upsample2D input.
    for (shape, factor) in [
        ([2, 3, 5, 7], 2),
        ([2, 3, 5, 7], 4),
        ([3, 1, 1, 9], 4),
        ([2, 64, 8, 8], 2),
    ] {
        let (x, xh) = random(&mut rng, &shape);
        let out = zeros(&[shape[0], shape[1], shape[2] * factor, shape[3] * factor]);
        let d = resample::upsample_nearest2d(ctx(), &x, &out, factor).unwrap();
        dispatch::run(ctx(), &[d]).unwrap();
        // Pure data movement: exact.
        assert_close(
            &format!("upsample_nearest2d {shape:?} x{factor}"),
            &out.to_vec(ctx()).unwrap(),
            &reference::upsample_nearest2d(&xh, shape, factor),
            0.0,
            0.0,
        );
    }
}

#[test]
fn upsample_nearest2d_folds_large_launches_into_y() {
    // 4100² outputs > 256 × 65,535: the grid needs its y dimension.
    let shape = [1, 1, 2050, 2050];
    let mut rng = Rng::new(11);
    let (x, xh) = random(&mut rng, &shape);
    let out = zeros(&[1, 1, 4100, 4100]);
    let d = resample::upsample_nearest2d(ctx(), &x, &out, 2).unwrap();
    assert!(matches!(d.workgroups, [_, y, _] if y > 1));
    dispatch::run(ctx(), &[d]).unwrap();
    assert_close(
        "upsample_nearest2d 2050² x2",
        &out.to_vec(ctx()).unwrap(),
        &reference::upsample_nearest2d(&xh, shape, 2),
        0.0,
        0.0,
    );
}

#[test]
fn pixel_shuffle_r_2_and_4() {
    let mut rng = Rng::new(12);
    for (shape, r) in [([2, 12, 5, 7], 2), ([2, 32, 3, 5], 4), ([1, 48, 16, 16], 4)] {
        let (x, xh) = random(&mut rng, &shape);
        let out = zeros(&[shape[0], shape[1] / (r * r), shape[2] * r, shape[3] * r]);
        let d = resample::pixel_shuffle(ctx(), &x, &out, r).unwrap();
        dispatch::run(ctx(), &[d]).unwrap();
        // Pure data movement: exact.
        assert_close(
            &format!("pixel_shuffle {shape:?} r={r}"),
            &out.to_vec(ctx()).unwrap(),
            &reference::pixel_shuffle(&xh, shape, r),
            0.0,
            0.0,
        );
    }
}

#[test]
fn interpolate_bilinear_matches_pytorch_up_and_down() {
    let mut rng = Rng::new(13);
    let cases: [(&[usize], [usize; 2]); 7] = [
        (&[2, 3, 32, 32], [224, 224]), // a 32² image to the scorer's 224²
        (&[3, 2, 7, 5], [13, 11]),     // up, non-square, odd ratios
        (&[2, 3, 128, 96], [32, 24]),  // down ×4 (aliases, like PyTorch)
        (&[2, 2, 13, 9], [7, 4]),      // down, non-integer ratios
        (&[2, 2, 6, 10], [9, 4]),      // up in H, down in W
        (&[2, 1, 5, 5], [5, 5]),       // same size: identity
        (&[2, 1, 1, 3], [4, 1]),       // single source row and column (edge clamps)
    ];
    for (shape, [ho, wo]) in cases {
        let (x, xh) = random(&mut rng, shape);
        let out = zeros(&[shape[0], shape[1], ho, wo]);
        let d = resample::interpolate_bilinear(ctx(), &x, &out).unwrap();
        dispatch::run(ctx(), &[d]).unwrap();
        // Tap weights are computed in f32 exactly as PyTorch does; what remains is
        // f32 rounding of a 4-tap convex sum of values in [-1, 1]: 1e-6 absolute.
        assert_close(
            &format!("interpolate_bilinear {shape:?} -> {ho}x{wo}"),
            &out.to_vec(ctx()).unwrap(),
            &reference::interpolate_bilinear(&xh, shape4(shape), ho, wo),
            1e-6,
            0.0,
        );
    }
}

#[test]
fn avg_pool2d_2x2() {
    let mut rng = Rng::new(14);
    for shape in [[2, 3, 8, 6], [2, 3, 7, 9], [2, 64, 16, 16]] {
        let (x, xh) = random(&mut rng, &shape);
        let out = zeros(&[shape[0], shape[1], shape[2] / 2, shape[3] / 2]);
        let d = resample::avg_pool2d(ctx(), &x, &out).unwrap();
        dispatch::run(ctx(), &[d]).unwrap();
        // Three f32 additions of values in [-1, 1], then an exact /4: 5e-7 absolute.
        assert_close(
            &format!("avg_pool2d {shape:?}"),
            &out.to_vec(ctx()).unwrap(),
            &reference::avg_pool2d(&xh, shape),
            5e-7,
            0.0,
        );
    }
}

#[test]
fn resample_rejects_bad_shapes() {
    let x = zeros(&[1, 6, 4, 4]);
    let err = resample::pixel_shuffle(ctx(), &x, &zeros(&[1, 1, 8, 8]), 2).unwrap_err();
    assert!(err.to_string().contains("not a multiple of r²"), "{err}");
    let err = resample::upsample_nearest2d(ctx(), &x, &zeros(&[1, 6, 8, 9]), 2).unwrap_err();
    assert!(
        err.to_string()
            .contains("upsample_nearest2d: out has shape"),
        "{err}"
    );
    let err = resample::interpolate_bilinear(ctx(), &zeros(&[6, 4, 4]), &x).unwrap_err();
    assert!(err.to_string().contains("expected [N, C, H, W]"), "{err}");
}
