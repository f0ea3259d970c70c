//! wgsl/norm.wgsl against tests/reference/norm.rs, both kernel variants.

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::norm as reference;
use easel::gpu::dispatch::{self, Dispatch};
use easel::gpu::Tensor;
use easel::gpu::{AdapterClass, Policy};
use easel::ops::{norm, CPU_LOOP_LIMIT};

const VARIANTS: [AdapterClass; 2] = [AdapterClass::Cpu, AdapterClass::Gpu];

/// Uniform data with mean `mean` and standard deviation `std`.
fn offset(rng: &mut Rng, shape: &[usize], mean: f32, std: f32) -> (Tensor, Vec<f32>) {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| mean + rng.uniform() * std * 3f32.sqrt())
        .collect();
    (
        Tensor::from_f32(ctx(), "test input", shape, &data).unwrap(),
        data,
    )
}

/// The serial (CPU) layout reads 4 elements at a time (`group_norm4`,
/// `layer_norm4`) exactly where each vec4 lies in one channel (group_norm's
/// planes) or row (layer_norm's rows) and segments are short enough to loop over.
fn expect_vec4_kernel(d: &Dispatch, class: AdapterClass, plane: usize, segment: usize) {
    let label = &d.kernel.label;
    let serial = class == AdapterClass::Cpu && 3 * segment < CPU_LOOP_LIMIT;
    let vec4 = serial && plane.is_multiple_of(4) && segment.is_multiple_of(4);
    assert_eq!(
        label.ends_with('4'),
        vec4,
        "{label} for planes of {plane} on {class:?}"
    );
}

fn check_group_norm(rng: &mut Rng, shape: &[usize], num_groups: usize, silu: bool, mean: f32) {
    let c = shape[1];
    let (x, xh) = offset(rng, shape, mean, 1.0);
    let (w, wh) = random(rng, &[c]);
    let (b, bh) = random(rng, &[c]);
    let want = reference::group_norm(&xh, shape, &wh, &bh, num_groups, 1e-5, silu);
    for class in VARIANTS {
        let out = zeros(shape);
        let cfg = norm::GroupNorm {
            num_groups,
            eps: 1e-5,
            silu,
        };
        let d = norm::group_norm_with(ctx(), &x, &w, &b, &out, cfg, class).unwrap();
        let plane: usize = shape[2..].iter().product();
        expect_vec4_kernel(&d, class, plane, c / num_groups * plane);
        dispatch::run(ctx(), &[d]).unwrap();
        // Outputs are O(1): 2e-5 absolute + 1e-5 relative, also for inputs 100 ± 1
        // (f32 statistics done naively would be off by ~1e-2 there).
        assert_close(
            &format!("group_norm {shape:?} G={num_groups} silu={silu} mean={mean} {class:?}"),
            &out.to_vec(ctx()).unwrap(),
            &want,
            2e-5,
            1e-5,
        );
    }
}

#[test]
fn group_norm_matches_reference() {
    let mut rng = Rng::new(10);
    // Groups 1, 8, 32; channels per group 1, 3, 4, 48; spatial 1-D and 2-D, odd sizes.
    let cases: [(&[usize], usize); 7] = [
        (&[2, 48, 5, 7], 1),
        (&[3, 24, 5, 3], 8),
        (&[2, 32, 9, 11], 32),
        (&[1, 128, 3, 3], 32),
        (&[2, 64, 37], 8),
        (&[5, 8, 1, 1], 8),
        (&[2, 24, 4, 6], 8),
    ];
    for (shape, groups) in cases {
        for silu in [false, true] {
            check_group_norm(&mut rng, shape, groups, silu, 0.0);
        }
    }
}

#[test]
fn group_norm_large_offset_tiny_unet_shape() {
    // The largest tiny-UNet norm: 2 candidates, 128 channels at 32x32, 32 groups
    // of 4096 values each, with mean 100 and std 1 to catch cancellation.
    let mut rng = Rng::new(11);
    check_group_norm(&mut rng, &[2, 128, 32, 32], 32, true, 100.0);
    check_group_norm(&mut rng, &[2, 64, 16, 16], 1, false, -100.0);
}

/// Groups longer than a CPU driver lets one invocation loop over (three passes
/// of 32,400 and 65,536 values: the VAE decoder's 512 channels at 45x45 and 64x64
/// latents) take the workgroup layout there: every value written, as on a GPU.
/// Before, lavapipe's loop limiter left all but the first 733 values of each
/// group's 32,400 unwritten, silently.
#[test]
fn group_norm_longer_than_a_cpu_invocation_may_loop() {
    let mut rng = Rng::new(12);
    for shape in [[1, 512, 45, 45], [1, 512, 64, 64]] {
        check_group_norm(&mut rng, &shape, 32, true, 0.0);
    }
}

