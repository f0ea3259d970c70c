//! The memory plan on the tiny latent pipeline (tests/golden/latent_pipeline):
//! activations reused by liveness hold fewer bytes than one buffer per
//! activation and give the same bytes; the VAE decodes in tiles when the plan
//! says so (or `--vae-tiles` does), close to the whole decode; the same seed
//! gives the same bytes.

#[path = "reference/blend.rs"]
mod blend_reference;
mod common;

use blend_reference::{blend, Tile};
use common::binary::{easel, stderr};
use common::files::TempDir;

use easel::gpu::{DType, Tensor};
use easel::memory_plan::{Limits, MemoryPlan, Precision, DECODE_BUDGET};
use easel::models::attention::CrossContext;
use easel::models::pipeline::PipelineConfig;
use easel::models::vae_tiles::{Tiling, VaeTiles};
use easel::models::Graph;
use easel::{Engine, Image, Request};

fn engine(planned: bool) -> Engine {
    let mut ctx = common::new_context();
    if !planned {
        ctx.unplanned_activations_for_tests();
    }
    Engine::with_context(ctx, common::files::tiny_latent_pipeline()).expect("tiny latent pipeline")
}

fn request(seed: u64) -> Request {
    Request {
        seed,
        steps: Some(3),
        candidates: Some(2),
        upscale: Some(1),
        size: Some((32, 32)),
        ..Request::new("red apple")
    }
}

fn generate(engine: &Engine, seed: u64) -> Image {
    engine.generate(&request(seed)).expect("a tiny latent run")
}

/// The arena only changes where activations live, never what the kernels
/// compute, so the image is bit-identical (tolerance 0) and the peak drops.
#[test]
fn planned_activations_hold_fewer_bytes_and_give_the_same_image() {
    let (planned, unplanned) = (engine(true), engine(false));
    let a = generate(&planned, 5);
    let b = generate(&unplanned, 5);
    assert_eq!(
        a.rgba, b.rgba,
        "planned and unplanned activations: same bytes"
    );
    assert_eq!(a.candidate_scores, b.candidate_scores);
    assert!(
        a.gpu_peak_bytes < b.gpu_peak_bytes,
        "planned peak {} bytes, unplanned {}",
        a.gpu_peak_bytes,
        b.gpu_peak_bytes
    );
    eprintln!(
        "tiny latent pipeline 32x32, K=2: peak {} planned, {} unplanned",
        a.gpu_peak_bytes, b.gpu_peak_bytes
    );
    let again = generate(&planned, 5);
    assert_eq!(a.rgba, again.rgba, "same seed, same bytes");
    assert_ne!(
        a.rgba,
        generate(&planned, 6).rgba,
        "another seed, another image"
    );
}

/// Random latents `[2, 4, 16, 16]` for the tiny VAE, and the decoder.
fn latents(engine: &Engine) -> (Tensor, Vec<f32>) {
    let mut rng = common::Rng::new(40);
    let data: Vec<f32> = rng.vec(2 * 4 * 16 * 16).iter().map(|v| v * 0.5).collect();
    let t = Tensor::from_f32(&engine.ctx, "latents", &[2, 4, 16, 16], &data).unwrap();
    (t, data)
}

/// Decode `latents` whole or in tiles: the image and the graph's activation bytes.
fn decode(engine: &Engine, latents: &Tensor, tiling: Option<Tiling>) -> (Vec<f32>, u64) {
    let (ctx, vae) = (&engine.ctx, engine.pipeline.vae.as_ref().expect("a VAE"));
    let mut g = Graph::new(ctx, "vae");
    let image = match tiling {
        Some(t) => vae.decode_tiled(&mut g, latents, t),
        None => vae.decode(&mut g, latents),
    }
    .unwrap();
    g.run().unwrap();
    (image.to_vec(ctx).unwrap(), g.activation_bytes())
}

