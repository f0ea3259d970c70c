//! The `easel` binary end to end: exit codes (0 ok, 2 bad input, 3 no adapter),
//! one-line messages that name the path, and never a panic.

mod common;

use std::process::{Command, Output};

use common::binary::{self, stderr, stdout};
use common::files::{f16s, ramp, safetensors_bytes, TempDir};

/// Run `easel args` with wgpu's adapter variables cleared, so the test sees the
/// default choice whatever the caller's shell sets.
fn easel(args: &[&str]) -> Output {
    easel_with(args, &[])
}

fn easel_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = binary::command(args);
    command.envs(env.iter().copied());
    binary::output(&mut command)
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exit code, not a signal")
}

// --- devices ------------------------------------------------------------------------

#[test]
fn devices_names_the_adapter_it_picks() {
    let output = easel(&["devices"]);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("easel uses [") && out.contains("via"), "{out}");
    assert!(out.contains("max storage binding"), "{out}");
    assert!(out.contains("cooperative GEMM tile: "), "{out}");
    // A measured table, or `none` (no CPU driver's is built in).
    assert!(out.contains("measured GEMM kernels: "), "{out}");
    // Textures for weights on llvmpipe (auto), nowhere with `off`.
    let llvmpipe = out.contains("driver: llvmpipe");
    let textures = format!("weight textures: {}", if llvmpipe { "yes" } else { "no" });
    assert!(out.contains(&textures), "{out}");
    let off = stdout(&easel_with(
        &["devices"],
        &[("EASEL_WEIGHT_TEXTURES", "off")],
    ));
    assert!(
        off.contains("weight textures: no (EASEL_WEIGHT_TEXTURES=off)"),
        "{off}"
    );
    // Images staged for the subgroup convolutions: auto on llvmpipe before
    // Mesa 23 (lane by lane loads), always wherever weights are textures.
    let mesa22 = out
        .lines()
        .any(|l| l.contains("driver: llvmpipe") && l.contains("Mesa 22."));
    let images = format!("image textures: {}", if mesa22 { "yes" } else { "no" });
    assert!(out.contains(&images), "{out}");
    let always = stdout(&easel_with(
        &["devices"],
        &[("EASEL_IMAGE_TEXTURES", "always")],
    ));
    let expected = format!(
        "image textures: {} (EASEL_IMAGE_TEXTURES=always)",
        if llvmpipe { "yes" } else { "no" }
    );
    assert!(always.contains(&expected), "{always}");
}

