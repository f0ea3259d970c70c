//! References for wgsl/norm.wgsl: statistics in f64, two-pass.

/// Mean and biased variance, as PyTorch's norms use.
fn moments(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// `torch.nn.GroupNorm(num_groups, C, eps)` on `x` `[N, C, *spatial]`, then SiLU if asked.
pub fn group_norm(
    x: &[f32],
    shape: &[usize],
    weight: &[f32],
    bias: &[f32],
    num_groups: usize,
    eps: f64,
    silu: bool,
) -> Vec<f64> {
    let c = shape[1];
    let spatial: usize = shape[2..].iter().product();
    let len = c / num_groups * spatial;
    let mut out = Vec::with_capacity(x.len());
    for (s, seg) in x.chunks(len).enumerate() {
        let (mean, var) = moments(seg);
        let rstd = 1.0 / (var + eps).sqrt();
        for (i, &v) in seg.iter().enumerate() {
            let ch = (s % num_groups) * (c / num_groups) + i / spatial;
            let y = (v as f64 - mean) * rstd * weight[ch] as f64 + bias[ch] as f64;
            out.push(if silu { y / (1.0 + (-y).exp()) } else { y });
        }
    }
    out
}

/// `torch.nn.LayerNorm(D, eps)` over the last dim `d`.
pub fn layer_norm(x: &[f32], d: usize, weight: &[f32], bias: &[f32], eps: f64) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let (mean, var) = moments(row);
            let rstd = 1.0 / (var + eps).sqrt();
            row.iter()
                .enumerate()
                .map(move |(i, &v)| (v as f64 - mean) * rstd * weight[i] as f64 + bias[i] as f64)
        })
        .collect()
}

/// `F.normalize(x, dim=-1)` with its default eps 1e-12.
pub fn l2_normalize(x: &[f32], d: usize) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let norm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            row.iter().map(move |&v| v as f64 / norm.max(1e-12))
        })
        .collect()
}

/// `torch.softmax(x * scale, dim=-1)`.
pub fn softmax(x: &[f32], d: usize, scale: f64) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let top = row
                .iter()
                .map(|&v| v as f64 * scale)
                .fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|&v| (v as f64 * scale - top).exp()).sum();
            row.iter()
                .map(move |&v| (v as f64 * scale - top).exp() / sum)
        })
        .collect()
}
