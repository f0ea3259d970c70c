//! Weight loading: good files round-trip to the GPU exactly; every kind of bad
//! file or mismatched name gives an error naming the file and the tensor.

mod common;

use common::files::{bf16s, f16s, f32s, i64s, ramp, safetensors_bytes, Entry, TempDir};
use easel::weights::{nearest, weight_files, Config, Weights, TEXT_MODEL_PREFIX};
use easel::Error;

const UNET_FILE: &str = "diffusion_pytorch_model.safetensors";

/// A folder with one diffusers weight file holding `entries`.
fn folder(tag: &str, entries: &[Entry]) -> TempDir {
    let dir = TempDir::new(tag);
    dir.write(UNET_FILE, safetensors_bytes(entries));
    dir
}

/// The error's one-line message, checked to be a model error (exit code 2).
fn model_error<T>(result: easel::Result<T>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e @ Error::Model { .. }) => {
            assert_eq!(e.exit_code(), 2);
            e.to_string()
        }
        Err(e) => panic!("expected Error::Model, got {e:?}"),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "`{message}` should mention `{part}`"
        );
    }
}

// --- good files ---------------------------------------------------------------

#[test]
fn f32_f16_bf16_round_trip_to_gpu_exactly() {
    let ctx = common::ctx();
    // Values exactly representable in each dtype, so the round trip is exact (atol 0).
    let f32_values = [0.1f32, -3.25, 1e-20, 7.0e5, std::f32::consts::PI, -0.0];
    let half_values = [0.5f32, -1.25, 3.0, 1024.0, 0.0, -0.0078125];
    let dir = folder(
        "roundtrip",
        &[
            f32s("conv_in.weight", &[2, 3], &f32_values),
            f16s("conv_in.bias", &[6], &half_values),
            bf16s("time_embedding.linear_1.weight", &[3, 2], &half_values),
        ],
    );
    let weights = Weights::open_dir(dir.path()).unwrap();
    assert_eq!(weights.len(), 3);
    let cases: [(&str, &[usize], &[f32]); 3] = [
        ("conv_in.weight", &[2, 3], &f32_values),
        ("conv_in.bias", &[6], &half_values),
        ("time_embedding.linear_1.weight", &[3, 2], &half_values),
    ];
    for (name, shape, want) in cases {
        let tensor = weights.get(ctx, name, shape).unwrap();
        assert_eq!(tensor.shape, shape);
        let got = tensor.to_vec(ctx).unwrap();
        let same_bits = got
            .iter()
            .zip(want)
            .all(|(g, w)| g.to_bits() == w.to_bits());
        assert!(same_bits, "{name}: got {got:?}, want {want:?}");
    }
    assert!(weights.unused().is_empty());
    weights.check_all_used().unwrap();
}

#[test]
fn info_reports_dtype_and_shape_without_marking_used() {
    let dir = folder("info", &[f16s("a", &[2, 2], &[1.0; 4])]);
    let weights = Weights::open_dir(dir.path()).unwrap();
    let info = weights.info("a").unwrap();
    assert_eq!(info.dtype, safetensors::Dtype::F16);
    assert_eq!(info.shape, [2, 2]);
    assert_eq!(info.bytes(), 8);
    assert_eq!(weights.unused(), ["a"]);
}

// --- corrupt files --------------------------------------------------------------

#[test]
fn truncated_file_is_an_error_naming_the_path() {
    let dir = TempDir::new("truncated");
    let bytes = safetensors_bytes(&[ramp("conv_in.weight", &[4, 4])]);
    let path = dir.write(UNET_FILE, &bytes[..bytes.len() - 5]);
    let message = model_error(Weights::open_dir(dir.path()));
    assert_mentions(&message, &[&path.display().to_string(), "truncated"]);
}

#[test]
fn file_shorter_than_the_length_field_is_an_error() {
    let dir = TempDir::new("tiny");
    let path = dir.write(UNET_FILE, b"abc");
    let message = model_error(Weights::open_dir(dir.path()));
    assert_mentions(&message, &[&path.display().to_string(), "too short"]);
}

#[test]
fn garbage_header_is_an_error_naming_the_path() {
    let dir = TempDir::new("garbage");
    let header = b"{not json at all";
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    let path = dir.write(UNET_FILE, &bytes);
    let message = model_error(Weights::open_dir(dir.path()));
    assert_mentions(&message, &[&path.display().to_string(), "header"]);
}

#[test]
fn header_length_past_end_of_file_is_an_error() {
    let dir = TempDir::new("pastend");
    let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let path = dir.write(UNET_FILE, &bytes);
    let message = model_error(Weights::open_dir(dir.path()));
    assert_mentions(
        &message,
        &[
            &path.display().to_string(),
            "header length 1000000",
            "past the end",
        ],
    );
}

