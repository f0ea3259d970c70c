//! A model folder's configs: `weights::Config` and `PipelineConfig::read` on mutated
//! `config.json`, `model_index.json` and `scheduler_config.json` files of a copy of a
//! model folder (the bundled pixel model, and the golden latent pipeline with a VAE),
//! then `Request::check` of a few requests against what was read.

use std::path::{Path, PathBuf};

use easel::phases::{self, Defaults};
use easel::tokenizer::ClipTokenizer;
use easel::weights::Config as JsonConfig;
use easel::{PipelineConfig, Request, Schedule};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use crate::ensure;
use crate::harness::{self, bad_input, no_panic, Layout, TempDir, Verdict};

/// The model folders mutated: the bundled pixel model and a latent one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Base {
    Pixel,
    Latent,
}

/// The files [`PipelineConfig::read`] reads, relative to the folder.
pub const FILES: &[&str] = &[
    "model_index.json",
    "unet/config.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "scorer/config.json",
    "upscaler/config.json",
    "vae/config.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
];

/// A copy of a model folder: its small files copied, its weights linked.
pub struct Folder {
    dir: TempDir,
}

impl Folder {
    pub fn new(base: Base) -> Self {
        let dir = TempDir::new("model");
        let root = harness::root();
        let copy = |from: &Path, to: &str| link_tree(from, &dir.path().join(to));
        match base {
            Base::Pixel => copy(&harness::bundled_dir(), ""),
            Base::Latent => {
                copy(&root.join("tests/golden/latent_pipeline"), "");
                for part in ["text_encoder", "scorer"] {
                    copy(&root.join("tests/golden/pipeline").join(part), part);
                }
                copy(&harness::bundled_dir().join("tokenizer"), "tokenizer");
            }
        }
        Folder { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `f` with `rel` holding `bytes`, then puts the original back (or removes
    /// it if there was none).
    pub fn with_file<T>(&self, rel: &str, bytes: &[u8], f: impl FnOnce() -> T) -> T {
        let path = self.path().join(rel);
        let original = std::fs::read(&path).ok();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, bytes).unwrap();
        let result = f();
        match original {
            Some(o) => std::fs::write(&path, o).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        result
    }
}

/// Copies `.json` and `.txt` files; links the rest (the weights) to the originals.
fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            link_tree(&src, &dst);
        } else if matches!(
            src.extension().and_then(|e| e.to_str()),
            Some("json" | "txt")
        ) {
            std::fs::copy(&src, &dst).unwrap();
        } else {
            std::os::unix::fs::symlink(&src, &dst).unwrap();
        }
    }
}

/// The requests checked against a folder that reads.
fn requests() -> Vec<Request> {
    let schedule = Schedule::parse("50% sampler=euler_a k=2; rest sampler=dpm++2m").unwrap();
    vec![
        Request::new("cat"),
        Request {
            candidates: Some(2),
            upscale: Some(4),
            steps: Some(1),
            ..Request::new("red apple:: tart::2 --no worm")
        },
        Request {
            size: Some((16, 32)),
            upscale: Some(2),
            steps: Some(10),
            sampler: Some(easel::Sampler::EulerAncestral),
            schedule: Some(schedule),
            ..Request::new("a")
        },
    ]
}

/// The property on the folder as it is: reading fails with a one-line exit-2 error,
/// or the requests check without a panic (errors exit 2), and a request that checks
/// has a finite step table and guidance; with `tokenizer` (its files were changed),
/// the tokenizer loads or fails likewise.
pub fn check_folder(dir: &Path, tokenizer: bool) -> Verdict {
    let config = match no_panic("PipelineConfig::read", || PipelineConfig::read(dir))? {
        Err(e) => return bad_input(&e, Layout::OneLine),
        Ok(c) => c,
    };
    for file in FILES {
        let path = dir.join(file);
        if path.is_file() {
            if let Err(e) = no_panic("weights::Config::read", || JsonConfig::read(&path))? {
                bad_input(&e, Layout::OneLine)?;
            }
        }
    }
    if tokenizer {
        tokenizes(&dir.join("tokenizer"))?;
    }
    for request in requests() {
        if harness::risky(&request, &config) {
            continue;
        }
        let checked = no_panic("Request::check", || request.check(&config).map(|_| ()))?;
        match checked {
            Err(e) => bad_input(&e, Layout::Either)?,
            Ok(()) => settled(&request, &config)?,
        }
    }
    Ok(())
}

