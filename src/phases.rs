//! `--schedule`: a run in phases, each with its own process (DESIGN.md "The
//! loop"): e.g. many candidates and a stochastic sampler early, while the
//! composition ("blobs") is decided, then few candidates and a deterministic
//! sampler for the details.
//!
//! # Syntax
//!
//! ```text
//! --schedule "40% sampler=euler_a candidates=8; rest sampler=ddim candidates=2"
//! ```
//!
//! Phases are separated by `;`. Each starts with its length, then `key=value`
//! settings separated by spaces:
//!
//! - length: `N` steps, `N%` of the run's steps, or `rest` (whatever the other
//!   phases leave; at most one phase). Lengths must add up to the run's steps;
//!   percentages are rounded on their running total, so `50%; 50%` always covers
//!   an odd step count. Without `--steps`, a schedule of plain step counts sets
//!   the run's length (`--schedule "10 k=8; 20 k=1"` is 30 steps).
//! - `sampler=` ddim, euler_a or dpm++2m; `candidates=` (or `k=`) at least 1;
//!   `score_every=` (or `every=`) steps between scoring rounds, at least 1;
//!   `guidance=` (or `cfg=`) the classifier-free guidance scale.
//! - A setting a phase leaves out comes from the run's own flags (`--sampler`,
//!   `--candidates`, `--score-every`, `--guidance`), not from the previous phase.
//!
//! Each phase ends with a scoring round, so the next phase starts from the best
//! candidate whatever its candidate count. Errors point at the offending text
//! with a caret, like prompt errors.

use std::ops::Range;

use crate::prompt::with_caret;
use crate::schedulers::{self, Ddim, Sampler, Scheduler, SchedulerConfig, StepCoefficients};
use crate::{Error, Result};

/// How many steps a phase takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Length {
    Steps(usize),
    Percent(f64),
    Rest,
}

/// One phase as written: its length and the settings it changes.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseSpec {
    pub length: Length,
    pub sampler: Option<Sampler>,
    pub candidates: Option<usize>,
    pub score_every: Option<usize>,
    pub guidance: Option<f32>,
    /// Byte offset of the phase in the schedule text (for errors).
    at: usize,
}

/// A parsed `--schedule`, with its text for errors and image metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub text: String,
    pub phases: Vec<PhaseSpec>,
}

/// The run's own settings: what a phase does not set.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub sampler: Sampler,
    pub candidates: usize,
    /// `None`: four rounds per run.
    pub score_every: Option<usize>,
    pub guidance: f32,
}

/// A phase with everything settled.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub steps: Range<usize>,
    pub sampler: Sampler,
    pub candidates: usize,
    pub score_every: usize,
    pub guidance: f32,
}

impl Phase {
    /// The steps after which this phase scores: every `score_every` steps, and
    /// always its last step.
    pub fn rounds(&self) -> Vec<usize> {
        if self.steps.is_empty() {
            return Vec::new(); // a run of no steps (`--strength 0`)
        }
        // An interval past the phase's length scores only at its end (and the
        // clamp keeps `start + every - 1` from overflowing on a huge `every`).
        let every = self.score_every.clamp(1, self.steps.len().max(1));
        let mut rounds: Vec<usize> = (self.steps.start + every - 1..self.steps.end)
            .step_by(every)
            .collect();
        if rounds.last() != Some(&(self.steps.end - 1)) {
            rounds.push(self.steps.end - 1);
        }
        rounds
    }
}