#[test]
fn bad_kernel_policies_exit_2_before_drawing() {
    let dir = TempDir::new("cli-kernel-policy");
    let png = dir.path().join("out.png");
    let args = ["red apple", "--steps", "1", "-o", png.to_str().unwrap()];
    for name in [
        "EASEL_COOPERATIVE",
        "EASEL_WIDE_TILES",
        "EASEL_SPLIT_NORMS",
        "EASEL_WEIGHT_TEXTURES",
        "EASEL_IMAGE_TEXTURES",
    ] {
        let output = easel_with(&args, &[(name, "sometimes")]);
        assert_eq!(code(&output), 2, "stderr: {}", stderr(&output));
        let err = stderr(&output);
        assert!(err.contains(&format!("{name}=sometimes")), "{err}");
        assert!(err.contains("off, auto or always"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!png.exists(), "no output file");
    }
}

#[test]
fn devices_is_quiet_on_a_headless_machine() {
    // Mesa's device-select layer would print an XDG_RUNTIME_DIR error here.
    let mut command = Command::new(env!("CARGO_BIN_EXE_easel"));
    command
        .arg("devices")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("NODEVICE_SELECT");
    let output = command.output().unwrap();
    assert_eq!(code(&output), 0);
    let err = stderr(&output);
    assert!(!err.contains("XDG_RUNTIME_DIR"), "stderr: {err}");
}

#[cfg(target_os = "linux")]
#[test]
fn devices_without_an_adapter_exits_3_naming_the_driver() {
    // There is no DX12 on Linux: the same path as a machine with no Vulkan driver.
    let output = easel(&["devices", "--backend", "dx12"]);
    assert_eq!(code(&output), 3, "stderr: {}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("mesa-vulkan-drivers"), "{err}");
    assert!(err.contains("WGPU_BACKEND"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn unknown_backend_exits_2() {
    let output = easel(&["devices", "--backend", "nonsense"]);
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("unknown backend `nonsense`"));
}

#[test]
fn unknown_adapter_exits_3_listing_what_was_found() {
    let output = easel(&["devices", "--adapter", "no-such-gpu-anywhere"]);
    assert_eq!(code(&output), 3);
    assert!(stderr(&output).contains("no adapter name contains `no-such-gpu-anywhere`"));
}

#[test]
fn unknown_flag_exits_2() {
    // (An unknown word is a prompt: `easel "prompt"` is the default command.)
    assert_eq!(code(&easel(&["--frobnicate"])), 2);
    assert_eq!(code(&easel(&["devices", "--frobnicate"])), 2);
}

// --- inspect ------------------------------------------------------------------------

/// A tiny pipeline folder in the diffusers layout.
fn model_folder() -> TempDir {
    let dir = TempDir::new("cli-model");
    dir.write(
        "model_index.json",
        r#"{"_class_name": "EaselPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
            "text_encoder": ["transformers", "CLIPTextModel"], "safety_checker": [null, null]}"#,
    );
    dir.write(
        "unet/config.json",
        r#"{"in_channels": 3, "block_out_channels": [32, 64]}"#,
    );
    dir.write(
        "unet/diffusion_pytorch_model.safetensors",
        safetensors_bytes(&[
            ramp("conv_in.weight", &[32, 3, 3, 3]),
            ramp("conv_in.bias", &[32]),
        ]),
    );
    dir.write("text_encoder/config.json", r#"{"hidden_size": 8}"#);
    dir.write(
        "text_encoder/model.safetensors",
        safetensors_bytes(&[f16s("text_model.final_layer_norm.weight", &[8], &[1.0; 8])]),
    );
    dir.write("tokenizer/vocab.json", "{}");
    dir
}

#[test]
fn inspect_lists_configs_tensors_and_totals_without_a_gpu() {
    let dir = model_folder();
    // No adapter can be found with these settings: inspect must not need one.
    let output = easel_with(
        &["inspect", dir.path().to_str().unwrap()],
        &[
            ("WGPU_BACKEND", "dx12"),
            ("VK_ICD_FILENAMES", "/nonexistent.json"),
        ],
    );
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let out = stdout(&output);
    for expected in [
        "_class_name = \"EaselPipeline\"",
        "unet/",
        "in_channels = 3",
        "block_out_channels = [32,64]",
        "conv_in.weight",
        "[32, 3, 3, 3]",
        "text_model.final_layer_norm.weight",
        "F16",
        "every name starts with `text_model.`",
        "vocab.json",
        // 32*27 + 32 f32 + 8 f16 = 896 + 8 parameters, 3584 + 16 bytes.
        "total: 3 tensors, 3.5 KiB (3600 bytes), 904 parameters",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
}

#[test]
fn inspect_a_single_file() {
    let dir = model_folder();
    let file = dir.path().join("unet/diffusion_pytorch_model.safetensors");
    let output = easel(&["inspect", file.to_str().unwrap()]);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert!(stdout(&output).contains("2 tensors"));
}

#[test]
fn inspect_missing_folder_exits_2_naming_it() {
    let dir = TempDir::new("cli-missing");
    let missing = dir.path().join("no-model-here");
    let output = easel(&["inspect", missing.to_str().unwrap()]);
    assert_eq!(code(&output), 2);
    let err = stderr(&output);
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("no such"),
        "{err}"
    );
}

#[test]
fn inspect_corrupt_file_exits_2_naming_it() {
    let dir = model_folder();
    let bad = dir.write(
        "unet/diffusion_pytorch_model.safetensors",
        b"\x10\0\0\0\0\0\0\0{broken",
    );
    let output = easel(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(code(&output), 2);
    let err = stderr(&output);
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
    // The rest of the folder is still listed.
    assert!(stdout(&output).contains("text_model.final_layer_norm.weight"));
}

#[test]
fn inspect_component_without_weights_or_folder_exits_2() {
    let dir = model_folder();
    std::fs::remove_file(dir.path().join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::remove_dir_all(dir.path().join("text_encoder")).unwrap();
    let output = easel(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(code(&output), 2);
    let err = stderr(&output);
    assert!(err.contains("config.json but no .safetensors"), "{err}");
    assert!(err.contains("component `text_encoder`"), "{err}");
}

#[test]
fn inspect_partial_folder_lists_what_is_there() {
    // Only a tokenizer so far: listed, then reported as incomplete.
    let dir = TempDir::new("cli-partial");
    dir.write("tokenizer/vocab.json", "{}");
    dir.write("tokenizer/merges.txt", "#version: 0.2\n");
    let output = easel(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(code(&output), 2);
    assert!(stdout(&output).contains("merges.txt"));
    let err = stderr(&output);
    assert!(err.contains("no model_index.json"), "{err}");
    assert!(err.contains("no .safetensors weights"), "{err}");
}
