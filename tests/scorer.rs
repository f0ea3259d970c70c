//! Any transformers `CLIPModel` as the scorer (`--scorer DIR`, `EASEL_SCORER`):
//! the tiny random scorer of tools/make_scorer.py (its own 714-id vocabulary and
//! 24-token context, 12 px images with its own mean/std) against transformers'
//! goldens; the loop scoring a latent pipeline with it; the defaults that follow
//! the model (K = 4 with a scorer, 1 without); bad scorer folders.
//!
//! Tolerance: max |got − want| ≤ 1e-4 · max |want| for embeddings and logits
//! (f32 weights, two layers, 16 wide: the GPU's f32 sums differ from PyTorch's in
//! order only); 1e-6 absolute for the pixels (one normalisation, no arithmetic
//! beyond a subtract and a divide per value).

mod common;

use std::path::{Path, PathBuf};

use common::binary::{command, easel, output, stderr, stdout};
use common::files::{copy_dir, TempDir};
use common::{assert_close, ctx};
use easel::gpu::Tensor;
use easel::models::pipeline::load_scorer_folder;
use easel::models::scorer::ScorerConfig;
use easel::models::Graph;
use easel::weights::{SafetensorsFile, WeightPrecision};

/// The prompts whose ids tools/make_scorer.py recorded.
const PROMPTS: [&str; 3] = ["red apple", "a cat in a hat", "tiny"];

fn scorer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/scorer")
}

fn golden(key: &str) -> (Vec<f32>, Vec<usize>) {
    let file = SafetensorsFile::open(scorer_dir().join("golden.safetensors")).unwrap();
    let shape = file.info(key).unwrap().shape;
    (file.to_f32(key).unwrap(), shape)
}

/// Compare with 1e-4 of the golden's scale.
fn check(what: &str, got: &[f32], key: &str) {
    let (want, _) = golden(key);
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert_close(what, got, &want, 1e-4 * scale, 0.0);
}

#[test]
fn scorer_folder_matches_transformers() {
    let config = ScorerConfig::read(&scorer_dir(), None).unwrap();
    assert_eq!(config.processor.image_mean, [0.5, 0.4, 0.3]);
    assert_eq!(config.processor.crop_size, 12);
    let scorer = load_scorer_folder(ctx(), &config, WeightPrecision::Auto).unwrap();
    // Its own tokenizer: 714 ids, 24 tokens.
    let rows: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| scorer.tokenizer.encode_padded(p).input_ids)
        .collect();
    let (ids, _) = golden("input_ids");
    let want: Vec<u32> = ids.iter().map(|&v| v as u32).collect();
    assert_eq!(rows.concat(), want, "token ids");
    let inputs = scorer.model.text_model.inputs_for(ctx(), &rows).unwrap();
    // Images [2, 3, 12, 18] in [-1.1, 1.1]: clamped, normalised, centre-cropped.
    let (images, shape) = golden("images");
    let images = Tensor::from_f32(ctx(), "images", &shape, &images).unwrap();
    let mut g = Graph::new(ctx(), "scorer");
    let pixels = scorer
        .model
        .preprocess(&mut g, &images, &scorer.processor)
        .unwrap();
    let text = scorer.model.text_embeds(&mut g, &inputs).unwrap();
    let text = g.l2_normalize(&text).unwrap();
    let image = scorer.model.image_embeds(&mut g, &pixels).unwrap();
    let image = g.l2_normalize(&image).unwrap();
    g.run().unwrap();
    let (want, _) = golden("pixel_values");
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert_close(
        "pixel_values",
        &pixels.to_vec(ctx()).unwrap(),
        &want,
        1e-6,
        0.0,
    );
    let (text, image) = (text.to_vec(ctx()).unwrap(), image.to_vec(ctx()).unwrap());
    check("text_embeds", &text, "text_embeds");
    check("image_embeds", &image, "image_embeds");
    // logits_per_image = exp(logit_scale) · cos(image, text).
    let scale = scorer.model.logit_scale.to_vec(ctx()).unwrap()[0].exp();
    let d = text.len() / PROMPTS.len();
    let logits: Vec<f32> = image
        .chunks(d)
        .flat_map(|i| {
            text.chunks(d)
                .map(move |t| scale * i.iter().zip(t).map(|(a, b)| a * b).sum::<f32>())
        })
        .collect();
    check("logits_per_image", &logits, "logits_per_image");
}