impl std::str::FromStr for Schedule {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Schedule::parse(text)
    }
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self> {
        // Offsets (for carets) are into the trimmed text, the one errors echo.
        let text = text.trim();
        let fail = |at: usize, message: String| {
            Error::BadInput(with_caret(&format!("--schedule: {message}"), text, at))
        };
        let mut phases = Vec::new();
        let mut start = 0;
        for chunk in text.split(';') {
            phases.push(phase(chunk, start).map_err(|(at, m)| fail(at, m))?);
            start += chunk.len() + 1;
        }
        let rests: Vec<&PhaseSpec> = phases.iter().filter(|p| p.length == Length::Rest).collect();
        if rests.len() > 1 {
            return Err(fail(rests[1].at, "only one phase can be `rest`".into()));
        }
        Ok(Schedule {
            text: text.trim().to_string(),
            phases,
        })
    }

    /// The run's length: `steps` if given, else the sum of plain step counts
    /// when every phase has one ([`Self::counted_steps`], `usize::MAX` past it),
    /// else `default_steps`.
    pub fn total_steps(&self, steps: Option<usize>, default_steps: usize) -> usize {
        let counted = self
            .counted_steps()
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        steps.or(counted).unwrap_or(default_steps)
    }

    /// The sum of the phases' plain step counts when every phase has one:
    /// exact (in `u128`, which no sum of `usize` counts from a text can pass),
    /// so a caller can refuse it by its true value.
    pub fn counted_steps(&self) -> Option<u128> {
        self.phases
            .iter()
            .map(|p| match p.length {
                Length::Steps(n) => Some(n as u128),
                _ => None,
            })
            .sum()
    }

    /// The phases over a run of `steps` steps.
    pub fn resolve(&self, steps: usize, defaults: &Defaults) -> Result<Vec<Phase>> {
        let fail = |at: usize, message: String| {
            Error::BadInput(with_caret(
                &format!("--schedule over {steps} steps: {message}"),
                &self.text,
                at,
            ))
        };
        // Percentages round on their running total, so they never drift apart.
        // `fixed` is exact (u128): plain counts as large as usize may add up past it.
        let mut fixed = 0u128;
        let mut percent = 0.0f64;
        let mut lengths = Vec::with_capacity(self.phases.len());
        for p in &self.phases {
            let n = match p.length {
                Length::Steps(n) => n,
                Length::Percent(q) => {
                    let before = (percent * steps as f64 / 100.0).round() as usize;
                    percent += q;
                    (percent * steps as f64 / 100.0).round() as usize - before
                }
                Length::Rest => 0,
            };
            fixed += n as u128;
            lengths.push(n);
        }
        if let Some(i) = self.phases.iter().position(|p| p.length == Length::Rest) {
            if fixed >= steps as u128 {
                return Err(fail(
                    self.phases[i].at,
                    format!("the other phases take {fixed} steps and leave none"),
                ));
            }
            lengths[i] = steps - fixed as usize;
        } else if fixed != steps as u128 {
            return Err(fail(
                self.text.len(),
                format!("the phases cover {fixed} steps (add a `rest` phase or change --steps)"),
            ));
        }
        let every = defaults.score_every.unwrap_or(steps.div_ceil(4)).max(1);
        let mut at = 0;
        let mut phases = Vec::with_capacity(lengths.len());
        for (p, n) in self.phases.iter().zip(lengths) {
            if n == 0 {
                return Err(fail(p.at, "this phase rounds to 0 steps".into()));
            }
            phases.push(Phase {
                steps: at..at + n,
                sampler: p.sampler.unwrap_or(defaults.sampler),
                candidates: p.candidates.unwrap_or(defaults.candidates),
                score_every: p.score_every.unwrap_or(every),
                guidance: p.guidance.unwrap_or(defaults.guidance),
            });
            at += n;
        }
        Ok(phases)
    }
}

/// A run without `--schedule`: one phase with the run's settings.
pub fn single(steps: usize, defaults: &Defaults) -> Vec<Phase> {
    vec![Phase {
        steps: 0..steps,
        sampler: defaults.sampler,
        candidates: defaults.candidates,
        score_every: defaults.score_every.unwrap_or(steps.div_ceil(4)).max(1),
        guidance: defaults.guidance,
    }]
}

/// A run's step table: row `i` is the row that step `i`'s phase sampler has in
/// its own table for the whole run, so a phase continues the run's timesteps
/// rather than restarting them. Returns the table and the start image's scale
/// (the first phase's `init_noise_sigma`).
///
/// Two adjustments keep the linear form exact across the seams:
/// - **Branching**: a deterministic step right after a scoring round (DDIM with
///   eta 0, DPM-Solver++) would move every copy of the winner identically, so it
///   is replaced by DDIM's eta = 1 row when its phase has several candidates:
///   they branch with fresh noise, as Euler ancestral's do on their own. With
///   Karras sigmas (whose timesteps DDIM does not share) Euler a's row is used.
/// - **Conventions**: Euler keeps `x` at unit-variance-free scale (`x = x0 + σ·ε`)
///   where DDIM and DPM-Solver keep it variance-preserving; every row maps its
///   `x` to the model's input with `in_scale` (1 or `1/√(σ²+1)`), so a row reading
///   an `x` written in another convention has its `x` terms multiplied by
///   `in_scale(writer) / in_scale(reader)` at that step.
pub fn step_table(
    phases: &[Phase],
    rounds: &[usize],
    config: &SchedulerConfig,
) -> Result<(Vec<StepCoefficients>, f32)> {
    step_table_from(phases, rounds, config, 0)
}

/// [`step_table`] of a run that skips the first `skip` steps of its schedule
/// (a start picture's `--strength`, as diffusers' `get_timesteps`): the
/// samplers are built for `skip` + the phases' steps, and step `i` of the run
/// takes their row `skip + i`.
pub fn step_table_from(
    phases: &[Phase],
    rounds: &[usize],
    config: &SchedulerConfig,
    skip: usize,
) -> Result<(Vec<StepCoefficients>, f32)> {
    let steps = phases.last().map_or(0, |p| p.steps.end) + skip;
    let mut tables: Vec<(Sampler, Box<dyn Scheduler>)> = Vec::new();
    for p in phases {
        if !tables.iter().any(|(s, _)| *s == p.sampler) {
            tables.push((p.sampler, schedulers::build(p.sampler, config, steps)?));
        }
    }
    let table = |s: Sampler| {
        let (_, t) = tables.iter().find(|(t, _)| *t == s).expect("built above");
        t.coefficients()
    };
    let needs_branch = phases.iter().any(|p| p.candidates > 1);
    let branch: Option<Box<dyn Scheduler>> = match (needs_branch, config.karras) {
        (false, _) => None,
        // On Karras sigmas, Euler a's row: the same sigmas, with fresh noise.
        (true, true) => Some(schedulers::build(Sampler::EulerAncestral, config, steps)?),
        (true, false) => Some(Box::new(Ddim::new(config, steps, 1.0)?)),
    };
    let mut rows = Vec::with_capacity(steps);
    let mut writer: Option<&[StepCoefficients]> = None;
    for phase in phases {
        for i in phase.steps.clone() {
            let own = table(phase.sampler);
            let branches = i > 0 && rounds.contains(&(i - 1)) && phase.candidates > 1;
            let source = match &branch {
                Some(b) if branches && !own[skip + i].uses_noise() => b.coefficients(),
                _ => own,
            };
            let mut row = source[skip + i];
            if let Some(w) = writer {
                let rho = w[skip + i].in_scale / row.in_scale;
                row.in_scale *= rho;
                row.x0_x *= rho;
                row.a *= rho;
            }
            rows.push(row);
            writer = Some(source);
        }
    }
    let init = tables.first().map_or(1.0, |(_, t)| t.init_noise_sigma());
    check_finite_table(config, &rows, init)?;
    Ok((rows, init))
}

