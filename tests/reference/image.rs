//! References for wgsl/image.wgsl.

/// `(clamp(x·scale + bias, lo, hi) − mean[c]) / std[c]` over NCHW.
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    x: &[f32],
    channels: usize,
    spatial: usize,
    scale: f64,
    bias: f64,
    lo: f64,
    hi: f64,
    mean: &[f64],
    std: &[f64],
) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / spatial) % channels;
            ((v as f64 * scale + bias).clamp(lo, hi) - mean[c]) / std[c]
        })
        .collect()
}

/// torchvision's `to_pil_image` rounding of one [0, 1] channel value.
pub fn byte(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}
