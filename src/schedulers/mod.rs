//! Samplers: DDIM, Euler ancestral and DPM-Solver++(2M), built from a diffusers
//! `scheduler_config.json` and mirroring diffusers' `DDIMScheduler`,
//! `EulerAncestralDiscreteScheduler` and `DPMSolverMultistepScheduler`.
//!
//! The denoising step runs on the GPU, so a sampler here does no tensor math: it
//! computes, once per run, a handful of scalars per step that turn every step of
//! every sampler into one linear form over GPU tensors ([`StepCoefficients`]):
//!
//! ```text
//! model_input = in_scale · x                                  (Euler's scale_model_input)
//! x0          = clamp(x0_x · x + x0_m · model_out, ±clip)     (pred_original_sample)
//! x_next      = a · x + b · model_out + e · x0 + c · x0_prev + d · noise
//! ```
//!
//! `x0_prev` is the previous step's `x0` (DPM-Solver++'s second-order term), so a
//! step writes `x0` where the next step reads `x0_prev`, and copying a winning
//! candidate into the other slots must copy its `x0` along with `x`. `noise` is a
//! fresh standard normal draw (Euler ancestral; DDIM with eta > 0). The step loop
//! uploads the table once and only encodes dispatches of wgsl/sampler.wgsl's `step`;
//! its CPU reference is `apply` in tests/reference/sampler.rs.
//!
//! Where diffusers has quirks they are kept, so the same config gives the same
//! samples: DDIM's previous timestep is always `t - num_train_timesteps / steps`
//! (even under trailing or linspace spacing), DPM-Solver spaces `steps + 1` points
//! and drops the last, Euler's linspace timesteps are fractional.

use crate::error::{Error, Result};

pub mod config;
pub mod ddim;
pub mod dpm_solver;
pub mod euler_ancestral;
pub mod karras;

pub use config::{PredictionType, SchedulerConfig, TimestepSpacing};
pub use ddim::Ddim;
pub use dpm_solver::DpmSolverMultistep;
pub use euler_ancestral::EulerAncestral;

// The step's scalars belong to the kernel that applies them.
pub use crate::ops::sampler::{StepCoefficients, NO_CLIP};

/// The samplers easel has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sampler {
    Ddim,
    EulerAncestral,
    DpmSolverMultistep,
}

impl Sampler {
    pub const ALL: [Sampler; 3] = [
        Sampler::Ddim,
        Sampler::EulerAncestral,
        Sampler::DpmSolverMultistep,
    ];

    /// The name AUTOMATIC1111 writes in PNG `parameters` (`Sampler: ...`).
    pub fn a1111_name(self) -> &'static str {
        match self {
            Sampler::Ddim => "DDIM",
            Sampler::EulerAncestral => "Euler a",
            Sampler::DpmSolverMultistep => "DPM++ 2M",
        }
    }

    /// Short command-line name.
    pub fn cli_name(self) -> &'static str {
        match self {
            Sampler::Ddim => "ddim",
            Sampler::EulerAncestral => "euler_a",
            Sampler::DpmSolverMultistep => "dpm++2m",
        }
    }

    /// Parses a CLI or A1111 name, ignoring case, spaces, `-` and `_`
    /// (`ddim`, `euler_a`, `Euler a`, `dpm++2m`, `DPM++ 2M`, `dpmpp_2m`), and the
    /// names A1111's API and ComfyUI give the same samplers (`k_euler_a`,
    /// `euler_ancestral`, `k_dpmpp_2m`). A1111's older names with the schedule in
    /// them (`DPM++ 2M Karras`) are [`SamplerName::parse`]'s.
    pub fn parse(name: &str) -> Result<Sampler> {
        let key: String = name
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect();
        match key.strip_prefix('k').unwrap_or(&key) {
            "ddim" => Ok(Sampler::Ddim),
            "eulera" | "eulerancestral" => Ok(Sampler::EulerAncestral),
            "dpm++2m" | "dpmpp2m" | "dpmsolver++" | "dpmsolvermultistep" => {
                Ok(Sampler::DpmSolverMultistep)
            }
            _ => Err(crate::bad_input!(
                "unknown sampler \"{}\" (expected one of: ddim, euler_a, dpm++2m, or A1111's \
                 DDIM, Euler a, DPM++ 2M)",
                name.escape_debug()
            )),
        }
    }

    /// The defaults of the diffusers class this sampler mirrors.
    pub fn defaults(self) -> config::Defaults {
        let class = match self {
            Sampler::Ddim => "DDIMScheduler",
            Sampler::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Sampler::DpmSolverMultistep => "DPMSolverMultistepScheduler",
        };
        config::Defaults::of_class(class).expect("known class")
    }
}