/// A scheduler config can be valid field by field and still give a table
/// that is not finite (betas of 0 make DDIM's variance 0/0; betas near 1 make
/// ᾱ underflow): refuse it, naming the file, rather than render NaN.
fn check_finite_table(
    config: &SchedulerConfig,
    rows: &[StepCoefficients],
    init: f32,
) -> Result<()> {
    let bad = rows.iter().position(|r| {
        let words: &[f32] = bytemuck::cast_slice(std::slice::from_ref(r));
        words.iter().any(|v| !v.is_finite())
    });
    if bad.is_none() && init.is_finite() {
        return Ok(());
    }
    let at = bad.map_or("the start noise".to_string(), |i| format!("step {}", i + 1));
    Err(Error::model(
        &config.path,
        format!("the schedule's coefficients are not finite at {at}: check beta_start, beta_end and trained_betas"),
    ))
}

type Parsed<T> = std::result::Result<T, (usize, String)>;

/// One `;`-separated phase starting at byte `start` of the schedule.
fn phase(chunk: &str, start: usize) -> Parsed<PhaseSpec> {
    let mut words = words(chunk, start);
    let Some((at, length)) = words.next() else {
        return Err((
            start,
            "empty phase: expected a length (`10`, `40%` or `rest`)".into(),
        ));
    };
    let mut spec = PhaseSpec {
        length: parse_length(length).map_err(|m| (at, m))?,
        sampler: None,
        candidates: None,
        score_every: None,
        guidance: None,
        at,
    };
    for (at, word) in words {
        setting(&mut spec, word).map_err(|m| (at, m))?;
    }
    Ok(spec)
}

/// Whitespace-separated words of `chunk` with their byte offsets in the schedule.
fn words(chunk: &str, start: usize) -> impl Iterator<Item = (usize, &str)> {
    chunk
        .split_whitespace()
        .map(move |w| (start + (w.as_ptr() as usize - chunk.as_ptr() as usize), w))
}

fn parse_length(word: &str) -> std::result::Result<Length, String> {
    if word.eq_ignore_ascii_case("rest") {
        return Ok(Length::Rest);
    }
    let bad = || format!("phase length `{word}`: expected a step count, a percentage or `rest`");
    if let Some(number) = word.strip_suffix('%') {
        let q: f64 = number.parse().map_err(|_| bad())?;
        if !(q > 0.0 && q <= 100.0) || number.contains(['e', 'E', 'i', 'n']) {
            return Err(format!(
                "phase length `{word}`: must be above 0% and at most 100%"
            ));
        }
        return Ok(Length::Percent(q));
    }
    match word.parse::<usize>() {
        Ok(0) => Err("phase length 0: a phase needs at least one step".into()),
        Ok(n) => Ok(Length::Steps(n)),
        Err(_) => Err(bad()),
    }
}

fn setting(spec: &mut PhaseSpec, word: &str) -> std::result::Result<(), String> {
    let Some((key, value)) = word.split_once('=') else {
        return Err(format!(
            "`{word}`: expected key=value (sampler, candidates, score_every, guidance)"
        ));
    };
    let count = |what: &str| match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{what}={value}: expected a whole number above 0")),
    };
    match key.to_ascii_lowercase().replace('-', "_").as_str() {
        "sampler" => spec.sampler = Some(Sampler::parse(value).map_err(|e| e.to_string())?),
        "candidates" | "k" => spec.candidates = Some(count("candidates")?),
        "score_every" | "every" => spec.score_every = Some(count("score_every")?),
        "guidance" | "cfg" => match value.parse::<f32>() {
            Ok(g) if g.is_finite() && !value.contains(['i', 'n', 'I', 'N']) => {
                spec.guidance = Some(g)
            }
            _ => return Err(format!("guidance={value}: expected a number")),
        },
        _ => {
            return Err(format!(
                "unknown setting `{key}` (expected sampler, candidates, score_every or guidance)"
            ))
        }
    }
    Ok(())
}
