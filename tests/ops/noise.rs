//! wgsl/noise.wgsl against tests/reference/noise.rs.

use crate::common::{assert_close, ctx, zeros};
use crate::reference::noise as reference;
use easel::gpu::dispatch;
use easel::ops::noise;

#[test]
fn philox_matches_random123_known_answers() {
    // Known-answer vectors from Random123's kat_vectors for philox4x32_10.
    assert_eq!(
        reference::philox4x32_10([0; 4], [0; 2]),
        [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
    );
    assert_eq!(
        reference::philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
        [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
    );
    assert_eq!(
        reference::philox4x32_10(
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0xa409_3822, 0x299f_31d0]
        ),
        [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
    );
}

fn draw(seed: u64, candidate: u32, step: u32, shape: &[usize]) -> Vec<f32> {
    let out = zeros(shape);
    let key = noise::NoiseKey {
        seed,
        candidate,
        step,
        stream: 0,
    };
    dispatch::run(ctx(), &[noise::gaussian(ctx(), &out, key, 1.0).unwrap()]).unwrap();
    out.to_vec(ctx()).unwrap()
}

#[test]
fn gaussian_matches_reference() {
    // n = 3*7*5 = 105 is not a multiple of 4: the last Philox block is partial.
    let seed = 0x1234_5678_9abc_def0;
    let got = draw(seed, 2, 9, &[3, 3, 7, 5]);
    let want = reference::gaussian(seed, 2, 9, 0, 3, 105);
    // f32 log/sqrt/cos of the same 24-bit uniforms: a few ulps of |z| <= 5.8.
    assert_close("gaussian", &got, &want, 1e-5, 1e-5);
}

#[test]
fn set_seed_redraws_a_planned_dispatch() {
    let out = zeros(&[2, 3, 4, 5]);
    let key = |seed| noise::NoiseKey {
        seed,
        candidate: 0,
        step: 3,
        stream: 1,
    };
    let d = noise::gaussian(ctx(), &out, key(1), 2.0).unwrap();
    let seed = 0xfeed_0000_0000_beef;
    noise::set_seed(ctx(), &d, seed);
    dispatch::run(ctx(), &[d]).unwrap();
    let fresh = zeros(&[2, 3, 4, 5]);
    let d = noise::gaussian(ctx(), &fresh, key(seed), 2.0).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    assert_eq!(out.to_vec(ctx()).unwrap(), fresh.to_vec(ctx()).unwrap());
}

#[test]
fn start_image_is_independent_of_candidate_count() {
    let one = draw(7, 0, 0, &[1, 3, 8, 8]);
    let four = draw(7, 0, 0, &[4, 3, 8, 8]);
    assert_eq!(
        one[..],
        four[..one.len()],
        "candidate 0 is the same with 1 or 4 candidates"
    );
    assert_ne!(
        four[..192],
        four[192..384],
        "candidates differ from each other"
    );
    assert_ne!(
        one,
        draw(8, 0, 0, &[1, 3, 8, 8]),
        "another seed gives another image"
    );
    assert_ne!(
        one,
        draw(7, 0, 1, &[1, 3, 8, 8]),
        "another step gives other noise"
    );
}

#[test]
fn gaussian_statistics() {
    let z = draw(42, 0, 0, &[1, 1 << 16]);
    let n = z.len() as f64;
    let mean = z.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    // 65,536 samples: the standard error of the mean is 0.004.
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!((var - 1.0).abs() < 0.03, "variance {var}");
}
