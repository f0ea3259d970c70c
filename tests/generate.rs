//! The generation loop end to end on a tiny random pixel-space pipeline
//! (tests/golden/pipeline, made by tools/make_golden.py, with the default
//! model's tokenizer): determinism, one readback per image, best-of-K,
//! the GPU-side early stop, multi-prompts, and the CLI's bad-input errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use common::files::TempDir;
use easel::gpu::{Policy, Tensor};
use easel::models::Graph;
use easel::ops::matmul::{with_variant, MatmulVariant};
use easel::phases::Schedule;
use easel::{Engine, Image, Request};

/// The tiny pipeline assembled in a temp folder (it has no tokenizer of its own).
fn model_dir() -> &'static Path {
    common::files::tiny_pipeline()
}

/// One engine for the file; runs are serialised so counters are exact.
fn engine() -> std::sync::MutexGuard<'static, Engine> {
    static ENGINE: OnceLock<Mutex<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let ctx = common::new_context();
            Mutex::new(Engine::with_context(ctx, model_dir()).expect("tiny pipeline loads"))
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn request(prompt: &str, seed: u64) -> Request {
    Request {
        seed,
        steps: Some(6),
        candidates: Some(3),
        upscale: Some(1),
        ..Request::new(prompt)
    }
}

fn generate(r: &Request) -> Image {
    engine().generate(r).unwrap()
}

#[test]
fn same_seed_same_bytes_other_seed_other_image() {
    let a = generate(&request("red apple", 7));
    let b = generate(&request("red apple", 7));
    let c = generate(&request("red apple", 8));
    assert_eq!(a.rgba, b.rgba, "same seed, same bytes");
    assert_ne!(a.rgba, c.rgba, "another seed, another image");
    assert_eq!((a.width, a.height), (16, 16));
}

#[test]
fn one_readback_per_image() {
    let engine = engine();
    let before = engine.ctx.readback_count();
    engine.generate(&request("red apple", 1)).unwrap();
    assert_eq!(engine.ctx.readback_count() - before, 1);
    let pipelines = engine.ctx.pipelines.created();
    engine.generate(&request("red apple", 2)).unwrap();
    assert_eq!(
        engine.ctx.pipelines.created(),
        pipelines,
        "a second run compiles no pipeline"
    );
}

#[test]
fn the_kept_candidate_has_the_best_score() {
    let image = generate(&request("apple:: tart::", 3));
    assert_eq!(image.candidate_scores.len(), 3);
    let totals: Vec<f32> = image
        .candidate_scores
        .iter()
        .map(|r| *r.last().unwrap())
        .collect();
    let best = totals.iter().cloned().fold(f32::MIN, f32::max);
    assert_eq!(
        *image.scores.last().unwrap(),
        best,
        "winner's total is the maximum of {totals:?}"
    );
    // The weighted total is the weighted sum of the per-prompt cosines (weights 1/2, 1/2).
    for row in &image.candidate_scores {
        assert!((row[2] - 0.5 * (row[0] + row[1])).abs() < 1e-6, "{row:?}");
    }
}