/// A sampler as a user writes it (`--sampler`, a job line's `sampler`): any of
/// [`Sampler::parse`]'s names, or A1111's older spelling with the schedule type
/// after it (`Euler a Karras`, `DPM++ 2M Karras`), which asks for `--karras`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplerName {
    pub sampler: Sampler,
    pub karras: bool,
}

impl SamplerName {
    pub fn parse(name: &str) -> Result<SamplerName> {
        let trimmed = name.trim_end();
        let split = trimmed.len().saturating_sub("karras".len());
        let karras = trimmed.is_char_boundary(split)
            && trimmed[split..].eq_ignore_ascii_case("karras")
            && trimmed[..split].ends_with([' ', '_', '-']);
        let sampler = match karras {
            true => Sampler::parse(&trimmed[..split])?,
            false => Sampler::parse(name)?,
        };
        Ok(SamplerName { sampler, karras })
    }
}

/// A sampler with its per-step coefficients for one run of `steps` steps.
pub trait Scheduler: std::fmt::Debug + Send + Sync {
    fn sampler(&self) -> Sampler;

    /// One entry per step, in sampling order.
    fn coefficients(&self) -> &[StepCoefficients];

    /// The start sample is `init_noise_sigma · N(0, 1)`.
    fn init_noise_sigma(&self) -> f32;

    /// The name for PNG metadata (A1111's).
    fn name(&self) -> &'static str {
        self.sampler().a1111_name()
    }

    /// The timesteps fed to the UNet, one per step.
    fn timesteps(&self) -> Vec<f32> {
        self.coefficients().iter().map(|s| s.timestep).collect()
    }

    /// Does any step need fresh noise (so the loop must generate it)?
    fn is_stochastic(&self) -> bool {
        self.coefficients().iter().any(StepCoefficients::uses_noise)
    }
}

/// Builds `sampler` for a run of `steps` steps (DDIM with eta = 0).
pub fn build(
    sampler: Sampler,
    config: &SchedulerConfig,
    steps: usize,
) -> Result<Box<dyn Scheduler>> {
    Ok(match sampler {
        Sampler::Ddim => Box::new(Ddim::new(config, steps, 0.0)?),
        Sampler::EulerAncestral => Box::new(EulerAncestral::new(config, steps)?),
        Sampler::DpmSolverMultistep => Box::new(DpmSolverMultistep::new(config, steps)?),
    })
}

/// Refuses step counts the schedule cannot hold.
fn check_steps(config: &SchedulerConfig, steps: usize) -> Result<()> {
    let train = config.num_train_timesteps;
    if steps == 0 {
        return Err(crate::bad_input!("steps 0: need at least 1 sampling step"));
    }
    if steps > train {
        return Err(crate::bad_input!(
            "steps {steps}: more than the model's num_train_timesteps {train} ({})",
            config.path.display()
        ));
    }
    Ok(())
}

/// Refuses a timestep list that is not strictly decreasing within [0, train).
/// diffusers would index out of range or repeat a step; here it is a clear error.
fn check_timesteps(config: &SchedulerConfig, timesteps: &[f64], steps: usize) -> Result<()> {
    let train = config.num_train_timesteps as f64;
    let in_range = timesteps.iter().all(|&t| (0.0..train).contains(&t));
    let decreasing = timesteps.windows(2).all(|w| w[0] > w[1]);
    if in_range && decreasing {
        return Ok(());
    }
    Err(Error::BadInput(format!(
        "steps {steps}: the schedule in {} (spacing, steps_offset {}) gives timesteps outside \
         0..{train} or repeated; use fewer steps",
        config.path.display(),
        config.steps_offset
    )))
}

/// `np.round`: halves go to the even neighbour.
fn round_even(v: f64) -> f64 {
    v.round_ties_even()
}

/// `np.arange(start, stop, -step)` for a positive float `step`, as numpy fills it:
/// length ceil((stop - start) / -step), values start + i·delta with
/// delta = (start - step) - start.
fn arange_down(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / -step).ceil().max(0.0) as usize;
    let delta = (start - step) - start;
    (0..len).map(|i| start + i as f64 * delta).collect()
}

