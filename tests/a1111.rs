//! A1111 conventions end to end: every PNG easel writes here is read back with a
//! re-implementation of AUTOMATIC1111's `parse_generation_parameters`
//! (modules/infotext_utils.py), its values turned back into easel's flags, and
//! run again: the same image, byte for byte (pixels and text). Also: the
//! negative prompt replaces the unconditional text, `Model hash` is the SHA-256
//! of the UNet's weights cut to 10 digits, and `--karras` with its A1111 spellings.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::binary::{easel, stderr, stdout};
use common::files::{copy_dir, tiny_latent_pipeline, tiny_pipeline, TempDir};
use regex::Regex;
use sha2::{Digest, Sha256};

/// What A1111's parser makes of an infotext: prompt, negative prompt, and the
/// last line's `Key: value` pairs (`Size` split into `Size-1` and `Size-2`).
#[derive(Debug, Default, PartialEq)]
struct Infotext {
    prompt: String,
    negative: String,
    params: BTreeMap<String, String>,
}

/// `parse_generation_parameters`, rule for rule: the text is stripped and split
/// into lines; the last line holds the parameters only if `re_param` finds at
/// least 3 pairs in it (else it is prompt text too); lines are stripped, and from
/// the one that starts with `Negative prompt:` on they are the negative prompt,
/// joined by line feeds like the prompt's. A value that starts and ends with `"`
/// is JSON-decoded (`unquote`; kept as written when that fails); an empty value is
/// dropped (A1111's `v[0]` raises there, and the pair is skipped); `WxH` values
/// become `KEY-1` and `KEY-2`.
fn parse_generation_parameters(text: &str) -> Infotext {
    let re_param = Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#).unwrap();
    let re_imagesize = Regex::new(r"^(\d+)x(\d+)$").unwrap();
    let mut lines: Vec<&str> = text.trim().split('\n').collect();
    let mut lastline = lines.pop().unwrap_or("");
    if re_param.captures_iter(lastline).count() < 3 {
        lines.push(lastline);
        lastline = "";
    }
    let mut out = Infotext::default();
    let mut done_with_prompt = false;
    for line in lines {
        let mut line = line.trim();
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            done_with_prompt = true;
            line = rest.trim();
        }
        let target = match done_with_prompt {
            true => &mut out.negative,
            false => &mut out.prompt,
        };
        if !target.is_empty() {
            target.push('\n');
        }
        target.push_str(line);
    }
    for cap in re_param.captures_iter(lastline) {
        let (k, mut v) = (cap[1].to_string(), cap[2].to_string());
        if v.is_empty() {
            continue;
        }
        if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
            v = serde_json::from_str::<String>(&v).unwrap_or(v);
        }
        match re_imagesize.captures(&v) {
            Some(m) => {
                out.params.insert(format!("{k}-1"), m[1].to_string());
                out.params.insert(format!("{k}-2"), m[2].to_string());
            }
            None => {
                out.params.insert(k, v);
            }
        }
    }
    out
}

#[test]
fn the_parser_follows_a1111s_rules() {
    let text =
        "a cat,\n  on a mat  \nNegative prompt: blurry,\nugly\nSteps: 20, Sampler: DPM++ 2M, \
                Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x768, Model: \"a, b: c\", \
                Lora hashes: \"x: 1, y: 2\", Empty: , Note: \"say \\\"hi\\\"\"";
    let got = parse_generation_parameters(text);
    assert_eq!(got.prompt, "a cat,\non a mat");
    assert_eq!(got.negative, "blurry,\nugly");
    let p = &got.params;
    assert_eq!(
        (p["Steps"].as_str(), p["Sampler"].as_str()),
        ("20", "DPM++ 2M")
    );
    assert_eq!((p["Size-1"].as_str(), p["Size-2"].as_str()), ("512", "768"));
    assert_eq!(p["Model"], "a, b: c");
    assert_eq!(p["Lora hashes"], "x: 1, y: 2");
    assert_eq!(p["Note"], "say \"hi\"");
    assert!(!p.contains_key("Empty") && !p.contains_key("Size"));
    // A last line with fewer than three pairs is prompt text.
    let short = parse_generation_parameters("a dog\nSteps: 20, Seed: 3");
    assert_eq!(short.prompt, "a dog\nSteps: 20, Seed: 3");
    assert!(short.params.is_empty());
}

