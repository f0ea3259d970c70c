//! `Request::check` on random requests against the bundled model's configs: sizes,
//! steps, candidates, guidance, upscaling, scoring intervals, stopping scores and
//! schedules.

use easel::farm::parse_size;
use easel::{Request, Sampler, Schedule};
use proptest::prelude::*;

use crate::ensure;
use crate::harness::{self, bad_input, no_panic, Layout, Verdict};

/// The property: `check` never panics, fails with exit 2 (one line, or the caret block
/// of a prompt or schedule error), and refuses what no run can use: a guidance that
/// is not finite, a stopping score or margin that is NaN.
pub fn check(request: &Request) -> Verdict {
    let config = harness::bundled();
    ensure!(
        !harness::risky(request, config),
        "allocates too much to check in-process: belongs in corpus/cli"
    );
    match no_panic("Request::check", || request.check(config).map(|_| ()))? {
        Err(e) => bad_input(&e, Layout::Either),
        Ok(()) => {
            let guidance = request.guidance.unwrap_or(config.settings.default_guidance);
            let phases = request.schedule.iter().flat_map(|s| &s.phases);
            ensure!(
                guidance.is_finite() && phases.filter_map(|p| p.guidance).all(f32::is_finite),
                "accepted guidance {guidance}"
            );
            for (name, v) in [
                ("until_score", request.until_score),
                ("until_margin", request.until_margin),
            ] {
                ensure!(!v.is_some_and(f32::is_nan), "accepted {name} NaN");
            }
            Ok(())
        }
    }
}

/// A corpus case: `easel generate`'s arguments, one per line (the prompt first).
pub fn check_args(text: &str) -> Verdict {
    match from_args(text)? {
        Err(e) => bad_input(&e, Layout::Either),
        Ok(request) => check(&request),
    }
}

/// The request `easel generate` makes of these arguments (one per line), or the
/// error a flag's value gives; `Err` for what the test cannot read.
pub fn from_args(text: &str) -> Result<easel::Result<Request>, String> {
    let mut lines = text.lines();
    let mut request = Request::new(lines.next().unwrap_or_default());
    let number = |flag: &str, v: &str| format!("{flag} {v:?}: not a number the CLI takes");
    while let Some(flag) = lines.next() {
        let v = lines
            .next()
            .ok_or_else(|| format!("{flag} without a value"))?;
        let count = || v.parse::<usize>().map_err(|_| number(flag, v));
        let float = || v.parse::<f32>().map_err(|_| number(flag, v));
        match flag {
            "--seed" => request.seed = v.parse().map_err(|_| number(flag, v))?,
            "--size" => request.size = Some(parse_size(v).map_err(|e| number(flag, &e))?),
            "--steps" => request.steps = Some(count()?),
            "--candidates" => request.candidates = Some(count()?),
            "--upscale" => request.upscale = Some(count()?),
            "--score-every" => request.score_every = Some(count()?),
            "--guidance" => request.guidance = Some(float()?),
            "--until-score" => request.until_score = Some(float()?),
            "--until-margin" => request.until_margin = Some(float()?),
            "--sampler" => match Sampler::parse(v) {
                Ok(s) => request.sampler = Some(s),
                Err(e) => return Ok(Err(e)),
            },
            "--schedule" => match Schedule::parse(v) {
                Ok(s) => request.schedule = Some(s),
                Err(e) => return Ok(Err(e)),
            },
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Ok(request))
}

/// Step counts (kept below the in-process guard's range or far above it).
fn steps() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..64,
        1 => proptest::sample::select(&[999, 1000, 1001, usize::MAX, usize::MAX - 1, 1 << 63, 1 << 62][..]),
    ]
}

fn side() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => proptest::sample::select(&[0, 1, 7, 8, 16, 24, 31, 32, 33, 64, 128, 1 << 20, 1 << 40, 1 << 62, 1 << 63, usize::MAX, usize::MAX - 7][..]),
        1 => 0usize..300,
    ]
}

fn float() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => -20.0f32..20.0,
        1 => proptest::sample::select(&[0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN_POSITIVE, 1e-45][..]),
        1 => any::<f32>(),
    ]
}

fn small_or_huge() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 1usize..6, 1 => Just(0usize), 1 => proptest::sample::select(&[64, 1 << 32, usize::MAX][..])]
}

/// A random request (its prompt usually valid, so the rest gets checked).
pub fn any_request() -> impl Strategy<Value = Request> {
    let prompt = prop_oneof![
        4 => proptest::sample::select(&["cat", "a:: b::2", "apple --no worm"][..]).prop_map(str::to_string),
        1 => crate::prompt::any_prompt(),
    ];
    let valid = proptest::sample::select(&[8usize, 16, 32, 48, 64][..]);
    let sizes =
        proptest::option::of(prop_oneof![2 => (valid.clone(), valid), 1 => (side(), side())]);
    (
        // Candidates and upscaling are mostly given, sometimes left to the model.
        (prompt, any::<u64>(), sizes, proptest::option::of(steps()), proptest::option::weighted(0.9, small_or_huge()), any::<bool>()),
        (
            proptest::option::of(float()),
            proptest::option::of(proptest::sample::select(&Sampler::ALL[..])),
            proptest::option::weighted(0.9, prop_oneof![8 => proptest::sample::select(&[1usize, 2, 4][..]), 2 => 0usize..6, 1 => Just(8usize), 1 => Just(usize::MAX)]),
            proptest::option::of(small_or_huge()),
            proptest::option::of(float()),
            proptest::option::of(float()),
            proptest::option::weighted(0.4, crate::schedule::structured()),
        ),
    )
        .prop_map(|((prompt, seed, size, steps, candidates, karras), (guidance, sampler, upscale, every, score, margin, schedule))| Request {
            seed,
            karras,
            size,
            steps,
            candidates,
            guidance,
            sampler,
            upscale,
            score_every: every,
            until_score: score,
            until_margin: margin,
            schedule: schedule.and_then(|s| Schedule::parse(without_known(&s)).ok()),
            ..Request::new(prompt)
        })
}

/// A schedule text, trimmed if it is of a known bug's kind (a parsed schedule keeps
/// only its trimmed text).
fn without_known(text: &str) -> &str {
    if crate::schedule::known_kind(text) {
        text.trim()
    } else {
        text
    }
}

/// A request is among the known bugs' kind (see `crate::KNOWN`).
pub fn known_kind(r: &Request) -> bool {
    use crate::known;
    let guidance = r.guidance.is_some_and(|g| !g.is_finite());
    let nan = |v: Option<f32>| v.is_some_and(f32::is_nan);
    (known("request/guidance-nan") && guidance)
        || (known("request/until-score-nan") && nan(r.until_score))
        || (known("request/until-margin-nan") && nan(r.until_margin))
        || crate::schedule::known_overflow(r.schedule.as_ref(), r.steps, r.score_every)
}

proptest! {
    #![proptest_config(harness::cases(3000))]

    #[test]
    fn requests(request in any_request()) {
        prop_assume!(!harness::risky(&request, harness::bundled()) && !known_kind(&request));
        harness::verdict_to_test(check(&request))?;
    }
}

/// `easel generate` arguments of a known bug's kind (see `crate::KNOWN`), among them
/// requests that make `Request::check` allocate without bound.
pub fn known_args(args: &[String]) -> bool {
    let Ok(Ok(request)) = from_args(&args.join("\n")) else {
        return false;
    };
    known_kind(&request)
        || (crate::known("cli/steps-2p32-score-every-1")
            && harness::risky(&request, harness::bundled()))
}
