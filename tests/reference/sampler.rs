//! References for wgsl/sampler.wgsl (the step itself: `easel::schedulers::apply`).

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
