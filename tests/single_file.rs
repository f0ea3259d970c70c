//! Single-file Stable Diffusion checkpoints (`--model FILE.safetensors`):
//! tests/golden/single_file/tiny_sd1.safetensors is the tiny latent pipeline
//! written in the original layout by tools/make_single_file.py (which checks
//! that diffusers' own loader reads it back exactly). It must give the folder's
//! images bit for bit, in its SD 1.x layout and rewritten in SD 2.x's OpenCLIP
//! layout; configs are inferred from shapes; a missing, misshapen or extra
//! tensor is named; a pickle is refused unread.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::binary::{easel, stderr};
use common::files::{safetensors_bytes, Entry, TempDir};
use easel::models::single_file::{infer, ModelOptions, Version};
use easel::schedulers::PredictionType;
use easel::weights::SafetensorsFile;
use easel::{Engine, PipelineConfig, Request};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/single_file/tiny_sd1.safetensors")
}

fn tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/easel-emoji/clip_tokenizer")
}

/// The tiny pipeline's settings (32 norm groups and 8 heads, which SD's releases
/// fix and no shape holds, do not fit a model this small): diffusers' `config=`.
fn options() -> ModelOptions {
    ModelOptions {
        tokenizer: Some(tokenizer()),
        prediction: None,
        config: Some(common::files::tiny_latent_pipeline().to_path_buf()),
    }
}

fn request(prompt: &str, seed: u64) -> Request {
    Request {
        seed,
        steps: Some(6),
        candidates: Some(1),
        upscale: Some(1),
        ..Request::new(prompt)
    }
}

/// The image of `request` from the folder and from `file`.
fn both(file: &Path, request: &Request) -> (Vec<u8>, Vec<u8>) {
    let folder = Engine::with_context(common::new_context(), common::files::tiny_latent_pipeline());
    let config = PipelineConfig::open(file, &options()).unwrap();
    let single = Engine::load(common::new_context(), config).unwrap();
    let a = folder.unwrap().generate(request).unwrap();
    let b = single.generate(request).unwrap();
    (a.rgba, b.rgba)
}

#[test]
fn the_single_file_draws_the_folders_image_bit_for_bit() {
    let (folder, single) = both(&golden(), &request("red apple:: pear::", 5));
    assert_eq!(folder, single, "same seed, same bytes");
}

/// A single-file dedicated inpainting model (`input_blocks.0.0` reads 9
/// channels: the tiny inpainting UNet's `conv_in`) draws the folder's image
/// bit for bit, from a picture and a mask; its VAE encoder comes from the file.
#[test]
fn a_single_file_inpainting_model_draws_the_folders_image() {
    let dir = TempDir::new("inpainting-single");
    let folder = common::files::tiny_inpainting_pipeline();
    let unet = SafetensorsFile::open(folder.join("unet/diffusion_pytorch_model.safetensors"));
    let conv_in = unet.unwrap().to_f32("conv_in.weight").unwrap(); // [8, 9, 3, 3]
    let name = "model.diffusion_model.input_blocks.0.0.weight";
    let widened = common::files::f16s(name, &[8, 9, 3, 3], &conv_in);
    let entries = rewrite(&golden(), |n| (n != name).then(|| n.into()), vec![widened]);
    let file = dir.write("inpainting.safetensors", safetensors_bytes(&entries));
    let options = ModelOptions {
        config: Some(folder.to_path_buf()),
        ..options()
    };
    let config = PipelineConfig::open(&file, &options).unwrap();
    assert_eq!(config.unet.in_channels, 9);
    let pictures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/img2img");
    let start = easel::Start::open(&pictures.join("init.png"), 1.0).unwrap();
    let start = start.with_mask(&pictures.join("mask.png"), 0.0).unwrap();
    let request = Request {
        start: Some(start),
        ..request("red apple", 3)
    };
    let single = Engine::load(common::new_context(), config).unwrap();
    let folder = Engine::with_context(common::new_context(), folder).unwrap();
    let (a, b) = (
        folder.generate(&request).unwrap(),
        single.generate(&request).unwrap(),
    );
    assert_eq!(a.rgba, b.rgba, "same seed, same bytes");
}

