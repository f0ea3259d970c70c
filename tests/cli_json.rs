//! `easel --json`: a success prints every parameter that produced the image, a
//! failure prints `{"error", "exit_code"}` on stdout (and the message on stderr).

mod common;

use std::process::Output;

use common::binary::easel;
use common::files::{tiny_pipeline, TempDir};

fn json_line(output: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(out.lines().count(), 1, "one line on stdout: {out}");
    serde_json::from_str(out.trim()).expect("stdout is JSON")
}

#[test]
fn json_summary_has_every_parameter() {
    let dir = TempDir::new("cli-json");
    let out = dir.path().join("a.png");
    let model = tiny_pipeline().to_str().unwrap();
    let args = [
        "red apple:: table::0.5",
        "--model",
        model,
        "--steps",
        "2",
        "--candidates",
        "1",
        "--upscale",
        "1",
        "--seed",
        "7",
        "--sampler",
        "euler-a",
        "-o",
        out.to_str().unwrap(),
        "--json",
    ];
    let output = easel(&args);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    let j = json_line(&output);
    assert_eq!(j["prompt"], "red apple:: table::0.5", "{j}");
    assert_eq!(j["sampler"], "euler_a", "{j}");
    assert_eq!(j["sampler_a1111"], "Euler a", "{j}");
    assert_eq!(j["seed"], 7, "{j}");
    assert_eq!(j["steps_asked"], 2, "{j}");
    assert_eq!(j["candidates"], 1, "{j}");
    assert_eq!(j["upscale"], 1, "{j}");
    assert_eq!(j["width"], j["denoised_width"], "{j}");
    assert_eq!(j["file"], out.to_str().unwrap(), "{j}");
    let subs = j["sub_prompts"].as_array().expect("sub_prompts list");
    assert_eq!(subs.len(), 2, "{j}");
    assert_eq!(subs[0]["prompt"], "red apple", "{j}");
    assert_eq!(subs[1]["weight"], 0.5, "{j}");
    for key in ["guidance", "steps_run", "model", "seconds", "schedule"] {
        assert!(j.get(key).is_some(), "no {key}: {j}");
    }
    // The run held at least the UNet's weights at once (as stored: f16 or wider).
    let unet = std::fs::metadata(tiny_pipeline().join("unet/diffusion_pytorch_model.safetensors"))
        .expect("the tiny UNet's weights")
        .len();
    let peak = j["gpu_peak_bytes"].as_u64().expect("gpu_peak_bytes: bytes");
    assert!(
        peak > unet,
        "peak {peak} bytes, under the UNet's {unet}-byte file: {j}"
    );
    assert!(out.is_file());
}

#[test]
fn json_failure_is_an_error_object_and_exit_2() {
    let dir = TempDir::new("cli-json-bad");
    let out = dir.path().join("a.png");
    let output = easel(&["a:: ::", "-o", out.to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(2));
    let j = json_line(&output);
    assert_eq!(j["exit_code"], 2, "{j}");
    let message = j["error"].as_str().expect("error text");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains(message.lines().next().unwrap()), "{err}");
    assert!(!out.exists());
}
