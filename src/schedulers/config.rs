//! `scheduler/scheduler_config.json`, read the way diffusers reads it.
//!
//! A diffusers model folder names one scheduler class (`_class_name`) and that
//! class's constructor arguments. easel builds any of its samplers from the same
//! file, as `EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)`
//! does in diffusers. Rules:
//!
//! - Unknown fields are ignored (`skip_prk_steps`, `variance_type: fixed_small`, ...).
//! - A missing field takes the default of the class named by `_class_name` when
//!   that class has the field (diffusers writes every argument of the loaded class
//!   into its config), else the default of the sampler being built
//!   ([`Defaults`]). So Stable Diffusion 1.x's PNDMScheduler file, which has no
//!   `timestep_spacing`, gives "leading" to every sampler, as in diffusers.
//! - Class-independent defaults (diffusers 0.42): `num_train_timesteps` 1000,
//!   `beta_start` 0.0001, `beta_end` 0.02, `beta_schedule` "linear",
//!   `prediction_type` "epsilon", `steps_offset` 0, `clip_sample_range` 1.0,
//!   DPM-Solver's `lower_order_final` true, `euler_at_final` false,
//!   `final_sigmas_type` "zero", `lambda_min_clipped` -inf.
//! - Fields that change the math in ways easel does not implement are refused
//!   when they are switched on (`thresholding`, `rescale_betas_zero_snr`, Karras /
//!   exponential / beta / Lu / flow sigmas, learned variance): a model that
//!   needs them would otherwise sample wrongly without a word.
//! - Python's `json` writes `-Infinity` for `lambda_min_clipped`'s default; it is
//!   read as the default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// How betas grow over the training timesteps (`beta_schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    /// Linear in sqrt(beta), then squared (Stable Diffusion).
    ScaledLinear,
    /// Cosine alpha-bar (Nichol & Dhariwal), betas capped at 0.999.
    SquaredcosCapV2,
}

/// What the model predicts (`prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

/// How inference timesteps are spread over the training ones (`timestep_spacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// DPM-Solver's last sigma (`final_sigmas_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalSigmas {
    Zero,
    SigmaMin,
}

/// The defaults that differ between diffusers' scheduler classes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defaults {
    pub timestep_spacing: Option<TimestepSpacing>,
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
}

impl Defaults {
    /// Defaults of a diffusers class by name; `None` for a class easel does not know.
    pub fn of_class(class_name: &str) -> Option<Defaults> {
        use TimestepSpacing::*;
        let (spacing, alpha_to_one, clip) = match class_name {
            "DDIMScheduler" => (Leading, Some(true), Some(true)),
            "DDPMScheduler" => (Leading, None, Some(true)),
            "PNDMScheduler" => (Leading, Some(false), None),
            "HeunDiscreteScheduler" => (Linspace, None, Some(false)),
            "EulerAncestralDiscreteScheduler"
            | "EulerDiscreteScheduler"
            | "LMSDiscreteScheduler"
            | "DPMSolverMultistepScheduler"
            | "UniPCMultistepScheduler" => (Linspace, None, None),
            _ => return None,
        };
        Some(Defaults {
            timestep_spacing: Some(spacing),
            set_alpha_to_one: alpha_to_one,
            clip_sample: clip,
        })
    }
}

/// The file's fields as written; `None` where the file has no value.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    #[serde(rename = "_class_name")]
    class_name: Option<String>,
    num_train_timesteps: Option<usize>,
    beta_start: Option<f64>,
    beta_end: Option<f64>,
    beta_schedule: Option<String>,
    trained_betas: Option<Vec<f64>>,
    prediction_type: Option<String>,
    timestep_spacing: Option<String>,
    steps_offset: Option<usize>,
    set_alpha_to_one: Option<bool>,
    clip_sample: Option<bool>,
    clip_sample_range: Option<f64>,
    lower_order_final: Option<bool>,
    euler_at_final: Option<bool>,
    final_sigmas_type: Option<String>,
    lambda_min_clipped: Option<f64>,
    variance_type: Option<String>,
    thresholding: Option<bool>,
    rescale_betas_zero_snr: Option<bool>,
    use_karras_sigmas: Option<bool>,
    use_exponential_sigmas: Option<bool>,
    use_beta_sigmas: Option<bool>,
    use_lu_lambdas: Option<bool>,
    use_flow_sigmas: Option<bool>,
}

