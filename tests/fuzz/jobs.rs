//! The farm's parsers: `--size` (`farm::parse_size`) and job files
//! (`farm::parse_jobs`, each line checked against the bundled model's configs).

use std::path::{Component, Path, PathBuf};

use easel::farm::{parse_jobs, parse_size, Defaults, JobModel, MANIFEST};
use easel::Request;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::ensure;
use crate::harness::{self, laid_out, no_panic, Layout, Verdict};

/// `parse_size`: an error is one line; a size is what the text says, read back.
pub fn check_size(text: &str) -> Verdict {
    match no_panic("farm::parse_size", || parse_size(text))? {
        Err(message) => laid_out(&message, Layout::OneLine).map_err(|e| format!("{text:?}: {e}")),
        Ok((w, h)) => {
            let (a, b) = text
                .split_once(['x', 'X'])
                .ok_or_else(|| format!("{text:?} parsed without an `x`"))?;
            ensure!(
                a.trim().parse() == Ok(w) && b.trim().parse() == Ok(h),
                "{text:?} parsed as {w}x{h}"
            );
            Ok(())
        }
    }
}

/// The template a job file's lines fill in from (the command line's flags).
fn defaults() -> Defaults {
    Request {
        seed: 5,
        steps: Some(4),
        candidates: Some(2),
        upscale: Some(1),
        ..Request::new("")
    }
}

/// `parse_jobs`: one entry per non-blank line, in order, its index the line number;
/// a bad line's message is one line or a caret block; a good line's output path stays
/// inside `--out`, its guidance is finite, and its request passes `Request::check`.
pub fn check_file(text: &str) -> Verdict {
    let config = harness::bundled();
    let model = JobModel {
        config,
        key: "easel-emoji@0",
    };
    let d = defaults();
    let entries = no_panic("farm::parse_jobs", || parse_jobs(text, &d, &model))?;
    let wanted: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, _)| i)
        .collect();
    let got: Vec<usize> = entries.iter().map(|e| e.index).collect();
    ensure!(got == wanted, "indices {got:?}, lines {wanted:?}");
    for entry in &entries {
        let line = text.lines().nth(entry.index).unwrap_or_default();
        let at = |e: String| format!("line {line:?}: {e}");
        let job = match &entry.job {
            Err(message) => {
                laid_out(message, Layout::Either).map_err(at)?;
                continue;
            }
            Ok(job) => job,
        };
        let out = &job.output;
        let inside: PathBuf = out
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect();
        ensure!(
            out.components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
                && out.extension().is_some()
                && inside != Path::new(MANIFEST),
            "{}",
            at(format!("output {out:?} is not a file inside --out"))
        );
        let r = &job.request;
        ensure!(
            r.guidance.is_none_or(f32::is_finite),
            "{}",
            at(format!("accepted guidance {:?}", r.guidance))
        );
        let checked = no_panic("Request::check", || r.check(config).map(|_| ()))?;
        ensure!(
            checked.is_ok(),
            "{}",
            at(format!("passed, then {checked:?}"))
        );
    }
    Ok(())
}

/// The parts of `--size`, valid and not.
const SIDES: &[&str] = &[
    "32",
    "16",
    "0",
    "1",
    "+32",
    "-32",
    " 32 ",
    "\t32",
    "32\n",
    "3\n2",
    "",
    "x",
    "99999999999999999999",
    "18446744073709551615",
    "18446744073709551616",
    "4294967296",
    "٣٢",
    "３２",
    "0x20",
    "3.2e1",
    "32.0",
    "1_000",
    "\u{a0}32",
    "32\u{3000}",
];

const SEPARATORS: &[&str] = &["x", "X", "×", " x ", "xx", "", "*", "x32x"];

fn size_text() -> impl Strategy<Value = String> {
    let pick = |a: &'static [&'static str]| proptest::sample::select(a).prop_map(str::to_string);
    prop_oneof![
        4 => (pick(SIDES), pick(SEPARATORS), pick(SIDES)).prop_map(|(a, x, b)| a + &x + &b),
        1 => any::<String>(),
        1 => "[0-9xX +-]{0,12}",
    ]
}

/// A JSON value of any kind, for a field that expects another.
fn wrong_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, 2])),
        Just(json!({"a": 1})),
        Just(json!("5")),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!(1e300)),
        Just(json!(-0.0)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
    ]
}

/// A count: small, edge, or huge (huge ones stop short of the in-process allocation
/// guard's range, `harness::risky`, unless they are large enough to overflow).
fn count() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (0u64..70).prop_map(|n| json!(n)),
        1 => proptest::sample::select(&[999u64, 1000, 1001, u64::MAX, u64::MAX - 1, 1 << 63][..]).prop_map(|n| json!(n)),
        1 => wrong_type(),
    ]
}

fn text_field(strategy: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    prop_oneof![6 => strategy.prop_map(Value::String), 1 => wrong_type()]
}

const SAMPLERS: &[&str] = &[
    "ddim", "euler_a", "Euler a", "dpm++2m", "plms", "", "ddim\nx", "\u{1b}",
];

const OUTS: &[&str] = &[
    "a",
    "a.png",
    "a/b",
    "a/b.jpg",
    "./a",
    "../a",
    "/tmp/a",
    "",
    ".",
    "..",
    "a/..",
    "a/",
    "a//b",
    "manifest.jsonl",
    "./manifest.jsonl",
    "a\0b",
    "a\nb",
    "~/a",
    "C:\\a",
    "\\\\server\\a",
    "a.",
    ".hidden",
    "猫.png",
    "a/./b",
];

