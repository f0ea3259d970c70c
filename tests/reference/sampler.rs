//! References for wgsl/sampler.wgsl: preparing the UNet batch, guidance, and the
//! step itself ([`apply`], the linear form of `easel::schedulers`' module docs).

use easel::schedulers::StepCoefficients;

/// UNet batch `[(1+P)K, n]` and timesteps from candidates `x` `[K, n]`.
pub fn prepare(row: &[f32], x: &[f32], prompts: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let model_in = (0..=prompts)
        .flat_map(|_| x.iter().map(|&v| row[1] as f64 * v as f64))
        .collect();
    (model_in, vec![row[0] as f64; (prompts + 1) * k])
}

/// Composable classifier-free guidance (Liu et al. 2022, DESIGN.md).
pub fn guide(model_out: &[f32], weights: &[f32], g: f64, per_group: usize) -> Vec<f64> {
    (0..per_group)
        .map(|i| {
            let u = model_out[i] as f64;
            let sum: f64 = weights
                .iter()
                .enumerate()
                .map(|(j, &w)| w as f64 * (model_out[(j + 1) * per_group + i] as f64 - u))
                .sum();
            u + g * sum
        })
        .collect()
}

/// The CPU reference of one sampler step, elementwise over equal-length slices;
/// returns `(x_next, x0)`. Accumulates in f64. `x0_prev` and `noise` may be empty
/// when the step does not use them (`c == 0`, `d == 0`).
pub fn apply(
    s: &StepCoefficients,
    x: &[f32],
    model_out: &[f32],
    x0_prev: &[f32],
    noise: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let n = x.len();
    assert_eq!(model_out.len(), n, "apply: model_out length");
    assert!(
        !s.uses_x0_prev() || x0_prev.len() == n,
        "apply: x0_prev length"
    );
    assert!(!s.uses_noise() || noise.len() == n, "apply: noise length");
    let at = |v: &[f32], i: usize| v.get(i).copied().unwrap_or(0.0) as f64;
    let f = |v: f32| v as f64;
    (0..n)
        .map(|i| {
            let (xi, mi) = (f(x[i]), f(model_out[i]));
            let clip = f(s.clip);
            let x0 = (f(s.x0_x) * xi + f(s.x0_m) * mi).clamp(-clip, clip);
            let next = f(s.a) * xi
                + f(s.b) * mi
                + f(s.e) * x0
                + f(s.c) * at(x0_prev, i)
                + f(s.d) * at(noise, i);
            (next as f32, x0 as f32)
        })
        .unzip()
}

/// diffusers' `add_noise` for every candidate: `x[k] = a·init + b·noise[k]`,
/// `x0[k] = init`, for `init` `[n]` and `noise` `[K·n]`. f64.
pub fn add_noise(init: &[f32], noise: &[f32], (a, b): (f32, f32)) -> (Vec<f64>, Vec<f64>) {
    let n = init.len();
    let x = noise
        .iter()
        .enumerate()
        .map(|(i, &z)| a as f64 * init[i % n] as f64 + b as f64 * z as f64)
        .collect();
    let x0 = (0..noise.len()).map(|i| init[i % n] as f64).collect();
    (x, x0)
}

/// Inpainting's pull-back: `x = m·x + (1 − m)·(a·init + b·noise)`,
/// `x0 = m·x0 + (1 − m)·init` with `init` and `mask` `[n]` per candidate. f64.
pub fn keep(
    init: &[f32],
    noise: &[f32],
    mask: &[f32],
    level: (f32, f32),
    (x, x0): (&[f32], &[f32]),
) -> (Vec<f64>, Vec<f64>) {
    let (noised, clean) = add_noise(init, noise, level);
    let n = init.len();
    let mix = |kept: f64, own: f32, i: usize| {
        let m = mask[i % n] as f64;
        m * own as f64 + (1.0 - m) * kept
    };
    let x = (0..x.len()).map(|i| mix(noised[i], x[i], i)).collect();
    let x0 = (0..x0.len()).map(|i| mix(clean[i], x0[i], i)).collect();
    (x, x0)
}

/// A dedicated inpainting UNet's input: `torch.cat([model_in, extra.expand(B,
/// ..)], dim=1)` for `model_in` `[B, c]` and `extra` `[e]` per item (flattened
/// channels), so each item is its `c` values then `extra`'s `e`. f64.
pub fn concat_channels(model_in: &[f64], c: usize, extra: &[f32]) -> Vec<f64> {
    model_in
        .chunks(c)
        .flat_map(|item| item.iter().copied().chain(extra.iter().map(|&v| v as f64)))
        .collect()
}