/// Best-of-K checked outside the loop: the last round's candidates (images as
/// the scorer saw them) are CLIP-normalised on the CPU, embedded by the scorer
/// run on its own, and their cosines and weighted totals recomputed on the CPU;
/// the loop's scores must match and its winner must be their argmax.
fn check_best_of_k(engine: &Engine, r: &Request) -> Image {
    let image = engine
        .generate(&Request {
            keep_rounds: true,
            ..r.clone()
        })
        .unwrap();
    let round = image.rounds.last().unwrap();
    let (k, p) = (r.candidates.unwrap(), image.sub_prompts.len());
    let scorer = engine.pipeline.scorer.as_ref().unwrap();
    let size = scorer.model.vision_model.config.image_size;
    assert_eq!(
        round.images.len(),
        k * 3 * size * size,
        "no resize at this size"
    );
    let (mean, std) = (scorer.processor.image_mean, scorer.processor.image_std);
    let plane = size * size;
    let pixels: Vec<f32> = round
        .images
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            // The scorer rates the image a user would get: clamped to [0, 1].
            let c = i / plane % 3;
            (((v + 1.0) / 2.0).clamp(0.0, 1.0) - mean[c]) / std[c]
        })
        .collect();
    let ctx = &engine.ctx;
    let pixels = Tensor::from_f32(ctx, "pixels", &[k, 3, size, size], &pixels).unwrap();
    let rows: Vec<Vec<u32>> = image
        .sub_prompts
        .iter()
        .map(|t| scorer.tokenizer.encode_padded(t).input_ids)
        .collect();
    let inputs = scorer.model.text_model.inputs_for(ctx, &rows).unwrap();
    let mut g = Graph::new(ctx, "check");
    let image_embeds = scorer.model.image_embeds(&mut g, &pixels).unwrap();
    let text_embeds = scorer.model.text_embeds(&mut g, &inputs).unwrap();
    g.run().unwrap();
    let (img, txt) = (
        image_embeds.to_vec(ctx).unwrap(),
        text_embeds.to_vec(ctx).unwrap(),
    );
    let d = img.len() / k;
    let cosine = |a: &[f32], b: &[f32]| {
        let dot = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .map(|(&u, &v)| u as f64 * v as f64)
                .sum::<f64>()
        };
        dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
    };
    let weights = easel::prompt::parse(&r.prompt)
        .unwrap()
        .normalized_weights();
    let mut totals = Vec::new();
    for c in 0..k {
        let mut total = 0.0;
        for j in 0..p {
            let cos = cosine(&img[c * d..(c + 1) * d], &txt[j * d..(j + 1) * d]);
            let got = round.scores[c * (p + 1) + j] as f64;
            // f32 embeddings of an 8-dim projection: the GPU and CPU agree to ~1e-6.
            assert!(
                (got - cos).abs() < 1e-4,
                "candidate {c}, prompt {j}: {got} vs {cos}"
            );
            total += weights[j] * cos;
        }
        assert!((round.scores[c * (p + 1) + p] as f64 - total).abs() < 1e-4);
        totals.push(total);
    }
    let argmax = (0..k).fold(0, |b, c| if totals[c] > totals[b] { c } else { b });
    assert_eq!(round.winner, argmax, "totals {totals:?}");
    image
}

#[test]
fn the_kept_candidate_is_best_by_a_cpu_recomputation() {
    let image = check_best_of_k(&engine(), &request("apple::2 tart::1", 10));
    assert_eq!(
        image.rounds.last().unwrap().step,
        5,
        "the last round follows the last step"
    );
}

/// A latent model (a folder with vae/): the UNet samples latents, the VAE
/// decodes every round's candidates for the scorer and the winner for the image.
#[test]
fn latent_models_decode_for_the_scorer_and_the_image() {
    let ctx = common::new_context();
    let dir = common::files::tiny_latent_pipeline();
    let engine = Engine::with_context(ctx, dir).unwrap();
    assert!(engine.pipeline.vae.is_some());
    let r = request("red apple:: pear::", 15);
    let image = check_best_of_k(&engine, &r);
    // 8x8 latents, decoded twice as large.
    assert_eq!((image.width, image.height), (16, 16));
    assert_eq!(image.steps_run, 6);
    let again = engine.generate(&r).unwrap();
    assert_eq!(image.rgba, again.rgba, "same seed, same bytes");
    let r = Request {
        size: Some((18, 18)),
        ..r
    };
    let e = engine.generate(&r).unwrap_err().to_string();
    assert!(e.contains("multiples of 4"), "UNet 2x and VAE 2x: {e}");
}

/// The largest and the mean difference between two images' bytes, in levels.
fn level_differences(a: &[u8], b: &[u8]) -> (i32, f64) {
    let diffs: Vec<i32> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as i32 - y as i32).abs())
        .collect();
    let max = diffs.iter().copied().max().unwrap();
    (max, diffs.iter().sum::<i32>() as f64 / diffs.len() as f64)
}

