//! NaN and infinity never become a black PNG reported as success: a
//! non-finite input is refused before any GPU work (exit 2), a non-finite
//! weight when its file is read (exit 2), and arithmetic that overflows during
//! the run is caught by the loop's guard (wgsl/finite.wgsl) and reported with
//! its stage and step (exit 1).

mod common;

use common::files::{f32s, safetensors_bytes, TempDir};
use easel::weights::Weights;
use easel::{Engine, PipelineConfig, Request};

fn request(guidance: f32) -> Request {
    Request {
        guidance: Some(guidance),
        steps: Some(3),
        candidates: Some(1),
        upscale: Some(1),
        ..Request::new("red apple")
    }
}

#[test]
fn non_finite_settings_are_bad_input() {
    let model = PipelineConfig::read(common::files::tiny_pipeline()).unwrap();
    for (r, wanted) in [
        (request(f32::NAN), "guidance NaN: must be a finite number"),
        (
            request(f32::INFINITY),
            "guidance inf: must be a finite number",
        ),
        (
            Request {
                until_score: Some(f32::NAN),
                ..request(2.0)
            },
            "--until-score NaN",
        ),
    ] {
        let e = r.check(&model).err().expect("refused");
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains(wanted), "{e}");
    }
    // An infinite threshold means "never stop early", not an error.
    let never = Request {
        until_score: Some(f32::INFINITY),
        ..request(2.0)
    };
    assert!(never.check(&model).is_ok());
}

#[test]
fn a_non_finite_weight_is_refused_with_its_name() {
    let dir = TempDir::new("nan-weight");
    let values = [1.0, f32::NAN, 2.0];
    dir.write(
        "model.safetensors",
        safetensors_bytes(&[f32s("w", &[3], &values)]),
    );
    let weights = Weights::open_dir(dir.path()).unwrap();
    let e = weights.get_f32("w", &[3]).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    let message = e.to_string();
    assert!(
        message.contains("`w` holds a non-finite value (NaN) at index 1"),
        "{message}"
    );
}

#[test]
fn overflow_during_the_run_names_stage_and_step() {
    let engine =
        Engine::with_context(common::new_context(), common::files::tiny_pipeline()).unwrap();
    // Finite, so it passes the input check, but the guided noise overflows f32.
    let e = engine.generate(&request(3e38)).unwrap_err();
    assert_eq!(e.exit_code(), 1, "{e}");
    let message = e.to_string();
    assert!(
        message
            .contains("non-finite values (NaN or infinity) in the denoiser's samples after step"),
        "{message}"
    );
    // The same engine still makes a good image afterwards (the guard is reset per run).
    let image = engine.generate(&request(2.0)).unwrap();
    assert!(image.rgba.iter().any(|&b| b != 0 && b != 255));
    // With f16 activations the message says how to keep them in f32.
    let f16 = Request {
        precision: easel::memory_plan::Precision::F16,
        ..request(3e38)
    };
    let e = engine.generate(&f16).unwrap_err();
    assert!(
        e.to_string().contains("--precision f32 keeps them in f32"),
        "{e}"
    );
}
