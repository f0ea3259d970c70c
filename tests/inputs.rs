//! Every input path, hardened (issue 19): counts a user gives are bounded and
//! multiplied in checked arithmetic by `Request::check` before anything is sized;
//! a model folder's configs are checked field by field as they are read; the
//! model hash walks only regular files, with loops and special files refused; a
//! config's default is blamed on the config, not on a flag nobody gave; an
//! unknown `WGPU_BACKEND` is bad input. Each case is exit 2 with one line, and
//! no test can hang: whatever could block runs under a deadline.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::files::TempDir;
use easel::farm::model_key;
use easel::phases::{Phase, Schedule};
use easel::schedulers::Sampler;
use easel::{Error, PipelineConfig, Request};
use serde_json::{json, Value};

fn emoji_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/easel-emoji")
}

/// The bundled model's configs (no weights, no GPU).
fn emoji() -> PipelineConfig {
    PipelineConfig::read(&emoji_dir()).unwrap()
}

/// `f()` on a thread, with a deadline: a walk or a read that blocks fails the
/// test instead of hanging it.
fn bounded<T: Send + 'static>(what: &str, secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still running after {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// The one-line message of a request `model` refuses as bad input (exit 2).
fn refused(r: &Request, model: &PipelineConfig) -> String {
    match r.check(model) {
        Ok(_) => panic!("{r:?}: accepted"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{e}");
            e.to_string()
        }
    }
}

fn request(edit: impl FnOnce(&mut Request)) -> Request {
    let mut r = Request::new("red apple");
    r.candidates = Some(4);
    edit(&mut r);
    r
}

fn schedule(text: &str) -> Option<Schedule> {
    Some(Schedule::parse(text).unwrap())
}

// --- 3. arithmetic on user-given counts ----------------------------------------------

#[test]
fn huge_step_counts_are_refused_before_anything_is_sized() {
    let model = emoji();
    // Was: the rounds of 10^17 steps allocated first ("capacity overflow", abort).
    let r = request(|r| {
        r.steps = Some(100_000_000_000_000_000);
        r.score_every = Some(1);
    });
    let e = refused(&r, &model);
    assert!(
        e.starts_with("--steps 100000000000000000: more than the model's num_train_timesteps 1000"),
        "{e}"
    );
    // Was: the counts' sum wrapped to 1 step, then the phases to a panic.
    let r = request(|r| r.schedule = schedule("18446744073709551615 k=2; 2 k=2"));
    let e = refused(&r, &model);
    assert!(
        e.contains("--schedule: the phases take 18446744073709551617 steps"),
        "{e}"
    );
    // Was: wrapped to 0 and reported as "--steps 0" (no --steps was given).
    let r = request(|r| r.schedule = schedule("18446744073709551615; 1"));
    let e = refused(&r, &model);
    assert!(
        e.contains("18446744073709551616 steps") && !e.contains("--steps"),
        "{e}"
    );
    // Over a given --steps, the phases' total is exact (was: wrapped to ...614).
    let r = request(|r| {
        r.steps = Some(40);
        r.schedule = schedule("18446744073709551615; 18446744073709551615");
    });
    let e = refused(&r, &model);
    assert!(e.contains("cover 36893488147419103230 steps"), "{e}");
    // The bounds themselves still pass.
    for steps in [1, 1000] {
        let r = request(|r| r.steps = Some(steps));
        assert!(r.check(&model).is_ok(), "{steps} steps");
    }
}

#[test]
fn score_every_0_is_refused_and_a_huge_one_scores_at_the_end() {
    let model = emoji();
    // Was: accepted, and silently run as 1 (a round after every step).
    let e = refused(&request(|r| r.score_every = Some(0)), &model);
    assert!(e.starts_with("--score-every 0: need at least 1"), "{e}");
    // Was: `start + every - 1` wrapped, putting a round before the phase began.
    let phase = Phase {
        steps: 10..20,
        sampler: Sampler::Ddim,
        candidates: 2,
        score_every: usize::MAX,
        guidance: 1.0,
    };
    assert_eq!(phase.rounds(), vec![19]);
    let r = request(|r| {
        r.steps = Some(8);
        r.score_every = Some(usize::MAX);
    });
    assert!(r.check(&model).is_ok());
}