/// The tiny latent pipeline on `ctx` (kernel policies set), and one candidate
/// of "red apple" for it to draw: how the policy tests below compare kernels.
fn tiny_latent(ctx: easel::gpu::Context) -> (Engine, Request) {
    let engine = Engine::with_context(ctx, common::files::tiny_latent_pipeline()).unwrap();
    let r = Request {
        candidates: Some(1),
        ..request("red apple", 5)
    };
    (engine, r)
}

/// The latent pipeline on the cooperative-matrix kernels (`EASEL_COOPERATIVE=always`)
/// draws what the tiled kernels draw, where the adapter has them (Mesa 26
/// lavapipe: tools/lavapipe_coop.sh). The kernels round their operands to f16,
/// so over six steps, the UNet and the VAE the pixels may differ by a few levels
/// (measured: at most 1 of 255 on the default model at 50 steps); the run is as
/// deterministic as any other.
#[test]
fn cooperative_kernels_draw_what_the_tiled_ones_draw() {
    let draw = |policy: Policy| {
        let mut ctx = common::new_context();
        ctx.coop?;
        ctx.coop_policy = policy;
        let (engine, r) = tiny_latent(ctx);
        let (a, b) = (engine.generate(&r).unwrap(), engine.generate(&r).unwrap());
        assert_eq!(a.rgba, b.rgba, "same seed, same bytes ({policy:?})");
        Some(a.rgba)
    };
    let Some(tiled) = draw(Policy::Off) else {
        eprintln!("no cooperative matrices on this adapter: nothing to compare");
        return;
    };
    let coop = draw(Policy::Always).unwrap();
    let (max, mean) = level_differences(&tiled, &coop);
    eprintln!("cooperative vs tiled: max {max}, mean {mean:.3} levels");
    assert!(max <= 4 && mean <= 0.5, "max {max}, mean {mean}");
}

/// Every GEMM on the 128×128 tile (`EASEL_WIDE_TILES=always`, which also runs
/// it on CPU drivers) draws what the adapter's own kernels draw: the same f32
/// products summed in another order, so at most a level here and there.
#[test]
fn wide_tiles_draw_what_the_default_kernels_draw() {
    let draw = |policy: Policy| {
        let mut ctx = common::new_context();
        ctx.wide_policy = policy;
        let gemm = easel::gpu::dispatch::Gemm {
            op: easel::gpu::dispatch::GemmOp::Matmul,
            batch: 1,
            rows: 1,
            cols: 1,
            depth: 1,
        };
        let chosen = MatmulVariant::for_problem(&ctx, gemm);
        assert_eq!(chosen == MatmulVariant::GpuWide, policy == Policy::Always);
        let (engine, r) = tiny_latent(ctx);
        engine.generate(&r).unwrap().rgba
    };
    let (default, wide) = (draw(Policy::Auto), draw(Policy::Always));
    let (max, mean) = level_differences(&default, &wide);
    eprintln!("wide tiles vs default: max {max}, mean {mean:.3} levels");
    assert!(max <= 2 && mean <= 0.1, "max {max}, mean {mean}");
}

/// Every GEMM pinned to the tall subgroup tiles (`CpuTall`, which the rules
/// take on llvmpipe before Mesa 23 for long launches) draws the very bytes
/// `CpuSubgroup` draws: each output is the vec4 kernels' sum in their order.
/// One engine per draw (an engine reuses its plan); the pin holds on the
/// thread that plans, as the ops read it.
#[test]
fn tall_tiles_draw_what_the_subgroup_kernels_draw() {
    let ctx = common::new_context();
    if !MatmulVariant::available(&ctx).contains(&MatmulVariant::CpuTall) {
        eprintln!("no 8-lane subgroups on this adapter: nothing to compare");
        return;
    }
    let small = easel::gpu::dispatch::Gemm {
        op: easel::gpu::dispatch::GemmOp::Conv2d,
        batch: 1,
        rows: 8,
        cols: 64,
        depth: 36,
    };
    let pinned = with_variant(MatmulVariant::CpuTall, || {
        MatmulVariant::for_problem(&ctx, small)
    });
    assert_eq!(pinned, MatmulVariant::CpuTall);
    let draw = |v| {
        let (engine, r) = tiny_latent(common::new_context());
        with_variant(v, || engine.generate(&r).unwrap().rgba)
    };
    let subgroup = draw(MatmulVariant::CpuSubgroup);
    assert!(subgroup == draw(MatmulVariant::CpuTall));
}

