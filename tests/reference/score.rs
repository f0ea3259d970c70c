//! References for wgsl/score.wgsl.

/// `[K, P+1]`: cosine of each image row to each text row, then the weighted total.
pub fn similarity(image: &[f32], text: &[f32], weights: &[f32], dim: usize) -> Vec<f64> {
    let row = |v: &[f32], i: usize| {
        v[i * dim..(i + 1) * dim]
            .iter()
            .map(|&x| x as f64)
            .collect::<Vec<_>>()
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut out = Vec::new();
    for k in 0..image.len() / dim {
        let a = row(image, k);
        let mut total = 0.0;
        for (j, &w) in weights.iter().enumerate() {
            let b = row(text, j);
            let cos = dot(&a, &b) / (dot(&a, &a) * dot(&b, &b)).sqrt().max(1e-8);
            out.push(cos);
            total += w as f64 * cos;
        }
        out.push(total);
    }
    out
}
