//! Defaults that follow the model: a request that leaves the candidate count
//! or the upscaling unset gets what the model can do. With a scorer, K = 4
//! candidates; without one, K = 1 (nothing could pick between several) and
//! [`note`] says so once. The upscaling is the model's upscaler's factor, or 1
//! without an upscaler. Asking for what the model cannot do is bad input.

use crate::error::{Error, Result};
use crate::models::pipeline::PipelineConfig;
use crate::phases::Phase;

use super::Request;

/// Candidates when a scorer can pick between them.
pub const CANDIDATES_WITH_SCORER: usize = 4;

impl Request {
    /// The candidate count: the request's, else 4 with a scorer, else 1.
    pub fn candidates_for(&self, model: &PipelineConfig) -> usize {
        self.candidates.unwrap_or(match model.scorer {
            Some(_) => CANDIDATES_WITH_SCORER,
            None => 1,
        })
    }

    /// The upscaling: the request's, else the upscaler's factor, else 1.
    pub fn upscale_for(&self, model: &PipelineConfig) -> usize {
        self.upscale
            .unwrap_or(model.upscaler.as_ref().map_or(1, |u| u.upscale))
    }

    /// `--upscale` must be one the model's upscaler makes (x2 from an x4 one by
    /// pooling).
    pub(super) fn check_upscale(&self, model: &PipelineConfig) -> Result<()> {
        let upscale = self.upscale_for(model);
        if !matches!(upscale, 1 | 2 | 4) {
            return Err(Error::BadInput(format!(
                "--upscale {upscale}: must be 1, 2 or 4"
            )));
        }
        if upscale == 1 {
            return Ok(());
        }
        let Some(upscaler) = &model.upscaler else {
            return Err(Error::model(
                &model.dir,
                format!(
                    "--upscale {upscale}: the model has no upscaler/ folder; \
                     name one with --upscaler PATH, or leave --upscale out"
                ),
            ));
        };
        let factor = upscaler.upscale;
        if upscale != factor && !(factor == 4 && upscale == 2) {
            return Err(Error::BadInput(format!(
                "--upscale {upscale}: this model's upscaler is x{factor}"
            )));
        }
        Ok(())
    }
}

/// A phase's candidates must be at least one, and more than one needs a scorer.
pub(super) fn check_phase(model: &PipelineConfig, phase: &Phase) -> Result<()> {
    let k = phase.candidates;
    if k == 0 {
        return Err(Error::BadInput(
            "--candidates 0: need at least one candidate".into(),
        ));
    }
    if k > 1 && model.scorer.is_none() {
        return Err(Error::model(
            &model.dir,
            format!(
                "--candidates {k}: the model has no scorer/ to pick between candidates; \
                 add one with --scorer DIR (a transformers CLIPModel folder) or {}",
                crate::models::scorer::ENV
            ),
        ));
    }
    Ok(())
}

/// The one line a front end prints when `request` runs with one candidate only
/// because `model` has no scorer (`None` otherwise).
pub fn note(request: &Request, model: &PipelineConfig) -> Option<String> {
    match (request.candidates, &model.scorer) {
        (None, None) => Some(format!(
            "1 candidate: {} has no scorer/ to pick between several; \
             add one with --scorer DIR (a transformers CLIPModel folder) for best-of-{}",
            model.name, CANDIDATES_WITH_SCORER
        )),
        _ => None,
    }
}