#[test]
fn tokenizer_json_alone_is_read_as_transformers_5_saves_it() {
    let dir = TempDir::new("tokenizer-json");
    copy_dir(&scorer_dir(), dir.path());
    for name in ["vocab.json", "merges.txt"] {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    let tokenizer = easel::tokenizer::ClipTokenizer::from_dir(dir.path()).unwrap();
    let ids: Vec<u32> = PROMPTS
        .iter()
        .flat_map(|p| tokenizer.encode_padded(p).input_ids)
        .collect();
    let want: Vec<u32> = golden("input_ids").0.iter().map(|&v| v as u32).collect();
    assert_eq!(ids, want);
}

/// The tiny latent pipeline without a scorer of its own.
fn latent_without_scorer() -> TempDir {
    let dir = TempDir::new("no-scorer");
    copy_dir(common::files::tiny_latent_pipeline(), dir.path());
    std::fs::remove_dir_all(dir.path().join("scorer")).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_latent_pipeline_with_the_tiny_scorer_keeps_the_best_of_four() {
    let model = latent_without_scorer();
    let out = model.path().join("out.png");
    let scorer = scorer_dir();
    let run = easel(&[
        "a cat:: hat::",
        "--model",
        path(model.path()),
        "--scorer",
        path(&scorer),
        "--steps",
        "4",
        "--score-every",
        "2",
        "--json",
        "-q",
        "-o",
        path(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let summary: serde_json::Value = serde_json::from_str(stdout(&run).trim()).unwrap();
    assert_eq!(summary["candidates"], 4, "K = 4 with a scorer");
    assert_eq!(summary["scorer"], "scorer");
    let rounds = summary["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "rounds after steps 2 and 4");
    for round in rounds {
        let rows = round["candidate_scores"].as_array().unwrap();
        assert_eq!(rows.len(), 4);
        let total = |row: &serde_json::Value| row[2].as_f64().unwrap();
        let winner = &rows[round["winner"].as_u64().unwrap() as usize];
        assert!(
            rows.iter().all(|row| total(winner) >= total(row)),
            "{round}"
        );
        // The total is the weighted sum of the two sub-prompts' cosines.
        assert!(
            (total(winner) - 0.5 * (winner[0].as_f64().unwrap() + winner[1].as_f64().unwrap()))
                .abs()
                < 1e-6
        );
    }
    let last = rounds.last().unwrap();
    let kept = &last["candidate_scores"][last["winner"].as_u64().unwrap() as usize];
    assert_eq!(
        summary["score"], kept[2],
        "the image is the last round's winner"
    );
    assert!(out.is_file());
}

#[test]
fn easel_scorer_names_the_scorer_and_the_flag_wins() {
    let model = latent_without_scorer();
    let out = model.path().join("out.png");
    let base = [
        "red apple",
        "--steps",
        "2",
        "--json",
        "-q",
        "--model",
        path(model.path()),
    ];
    let mut env = command(&[&base[..], &["-o", path(&out)]].concat());
    env.env("EASEL_SCORER", scorer_dir());
    let run = output(&mut env);
    assert!(run.status.success(), "{}", stderr(&run));
    let summary: serde_json::Value = serde_json::from_str(stdout(&run).trim()).unwrap();
    assert_eq!(summary["candidates"], 4);
    // The flag wins over the variable: a missing folder named by the flag fails.
    let missing = model.path().join("nowhere");
    let mut both = command(&[&base[..], &["-o", path(&out), "--scorer", path(&missing)]].concat());
    both.env("EASEL_SCORER", scorer_dir());
    let run = output(&mut both);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("scorer folder not found"),
        "{}",
        stderr(&run)
    );
}

#[test]
fn without_a_scorer_one_candidate_and_a_note() {
    let model = latent_without_scorer();
    let out = model.path().join("out.png");
    let run = easel(&[
        "red apple",
        "--steps",
        "2",
        "--json",
        "--model",
        path(model.path()),
        "-o",
        path(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let summary: serde_json::Value = serde_json::from_str(stdout(&run).trim()).unwrap();
    assert_eq!(summary["candidates"], 1);
    assert_eq!(summary["upscale"], 1, "no upscaler: no upscaling");
    assert_eq!(summary["rounds"], serde_json::json!([]));
    let err = stderr(&run);
    let notes: Vec<&str> = err.lines().filter(|l| l.contains("--scorer DIR")).collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(notes[0].contains("1 candidate"), "{err}");
    // Asking for more than one is refused before any GPU work.
    let run = easel(&[
        "red apple",
        "--candidates",
        "3",
        "--model",
        path(model.path()),
        "-o",
        path(&out),
    ]);
    assert_eq!(run.status.code(), Some(2));
    let err = stderr(&run);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--candidates 3") && err.contains("--scorer DIR"),
        "{err}"
    );
    let run = easel(&[
        "red apple",
        "--upscale",
        "4",
        "--model",
        path(model.path()),
        "-o",
        path(&out),
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("no upscaler/"), "{}", stderr(&run));
}

/// A copy of the tiny scorer with `edit` applied, run with `--scorer`: exit 2,
/// one line naming `expect`.
fn refused(edit: impl FnOnce(&Path), expect: &[&str]) {
    let dir = TempDir::new("bad-scorer");
    copy_dir(&scorer_dir(), dir.path());
    edit(dir.path());
    let model = common::files::tiny_latent_pipeline();
    let out = dir.path().join("out.png");
    let run = easel(&[
        "red apple",
        "--model",
        path(model),
        "--scorer",
        path(dir.path()),
        "-o",
        path(&out),
    ]);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for e in expect {
        assert!(err.contains(e), "expected `{e}` in: {err}");
    }
    assert!(!out.exists(), "no output file");
}

#[test]
fn bad_scorer_folders_say_what_is_wrong() {
    let rm = |name: &'static str| move |d: &Path| std::fs::remove_file(d.join(name)).unwrap();
    refused(
        |d| {
            ["vocab.json", "tokenizer.json"]
                .into_iter()
                .for_each(|f| rm(f)(d))
        },
        &["no tokenizer", "vocab.json"],
    );
    refused(rm("config.json"), &["config.json"]);
    refused(
        |d| {
            ["model.safetensors", "golden.safetensors"]
                .into_iter()
                .for_each(|f| rm(f)(d))
        },
        &["no .safetensors file"],
    );
    let write = |name: &'static str, text: &'static str| {
        move |d: &Path| std::fs::write(d.join(name), text).unwrap()
    };
    refused(
        write("preprocessor_config.json", r#"{"crop_size": 224}"#),
        &[
            "preprocessor_config.json",
            "`crop_size` 224",
            "image_size is 12",
        ],
    );
    refused(
        write(
            "preprocessor_config.json",
            r#"{"image_std": [0.5, 0, 0.5]}"#,
        ),
        &["preprocessor_config.json", "image_std"],
    );
    refused(
        write("tokenizer_config.json", r#"{"model_max_length": 77}"#),
        &["model_max_length 77", "max_position_embeddings 24"],
    );
    refused(
        |d| std::fs::remove_dir_all(d).unwrap(),
        &["scorer folder not found"],
    );
}

/// `easel --model (latent, no scorer, no upscaler) ARGS --json`: the summary and the PNG.
fn run_json(model: &Path, args: &[&str]) -> (serde_json::Value, Vec<u8>) {
    let out = model.join("up.png");
    let base = [
        "red apple",
        "--steps",
        "2",
        "--json",
        "-q",
        "--model",
        path(model),
    ];
    let run = easel(&[&base[..], args, &["-o", path(&out)]].concat());
    assert!(run.status.success(), "{}", stderr(&run));
    let summary = serde_json::from_str(stdout(&run).trim()).unwrap();
    (summary, std::fs::read(&out).unwrap())
}

#[test]
fn upscaler_from_a_folder_or_a_real_esrgan_file() {
    let model = latent_without_scorer();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let folder = root.join("tests/golden/upscaler");
    let (summary, from_folder) = run_json(model.path(), &["--upscaler", path(&folder)]);
    assert_eq!(
        summary["upscale"], 4,
        "the upscaler's own factor by default"
    );
    assert_eq!(
        (
            summary["width"].as_u64(),
            summary["denoised_width"].as_u64()
        ),
        (Some(64), Some(16))
    );
    // The same weights as one Real-ESRGAN-layout file (no config.json): the
    // configuration read from the shapes makes the same bytes.
    let file = model.path().join("realesr-tiny-x4.safetensors");
    std::fs::copy(folder.join("model.safetensors"), &file).unwrap();
    let (_, from_file) = run_json(model.path(), &["--upscaler", path(&file)]);
    assert_eq!(from_file, from_folder);
    let (summary, _) = run_json(model.path(), &["--upscaler", path(&file), "--upscale", "2"]);
    assert_eq!(summary["width"], 32, "x2 from an x4 upscaler");
    // Not an upscaler: one line, exit 2.
    let wrong = scorer_dir().join("model.safetensors");
    let run = easel(&[
        "red apple",
        "--model",
        path(model.path()),
        "--upscaler",
        path(&wrong),
    ]);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("not an SRVGGNetCompact") && err.contains("body.0.weight"),
        "{err}"
    );
}