/// Convolutions gathering from their image staged in a texture
/// (`EASEL_IMAGE_TEXTURES=always`, which `auto` does on llvmpipe before Mesa
/// 23) draw the very bytes the buffer gathers draw, through the loop's
/// indirect launches (each staging rides its convolution's arguments).
#[test]
fn staged_images_draw_what_buffer_gathers_draw() {
    let ctx = common::new_context();
    if !MatmulVariant::available(&ctx).contains(&MatmulVariant::CpuSubgroup) {
        eprintln!("no 8-lane subgroups on this adapter: nothing to compare");
        return;
    }
    let draw = |policy: Policy| {
        let mut ctx = common::new_context();
        (ctx.weight_textures, ctx.image_textures) = (Policy::Always, policy);
        let (engine, r) = tiny_latent(ctx);
        engine.generate(&r).unwrap().rgba
    };
    assert!(draw(Policy::Off) == draw(Policy::Always));
}

/// Every group norm over chunks of its segments (`EASEL_SPLIT_NORMS=always`,
/// which on GPUs `auto` does for few long segments) draws what the one-launch
/// kernels draw: the same statistics combined per chunk, so a level here and there.
#[test]
fn split_group_norms_draw_what_whole_ones_draw() {
    let draw = |policy: Policy| {
        let mut ctx = common::new_context();
        ctx.split_norms = policy;
        let (engine, r) = tiny_latent(ctx);
        engine.generate(&r).unwrap().rgba
    };
    let (whole, split) = (draw(Policy::Off), draw(Policy::Always));
    let (max, mean) = level_differences(&whole, &split);
    eprintln!("split vs whole group norms: max {max}, mean {mean:.3} levels");
    assert!(max <= 2 && mean <= 0.1, "max {max}, mean {mean}");
}

/// `--schedule`: each phase runs with its own candidate count (the rounds show
/// it), a phase boundary scores, and the run is as deterministic as any other.
#[test]
fn schedule_phases_change_the_process() {
    let schedule =
        Schedule::parse("50% sampler=euler_a k=4; rest sampler=dpm++2m k=2 every=1").unwrap();
    let r = Request {
        schedule: Some(schedule),
        keep_rounds: true,
        ..request("red apple", 11)
    };
    let a = generate(&r);
    let rounds: Vec<(usize, usize)> = a
        .rounds
        .iter()
        .map(|x| (x.step, x.scores.len() / 2))
        .collect();
    // Default interval: 6 steps / 4 rounds = every 2; phase 1 ends at step 2.
    assert_eq!(rounds, [(1, 4), (2, 4), (3, 2), (4, 2), (5, 2)]);
    assert_eq!(a.candidate_scores.len(), 2, "the last phase's candidates");
    assert!(
        a.parameters
            .to_text()
            .contains("Schedule: 50% sampler=euler_a"),
        "{}",
        a.parameters.to_text()
    );
    // The run's own `--candidates` (what a phase does not set), so pasted back
    // with the schedule it makes the same run.
    assert_eq!(a.parameters.candidates, 3);
    let b = generate(&r);
    assert_eq!(a.rgba, b.rgba, "same seed, same bytes");
    let plain = generate(&request("red apple", 11));
    assert_ne!(a.rgba, plain.rgba, "the schedule changes the image");
}