/// The tiled decode is the whole decode of each crop of the latents, blended
/// (tests/reference/blend.rs): 3x3 tiles of 8 latents overlapping by 4. Each
/// tile's pixels come from the same kernels either way, so the difference is
/// the blend's f32 rounding: 1e-5 absolute + 1e-4 relative.
#[test]
fn tiled_decode_is_the_blend_of_the_decoded_crops() {
    let engine = engine(true);
    let (latents, data) = latents(&engine);
    let tiling = Tiling::new(8);
    let spans = tiling.spans(16);
    assert_eq!(spans, [(0, 8), (4, 8), (8, 8)]);
    let ramp = |i: usize| {
        let before = if i > 0 {
            2 * (spans[i - 1].0 + 8 - spans[i].0)
        } else {
            0
        };
        let after = spans.get(i + 1).map_or(0, |n| 2 * (spans[i].0 + 8 - n.0));
        [before, after]
    };
    let mut crops = Vec::new();
    for (i, &(y0, _)) in spans.iter().enumerate() {
        for (j, &(x0, _)) in spans.iter().enumerate() {
            let crop: Vec<f32> = (0..2 * 4 * 8 * 8)
                .map(|k| {
                    let (plane, y, x) = (k / 64, k / 8 % 8, k % 8);
                    data[(plane * 16 + y0 + y) * 16 + x0 + x]
                })
                .collect();
            let t = Tensor::from_f32(&engine.ctx, "crop", &[2, 4, 8, 8], &crop).unwrap();
            let ([top, bottom], [left, right]) = (ramp(i), ramp(j));
            crops.push((
                decode(&engine, &t, None).0,
                [2 * y0, 2 * x0],
                [top, bottom, left, right],
            ));
        }
    }
    let tiles: Vec<Tile> = (crops.iter())
        .map(|(data, at, ramps)| Tile {
            data,
            shape: [2, 3, 16, 16],
            at: *at,
            ramps: *ramps,
        })
        .collect();
    let (tiled, tiled_bytes) = decode(&engine, &latents, Some(tiling));
    common::assert_close(
        "tiled decode",
        &tiled,
        &blend(&tiles, [2, 3, 32, 32]),
        1e-5,
        1e-4,
    );
    let (whole, whole_bytes) = decode(&engine, &latents, None);
    assert!(tiled_bytes < whole_bytes, "{tiled_bytes} vs {whole_bytes}");
    assert_eq!(
        decode(&engine, &latents, Some(tiling)).0,
        tiled,
        "same latents, same bytes"
    );
    // Tiles against the whole decode. On this random VAE (4 groups of 2-4
    // channels, mid-block attention over all 256 latents) a tile's norms and
    // attention see a very different image, unlike a trained VAE on smooth
    // latents: measured mean |diff| 0.115 of outputs in about [-1, 1]; bound 0.2.
    let diff = whole.iter().zip(&tiled).map(|(a, b)| (a - b).abs());
    let mean = diff.sum::<f32>() / whole.len() as f32;
    eprintln!(
        "tiled vs whole: mean |diff| {mean}; activations {tiled_bytes} vs {whole_bytes} bytes"
    );
    assert!(mean < 0.2, "tiled vs whole decode: mean |diff| {mean}");
}

/// The tiny latent pipeline's configs with Stable Diffusion 1.5's VAE widths.
fn sd_vae_config() -> PipelineConfig {
    let mut config = PipelineConfig::read(common::files::tiny_latent_pipeline()).unwrap();
    let vae = config.vae.as_mut().unwrap();
    vae.block_out_channels = vec![128, 256, 512, 512];
    vae.up_block_types = vec!["UpDecoderBlock2D".into(); 4];
    config
}

fn lavapipe() -> Limits {
    Limits {
        adapter: "llvmpipe".into(),
        binding: 134_217_728,
        budget: DECODE_BUDGET,
        cpu_driver: true,
        activations: DType::F32,
    }
}