/// A parsed, validated `scheduler_config.json`.
///
/// Class-dependent fields stay `Option` here and are resolved per sampler by
/// [`SchedulerConfig::spacing`], [`SchedulerConfig::set_alpha_to_one`] and
/// [`SchedulerConfig::clip_sample`].
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// Where it came from, for error messages.
    pub path: PathBuf,
    /// `_class_name`: the class the model was saved with.
    pub class_name: Option<String>,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Explicit betas (`trained_betas`), replacing the schedule when present.
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub steps_offset: usize,
    pub clip_sample_range: f64,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub final_sigmas_type: FinalSigmas,
    pub lambda_min_clipped: f64,
    /// Karras sigmas (`--karras`, see `schedulers::karras`); never read from the
    /// file, whose `use_karras_sigmas: true` is refused.
    pub karras: bool,
    timestep_spacing: Option<TimestepSpacing>,
    set_alpha_to_one: Option<bool>,
    clip_sample: Option<bool>,
}

impl SchedulerConfig {
    /// Reads `dir/scheduler_config.json`, or the file itself when `path` is a file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            path.join("scheduler_config.json")
        } else {
            path.to_path_buf()
        };
        crate::weights::regular_file(&file)?;
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Error::model(&file, format!("cannot read: {e}")))?;
        Self::from_json(&text, file)
    }

    /// Parses config text; `path` only names the source in errors.
    pub fn from_json(text: &str, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let raw: Raw = serde_json::from_str(&python_json_to_strict(text))
            .map_err(|e| Error::model(&path, format!("not a scheduler config: {e}")))?;
        Self::from_raw(raw, path.clone()).map_err(|message| Error::model(&path, message))
    }

    /// Checks the file's fields and fills in the class-independent defaults; an
    /// error is a message that [`Self::from_json`] puts under the file's path.
    fn from_raw(raw: Raw, path: PathBuf) -> Result<Self, String> {
        refuse_unsupported(&raw)?;
        let (num_train_timesteps, beta_start, beta_end, clip_sample_range) = numbers(&raw)?;
        // Fields are evaluated in order: of several bad choices, the first is named.
        Ok(SchedulerConfig {
            class_name: raw.class_name,
            num_train_timesteps,
            beta_start,
            beta_end,
            beta_schedule: choice(&raw.beta_schedule, "beta_schedule", BETA_SCHEDULES)?
                .unwrap_or(BetaSchedule::Linear),
            trained_betas: raw.trained_betas,
            prediction_type: choice(&raw.prediction_type, "prediction_type", PREDICTION_TYPES)?
                .unwrap_or(PredictionType::Epsilon),
            timestep_spacing: choice(&raw.timestep_spacing, "timestep_spacing", SPACINGS)?,
            steps_offset: raw.steps_offset.unwrap_or(0),
            set_alpha_to_one: raw.set_alpha_to_one,
            clip_sample: raw.clip_sample,
            clip_sample_range,
            lower_order_final: raw.lower_order_final.unwrap_or(true),
            euler_at_final: raw.euler_at_final.unwrap_or(false),
            final_sigmas_type: choice(&raw.final_sigmas_type, "final_sigmas_type", FINAL_SIGMAS)?
                .unwrap_or(FinalSigmas::Zero),
            lambda_min_clipped: raw.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY),
            karras: false,
            path,
        })
    }

    /// The defaults of the file's own class, if easel knows it.
    fn class_defaults(&self) -> Option<Defaults> {
        self.class_name.as_deref().and_then(Defaults::of_class)
    }

    /// `timestep_spacing`: the file's, else its class's default, else `sampler`'s.
    pub fn spacing(&self, sampler: &Defaults) -> TimestepSpacing {
        self.timestep_spacing
            .or(self.class_defaults().and_then(|d| d.timestep_spacing))
            .or(sampler.timestep_spacing)
            .unwrap_or(TimestepSpacing::Linspace)
    }

    /// `set_alpha_to_one` (DDIM's last step), resolved like [`Self::spacing`].
    pub fn set_alpha_to_one(&self, sampler: &Defaults) -> bool {
        self.set_alpha_to_one
            .or(self.class_defaults().and_then(|d| d.set_alpha_to_one))
            .or(sampler.set_alpha_to_one)
            .unwrap_or(true)
    }

    /// `clip_sample` (DDIM clamps x0 to ±clip_sample_range), resolved like [`Self::spacing`].
    pub fn clip_sample(&self, sampler: &Defaults) -> bool {
        self.clip_sample
            .or(self.class_defaults().and_then(|d| d.clip_sample))
            .or(sampler.clip_sample)
            .unwrap_or(false)
    }

    /// Betas as diffusers' float32 tensors hold them.
    fn betas(&self) -> Vec<f32> {
        let n = self.num_train_timesteps;
        if let Some(betas) = &self.trained_betas {
            return betas.iter().map(|&b| b as f32).collect();
        }
        match self.beta_schedule {
            BetaSchedule::Linear => linspace_f32(self.beta_start, self.beta_end, n),
            BetaSchedule::ScaledLinear => {
                linspace_f32(self.beta_start.sqrt(), self.beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(n),
        }
    }

    /// ᾱ_t = Π_{s≤t} (1 − β_s) for every training timestep.
    ///
    /// Follows diffusers' arithmetic where it matters: betas and alphas are float32
    /// (with squaredcos's β = 0.999 cap, `1 - β` in float32 differs from float64 by
    /// 1e-5 relative), and torch's CPU cumprod accumulates in double and rounds
    /// each product to float32.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let mut product = 1.0f64;
        self.betas()
            .into_iter()
            .map(|beta| {
                product *= (1.0f32 - beta) as f64;
                product as f32 as f64
            })
            .collect()
    }

    /// The sampler `_class_name` asks for: Euler a for Euler classes, DPM++ 2M for
    /// DPM-Solver and UniPC classes, DDIM for the rest (DDIM, DDPM, PNDM, unknown).
    pub fn default_sampler(&self) -> super::Sampler {
        use super::Sampler;
        match self.class_name.as_deref() {
            Some("EulerAncestralDiscreteScheduler" | "EulerDiscreteScheduler") => {
                Sampler::EulerAncestral
            }
            Some(
                "DPMSolverMultistepScheduler"
                | "DPMSolverSinglestepScheduler"
                | "UniPCMultistepScheduler",
            ) => Sampler::DpmSolverMultistep,
            _ => Sampler::Ddim,
        }
    }
}

