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
        let mut rounds: Vec<usize> = (self.steps.start + self.score_every - 1..self.steps.end)
            .step_by(self.score_every)
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
    /// when every phase has one, else `default_steps`.
    pub fn total_steps(&self, steps: Option<usize>, default_steps: usize) -> usize {
        let counts: Option<Vec<usize>> = self
            .phases
            .iter()
            .map(|p| match p.length {
                Length::Steps(n) => Some(n),
                _ => None,
            })
            .collect();
        steps
            .or(counts.map(|c| c.iter().sum()))
            .unwrap_or(default_steps)
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
        let mut fixed = 0usize;
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
            fixed += n;
            lengths.push(n);
        }
        if let Some(i) = self.phases.iter().position(|p| p.length == Length::Rest) {
            if fixed >= steps {
                return Err(fail(
                    self.phases[i].at,
                    format!("the other phases take {fixed} steps and leave none"),
                ));
            }
            lengths[i] = steps - fixed;
        } else if fixed != steps {
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
///   they branch with fresh noise, as Euler ancestral's do on their own.
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
    let steps = phases.last().map_or(0, |p| p.steps.end);
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
    let branch = if needs_branch {
        Some(Ddim::new(config, steps, 1.0)?)
    } else {
        None
    };
    let mut rows = Vec::with_capacity(steps);
    let mut writer: Option<&[StepCoefficients]> = None;
    for phase in phases {
        for i in phase.steps.clone() {
            let own = table(phase.sampler);
            let branches = i > 0 && rounds.contains(&(i - 1)) && phase.candidates > 1;
            let source = match &branch {
                Some(b) if branches && !own[i].uses_noise() => b.coefficients(),
                _ => own,
            };
            let mut row = source[i];
            if let Some(w) = writer {
                let rho = w[i].in_scale / row.in_scale;
                row.in_scale *= rho;
                row.x0_x *= rho;
                row.a *= rho;
            }
            rows.push(row);
            writer = Some(source);
        }
    }
    let init = tables.first().map_or(1.0, |(_, t)| t.init_noise_sigma());
    Ok((rows, init))
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

#[cfg(test)]
mod tests {
    use super::*;

    const D: Defaults = Defaults {
        sampler: Sampler::Ddim,
        candidates: 4,
        score_every: None,
        guidance: 4.0,
    };

    fn phases(text: &str, steps: usize) -> Result<Vec<Phase>> {
        Schedule::parse(text)?.resolve(steps, &D)
    }

    #[test]
    fn percentages_and_rest_cover_the_run() {
        let p = phases(
            "40% sampler=euler_a candidates=8; rest k=2 every=3 cfg=6",
            25,
        )
        .unwrap();
        assert_eq!(p[0].steps, 0..10);
        assert_eq!(
            (p[0].sampler, p[0].candidates),
            (Sampler::EulerAncestral, 8)
        );
        assert_eq!(p[0].score_every, 7, "default: four rounds per run");
        assert_eq!(p[1].steps, 10..25);
        assert_eq!(
            (p[1].sampler, p[1].candidates, p[1].score_every),
            (Sampler::Ddim, 2, 3)
        );
        assert_eq!(p[1].guidance, 6.0);
        let halves = phases("50%; 50%", 7).unwrap();
        assert_eq!((halves[0].steps.len(), halves[1].steps.len()), (4, 3));
    }

    #[test]
    fn plain_counts_set_the_length() {
        let s = Schedule::parse("10 k=8; 20 k=1").unwrap();
        assert_eq!(s.total_steps(None, 50), 30);
        assert_eq!(s.total_steps(Some(40), 50), 40);
        assert!(s.resolve(40, &D).is_err());
        assert_eq!(
            Schedule::parse("50%; rest").unwrap().total_steps(None, 50),
            50
        );
    }

    #[test]
    fn rounds_end_every_phase() {
        let p = phases("5 every=2; rest every=10", 12).unwrap();
        assert_eq!(p[0].rounds(), vec![1, 3, 4]);
        assert_eq!(p[1].rounds(), vec![11]);
    }

    /// Runs `table` on the CPU ([`schedulers::apply`]) with the exact denoiser of
    /// Gaussian data N(0, s²) (eps prediction) and returns the final samples.
    fn sample_gaussian(
        table: &[StepCoefficients],
        init: f32,
        config: &SchedulerConfig,
        s: f64,
    ) -> Vec<f32> {
        let alphas = config.alphas_cumprod();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut normal = move || {
            let mut u = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 11) as f64 / (1u64 << 53) as f64
            };
            let (a, b) = (u().max(1e-300), u());
            ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
        };
        let n = 20_000;
        let mut x: Vec<f32> = (0..n).map(|_| init * normal()).collect();
        let mut x0 = vec![0.0; n];
        for row in table {
            let ab = alphas[row.timestep.round() as usize];
            let (a, sigma) = (ab.sqrt(), (1.0 - ab).sqrt());
            let eps: Vec<f32> = x
                .iter()
                .map(|&xi| {
                    let xt = row.in_scale as f64 * xi as f64;
                    let x0_hat = a * s * s / (a * a * s * s + sigma * sigma) * xt;
                    ((xt - a * x0_hat) / sigma) as f32
                })
                .collect();
            let noise: Vec<f32> = (0..n).map(|_| normal()).collect();
            (x, x0) = schedulers::apply(row, &x, &eps, &x0, &noise);
        }
        x
    }

    /// Every sampler, alone and mixed in phases (with branch rows after rounds),
    /// turns noise into the data's distribution: a wrong scale at a seam between
    /// Euler's and DDIM's conventions would change the final spread.
    #[test]
    fn mixed_phases_sample_the_data_distribution() {
        let config = SchedulerConfig::from_json(
            r#"{"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "beta_end": 0.012, "timestep_spacing": "trailing",
                "clip_sample": false, "set_alpha_to_one": false}"#,
            "test",
        )
        .unwrap();
        let s = 0.5;
        let spread = |text: &str| {
            let phases = Schedule::parse(text).unwrap().resolve(50, &D).unwrap();
            let rounds: Vec<usize> = phases.iter().flat_map(Phase::rounds).collect();
            let (table, init) = step_table(&phases, &rounds, &config).unwrap();
            let x = sample_gaussian(&table, init, &config, s);
            let std = (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
            (std, table.last().unwrap().timestep)
        };
        // Alone: the last step returns the denoiser's estimate at the last timestep,
        // whose spread is the posterior mean's, sqrt(a² s⁴ / (a² s² + σ²)); 50 steps
        // land within 8 % of it (Euler ancestral is furthest, 7 % here).
        for sampler in ["ddim", "euler_a", "dpm++2m"] {
            let (std, t) = spread(&format!("rest sampler={sampler}"));
            let ab = config.alphas_cumprod()[t.round() as usize];
            let ideal = (ab * s.powi(4) / (ab * s * s + 1.0 - ab)).sqrt();
            assert!(
                (std / ideal - 1.0).abs() < 0.08,
                "{sampler}: std {std}, ideal {ideal}"
            );
        }
        // Mixed: within 2 % of the last phase's sampler alone (20,000 samples: ~0.5 %
        // noise). A missing convention scale at a seam is off by 3.5-120 % here.
        for (text, last) in [
            ("40% sampler=euler_a k=4; rest sampler=ddim k=2", "ddim"),
            (
                "30% sampler=ddim; 30% sampler=euler_a; rest sampler=dpm++2m k=3",
                "dpm++2m",
            ),
            (
                "50% sampler=dpm++2m k=1; 50% sampler=euler_a k=8",
                "euler_a",
            ),
        ] {
            let (std, _) = spread(text);
            let (alone, _) = spread(&format!("rest sampler={last}"));
            assert!(
                (std / alone - 1.0).abs() < 0.02,
                "{text}: std {std}, {last} alone {alone}"
            );
        }
    }

    #[test]
    fn errors_point_at_the_text() {
        for (text, steps, wanted, column) in [
            ("40% k=0; rest", 10, "candidates=0", 4),
            ("40% sampler=plms; rest", 10, "unknown sampler", 4),
            ("40% k8", 10, "expected key=value", 4),
            ("x%; rest", 10, "phase length `x%`", 0),
            ("120%", 10, "at most 100%", 0),
            ("rest; rest", 10, "only one phase", 6),
            ("5;;5", 10, "empty phase", 2),
            ("5 k=2; 3", 10, "cover 8 steps", 8),
            ("10; rest", 10, "leave none", 4),
            ("1%; rest", 10, "rounds to 0 steps", 0),
            ("5 color=red; rest", 10, "unknown setting `color`", 2),
            ("5 cfg=nan; rest", 10, "guidance=nan", 2),
        ] {
            let e = phases(text, steps).unwrap_err().to_string();
            assert!(e.contains(wanted), "{text}: {e}");
            let caret = e.lines().nth(2).unwrap();
            assert_eq!(caret.find('^'), Some(2 + column), "{text}: {e}");
        }
    }
}
