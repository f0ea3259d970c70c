//! Reference for wgsl/attention.wgsl: the [Lq, Lk] scores materialised in f64.

/// Shapes of one attention call: q `[b, lq, heads*dh]`, k and v `[b, lk, heads*dh]`.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub b: usize,
    pub lq: usize,
    pub lk: usize,
    pub heads: usize,
    pub dh: usize,
}

/// `F.scaled_dot_product_attention` per head, heads interleaved in the last dim:
/// softmax(q k^T * scale, masked to j <= i when causal) v.
pub fn scaled_dot_product_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: Shape,
    scale: f64,
    causal: bool,
) -> Vec<f64> {
    let width = s.heads * s.dh;
    let mut out = vec![0.0; s.b * s.lq * width];
    for b in 0..s.b {
        for h in 0..s.heads {
            let col = |row: usize, d: usize| row * width + h * s.dh + d;
            for i in 0..s.lq {
                let keys = if causal { (i + 1).min(s.lk) } else { s.lk };
                let scores: Vec<f64> = (0..keys)
                    .map(|j| {
                        let dot: f64 = (0..s.dh)
                            .map(|d| {
                                q[col(b * s.lq + i, d)] as f64 * k[col(b * s.lk + j, d)] as f64
                            })
                            .sum();
                        dot * scale
                    })
                    .collect();
                let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                let sum: f64 = weights.iter().sum();
                for d in 0..s.dh {
                    let y: f64 = (0..keys)
                        .map(|j| weights[j] * v[col(b * s.lk + j, d)] as f64)
                        .sum();
                    out[col(b * s.lq + i, d)] = y / sum;
                }
            }
        }
    }
    out
}
