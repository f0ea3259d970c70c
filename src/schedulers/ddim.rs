//! DDIM (Song et al. 2020), as diffusers' `DDIMScheduler` (scheduling_ddim.py).
//!
//! ```text
//! x0     = (x − √(1−ᾱ_t)·ε) / √ᾱ_t                   (from ε, v or x0 predictions)
//! x_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε + σ·noise,   σ = η·√((1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev))
//! ```
//! Deterministic for η = 0 (the default). With `clip_sample`, x0 is clamped to
//! ±`clip_sample_range` and ε stays the unclamped one, as diffusers does.

use super::config::{PredictionType, SchedulerConfig};
use super::NO_CLIP;
use super::{check_steps, check_timesteps, spaced_timesteps, Sampler, Scheduler, StepCoefficients};
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct Ddim {
    steps: Vec<StepCoefficients>,
    pub eta: f32,
}

/// A prediction written as linear forms in (x, model_out): x0 and ε.
struct Linear {
    x0_x: f64,
    x0_m: f64,
    eps_x: f64,
    eps_m: f64,
}

/// x0 and ε from the model output at ᾱ_t (scheduling_ddim.py `step`, "2. compute
/// predicted original sample from predicted noise").
fn predictions(prediction: PredictionType, alpha_prod_t: f64) -> Linear {
    let (sqrt_a, sqrt_b) = (alpha_prod_t.sqrt(), (1.0 - alpha_prod_t).sqrt());
    match prediction {
        // x0 = (x − √β·m)/√α, ε = m
        PredictionType::Epsilon => Linear {
            x0_x: 1.0 / sqrt_a,
            x0_m: -sqrt_b / sqrt_a,
            eps_x: 0.0,
            eps_m: 1.0,
        },
        // x0 = m, ε = (x − √α·m)/√β
        PredictionType::Sample => Linear {
            x0_x: 0.0,
            x0_m: 1.0,
            eps_x: 1.0 / sqrt_b,
            eps_m: -sqrt_a / sqrt_b,
        },
        // x0 = √α·x − √β·m, ε = √α·m + √β·x
        PredictionType::VPrediction => Linear {
            x0_x: sqrt_a,
            x0_m: -sqrt_b,
            eps_x: sqrt_b,
            eps_m: sqrt_a,
        },
    }
}

impl Ddim {
    /// `eta` ∈ [0, 1]: 0 is DDIM, 1 is DDPM-like ancestral noise.
    pub fn new(config: &SchedulerConfig, steps: usize, eta: f32) -> Result<Self> {
        check_steps(config, steps)?;
        if !(0.0..=1.0).contains(&eta) {
            return Err(crate::bad_input!("DDIM eta {eta}: must lie in [0, 1]"));
        }
        let defaults = Sampler::Ddim.defaults();
        let timesteps = spaced_timesteps(config, config.spacing(&defaults), steps, true);
        check_timesteps(config, &timesteps, steps)?;

        let alphas_cumprod = config.alphas_cumprod();
        let final_alpha_cumprod = if config.set_alpha_to_one(&defaults) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let clip = if config.clip_sample(&defaults) {
            config.clip_sample_range as f32
        } else {
            NO_CLIP
        };
        // diffusers: prev_timestep = timestep - num_train_timesteps // num_inference_steps,
        // whatever the spacing.
        let stride = (config.num_train_timesteps / steps) as i64;
        let eta = eta as f64;
        let steps = timesteps
            .iter()
            .map(|&t| {
                let t = t as i64;
                let alpha_t = alphas_cumprod[t as usize];
                let prev = t - stride;
                let alpha_prev = if prev >= 0 {
                    alphas_cumprod[prev as usize]
                } else {
                    final_alpha_cumprod
                };
                let p = predictions(config.prediction_type, alpha_t);
                // _get_variance
                let variance = (1.0 - alpha_prev) / (1.0 - alpha_t) * (1.0 - alpha_t / alpha_prev);
                let std_dev = eta * variance.sqrt();
                // "direction pointing to x_t"; max(0) guards rounding at η = 1.
                let direction = (1.0 - alpha_prev - std_dev * std_dev).max(0.0).sqrt();
                StepCoefficients {
                    timestep: t as f32,
                    in_scale: 1.0,
                    x0_x: p.x0_x as f32,
                    x0_m: p.x0_m as f32,
                    clip,
                    a: (direction * p.eps_x) as f32,
                    b: (direction * p.eps_m) as f32,
                    e: alpha_prev.sqrt() as f32,
                    c: 0.0,
                    d: std_dev as f32,
                }
            })
            .collect();
        Ok(Ddim {
            steps,
            eta: eta as f32,
        })
    }
}

impl Scheduler for Ddim {
    fn sampler(&self) -> Sampler {
        Sampler::Ddim
    }

    fn coefficients(&self) -> &[StepCoefficients] {
        &self.steps
    }

    fn init_noise_sigma(&self) -> f32 {
        1.0
    }
}