/// The longest context a tokenizer may pad to in-process.
const MAX_CONTEXT: usize = 1 << 20;

/// The folder's tokenizer (read by `Pipeline::load`, not by [`PipelineConfig::read`]):
/// it fails with a one-line exit-2 error, or pads a prompt to its full length with the
/// end-of-text token inside.
fn tokenizes(dir: &Path) -> Verdict {
    let tokenizer = match no_panic("ClipTokenizer::from_dir", || ClipTokenizer::from_dir(dir))? {
        Err(e) => return bad_input(&e, Layout::OneLine),
        Ok(t) => t,
    };
    // Padding allocates the whole context: refused here rather than tried (a
    // context of 2^32 tokens is 32 GiB, and the OOM killer ends the test binary).
    let context = tokenizer.model_max_length;
    ensure!(
        context <= MAX_CONTEXT,
        "accepted model_max_length {context}: encode_padded would allocate {} bytes",
        context.saturating_mul(8)
    );
    for text in ["a cat", &"apple ".repeat(100)] {
        let e = no_panic("ClipTokenizer::encode_padded", || {
            tokenizer.encode_padded(text)
        })?;
        ensure!(
            e.input_ids.len() == e.attention_mask.len() && e.eos_position < e.input_ids.len(),
            "{text:?}: {} ids, {} mask, EOS at {}",
            e.input_ids.len(),
            e.attention_mask.len(),
            e.eos_position
        );
    }
    Ok(())
}

/// A request that passed `check`: its guidance and its step table are finite.
fn settled(request: &Request, config: &PipelineConfig) -> Verdict {
    let guidance = request.guidance.unwrap_or(config.settings.default_guidance);
    ensure!(guidance.is_finite(), "accepted guidance {guidance}");
    if request.schedule.is_some() {
        return Ok(()); // the schedule property covers phases
    }
    let steps = request.steps.unwrap_or(config.settings.default_steps);
    let defaults = Defaults {
        sampler: request
            .sampler
            .unwrap_or_else(|| config.scheduler.default_sampler()),
        candidates: request.candidates_for(config),
        score_every: request.score_every,
        guidance,
    };
    let phases = phases::single(steps, &defaults);
    let rounds: Vec<usize> = phases.iter().flat_map(|p| p.rounds()).collect();
    let (rows, init) = phases::step_table(&phases, &rounds, &config.scheduler)
        .map_err(|e| format!("check passed, the step table failed: {e}"))?;
    crate::schedule::finite_table(&rows, init, steps)
        .map_err(|e| format!("{request:?} over {}: {e}", config.scheduler.path.display()))
}

/// A corpus case: a first line `pixel|latent FILE`, then the file's bytes.
pub fn check_case(bytes: &[u8]) -> Verdict {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let head = String::from_utf8_lossy(&bytes[..newline]).into_owned();
    let (base, rel) = head.split_once(' ').ok_or("header: `pixel|latent FILE`")?;
    let base = match base {
        "pixel" => Base::Pixel,
        "latent" => Base::Latent,
        other => return Err(format!("unknown base `{other}`")),
    };
    let folder = Folder::new(base);
    let tokenizer = rel.starts_with("tokenizer/");
    folder.with_file(rel, &bytes[newline + 1..], || {
        check_folder(folder.path(), tokenizer)
    })
}

/// Values a config field should not hold, or holds at its edge.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(2)),
        Just(json!(-1)),
        Just(json!(0.5)),
        Just(json!(-0.0)),
        Just(json!(1e-300)),
        Just(json!(1e300)),
        Just(json!(1e39)),
        Just(json!(1u64 << 32)),
        Just(json!(1u64 << 62)),
        Just(json!(1u64 << 63)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!("")),
        Just(json!("linear")),
        Just(json!("trailing")),
        Just(json!("leading")),
        Just(json!("sample")),
        Just(json!("\u{0}")),
        Just(json!([])),
        Just(json!([0])),
        Just(json!([1, 2, 3])),
        Just(json!(vec![32; 70])),
        Just(json!({})),
        (0u64..2000).prop_map(|n| json!(n)),
    ]
}