/// Consecutive requests of one shape reuse the plan: no buffer (and so no
/// dispatch, each has its own uniform buffer) or pipeline is made, and the image
/// is byte-identical to one from a fresh plan. Prompts, weights, seeds, the
/// early-stop state and the counters are all per run.
#[test]
fn same_shape_requests_reuse_the_plan() {
    let engine = engine();
    let phased = |prompt: &str, seed| Request {
        schedule: Some(Schedule::parse("50% sampler=euler_a k=3; rest k=2").unwrap()),
        until_score: Some(-1.0), // stops at the first round: cancelled sizes must come back
        ..request(prompt, seed)
    };
    let first = engine
        .generate(&phased("red apple::2 pear::1", 12))
        .unwrap();
    assert!(first.stopped_early);
    let (buffers, pipelines) = (engine.ctx.buffer_count(), engine.ctx.pipelines.created());
    let next = Request {
        until_score: None,
        ..phased("green pear:: tart::-0.25", 13)
    };
    let reused = engine.generate(&next).unwrap();
    assert_eq!(
        engine.ctx.buffer_count(),
        buffers,
        "no buffer for a plan of the same shape"
    );
    assert_eq!(engine.ctx.pipelines.created(), pipelines);
    assert!(!reused.stopped_early);
    assert_eq!(reused.steps_run, 6);

    engine.generate(&request("red apple", 14)).unwrap(); // another shape: a new plan
    assert!(engine.ctx.buffer_count() > buffers);
    let fresh = engine.generate(&next).unwrap();
    assert_eq!(
        reused.rgba, fresh.rgba,
        "a reused plan gives the same bytes"
    );
    assert_eq!(reused.candidate_scores, fresh.candidate_scores);
}

/// A request's peak GPU bytes are its own: a larger image holds more, and after
/// it a smaller one reports what it reported before (the larger plan was freed
/// and the peak restarted).
#[test]
fn gpu_peak_bytes_are_per_request() {
    let engine = engine();
    let at = |size| Request {
        size: Some(size),
        steps: Some(1),
        ..request("red apple", 3)
    };
    let small = engine.generate(&at((16, 16))).unwrap().gpu_peak_bytes;
    let large = engine.generate(&at((32, 32))).unwrap().gpu_peak_bytes;
    assert!(large > small, "32x32: {large} bytes, 16x16: {small}");
    assert_eq!(
        engine.generate(&at((16, 16))).unwrap().gpu_peak_bytes,
        small
    );
}

#[test]
fn early_stop_when_certain_and_never_when_impossible() {
    let mut r = request("red apple", 4);
    r.score_every = Some(2);
    r.until_score = Some(-1.0); // any cosine passes
    let stopped = generate(&r);
    assert!(stopped.stopped_early);
    // steps_run is counted on the GPU by the sampler step kernel itself: the
    // cancelled steps' dispatches really did not run.
    assert_eq!(
        stopped.steps_run, 2,
        "the first round (after step 2) is certain"
    );
    r.until_score = Some(2.0); // no cosine reaches it
    let full = generate(&r);
    assert!(!full.stopped_early);
    assert_eq!(full.steps_run, 6);
}

#[test]
fn multi_prompts_and_negatives_change_the_image() {
    let split = generate(&request("apple:: tart::", 5));
    let whole = generate(&request("apple tart", 5));
    let negative = generate(&request("apple:: tart::-0.5", 5));
    assert_ne!(split.rgba, whole.rgba, "`a:: b::` is not `a b`");
    assert_ne!(
        split.rgba, negative.rgba,
        "a negative weight changes the image"
    );
    assert_eq!(split.sub_prompts, ["apple", "tart"]);
}

#[test]
fn upscaler_makes_the_image_larger() {
    let mut r = request("red apple", 6);
    r.upscale = Some(4);
    assert_eq!((generate(&r).width, generate(&r).height), (64, 64));
    r.upscale = Some(2);
    assert_eq!(generate(&r).width, 32);
}