/// The tensors of `file`, renamed (or dropped) by `rename`, plus `extra`.
fn rewrite(file: &Path, rename: impl Fn(&str) -> Option<String>, extra: Vec<Entry>) -> Vec<Entry> {
    let file = SafetensorsFile::open(file).unwrap();
    let mut entries: Vec<Entry> = file
        .names()
        .iter()
        .filter_map(|name| {
            let info = file.info(name).unwrap();
            let values = file.to_f32(name).ok()?;
            let mut entry = common::files::f32s(&rename(name)?, &info.shape, &values);
            if info.dtype == safetensors::Dtype::F16 {
                entry = common::files::f16s(&entry.name, &info.shape, &values);
            }
            Some(entry)
        })
        .collect();
    entries.extend(extra);
    entries
}

/// The golden's SD 1.x text encoder as SD 2.x files store OpenCLIP's: `resblocks`,
/// q, k, v fused into `in_proj`, plus a last block and a projection SD 2.x
/// does not use (diffusers' `convert_open_clip_checkpoint`, inverted).
fn open_clip_layout(dir: &TempDir) -> PathBuf {
    let clip = "cond_stage_model.transformer.text_model.";
    let file = SafetensorsFile::open(golden()).unwrap();
    let tensor = |name: &str| file.to_f32(&format!("{clip}{name}")).unwrap();
    let shape = |name: &str| file.info(&format!("{clip}{name}")).unwrap().shape;
    let table = [
        (
            "embeddings.token_embedding.weight",
            "token_embedding.weight",
        ),
        (
            "embeddings.position_embedding.weight",
            "positional_embedding",
        ),
        ("final_layer_norm.weight", "ln_final.weight"),
        ("final_layer_norm.bias", "ln_final.bias"),
    ];
    let block = [
        ("layer_norm1", "ln_1"),
        ("layer_norm2", "ln_2"),
        ("mlp.fc1", "mlp.c_fc"),
        ("mlp.fc2", "mlp.c_proj"),
        ("self_attn.out_proj", "attn.out_proj"),
    ];
    let open = |name: &str| format!("cond_stage_model.model.{name}");
    let mut extra = Vec::new();
    for (new, old) in table {
        extra.push(common::files::f16s(&open(old), &shape(new), &tensor(new)));
    }
    // Block 1 is the unused last block: a copy of block 0.
    for (i, from) in [(0, 0), (1, 0)] {
        let (src, dst) = (
            format!("encoder.layers.{from}."),
            format!("transformer.resblocks.{i}."),
        );
        for (new, old) in block {
            for leaf in ["weight", "bias"] {
                let name = format!("{src}{new}.{leaf}");
                let to = open(&format!("{dst}{old}.{leaf}"));
                extra.push(common::files::f16s(&to, &shape(&name), &tensor(&name)));
            }
        }
        for leaf in ["weight", "bias"] {
            let parts: Vec<f32> = ["q", "k", "v"]
                .iter()
                .flat_map(|p| tensor(&format!("{src}self_attn.{p}_proj.{leaf}")))
                .collect();
            let mut shape = shape(&format!("{src}self_attn.q_proj.{leaf}"));
            shape[0] *= 3;
            extra.push(common::files::f16s(
                &open(&format!("{dst}attn.in_proj_{leaf}")),
                &shape,
                &parts,
            ));
        }
    }
    let hidden = shape("final_layer_norm.weight")[0];
    extra.push(common::files::f32s(
        &open("text_projection"),
        &[hidden, hidden],
        &vec![0.5; hidden * hidden],
    ));
    let entries = rewrite(
        &golden(),
        |n| (!n.starts_with("cond_stage_model.")).then(|| n.into()),
        extra,
    );
    dir.write("tiny_sd2.safetensors", safetensors_bytes(&entries))
}

#[test]
fn the_open_clip_layout_draws_the_same_image() {
    let dir = TempDir::new("sd2");
    let file = open_clip_layout(&dir);
    let sf = SafetensorsFile::open(&file).unwrap();
    assert_eq!(Version::detect(&sf).unwrap(), Version::V2);
    let (folder, single) = both(&file, &request("red apple", 9));
    assert_eq!(folder, single, "same tensors through the OpenCLIP names");
}