fn guidance() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (-20.0f64..20.0).prop_map(|g| json!(g)),
        1 => proptest::sample::select(&[0.0f64, 1e38, 3.5e38, 1e39, -1e39, 1e300, f64::MIN_POSITIVE][..]).prop_map(|g| json!(g)),
        1 => wrong_type(),
    ]
}

/// One job line as a JSON object of known fields (and sometimes an unknown one).
fn job_object() -> impl Strategy<Value = String> {
    let pick =
        |a: &'static [&'static str]| proptest::sample::select(a).prop_map(str::to_string).boxed();
    let prompt = prop_oneof![
        3 => proptest::sample::select(&["cat", "red apple", "a:: b::2", "a --no b"][..]).prop_map(str::to_string),
        2 => crate::prompt::structured(),
    ]
    .boxed();
    let fields = (
        (
            proptest::option::weighted(0.95, text_field(prompt)),
            proptest::option::of(prop_oneof![
                any::<u64>().prop_map(|s| json!(s)),
                wrong_type()
            ]),
            proptest::option::of(text_field(size_text().boxed())),
            proptest::option::of(count()),
            proptest::option::of(count()),
        ),
        (
            proptest::option::of(guidance()),
            proptest::option::of(text_field(pick(SAMPLERS))),
            proptest::option::of(count()),
            proptest::option::of(text_field(crate::schedule::structured().boxed())),
            proptest::option::of(text_field(pick(OUTS))),
            proptest::option::weighted(0.05, Just(json!(1))),
        ),
    );
    fields.prop_map(
        |((prompt, seed, size, steps, k), (g, sampler, up, schedule, out, extra))| {
            let mut map = Map::new();
            let named = [
                ("prompt", prompt),
                ("seed", seed),
                ("size", size),
                ("steps", steps),
                ("candidates", k),
                ("guidance", g),
                ("sampler", sampler),
                ("upscale", up),
                ("schedule", schedule),
                ("out", out),
                ("step", extra),
            ];
            for (name, value) in named {
                if let Some(v) = value {
                    map.insert(name.to_string(), v);
                }
            }
            Value::Object(map).to_string()
        },
    )
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => job_object(),
        1 => Just(String::new()),
        1 => proptest::sample::select(&["  ", "\t", "{", "}", "null", "[]", "{}", "\u{feff}{\"prompt\":\"a\"}", "{\"prompt\":\"a\",\"prompt\":\"b\"}", "{\"prompt\":\"a\"} trailing"][..]).prop_map(str::to_string),
        1 => "[^\n]{0,40}",
    ]
}

/// A job file: lines joined by `\n` or `\r\n`.
fn job_file() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(line(), 0..5),
        proptest::sample::select(&["\n", "\r\n", "\n\n"][..]),
    )
        .prop_map(|(lines, sep)| lines.join(sep))
}

/// Would a line of `text` make `Request::check` allocate too much in-process (see
/// `harness::risky`)? Such files are skipped here.
fn risky(text: &str) -> bool {
    text.lines().any(|line| {
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
            return false;
        };
        let d = defaults();
        let schedule = map
            .get("schedule")
            .and_then(Value::as_str)
            .and_then(|s| easel::Schedule::parse(s).ok());
        let request = Request {
            steps: map
                .get("steps")
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .or(d.steps),
            candidates: map
                .get("candidates")
                .and_then(Value::as_u64)
                .map_or(Some(2), |n| Some(n as usize)),
            schedule,
            ..d
        };
        harness::risky(&request, harness::bundled())
    })
}

/// A size text is among the known bugs' kind (see `crate::KNOWN`): echoed raw.
fn known_size(text: &str) -> bool {
    crate::known("size/newline-in-side") && text.contains(['\n', '\r'])
}

/// A job file is among the known bugs' kind (see `crate::KNOWN`).
fn known_kind(text: &str) -> bool {
    use crate::known;
    text.lines().any(|line| {
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
            return false;
        };
        let text = |field: &str| map.get(field).and_then(Value::as_str).unwrap_or_default();
        let raw = |field: &str| text(field).contains(['\n', '\r']);
        let guidance = map.get("guidance").and_then(Value::as_f64);
        let schedule = easel::Schedule::parse(text("schedule")).ok();
        let steps = map.get("steps").and_then(Value::as_u64).map(|n| n as usize);
        let out: PathBuf = Path::new(text("out"))
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect();
        crate::schedule::known_kind(text("schedule"))
            || crate::schedule::known_overflow(schedule.as_ref(), steps.or(Some(4)), None)
            || crate::prompt::known_kind(text("prompt"))
            || (known("jobs/size-newline") && raw("size"))
            || (known("jobs/sampler-newline") && raw("sampler"))
            || (known("jobs/guidance-overflows-f32")
                && guidance.is_some_and(|g| g.abs() > f32::MAX as f64))
            || (known("jobs/out-escapes") && out == Path::new(MANIFEST))
    })
}

proptest! {
    #![proptest_config(harness::cases(1500))]

    #[test]
    fn sizes(text in size_text()) {
        let text = if known_size(&text) { text.replace(['\n', '\r'], " ") } else { text };
        harness::verdict_to_test(check_size(&text))?;
    }

    #[test]
    fn job_files(text in job_file()) {
        prop_assume!(!risky(&text) && !known_kind(&text));
        harness::verdict_to_test(check_file(&text))?;
    }
}
