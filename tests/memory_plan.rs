//! The memory plan on the tiny latent pipeline (tests/golden/latent_pipeline):
//! activations reused by liveness hold fewer bytes than one buffer per
//! activation and give the same bytes, and the same seed gives the same bytes.

mod common;

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
