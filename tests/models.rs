//! Each model against PyTorch golden outputs (tools/make_golden.py): tiny
//! random-initialised diffusers / transformers models in tests/golden/, loaded
//! from their Hugging Face folders and run with the WGSL kernels.
//!
//! Tolerance: max |got - want| <= 1e-4 · max |want| (f32 throughout; the
//! error is relative to the output's scale, as the issue states).

mod common;

use std::path::{Path, PathBuf};

use common::{assert_close, ctx};
use easel::models::clip::{self, CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel};
use easel::models::layers::{check_all_used, open_component, Vars};
use easel::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use easel::models::upscaler::{SRVGGNetCompact, SRVGGNetCompactConfig};
use easel::models::vae::{self, AutoencoderKLConfig, AutoencoderKLDecoder};
use easel::models::Graph;
use easel::tensor::Tensor;
use easel::weights::SafetensorsFile;

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// A golden tensor: host values and shape.
fn golden(name: &str, key: &str) -> (Vec<f32>, Vec<usize>) {
    let file = SafetensorsFile::open(golden_dir(name).join("golden.safetensors")).unwrap();
    let shape = file
        .info(key)
        .unwrap_or_else(|| panic!("{name}: no `{key}`"))
        .shape;
    (file.to_f32(key).unwrap(), shape)
}

fn upload(name: &str, key: &str) -> Tensor {
    let (data, shape) = golden(name, key);
    Tensor::from_f32(ctx(), key, &shape, &data).unwrap()
}

fn upload_ids(name: &str) -> (Tensor, Vec<Vec<u32>>) {
    let (data, shape) = golden(name, "input_ids");
    let rows: Vec<Vec<u32>> = data
        .chunks(shape[1])
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect();
    let flat: Vec<u32> = rows.concat();
    (
        Tensor::from_u32(ctx(), "input_ids", &shape, &flat).unwrap(),
        rows,
    )
}

/// Compare with the 1e-4-of-scale tolerance.
fn check(what: &str, got: &Tensor, name: &str, key: &str) {
    let (want, shape) = golden(name, key);
    assert_eq!(got.shape, shape, "{what}: shape");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert_close(what, &got.to_vec(ctx()).unwrap(), &want, 1e-4 * scale, 0.0);
}

fn unet_matches(name: &str) {
    let dir = golden_dir(name);
    let (weights, config): (_, UNet2DConditionConfig) = open_component(&dir).unwrap();
    let unet = UNet2DConditionModel::new(&Vars::new(ctx(), &weights), config).unwrap();
    check_all_used(&weights, &[]).unwrap();
    let mut g = Graph::new(ctx(), "unet");
    let out = unet
        .forward(
            &mut g,
            &upload(name, "sample"),
            &upload(name, "timestep"),
            &upload(name, "encoder_hidden_states"),
        )
        .unwrap();
    g.run().unwrap();
    check(name, &out, name, "out");
}

#[test]
fn unet_sd1_style_matches_diffusers() {
    unet_matches("unet");
}

#[test]
fn unet_linear_projection_matches_diffusers() {
    unet_matches("unet_linear");
}

fn text_encoder_matches(name: &str, expect_prefix: &str) {
    let dir = golden_dir(name);
    let (mut weights, config): (_, CLIPTextConfig) = open_component(&dir).unwrap();
    weights.detect_prefix("text_model.");
    assert_eq!(weights.prefix(), expect_prefix);
    let model = CLIPTextModel::new(&Vars::new(ctx(), &weights), config).unwrap();
    check_all_used(&weights, clip::IGNORED).unwrap();
    let (ids, rows) = upload_ids(name);
    let eos = Tensor::from_u32(ctx(), "eos", &[rows.len()], &model.eos_positions(&rows)).unwrap();
    let mut g = Graph::new(ctx(), "text");
    let out = model.forward(&mut g, &ids, &eos).unwrap();
    g.run().unwrap();
    check(
        "last_hidden_state",
        &out.last_hidden_state,
        name,
        "last_hidden_state",
    );
    check("pooler_output", &out.pooler_output, name, "pooler_output");
}

#[test]
fn text_encoder_transformers5_layout_matches() {
    text_encoder_matches("text_encoder", "");
}

#[test]
fn text_encoder_transformers4_prefix_matches() {
    text_encoder_matches("text_encoder_v4", "text_model.");
}

#[test]
fn clip_model_matches_transformers() {
    let name = "clip";
    let (weights, config): (_, CLIPConfig) = open_component(&golden_dir(name)).unwrap();
    let model = CLIPModel::new(&Vars::new(ctx(), &weights), config).unwrap();
    check_all_used(&weights, clip::IGNORED).unwrap();
    let (ids, rows) = upload_ids(name);
    let eos = Tensor::from_u32(
        ctx(),
        "eos",
        &[rows.len()],
        &model.text_model.eos_positions(&rows),
    )
    .unwrap();
    let mut g = Graph::new(ctx(), "clip");
    // CLIPModel.forward returns unit-length embeddings.
    let text = model.text_embeds(&mut g, &ids, &eos).unwrap();
    let text = g.l2_normalize(&text).unwrap();
    let image = model
        .image_embeds(&mut g, &upload(name, "pixel_values"))
        .unwrap();
    let image = g.l2_normalize(&image).unwrap();
    g.run().unwrap();
    check("text_embeds", &text, name, "text_embeds");
    check("image_embeds", &image, name, "image_embeds");
}

#[test]
fn vae_decoder_matches_diffusers() {
    let name = "vae";
    let (weights, config): (_, AutoencoderKLConfig) = open_component(&golden_dir(name)).unwrap();
    let decoder = AutoencoderKLDecoder::new(&Vars::new(ctx(), &weights), config).unwrap();
    check_all_used(&weights, vae::UNUSED_PREFIXES).unwrap();
    let mut g = Graph::new(ctx(), "vae");
    let out = decoder.forward(&mut g, &upload(name, "latents")).unwrap();
    g.run().unwrap();
    check(name, &out, name, "out");
}

#[test]
fn upscaler_matches_pytorch() {
    let name = "upscaler";
    let (weights, config): (_, SRVGGNetCompactConfig) = open_component(&golden_dir(name)).unwrap();
    let model = SRVGGNetCompact::new(&Vars::new(ctx(), &weights), config).unwrap();
    check_all_used(&weights, &[]).unwrap();
    let mut g = Graph::new(ctx(), "upscaler");
    let out = model.forward(&mut g, &upload(name, "input")).unwrap();
    g.run().unwrap();
    check(name, &out, name, "out");
}

#[test]
fn config_and_tensors_that_disagree_name_the_tensor() {
    // The SD-1.x-style UNet's weights under the other UNet's config.
    let (weights, _): (_, UNet2DConditionConfig) = open_component(&golden_dir("unet")).unwrap();
    let (_, config): (_, UNet2DConditionConfig) =
        open_component(&golden_dir("unet_linear")).unwrap();
    let err = UNet2DConditionModel::new(&Vars::new(ctx(), &weights), config)
        .err()
        .expect("mismatch");
    let msg = err.to_string();
    assert_eq!(err.exit_code(), 2);
    assert!(msg.contains("diffusion_pytorch_model.safetensors"), "{msg}");
    assert!(
        msg.contains("tensor `") || msg.contains("no tensor"),
        "{msg}"
    );
}
