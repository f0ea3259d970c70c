//! Progress on stderr: nothing drawn when stderr is not a terminal (the one-line
//! messages as before), nothing at all with `-q`, and on a terminal (through
//! util-linux `script`, when the machine has it) a spinner, a step bar with it/s
//! and ETA, and `easel batch`'s bar with images/hour.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::binary::{self, stderr};
use common::files::{tiny_pipeline, TempDir};

fn easel(args: &[&str]) -> Output {
    let output = binary::easel(args);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    output
}

fn model() -> &'static str {
    tiny_pipeline().to_str().unwrap()
}

fn generate_args(out: &Path, quiet: bool) -> Vec<&str> {
    let mut args = vec!["red apple", "--model", model(), "--steps", "3"];
    args.extend(["--candidates", "1", "--upscale", "1", "-o"]);
    args.push(out.to_str().unwrap());
    if quiet {
        args.push("-q");
    }
    args
}

fn batch_args<'a>(jobs: &'a Path, out: &'a Path, quiet: bool) -> Vec<&'a str> {
    let mut args = vec![
        "batch",
        jobs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(["--model", model(), "--steps", "2", "--candidates", "1"]);
    args.extend(["--upscale", "1"]);
    if quiet {
        args.push("-q");
    }
    args
}

const JOBS: &str = "{\"prompt\": \"a\", \"seed\": 1}\n{\"prompt\": \"b\", \"seed\": 2}\n";

#[test]
fn not_a_terminal_gets_plain_lines() {
    let dir = TempDir::new("progress-plain");
    let err = stderr(&easel(&generate_args(&dir.path().join("a.png"), false)));
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with("easel: wrote ") && !err.contains('\r'),
        "{err:?}"
    );

    let jobs = dir.write("jobs.jsonl", JOBS);
    let err = stderr(&easel(&batch_args(&jobs, &dir.path().join("out"), false)));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "two jobs and the summary: {err:?}");
    assert!(
        lines[0].starts_with("easel: [0/1] 1/2 job 0: done "),
        "{err:?}"
    );
    assert!(
        lines[1].starts_with("easel: [0/1] 2/2 job 1: done "),
        "{err:?}"
    );
    assert!(
        lines[2].contains("images/hour") && !err.contains('\r'),
        "{err:?}"
    );
}

#[test]
fn quiet_is_silent() {
    let dir = TempDir::new("progress-quiet");
    let output = easel(&generate_args(&dir.path().join("a.png"), true));
    assert_eq!(stderr(&output), "");
    let jobs = dir.write("jobs.jsonl", JOBS);
    let output = easel(&batch_args(&jobs, &dir.path().join("out"), true));
    assert_eq!(stderr(&output), "");
}

/// `args` run on a pseudo-terminal by util-linux `script`; its transcript, or
/// `None` when `script` is not there.
fn on_a_terminal(args: &[&str]) -> Option<String> {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_easel"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let output = Command::new("script")
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .env_remove("WGPU_BACKEND")
        .env_remove("WGPU_ADAPTER_NAME")
        .output()
        .ok()?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn a_terminal_gets_bars() {
    let dir = TempDir::new("progress-tty");
    let Some(shown) = on_a_terminal(&generate_args(&dir.path().join("a.png"), false)) else {
        eprintln!("no `script` (util-linux) here: the terminal case is not tested");
        return;
    };
    assert!(shown.contains("loading the model"), "{shown:?}");
    assert!(
        shown.contains("easel: step 3/3") && shown.contains(" it/s ETA "),
        "{shown:?}"
    );
    assert!(shown.contains("easel: wrote "), "{shown:?}");
    let quiet = on_a_terminal(&generate_args(&dir.path().join("b.png"), true)).unwrap();
    assert_eq!(quiet, "", "-q on a terminal");

    let jobs = dir.write("jobs.jsonl", JOBS);
    let shown = on_a_terminal(&batch_args(&jobs, &dir.path().join("out"), false)).unwrap();
    assert!(
        shown.contains("/2 jobs, ") && shown.contains("images/hour, ETA"),
        "{shown:?}"
    );
    assert!(shown.contains("easel: [0/1] 2/2 job 1: done "), "{shown:?}");
}
