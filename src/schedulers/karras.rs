//! Karras sigmas (Karras et al. 2022, "Elucidating the Design Space of
//! Diffusion-Based Generative Models", eq. 5), `--karras`: A1111's
//! `Schedule type: Karras`, k-diffusion's `get_sigmas_karras`, diffusers'
//! `use_karras_sigmas=True`.
//!
//! ```text
//! σ_i = (σ_max^{1/ρ} + i/(n−1) · (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ,   ρ = 7,  i = 0..n
//! ```
//!
//! with σ_min and σ_max the smallest and largest training sigmas
//! √((1−ᾱ)/ᾱ), then a final σ = 0 (or σ_min with `final_sigmas_type:
//! "sigma_min"`). The UNet is fed the timestep whose sigma that is, interpolated in
//! log σ between training timesteps (diffusers' `_sigma_to_t`, k-diffusion's
//! `sigma_to_t`). As in diffusers' `DPMSolverMultistepScheduler` it is rounded to
//! a whole timestep for DPM++ 2M (truncated for a `squaredcos_cap_v2` schedule,
//! as its int64 cast does) and kept fractional for Euler a (diffusers'
//! `EulerDiscreteScheduler`, k-diffusion). The schedule ignores
//! `timestep_spacing`: it spans the whole training range, as k-diffusion's and
//! diffusers' DPM-Solver's do (diffusers' Euler classes agree under "linspace"
//! spacing), and Euler a starts from noise of σ_max (k-diffusion, A1111).
//! DDIM has no sigma schedule to replace: `--karras` with it is refused.

use super::config::{BetaSchedule, SchedulerConfig};
use super::Sampler;
use crate::error::{Error, Result};

/// ρ of the Karras schedule (the paper's, k-diffusion's and diffusers' value).
pub const RHO: f64 = 7.0;

/// `scheduler` with Karras sigmas on when `karras` is asked for; refused
/// when a sampler of the run has no sigma schedule (DDIM).
pub fn config(
    scheduler: &SchedulerConfig,
    karras: bool,
    mut samplers: impl Iterator<Item = Sampler>,
) -> Result<SchedulerConfig> {
    if karras && samplers.any(|s| s == Sampler::Ddim) {
        return Err(Error::BadInput(
            "--karras: Karras sigmas are for Euler a and DPM++ 2M; DDIM has no sigma schedule \
             (add --sampler euler_a or --sampler dpm++2m, and no sampler=ddim phase)"
                .into(),
        ));
    }
    let mut config = scheduler.clone();
    config.karras = karras;
    Ok(config)
}

/// The training sigmas √((1−ᾱ)/ᾱ), in float32 arithmetic as torch computes
/// them from diffusers' float32 `alphas_cumprod`, smallest (t = 0) first.
fn train_sigmas(config: &SchedulerConfig) -> Vec<f32> {
    config
        .alphas_cumprod()
        .iter()
        .map(|&a| {
            let a = a as f32;
            ((1.0 - a) / a).sqrt()
        })
        .collect()
}

/// `steps` Karras sigmas from σ_max down to σ_min (`_convert_to_karras`, in f64).
fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / RHO), sigma_max.powf(1.0 / RHO));
    (0..steps)
        .map(|i| {
            // np.linspace(0, 1, steps): i·(1/(steps−1)), the last exactly 1.
            let ramp = match (i, steps) {
                (_, 1) => 0.0,
                (i, n) if i == n - 1 => 1.0,
                (i, n) => i as f64 * (1.0 / (n - 1) as f64),
            };
            (max_inv + ramp * (min_inv - max_inv)).powf(RHO)
        })
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional timestep of `sigma`, linear in log σ
/// between the two training timesteps around it (clamped to the table's ends).
fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // The last index whose log σ is ≤ log_sigma (0 when none is), at most len − 2.
    let below = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l as f64 >= 0.0)
        .unwrap_or(0);
    let low_idx = below.min(log_sigmas.len() - 2);
    let (low, high) = (log_sigmas[low_idx] as f64, log_sigmas[low_idx + 1] as f64);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * (low_idx + 1) as f64
}

/// A run's Karras schedule: `steps` timesteps (largest first) and `steps`
/// sigmas (float32 values), before the final one, for `sampler`. The sigmas
/// decrease strictly and the timesteps lie in the training range by
/// construction; whole timesteps may repeat where σ changes faster than one
/// training step (a cosine schedule's σ_max of 2·10⁴): each step still moves
/// between its own two sigmas, which is all the update uses.
pub fn schedule(config: &SchedulerConfig, sampler: Sampler, steps: usize) -> (Vec<f64>, Vec<f64>) {
    let train = train_sigmas(config);
    let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
    let (lo, hi) = (train[0] as f64, train[train.len() - 1] as f64);
    let sigmas = karras_sigmas(lo, hi, steps);
    let whole = |t: f64| match config.beta_schedule {
        BetaSchedule::SquaredcosCapV2 => t.trunc(),
        _ => t.round_ties_even(),
    };
    let timesteps = sigmas
        .iter()
        .map(|&s| {
            let t = sigma_to_t(s, &log_sigmas);
            match sampler {
                Sampler::DpmSolverMultistep => whole(t),
                _ => t as f32 as f64,
            }
        })
        .collect();
    let sigmas = sigmas.iter().map(|&s| s as f32 as f64).collect();
    (timesteps, sigmas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn karras_ends_are_sigma_max_and_min() {
        let s = karras_sigmas(0.0292, 14.6146, 10);
        // (σ^{1/7})^7 round trips within a few ulps.
        assert!((s[0] - 14.6146).abs() < 1e-12 && (s[9] - 0.0292).abs() < 1e-15);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
        let one = karras_sigmas(0.1, 10.0, 1);
        assert!(one.len() == 1 && (one[0] - 10.0).abs() < 1e-12);
    }

    #[test]
    fn sigma_to_t_interpolates_in_log_sigma() {
        let log_sigmas: Vec<f32> = [1.0f32, 2.0, 4.0].iter().map(|s| s.ln()).collect();
        // log σ tables are float32: a whole timestep within 1e-6.
        assert!((sigma_to_t(2.0, &log_sigmas) - 1.0).abs() < 1e-6);
        assert!((sigma_to_t(2f64.sqrt(), &log_sigmas) - 0.5).abs() < 1e-6);
        // Outside the table: clamped to its ends.
        assert_eq!(sigma_to_t(0.5, &log_sigmas), 0.0);
        assert_eq!(sigma_to_t(8.0, &log_sigmas), 2.0);
    }

    #[test]
    fn ddim_is_refused() {
        let config = SchedulerConfig::from_json("{}", "x").unwrap();
        let err = super::config(&config, true, [Sampler::Ddim].into_iter()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("DDIM"), "{err}");
        let on = super::config(&config, true, [Sampler::EulerAncestral].into_iter()).unwrap();
        assert!(on.karras);
        // Without --karras, DDIM runs as always.
        assert!(
            !super::config(&config, false, [Sampler::Ddim].into_iter())
                .unwrap()
                .karras
        );
    }
}
