//! wgsl/image.wgsl against tests/reference/image.rs.

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::image as reference;
use easel::gpu::dispatch;
use easel::gpu::{DType, Tensor};
use easel::ops::image;

#[test]
// CLIP's constants as published (more digits than f32 keeps).
#[allow(clippy::excessive_precision)]
fn normalize_matches_reference() {
    let mut rng = Rng::new(30);
    let (x, xh) = random(&mut rng, &[2, 3, 7, 5]);
    let xh: Vec<f32> = xh.iter().map(|v| v * 1.5).collect(); // some values clamp
    x.write(ctx(), &xh).unwrap();
    let out = zeros(&[2, 3, 7, 5]);
    let mean = [0.48145466, 0.4578275, 0.40821073];
    let std = [0.26862954, 0.26130258, 0.27577711];
    let n = image::Normalize::clip(mean, std);
    dispatch::run(ctx(), &[image::normalize(ctx(), &x, &out, &n).unwrap()]).unwrap();
    let m: Vec<f64> = mean.iter().map(|&v| v as f64).collect();
    let s: Vec<f64> = std.iter().map(|&v| v as f64).collect();
    let want = reference::normalize(&xh, 3, 35, 0.5, 0.5, 0.0, 1.0, &m, &s);
    // A multiply-add, a subtract and a divide in f32.
    assert_close("normalize", &out.to_vec(ctx()).unwrap(), &want, 1e-6, 1e-6);
}

#[test]
fn to_rgba8_packs_the_chosen_item() {
    let mut rng = Rng::new(31);
    let (x, xh) = random(&mut rng, &[2, 3, 4, 6]);
    let xh: Vec<f32> = xh.iter().map(|v| v * 0.6 + 0.5).collect();
    x.write(ctx(), &xh).unwrap();
    let mut pixels = zeros(&[4, 6]);
    pixels.dtype = DType::U32;
    dispatch::run(ctx(), &[image::to_rgba8(ctx(), &x, 1, &pixels).unwrap()]).unwrap();
    let got: Vec<u8> = bytemuck::cast_slice(&pixels.to_vec(ctx()).unwrap()).to_vec();
    for p in 0..24 {
        for c in 0..3 {
            assert_eq!(
                got[4 * p + c],
                reference::byte(xh[72 + c * 24 + p]),
                "pixel {p} channel {c}"
            );
        }
        assert_eq!(got[4 * p + 3], 255);
    }
}

#[test]
fn to_rgba8_rejects_wrong_shapes() {
    let x = zeros(&[1, 4, 2, 2]);
    let pixels = Tensor::from_u32(ctx(), "p", &[2, 2], &[0; 4]).unwrap();
    assert!(image::to_rgba8(ctx(), &x, 0, &pixels).is_err());
    let x = zeros(&[1, 3, 2, 2]);
    assert!(image::to_rgba8(ctx(), &x, 1, &pixels).is_err());
}