/// Every path to a value in `v` (object keys and array indices).
fn paths(v: &Value, prefix: &mut Vec<PathPart>, out: &mut Vec<Vec<PathPart>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(PathPart::Key(k.clone()));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(PathPart::Index(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathPart {
    Key(String),
    Index(usize),
}

fn at_path<'v>(v: &'v mut Value, path: &[PathPart]) -> &'v mut Value {
    path.iter().fold(v, |v, p| match p {
        PathPart::Key(k) => &mut v[k.as_str()],
        PathPart::Index(i) => &mut v[*i],
    })
}

/// What is done to one file.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Replace the value at the `n`th path (modulo their count).
    Set(usize, Value),
    /// Remove the `n`th path's key or item.
    Remove(usize),
    /// Add a key with a value beside the `n`th path.
    Add(usize, String, Value),
    /// A number written as Python's json does (`NaN`, `Infinity`) at the `n`th path.
    Python(usize, &'static str),
    Truncate(usize),
    Flip(usize, u8),
    Replace(Vec<u8>),
}

/// The file's text after `mutation`.
pub fn mutate(original: &[u8], mutation: &Mutation) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(original).unwrap();
    let mut all = Vec::new();
    paths(&v, &mut Vec::new(), &mut all);
    let pick = |n: usize| all[n % all.len()].clone();
    match mutation {
        Mutation::Set(n, value) => *at_path(&mut v, &pick(*n)) = value.clone(),
        Mutation::Remove(n) => {
            let path = pick(*n);
            if let Some((last, parent)) = path.split_last() {
                match (at_path(&mut v, parent), last) {
                    (Value::Object(m), PathPart::Key(k)) => {
                        m.remove(k);
                    }
                    (Value::Array(a), PathPart::Index(i)) => {
                        a.remove(*i);
                    }
                    _ => {}
                }
            }
        }
        Mutation::Add(n, key, value) => {
            let path = pick(*n);
            let parent = path.split_last().map_or(&path[..0], |(_, p)| p);
            match at_path(&mut v, parent) {
                Value::Object(m) => {
                    m.insert(key.clone(), value.clone());
                }
                Value::Array(a) => a.push(value.clone()),
                _ => {}
            }
        }
        Mutation::Python(n, token) => {
            let marker = "\"@@python@@\"";
            *at_path(&mut v, &pick(*n)) = json!("@@python@@");
            return v.to_string().replacen(marker, token, 1).into_bytes();
        }
        Mutation::Truncate(n) => return original[..n % (original.len() + 1)].to_vec(),
        Mutation::Flip(at, b) => {
            let mut bytes = original.to_vec();
            let i = at % bytes.len();
            bytes[i] ^= (*b).max(1);
            return bytes;
        }
        Mutation::Replace(bytes) => return bytes.clone(),
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        8 => (any::<usize>(), hostile()).prop_map(|(n, v)| Mutation::Set(n, v)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        1 => (any::<usize>(), "[a-z_]{1,24}", hostile()).prop_map(|(n, k, v)| Mutation::Add(n, k, v)),
        2 => (any::<usize>(), proptest::sample::select(&["NaN", "Infinity", "-Infinity", "-NaN", "Inf"][..])).prop_map(|(n, t)| Mutation::Python(n, t)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..32),
            Just(b"\xff\xfe{}".to_vec()),
            Just(b"\xef\xbb\xbf{}".to_vec()),
            Just("[".repeat(300).into_bytes()),
            Just(b"null".to_vec()),
        ].prop_map(Mutation::Replace),
    ]
}

