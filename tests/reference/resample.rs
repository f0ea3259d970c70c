//! References for wgsl/resample.wgsl: NCHW tensors as flat slices plus a shape.

fn at(x: &[f32], [_, _, h, w]: [usize; 4], plane: usize, y: usize, xx: usize) -> f64 {
    x[(plane * h + y) * w + xx] as f64
}

/// Every output (plane, y, x) of an [N, C, Ho, Wo] result, in order.
fn planes(
    n_planes: usize,
    ho: usize,
    wo: usize,
    mut f: impl FnMut(usize, usize, usize) -> f64,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(n_planes * ho * wo);
    for plane in 0..n_planes {
        for y in 0..ho {
            for x in 0..wo {
                out.push(f(plane, y, x));
            }
        }
    }
    out
}

/// `F.interpolate(x, scale_factor=f, mode="nearest")`.
pub fn upsample_nearest2d(x: &[f32], s: [usize; 4], f: usize) -> Vec<f64> {
    planes(s[0] * s[1], s[2] * f, s[3] * f, |p, y, xx| {
        at(x, s, p, y / f, xx / f)
    })
}

/// `torch.nn.PixelShuffle(r)`: out[n, c, y, x] = in[n, c*r² + (y%r)*r + x%r, y/r, x/r].
pub fn pixel_shuffle(x: &[f32], s: [usize; 4], r: usize) -> Vec<f64> {
    let c_out = s[1] / (r * r);
    planes(s[0] * c_out, s[2] * r, s[3] * r, |p, y, xx| {
        let (n, c) = (p / c_out, p % c_out);
        let channel = n * s[1] + c * r * r + (y % r) * r + xx % r;
        at(x, s, channel, y / r, xx / r)
    })
}

/// PyTorch's `compute_source_index_and_lambda` for align_corners=False, with its
/// f32 arithmetic (`area_pixel_compute_scale` is `(float)in / out`): the source
/// index (dst + 0.5) * in/out - 0.5, clamped at 0; the right tap clamped at the
/// edge; its weight clamped to [0, 1].
fn taps(input: usize, output: usize, dst: usize) -> (usize, usize, f64) {
    let scale = input as f32 / output as f32;
    let real = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
    let i0 = real as usize;
    let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
    let lambda1 = (real - i0 as f32).clamp(0.0, 1.0);
    (i0, i1, lambda1 as f64)
}

/// `F.interpolate(x, size=(ho, wo), mode="bilinear", align_corners=False,
/// antialias=False)`; weights as PyTorch computes them, the sum in f64.
pub fn interpolate_bilinear(x: &[f32], s: [usize; 4], ho: usize, wo: usize) -> Vec<f64> {
    planes(s[0] * s[1], ho, wo, |p, y, xx| {
        let (y0, y1, ly) = taps(s[2], ho, y);
        let (x0, x1, lx) = taps(s[3], wo, xx);
        let row = |yy| (1.0 - lx) * at(x, s, p, yy, x0) + lx * at(x, s, p, yy, x1);
        (1.0 - ly) * row(y0) + ly * row(y1)
    })
}

/// `F.avg_pool2d(x, 2)` (floor mode).
pub fn avg_pool2d(x: &[f32], s: [usize; 4]) -> Vec<f64> {
    planes(s[0] * s[1], s[2] / 2, s[3] / 2, |p, y, xx| {
        let sum: f64 = [(0, 0), (0, 1), (1, 0), (1, 1)]
            .iter()
            .map(|(dy, dx)| at(x, s, p, 2 * y + dy, 2 * xx + dx))
            .sum();
        sum / 4.0
    })
}