/// easel's flags for an infotext, checking the model it names is `model`.
fn flags(info: &Infotext, model: &Path) -> Vec<String> {
    let mut args = vec![info.prompt.clone()];
    let mut flag = |name: &str, value: &str| args.extend([name.to_string(), value.to_string()]);
    if !info.negative.is_empty() {
        flag("--negative", &info.negative);
    }
    for (key, value) in &info.params {
        match key.as_str() {
            "Steps" => flag("--steps", value),
            "Sampler" => flag("--sampler", value),
            "Schedule type" => {
                assert_eq!(value, "Karras");
                flag("--karras", "");
            }
            "CFG scale" => flag("--guidance", value),
            "Seed" => flag("--seed", value),
            "Size-1" => flag("--size", &format!("{value}x{}", info.params["Size-2"])),
            "Model hash" => assert_eq!(*value, unet_hash(model)),
            "Model" => assert_eq!(Some(value.as_str()), model.file_name().unwrap().to_str()),
            "Hires upscale" => flag("--upscale", value),
            "Weights" => flag("--weights", value),
            "Candidates" => flag("--candidates", value),
            "Score every" => flag("--score-every", value),
            "Until score" => flag("--until-score", value),
            "Until margin" => flag("--until-margin", value),
            "Schedule" => flag("--schedule", value),
            // What the run made: not an input.
            "Size-2" | "Score" | "Steps run" => {}
            other => panic!("a key easel does not read back: {other}"),
        }
    }
    if !info.params.contains_key("Hires upscale") {
        flag("--upscale", "1");
    }
    flag("--model", model.to_str().unwrap());
    // `--karras` takes no value.
    args.into_iter().filter(|a| !a.is_empty()).collect()
}