/// SD-1.5 at 512x512 (64x64 latents) on lavapipe's binding limit: the whole
/// decode's `[1, 256, 512, 512]` (268 MB) does not fit, so `auto` picks
/// 256-pixel tiles; at 256x256 the whole decode fits; `off` is the error that
/// names the activation, its bytes, the limit and the flag.
#[test]
fn the_plan_tiles_the_decode_when_the_whole_would_not_fit() {
    let config = sd_vae_config();
    let vae = config.vae.as_ref();
    let plan = |latents, tiles| MemoryPlan::new(vae, 1, latents, tiles, &lavapipe());
    let at_512 = plan([64, 64], VaeTiles::Auto).unwrap();
    assert_eq!(at_512.vae_tiling, Some(Tiling::new(32)));
    assert_eq!(at_512.decode.unwrap().shape, [1, 256, 256, 256]);
    assert_eq!(plan([32, 32], VaeTiles::Auto).unwrap().vae_tiling, None);
    let forced = plan([32, 32], VaeTiles::Pixels(128)).unwrap();
    assert_eq!(forced.vae_tiling, Some(Tiling::new(16)));
    let e = plan([64, 64], VaeTiles::Off).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert_eq!(
        e.to_string(),
        "`the VAE decoder's activation at up_blocks.3 [1, 256, 512, 512]` needs 268435456 bytes \
         (268.4 MB) but llvmpipe allows at most 134217728 bytes (134.2 MB) per storage binding \
         (max_storage_buffer_binding_size); `--vae-tiles auto` decodes in tiles that fit"
    );
    let none = MemoryPlan::new(None, 4, [64, 64], VaeTiles::Off, &lavapipe()).unwrap();
    assert_eq!((none.decode, none.vae_tiling), (None, None));
}

/// With f16 activations (`--precision f16`) every decoder activation takes
/// half the bytes: SD-1.5's whole decode at 512x512 fits one binding
/// (`[1, 256, 512, 512]` is 134,217,728 bytes, lavapipe's limit), so only
/// lavapipe's attention bound still tiles it there.
#[test]
fn f16_activations_halve_the_planned_decode() {
    let config = sd_vae_config();
    let vae = config.vae.as_ref();
    let half = Limits {
        activations: DType::F16,
        ..lavapipe()
    };
    let f32_plan = MemoryPlan::new(vae, 1, [32, 32], VaeTiles::Off, &lavapipe()).unwrap();
    let f16_plan = MemoryPlan::new(vae, 1, [32, 32], VaeTiles::Off, &half).unwrap();
    let (a, b) = (f32_plan.decode.unwrap(), f16_plan.decode.unwrap());
    assert_eq!((a.shape, b.bytes * 2), (b.shape, a.bytes));
    assert_eq!(f16_plan.precision, DType::F16);
    let whole = MemoryPlan::new(vae, 1, [64, 64], VaeTiles::Off, &half).unwrap();
    assert_eq!(whole.decode.unwrap().bytes, 134_217_728);
    let gpu = Limits {
        cpu_driver: false,
        ..half.clone()
    };
    let auto = |limits| MemoryPlan::new(vae, 1, [64, 64], VaeTiles::Auto, limits).unwrap();
    assert_eq!(auto(&gpu).vae_tiling, None);
    assert_eq!(auto(&half).vae_tiling, Some(Tiling::new(32)));
}

/// A run with f16 activations holds fewer bytes at its peak than at f32, and
/// gives the same bytes twice.
#[test]
fn f16_activations_lower_the_peak() {
    let engine = engine(true);
    let run = |precision| {
        engine
            .generate(&Request {
                precision,
                ..request(5)
            })
            .unwrap()
    };
    let (wide, half) = (run(Precision::F32), run(Precision::F16));
    assert_eq!(half.rgba, run(Precision::F16).rgba, "same seed, same bytes");
    assert!(
        half.gpu_peak_bytes < wide.gpu_peak_bytes,
        "f16 peak {} vs f32 {}",
        half.gpu_peak_bytes,
        wide.gpu_peak_bytes
    );
    eprintln!(
        "peak: f32 {} B, f16 {} B",
        wide.gpu_peak_bytes, half.gpu_peak_bytes
    );
}

