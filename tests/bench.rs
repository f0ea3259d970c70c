//! `easel bench` end to end: every subcommand writes a JSON report with positive
//! figures (never asserting on speed), `--plot` writes an SVG, `--vs` sets two
//! reports side by side, and bad arguments exit 2 with one line.

mod common;

use std::path::Path;

use common::binary::easel;
use common::files::{tiny_pipeline, TempDir};
use serde_json::Value;

/// Run `easel args`, expect exit 0, and read the JSON report at `json`.
fn report(args: &[&str], json: &Path) -> Value {
    let output = easel(args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "easel {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn positive(v: &Value, field: &str) -> f64 {
    let x = v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"));
    assert!(x > 0.0 && x.is_finite(), "{field} = {x} in {v}");
    x
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn peak_reports_fma_and_copy_rates() {
    let dir = TempDir::new("bench-peak");
    let json = dir.path().join("peak.json");
    let doc = report(&["bench", "peak", "--json", path_str(&json)], &json);
    assert_eq!(doc["engine"], "easel");
    positive(&doc["peak"], "fma_gflops");
    positive(&doc["peak"], "copy_gbps");
    for row in doc["peak"]["rows"].as_array().unwrap() {
        positive(row, "median_ms");
    }
}

#[test]
fn quick_kernels_report_percent_of_peak_and_their_clock() {
    let dir = TempDir::new("bench-kernels");
    let json = dir.path().join("kernels.json");
    let doc = report(
        &["bench", "kernels", "--quick", "--json", path_str(&json)],
        &json,
    );
    let rows = doc["kernels"].as_array().unwrap();
    let families: Vec<&str> = rows.iter().map(|r| r["kernel"].as_str().unwrap()).collect();
    for family in [
        "matmul",
        "conv2d",
        "attention",
        "group_norm",
        "layer_norm",
        "elementwise",
    ] {
        assert!(families.contains(&family), "{family} missing: {families:?}");
    }
    for row in rows {
        positive(row, "median_ms");
        positive(row, "pct_of_peak");
        assert!(
            ["gpu-timestamps", "wall-clock"].contains(&row["clock"].as_str().unwrap()),
            "{row}"
        );
    }
    assert_eq!(doc["clock"], rows[0]["clock"]);
}

#[test]
fn wall_clock_fallback_is_labelled() {
    let dir = TempDir::new("bench-wall");
    let json = dir.path().join("kernels.json");
    let args = [
        "bench",
        "kernels",
        "--quick",
        "--wall-clock",
        "--json",
        path_str(&json),
    ];
    let doc = report(&args, &json);
    assert_eq!(doc["clock"], "wall-clock");
    assert!(doc["clock_label"]
        .as_str()
        .unwrap()
        .contains("submit overhead"));
    for row in doc["kernels"].as_array().unwrap() {
        assert_eq!(row["clock"], "wall-clock", "{row}");
    }
}

#[test]
fn vs_sets_two_reports_side_by_side() {
    let dir = TempDir::new("bench-vs");
    let first = dir.path().join("first.json");
    report(
        &[
            "bench",
            "kernels",
            "--quick",
            "matmul",
            "--json",
            path_str(&first),
        ],
        &first,
    );
    let output = easel(&[
        "bench",
        "kernels",
        "--quick",
        "matmul",
        "--vs",
        path_str(&first),
    ]);
    assert_eq!(output.status.code(), Some(0));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("easel vs easel") && out.contains("easel/easel"),
        "{out}"
    );
}

#[test]
fn generate_writes_scaling_json_and_svg() {
    let dir = TempDir::new("bench-generate");
    let json = dir.path().join("generate.json");
    let svg = dir.path().join("scaling.svg");
    let model = path_str(tiny_pipeline());
    let args = [
        "bench",
        "generate",
        "--model",
        model,
        "--steps",
        "1",
        "--candidates",
        "1,2",
        "--runs",
        "1",
        "--json",
        path_str(&json),
        "--plot",
        path_str(&svg),
    ];
    let doc = report(&args, &json);
    let rows = doc["generate"]["rows"].as_array().unwrap();
    // Two sizes (the tiny UNet's sample size and twice it) x two K.
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in rows {
        for field in [
            "median_ms",
            "images_per_s",
            "ms_per_step",
            "per_candidate_ratio",
            "gpu_peak_bytes",
        ] {
            positive(row, field);
        }
        positive(&row["phases"], "unet_ms");
        positive(&row["phases"], "text_ms");
    }
    assert!(
        rows[1]["gpu_peak_bytes"].as_u64() > rows[0]["gpu_peak_bytes"].as_u64(),
        "K = 2 holds more"
    );
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    assert_eq!(plot.matches("<polyline").count(), 4, "2 panels x 2 sizes");
}

/// A latent pipeline: the UNet on 4-channel latents and the VAE decoder, each
/// with its weights' bytes and one forward's peak (which holds the weights).
#[test]
fn models_run_latent_unets_and_the_vae_with_their_memory() {
    let dir = TempDir::new("bench-models-latent");
    let json = dir.path().join("models.json");
    let model = path_str(common::files::tiny_latent_pipeline());
    let args = [
        "bench",
        "models",
        "--model",
        model,
        "--batches",
        "1",
        "--json",
        path_str(&json),
    ];
    let doc = report(&args, &json);
    let rows = doc["models"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(names[..2], ["unet", "vae"], "{names:?}");
    for row in rows {
        let weights = row["weights_bytes"].as_u64().expect("weights_bytes");
        let peak = row["peak_bytes"].as_u64().expect("peak_bytes");
        assert!(weights > 0 && peak > weights, "{row}");
    }
}

/// The rows of `bench kernels --quick --model MODEL EXTRA..`.
fn model_kernel_rows(model: &Path, extra: &[&str]) -> Vec<Value> {
    let dir = TempDir::new("bench-kernels-model");
    let json = dir.path().join("kernels.json");
    let args = ["bench", "kernels", "--quick", "--model", path_str(model)];
    let tail = ["--json", path_str(&json)];
    let doc = report(&[&args[..], extra, &tail].concat(), &json);
    doc["kernels"].as_array().unwrap().clone()
}

/// `bench kernels --model`: the launches of the model's own UNet and VAE decoder.
#[test]
fn kernels_of_a_latent_model_are_its_own_launches() {
    let rows = model_kernel_rows(common::files::tiny_latent_pipeline(), &[]);
    for name in ["unet", "vae"] {
        assert!(
            rows.iter().any(|r| r["kernel"] == name),
            "no {name} rows: {rows:?}"
        );
    }
    assert!(rows
        .iter()
        .any(|r| r["entry"].as_str().unwrap().starts_with("conv2d")));
}

/// `bench kernels --model --variant all`: each GEMM and attention launch of
/// the model also on every other kernel (its own plan, pinned), beside
/// easel's choice (attention's tiled kernel for both GPU tiles).
#[test]
fn every_variant_times_the_models_own_gemm_launches() {
    let rows = model_kernel_rows(tiny_pipeline(), &["--variant", "all"]);
    let variant = |r: &Value| r["variant"].as_str().unwrap().to_string();
    let entry = |r: &Value| r["entry"].as_str().unwrap().to_string();
    let tiled = |r: &&Value| entry(r).contains("_gpu") || entry(r) == "attention::attention";
    assert!(rows.iter().any(|r| variant(r) == "easel"), "{rows:?}");
    for pinned in ["Gpu", "GpuWide"] {
        let on_it: Vec<&Value> = rows.iter().filter(|r| variant(r) == pinned).collect();
        assert!(!on_it.is_empty(), "no {pinned} rows");
        assert!(
            on_it.iter().any(|r| entry(r).contains("attention")),
            "{on_it:?}"
        );
        assert!(on_it.iter().all(tiled), "{on_it:?}");
    }
}

/// A pixel-space model (no `vae/`) times its UNet alone instead of failing.
#[test]
fn kernels_of_a_pixel_model_are_its_unet_launches() {
    let rows = model_kernel_rows(tiny_pipeline(), &[]);
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["kernel"] == "unet"),
        "{rows:?}"
    );
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let dir = TempDir::new("bench-bad");
    let missing = dir.path().join("missing.json");
    let model = path_str(tiny_pipeline());
    let cases: [&[&str]; 7] = [
        &["bench", "kernels", "--variant", "fastest"],
        &["bench", "kernels", "--model", model, "--variant", "tiled"],
        &["bench", "generate", "--model", model, "--candidates", "0,x"],
        &["bench", "generate", "--model", model, "--sizes", "32"],
        &[
            "bench",
            "generate",
            "--model",
            model,
            "--plot",
            "curves.png",
        ],
        &["bench", "models", "--batches", "1,,4"],
        &["bench", "peak", "--vs", path_str(&missing)],
    ];
    for args in cases {
        let output = easel(args);
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "easel {args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "easel {args:?}: {err}");
        assert!(err.starts_with("easel: "), "{err}");
    }
}