#[test]
fn wrong_dtype_is_an_error_naming_tensor_and_dtype() {
    let dir = folder("dtype", &[i64s("position_ids", &[1, 3], &[0, 1, 2])]);
    let weights = Weights::open_dir(dir.path()).unwrap();
    let message = model_error(weights.get_f32("position_ids", &[1, 3]));
    assert_mentions(&message, &[UNET_FILE, "position_ids", "I64"]);
    // A dtype error leaves the tensor unused, so a model cannot half-load silently.
    assert_eq!(weights.unused(), ["position_ids"]);
}

// --- names and shapes -------------------------------------------------------------

#[test]
fn missing_tensor_names_the_nearest_match() {
    let dir = folder(
        "missing",
        &[
            ramp("down_blocks.0.resnets.0.conv1.weight", &[2]),
            ramp("down_blocks.0.resnets.0.conv2.weight", &[2]),
            ramp("conv_in.weight", &[2]),
        ],
    );
    let weights = Weights::open_dir(dir.path()).unwrap();
    let message = model_error(weights.get_f32("down_blocks.0.resnets.0.conv_1.weight", &[2]));
    assert_mentions(
        &message,
        &[
            UNET_FILE,
            "no tensor `down_blocks.0.resnets.0.conv_1.weight`",
            "nearest: `down_blocks.0.resnets.0.conv1.weight`",
        ],
    );
    // A doubled prefix (stable-diffusion.cpp #1425) points at the unprefixed name.
    let message = model_error(weights.get_f32("model.diffusion_model.conv_in.weight", &[2]));
    assert_mentions(&message, &["nearest: `conv_in.weight`"]);
}

#[test]
fn nearest_prefers_nested_names_then_edit_distance() {
    let names = [
        "text_model.encoder.layers.0.mlp.fc1.weight",
        "encoder.layers.1.mlp.fc1.weight",
    ];
    assert_eq!(
        nearest("encoder.layers.0.mlp.fc1.weight", names.iter().copied()),
        Some(names[0])
    );
    assert_eq!(nearest("x", std::iter::empty()), None);
}

#[test]
fn wrong_shape_names_expected_and_found() {
    let dir = folder("shape", &[ramp("conv_in.weight", &[4, 3])]);
    let weights = Weights::open_dir(dir.path()).unwrap();
    let message = model_error(weights.get_f32("conv_in.weight", &[3, 4]));
    assert_mentions(
        &message,
        &[
            UNET_FILE,
            "conv_in.weight",
            "expected shape [3, 4]",
            "found [4, 3]",
            "F32",
        ],
    );
}

#[test]
fn unused_tensors_are_listed_and_refused() {
    let dir = folder(
        "unused",
        &[
            ramp("conv_in.weight", &[2]),
            ramp("conv_in.bias", &[2]),
            ramp("extra.weight", &[1]),
        ],
    );
    let weights = Weights::open_dir(dir.path()).unwrap();
    assert_eq!(weights.get_f32("conv_in.weight", &[2]).unwrap(), [0.0, 1.0]);
    assert_eq!(weights.unused(), ["conv_in.bias", "extra.weight"]);
    let message = model_error(weights.check_all_used());
    assert_mentions(
        &message,
        &["2 tensor(s) not used", "conv_in.bias", "extra.weight"],
    );
}

#[test]
fn text_model_prefix_is_detected_when_every_name_has_it() {
    // transformers 4 / Stable Diffusion 1.x text_encoder/ layout.
    let dir = folder(
        "prefixed",
        &[
            ramp("text_model.embeddings.token_embedding.weight", &[3, 2]),
            ramp("text_model.final_layer_norm.weight", &[2]),
        ],
    );
    let mut weights = Weights::open_dir(dir.path()).unwrap();
    assert!(weights.detect_prefix(TEXT_MODEL_PREFIX));
    assert_eq!(weights.prefix(), "text_model.");
    assert!(weights.contains("final_layer_norm.weight"));
    let names: Vec<&str> = weights.names().collect();
    assert_eq!(
        names,
        [
            "embeddings.token_embedding.weight",
            "final_layer_norm.weight"
        ]
    );
    weights.get_f32("final_layer_norm.weight", &[2]).unwrap();
    assert_eq!(weights.unused(), ["embeddings.token_embedding.weight"]);
    // The error for a missing name says which rule was applied.
    let message = model_error(weights.get_f32("final_layer_norm.bias", &[2]));
    assert_mentions(
        &message,
        &[
            "text_model.final_layer_norm.bias",
            "prefix `text_model.` detected",
        ],
    );
}

