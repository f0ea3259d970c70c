//! The `easel` binary on requests with huge numbers (step counts, scoring intervals,
//! schedule lengths, sizes, candidates): what `Request::check` may not survive
//! in-process. The binary runs under a 4 GiB address-space limit and a timeout, with
//! an output path whose folder does not exist, so a request that passes every check
//! still stops with exit 2 before any GPU work.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::ensure;
use crate::harness::{self, laid_out, Layout, TempDir, Verdict};

/// How long one run may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `easel generate` with `args` (the prompt first): it must exit 2 within
/// [`TIMEOUT`], saying why in one line (or a caret block) after `easel: `.
pub fn check(args: &[String]) -> Verdict {
    let dir = TempDir::new("cli");
    let output = dir.path().join("missing/out.png");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4194304; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_easel"))
        .arg("generate")
        .args(args)
        .arg("--model")
        .arg(harness::bundled_dir())
        .arg("-o")
        .arg(&output)
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run easel: {e}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("easel {args:?}: still running after {TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .map_err(|e| e.to_string())?;
    let at = |e: String| format!("easel {args:?}: {e}");
    ensure!(
        status.code() == Some(2),
        "{}",
        at(format!("{status}, stderr: {}", stderr.trim()))
    );
    let message = stderr
        .strip_prefix("easel: ")
        .and_then(|m| m.strip_suffix('\n'))
        .ok_or_else(|| at(format!("stderr: {stderr:?}")))?;
    laid_out(message, Layout::Either).map_err(at)
}

/// A corpus case: `easel generate`'s arguments, one per line (the prompt first).
pub fn check_args(text: &str) -> Verdict {
    let args: Vec<String> = text.lines().map(str::to_string).collect();
    check(&args)
}

/// Counts from small to far past anything a run can use.
const HUGE: &[u64] = &[
    1,
    2,
    50,
    1001,
    1 << 20,
    1 << 27,
    1 << 31,
    1 << 32,
    1 << 40,
    1 << 61,
    1 << 62,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

fn huge() -> impl Strategy<Value = String> {
    proptest::sample::select(HUGE).prop_map(|n| n.to_string())
}

/// A schedule of huge lengths and intervals.
fn schedule() -> impl Strategy<Value = String> {
    let length = prop_oneof![
        huge(),
        Just("rest".to_string()),
        Just("1%".to_string()),
        Just("50%".to_string())
    ];
    let phase = (
        length,
        proptest::option::of(huge()),
        proptest::option::of(huge()),
    )
        .prop_map(|(len, every, k)| {
            let mut s = len;
            if let Some(e) = every {
                s += &format!(" every={e}");
            }
            if let Some(k) = k {
                s += &format!(" k={k}");
            }
            s
        });
    proptest::collection::vec(phase, 1..4).prop_map(|p| p.join("; "))
}

fn args() -> impl Strategy<Value = Vec<String>> {
    let flag = |name: &'static str, value: BoxedStrategy<String>| {
        proptest::option::of(value.prop_map(move |v| vec![name.to_string(), v]))
    };
    (
        flag("--steps", huge().boxed()),
        flag("--score-every", huge().boxed()),
        flag("--schedule", schedule().boxed()),
        flag("--candidates", huge().boxed()),
        flag(
            "--size",
            (huge(), huge())
                .prop_map(|(w, h)| format!("{w}x{h}"))
                .boxed(),
        ),
    )
        .prop_map(|(a, b, c, d, e)| {
            let mut args = vec!["cat".to_string(), "--upscale".into(), "1".into()];
            args.extend([a, b, c, d, e].into_iter().flatten().flatten());
            args
        })
}

proptest! {
    // Each case starts a process: a few dozen by default.
    #![proptest_config(harness::cases(24))]

    #[test]
    fn huge_requests(args in args()) {
        prop_assume!(!crate::request::known_args(&args));
        harness::verdict_to_test(check(&args))?;
    }
}
