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
        case: "schedule/leading-whitespace-rest",
        bug: "phases.rs: Schedule::resolve points its caret at an offset into the untrimmed text but echoes `Schedule::text`, which is trimmed: with leading whitespace the offset runs past the end and prompt::with_caret panics (byte index out of bounds)",
        when: When::Always,
    },
    Known {
        case: "schedule/lengths-sum-overflow",
        bug: "phases.rs: total_steps and resolve add phase lengths with `+`: `18446744073709551615; 2` wraps to a 1-step run whose phases are 0..MAX and MAX..1 (release), or panics (overflow checks)",
        when: When::Always,
    },
    Known {
        case: "schedule/percent-then-max-then-rest",
        bug: "phases.rs: as lengths-sum-overflow, through resolve's `fixed += n`: `1%;18446744073709551615;rest` over 50 steps gives phases 0..1, 1..0, 0..50 (release), or panics (overflow checks)",
        when: When::Always,
    },
    Known {
        case: "schedule/every-max-second-phase",
        bug: "phases.rs: Phase::rounds computes `start + score_every - 1` unchecked: `every=18446744073709551615` in a phase starting at 5 scores after step 3, outside it (release), or panics (overflow checks)",
        when: When::Always,
    },
    Known {
        case: "size/newline-in-side",
        bug: "farm/jobs.rs: parse_size echoes its input raw, so `3\\n2x32` gives a two-line error",
        when: When::Always,
    },
    Known {
        case: "jobs/size-newline",
        bug: "farm/jobs.rs: parse_size echoes its input raw: a job's `size` with a newline gives a two-line error",
        when: When::Always,
    },
    Known {
        case: "jobs/sampler-newline",
        bug: "schedulers/mod.rs: Sampler::parse echoes the name raw: a job's `sampler` with a newline gives a two-line error",
        when: When::Always,
    },
    Known {
        case: "jobs/guidance-overflows-f32",
        bug: "farm/jobs.rs + request.rs: `\"guidance\": 1e39` deserializes to f32 infinity and Request::check accepts it",
        when: When::Always,
    },
    Known {
        case: "jobs/out-escapes",
        bug: "farm/jobs.rs: checked_out compares `out` with `manifest.jsonl` as text, so `./manifest.jsonl` is accepted and the job's PNG would replace the manifest",
        when: When::Always,
    },
    Known {
        case: "request/guidance-nan",
        bug: "request.rs: Request::check accepts `--guidance NaN` (the schedule's `cfg=` refuses it)",
        when: When::Always,
    },
    Known {
        case: "request/guidance-inf",
        bug: "request.rs: Request::check accepts `--guidance inf`",
        when: When::Always,
    },
    Known {
        case: "request/until-score-nan",
        bug: "request.rs: Request::check accepts `--until-score NaN`",
        when: When::Always,
    },
    Known {
        case: "request/until-margin-nan",
        bug: "request.rs: Request::check accepts `--until-margin NaN`",
        when: When::Always,
    },
    Known {
        case: "config/scheduler-clip-range-overflows-f32",
        bug: "schedulers/config.rs: `clip_sample_range: 1e300` is accepted and becomes an infinite `clip` in the step table (ops/sampler.rs uses f32::MAX, not infinity, for no clipping)",
        when: When::Always,
    },
    Known {
        case: "config/tokenizer-max-length-huge",
        bug: "tokenizer.rs: `model_max_length` is accepted up to 2^40; encode_padded then pads to it: 4294967296 allocates 32 GiB (the OOM killer ends the process)",
        when: When::Always,
    },
    Known {
        case: "config/scheduler-not-utf8",
        bug: "schedulers/config.rs: SchedulerConfig::load maps a read error (not UTF-8, missing file) to Error::Io: exit 1, not 2",
        when: When::Always,
    },
    Known {
        case: "config/index-guidance-overflows-f32",
        bug: "models/pipeline.rs: `_easel.default_guidance: 1e39` reads as f32 infinity, and Request::check accepts it",
        when: When::Always,
    },
    Known {
        case: "config/scheduler-betas-zero",
        bug: "schedulers/ddim.rs: `beta_start = beta_end = 0` gives ᾱ = 1, DDIM's variance 0/0 and a NaN noise coefficient `d`; the config is accepted",
        when: When::Always,
    },
    Known {
        case: "config/scheduler-trained-betas-near-one",
        bug: "schedulers/config.rs: `trained_betas` of 0.9999 make ᾱ underflow to 0 and the step table NaN; the config is accepted",
        when: When::Always,
    },
    Known {
        case: "config/vae-no-blocks",
        bug: "models/vae.rs: upscale_factor computes `1 << (len - 1)` of an empty `block_out_channels`; the factor wraps to 0 and Request::check divides by it (request.rs `width % factor`): panic",
        when: When::Always,
    },
    Known {
        case: "config/scheduler-train-2p62",
        bug: "schedulers/config.rs: `num_train_timesteps` has no upper bound: 2^62 panics (capacity overflow) in alphas_cumprod, 2^32 would allocate 16 GiB",
        when: When::Always,
    },
    Known {
        case: "cli/schedule-lengths-sum-overflow",
        bug: "phases.rs/request.rs: `--schedule \"18446744073709551615; 2\"` panics in Phase::rounds (capacity overflow): exit 101",
        when: When::Always,
    },
    Known {
        case: "cli/steps-2p32-score-every-1",
        bug: "request.rs: Request::check lists every scoring round before step_table refuses more steps than the scheduler has: `--steps 4294967296 --score-every 1` allocates 32 GiB and aborts (SIGABRT)",
        when: When::Always,
    },
    Known {
        case: "cli/steps-2p61-rest-every-1",
        bug: "request.rs: as above, `--steps 2305843009213693952 --schedule \"rest every=1\"` panics (capacity overflow): exit 101",
        when: When::Always,
    },
    Known {
        case: "config/scheduler-steps-offset-max",
        bug: "schedulers/mod.rs: `leading` computes `i * ratio + steps_offset` unchecked: `steps_offset: 18446744073709551615` panics under overflow checks (release wraps, and check_timesteps refuses the result)",
        when: When::OverflowChecks,
    },
    Known {
        case: "config/unet-no-blocks",
        bug: "models/unet_2d_condition.rs: downscale_factor computes `1 << (len - 1)`: an empty `block_out_channels` underflows (release: a factor of 2^63 and a nonsense size error)",
        when: When::OverflowChecks,
    },
    Known {
        case: "config/unet-70-blocks",
        bug: "models/unet_2d_condition.rs: downscale_factor's `1 << 69` overflows (release: the shift wraps to 32, and sizes are checked against that)",
        when: When::OverflowChecks,
    },
    Known {
        case: "config/vae-70-blocks",
        bug: "models/vae.rs: upscale_factor's `1 << 69` overflows (release: the shift wraps)",
        when: When::OverflowChecks,
    },
    Known {
        case: "config/latent-sample-size-huge",
        bug: "request.rs: `sample_size * vae_factor` is unchecked: `sample_size: 2^63` with a 2x VAE overflows (release: wraps to a 0x0 default size)",
        when: When::OverflowChecks,
    },
    Known {
        case: "jobs/schedule-lengths-sum-overflow",
        bug: "phases.rs: total_steps' sum overflows and panics under overflow checks (release: a misleading `cover 1 steps` error)",
        when: When::OverflowChecks,
    },
    Known {
        case: "request/score-every-max-schedule",
        bug: "phases.rs: Phase::rounds' `start + score_every - 1` with `--score-every 18446744073709551615` and a second phase panics (release: a round outside its phase, in an unsorted list)",
        when: When::OverflowChecks,
    },
    Known {
        case: "safetensors/data-end-u64-max",
        bug: "safetensors 0.6.2 (upstream, tensor.rs:380) adds the last data offset to the header size unchecked: offsets ending at u64::MAX panic under overflow checks; in release easel's declared_data_end (weights/safetensors.rs) overflows too and names a wrong size",
        when: When::OverflowChecks,
    },
    Known {
        case: "jobs/schedule-lengths-sum-overflow-panics",
        bug: "phases.rs: `18446744073709551615; 5` over 4 steps wraps to phases 0..MAX and MAX..4, and Phase::rounds panics (capacity overflow): parse_jobs panics, so one bad line takes the whole batch down",
        when: When::Always,
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
