//! The PNG's `parameters` text as AUTOMATIC1111's web UI writes it
//! (modules/processing.py `create_infotext`), so A1111, ComfyUI, Civitai and
//! every image browser that reads A1111 metadata read easel's images, and
//! pasting the text back into easel (prompt, `--negative`, flags) makes the
//! same image:
//!
//! ```text
//! PROMPT (any number of lines)
//! Negative prompt: NEGATIVE (when there is one)
//! Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 7, Size: 64x64, Model hash: 0123456789, Model: NAME, Hires upscale: 4, ...
//! ```
//!
//! The last line is `Key: value` pairs joined by `, `; a value holding a comma,
//! a colon or a line feed is written as a JSON string (A1111's `quote`). LoRAs
//! are written as A1111 writes them: `<lora:NAME:WEIGHT>` tags after the prompt
//! and `Lora hashes` (each file's first 12 hex digits).
//! A1111's keys come first in A1111's order; easel's own (`Candidates`,
//! `Score every`, `Until score`, `Until margin`, `Weights`, `Steps run`, `Score`,
//! `Schedule`) follow. `Size` is the generated size, before upscaling, and
//! `Hires upscale: N` says how much the upscaler enlarged it, as in A1111.

use crate::lora::LoraUsed;

/// What the PNG's `parameters` chunk records.
#[derive(Clone, Debug, Default)]
pub struct Parameters {
    pub prompt: String,
    /// `--negative`: the text guidance steers away from (A1111's negative prompt).
    pub negative: Option<String>,
    /// The run's length as asked (`Steps run` says how many ran when it stopped early).
    pub steps: usize,
    /// The run's sampler, in A1111's spelling (`DDIM`, `Euler a`, `DPM++ 2M`).
    pub sampler: String,
    /// A1111's `Schedule type` (`Karras` with `--karras`); `None`: the sampler's own.
    pub schedule_type: Option<String>,
    pub guidance: f32,
    pub seed: u64,
    /// The generated size (before upscaling).
    pub width: usize,
    pub height: usize,
    /// A1111's short hash of the model's weights (see `weights::hash`).
    pub model_hash: Option<String>,
    pub model: String,
    /// `(--strength, --mask-blur)` of a run started from a picture (the blur with a
    /// mask): A1111's `Denoising strength` and `Mask blur`.
    pub start: Option<(f64, Option<f32>)>,
    /// The learned upscaler's factor (written as `Hires upscale` when above 1).
    pub upscale: usize,
    /// `--weights f32|f16` when the run asked for one (it changes the image).
    pub weights: Option<String>,
    pub candidates: usize,
    /// `--score-every`, `--until-score`, `--until-margin` when given.
    pub score_every: Option<usize>,
    pub until_score: Option<f32>,
    pub until_margin: Option<f32>,
    /// Steps actually run, when the run stopped early.
    pub steps_run: Option<usize>,
    /// The winner's final score, when the scorer ran.
    pub score: Option<f32>,
    /// The `--schedule` text, when the run had phases.
    pub schedule: Option<String>,
    /// The LoRAs merged into the model, in `--lora` order.
    pub loras: Vec<LoraUsed>,
}

impl Parameters {
    /// The whole text: prompt, negative prompt line, then the pairs.
    pub fn to_text(&self) -> String {
        let negative = match self.negative.as_deref() {
            Some(n) if !n.is_empty() => format!("\nNegative prompt: {n}"),
            _ => String::new(),
        };
        let pairs: Vec<String> = self
            .pairs()
            .into_iter()
            .map(|(key, value)| format!("{key}: {}", quote(&value)))
            .collect();
        // A1111's prompt carries its LoRAs as tags (and `Lora hashes` their hashes).
        let mut prompt = self.prompt.clone();
        for l in &self.loras {
            prompt.push_str(&format!(" <lora:{}:{}>", l.name, l.weight));
        }
        format!("{prompt}{negative}\n{}", pairs.join(", "))
    }