fn easel(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn cli_writes_a_png_with_parameters() {
    let dir = TempDir::new("cli-png");
    let out = dir.path().join("apple.png");
    let model = model_dir().to_str().unwrap();
    let (code, stderr) = easel(&[
        "red apple",
        "--model",
        model,
        "--steps",
        "4",
        "--seed",
        "7",
        "-q",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let bytes = std::fs::read(&out).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().unwrap();
    let text = &reader.info().uncompressed_latin1_text[0];
    assert_eq!(text.keyword, "parameters");
    assert!(
        text.text.starts_with(
            "red apple\nSteps: 4, Sampler: DDIM, CFG scale: 3, Seed: 7, Size: 16x16, Model hash: "
        ),
        "{}",
        text.text
    );
    assert!(
        text.text
            .contains("Hires upscale: 4, Candidates: 4, Score: "),
        "{}",
        text.text
    );
}

#[test]
fn cli_bad_input_exits_2_and_leaves_no_file() {
    let dir = TempDir::new("cli-bad");
    let out: PathBuf = dir.path().join("x.png");
    let o = out.to_str().unwrap();
    let model = model_dir().to_str().unwrap();
    let cases: [(&[&str], &str); 10] = [
        (
            &[
                "apple",
                "--model",
                model,
                "--schedule",
                "40% k=two; rest",
                "-o",
                o,
            ],
            "candidates=two",
        ),
        (
            &[
                "apple",
                "--model",
                model,
                "--steps",
                "10",
                "--schedule",
                "4; 4",
                "-o",
                o,
            ],
            "cover 8 steps",
        ),
        (&["", "--model", model, "-o", o], "empty"),
        (&["a::-1", "--model", model, "-o", o], "positive"),
        (&["a::2x", "--model", model, "-o", o], "not a number"),
        (
            &["apple", "--model", model, "--size", "15x16", "-o", o],
            "multiples of",
        ),
        (
            &["apple", "--model", model, "--size", "65536x65536", "-o", o],
            "allows at most",
        ),
        (
            &["apple", "--model", model, "--steps", "0", "-o", o],
            "steps 0",
        ),
        (
            &["apple", "--model", model, "-o", "/nonexistent-dir/x.png"],
            "cannot write",
        ),
        (
            &["apple", "--model", "/nonexistent-model", "-o", o],
            "model folder not found",
        ),
    ];
    for (args, wanted) in cases {
        let (code, stderr) = easel(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(wanted),
            "{args:?}: expected `{wanted}` in: {stderr}"
        );
        assert_eq!(
            stderr
                .trim_end()
                .lines()
                .filter(|l| l.starts_with("easel:"))
                .count(),
            1,
            "{stderr}"
        );
        assert!(!out.exists(), "{args:?} left a file");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "{args:?} left {leftovers:?}");
    }
}

#[test]
fn trace_writes_a_contact_sheet_of_every_round() {
    let dir = TempDir::new("trace");
    let mut r = request("red apple", 9);
    r.score_every = Some(2);
    r.trace = Some(dir.path().join("trace.png"));
    let engine = engine();
    let before = engine.ctx.readback_count();
    engine.generate(&r).unwrap();
    // 3 rounds (after steps 2, 4, 6), each reading x0, scores and the choice.
    assert_eq!(engine.ctx.readback_count() - before, 1 + 3 * 3);
    let sheet = image::open(dir.path().join("trace.png")).unwrap();
    // A 36 px label column, 3 candidates of 16 px at 2x with 4 px padding; 3 rows,
    // each with 2 bars of 4 px and a 12 px line for the total's value.
    assert_eq!(sheet.width(), 36 + 3 * (32 + 8));
    assert_eq!(sheet.height(), 3 * (32 + 8 + 2 * 4 + 12));
    // The sheet carries the run's parameters and its legend.
    let file = std::fs::File::open(dir.path().join("trace.png")).unwrap();
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let text = &reader.info().uncompressed_latin1_text[0].text;
    assert!(
        text.starts_with("red apple\ntrace: one row per scoring round"),
        "{text}"
    );
    assert!(text.contains("Seed: 9"), "{text}");
}