/// `--precision` on the binary: a value other than auto, f32 or f16 exits 2
/// with a one-line message and writes nothing.
#[test]
fn precision_flag_rejects_unknown_values() {
    let dir = TempDir::new("precision");
    let model = common::files::tiny_latent_pipeline().to_str().unwrap();
    let out = dir.path().join("bad.png");
    let args = ["red apple", "--model", model, "--precision", "f8", "-o"];
    let output = easel(&[&args[..], &[out.to_str().unwrap()]].concat());
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--precision f8: expected auto, f32 or f16"),
        "{}",
        stderr(&output)
    );
    assert!(!out.exists());
}

/// `--vae-tiles N` end to end: tiles decode on the GPU, the same seed gives
/// the same bytes, and tiles that are not whole latents are bad input.
#[test]
fn vae_tiles_from_a_request() {
    let engine = engine(true);
    let tiled = |tiles| Request {
        vae_tiles: tiles,
        ..request(9)
    };
    let a = engine.generate(&tiled(VaeTiles::Pixels(16))).unwrap();
    let b = engine.generate(&tiled(VaeTiles::Pixels(16))).unwrap();
    assert_eq!(a.rgba, b.rgba, "same seed, same bytes");
    assert_eq!((a.width, a.height), (32, 32));
    for bad in [6, 15] {
        let e = engine.generate(&tiled(VaeTiles::Pixels(bad))).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().starts_with(&format!("--vae-tiles {bad}: ")),
            "{e}"
        );
    }
}

/// `--vae-tiles` on the binary: N decodes in tiles and writes the image; a
/// value that is not auto, off or a positive number, or tiles that are not
/// whole latents, exit 2 with a one-line message and write nothing.
#[test]
fn vae_tiles_flag() {
    let dir = TempDir::new("vae-tiles");
    let model = common::files::tiny_latent_pipeline().to_str().unwrap();
    let run = |tiles: &str, name: &str| {
        let out = dir.path().join(name);
        let mut args = vec![
            "red apple",
            "--model",
            model,
            "--steps",
            "1",
            "--size",
            "32x32",
        ];
        args.extend(["--candidates", "1", "--upscale", "1", "--vae-tiles", tiles]);
        args.extend(["-o", out.to_str().unwrap()]);
        (easel(&args), out)
    };
    let (output, out) = run("16", "tiled.png");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(out.is_file());
    for (tiles, message) in [
        ("0", "auto, off, or a tile's side in pixels"),
        ("huge", "auto, off, or a tile's side in pixels"),
        (
            "6",
            "--vae-tiles 6: a tile's side must be a multiple of the VAE's 2 pixels",
        ),
    ] {
        let (output, out) = run(tiles, "bad.png");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{tiles}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(message),
            "{tiles}: {}",
            stderr(&output)
        );
        assert!(!out.exists(), "{tiles}: no output file");
    }
}

/// One UNet forward of the tiny latent pipeline at batch 2 over 16x16 latents:
/// the output and the number of dispatches.
fn unet_forward(engine: &Engine) -> (Vec<f32>, usize) {
    let (ctx, unet) = (&engine.ctx, &engine.pipeline.unet);
    let mut rng = common::Rng::new(41);
    let sample = Tensor::from_f32(ctx, "sample", &[2, 4, 16, 16], &rng.vec(2 * 4 * 256)).unwrap();
    let t = Tensor::from_f32(ctx, "t", &[2], &[900.0, 120.0]).unwrap();
    let cross = unet.config.cross_attention_dim;
    let context = Tensor::from_f32(ctx, "ctx", &[2, 77, cross], &rng.vec(2 * 77 * cross)).unwrap();
    let context = CrossContext::Hidden(context);
    let mut g = Graph::new(ctx, "unet");
    let out = unet.forward(&mut g, &sample, &t, &context).unwrap();
    g.run().unwrap();
    (out.to_vec(ctx).unwrap(), g.dispatches.len())
}