#[test]
fn text_model_prefix_is_not_used_when_absent_or_mixed() {
    // transformers 5 layout: no prefix.
    let dir = folder(
        "unprefixed",
        &[ramp("embeddings.token_embedding.weight", &[3, 2])],
    );
    let mut weights = Weights::open_dir(dir.path()).unwrap();
    assert!(!weights.detect_prefix(TEXT_MODEL_PREFIX));
    assert_eq!(weights.prefix(), "");
    weights
        .get_f32("embeddings.token_embedding.weight", &[3, 2])
        .unwrap();
    // Mixed names (e.g. a CLIPModel with vision_model.*) are not stripped.
    let dir = folder(
        "mixed",
        &[
            ramp("text_model.final_layer_norm.weight", &[2]),
            ramp("logit_scale", &[1]),
        ],
    );
    let mut weights = Weights::open_dir(dir.path()).unwrap();
    assert!(!weights.detect_prefix(TEXT_MODEL_PREFIX));
    assert!(weights.contains("text_model.final_layer_norm.weight"));
}

// --- which files a folder loads ---------------------------------------------------

#[test]
fn folder_files_follow_the_hugging_face_names() {
    let dir = TempDir::new("files");
    assert_mentions(
        &model_error(weight_files(&dir.path().join("nope"))),
        &["no such folder"],
    );
    assert_mentions(&model_error(weight_files(dir.path())), &["no .safetensors"]);
    // transformers' single file.
    dir.write("model.safetensors", safetensors_bytes(&[ramp("a", &[1])]));
    assert_eq!(
        weight_files(dir.path()).unwrap(),
        [dir.path().join("model.safetensors")]
    );
    // A variant beside the standard name does not make it ambiguous.
    dir.write(
        "model.fp16.safetensors",
        safetensors_bytes(&[ramp("a", &[1])]),
    );
    assert_eq!(
        weight_files(dir.path()).unwrap(),
        [dir.path().join("model.safetensors")]
    );
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    dir.write("other.safetensors", safetensors_bytes(&[ramp("a", &[1])]));
    assert_mentions(
        &model_error(weight_files(dir.path())),
        &["ambiguous", "other.safetensors"],
    );
}

#[test]
fn sharded_checkpoint_loads_through_its_index() {
    let dir = TempDir::new("shards");
    dir.write(
        "model-00001-of-00002.safetensors",
        safetensors_bytes(&[ramp("a.weight", &[2])]),
    );
    dir.write(
        "model-00002-of-00002.safetensors",
        safetensors_bytes(&[ramp("b.weight", &[3])]),
    );
    dir.write(
        "model.safetensors.index.json",
        r#"{"metadata": {"total_size": 20}, "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors",
            "b.weight": "model-00002-of-00002.safetensors"}}"#,
    );
    let weights = Weights::open_dir(dir.path()).unwrap();
    assert_eq!(weights.files().len(), 2);
    assert_eq!(weights.get_f32("b.weight", &[3]).unwrap(), [0.0, 1.0, 2.0]);
    // The same name in two shards is refused.
    dir.write(
        "model-00002-of-00002.safetensors",
        safetensors_bytes(&[ramp("a.weight", &[2])]),
    );
    let message = model_error(Weights::open_dir(dir.path()));
    assert_mentions(
        &message,
        &["tensor `a.weight` is also in", "model-00001-of-00002"],
    );
}

// --- config.json ------------------------------------------------------------------

#[derive(serde::Deserialize, Debug)]
struct TinyConfig {
    in_channels: usize,
    /// diffusers' default.
    #[serde(default = "default_norm_groups")]
    norm_num_groups: usize,
}

fn default_norm_groups() -> usize {
    32
}

#[test]
fn config_fields_and_errors_name_file_and_field() {
    let dir = TempDir::new("config");
    let path = dir.write(
        "config.json",
        r#"{"in_channels": 3, "block_out_channels": [32, 64], "act_fn": "silu", "sample_size": null}"#,
    );
    let config = Config::read(&path).unwrap();
    assert_eq!(config.get::<usize>("in_channels").unwrap(), 3);
    assert_eq!(
        config.get::<Vec<usize>>("block_out_channels").unwrap(),
        [32, 64]
    );
    assert_eq!(config.get_or("sample_size", 64usize).unwrap(), 64);
    assert_eq!(config.get_or("layers_per_block", 2usize).unwrap(), 2);
    let path_text = path.display().to_string();
    let message = model_error(config.get::<usize>("out_channels"));
    assert_mentions(&message, &[&path_text, "missing field `out_channels`"]);
    let message = model_error(config.get::<usize>("act_fn"));
    assert_mentions(&message, &[&path_text, "field `act_fn`", "invalid type"]);
    let typed: TinyConfig = config.parse().unwrap();
    assert_eq!((typed.in_channels, typed.norm_num_groups), (3, 32));

    let bad = dir.write("bad.json", "{\"in_channels\": ");
    assert_mentions(
        &model_error(Config::read(&bad)),
        &["bad.json", "invalid JSON"],
    );
    let list = dir.write("list.json", "[1, 2]");
    assert_mentions(
        &model_error(Config::read(&list)),
        &["list.json", "JSON object"],
    );
}
