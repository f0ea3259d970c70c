//! Running the built `easel` binary the way every CLI test does: wgpu's own
//! adapter variables cleared (a test names what it wants), no measured kernel
//! table but the built-in one (`EASEL_TUNING` names a file that is never
//! written: a user's `easel tune` cache does not change what tests run), and
//! a panic is always a failure, whatever the exit code the test expects.

use std::process::{Command, Output};

/// `easel ARGS` with `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` removed; add
/// environment or a working folder before [`output`].
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_easel"));
    command
        .args(args)
        .env_remove("WGPU_BACKEND")
        .env_remove("WGPU_ADAPTER_NAME")
        .env("EASEL_TUNING", no_tuning_file());
    command
}

/// A table file that does not exist: `easel tune` tests write their own.
fn no_tuning_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-tuning.json")
}

/// Run `command` to the end, asserting easel did not panic.
pub fn output(command: &mut Command) -> Output {
    let output = command.output().expect("run the easel binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let args: Vec<_> = command.get_args().collect();
    assert!(
        !stderr.contains("panicked"),
        "easel {args:?} panicked:\n{stderr}"
    );
    output
}

/// `easel ARGS`, run to the end (see [`output`]).
pub fn easel(args: &[&str]) -> Output {
    output(&mut command(args))
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
