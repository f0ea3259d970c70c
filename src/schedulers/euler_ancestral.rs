//! Euler ancestral (k-diffusion's `sample_euler_ancestral`), as diffusers'
//! `EulerAncestralDiscreteScheduler` (scheduling_euler_ancestral_discrete.py).
//!
//! Works in sigma space, σ = √((1−ᾱ)/ᾱ), on the unscaled sample x:
//! ```text
//! model_input = x / √(σ²+1)
//! x0          = x − σ·ε                        (v: x/(σ²+1) − σ/√(σ²+1)·v)
//! σ_up        = √(σ_to²·(σ²−σ_to²)/σ²),  σ_down = √(σ_to² − σ_up²)
//! x_next      = x + (x − x0)/σ · (σ_down − σ) + σ_up·noise
//! ```

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::NO_CLIP;
use super::{check_steps, check_timesteps, spaced_timesteps, Sampler, Scheduler, StepCoefficients};
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct EulerAncestral {
    steps: Vec<StepCoefficients>,
    init_noise_sigma: f32,
}

/// `np.interp(t, arange(len(table)), table)` for t within the table (exact at
/// whole t, as numpy is).
fn interp(table: &[f64], t: f64) -> f64 {
    if t.fract() == 0.0 {
        return table[t as usize];
    }
    let lo = (t.floor() as usize).min(table.len() - 2);
    let slope = table[lo + 1] - table[lo];
    slope * (t - lo as f64) + table[lo]
}

/// The training sigmas √((1−ᾱ)/ᾱ), in float32 as torch computes them.
fn train_sigmas(config: &SchedulerConfig) -> Vec<f64> {
    let alphas = config.alphas_cumprod();
    alphas
        .iter()
        .map(|&a| ((1.0 - a) / a).sqrt() as f32 as f64)
        .collect()
}

/// σ at each timestep of `ts` in `config`'s schedule (interpolated at a
/// fractional one, as `set_timesteps` does): the noise level of a sample there.
pub fn sigmas_at(config: &SchedulerConfig, ts: &[f64]) -> Vec<f64> {
    let table = train_sigmas(config);
    ts.iter().map(|&t| interp(&table, t)).collect()
}

impl EulerAncestral {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        check_steps(config, steps)?;
        if config.prediction_type == PredictionType::Sample {
            // diffusers raises NotImplementedError here too.
            return Err(Error::model(
                &config.path,
                "prediction_type \"sample\" is not supported by Euler a (use ddim or dpm++2m)",
            ));
        }
        let spacing = config.spacing(&Sampler::EulerAncestral.defaults());
        let (timesteps, sigmas) = match config.karras {
            true => super::karras::schedule(config, Sampler::EulerAncestral, steps),
            false => spaced_sigmas(config, spacing, steps)?,
        };
        let sigmas: Vec<f64> = sigmas.into_iter().chain([0.0]).collect();

        let steps = timesteps
            .iter()
            .zip(sigmas.windows(2))
            .map(|(&t, pair)| step(config.prediction_type, t, pair[0], pair[1]))
            .collect();
        // init_noise_sigma: σ_max for linspace / trailing (and Karras, as
        // k-diffusion), √(σ_max²+1) for leading.
        let sigma_max = sigmas.iter().copied().fold(0.0, f64::max);
        let init_noise_sigma = match spacing {
            TimestepSpacing::Leading if !config.karras => (sigma_max * sigma_max + 1.0).sqrt(),
            _ => sigma_max,
        };
        Ok(EulerAncestral {
            steps,
            init_noise_sigma: init_noise_sigma as f32,
        })
    }
}

/// `set_timesteps`: the spaced timesteps, and the training sigmas (float32 as
/// torch computes them) interpolated at them, stored as float32.
fn spaced_sigmas(
    config: &SchedulerConfig,
    spacing: TimestepSpacing,
    steps: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let timesteps = spaced_timesteps(config, spacing, steps, false);
    check_timesteps(config, &timesteps, steps)?;
    let train_sigmas = train_sigmas(config);
    let sigmas = timesteps
        .iter()
        .map(|&t| interp(&train_sigmas, t) as f32 as f64)
        .collect();
    Ok((timesteps, sigmas))
}

/// One step from σ to σ_to (scheduling_euler_ancestral_discrete.py `step`).
fn step(prediction: PredictionType, timestep: f64, sigma: f64, sigma_to: f64) -> StepCoefficients {
    let (x0_x, x0_m) = match prediction {
        PredictionType::VPrediction => (
            1.0 / (sigma * sigma + 1.0),
            -sigma / (sigma * sigma + 1.0).sqrt(),
        ),
        _ => (1.0, -sigma),
    };
    let sigma_up =
        (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
    let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
    // x + (x − x0)/σ·dt = (1 + dt/σ)·x − dt/σ·x0
    let dt_over_sigma = (sigma_down - sigma) / sigma;
    StepCoefficients {
        timestep: timestep as f32,
        in_scale: (1.0 / (sigma * sigma + 1.0).sqrt()) as f32,
        x0_x: x0_x as f32,
        x0_m: x0_m as f32,
        clip: NO_CLIP,
        a: (1.0 + dt_over_sigma) as f32,
        b: 0.0,
        e: -dt_over_sigma as f32,
        c: 0.0,
        d: sigma_up as f32,
    }
}

impl Scheduler for EulerAncestral {
    fn sampler(&self) -> Sampler {
        Sampler::EulerAncestral
    }

    fn coefficients(&self) -> &[StepCoefficients] {
        &self.steps
    }

    fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }
}
