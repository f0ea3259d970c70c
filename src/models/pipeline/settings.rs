//! easel's own settings in a model's `model_index.json` (`_easel`): defaults a
//! request falls back on, and the scorer's image statistics.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::schedulers::SchedulerConfig;
use crate::weights::Config;

/// easel's settings in `model_index.json` (`_easel`), with CLIP's defaults.
#[derive(Clone, Debug, Deserialize)]
pub struct PipelineSettings {
    #[serde(default = "d_mean")]
    pub scorer_image_mean: [f32; 3],
    #[serde(default = "d_std")]
    pub scorer_image_std: [f32; 3],
    #[serde(default = "d_guidance")]
    pub default_guidance: f32,
    #[serde(default = "d_steps")]
    pub default_steps: usize,
    #[serde(default)]
    pub unconditional_prompt: String,
}

impl PipelineSettings {
    /// What a request falls back on must be usable: `default_steps` is a run's
    /// length when no flag gives one (so a bad one is the file's fault, not a
    /// flag's), and images are divided by `scorer_image_std`.
    fn check(&self, num_train_timesteps: usize) -> std::result::Result<(), String> {
        let steps = self.default_steps;
        if !(1..=num_train_timesteps).contains(&steps) {
            return Err(format!(
                "`_easel.default_steps` {steps}: must be from 1 to the scheduler's \
                 num_train_timesteps {num_train_timesteps}"
            ));
        }
        let finite = |v: &[f32; 3]| v.iter().all(|x| x.is_finite());
        if !finite(&self.scorer_image_std) || self.scorer_image_std.contains(&0.0) {
            return Err(format!(
                "`_easel.scorer_image_std` {:?}: must be finite and not 0 (images are divided by it)",
                self.scorer_image_std
            ));
        }
        if !finite(&self.scorer_image_mean) {
            return Err(format!(
                "`_easel.scorer_image_mean` {:?}: must be finite",
                self.scorer_image_mean
            ));
        }
        Ok(())
    }
}

fn d_mean() -> [f32; 3] {
    crate::models::scorer::CLIP_MEAN
}
fn d_std() -> [f32; 3] {
    crate::models::scorer::CLIP_STD
}
fn d_guidance() -> f32 {
    7.5
}
fn d_steps() -> usize {
    30
}

/// `model_index.json`'s `_easel` settings (defaults without one), checked.
pub(super) fn read_settings(
    index: Option<&Path>,
    scheduler: &SchedulerConfig,
) -> Result<PipelineSettings> {
    let empty = || serde_json::from_str("{}").expect("empty object");
    let Some(index) = index else {
        return Ok(empty());
    };
    let index = Config::read(index)?;
    let settings: PipelineSettings = index.get_or("_easel", empty())?;
    settings
        .check(scheduler.num_train_timesteps)
        .map_err(|message| Error::model(&index.path, message))?;
    Ok(settings)
}