/// `beta_schedule`'s accepted values.
const BETA_SCHEDULES: &[(&str, BetaSchedule)] = &[
    ("linear", BetaSchedule::Linear),
    ("scaled_linear", BetaSchedule::ScaledLinear),
    ("squaredcos_cap_v2", BetaSchedule::SquaredcosCapV2),
];

/// `prediction_type`'s accepted values.
const PREDICTION_TYPES: &[(&str, PredictionType)] = &[
    ("epsilon", PredictionType::Epsilon),
    ("v_prediction", PredictionType::VPrediction),
    ("sample", PredictionType::Sample),
];

/// `timestep_spacing`'s accepted values.
const SPACINGS: &[(&str, TimestepSpacing)] = &[
    ("leading", TimestepSpacing::Leading),
    ("trailing", TimestepSpacing::Trailing),
    ("linspace", TimestepSpacing::Linspace),
];

/// `final_sigmas_type`'s accepted values.
const FINAL_SIGMAS: &[(&str, FinalSigmas)] = &[
    ("zero", FinalSigmas::Zero),
    ("sigma_min", FinalSigmas::SigmaMin),
];

/// The most training timesteps a config may have: the betas table is sized by
/// it (diffusers' models train with 1000, a few with 4000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// The numeric fields with their defaults, checked: `(num_train_timesteps,
/// beta_start, beta_end, clip_sample_range)`; `trained_betas` must have one beta
/// per training timestep.
fn numbers(raw: &Raw) -> Result<(usize, f64, f64, f64), String> {
    let num_train_timesteps = raw.num_train_timesteps.unwrap_or(1000);
    if !(2..=MAX_TRAIN_TIMESTEPS).contains(&num_train_timesteps) {
        return Err(format!(
            "num_train_timesteps {num_train_timesteps}: must be from 2 to {MAX_TRAIN_TIMESTEPS}"
        ));
    }
    let offset = raw.steps_offset.unwrap_or(0);
    if offset >= num_train_timesteps {
        return Err(format!(
            "steps_offset {offset}: must be below num_train_timesteps {num_train_timesteps}"
        ));
    }
    if let Some(betas) = &raw.trained_betas {
        if betas.len() != num_train_timesteps || betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(format!(
                "trained_betas: need {num_train_timesteps} values in [0, 1), got {}",
                betas.len()
            ));
        }
    }
    let (beta_start, beta_end) = (
        raw.beta_start.unwrap_or(0.0001),
        raw.beta_end.unwrap_or(0.02),
    );
    if !(0.0..1.0).contains(&beta_start) || !(0.0..1.0).contains(&beta_end) {
        return Err(format!(
            "beta_start {beta_start} / beta_end {beta_end}: must lie in [0, 1)"
        ));
    }
    let clip_sample_range = raw.clip_sample_range.unwrap_or(1.0);
    // The step table holds it as f32, where "no clipping" is f32::MAX.
    if clip_sample_range.is_nan() || clip_sample_range <= 0.0 || clip_sample_range > f32::MAX as f64
    {
        return Err(format!(
            "clip_sample_range {clip_sample_range}: must be > 0 and fit f32"
        ));
    }
    Ok((num_train_timesteps, beta_start, beta_end, clip_sample_range))
}

