//! `--lora`: the tiny pixel pipeline (tests/golden/pipeline) with the tiny LoRA
//! of tools/make_lora_golden.py in both file formats, against diffusers'
//! `load_lora_weights` + `fuse_lora` (tests/golden/lora/golden.safetensors), and
//! every kind of bad LoRA file.
//!
//! Tolerances, as a fraction of the output's largest value: 1e-4 with
//! `--weights f32` (the f16 file widened exactly, the merge in f32 like
//! PyTorch's: tests/models.rs' bound); 2e-3 with the weights kept in f16, where
//! each merged weight is rounded to f16 (relative 2^-11) as an f16 model stays
//! f16, while diffusers fuses in f32.

mod common;

use std::path::{Path, PathBuf};

use common::binary::{easel, stderr};
use common::files::{f16s, f32s, safetensors_bytes, tiny_pipeline, TempDir};
use common::{assert_close, ctx};
use easel::gpu::Tensor;
use easel::lora::{Lora, LoraSpec};
use easel::models::attention::CrossContext;
use easel::models::clip::CLIPTextModel;
use easel::models::pipeline::{load_text_encoder, load_unet, PipelineConfig};
use easel::models::unet_2d_condition::UNet2DConditionModel;
use easel::models::Graph;
use easel::weights::{SafetensorsFile, WeightPrecision};
use easel::Result;
use sha2::Digest as _;

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn lora_file(format: &str) -> PathBuf {
    golden_dir("lora").join(format!("{format}.safetensors"))
}

fn golden(key: &str) -> (Vec<f32>, Vec<usize>) {
    let file = SafetensorsFile::open(golden_dir("lora").join("golden.safetensors")).unwrap();
    let shape = file.info(key).unwrap_or_else(|| panic!("no `{key}`")).shape;
    (file.to_f32(key).unwrap(), shape)
}

fn upload(key: &str) -> Tensor {
    let (data, shape) = golden(key);
    Tensor::from_f32(ctx(), key, &shape, &data).unwrap()
}

fn open(specs: &[(PathBuf, f32)]) -> Result<Vec<Lora>> {
    specs
        .iter()
        .map(|(path, weight)| {
            Lora::open(&LoraSpec {
                path: path.clone(),
                weight: *weight,
            })
        })
        .collect()
}

fn unet(precision: WeightPrecision, loras: &[Lora]) -> Result<UNet2DConditionModel> {
    let config = PipelineConfig::read(&golden_dir("pipeline")).unwrap();
    load_unet(
        ctx(),
        &golden_dir("pipeline/unet"),
        &config.unet,
        (precision, loras),
    )
}

fn text_encoder(precision: WeightPrecision, loras: &[Lora]) -> Result<CLIPTextModel> {
    let config = PipelineConfig::read(&golden_dir("pipeline")).unwrap();
    load_text_encoder(
        ctx(),
        &golden_dir("pipeline/text_encoder"),
        &config.text_encoder,
        (precision, loras),
    )
}

fn unet_out(model: &UNet2DConditionModel) -> Vec<f32> {
    let mut g = Graph::new(ctx(), "unet");
    let (sample, t, context) = (
        upload("sample"),
        upload("timestep"),
        upload("encoder_hidden_states"),
    );
    let context = CrossContext::Hidden(context);
    let out = model.forward(&mut g, &sample, &t, &context).unwrap();
    g.run().unwrap();
    out.to_vec(ctx()).unwrap()
}

fn text_out(model: &CLIPTextModel) -> Vec<f32> {
    let (ids, shape) = golden("input_ids");
    let rows: Vec<Vec<u32>> = ids
        .chunks(shape[1])
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect();
    let inputs = model.inputs_for(ctx(), &rows).unwrap();
    let mut g = Graph::new(ctx(), "text");
    let out = model.forward(&mut g, &inputs).unwrap();
    g.run().unwrap();
    out.last_hidden_state.to_vec(ctx()).unwrap()
}

fn check(what: &str, got: &[f32], key: &str, tolerance: f64) {
    let (want, _) = golden(key);
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert_close(what, got, &want, tolerance * scale, 0.0);
}

/// Both formats, both precisions: UNet and text encoder as diffusers fuses them.
#[test]
fn lora_matches_diffusers_fuse_lora() {
    for (format, weight) in [("peft", 1.0), ("kohya", 0.7)] {
        let loras = open(&[(lora_file(format), weight)]).unwrap();
        for (precision, tolerance) in [(WeightPrecision::F32, 1e-4), (WeightPrecision::Auto, 2e-3)]
        {
            let what = format!("{format} {precision:?}");
            let got = unet_out(&unet(precision, &loras).unwrap());
            check(
                &format!("{what} unet"),
                &got,
                &format!("{format}_unet_out"),
                tolerance,
            );
            let got = text_out(&text_encoder(precision, &loras).unwrap());
            let key = format!("{format}_text_last_hidden_state");
            check(&format!("{what} text encoder"), &got, &key, tolerance);
        }
    }
}