    /// The last line's pairs, in order.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("Steps", self.steps.to_string()),
            ("Sampler", self.sampler.clone()),
        ];
        let mut opt = |key, value: Option<String>| pairs.extend(value.map(|v| (key, v)));
        opt("Schedule type", self.schedule_type.clone());
        opt("CFG scale", Some(self.guidance.to_string()));
        opt("Seed", Some(self.seed.to_string()));
        opt("Size", Some(format!("{}x{}", self.width, self.height)));
        opt("Model hash", self.model_hash.clone());
        opt("Model", Some(self.model.clone()));
        if let Some((strength, blur)) = self.start {
            opt("Denoising strength", Some(strength.to_string()));
            opt("Mask blur", blur.map(|b| b.to_string()));
        }
        opt(
            "Hires upscale",
            (self.upscale > 1).then(|| self.upscale.to_string()),
        );
        let hashes: Vec<String> = self
            .loras
            .iter()
            .map(|l| format!("{}: {}", l.name, &l.sha256[..12]))
            .collect();
        opt(
            "Lora hashes",
            Some(hashes.join(", ")).filter(|_| !hashes.is_empty()),
        );
        opt("Weights", self.weights.clone());
        opt("Candidates", Some(self.candidates.to_string()));
        opt("Score every", self.score_every.map(|n| n.to_string()));
        opt("Until score", self.until_score.map(|s| s.to_string()));
        opt("Until margin", self.until_margin.map(|s| s.to_string()));
        opt("Steps run", self.steps_run.map(|n| n.to_string()));
        opt("Score", self.score.map(|s| format!("{s:.4}")));
        opt("Schedule", self.schedule.clone());
        pairs
    }
}

/// A1111's `quote` (modules/infotext_utils.py): a value with a comma, a colon or
/// a line feed becomes a JSON string, anything else is written as it is.
pub fn quote(value: &str) -> String {
    if value.contains([',', ':', '\n']) {
        serde_json::Value::from(value).to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn params() -> Parameters {
        Parameters {
            prompt: "apple:: tart::".into(),
            steps: 30,
            sampler: "DDIM".into(),
            guidance: 4.5,
            seed: 7,
            width: 32,
            height: 32,
            model: "easel-emoji".into(),
            upscale: 1,
            candidates: 4,
            score: Some(0.3125),
            ..Default::default()
        }
    }

    #[test]
    fn parameters_text_is_a1111_style() {
        assert_eq!(
            params().to_text(),
            "apple:: tart::\nSteps: 30, Sampler: DDIM, CFG scale: 4.5, Seed: 7, Size: 32x32, \
             Model: easel-emoji, Candidates: 4, Score: 0.3125"
        );
    }

    #[test]
    fn every_key_in_a1111_order() {
        let p = Parameters {
            prompt: "a\nb".into(),
            negative: Some("blurry, low quality".into()),
            sampler: "DPM++ 2M".into(),
            schedule_type: Some("Karras".into()),
            model_hash: Some("0123456789".into()),
            model: "my: model".into(),
            upscale: 4,
            weights: Some("f16".into()),
            score_every: Some(2),
            until_score: Some(0.25),
            until_margin: Some(0.5),
            steps_run: Some(12),
            schedule: Some("40% k=8; rest k=2".into()),
            ..params()
        };
        assert_eq!(
            p.to_text(),
            "a\nb\nNegative prompt: blurry, low quality\nSteps: 30, Sampler: DPM++ 2M, \
             Schedule type: Karras, CFG scale: 4.5, Seed: 7, Size: 32x32, Model hash: 0123456789, \
             Model: \"my: model\", Hires upscale: 4, Weights: f16, Candidates: 4, Score every: 2, \
             Until score: 0.25, Until margin: 0.5, Steps run: 12, Score: 0.3125, \
             Schedule: 40% k=8; rest k=2"
        );
    }

    #[test]
    fn quote_is_a1111s() {
        assert_eq!(quote("plain text"), "plain text");
        assert_eq!(quote("a, b"), "\"a, b\"");
        assert_eq!(quote("k: v"), "\"k: v\"");
        assert_eq!(quote("say \"hi\",\n"), r#""say \"hi\",\n""#);
    }
}