/// Reads an enum-valued string field (`None` when absent), naming the field and
/// the accepted values on error.
fn choice<T: Copy>(
    value: &Option<String>,
    field: &str,
    choices: &[(&str, T)],
) -> Result<Option<T>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    match choices.iter().find(|(name, _)| name == value) {
        Some(&(_, v)) => Ok(Some(v)),
        None => {
            let names: Vec<_> = choices.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "{field} \"{value}\" is not supported (expected one of: {})",
                names.join(", ")
            ))
        }
    }
}

/// Refuses switched-on features whose math easel does not implement.
fn refuse_unsupported(raw: &Raw) -> Result<(), String> {
    let flags = [
        (
            raw.thresholding,
            "thresholding (dynamic thresholding needs a per-image quantile)",
        ),
        (raw.rescale_betas_zero_snr, "rescale_betas_zero_snr"),
        (raw.use_karras_sigmas, "use_karras_sigmas"),
        (raw.use_exponential_sigmas, "use_exponential_sigmas"),
        (raw.use_beta_sigmas, "use_beta_sigmas"),
        (raw.use_lu_lambdas, "use_lu_lambdas"),
        (raw.use_flow_sigmas, "use_flow_sigmas"),
    ];
    if let Some((_, what)) = flags.iter().find(|(on, _)| *on == Some(true)) {
        return Err(format!(
            "{what}: true is not supported by easel's schedulers"
        ));
    }
    match raw.variance_type.as_deref() {
        Some(v @ ("learned" | "learned_range")) => Err(format!(
            "variance_type \"{v}\" (a model that predicts its variance) is not supported"
        )),
        _ => Ok(()),
    }
}

/// `torch.linspace(start, end, n, dtype=torch.float32)`, computed in float32 from
/// both ends like torch's scalar kernel (torch's vectorised kernel may differ by
/// one ulp; betas ≤ 0.02 make that invisible after 1 − β).
fn linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    let step = (end - start) / (n - 1) as f32;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` (cosine): β_i = min(1 − ᾱ(t₂)/ᾱ(t₁), 0.999),
/// computed in float64 and stored as float32.
fn betas_for_alpha_bar(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// Replaces Python's non-standard JSON numbers (`NaN`, `Infinity`, `-Infinity`)
/// outside strings with `null`, so the field falls back to its default.
fn python_json_to_strict(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            in_string = c != '"' || escaped;
            escaped = c == '\\' && !escaped;
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .iter()
            .find(|t| rest.starts_with(**t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}
