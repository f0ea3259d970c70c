//! What every property shares: catching panics quietly, judging errors (exit code 2,
//! one line or the caret block), the bundled model read once, temporary folders,
//! proptest's case counts, and the guard that keeps allocation bombs out of this
//! process.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use easel::phases::{self, Defaults, Phase};
use easel::prompt::ECHO_WIDTH;
use easel::tokenizer::ClipTokenizer;
use easel::{Error, PipelineConfig, Request};
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use unicode_width::UnicodeWidthChar;

/// A property's verdict on one input: `Err` says what went wrong.
pub type Verdict = Result<(), String>;

/// `prop_assert!`-like early return for [`Verdict`] functions.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {{
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($arg)*));
        }
    }};
}

/// Proptest's settings for a property: `default` cases from a fixed seed, so that the
/// suite's short run is the same every time; or `EASEL_FUZZ_CASES` cases from a
/// random seed (a long run looks somewhere new each time).
pub fn cases(default: u32) -> Config {
    let long = std::env::var("EASEL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    let cases = long.unwrap_or(default);
    Config {
        cases,
        rng_seed: match long {
            Some(_) => RngSeed::Random,
            None => RngSeed::Fixed(19),
        },
        // A shrink of a slow property must not take minutes.
        max_shrink_iters: 2048,
        // Inputs of a known bug's kind are skipped; they must not end the run.
        max_global_rejects: cases.max(1024),
        // Shrunk failures beside each module: tests/fuzz/NAME.proptest-regressions.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// Runs the properties' verdict through proptest: a failed verdict fails the case.
pub fn verdict_to_test(v: Verdict) -> Result<(), proptest::test_runner::TestCaseError> {
    v.map_err(proptest::test_runner::TestCaseError::fail)
}

thread_local! {
    /// Set while [`quietly`] runs: the panic hook records instead of printing.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`, turning a panic into its message and location (nothing is printed).
pub fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let quiet = CAUGHT.with(|c| {
                let mut c = c.borrow_mut();
                if c.is_some() {
                    *c = Some(info.to_string());
                }
                c.is_some()
            });
            if !quiet {
                default(info);
            }
        }));
    });
    let outer = CAUGHT.with(|c| c.replace(Some(String::new())));
    let result = catch_unwind(AssertUnwindSafe(f));
    let message = CAUGHT.with(|c| c.replace(outer)).unwrap_or_default();
    result.map_err(|_| message.replace('\n', " "))
}

/// `f` must not panic; its panic becomes the verdict's message.
pub fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    quietly(f).map_err(|panic| format!("{what} panicked: {panic}"))
}

/// Does this build panic on integer overflow (debug, or `-C overflow-checks=on`)?
pub fn overflow_checks() -> bool {
    let max = std::hint::black_box(u8::MAX);
    quietly(|| max + std::hint::black_box(1)).is_err()
}

/// How an error message may be laid out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    /// One line (DESIGN.md: "every error is one line").
    OneLine,
    /// The prompt's caret block (`prompt.rs`, "Errors"): three lines.
    Caret,
    /// Either: a message that may come from the prompt or `--schedule` parser.
    Either,
}

/// An error a user can act on: exit code 2 and a message laid out as `layout`.
pub fn bad_input(e: &Error, layout: Layout) -> Verdict {
    ensure!(
        e.exit_code() == 2,
        "exit code {} (not 2) for: {e}",
        e.exit_code()
    );
    laid_out(&e.to_string(), layout)
}

/// A message laid out as `layout`.
pub fn laid_out(message: &str, layout: Layout) -> Verdict {
    ensure!(!message.trim().is_empty(), "empty error message");
    let lines = message.split('\n').count();
    match layout {
        Layout::OneLine => one_line(message),
        Layout::Caret => caret_block(message),
        Layout::Either if lines == 1 => one_line(message),
        Layout::Either => caret_block(message),
    }
}

fn one_line(message: &str) -> Verdict {
    ensure!(
        !message.contains(['\n', '\r']),
        "error message is not one line: {message:?}"
    );
    Ok(())
}

