//! What a person at a terminal sees while easel works, drawn with indicatif: a
//! spinner while the model loads, a bar over the sampler's steps with it/s and ETA,
//! and in `easel batch` a bar over the jobs with images/hour and ETA, the per-job
//! lines printed above it. When stderr is not a terminal (a log, CI, a farm) nothing
//! is drawn and a batch's lines are written as they are; `-q` silences both.

use std::fmt;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressFinish, ProgressState, ProgressStyle};

/// Bars and spinners are drawn only for a person: not with `-q`, and only when
/// stderr is a terminal.
pub fn drawn(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A spinner saying `message` until finished or dropped (then cleared, so an error
/// message that follows starts a clean line), or nothing when not `drawn`.
pub fn spinner(drawn: bool, message: &'static str) -> ProgressBar {
    if !drawn {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner()
        .with_message(message)
        .with_finish(ProgressFinish::AndClear);
    spinner.set_style(
        ProgressStyle::with_template("easel: {spinner} {msg} ({elapsed})").expect("template"),
    );
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

/// The sampler's steps as a bar (`easel::request::Progress`).
pub struct StepBar(ProgressBar);

impl StepBar {
    pub fn new() -> Self {
        let style =
            ProgressStyle::with_template("easel: step {pos}/{len} [{bar:30}] {rate} ETA {eta}")
                .expect("template")
                .with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
                    let _ = write!(w, "{:.2} it/s", state.per_sec());
                })
                .progress_chars("=> ");
        // Cleared when the request is dropped after a failed run, too.
        Self(
            ProgressBar::new(0)
                .with_style(style)
                .with_finish(ProgressFinish::AndClear),
        )
    }
}

impl fmt::Debug for StepBar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StepBar")
    }
}

impl easel::request::Progress for StepBar {
    fn step(&self, done: usize, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(done as u64);
        if done >= total {
            self.0.finish_and_clear();
        }
    }
}

/// `easel batch`'s report: plain lines on stderr, or, when `drawn`, the same lines
/// above a bar over the shard's jobs with images/hour and the time left.
pub struct BatchBar {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl BatchBar {
    pub fn new(drawn: bool) -> Self {
        let bar = drawn.then(|| {
            let style = ProgressStyle::with_template("easel: [{bar:30}] {pos}/{len} jobs, {msg}")
                .expect("template")
                .progress_chars("=> ");
            let bar = ProgressBar::new(0)
                .with_style(style)
                .with_finish(ProgressFinish::AndClear);
            bar.set_message("starting");
            bar
        });
        Self {
            bar,
            started: Instant::now(),
        }
    }

    /// Says what the bar is waiting on (the model loading), when drawn.
    pub fn set_message(&self, message: &'static str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl easel::farm::Report for BatchBar {
    fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Images/hour over the rendered jobs; the time left assumes the jobs not yet
    /// through take as long as the rendered and failed ones did (skips are instant).
    fn finished(&self, so_far: &easel::farm::Summary) {
        let Some(bar) = &self.bar else { return };
        let through = so_far.done + so_far.skipped + so_far.failed;
        bar.set_length(so_far.jobs as u64);
        bar.set_position(through as u64);
        let hours = self.started.elapsed().as_secs_f64() / 3600.0;
        let worked = so_far.done + so_far.failed;
        let left = so_far.jobs.saturating_sub(through);
        let eta = match worked {
            0 => "ETA -".to_string(),
            n => {
                let seconds = hours * 3600.0 / n as f64 * left as f64;
                format!(
                    "ETA {}",
                    indicatif::HumanDuration(Duration::from_secs_f64(seconds))
                )
            }
        };
        let per_hour = so_far.done as f64 / hours.max(1e-9);
        bar.set_message(format!("{per_hour:.0} images/hour, {eta}"));
    }
}
