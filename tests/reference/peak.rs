//! References for wgsl/peak.wgsl.

/// Per invocation i of n, per lane: `Σ_c x_c` where chain c starts at
/// `seeds[i % m][lane] + c` and takes `iterations` steps of `x ← x·a + b`.
/// `seeds` is `[m, 4]` flattened; returns `[n, 4]` flattened.
pub fn fma_chains(seeds: &[f32], n: usize, iterations: u32, a: f32, b: f32) -> Vec<f64> {
    let m = seeds.len() / 4;
    let (a, b) = (a as f64, b as f64);
    (0..n * 4)
        .map(|j| {
            let start = seeds[(j / 4) % m * 4 + j % 4] as f64;
            (0..8)
                .map(|c| (0..iterations).fold(start + c as f64, |x, _| x * a + b))
                .sum()
        })
        .collect()
}