/// sha256 of the UNet's weight file, first 10 hex digits (A1111's short hash).
fn unet_hash(model: &Path) -> String {
    let bytes = std::fs::read(model.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    format!("{:x}", Sha256::digest(bytes))[..10].to_string()
}

/// Run easel with `args` (plus `-q -o out`), returning the PNG's bytes.
fn render(args: &[String], out: &Path) -> Vec<u8> {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(["-q", "-o", out.to_str().unwrap()]);
    let output = easel(&all);
    assert!(
        output.status.success(),
        "easel {all:?}: {}",
        stderr(&output)
    );
    std::fs::read(out).unwrap()
}

/// The `parameters` text of a PNG (tEXt or iTXt) and its pixel size.
fn infotext(png: &[u8]) -> (String, (u32, u32)) {
    let reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .unwrap();
    let info = reader.info();
    let text = match info.uncompressed_latin1_text.first() {
        Some(t) => t.text.clone(),
        None => info.utf8_text[0].get_text().unwrap(),
    };
    (text, (info.width, info.height))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Render, parse, render from the parsed flags: the same bytes.
fn round_trip(model: &Path, args: &[&str], dir: &TempDir, n: usize) -> Infotext {
    let mut first = strings(args);
    first.extend(["--model".into(), model.to_str().unwrap().into()]);
    let png = render(&first, &dir.path().join(format!("{n}-a.png")));
    let (text, _) = infotext(&png);
    let info = parse_generation_parameters(&text);
    let again = render(&flags(&info, model), &dir.path().join(format!("{n}-b.png")));
    assert!(
        png == again,
        "{args:?}: pasted back, another image:\n{text}"
    );
    info
}

#[test]
fn every_png_round_trips_through_a1111s_parser() {
    let dir = TempDir::new("a1111-round-trip");
    let model = tiny_pipeline();
    let cases: &[&[&str]] = &[
        // Defaults: K = 4, x4 upscaling (Size is the generated 16x16).
        &["red apple", "--steps", "3", "--seed", "7"],
        // Two lines, a negative prompt with commas and `--no` in the prompt.
        &[
            "red apple, shiny\non a table --no worm",
            "--negative",
            "blurry, low quality",
            "--steps",
            "3",
            "--candidates",
            "2",
            "--upscale",
            "2",
            "--guidance",
            "4.25",
        ],
        // A1111's sampler spelling with Karras, scoring and stopping flags.
        &[
            "cat:: hat::0.5",
            "--sampler",
            "DPM++ 2M Karras",
            "--steps",
            "4",
            "--candidates",
            "2",
            "--score-every",
            "2",
            "--until-margin",
            "0.5",
            "--upscale",
            "1",
            "--weights",
            "f16",
        ],
        // Phases: `Sampler` is the run's own, the phases say theirs.
        &[
            "dog",
            "--sampler",
            "Euler a",
            "--karras",
            "--steps",
            "4",
            "--schedule",
            "2 k=2; rest sampler=dpm++2m cfg=2.5",
            "--candidates",
            "1",
            "--upscale",
            "1",
            "--seed",
            "4294967296",
        ],
    ];
    for (n, args) in cases.iter().enumerate() {
        let info = round_trip(model, args, &dir, n);
        assert_eq!(info.params["Model hash"], unet_hash(model));
    }
    // The generated size, and the upscaling on its own.
    let png = std::fs::read(dir.path().join("0-a.png")).unwrap();
    let (text, size) = infotext(&png);
    let info = parse_generation_parameters(&text);
    assert_eq!(size, (64, 64));
    let p = &info.params;
    assert_eq!((p["Size-1"].as_str(), p["Size-2"].as_str()), ("16", "16"));
    assert_eq!(p["Hires upscale"], "4");
    let png = std::fs::read(dir.path().join("1-a.png")).unwrap();
    let info = parse_generation_parameters(&infotext(&png).0);
    assert_eq!(info.prompt, "red apple, shiny\non a table --no worm");
    assert_eq!(info.negative, "blurry, low quality");
    let png = std::fs::read(dir.path().join("2-a.png")).unwrap();
    let info = parse_generation_parameters(&infotext(&png).0);
    assert_eq!(info.params["Sampler"], "DPM++ 2M");
    assert_eq!(info.params["Schedule type"], "Karras");
}

#[test]
fn a_latent_model_round_trips_with_its_own_hash() {
    let dir = TempDir::new("a1111-latent");
    let model = tiny_latent_pipeline();
    let args = [
        "red apple",
        "--negative",
        "green",
        "--steps",
        "3",
        "--candidates",
        "1",
        "--upscale",
        "1",
        "--sampler",
        "dpm++2m",
    ];
    let info = round_trip(model, &args, &dir, 0);
    assert_eq!(info.params["Model hash"], unet_hash(model));
    assert_ne!(unet_hash(model), unet_hash(tiny_pipeline()));
}

/// `model` copied to `dir/NAME` (the same folder name, so the same `Model`) with
/// `_easel.unconditional_prompt` set to `text`.
fn with_unconditional(model: &Path, dir: &TempDir, text: &str) -> PathBuf {
    let copy = dir.path().join(model.file_name().unwrap());
    copy_dir(model, &copy);
    let index = copy.join("model_index.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    json["_easel"]["unconditional_prompt"] = text.into();
    std::fs::write(&index, json.to_string()).unwrap();
    copy
}

fn pixels(png: &[u8]) -> Vec<u8> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    buf
}

#[test]
fn the_negative_prompt_replaces_the_unconditional_text() {
    let dir = TempDir::new("a1111-negative");
    let model = tiny_pipeline();
    let edited = with_unconditional(model, &dir, "blurry photo");
    let base = strings(&["red apple --no worm", "--steps", "3", "--candidates", "2"]);
    let run = |model: &Path, extra: &[&str], name: &str| {
        let mut args = base.clone();
        args.extend(strings(extra));
        args.extend(["--model".into(), model.to_str().unwrap().into()]);
        render(&args, &dir.path().join(name))
    };
    let negative = run(model, &["--negative", "blurry photo"], "negative.png");
    let unconditional = run(&edited, &[], "unconditional.png");
    let plain = run(model, &[], "plain.png");
    assert_eq!(pixels(&negative), pixels(&unconditional));
    assert_ne!(pixels(&negative), pixels(&plain));
    // An empty negative prompt is none (A1111 writes no line for it either).
    let empty = run(model, &["--negative", " "], "empty.png");
    assert_eq!(empty, plain);
    assert!(!infotext(&plain).0.contains("Negative prompt"));
}

#[test]
fn json_names_the_negative_prompt_karras_and_the_hash() {
    let dir = TempDir::new("a1111-json");
    let model = tiny_pipeline();
    let out = dir.path().join("x.png");
    let output = easel(&[
        "red apple",
        "--negative",
        "worm",
        "--sampler",
        "k_euler_a",
        "--karras",
        "--steps",
        "2",
        "--candidates",
        "1",
        "--upscale",
        "1",
        "--json",
        "--model",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(json["negative"], "worm");
    assert_eq!(json["karras"], true);
    assert_eq!(json["sampler_a1111"], "Euler a");
    assert_eq!(json["model_hash"], unet_hash(model));
}

#[test]
fn karras_spellings_and_refusals() {
    let dir = TempDir::new("a1111-karras");
    let model = tiny_pipeline().to_str().unwrap();
    let base = [
        "red apple",
        "--steps",
        "3",
        "--candidates",
        "2",
        "--model",
        model,
    ];
    let run = |extra: &[&str], name: &str| {
        let mut args = strings(&base);
        args.extend(strings(extra));
        render(&args, &dir.path().join(name))
    };
    let a = run(&["--sampler", "DPM++ 2M Karras"], "a.png");
    let b = run(&["--sampler", "dpmpp_2m", "--karras"], "b.png");
    let plain = run(&["--sampler", "DPM++ 2M"], "plain.png");
    assert_eq!(a, b);
    assert_ne!(pixels(&a), pixels(&plain));
    // The model's sampler is DDIM, which has no sigma schedule: exit 2, no file.
    let out = dir.path().join("refused.png");
    let mut args = base.to_vec();
    args.extend(["--karras", "-o", out.to_str().unwrap()]);
    let output = easel(&args);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("--karras") && message.contains("DDIM"),
        "{message}"
    );
    assert!(!out.exists());
    let output = easel(&["red apple", "--sampler", "Euler", "--model", model]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("unknown sampler"),
        "{}",
        stderr(&output)
    );
}