/// What the shapes say: everything diffusers reads from the yaml but the
/// settings SD's releases fix (norm groups, heads).
#[test]
fn configs_are_inferred_from_shapes() {
    let file = SafetensorsFile::open(golden()).unwrap();
    assert_eq!(Version::detect(&file).unwrap(), Version::V1);
    let unet = infer::unet(&file, Version::V1, false).unwrap();
    let folder: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::files::tiny_latent_pipeline().join("unet/config.json"))
            .unwrap(),
    )
    .unwrap();
    for field in [
        "in_channels",
        "out_channels",
        "block_out_channels",
        "layers_per_block",
        "cross_attention_dim",
        "down_block_types",
        "up_block_types",
        "use_linear_projection",
        "transformer_layers_per_block",
    ] {
        assert_eq!(unet[field], folder[field], "unet {field}");
    }
    assert_eq!(
        unet["attention_head_dim"], 8,
        "v1-inference.yaml: num_heads 8"
    );
    let vae = infer::vae(&file).unwrap();
    assert_eq!(vae["block_out_channels"], serde_json::json!([8, 16]));
    assert_eq!(
        (
            vae["layers_per_block"].clone(),
            vae["latent_channels"].clone()
        ),
        (1.into(), 4.into())
    );
    let text = infer::text_encoder(&file, Version::V1).unwrap();
    assert_eq!(text["hidden_size"], 8);
    assert_eq!(text["num_hidden_layers"], 1);
    assert_eq!(text["vocab_size"], 49408);
    assert_eq!(text["hidden_act"], "quick_gelu");
    // Inferred for real: SD's 32 groups do not divide this tiny model's 8 channels.
    let e = PipelineConfig::open(&golden(), &ModelOptions::default()).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("norm_num_groups"), "{e}");
}

#[test]
fn prediction_comes_from_the_flag_then_the_metadata() {
    let dir = TempDir::new("prediction");
    let entries = rewrite(&golden(), |n| Some(n.into()), vec![]);
    let views = entries.iter().map(|e| {
        let view =
            safetensors::tensor::TensorView::new(e.dtype, e.shape.clone(), &e.bytes).unwrap();
        (e.name.clone(), view)
    });
    let meta = HashMap::from([("modelspec.prediction_type".to_string(), "v".to_string())]);
    let path = dir.write(
        "v.safetensors",
        safetensors::serialize(views, Some(meta)).unwrap(),
    );
    let read = |prediction| {
        let options = ModelOptions {
            prediction,
            ..options()
        };
        PipelineConfig::open(&path, &options)
            .unwrap()
            .scheduler
            .prediction_type
    };
    assert_eq!(
        read(None),
        PredictionType::VPrediction,
        "modelspec.prediction_type"
    );
    assert_eq!(
        read(Some(PredictionType::Epsilon)),
        PredictionType::Epsilon,
        "--prediction"
    );
    let folder = PipelineConfig::open(&golden(), &options()).unwrap();
    assert_eq!(
        folder.scheduler.prediction_type,
        PredictionType::Epsilon,
        "--config's scheduler"
    );
    assert_eq!(folder.name, "tiny_sd1");
}

/// `easel --model FILE` with the tiny pipeline's configs; returns (exit code, stderr).
fn run_file(file: &Path, out: &Path) -> (i32, String) {
    let config = common::files::tiny_latent_pipeline();
    let args = [
        "red apple",
        "--model",
        file.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--candidates",
        "1",
        "--upscale",
        "1",
        "--steps",
        "2",
        "--output",
        out.to_str().unwrap(),
    ];
    let output = easel(&args);
    (output.status.code().unwrap_or(-1), stderr(&output))
}

