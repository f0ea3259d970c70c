//! Reference for wgsl/lora.wgsl: a LoRA merged into a layer weight, as peft's
//! `merge` and diffusers' `fuse_lora` do: `W + scale · (up @ down)` with `W`
//! seen as `[out, K]` (`weight.data += scale * (lora_B.weight @ lora_A.weight)`),
//! accumulated in f64.

pub fn merge(weight: &[f32], up: &[f32], down: &[f32], rank: usize, scale: f32) -> Vec<f64> {
    let k = down.len() / rank;
    weight
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let (o, j) = (i / k, i % k);
            let delta: f64 = (0..rank)
                .map(|r| up[o * rank + r] as f64 * down[r * k + j] as f64)
                .sum();
            w as f64 + scale as f64 * delta
        })
        .collect()
}