/// The file `rel` of `base` (the latent base has no upscaler, the pixel one no VAE).
fn original(base: Base, rel: &str) -> Option<(PathBuf, Vec<u8>)> {
    let root = match base {
        Base::Pixel => harness::bundled_dir(),
        Base::Latent => harness::root().join("tests/golden/latent_pipeline"),
    };
    let path = root.join(rel);
    let path = if path.is_file() || base == Base::Pixel {
        path
    } else {
        harness::root().join("tests/golden/pipeline").join(rel)
    };
    std::fs::read(&path).ok().map(|b| (path, b))
}

/// A mutated file is among the known bugs' kind (see `crate::KNOWN`) before it is read.
fn known_bytes(rel: &str, bytes: &[u8]) -> bool {
    let scheduler = rel.starts_with("scheduler/");
    // Not UTF-8: an I/O error (exit 1).
    crate::known("config/scheduler-not-utf8") && scheduler && std::str::from_utf8(bytes).is_err()
}

/// A folder that reads is among the known bugs' kind (see `crate::KNOWN`).
fn known_config(dir: &Path, tokenizer: bool) -> bool {
    use crate::known;
    if tokenizer && known("config/tokenizer-max-length-huge") {
        let read = harness::quietly(|| ClipTokenizer::from_dir(dir.join("tokenizer")));
        if matches!(read, Ok(Ok(t)) if t.model_max_length > MAX_CONTEXT) {
            return true;
        }
    }
    let Ok(Ok(c)) = harness::quietly(|| PipelineConfig::read(dir)) else {
        return false;
    };
    let s = &c.scheduler;
    let blocks = |n: usize| n == 0 || n > 64;
    (known("config/index-guidance-overflows-f32") && !c.settings.default_guidance.is_finite())
        || (known("config/scheduler-betas-zero") && (s.beta_start == 0.0 || s.beta_end == 0.0))
        || (known("config/scheduler-trained-betas-near-one") && s.trained_betas.is_some())
        || (known("config/scheduler-train-2p62") && s.num_train_timesteps >= 1 << 61)
        || (known("config/scheduler-clip-range-overflows-f32")
            && !(s.clip_sample_range as f32).is_finite())
        || (known("config/vae-no-blocks")
            && c.vae
                .as_ref()
                .is_some_and(|v| blocks(v.block_out_channels.len())))
        || (known("config/vae-70-blocks")
            && c.vae
                .as_ref()
                .is_some_and(|v| v.block_out_channels.len() > 64))
        || ((known("config/unet-no-blocks") || known("config/unet-70-blocks"))
            && blocks(c.unet.block_out_channels.len()))
        || (known("config/scheduler-steps-offset-max") && s.steps_offset > usize::MAX / 2)
        || (known("config/latent-sample-size-huge")
            && c.unet.sample_size.is_some_and(|n| n > usize::MAX / 64))
}

/// Mutated config files, each in a copy of its model folder: one copy per base for the
/// whole run (a case changes one file and puts it back), removed at the end.
#[test]
fn model_configs() {
    let folders = [Folder::new(Base::Pixel), Folder::new(Base::Latent)];
    let config = Config {
        source_file: Some(file!()),
        ..harness::cases(300)
    };
    let cases = (
        any::<bool>(),
        proptest::sample::select(FILES),
        proptest::collection::vec(mutation(), 1..3),
    );
    let mut runner = TestRunner::new(config);
    let result = runner.run(&cases, |(latent, file, mutations)| {
        let base = if latent { Base::Latent } else { Base::Pixel };
        let Some((_, mut bytes)) = original(base, file) else {
            return Ok(()); // no such file in this base
        };
        for m in &mutations {
            if serde_json::from_slice::<Value>(&bytes).is_err() {
                break;
            }
            bytes = mutate(&bytes, m);
        }
        prop_assume!(!known_bytes(file, &bytes));
        let folder = &folders[usize::from(latent)];
        let tokenizer = file.starts_with("tokenizer/");
        let verdict = folder.with_file(file, &bytes, || {
            if known_config(folder.path(), tokenizer) {
                return None;
            }
            Some(check_folder(folder.path(), tokenizer))
        });
        prop_assume!(verdict.is_some());
        let verdict = verdict.unwrap().map_err(|e| format!("{file}: {e}"));
        harness::verdict_to_test(verdict)
    });
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
}
