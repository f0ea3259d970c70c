//! `--weights auto|f32|f16` from the command line on the golden pipelines: each precision
//! is deterministic (same seed, same bytes); for the f16 golden files, expanding to f32
//! (`--weights f32`) gives the same bytes as keeping f16 (`auto`), since the packed read
//! is exact and every kernel accumulates in f32; and for an f32 copy whose weights lie
//! off the f16 grid, `--weights f16` (rounding at load) gives the f32 image within a
//! stated tolerance.
//!
//! Tolerance: rounding a weight to f16 changes it by at most 2^-11 (4.9e-4) relative;
//! through the layers and the sampler's steps that moves the image by a few levels of
//! 255 at most (measured on lavapipe: max 1 level, mean 0.014 latent / 0.033 pixel).
//! The bound allows 8 levels per channel and a mean of 1 level: loose enough for any
//! adapter's f32 rounding, tight enough that a wrong f16 unpack (a swapped half, a
//! wrong row) moves pixels by tens.

mod common;

use std::path::Path;

use common::binary::{easel, stderr};
use common::files::{
    copy_dir, f32s, safetensors_bytes, tiny_latent_pipeline, tiny_pipeline, TempDir,
};
use easel::weights::SafetensorsFile;

/// Runs the CLI on `model` with `--weights precision` and returns the RGBA bytes.
fn render(model: &Path, precision: &str, out: &TempDir, tag: &str) -> Vec<u8> {
    render_with(model, &["--weights", precision], out, tag)
}

/// Runs the CLI on `model` with `flags` and returns the RGBA bytes.
fn render_with(model: &Path, flags: &[&str], out: &TempDir, tag: &str) -> Vec<u8> {
    let precision = flags.join("-").replace(['/', '.'], "_");
    let file = out.path().join(format!("{tag}-{precision}.png"));
    let model = model.to_str().unwrap();
    let file_arg = file.to_str().unwrap();
    let args = [
        "red apple",
        "--model",
        model,
        "--seed",
        "11",
        "--steps",
        "4",
        "--candidates",
        "1",
        "--upscale",
        "1",
        "-q",
        "-o",
        file_arg,
    ];
    let output = easel(&[&args[..], flags].concat());
    assert!(
        output.status.success(),
        "{tag} {precision}: {}",
        stderr(&output)
    );
    image::open(&file).unwrap().to_rgba8().into_raw()
}

/// Max and mean absolute difference of two RGBA images, in levels of 255.
fn difference(a: &[u8], b: &[u8]) -> (u32, f64) {
    let diffs: Vec<u32> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| x.abs_diff(y) as u32)
        .collect();
    let max = diffs.iter().copied().max().unwrap();
    (max, diffs.iter().sum::<u32>() as f64 / diffs.len() as f64)
}

/// A copy of `model` with every weight file rewritten as f32, each value moved off the
/// f16 grid by a relative 2^-12 (half an f16 step) in a fixed +/- pattern, so that
/// `--weights f16` has to round every weight.
fn off_grid_f32_copy(model: &Path, out: &TempDir) -> std::path::PathBuf {
    let dir = out.path().join("f32-model");
    copy_dir(model, &dir);
    for part in std::fs::read_dir(&dir).unwrap() {
        let path = part.unwrap().path();
        for name in ["model.safetensors", "diffusion_pytorch_model.safetensors"] {
            let file = path.join(name);
            if !file.exists() {
                continue;
            }
            let st = SafetensorsFile::open(&file).unwrap();
            let entries: Vec<_> = st
                .names()
                .iter()
                .map(|n| {
                    let values: Vec<f32> = st
                        .to_f32(n)
                        .unwrap()
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v * (1.0 + if i % 2 == 0 { 2.44e-4 } else { -2.44e-4 }))
                        .collect();
                    f32s(n, &st.info(n).unwrap().shape, &values)
                })
                .collect();
            std::fs::write(&file, safetensors_bytes(&entries)).unwrap();
        }
    }
    dir
}

fn check_precisions(model: &Path, tag: &str) {
    let out = TempDir::new(tag);
    let f16_image = render(model, "auto", &out, tag);
    assert_eq!(
        f16_image,
        render(model, "auto", &out, tag),
        "{tag}: f16 twice"
    );
    assert_eq!(
        f16_image,
        render(model, "f32", &out, tag),
        "{tag}: f16 file expanded to f32"
    );

    let f32_model = off_grid_f32_copy(model, &out);
    let f32_image = render(&f32_model, "auto", &out, tag);
    assert_eq!(
        f32_image,
        render(&f32_model, "auto", &out, tag),
        "{tag}: f32 twice"
    );
    let rounded = render(&f32_model, "f16", &out, tag);
    assert_ne!(
        f32_image, f16_image,
        "{tag}: the off-grid copy must change the image"
    );
    let (max, mean) = difference(&f32_image, &rounded);
    eprintln!("{tag}: --weights f16 vs f32: max {max} levels, mean {mean:.3}");
    assert!(
        max <= 8 && mean <= 1.0,
        "{tag}: f16 weights moved pixels by max {max}, mean {mean}"
    );
}
#[test]
fn latent_pipeline_f16_weights_match_f32_within_tolerance() {
    check_precisions(tiny_latent_pipeline(), "latent");
}

#[test]
fn pixel_pipeline_f16_weights_match_f32_within_tolerance() {
    check_precisions(tiny_pipeline(), "pixel");
}

/// `--precision f16` (f16 activations in the UNet and the VAE decoder, and the
/// encoder for img2img) on the latent golden pipeline: the same bytes twice,
/// and the f32 image within the
/// `--weights f16` bound above (each layer's output rounded to f16, 2^-11
/// relative; measured on lavapipe: max 1 level, mean under 0.1). On a CPU
/// driver `auto` keeps f32 (the f16 weights notwithstanding): its bytes are
/// the f32 ones.
#[test]
fn f16_activations_match_f32_within_tolerance() {
    let model = tiny_latent_pipeline();
    let out = TempDir::new("activations");
    let f16 = render_with(model, &["--precision", "f16"], &out, "latent");
    assert_eq!(
        f16,
        render_with(model, &["--precision", "f16"], &out, "latent"),
        "f16 activations twice"
    );
    let f32 = render_with(model, &["--precision", "f32"], &out, "latent");
    let (max, mean) = difference(&f32, &f16);
    eprintln!("--precision f16 vs f32: max {max} levels, mean {mean:.3}");
    assert!(
        max <= 8 && mean <= 1.0,
        "f16 activations moved pixels by max {max}, mean {mean}"
    );
    // img2img: the VAE encoder runs in f16 too.
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/img2img/init.png");
    let init = ["--precision", "f16", "--init", init.to_str().unwrap()];
    let f16_start = render_with(model, &init, &out, "latent");
    assert_eq!(
        f16_start,
        render_with(model, &init, &out, "latent"),
        "img2img in f16 twice"
    );
    let f32_start = render_with(
        model,
        &[&["--precision", "f32"], &init[2..]].concat(),
        &out,
        "latent",
    );
    let (max, mean) = difference(&f32_start, &f16_start);
    eprintln!("img2img --precision f16 vs f32: max {max} levels, mean {mean:.3}");
    assert!(
        max <= 8 && mean <= 1.0,
        "img2img f16: max {max}, mean {mean}"
    );
    let context = common::new_context();
    if context.class == easel::gpu::AdapterClass::Cpu {
        let auto = render_with(model, &["--precision", "auto"], &out, "latent");
        assert_eq!(auto, f32, "auto keeps f32 on a CPU driver");
    }
}