/// The transformer feed-forward runs in row chunks where its `[rows, 4·dim]`
/// intermediate exceeds the chunk size (SD-1.5 at 1024x1024 on a 128 MiB
/// binding): rows are independent, so the chunked UNet gives the same bits
/// (tolerance 0), with two launches per chunk (net.0.proj with GEGLU in its
/// store, net.2) instead of two per block.
#[test]
fn chunked_feed_forward_gives_the_same_bits() {
    let whole = engine(true);
    let mut ctx = common::new_context();
    ctx.chunk_activations_for_tests(4096);
    let chunked = Engine::with_context(ctx, common::files::tiny_latent_pipeline()).unwrap();
    let (a, launches) = unet_forward(&whole);
    let (b, chunked_launches) = unet_forward(&chunked);
    assert!(
        chunked_launches > launches + 6,
        "{chunked_launches} launches chunked, {launches} whole: nothing was chunked"
    );
    let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same, "chunked feed-forward changed the UNet's output");
}

/// Graphs that share an arena (a run's passes, which never run at once): one
/// graph's dead activation is taken by the next graph, while a value one graph
/// writes and another reads (the conditioning every UNet pass reads) is never
/// reused, even after every handle to it is gone. Both graphs run and give
/// the values written.
#[test]
fn graphs_sharing_an_arena_reuse_only_their_own_dead_activations() {
    let ctx = common::new_context();
    let arena = easel::models::arena::Arena::shared(&ctx);
    let x = Tensor::from_f32(&ctx, "x", &[4, 64], &[1.0; 256]).unwrap();
    let mut a = Graph::in_arena(&ctx, "a", &arena);
    let inner = a.scale(&x, 2.0, 0.0).unwrap(); // 2: a's own, dead below
    let passed = a.scale(&inner, 1.5, 0.0).unwrap(); // 3: read by b
                                                     // Addresses, not handles: a handle would keep the buffer alive.
    let inner_buffer = std::sync::Arc::as_ptr(&inner.buffer);
    drop(inner);
    let mut b = Graph::in_arena(&ctx, "b", &arena);
    let sum = b.add(&passed, &passed).unwrap(); // 6
    let passed_buffer = std::sync::Arc::as_ptr(&passed.buffer);
    drop(passed);
    let out = b.scale(&sum, 1.0, 1.0).unwrap(); // 7
    let spare = b.tensor(&[4, 64]).unwrap();
    assert_eq!(
        std::sync::Arc::as_ptr(&sum.buffer),
        inner_buffer,
        "b's first activation should take a's dead one"
    );
    for t in [&out, &spare] {
        let reused = std::sync::Arc::as_ptr(&t.buffer) == passed_buffer;
        assert!(!reused, "a value passed from a to b was reused");
    }
    a.run().unwrap();
    b.run().unwrap();
    assert!(out.to_vec(&ctx).unwrap().iter().all(|&v| v == 7.0));
}

/// A value passed between two graphs that took a buffer a third graph used is
/// what sharing cannot make safe (the third may run while the value waits):
/// the plan is refused before anything runs.
#[test]
fn a_value_passed_in_another_graphs_buffer_is_refused() {
    let ctx = common::new_context();
    let arena = easel::models::arena::Arena::shared(&ctx);
    easel::models::arena::check_shared(&arena).unwrap();
    let x = Tensor::from_f32(&ctx, "x", &[4, 64], &[1.0; 256]).unwrap();
    let mut a = Graph::in_arena(&ctx, "a", &arena);
    drop(a.scale(&x, 2.0, 0.0).unwrap()); // a's own, dead
    let mut b = Graph::in_arena(&ctx, "b", &arena);
    let passed = b.scale(&x, 3.0, 0.0).unwrap(); // takes a's buffer
    let mut c = Graph::in_arena(&ctx, "c", &arena);
    c.add(&passed, &passed).unwrap(); // b -> c
    let err = easel::models::arena::check_shared(&arena).unwrap_err();
    assert!(err.to_string().contains("memory plan"), "{err}");
}