/// `message\n  echo\n  <spaces>^`: the echo shows no control characters and fits
/// [`ECHO_WIDTH`] columns (with its `…`), and the caret stands within it.
fn caret_block(block: &str) -> Verdict {
    let lines: Vec<&str> = block.split('\n').collect();
    ensure!(
        lines.len() == 3,
        "not one line nor a caret block: {block:?}"
    );
    let (message, echo, caret) = (lines[0], lines[1], lines[2]);
    ensure!(
        !message.trim().is_empty() && !message.contains('\r'),
        "bad first line in {block:?}"
    );
    let echo = echo
        .strip_prefix("  ")
        .ok_or_else(|| format!("echo not indented: {block:?}"))?;
    ensure!(
        !echo.chars().any(char::is_control),
        "control characters in the echo: {block:?}"
    );
    let width: usize = echo.chars().map(|c| c.width().unwrap_or(1)).sum();
    ensure!(
        width <= ECHO_WIDTH + 2,
        "echo is {width} columns wide: {block:?}"
    );
    let column = caret
        .strip_prefix("  ")
        .and_then(|c| c.strip_suffix('^'))
        .filter(|spaces| spaces.bytes().all(|b| b == b' '))
        .map(str::len)
        .ok_or_else(|| format!("third line is not a caret: {block:?}"))?;
    ensure!(
        column <= width,
        "caret at column {column}, past the {width}-column echo: {block:?}"
    );
    Ok(())
}

/// A corpus file as text.
pub fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| format!("corpus file is not UTF-8: {e}"))
}

/// Files under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled model's folder.
pub fn bundled_dir() -> PathBuf {
    root().join("weights/easel-emoji")
}

/// The bundled model's configs, read once (no weights, no GPU).
pub fn bundled() -> &'static PipelineConfig {
    static CONFIG: OnceLock<PipelineConfig> = OnceLock::new();
    CONFIG.get_or_init(|| PipelineConfig::read(&bundled_dir()).expect("the bundled model"))
}

/// The bundled model's tokenizer, read once.
pub fn tokenizer() -> &'static ClipTokenizer {
    static TOKENIZER: OnceLock<ClipTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        ClipTokenizer::from_dir(bundled_dir().join("tokenizer")).expect("the bundled tokenizer")
    })
}

/// A fresh folder under the system temp dir, deleted when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("easel-fuzz-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// At most this many scoring rounds (8 bytes each) may a request make in-process.
const MAX_ROUNDS: usize = 1 << 22;

/// Would `request.check(model)` allocate more than this process can afford (and
/// abort it)? `Request::check` lists the scoring rounds of every phase before it
/// checks the step count against the scheduler, so `--steps 4294967296 --score-every 1`
/// asks for 32 GiB; a scheduler with billions of training timesteps does likewise.
/// This repeats `Request::check`'s phase arithmetic (wrapping where a release build
/// wraps) to count the rounds first; such requests go to `cli`, under a memory limit.
pub fn risky(request: &Request, model: &PipelineConfig) -> bool {
    // A table per training timestep: from 2^61 on, its size overflows and panics
    // ("capacity overflow") instead of aborting.
    let train = model.scheduler.num_train_timesteps;
    if (MAX_ROUNDS..1 << 61).contains(&train) {
        return true;
    }
    let defaults = Defaults {
        sampler: request
            .sampler
            .unwrap_or_else(|| model.scheduler.default_sampler()),
        candidates: request.candidates_for(model),
        score_every: request.score_every,
        guidance: request.guidance.unwrap_or(model.settings.default_guidance),
    };
    let default_steps = model.settings.default_steps;
    // A panic here (an overflow check) panics in `check` too, before any allocation.
    let phases = quietly(|| match &request.schedule {
        Some(schedule) => {
            let steps = schedule.total_steps(request.steps, default_steps);
            schedule.resolve(steps, &defaults).ok()
        }
        None => Some(phases::single(
            request.steps.unwrap_or(default_steps),
            &defaults,
        )),
    });
    let Ok(Some(phases)) = phases else {
        return false;
    };
    phases
        .iter()
        .map(round_count)
        .fold(0usize, usize::saturating_add)
        > MAX_ROUNDS
}

/// How many rounds [`Phase::rounds`] collects for `phase` (wrapping as it does).
fn round_count(phase: &Phase) -> usize {
    let every = phase.score_every.max(1);
    let first = phase.steps.start.wrapping_add(every).wrapping_sub(1);
    let stepped = match phase.steps.end.checked_sub(first) {
        Some(span) if span > 0 => (span - 1) / every + 1,
        _ => 0,
    };
    stepped.saturating_add(1)
}
