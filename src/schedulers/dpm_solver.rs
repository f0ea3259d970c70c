//! DPM-Solver++(2M) (Lu et al. 2022), as diffusers' `DPMSolverMultistepScheduler`
//! with `algorithm_type="dpmsolver++"`, `solver_order=2`, `solver_type="midpoint"`
//! (scheduling_dpmsolver_multistep.py). Those three fields are what "DPM++ 2M"
//! means, so the config's values for them are not read.
//!
//! With α_t = 1/√(σ²+1), σ_t = σ·α_t, λ = ln α_t − ln σ_t, h = λ_t − λ_s0:
//! ```text
//! first order:  x_t = (σ_t/σ_s0)·x − α_t·(e^{−h} − 1)·x0
//! second order: x_t = (σ_t/σ_s0)·x − α_t·(e^{−h} − 1)·(x0 + ½·(x0 − x0_prev)/r0),
//!               r0 = (λ_s0 − λ_s1)/h
//! ```
//! The first step is first order (no history), and so is the last when
//! `final_sigmas_type` is "zero", `euler_at_final` is set, or `lower_order_final`
//! with fewer than 15 steps.

use super::config::{FinalSigmas, PredictionType, SchedulerConfig, TimestepSpacing};
use super::{check_steps, check_timesteps, leading, linspace, round_even, trailing};
use super::{Sampler, Scheduler, StepCoefficients, NO_CLIP};
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct DpmSolverMultistep {
    steps: Vec<StepCoefficients>,
}

/// (α_t, σ_t, λ_t) of a sigma in VE form (`_sigma_to_alpha_sigma_t`).
fn alpha_sigma_lambda(sigma: f64) -> (f64, f64, f64) {
    let alpha_t = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha_t;
    (alpha_t, sigma_t, alpha_t.ln() - sigma_t.ln())
}

/// `set_timesteps` without custom sigmas: `steps + 1` points, the last dropped.
fn timesteps(config: &SchedulerConfig, spacing: TimestepSpacing, steps: usize) -> Vec<f64> {
    let train = config.num_train_timesteps;
    // lambda_min_clipped cuts off the noisiest timesteps (searchsorted on flipped λ).
    let clipped = config
        .alphas_cumprod()
        .iter()
        .filter(|&&a| 0.5 * (a / (1.0 - a)).ln() < config.lambda_min_clipped)
        .count();
    let last = train - clipped;
    match spacing {
        TimestepSpacing::Linspace => linspace((last - 1) as f64, steps + 1)
            .into_iter()
            .rev()
            .take(steps)
            .map(round_even)
            .collect(),
        TimestepSpacing::Leading => leading(config, last / (steps + 1), 1..=steps),
        TimestepSpacing::Trailing => trailing(config, last, steps),
    }
}

/// x0 from the model output at σ (`convert_model_output` for dpmsolver++).
fn x0_form(prediction: PredictionType, sigma: f64) -> (f64, f64) {
    let (alpha_t, sigma_t, _) = alpha_sigma_lambda(sigma);
    match prediction {
        PredictionType::Epsilon => (1.0 / alpha_t, -sigma_t / alpha_t),
        PredictionType::Sample => (0.0, 1.0),
        PredictionType::VPrediction => (alpha_t, -sigma_t),
    }
}

impl DpmSolverMultistep {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        check_steps(config, steps)?;
        let (timesteps, sigmas) = match config.karras {
            true => super::karras::schedule(config, Sampler::DpmSolverMultistep, steps),
            false => spaced_sigmas(config, steps)?,
        };
        let sigma_last = match config.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => sigma_of(config.alphas_cumprod()[0]),
        };
        let sigmas: Vec<f64> = sigmas.into_iter().chain([sigma_last]).collect();

        let n = timesteps.len();
        let steps = (0..n)
            .map(|i| {
                let last = i == n - 1;
                let lower_order_final = last
                    && (config.euler_at_final
                        || (config.lower_order_final && n < 15)
                        || config.final_sigmas_type == FinalSigmas::Zero);
                let prev_sigma = (i > 0 && !lower_order_final).then(|| sigmas[i - 1]);
                step(
                    config.prediction_type,
                    timesteps[i],
                    sigmas[i],
                    sigmas[i + 1],
                    prev_sigma,
                )
            })
            .collect();
        Ok(DpmSolverMultistep { steps })
    }
}

/// σ = √((1−ᾱ)/ᾱ), stored as float32.
fn sigma_of(alpha_cumprod: f64) -> f64 {
    ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt() as f32 as f64
}

/// The spaced timesteps and the training sigmas at them.
fn spaced_sigmas(config: &SchedulerConfig, steps: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let spacing = config.spacing(&Sampler::DpmSolverMultistep.defaults());
    let timesteps = timesteps(config, spacing, steps);
    check_timesteps(config, &timesteps, steps)?;
    let alphas_cumprod = config.alphas_cumprod();
    let sigmas = timesteps
        .iter()
        .map(|&t| sigma_of(alphas_cumprod[t as usize]))
        .collect();
    Ok((timesteps, sigmas))
}

/// One update from σ_s0 = `sigma` to σ_t = `sigma_to`; second order when the
/// previous step's σ_s1 is given (`multistep_dpm_solver_second_order_update`).
fn step(
    prediction: PredictionType,
    timestep: f64,
    sigma: f64,
    sigma_to: f64,
    prev_sigma: Option<f64>,
) -> StepCoefficients {
    let (x0_x, x0_m) = x0_form(prediction, sigma);
    let (_, sigma_s0, lambda_s0) = alpha_sigma_lambda(sigma);
    let (a, e, c) = if sigma_to == 0.0 {
        // σ_t = 0: λ_t = ∞, e^{−h} = 0, so x_t = x0 exactly (diffusers gets there through inf).
        (0.0, 1.0, 0.0)
    } else {
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(sigma_to);
        let h = lambda_t - lambda_s0;
        // −α_t·(e^{−h} − 1), with expm1 for small h
        let k = -alpha_t * (-h).exp_m1();
        match prev_sigma {
            None => (sigma_t / sigma_s0, k, 0.0),
            Some(s1) => {
                let (_, _, lambda_s1) = alpha_sigma_lambda(s1);
                let r0 = (lambda_s0 - lambda_s1) / h;
                // D1 = (x0 − x0_prev)/r0, midpoint: x_t = … + k·D0 + ½·k·D1
                (sigma_t / sigma_s0, k * (1.0 + 0.5 / r0), -k * 0.5 / r0)
            }
        }
    };
    StepCoefficients {
        timestep: timestep as f32,
        in_scale: 1.0,
        x0_x: x0_x as f32,
        x0_m: x0_m as f32,
        clip: NO_CLIP,
        a: a as f32,
        b: 0.0,
        e: e as f32,
        c: c as f32,
        d: 0.0,
    }
}

impl Scheduler for DpmSolverMultistep {
    fn sampler(&self) -> Sampler {
        Sampler::DpmSolverMultistep
    }

    fn coefficients(&self) -> &[StepCoefficients] {
        &self.steps
    }

    fn init_noise_sigma(&self) -> f32 {
        1.0
    }
}
