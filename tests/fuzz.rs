//! Fuzzing every parser a user or a model folder can reach (issue 19): the prompt,
//! `--schedule`, `--size`, job lines, safetensors headers, the configs of a model
//! folder, and whole requests, as library calls and through the `easel` binary.
//!
//! The property is the same everywhere: **no input panics, aborts or hangs, and every
//! error is an [`easel::Error`] of exit code 2 (or, in the farm, a message) that reads
//! as one line**, or as the prompt's three-line caret block (message, the text
//! echoed, a `^` under the fault: `prompt.rs`'s documented format, also used by
//! `--schedule`). Where an input is accepted, a few things that must then hold are
//! checked too (a weight or guidance is finite, phases cover the run, a step table is
//! finite, a round lies in its phase).
//!
//! Two halves:
//! - **A corpus**, `tests/fuzz/corpus/<parser>/`, one hostile input per file, replayed
//!   every run by [`corpus`]. Inputs that fail because of a bug not yet fixed are
//!   listed in [`KNOWN`] with what goes wrong; such a case must keep failing (a fix
//!   makes the test say which entry to remove), and the generators skip inputs of
//!   its kind while it is listed, so that the fuzzers look for new bugs.
//! - **Generators** (proptest), structured and byte-level, one module per parser.
//!   By default each runs a few hundred to a few thousand cases from a fixed seed
//!   (the same inputs every run; the whole file takes a few seconds);
//!   `EASEL_FUZZ_CASES=100000 cargo test --release --test fuzz` runs that many cases
//!   per property from a random seed, a few minutes in all. Shrunk failures are kept in
//!   `tests/fuzz/*.proptest-regressions` and replayed first. Building with
//!   `CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true` (and another `--target-dir`) finds
//!   arithmetic that wraps silently in a release build ([`When::OverflowChecks`]).
//!
//! Requests whose step counts would make `Request::check` allocate gigabytes (see
//! [`harness::risky`]) are not run in this process, where an allocation failure
//! aborts the whole test binary: `cli` runs them through the `easel` binary under a
//! memory limit instead.

// A crate root looks for its modules beside it: these live in tests/fuzz/.
#[path = "fuzz/cli.rs"]
mod cli;
#[path = "fuzz/config.rs"]
mod config;
#[path = "fuzz/harness.rs"]
mod harness;
#[path = "fuzz/jobs.rs"]
mod jobs;
#[path = "fuzz/prompt.rs"]
mod prompt;
#[path = "fuzz/request.rs"]
mod request;
#[path = "fuzz/safetensors.rs"]
mod safetensors;
#[path = "fuzz/schedule.rs"]
mod schedule;

use std::path::{Path, PathBuf};

use harness::Verdict;

/// When a known bug shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum When {
    /// In every build.
    Always,
    /// Only where integer overflow panics (`cargo test` without `--release`, or
    /// `-C overflow-checks=on`); a release build wraps around silently and the case
    /// passes there.
    OverflowChecks,
}

/// A corpus case that fails because of a bug in the library, not yet fixed.
pub struct Known {
    /// The case's path under `tests/fuzz/corpus/`.
    pub case: &'static str,
    /// What goes wrong, and where.
    pub bug: &'static str,
    pub when: When,
}

/// The bugs the fuzzers found, one corpus case each (the report of issue 19 has the
/// details). Remove an entry when its bug is fixed: the corpus test says when.
pub const KNOWN: &[Known] = &[
    Known {
        case: "safetensors/data-end-u64-max",
        bug: "safetensors 0.6.2 (upstream, tensor.rs:380) adds the last data offset to the header size unchecked: offsets ending at u64::MAX panic under overflow checks; in release easel's declared_data_end (weights/safetensors.rs) overflows too and names a wrong size",
        when: When::OverflowChecks,
    },
];

/// Is the bug of corpus case `case` still listed in [`KNOWN`] (and does it show in
/// this build)? Generators skip inputs of a listed kind.
pub fn known(case: &str) -> bool {
    KNOWN.iter().any(|k| k.case == case && shows(k.when))
}

fn shows(when: When) -> bool {
    match when {
        When::Always => true,
        When::OverflowChecks => harness::overflow_checks(),
    }
}

/// The corpus folder.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus")
}

/// The property of one corpus folder, on one file's bytes.
fn replay(parser: &str, bytes: &[u8]) -> Verdict {
    match parser {
        "prompt" => prompt::check(&harness::utf8(bytes)?),
        "schedule" => schedule::check_text(&harness::utf8(bytes)?),
        "size" => jobs::check_size(&harness::utf8(bytes)?),
        "jobs" => jobs::check_file(&harness::utf8(bytes)?),
        "safetensors" => safetensors::check_bytes(bytes),
        "config" => config::check_case(bytes),
        "request" => request::check_args(&harness::utf8(bytes)?),
        "cli" => cli::check_args(&harness::utf8(bytes)?),
        other => Err(format!("no property for corpus folder `{other}`")),
    }
}

/// Every corpus file, replayed: it must pass, or fail if it is in [`KNOWN`].
#[test]
fn corpus() {
    let root = corpus_dir();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fuzz/corpus")
        .map(|e| e.unwrap().path())
        .collect();
    folders.sort();
    for folder in folders {
        let parser = folder.file_name().unwrap().to_string_lossy().into_owned();
        for file in harness::files_under(&folder) {
            let rel = file.strip_prefix(&root).unwrap();
            let case = rel.with_extension("").to_string_lossy().replace('\\', "/");
            let bytes = std::fs::read(&file).unwrap();
            let verdict = harness::quietly(|| replay(&parser, &bytes))
                .unwrap_or_else(|panic| Err(format!("the harness panicked: {panic}")));
            seen.push(case.clone());
            let listed = KNOWN.iter().find(|k| k.case == case);
            match (verdict, listed) {
                (Ok(()), None) => {}
                (Err(why), None) => problems.push(format!("{case}: {why}")),
                (Err(why), Some(k)) if shows(k.when) => {
                    eprintln!("known: {case}: {why}");
                }
                (Err(why), Some(_)) => {
                    problems.push(format!("{case}: listed for overflow checks only: {why}"))
                }
                (Ok(()), Some(k)) if shows(k.when) => problems.push(format!(
                    "{case}: passes now: remove it from KNOWN ({})",
                    k.bug
                )),
                (Ok(()), Some(_)) => {}
            }
        }
    }
    for k in KNOWN {
        if !seen.iter().any(|c| c == k.case) {
            problems.push(format!(
                "KNOWN lists {}, which is not in the corpus",
                k.case
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} corpus case(s) failed:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