#[test]
fn layer_norm_matches_reference() {
    let mut rng = Rng::new(12);
    // CLIP text [2, 77, 64]; D not a power of two; rows with mean 100.
    for (shape, mean) in [
        (&[2, 77, 64][..], 0.0),
        (&[3, 5, 320], 0.0),
        (&[7, 768], 100.0),
        (&[4, 9, 30], 0.0),
    ] {
        let d = shape[shape.len() - 1];
        let (x, xh) = offset(&mut rng, shape, mean, 1.0);
        let (w, wh) = random(&mut rng, &[d]);
        let (b, bh) = random(&mut rng, &[d]);
        let want = reference::layer_norm(&xh, d, &wh, &bh, 1e-5);
        for class in VARIANTS {
            let out = zeros(shape);
            let dispatch = norm::layer_norm_with(ctx(), &x, &w, &b, &out, 1e-5, class).unwrap();
            expect_vec4_kernel(&dispatch, class, d, d);
            dispatch::run(ctx(), &[dispatch]).unwrap();
            // Same as group_norm: 2e-5 absolute + 1e-5 relative.
            assert_close(
                &format!("layer_norm {shape:?} mean={mean} {class:?}"),
                &out.to_vec(ctx()).unwrap(),
                &want,
                2e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn l2_normalize_matches_reference() {
    let mut rng = Rng::new(13);
    for shape in [&[5, 512][..], &[2, 3, 7], &[1, 1000]] {
        let d = shape[shape.len() - 1];
        let mut xh = rng.vec(shape.iter().product());
        xh[..d].fill(0.0); // a zero row divides by eps, not by 0
        let x = Tensor::from_f32(ctx(), "x", shape, &xh).unwrap();
        let want = reference::l2_normalize(&xh, d);
        for class in VARIANTS {
            let out = zeros(shape);
            let dispatch = norm::l2_normalize_with(ctx(), &x, &out, class).unwrap();
            dispatch::run(ctx(), &[dispatch]).unwrap();
            // Unit vectors: 1e-6 absolute + 1e-5 relative.
            assert_close(
                &format!("l2_normalize {shape:?} {class:?}"),
                &out.to_vec(ctx()).unwrap(),
                &want,
                1e-6,
                1e-5,
            );
        }
    }
}

#[test]
fn softmax_matches_reference_with_large_magnitudes() {
    let mut rng = Rng::new(14);
    // Rows of 77 (CLIP), 1000 (longer than a GPU workgroup), 4; values up to ±500
    // after scaling, where an unshifted exp would overflow.
    for (shape, magnitude, scale) in [
        (&[6, 77][..], 1.0, 0.125),
        (&[3, 1000], 50.0, 1.0),
        (&[2, 5, 4], 250.0, 2.0),
    ] {
        let d = shape[shape.len() - 1];
        let xh: Vec<f32> = rng
            .vec(shape.iter().product())
            .iter()
            .map(|v| v * magnitude)
            .collect();
        let x = Tensor::from_f32(ctx(), "x", shape, &xh).unwrap();
        let want = reference::softmax(&xh, d, scale as f64);
        for class in VARIANTS {
            let out = zeros(shape);
            let dispatch = norm::softmax_with(ctx(), &x, &out, scale, class).unwrap();
            dispatch::run(ctx(), &[dispatch]).unwrap();
            // Probabilities: 1e-6 absolute + 1e-4 relative (exp of arguments up to
            // ~500 in magnitude carries their f32 rounding, ~3e-5 relative).
            assert_close(
                &format!("softmax {shape:?} x{magnitude} scale {scale} {class:?}"),
                &out.to_vec(ctx()).unwrap(),
                &want,
                1e-6,
                1e-4,
            );
        }
    }
}

#[test]
fn norms_reject_bad_shapes() {
    let x = zeros(&[2, 30, 4, 4]);
    let w = zeros(&[30]);
    let cfg = norm::GroupNorm {
        num_groups: 8,
        eps: 1e-5,
        silu: false,
    };
    let err = norm::group_norm(ctx(), &x, &w, &w, &x, cfg).unwrap_err();
    assert!(
        err.to_string().contains("not divisible into 8 groups"),
        "{err}"
    );
    let err = norm::layer_norm(ctx(), &x, &w, &w, &zeros(&[2, 30, 4, 4]), 1e-5).unwrap_err();
    assert!(err.to_string().contains("layer_norm: weight"), "{err}");
}

#[test]
fn softmax_over_more_rows_than_one_grid_dimension() {
    // 70,000 rows: the GPU variant's one-workgroup-per-row launch folds into y.
    let mut rng = Rng::new(15);
    let shape = [70_000, 3];
    let (x, xh) = random(&mut rng, &shape);
    let want = reference::softmax(&xh, 3, 1.0);
    for class in VARIANTS {
        let out = zeros(&shape);
        let dispatch = norm::softmax_with(ctx(), &x, &out, 1.0, class).unwrap();
        dispatch::run(ctx(), &[dispatch]).unwrap();
        // Probabilities of O(1) inputs: 1e-6 absolute + 1e-5 relative.
        assert_close(
            &format!("softmax {shape:?} {class:?}"),
            &out.to_vec(ctx()).unwrap(),
            &want,
            1e-6,
            1e-5,
        );
    }
}

/// The split group norm (GPUs, few long segments): chunks' moments combined,
/// chunk counts that do not divide the segment, inputs at 100 ± 1; the same
/// tolerance as the one-launch kernels.
#[test]
fn group_norm_split_over_chunks_matches_reference() {
    let mut rng = Rng::new(14);
    for (shape, groups, chunks, mean) in [
        ([2, 64, 16, 16], 8, 5, 0.0),
        ([1, 32, 20, 20], 4, 3, 100.0),
        ([2, 16, 8, 8], 16, 2, -100.0),
    ] {
        let c = shape[1];
        let (x, xh) = offset(&mut rng, &shape, mean, 1.0);
        let (w, wh) = random(&mut rng, &[c]);
        let (b, bh) = random(&mut rng, &[c]);
        let want = reference::group_norm(&xh, &shape, &wh, &bh, groups, 1e-5, true);
        let out = zeros(&shape);
        let moments = zeros(&[2 * shape[0] * groups * chunks]);
        let cfg = norm::GroupNorm {
            num_groups: groups,
            eps: 1e-5,
            silu: true,
        };
        let ds = norm::group_norm_split(ctx(), &x, &w, &b, &moments, &out, cfg, chunks).unwrap();
        dispatch::run(ctx(), &ds).unwrap();
        assert_close(
            &format!("split group_norm {shape:?} G={groups} chunks={chunks} mean={mean}"),
            &out.to_vec(ctx()).unwrap(),
            &want,
            2e-5,
            1e-5,
        );
    }
    let small = zeros(&[1, 2]);
    let cfg = norm::GroupNorm {
        num_groups: 1,
        eps: 1e-5,
        silu: false,
    };
    let (x, out) = (zeros(&[1, 2, 8, 8]), zeros(&[1, 2, 8, 8]));
    let (w, b) = (zeros(&[2]), zeros(&[2]));
    let err = norm::group_norm_split(ctx(), &x, &w, &b, &small, &out, cfg, 4).unwrap_err();
    assert!(err.to_string().contains("moments has 2 values"), "{err}");
}

/// Which group norms split: on GPUs, few segments of 2 chunks or more (SD's
/// VAE decoder at 512x512, its UNet at 512x512); never on CPU drivers unless
/// `EASEL_SPLIT_NORMS=always`, never with `off`.
#[test]
fn group_norm_splits_few_long_segments_on_gpus() {
    let chunks = |class, shape: &[usize], groups| {
        norm::group_norm_chunks(class, Policy::Auto, shape, groups)
    };
    let gpu = AdapterClass::Gpu;
    assert_eq!(chunks(gpu, &[1, 128, 512, 512], 32), 64);
    assert_eq!(chunks(gpu, &[2, 320, 64, 64], 32), 3);
    assert_eq!(chunks(gpu, &[2, 320, 32, 32], 32), 1);
    assert_eq!(chunks(gpu, &[16, 128, 128, 128], 32), 1);
    assert_eq!(chunks(AdapterClass::Cpu, &[1, 128, 512, 512], 32), 1);
    let cpu = AdapterClass::Cpu;
    assert_eq!(
        norm::group_norm_chunks(cpu, Policy::Always, &[2, 8, 4, 4], 4),
        2
    );
    assert_eq!(
        norm::group_norm_chunks(cpu, Policy::Always, &[1, 128, 512, 512], 32),
        64
    );
    assert_eq!(
        norm::group_norm_chunks(gpu, Policy::Off, &[1, 128, 512, 512], 32),
        1
    );
}