#[test]
fn a_missing_or_misshapen_tensor_is_named_exit_2_and_no_output() {
    let dir = TempDir::new("partial");
    let out = dir.path().join("out.png");
    let gone = "model.diffusion_model.input_blocks.1.0.in_layers.0.weight";
    let partial = dir.write(
        "partial.safetensors",
        safetensors_bytes(&rewrite(
            &golden(),
            |n| (n != gone).then(|| n.into()),
            vec![],
        )),
    );
    let (code, err) = run_file(&partial, &out);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("no tensor `{gone}`")), "{err}");
    assert!(
        err.contains("down_blocks.0.resnets.0.norm1.weight"),
        "the model's name too: {err}"
    );
    assert!(!out.exists(), "no partial output");

    let wrong = "first_stage_model.decoder.mid.attn_1.q.weight";
    let entries = rewrite(
        &golden(),
        |n| (n != wrong).then(|| n.into()),
        vec![common::files::ramp(wrong, &[16, 8, 1, 1])],
    );
    let (code, err) = run_file(
        &dir.write("shape.safetensors", safetensors_bytes(&entries)),
        &out,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(wrong) && err.contains("[16, 16]"), "{err}");

    let extra = "model.diffusion_model.input_blocks.1.0.stray.weight";
    let entries = rewrite(
        &golden(),
        |n| Some(n.into()),
        vec![common::files::ramp(extra, &[2])],
    );
    let (code, err) = run_file(
        &dir.write("extra.safetensors", safetensors_bytes(&entries)),
        &out,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(extra) && err.contains("not used"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_pickle_is_refused_unread_with_how_to_convert() {
    let dir = TempDir::new("pickle");
    let out = dir.path().join("out.png");
    // A pickle's protocol header (and by its name), a zip by its magic under any name.
    for (name, bytes) in [
        ("model.ckpt", &b"\x80\x02}q\x00."[..]),
        ("model.pt", b"not even a pickle"),
        ("zipped.safetensors", b"PK\x03\x04rest"),
    ] {
        let (code, err) = run_file(&dir.write(name, bytes), &out);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(
            err.contains("never unpickles") && err.contains("convert_ckpt.py"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(!out.exists());
}

#[test]
fn single_file_flags_on_a_folder_are_bad_input() {
    let folder = common::files::tiny_latent_pipeline()
        .to_str()
        .unwrap()
        .to_string();
    let output = easel(&[
        "apple",
        "--model",
        &folder,
        "--tokenizer",
        &folder,
        "--upscale",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("single-file --model"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn inspect_says_what_a_single_file_is() {
    let output = easel(&["inspect", golden().to_str().unwrap()]);
    let out = common::binary::stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for line in [
        "single-file checkpoint: Stable Diffusion 1.x",
        "prediction: epsilon (SD 1.x's default",
        "unet (model.diffusion_model.*): 208 tensors",
        "vae (first_stage_model.*): 124 tensors",
        "text_encoder (cond_stage_model.transformer.*): 21 tensors",
        "inferred unet config: ",
        "block_out_channels=[8,16]",
        "F16 x",
    ] {
        assert!(out.contains(line), "{line}:\n{out}");
    }
    let dir = TempDir::new("inspect-pickle");
    let pickle = dir.write("model.ckpt", b"\x80\x02}q\x00.");
    let output = easel(&["inspect", pickle.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(common::binary::stdout(&output).contains("a PyTorch pickle checkpoint: not read"));
    assert!(
        stderr(&output).contains("never unpickles"),
        "{}",
        stderr(&output)
    );
}

/// Without `--tokenizer` (or a `--config` folder's), a single file gets the
/// bundled CLIP tokenizer: the whole 49,408-id vocabulary its token table is
/// indexed by, not the default model's own (restricted to its captions).
#[test]
fn a_single_file_gets_clips_whole_tokenizer() {
    // The tiny pipeline's configs (a file this small cannot be inferred), no tokenizer/.
    let dir = TempDir::new("no-tokenizer");
    common::files::copy_dir(common::files::tiny_latent_pipeline(), dir.path());
    std::fs::remove_dir_all(dir.path().join("tokenizer")).unwrap();
    let options = ModelOptions {
        tokenizer: None,
        prediction: None,
        config: Some(dir.path().to_path_buf()),
    };
    let (file, _) = easel::models::single_file::read(&golden(), &options).unwrap();
    assert!(file.bundled_tokenizer);
    let tok = easel::tokenizer::ClipTokenizer::from_dir(&file.tokenizer).unwrap();
    assert_eq!(tok.vocab_size(), 49_408, "{}", file.tokenizer.display());
    assert_eq!(tok.encode("red apple"), [49_406, 736, 3055, 49_407]);
}