/// Token tables kept in host memory (SD's 49,408 rows; here every table, by a
/// test bound) give the same image as tables on the GPU: the run gathers the
/// same rows before uploading them, for the text encoder and the scorer.
#[test]
fn host_token_tables_give_the_same_image() {
    let on_gpu = engine(true).generate(&request(13)).unwrap();
    let mut ctx = common::new_context();
    ctx.host_tables_for_tests(0);
    let host = Engine::with_context(ctx, common::files::tiny_latent_pipeline()).unwrap();
    let on_host = host.generate(&request(13)).unwrap();
    assert_eq!(
        on_host.rgba, on_gpu.rgba,
        "host token tables changed the image"
    );
    assert!(
        on_host.gpu_peak_bytes < on_gpu.gpu_peak_bytes,
        "the tables left the GPU: {} vs {} bytes",
        on_host.gpu_peak_bytes,
        on_gpu.gpu_peak_bytes
    );
}

/// A tensor no free buffer holds takes the largest dead one and grows it
/// (buffers are made at their final size when the plan is finished), so a
/// late large activation adds its difference, not its size.
#[test]
fn a_late_large_activation_grows_a_dead_buffer() {
    let ctx = common::new_context();
    let x = Tensor::from_f32(&ctx, "x", &[4, 64], &[1.0; 256]).unwrap();
    let mut g = Graph::new(&ctx, "grow");
    let small = g.scale(&x, 2.0, 0.0).unwrap(); // [4, 64]
    let small_buffer = std::sync::Arc::as_ptr(&small.buffer);
    let wide = g.tensor(&[16, 64]).unwrap(); // small is alive: a buffer of its own
    drop(small);
    let large = g.tensor(&[64, 64]).unwrap(); // small's buffer, grown
    assert_eq!(std::sync::Arc::as_ptr(&large.buffer), small_buffer);
    assert_eq!(g.activation_bytes(), (64 * 64 + 16 * 64) * 4);
    drop(wide);
    g.push(
        easel::ops::elementwise::unary(
            &ctx,
            &x.reshape(&[4, 64]).unwrap(),
            &large.reshape(&[64, 64]).unwrap().rows(0, 4).unwrap(),
            easel::ops::elementwise::Activation::Identity,
            3.0,
            0.0,
        )
        .unwrap(),
    );
    g.make_buffers();
    assert_eq!(large.buffer.size(), 64 * 64 * 4);
    g.run().unwrap();
    let got = large.rows(0, 4).unwrap().to_vec(&ctx).unwrap();
    assert!(
        got.iter().all(|&v| v == 3.0),
        "the grown buffer holds the values written"
    );
}

/// An activation of a run that passes the binding limit is an error naming
/// what would help, `--precision f16` included where the activations are f32
/// and the adapter stores f16.
#[test]
fn a_run_too_large_says_what_helps() {
    let mut ctx = common::new_context();
    ctx.limit_bindings_for_tests(256 << 10);
    let f16 = ctx.has_f16_activations();
    let engine = Engine::with_context(ctx, common::files::tiny_latent_pipeline()).unwrap();
    let large = Request {
        size: Some((128, 128)),
        ..request(3)
    };
    let e = engine.generate(&large).unwrap_err();
    let message = e.to_string();
    assert_eq!(e.exit_code(), 2, "{message}");
    assert!(
        message.contains("fewer --candidates needs less"),
        "{message}"
    );
    assert_eq!(message.contains("--precision f16 halves"), f16, "{message}");
}
