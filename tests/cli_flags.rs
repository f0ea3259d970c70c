//! One spelling of each sampler in `--help`, `--seed random`, and `-o` names that
//! are not PNG: checked on the binary (exit codes, messages).

mod common;

use common::binary::{easel, stderr};
use common::files::{tiny_pipeline, TempDir};

#[test]
fn help_spells_samplers_as_their_cli_names() {
    let output = easel(&["--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("ddim, euler_a or dpm++2m"), "{help}");
    assert!(!help.contains("euler-a"), "{help}");
}

#[test]
fn other_sampler_spellings_are_still_accepted() {
    for name in ["euler-a", "Euler a", "euler_a", "dpmpp_2m"] {
        let output = easel(&["a", "--sampler", name, "--steps", "0"]);
        // Parsed (the refusal is the step count's, exit 2, not clap's sampler error).
        let err = stderr(&output);
        assert!(!err.contains("unknown sampler"), "{name}: {err}");
    }
}

#[test]
fn seed_random_is_drawn_printed_and_recorded() {
    let dir = TempDir::new("seed-random");
    let model = tiny_pipeline().to_str().unwrap();
    let run = |name: &str, quiet: bool| {
        let out = dir.path().join(name);
        let mut args = vec!["red apple", "--model", model, "--steps", "2"];
        args.extend(["--candidates", "1", "--upscale", "1", "--seed", "random"]);
        args.extend(["-o", out.to_str().unwrap(), "--json"]);
        if quiet {
            args.push("-q");
        }
        let output = easel(&args);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let j: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        (j["seed"].as_u64().expect("a seed"), stderr(&output), out)
    };
    let (a, err, png) = run("a.png", false);
    assert!(err.contains(&format!("easel: seed {a}\n")), "{err}");
    let text = String::from_utf8_lossy(&std::fs::read(png).unwrap()).into_owned();
    assert!(
        text.contains(&format!("Seed: {a},")),
        "the PNG records the seed"
    );
    let (b, err, _) = run("b.png", true);
    assert!(!err.contains("easel: seed"), "-q: {err}");
    assert_ne!(a, b, "two draws differ");
}

#[test]
fn seed_is_a_number_or_random() {
    let output = easel(&["a", "--seed", "lucky"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("or `random`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn seed_random_is_refused_by_batch() {
    let dir = TempDir::new("seed-random-batch");
    let jobs = dir.write("jobs.jsonl", "{\"prompt\": \"a\"}\n");
    let out = dir.path().join("out");
    let output = easel(&[
        "batch",
        jobs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "random",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--seed random"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn outputs_other_than_png_are_refused() {
    let dir = TempDir::new("not-png");
    let jpg = dir.path().join("x.jpg");
    let output = easel(&["a", "-o", jpg.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("x.jpg: easel writes PNG; use a .png name"),
        "{err}"
    );
    assert!(err.starts_with("easel: -o "), "{err}");
    let webp = dir.path().join("t.WEBP");
    let png = dir.path().join("x.PNG");
    let output = easel(&[
        "a",
        "-o",
        png.to_str().unwrap(),
        "--trace",
        webp.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--trace "), "{}", stderr(&output));
    assert!(!jpg.exists() && !png.exists() && !webp.exists());
}