/// `np.linspace(0, stop, num)`: i · (stop / (num − 1)), the last one exactly `stop`.
fn linspace(stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![0.0];
    }
    let step = stop / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step).collect();
    v[num - 1] = stop;
    v
}

/// The timesteps of DDIMScheduler / EulerAncestralDiscreteScheduler `set_timesteps`
/// (largest first). `round_linspace`: DDIM rounds linspace points to integers,
/// Euler keeps them fractional (float32).
fn spaced_timesteps(
    config: &SchedulerConfig,
    spacing: TimestepSpacing,
    steps: usize,
    round_linspace: bool,
) -> Vec<f64> {
    let train = config.num_train_timesteps;
    match spacing {
        TimestepSpacing::Linspace => linspace((train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| {
                if round_linspace {
                    round_even(t)
                } else {
                    t as f32 as f64
                }
            })
            .collect(),
        TimestepSpacing::Leading => leading(config, train / steps, 0..steps),
        TimestepSpacing::Trailing => trailing(config, train, steps),
    }
}

/// "leading" spacing: `i · ratio + steps_offset` for each `i` of `points`, largest
/// first.
fn leading(
    config: &SchedulerConfig,
    ratio: usize,
    points: impl DoubleEndedIterator<Item = usize>,
) -> Vec<f64> {
    points
        .rev()
        .map(|i| (i * ratio + config.steps_offset) as f64)
        .collect()
}

/// "trailing" spacing: `np.round(np.arange(start, 0, -train / steps)) - 1`.
fn trailing(config: &SchedulerConfig, start: usize, steps: usize) -> Vec<f64> {
    let step = config.num_train_timesteps as f64 / steps as f64;
    arange_down(start as f64, 0.0, step)
        .into_iter()
        .map(|t| round_even(t) - 1.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_names_parse() {
        for s in Sampler::ALL {
            assert_eq!(Sampler::parse(s.a1111_name()).unwrap(), s);
            assert_eq!(Sampler::parse(s.cli_name()).unwrap(), s);
        }
        assert_eq!(
            Sampler::parse("DPMPP_2M").unwrap(),
            Sampler::DpmSolverMultistep
        );
        let err = Sampler::parse("plms").unwrap_err().to_string();
        assert!(err.contains("plms") && err.contains("euler_a"), "{err}");
        for (name, sampler) in [
            ("k_euler_a", Sampler::EulerAncestral),
            ("euler_ancestral", Sampler::EulerAncestral),
            ("k_dpmpp_2m", Sampler::DpmSolverMultistep),
            ("k_ddim", Sampler::Ddim),
        ] {
            assert_eq!(Sampler::parse(name).unwrap(), sampler, "{name}");
        }
        assert!(Sampler::parse("Euler").is_err() && Sampler::parse("karras").is_err());
    }

    #[test]
    fn a1111_names_with_karras_ask_for_it() {
        let name = |s: &str| SamplerName::parse(s).map(|n| (n.sampler, n.karras));
        let dpm = Sampler::DpmSolverMultistep;
        assert_eq!(name("DPM++ 2M Karras").unwrap(), (dpm, true));
        assert_eq!(name("dpmpp_2m_karras").unwrap(), (dpm, true));
        assert_eq!(
            name("Euler a Karras").unwrap(),
            (Sampler::EulerAncestral, true)
        );
        assert_eq!(name("DPM++ 2M").unwrap(), (dpm, false));
        assert!(name("DDIM Karras").is_ok_and(|n| n == (Sampler::Ddim, true)));
        assert!(name("Karras").is_err() && name("dpm++2mkarras").is_err());
        // Never cut inside a character.
        for bad in ["🍎 karras", "a🍎b", "ééé", "karras🍎"] {
            assert!(name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn coefficients_upload_as_40_bytes() {
        assert_eq!(std::mem::size_of::<StepCoefficients>(), 40);
        let table = [StepCoefficients {
            timestep: 999.0,
            d: 1.0,
            ..Default::default()
        }];
        let words: &[f32] = bytemuck::cast_slice(&table);
        assert_eq!((words[0], words[9]), (999.0, 1.0));
    }

    #[test]
    fn numpy_helpers() {
        assert_eq!(round_even(937.5), 938.0);
        assert_eq!(round_even(812.5), 812.0);
        assert_eq!(
            arange_down(1000.0, 0.0, 250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        assert_eq!(linspace(9.0, 4), vec![0.0, 3.0, 6.0, 9.0]);
    }
}