/// `FILE:0` merges nothing but zeros: the outputs equal no LoRA's, bit for bit.
#[test]
fn lora_weight_zero_is_no_lora_bit_for_bit() {
    let loras = open(&[(lora_file("kohya"), 0.0), (lora_file("peft"), 0.0)]).unwrap();
    let with = unet_out(&unet(WeightPrecision::Auto, &loras).unwrap());
    let without = unet_out(&unet(WeightPrecision::Auto, &[]).unwrap());
    assert!(with
        .iter()
        .zip(&without)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let with = text_out(&text_encoder(WeightPrecision::Auto, &loras).unwrap());
    let without = text_out(&text_encoder(WeightPrecision::Auto, &[]).unwrap());
    assert!(with
        .iter()
        .zip(&without)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

/// Two LoRAs add up: peft at 1 and kohya at 0.7 differ from either alone.
#[test]
fn two_loras_both_apply() {
    let both = open(&[(lora_file("peft"), 1.0), (lora_file("kohya"), 0.7)]).unwrap();
    let got = unet_out(&unet(WeightPrecision::F32, &both).unwrap());
    let (peft, _) = golden("peft_unet_out");
    let (kohya, _) = golden("kohya_unet_out");
    let far = |want: &[f32]| got.iter().zip(want).any(|(a, b)| (a - b).abs() > 1e-2);
    assert!(far(&peft) && far(&kohya));
}

/// A LoRA file made of `entries` in a temp folder; the error loading the tiny
/// pipeline's UNet and text encoder with it.
fn load_error(dir: &TempDir, entries: &[common::files::Entry]) -> String {
    let path = dir.write("bad.safetensors", safetensors_bytes(entries));
    let loras = match open(&[(path, 1.0)]) {
        Ok(loras) => loras,
        Err(e) => return e.to_string(),
    };
    let unet = unet(WeightPrecision::Auto, &loras).err();
    let text = text_encoder(WeightPrecision::Auto, &loras).err();
    let e = unet.or(text).expect("a bad LoRA loads");
    assert_eq!(e.exit_code(), 2, "{e}");
    e.to_string()
}

#[test]
fn bad_lora_files_name_the_first_tensor_that_does_not_fit() {
    let dir = TempDir::new("lora-bad");
    let pair = |name: &str, down: &[usize], up: &[usize]| {
        let n = |s: &[usize]| vec![0.1; s.iter().product()];
        [
            f16s(&format!("{name}.lora_down.weight"), down, &n(down)),
            f16s(&format!("{name}.lora_up.weight"), up, &n(up)),
        ]
    };
    // A layer the tiny UNet does not have (one resnet per block): another architecture.
    let other = pair(
        "lora_unet_down_blocks_0_resnets_1_conv1",
        &[2, 8, 3, 3],
        &[8, 2, 1, 1],
    );
    let e = load_error(&dir, &other);
    assert!(
        e.contains("`lora_unet_down_blocks_0_resnets_1_conv1.lora_down.weight`"),
        "{e}"
    );
    assert!(
        e.contains("has no layer") && e.contains("another model"),
        "{e}"
    );
    // The right layer, the wrong width (a LoRA for a wider model).
    let wide = pair(
        "lora_te_text_model_encoder_layers_0_mlp_fc1",
        &[2, 768],
        &[16, 2],
    );
    let e = load_error(&dir, &wide);
    assert!(
        e.contains("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"),
        "{e}"
    );
    assert!(e.contains("does not fit"), "{e}");
    // SDXL's second text encoder, LyCORIS factors, and no `up`.
    let sdxl = pair(
        "lora_te2_text_model_encoder_layers_0_mlp_fc1",
        &[2, 8],
        &[16, 2],
    );
    assert!(load_error(&dir, &sdxl).contains("SDXL"));
    let loha = [f32s(
        "lora_unet_mid_block_resnets_0_conv1.hada_w1_a",
        &[2, 2],
        &[0.0; 4],
    )];
    assert!(load_error(&dir, &loha).contains("LyCORIS"));
    let half = [f32s(
        "unet.mid_block.resnets.0.conv1.lora_A.weight",
        &[2, 16, 3, 3],
        &[0.0; 288],
    )];
    assert!(load_error(&dir, &half).contains("no up (B) matrix"));
}

#[test]
fn lora_spec_parses_file_and_weight() {
    let spec: LoraSpec = "style.safetensors:0.8".parse().unwrap();
    assert_eq!(
        (spec.path, spec.weight),
        (PathBuf::from("style.safetensors"), 0.8)
    );
    let spec: LoraSpec = "dir/style.safetensors".parse().unwrap();
    assert_eq!(spec.weight, 1.0);
    let spec: LoraSpec = "a:b.safetensors".parse().unwrap();
    assert_eq!(spec.path, PathBuf::from("a:b.safetensors"));
    assert!(":0.5".parse::<LoraSpec>().is_err());
    assert!("x.safetensors:inf".parse::<LoraSpec>().is_err());
}

fn png_parameters(path: &Path) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(std::fs::read(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    reader.info().uncompressed_latin1_text[0].text.clone()
}

fn render(dir: &TempDir, name: &str, extra: &[&str]) -> (PathBuf, std::process::Output) {
    let out = dir.path().join(name);
    let model = tiny_pipeline().to_str().unwrap();
    let mut args = vec![
        "red apple",
        "--model",
        model,
        "--steps",
        "2",
        "--candidates",
        "1",
        "--upscale",
        "1",
        "-q",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (out.clone(), easel(&args))
}

/// The CLI: the PNG records `<lora:NAME:WEIGHT>` and A1111's `Lora hashes`
/// (12 hex digits of the data section's sha256), `--json` the LoRAs; weight 0
/// gives the same pixels as no LoRA.
#[test]
fn cli_lora_records_hashes_and_weight_zero_changes_nothing() {
    let dir = TempDir::new("lora-cli");
    let kohya = format!("{}:0.7", lora_file("kohya").display());
    let (out, run) = render(&dir, "a.png", &["--lora", &kohya, "--json"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let file = SafetensorsFile::open(lora_file("kohya")).unwrap();
    let hash = Lora::open(&kohya.parse().unwrap()).unwrap().hash;
    assert_eq!(hash.len(), 64);
    let digest = sha2::Sha256::digest(file.data_bytes());
    assert_eq!(
        hash,
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let text = png_parameters(&out);
    assert!(text.starts_with("red apple <lora:kohya:0.7>\n"), "{text}");
    assert!(
        text.contains(&format!("Lora hashes: \"kohya: {}\"", &hash[..12])),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(json["loras"][0]["name"], "kohya", "{json}");
    assert_eq!(json["loras"][0]["sha256"], hash.as_str(), "{json}");
    assert_eq!(json["loras"][0]["weight"], 0.7, "{json}");

    let zero = format!("{}:0", lora_file("peft").display());
    let (with, run) = render(&dir, "zero.png", &["--lora", &zero]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let (without, run) = render(&dir, "none.png", &[]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let pixels = |p: &Path| image::open(p).unwrap().to_rgba8().into_raw();
    assert_eq!(pixels(&with), pixels(&without));
}

#[test]
fn cli_bad_lora_input_exits_2_without_a_file() {
    let dir = TempDir::new("lora-cli-bad");
    let missing = dir.path().join("missing.safetensors");
    let not_lora = golden_dir("pipeline/unet/diffusion_pytorch_model.safetensors");
    for (extra, expect) in [
        (
            vec!["--lora", missing.to_str().unwrap()],
            "missing.safetensors",
        ),
        (
            vec!["--lora", not_lora.to_str().unwrap()],
            "is not a LoRA tensor",
        ),
        (vec!["--lora", ":2"], "FILE[:WEIGHT]"),
    ] {
        let (out, run) = render(&dir, "x.png", &extra);
        assert_eq!(run.status.code(), Some(2), "{extra:?}: {}", stderr(&run));
        assert!(stderr(&run).contains(expect), "{extra:?}: {}", stderr(&run));
        assert!(!out.exists());
    }
    let model = tiny_pipeline().to_str().unwrap();
    let run = easel(&[
        "red apple <lora:style:0.8>",
        "--model",
        model,
        "-q",
        "-o",
        "x.png",
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("--lora FILE[:WEIGHT]"),
        "{}",
        stderr(&run)
    );
}

/// `easel batch --lora`: the manifest records the LoRA, and the job's file name
/// differs from the same job without it (a resume never takes one for the other).
#[test]
fn batch_lora_is_in_names_and_manifest() {
    let dir = TempDir::new("lora-batch");
    let jobs = dir.write("jobs.jsonl", "{\"prompt\": \"red apple\", \"seed\": 1}\n");
    let model = tiny_pipeline().to_str().unwrap();
    let kohya = format!("{}:0.7", lora_file("kohya").display());
    let batch = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "batch",
            jobs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--model",
            model,
            "--steps",
            "2",
            "--candidates",
            "1",
            "--upscale",
            "1",
            "-q",
        ];
        args.extend_from_slice(extra);
        let run = easel(&args);
        assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
        common::files::manifest(&out).remove(0)
    };
    let plain = batch("plain", &[]);
    let with = batch("lora", &["--lora", &kohya]);
    assert_ne!(plain["output"], with["output"]);
    assert!(plain.get("loras").is_none(), "{plain}");
    assert_eq!(with["loras"][0]["name"], "kohya", "{with}");
    assert_eq!(with["loras"][0]["weight"], 0.7, "{with}");
}

/// A job line's `lora` replaces `--lora` for that job; the model is reloaded
/// for it and back; a job whose LoRA file is missing, or does not fit the
/// model, fails alone.
#[test]
fn job_lines_choose_their_loras() {
    let dir = TempDir::new("lora-jobs");
    let kohya = format!("{}:0.7", lora_file("kohya").display());
    let misfit = dir.write(
        "misfit.safetensors",
        safetensors_bytes(&[
            f32s(
                "lora_unet_conv_in.lora_down.weight",
                &[1, 5, 3, 3],
                &[0.0; 45],
            ),
            f32s("lora_unet_conv_in.lora_up.weight", &[8, 1, 1, 1], &[0.0; 8]),
        ]),
    );
    let lines = [
        r#"{"prompt": "red apple", "seed": 1}"#.to_string(),
        format!(r#"{{"prompt": "red apple", "seed": 1, "lora": ["{kohya}"]}}"#),
        r#"{"prompt": "red apple", "seed": 2, "lora": ["missing.safetensors"]}"#.to_string(),
        format!(
            r#"{{"prompt": "red apple", "seed": 3, "lora": ["{}"]}}"#,
            misfit.display()
        ),
        r#"{"prompt": "red apple", "seed": 4}"#.to_string(),
    ];
    let jobs = dir.write("jobs.jsonl", lines.join("\n"));
    let out = dir.path().join("out");
    let model = tiny_pipeline().to_str().unwrap();
    let run = easel(&[
        "batch",
        jobs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--model",
        model,
        "--steps",
        "2",
        "--candidates",
        "1",
        "--upscale",
        "1",
        "-q",
    ]);
    assert_eq!(
        run.status.code(),
        Some(1),
        "two jobs fail: {}",
        stderr(&run)
    );
    let mut records = common::files::manifest(&out);
    records.sort_by_key(|r| r["index"].as_u64());
    let status: Vec<&str> = records
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        status,
        ["done", "done", "failed", "failed", "done"],
        "{records:?}"
    );
    assert!(records[0].get("loras").is_none());
    assert_eq!(records[1]["loras"][0]["weight"], 0.7);
    assert!(records[2]["error"]
        .as_str()
        .unwrap()
        .contains("missing.safetensors"));
    let misfit = records[3]["error"].as_str().unwrap();
    assert!(
        misfit.contains("lora_unet_conv_in.lora_down.weight"),
        "{misfit}"
    );
    assert_ne!(records[0]["output"], records[1]["output"]);
}

/// A LoRA on the token table, which a large model keeps in host memory (here
/// every table, by a test bound), is refused naming the table (exit 2): patches
/// merge on the GPU.
#[test]
fn a_lora_on_a_host_token_table_is_refused() {
    let dir = TempDir::new("lora-table");
    let config = PipelineConfig::read(&golden_dir("pipeline")).unwrap();
    let (vocab, hidden) = (
        config.text_encoder.vocab_size,
        config.text_encoder.hidden_size,
    );
    let name = "lora_te_text_model_embeddings_token_embedding";
    let entries = [
        f16s(
            &format!("{name}.lora_down.weight"),
            &[2, hidden],
            &vec![0.1; 2 * hidden],
        ),
        f16s(
            &format!("{name}.lora_up.weight"),
            &[vocab, 2],
            &vec![0.1; vocab * 2],
        ),
    ];
    let path = dir.write("table.safetensors", safetensors_bytes(&entries));
    let loras = open(&[(path, 1.0)]).unwrap();
    let mut host = common::new_context();
    host.host_tables_for_tests(0);
    let dir = golden_dir("pipeline/text_encoder");
    let loaded = load_text_encoder(
        &host,
        &dir,
        &config.text_encoder,
        (WeightPrecision::Auto, &loras),
    );
    let e = loaded.err().expect("a LoRA on a host table is refused");
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(
        e.to_string().contains("a LoRA patches the token table"),
        "{e}"
    );
    // On the GPU the same table takes the patch.
    let on_gpu = text_encoder(WeightPrecision::Auto, &loras);
    assert!(on_gpu.is_ok(), "{:?}", on_gpu.err());
}
