//! Starting from a picture (`--init`, `--strength`, `--mask`): img2img and
//! inpainting against diffusers' own pipelines on the tiny latent pipeline
//! (tests/golden/img2img, made by tools/make_img2img_golden.py), the start
//! returned by `--strength 0`, the kept region of an inpainting run, and the
//! CLI's notes and bad-input errors.

mod common;

#[path = "reference/noise.rs"]
#[allow(dead_code)]
mod noise_reference;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use common::binary::{easel, stderr};
use common::files::TempDir;
use easel::models::Graph;
use easel::schedulers::Sampler;
use easel::weights::SafetensorsFile;
use easel::{Engine, Image, Request, Start};

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/img2img")
        .join(name)
}

fn golden(key: &str) -> Vec<f32> {
    let file = SafetensorsFile::open(golden_path("golden.safetensors")).unwrap();
    file.to_f32(key).unwrap()
}

/// One engine per tiny pipeline (latent or pixel), runs serialised.
fn engine(latent: bool) -> std::sync::MutexGuard<'static, Engine> {
    static ENGINES: [OnceLock<Mutex<Engine>>; 2] = [OnceLock::new(), OnceLock::new()];
    ENGINES[latent as usize]
        .get_or_init(|| {
            let dir = match latent {
                true => common::files::tiny_latent_pipeline(),
                false => common::files::tiny_pipeline(),
            };
            Mutex::new(Engine::with_context(common::new_context(), dir).unwrap())
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The golden run's request: "red apple", seed 3, 6 DDIM steps (eta 0),
/// guidance 7.5, one candidate, no upscaling.
fn request(start: Start) -> Request {
    Request {
        seed: 3,
        steps: Some(6),
        guidance: Some(7.5),
        sampler: Some(Sampler::Ddim),
        candidates: Some(1),
        upscale: Some(1),
        start: Some(start),
        ..Request::new("red apple")
    }
}

/// An image's RGB as `[3, H, W]` in [0, 1], the goldens' layout.
fn planes(image: &Image) -> Vec<f32> {
    let plane = image.width * image.height;
    let mut out = vec![0.0; 3 * plane];
    for (i, px) in image.rgba.chunks(4).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px[c] as f32 / 255.0;
        }
    }
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The Python goldens' start noise is easel's: the Philox reference's draw.
#[test]
fn the_goldens_start_from_easels_noise() {
    let want = noise_reference::gaussian(3, 0, 0, 0, 1, 4 * 8 * 8);
    let got = golden("noise");
    let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
    assert!(max_diff(&got, &want) < 1e-6);
}

/// `StableDiffusionImg2ImgPipeline` at strength 0.5 (3 of 6 steps run): same
/// start noise, the VAE's mean, DDIM eta 0. Tolerance 1/255: the 8-bit
/// rounding of easel's image (0.5/255) plus f32 differences in the encoder,
/// three UNet steps and the decoder (measured: 0.5/255, the rounding alone).
#[test]
fn img2img_matches_diffusers() {
    let start = Start::open(&golden_path("init.png"), 0.5).unwrap();
    let image = engine(true).generate(&request(start)).unwrap();
    assert_eq!((image.width, image.height, image.steps_run), (16, 16, 3));
    let diff = max_diff(&planes(&image), &golden("img2img"));
    assert!(
        diff <= 1.0 / 255.0,
        "img2img differs from diffusers by {diff}"
    );
    let text = image.parameters.to_text();
    assert!(text.contains("Denoising strength: 0.5"), "{text}");
}

/// `StableDiffusionInpaintPipeline` with the 4-channel UNet at strength 0.75,
/// an unblurred mask on whole latents: same tolerance as img2img.
#[test]
fn inpainting_matches_diffusers() {
    let start = Start::open(&golden_path("init.png"), 0.75)
        .unwrap()
        .with_mask(&golden_path("mask.png"), 0.0)
        .unwrap();
    let image = engine(true).generate(&request(start)).unwrap();
    assert_eq!(image.steps_run, 4);
    let diff = max_diff(&planes(&image), &golden("inpaint"));
    assert!(
        diff <= 1.0 / 255.0,
        "inpainting differs from diffusers by {diff}"
    );
    assert!(image.parameters.to_text().contains("Mask blur: 0"));
}

/// The tiny pipeline with a dedicated inpainting UNet (in_channels 9), runs serialised.
fn inpainting_engine() -> std::sync::MutexGuard<'static, Engine> {
    static ENGINE: OnceLock<Mutex<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let dir = common::files::tiny_inpainting_pipeline();
            Mutex::new(Engine::with_context(common::new_context(), dir).unwrap())
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// `StableDiffusionInpaintPipeline` with the 9-channel UNet (latents, mask,
/// masked-image latents as its input; no pull-back after a step): at
/// strength 1 (its default: from the noise alone) and 0.5 (3 of 6 steps from
/// the start noised). Same tolerance as img2img, for the same reasons (the
/// masked picture's encoding adds one more encoder pass in f32; measured:
/// 0.5/255 at both strengths, the rounding alone).
#[test]
fn inpainting_unet_matches_diffusers() {
    for (strength, steps, key) in [(1.0, 6, "inpaint9"), (0.5, 3, "inpaint9_half")] {
        let start = Start::open(&golden_path("init.png"), strength)
            .unwrap()
            .with_mask(&golden_path("mask.png"), 0.0)
            .unwrap();
        let image = inpainting_engine().generate(&request(start)).unwrap();
        assert_eq!(image.steps_run, steps);
        let diff = max_diff(&planes(&image), &golden(key));
        assert!(
            diff <= 1.0 / 255.0,
            "strength {strength}: the inpainting UNet differs from diffusers by {diff}"
        );
    }
}

/// An inpainting model's `--strength` defaults to 1; without `--init` and
/// `--mask` it fails with exit 2 and one line saying what it needs, and
/// writes nothing; `easel inspect` names its UNet.
#[test]
fn cli_inpainting_model() {
    let dir = TempDir::new("inpainting-cli");
    let model = common::files::tiny_inpainting_pipeline();
    let (init, mask) = (golden_path("init.png"), golden_path("mask.png"));
    let (init, mask) = (init.to_str().unwrap(), mask.to_str().unwrap());
    let out = dir.path().join("out.png");
    let run = |extra: &[&str]| {
        let mut all = vec!["red apple", "--model", model.to_str().unwrap()];
        all.extend_from_slice(&["--steps", "2", "--candidates", "1", "--upscale", "1"]);
        all.extend_from_slice(&["-o", out.to_str().unwrap()]);
        all.extend_from_slice(extra);
        easel(&all)
    };
    for extra in [vec![], vec!["--init", init]] {
        let o = run(&extra);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: one line: {err}");
        assert!(
            err.contains(
                "this is an inpainting model (9 input channels): give --init IMAGE and --mask MASK"
            ),
            "{err}"
        );
        assert!(!out.exists(), "{extra:?}: no output file");
    }
    let o = run(&["--init", init, "--mask", mask]);
    assert!(o.status.success(), "{}", stderr(&o));
    let png = std::fs::read(&out).unwrap();
    assert!(String::from_utf8_lossy(&png).contains("Denoising strength: 1,"));
    let o = easel(&["inspect", model.to_str().unwrap()]);
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(
        listing.contains("an inpainting UNet: in_channels 9"),
        "{listing}"
    );
}

/// Job lines on an inpainting model: `strength` defaults to 1 (the manifest
/// records it), and a line without a picture and a mask fails alone.
#[test]
fn batch_jobs_on_an_inpainting_model() {
    let dir = TempDir::new("inpainting-batch");
    let (init, mask) = (golden_path("init.png"), golden_path("mask.png"));
    let (init, mask) = (init.to_str().unwrap(), mask.to_str().unwrap());
    let lines = [
        format!(r#"{{"prompt": "red apple", "init": "{init}", "mask": "{mask}", "mask_blur": 0}}"#),
        r#"{"prompt": "red apple"}"#.to_string(),
    ];
    let jobs = dir.write("jobs.jsonl", lines.join("\n"));
    let out = dir.path().join("out");
    let model = common::files::tiny_inpainting_pipeline();
    let o = easel(&[
        "batch",
        jobs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "2",
        "--candidates",
        "1",
        "--upscale",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "one bad job: {}", stderr(&o));
    let records = common::files::manifest(&out);
    let by_index = |i: u64| records.iter().find(|r| r["index"] == i).unwrap();
    assert_eq!(by_index(0)["strength"], 1.0);
    let error = by_index(1)["error"].as_str().unwrap();
    assert!(error.contains("this is an inpainting model"), "{error}");
}

/// A UNet whose input fits neither its samples nor an inpainting UNet's
/// (latents + mask + masked latents) is refused before any GPU work, naming
/// what it must be (exit 2).
#[test]
fn a_unet_of_other_input_channels_is_refused() {
    let mut config = easel::PipelineConfig::read(common::files::tiny_latent_pipeline()).unwrap();
    config.unet.in_channels = 5;
    let start = Start::open(&golden_path("init.png"), 0.5).unwrap();
    let e = request(start).check(&config).err().unwrap();
    assert_eq!(e.exit_code(), 2);
    let text = e.to_string();
    assert!(
        text.contains(
            "in_channels 5 and out_channels 4 must both be the VAE's latent_channels 4 \
             (or in_channels 9 for an inpainting UNet)"
        ),
        "{text}"
    );
}

/// `--strength 0` runs no step: a latent model returns its VAE's round trip
/// of the picture (computed here with the pipeline's own encoder and
/// decoder), a pixel model the picture itself, exactly.
#[test]
fn strength_zero_returns_the_start() {
    let start = Start::open(&golden_path("init.png"), 0.0).unwrap();
    let pixels = start.pixels((16, 16));
    let engine = engine(true);
    let image = engine.generate(&request(start.clone())).unwrap();
    assert_eq!(image.steps_run, 0);
    let ctx = &engine.ctx;
    let encoder = engine.pipeline.vae_encoder(ctx).unwrap().unwrap();
    let decoder = engine.pipeline.vae.as_ref().unwrap();
    let mut g = Graph::new(ctx, "round trip");
    let x = easel::gpu::Tensor::from_f32(ctx, "init", &[1, 3, 16, 16], &pixels).unwrap();
    let latents = encoder.encode(&mut g, &x).unwrap();
    let decoded = decoder.decode(&mut g, &latents).unwrap();
    g.run().unwrap();
    let round_trip: Vec<f32> = decoded.to_vec(ctx).unwrap();
    let round_trip: Vec<f32> = round_trip
        .iter()
        .map(|v| ((v + 1.0) / 2.0).clamp(0.0, 1.0))
        .collect();
    // 8-bit rounding only.
    assert!(max_diff(&planes(&image), &round_trip) <= 0.5 / 255.0 + 1e-6);
    drop(engine);
    let image = self::engine(false).generate(&request(start)).unwrap();
    let want: Vec<f32> = pixels.iter().map(|v| (v + 1.0) / 2.0).collect();
    assert!(
        max_diff(&planes(&image), &want) < 1e-6,
        "the picture itself"
    );
}

/// Inpainting keeps the unmasked region: on a pixel model (no VAE round trip)
/// the kept pixels are the picture's exactly, the masked square is repainted;
/// several candidates branch from the same start with their own noise.
#[test]
fn inpainting_keeps_the_unmasked_region() {
    let start = Start::open(&golden_path("init.png"), 0.9)
        .unwrap()
        .with_mask(&golden_path("mask.png"), 0.0)
        .unwrap();
    let want = start.pixels((16, 16));
    let r = Request {
        candidates: Some(3),
        keep_rounds: true,
        ..request(start)
    };
    let image = engine(false).generate(&r).unwrap();
    let got = planes(&image);
    let mut repainted = 0.0f32;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let (y, x) = (i % 256 / 16, i % 16);
        let w = (w + 1.0) / 2.0;
        match (4..12).contains(&y) && (4..12).contains(&x) {
            true => repainted = repainted.max((g - w).abs()),
            false => assert!(
                (g - w).abs() <= 0.5 / 255.0 + 1e-6,
                "kept pixel {i}: {g} vs {w}"
            ),
        }
    }
    assert!(repainted > 0.05, "the masked square was repainted");
    let first = &image.rounds[0].images;
    let n = first.len() / 3;
    assert_ne!(
        first[..n],
        first[n..2 * n],
        "candidates branch with their own noise"
    );
}

/// A mask of another size is resized to the image, with a note; a file that
/// is not an image fails with exit 2 and one line, and writes nothing.
#[test]
fn cli_notes_and_bad_pictures() {
    let dir = TempDir::new("img2img-cli");
    let model = common::files::tiny_pipeline().to_str().unwrap().to_string();
    let init = golden_path("init.png");
    let init = init.to_str().unwrap();
    let small = dir.write(
        "small-mask.png",
        std::fs::read(golden_path("mask.png")).unwrap(),
    );
    let small_mask =
        image::open(&small)
            .unwrap()
            .resize_exact(8, 8, image::imageops::FilterType::Nearest);
    small_mask.save(&small).unwrap();
    let out = dir.path().join("out.png");
    let args = [
        "red apple",
        "--model",
        &model,
        "--steps",
        "4",
        "--candidates",
        "1",
        "--upscale",
        "1",
    ];
    let run = |extra: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["-o", out.to_str().unwrap()]);
        all.extend_from_slice(extra);
        easel(&all)
    };
    let o = run(&["--init", init, "--mask", small.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("note: --mask"), "{}", stderr(&o));
    let text = std::fs::read(&out).unwrap();
    assert!(String::from_utf8_lossy(&text).contains("Mask blur: 4"));
    std::fs::remove_file(&out).unwrap();
    let not_png = dir.write("notes.png", "not a picture");
    for extra in [
        vec!["--init", not_png.to_str().unwrap()],
        vec!["--init", init, "--mask", not_png.to_str().unwrap()],
        vec!["--init", init, "--strength", "1.5"],
        vec!["--init", dir.path().to_str().unwrap()],
    ] {
        let o = run(&extra);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: one line: {err}");
        assert!(!out.exists(), "{extra:?}: no output file");
    }
    let o = run(&["--mask", init]);
    assert_eq!(o.status.code(), Some(2), "--mask needs --init");
}

/// Job files take `init`, `strength`, `mask` and `mask_blur`; the manifest
/// records them, the PNG its `Denoising strength`, and the hashed names
/// follow the start (another strength, another file).
#[test]
fn batch_jobs_start_from_pictures() {
    let dir = TempDir::new("img2img-batch");
    let (init, mask) = (golden_path("init.png"), golden_path("mask.png"));
    let (init, mask) = (init.to_str().unwrap(), mask.to_str().unwrap());
    let lines = [
        format!(r#"{{"prompt": "red apple", "init": "{init}", "strength": 0.5, "out": "half"}}"#),
        format!(r#"{{"prompt": "red apple", "init": "{init}", "mask": "{mask}", "mask_blur": 0}}"#),
        format!(r#"{{"prompt": "red apple", "init": "{init}", "mask": "{mask}", "mask_blur": 1}}"#),
        r#"{"prompt": "red apple", "strength": 0.5}"#.to_string(),
    ];
    let jobs = dir.write("jobs.jsonl", lines.join("\n"));
    let out = dir.path().join("out");
    let model = common::files::tiny_pipeline().to_str().unwrap().to_string();
    let o = easel(&[
        "batch",
        jobs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--model",
        &model,
        "--steps",
        "2",
        "--candidates",
        "1",
        "--upscale",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "one bad job: {}", stderr(&o));
    let records = common::files::manifest(&out);
    let by_index = |i: u64| records.iter().find(|r| r["index"] == i).unwrap();
    assert_eq!(by_index(0)["init"], init);
    assert_eq!(by_index(0)["strength"], 0.5);
    assert_eq!(by_index(1)["mask"], mask);
    assert_eq!(by_index(1)["mask_blur"], 0.0);
    assert_ne!(
        by_index(1)["output"],
        by_index(2)["output"],
        "the blur is in the name"
    );
    let error = by_index(3)["error"].as_str().unwrap();
    assert!(error.contains("need an `init`"), "{error}");
    let png = std::fs::read(out.join("half.png")).unwrap();
    assert!(String::from_utf8_lossy(&png).contains("Denoising strength: 0.5"));
}

/// The per-step blend is black or white at the samples' size whatever the
/// blur: a grey value would compound over the steps (kept at 10 % a step, a
/// sample keeps almost all of the picture after 50 steps: a feathered square
/// came out as the picture itself). The blur only moves the edge.
#[test]
fn the_step_mask_is_black_or_white() {
    let mask = |blur: f32| {
        let start = Start::open(&golden_path("init.png"), 1.0)
            .unwrap()
            .with_mask(&golden_path("mask.png"), blur)
            .unwrap();
        start.mask_samples((16, 16), [3, 16, 16]).unwrap()
    };
    let (sharp, feathered) = (mask(0.0), mask(2.0));
    for m in [&sharp, &feathered] {
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.0), "{m:?}");
        assert_eq!(m[8 * 16 + 8], 1.0, "the square's middle is repainted");
        assert_eq!(m[0], 0.0, "a corner is kept");
    }
    let repainted = |m: &[f32]| m.iter().filter(|&&v| v == 1.0).count();
    assert_eq!(repainted(&sharp), 3 * 8 * 8, "the golden mask's 8x8 square");
    let a = repainted(&feathered) as f32 / repainted(&sharp) as f32;
    assert!(
        (0.7..=1.3).contains(&a),
        "feathering rounds the square: {a}"
    );
}
