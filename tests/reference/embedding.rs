//! References for wgsl/embedding.wgsl.

/// diffusers `get_timestep_embedding`, rounding to f32 wherever torch does (its
/// Python scalars, the exponent, the frequency and the angle), with exact exp,
/// sin and cos: the f32 pipeline PyTorch runs, free of transcendental error.
pub fn timestep_embedding(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    scale: f64,
    max_period: f64,
) -> Vec<f64> {
    let half = dim / 2;
    let neg_log = -max_period.ln() as f32;
    let denominator = (half as f64 - downscale_freq_shift) as f32;
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let angles: Vec<f64> = (0..half)
            .map(|k| {
                let exponent = neg_log * k as f32 / denominator;
                let freq = (exponent as f64).exp() as f32;
                (scale as f32 * (t * freq)) as f64
            })
            .collect();
        let sin = angles.iter().map(|a| a.sin());
        let cos = angles.iter().map(|a| a.cos());
        if flip_sin_to_cos {
            out.extend(cos.chain(sin));
        } else {
            out.extend(sin.chain(cos));
        }
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

/// transformers `CLIPTextEmbeddings`: token_embedding[ids] + position_embedding[arange(L)],
/// rounded to f32 once like the f32 add.
pub fn clip_text_embeddings(
    ids: &[u32],
    l: usize,
    token: &[f32],
    position: &[f32],
    d: usize,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(ids.len() * d);
    for (t, &id) in ids.iter().enumerate() {
        let pos = t % l;
        for e in 0..d {
            let sum = token[id as usize * d + e] as f64 + position[pos * d + e] as f64;
            out.push(sum as f32 as f64);
        }
    }
    out
}

/// transformers `CLIPVisionEmbeddings` after the patch conv: patches [B, D, NP]
/// transposed to [B, NP, D], the class token prepended, positions added.
pub fn clip_vision_embeddings(
    patches: &[f32],
    [b, d, np]: [usize; 3],
    class: &[f32],
    position: &[f32],
) -> Vec<f64> {
    let mut out = Vec::with_capacity(b * (np + 1) * d);
    for bi in 0..b {
        for s in 0..=np {
            for e in 0..d {
                let v = if s == 0 {
                    class[e]
                } else {
                    patches[(bi * d + e) * np + s - 1]
                };
                out.push((v as f64 + position[s * d + e] as f64) as f32 as f64);
            }
        }
    }
    out
}