#[test]
fn candidates_prompts_and_sizes_are_bounded_by_what_a_kernel_can_index() {
    let model = emoji();
    let limit = "but a kernel's u32 index allows at most 4294967295";
    let cases: Vec<(Request, &str)> = vec![
        // Was: accepted; the plan's byte count wrapped to 18446744073709539328.
        (
            request(|r| r.candidates = Some(usize::MAX)),
            "the UNet's input (1 + P)·K·C·h·w = 2·18446744073709551615·3·32·32 is more than",
        ),
        (
            request(|r| r.candidates = Some(100_000_000)),
            "the UNet's input (1 + P)·K·C·h·w = 2·100000000·3·32·32 is 614400000000 elements",
        ),
        (
            request(|r| r.size = Some((1 << 30, 1 << 30))),
            "2·4·3·1073741824·1073741824",
        ),
        (
            request(|r| r.size = Some((1 << 62, 1 << 62))),
            "more than 18446744073709551615 elements",
        ),
        // Sub-prompts multiply the UNet's batch too.
        (
            request(|r| {
                r.prompt = vec!["apple:: "; 99].concat();
                r.candidates = Some(1_000_000);
            }),
            "(1 + P)·K",
        ),
    ];
    for (r, wanted) in cases {
        let e = refused(&r, &model);
        assert!(e.contains(wanted) && e.contains(limit), "{wanted}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
    for k in [1, 64] {
        assert!(
            request(|r| r.candidates = Some(k)).check(&model).is_ok(),
            "K = {k}"
        );
    }
}

#[test]
fn upscaling_multiplies_the_size_it_is_checked_with() {
    let dir = ModelCopy::new("upscale", &emoji_dir());
    // A wide upscaler: its features at 1024x1024 pass what a kernel can index.
    dir.edit("upscaler/config.json", "num_feat", json!(8192));
    let model = PipelineConfig::read(dir.path()).unwrap();
    let big = |upscale| {
        request(|r| {
            r.candidates = Some(1);
            r.size = Some((1024, 1024));
            r.upscale = Some(upscale);
        })
    };
    assert!(big(1).check(&model).is_ok());
    for upscale in [2, 4] {
        let e = refused(&big(upscale), &model);
        assert!(
            e.contains("the upscaler's features num_feat·H·W = 8192·1024·1024"),
            "{e}"
        );
    }
}

#[test]
fn a_bad_default_is_blamed_on_the_model_file_not_a_flag() {
    for (field, value, wanted) in [
        ("default_steps", json!(0), "`_easel.default_steps` 0"),
        ("default_steps", json!(5000), "`_easel.default_steps` 5000"),
        (
            "scorer_image_std",
            json!([0.5, 0.0, 0.5]),
            "`_easel.scorer_image_std`",
        ),
    ] {
        let dir = ModelCopy::new("default", &emoji_dir());
        dir.edit("model_index.json", &format!("_easel.{field}"), value);
        let e = model_error(dir.path(), "model_index.json");
        assert!(e.contains(wanted) && !e.contains("--"), "{e}");
    }
    // The UNet's sample_size is the default --size: one the UNet cannot halve is
    // the config's fault (was: "--size 30x30: ..." with no --size given).
    let dir = ModelCopy::new("default", &emoji_dir());
    dir.edit("unet/config.json", "sample_size", json!(30));
    let e = model_error(dir.path(), "unet/config.json");
    assert!(
        e.contains("`sample_size` 30: must be a multiple of 8"),
        "{e}"
    );
}

/// A job whose counts overflowed used to panic and take the whole batch with
/// it, on every rerun: now it fails alone (exit 1, in the manifest).
#[test]
fn a_batch_job_with_huge_counts_fails_alone() {
    let dir = TempDir::new("batch-counts");
    let jobs = dir.write(
        "jobs.jsonl",
        r#"{"prompt": "a", "schedule": "18446744073709551615 k=2; 2 k=2"}
{"prompt": "b", "candidates": 18446744073709551615}
"#,
    );
    let out = dir.path().join("out");
    let model = emoji_dir();
    let (code, stderr) = easel_bounded(
        &[
            "batch",
            jobs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    let manifest = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    assert_eq!(manifest.lines().count(), 2, "{manifest}");
    assert!(
        manifest.contains("18446744073709551617 steps"),
        "{manifest}"
    );
}

// --- 4. model folders: configs, links, loops, FIFOs, devices --------------------------

/// A model folder for one test: every file a link to the original's, but those
/// it edits (cheap: the weights are not copied).
struct ModelCopy(TempDir);

impl ModelCopy {
    fn new(tag: &str, from: &Path) -> Self {
        let dir = TempDir::new(tag);
        link_tree(&from.canonicalize().unwrap(), dir.path());
        Self(dir)
    }

    /// A model assembled from parts, like `common::files::tiny_latent_pipeline`
    /// but linked and removed when dropped: (folder under the repository, where).
    fn assemble(tag: &str, parts: &[(&str, &str)]) -> Self {
        let dir = TempDir::new(tag);
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (from, to) in parts {
            link_tree(&root.join(from), &dir.path().join(to));
        }
        Self(dir)
    }

    /// tests/golden/latent_pipeline with the tiny pixel pipeline's text encoder
    /// and scorer and CLIP's tokenizer.
    fn latent(tag: &str) -> Self {
        Self::assemble(
            tag,
            &[
                ("tests/golden/latent_pipeline", ""),
                ("tests/golden/pipeline/text_encoder", "text_encoder"),
                ("tests/golden/pipeline/scorer", "scorer"),
                ("weights/easel-emoji/clip_tokenizer", "tokenizer"),
            ],
        )
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Set `field` (dots go into objects) of the JSON file `rel` to `value`.
    fn edit(&self, rel: &str, field: &str, value: Value) {
        let path = self.path().join(rel);
        let mut doc: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut at = &mut doc;
        let parts: Vec<&str> = field.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            at = at
                .get_mut(*part)
                .unwrap_or_else(|| panic!("{rel}: no `{part}`"));
        }
        at[parts[parts.len() - 1]] = value;
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }

    /// Replace the file `rel` with a FIFO.
    fn fifo(&self, rel: &str) -> PathBuf {
        let path = self.path().join(rel);
        let _ = std::fs::remove_file(&path);
        let status = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
        path
    }
}

fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            link_tree(&entry.path(), &target);
        } else {
            std::os::unix::fs::symlink(entry.path(), target).unwrap();
        }
    }
}

/// `PipelineConfig::read(dir)`'s error: a model error (exit 2) naming `file`.
fn model_error(dir: &Path, file: &str) -> String {
    let owned = dir.to_path_buf();
    let result = bounded("PipelineConfig::read", 30, move || {
        PipelineConfig::read(&owned).map(|_| ())
    });
    match result {
        Err(e @ Error::Model { .. }) => {
            let message = e.to_string();
            assert!(message.contains(file), "expected {file} in: {message}");
            assert!(!message.contains('\n'), "{message}");
            message
        }
        other => panic!("{}: expected a model error, got {other:?}", dir.display()),
    }
}

/// Each (file, field, value): the message names the file, the field and the problem.
type Edit = (&'static str, &'static str, Value, &'static str);

fn refuses_edits(model: impl Fn() -> ModelCopy, edits: Vec<Edit>) {
    for (file, field, value, wanted) in edits {
        let dir = model();
        dir.edit(file, field, value.clone());
        let e = model_error(dir.path(), file);
        assert!(
            e.contains(wanted),
            "{file} {field} = {value}: expected `{wanted}` in: {e}"
        );
    }
}

/// Fields that size or divide something: each was accepted when read, and most
/// then panicked (divide by zero, capacity overflow, shift overflow) or
/// allocated without end while the model was built.
#[test]
fn config_fields_that_size_or_divide_are_checked_when_read() {
    let unet = "unet/config.json";
    let text = "text_encoder/config.json";
    let scorer = "scorer/config.json";
    let upscaler = "upscaler/config.json";
    let scheduler = "scheduler/scheduler_config.json";
    refuses_edits(
        || ModelCopy::new("config", &emoji_dir()),
        vec![
            (
                unet,
                "block_out_channels",
                json!([]),
                "`block_out_channels (entries)` 0",
            ),
            (
                unet,
                "attention_head_dim",
                json!(0),
                "`attention_head_dim[0]` 0",
            ),
            (
                unet,
                "attention_head_dim",
                json!(5),
                "`attention_head_dim[2]` 5 does not divide `block_out_channels[2]` 64",
            ),
            (
                unet,
                "num_attention_heads",
                json!([4, 4, 4]),
                "`num_attention_heads` has 3 entries for 4 blocks",
            ),
            (unet, "norm_num_groups", json!(0), "`norm_num_groups` 0"),
            (
                unet,
                "norm_num_groups",
                json!(5),
                "`norm_num_groups` 5 does not divide `block_out_channels[0]` 32",
            ),
            (
                unet,
                "layers_per_block",
                json!(1_000_000_000_000u64),
                "`layers_per_block[0]` 1000000000000",
            ),
            (
                unet,
                "transformer_layers_per_block",
                json!(0),
                "`transformer_layers_per_block[0]` 0",
            ),
            (unet, "conv_in_kernel", json!(0), "`conv_in_kernel` 0"),
            (
                unet,
                "conv_out_kernel",
                json!(2),
                "`conv_out_kernel` 2: must be odd",
            ),
            (
                unet,
                "cross_attention_dim",
                json!(0),
                "`cross_attention_dim` 0",
            ),
            (unet, "freq_shift", json!(16), "`freq_shift` 16"),
            (
                unet,
                "down_block_types",
                json!(["DownBlock2D"]),
                "`down_block_types` (1)",
            ),
            (
                text,
                "num_attention_heads",
                json!(0),
                "`num_attention_heads` 0",
            ),
            (
                text,
                "num_attention_heads",
                json!(3),
                "`num_attention_heads` 3 does not divide `hidden_size` 128",
            ),
            (text, "hidden_size", json!(0), "`hidden_size` 0"),
            (
                text,
                "max_position_embeddings",
                json!(0),
                "`max_position_embeddings` 0",
            ),
            (
                scorer,
                "vision_config.patch_size",
                json!(0),
                "`vision_config.patch_size` 0",
            ),
            (
                scorer,
                "vision_config.patch_size",
                json!(64),
                "`vision_config.patch_size` 64: must be from 1 to 32",
            ),
            (
                scorer,
                "vision_config.image_size",
                json!(0),
                "`vision_config.image_size` 0",
            ),
            (
                scorer,
                "text_config.num_attention_heads",
                json!(0),
                "`text_config.num_attention_heads` 0",
            ),
            (scorer, "projection_dim", json!(0), "`projection_dim` 0"),
            (upscaler, "upscale", json!(0), "`upscale` 0"),
            (
                upscaler,
                "num_conv",
                json!(1_000_000_000_000_000_000u64),
                "`num_conv` 1000000000000000000",
            ),
            (upscaler, "num_feat", json!(0), "`num_feat` 0"),
            (
                scheduler,
                "num_train_timesteps",
                json!(0),
                "num_train_timesteps 0",
            ),
            (
                scheduler,
                "num_train_timesteps",
                json!(1_000_000_000_000u64),
                "num_train_timesteps 1000000000000: must be from 2 to 100000",
            ),
            (
                scheduler,
                "steps_offset",
                json!(1000),
                "steps_offset 1000: must be below num_train_timesteps 1000",
            ),
        ],
    );
    let vae = "vae/config.json";
    refuses_edits(
        || ModelCopy::latent("latent-config"),
        vec![
            (
                vae,
                "block_out_channels",
                json!([]),
                "`block_out_channels (entries)` 0",
            ),
            (vae, "norm_num_groups", json!(0), "`norm_num_groups` 0"),
            (
                vae,
                "norm_num_groups",
                json!(3),
                "`norm_num_groups` 3 does not divide",
            ),
            (
                vae,
                "up_block_types",
                json!(["UpDecoderBlock2D"]),
                "`up_block_types` (1)",
            ),
            (
                vae,
                "layers_per_block",
                json!(1_000_000_000_000u64),
                "`layers_per_block` 1000000000000",
            ),
            (vae, "scaling_factor", json!(0.0), "`scaling_factor` 0"),
            (vae, "latent_channels", json!(0), "`latent_channels` 0"),
        ],
    );
}

#[test]
fn every_shipped_config_passes_the_checks() {
    emoji();
    let pixel = ModelCopy::assemble(
        "pixel",
        &[
            ("tests/golden/pipeline", ""),
            ("weights/easel-emoji/clip_tokenizer", "tokenizer"),
        ],
    );
    PipelineConfig::read(pixel.path()).unwrap();
    PipelineConfig::read(ModelCopy::latent("latent").path()).unwrap();
    use easel::models::clip::{CLIPConfig, CLIPTextConfig};
    use easel::models::layers::component_config;
    use easel::models::unet_2d_condition::UNet2DConditionConfig;
    use easel::models::upscaler::SRVGGNetCompactConfig;
    use easel::models::vae::AutoencoderKLConfig;
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for name in ["unet", "unet_linear"] {
        component_config::<UNet2DConditionConfig>(&golden.join(name)).unwrap();
    }
    for name in ["text_encoder", "text_encoder_v4"] {
        component_config::<CLIPTextConfig>(&golden.join(name)).unwrap();
    }
    component_config::<CLIPConfig>(&golden.join("clip")).unwrap();
    component_config::<AutoencoderKLConfig>(&golden.join("vae")).unwrap();
    component_config::<SRVGGNetCompactConfig>(&golden.join("upscaler")).unwrap();
}

/// A config that is a FIFO blocked the reader forever.
#[test]
fn a_config_that_is_not_a_regular_file_is_refused_without_reading_it() {
    for rel in [
        "unet/config.json",
        "scheduler/scheduler_config.json",
        "model_index.json",
    ] {
        let dir = ModelCopy::new("fifo-config", &emoji_dir());
        dir.fifo(rel);
        let e = model_error(dir.path(), rel);
        assert!(e.contains("not a regular file"), "{e}");
    }
}

/// `model_key(dir)`'s error, under a deadline.
fn key_error(dir: &Path) -> String {
    let owned = dir.to_path_buf();
    match bounded("model_key", 10, move || model_key(&owned)) {
        Err(e @ Error::Model { .. }) => {
            assert_eq!(e.exit_code(), 2);
            e.to_string()
        }
        other => panic!("{}: expected a model error, got {other:?}", dir.display()),
    }
}

#[test]
fn the_model_hash_walks_only_regular_files() {
    // A folder of links hashes as the folder it links to.
    let links = ModelCopy::new("key-links", &emoji_dir());
    let hash = |key: String| key.split('@').nth(1).unwrap().to_string();
    assert_eq!(
        hash(model_key(links.path()).unwrap()),
        hash(model_key(&emoji_dir()).unwrap())
    );
    // Was: a walk without end, memory growing ~35 MB/s.
    let dir = ModelCopy::new("key-loop", &emoji_dir());
    std::os::unix::fs::symlink("..", dir.path().join("unet/loop")).unwrap();
    let e = key_error(dir.path());
    assert!(e.contains("unet/loop") && e.contains("link loop"), "{e}");
    // Was: blocked forever opening the FIFO.
    let dir = ModelCopy::new("key-fifo", &emoji_dir());
    dir.fifo("scorer/pipe");
    let e = key_error(dir.path());
    assert!(
        e.contains("scorer/pipe") && e.contains("not a regular file"),
        "{e}"
    );
    // Was: read as a file (/dev/zero: without end).
    let dir = ModelCopy::new("key-device", &emoji_dir());
    std::os::unix::fs::symlink("/dev/null", dir.path().join("unet/extra.bin")).unwrap();
    let e = key_error(dir.path());
    assert!(
        e.contains("unet/extra.bin") && e.contains("not a regular file"),
        "{e}"
    );
    // Folders nested past any model layout.
    let dir = ModelCopy::new("key-deep", &emoji_dir());
    let deep: PathBuf = (0..20).map(|i| format!("d{i}")).collect();
    std::fs::create_dir_all(dir.path().join(deep)).unwrap();
    let e = key_error(dir.path());
    assert!(e.contains("more than 16 folders deep"), "{e}");
}

/// `easel batch` on a model folder holding a FIFO: exit 2 at once (was: blocked).
#[test]
fn batch_refuses_a_model_folder_with_a_fifo() {
    let model = ModelCopy::new("batch-fifo", &emoji_dir());
    model.fifo("unet/pipe");
    let dir = TempDir::new("batch-fifo-jobs");
    let jobs = dir.write("jobs.jsonl", "{\"prompt\": \"a\"}\n");
    let out = dir.path().join("out");
    let (code, stderr) = easel_bounded(
        &[
            "batch",
            jobs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--model",
            model.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unet/pipe") && stderr.contains("not a regular file"),
        "{stderr}"
    );
}

/// `easel apple --model MODEL -o MODEL/out.png`: exit code, stderr, the output path.
fn generate_on(model: &ModelCopy) -> (i32, String, PathBuf) {
    let out = model.path().join("out.png");
    let dir = model.path().to_str().unwrap();
    let (code, stderr) =
        easel_bounded(&["apple", "--model", dir, "-o", out.to_str().unwrap()], &[]);
    (code, stderr, out)
}

/// Weight and tokenizer files are read only when they are regular files: a
/// FIFO named like a checkpoint or a vocabulary used to block `generate` forever.
#[test]
fn generate_refuses_weight_and_tokenizer_files_that_are_fifos() {
    for rel in [
        "unet/diffusion_pytorch_model.safetensors",
        "tokenizer/vocab.json",
    ] {
        let model = ModelCopy::new("generate-fifo", &emoji_dir());
        model.fifo(rel);
        let (code, stderr, out) = generate_on(&model);
        assert_eq!(code, 2, "{rel}: {stderr}");
        assert!(
            stderr.contains(rel) && stderr.contains("not a regular file"),
            "{rel}: {stderr}"
        );
        assert!(!out.exists());
    }
}

/// A config that panicked while the model was built (attention_head_dim 0:
/// a division by zero) is now refused before any GPU work.
#[test]
fn generate_refuses_a_dividing_zero_before_the_gpu() {
    let model = ModelCopy::new("generate-heads", &emoji_dir());
    model.edit("unet/config.json", "attention_head_dim", json!(0));
    let (code, stderr, out) = generate_on(&model);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unet/config.json: `attention_head_dim[0]` 0"),
        "{stderr}"
    );
    assert!(!out.exists());
}

// --- 8. flags and variables -------------------------------------------------------------

/// Run the binary with `env` set (and wgpu's own variables otherwise cleared),
/// killed after 120 s: returns its exit code and stderr.
fn easel_bounded(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = TempDir::new("easel-run");
    let err = dir.path().join("stderr");
    let mut command = Command::new(env!("CARGO_BIN_EXE_easel"));
    command
        .args(args)
        .env_remove("WGPU_BACKEND")
        .env_remove("WGPU_ADAPTER_NAME")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("easel {args:?}: still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(
        !stderr.contains("panicked"),
        "easel {args:?} panicked:\n{stderr}"
    );
    (status.code().expect("an exit code, not a signal"), stderr)
}

#[test]
fn an_unknown_backend_is_bad_input_listing_the_names() {
    // Was: wgpu skipped the unknown name, searched no backend: "no adapter", exit 3.
    let (code, stderr) = easel_bounded(&["devices"], &[("WGPU_BACKEND", "vulkn")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("WGPU_BACKEND: unknown backend `vulkn`"),
        "{stderr}"
    );
    assert!(stderr.contains("vulkan, metal, dx12, gl"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let (code, stderr) = easel_bounded(&["devices", "--backend", "vulkan,nonsense"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--backend: unknown backend `nonsense`"),
        "{stderr}"
    );
    // A known name still finds the adapter, and an empty variable is no choice.
    for value in ["vulkan", ""] {
        let (code, stderr) = easel_bounded(&["devices"], &[("WGPU_BACKEND", value)]);
        assert_eq!(code, 0, "WGPU_BACKEND={value:?}: {stderr}");
    }
}
