//! Stable names: a job's output file and the model's identity are derived from
//! what decides the image, with a hash that does not change between Rust versions
//! or hosts (64-bit FNV-1a), so a rerun, or another host of the same farm, finds
//! finished work under the same name and skips it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::lora::{Lora, LoraSpec};
use crate::memory_plan::Precision;
use crate::request::{Picture, Request, Start};
use crate::schedulers::Sampler;

/// Everything that decides the image, in a fixed order (the hash's input).
#[derive(Serialize)]
struct Canonical<'a> {
    model: &'a str,
    prompt: &'a str,
    seed: u64,
    size: Option<(usize, usize)>,
    steps: Option<usize>,
    /// Settled by the job reader (`Some`): a number, as before they could be unset.
    candidates: Option<usize>,
    guidance: Option<f32>,
    sampler: Option<&'static str>,
    upscale: Option<usize>,
    score_every: Option<usize>,
    until_score: Option<f32>,
    until_margin: Option<f32>,
    /// Absent without phases, so names from before `schedule` existed still match.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<&'a str>,
    /// Absent when not given, like `schedule`.
    #[serde(skip_serializing_if = "Option::is_none")]
    negative: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    karras: bool,
    /// A start picture (absent without one, as `schedule`): see [`start_key`].
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    /// `--precision` when asked for (f16 activations change the pixels);
    /// absent for `auto`, so names from before it existed still match.
    #[serde(skip_serializing_if = "Option::is_none")]
    precision: Option<String>,
}

/// What of a start decides the image: the pictures' pixels (not their paths,
/// so a moved file keeps its jobs' names), the strength, the mask's blur.
fn start_key(s: &Start) -> String {
    let pixels = |p: &Picture| {
        let size = [p.rgb.width(), p.rgb.height()]
            .map(u32::to_le_bytes)
            .concat();
        fnv1a(fnv1a(FNV_OFFSET, &size), p.rgb.as_raw())
    };
    let mask = s
        .mask
        .as_ref()
        .map(|m| format!(" mask {:016x} blur {}", pixels(m), s.mask_blur));
    format!(
        "init {:016x} strength {}{}",
        pixels(&s.init),
        s.strength,
        mask.unwrap_or_default()
    )
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a, continued from `hash` over `bytes`.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The model as job names see it: `FOLDER@HASH`, the folder's name and 64 bits of
/// FNV-1a over every file in it (relative path, length, bytes, in path order), so
/// weights retrained in place give new names rather than skipped jobs whose images the
/// old weights made. Hidden files are left out; reading ~40 MB takes well under a
/// second, once per batch.
///
/// Only regular files are read, and the walk is bounded ([`Walk`]): a folder that
/// links into itself, a FIFO, a socket or a device (a link to /dev/zero) is an error
/// naming it, never a walk that blocks or grows without end. A single file
/// (`--upscaler FILE`) is keyed by its name and bytes.
pub fn model_key(dir: &Path) -> Result<String> {
    let name = crate::models::pipeline::model_name(dir);
    if dir.is_file() {
        crate::weights::regular_file(dir)?;
        return Ok(format!("{name}@{:016x}", hash_file(FNV_OFFSET, dir)?));
    }
    let mut walk = Walk::default();
    walk.folder(dir, Path::new(""))?;
    let mut files = walk.files;
    files.sort();
    let mut hash = FNV_OFFSET;
    for rel in &files {
        let path = dir.join(rel);
        // `/` on every platform, so a farm of mixed hosts agrees on names.
        let name: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
        hash = fnv1a(hash, name.join("/").as_bytes());
        hash = hash_file(hash, &path)?;
    }
    Ok(format!("{name}@{hash:016x}"))
}

/// LoRA files already opened in a batch: path → (name, data-section sha256).
pub type LoraHashes = HashMap<PathBuf, (String, String)>;

/// The model key of a job with LoRAs (`--lora`, a job's `lora`): `key` then
/// `+NAME:WEIGHT@SHA256` per LoRA (16 hex digits of its data-section hash), so
/// images made with a LoRA, or at another weight, get other names than those
/// made without. Each file is opened (and checked) once per batch (`hashes`).
pub fn with_loras(key: &str, loras: &[LoraSpec], hashes: &mut LoraHashes) -> Result<String> {
    loras.iter().try_fold(key.to_string(), |key, spec| {
        let (name, hash) = match hashes.get(&spec.path) {
            Some(known) => known.clone(),
            None => {
                let lora = Lora::open(spec)?;
                let known = (lora.name, lora.hash);
                hashes.insert(spec.path.clone(), known.clone());
                known
            }
        };
        Ok(format!("{key}+{name}:{}@{}", spec.weight, &hash[..16]))
    })
}

/// The length then the bytes of the regular file at `path`, streamed (a
/// checkpoint may be larger than memory), into `hash`.
fn hash_file(hash: u64, path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path);
    let len = meta
        .map_err(|e| Error::model(path, format!("cannot read: {e}")))?
        .len();
    let mut hash = fnv1a(hash, &len.to_le_bytes());
    let read = crate::weights::stream_file(path, |chunk| hash = fnv1a(hash, chunk))?;
    if read != len {
        return Err(Error::model(
            path,
            format!("changed while being read ({len} bytes, then {read})"),
        ));
    }
    Ok(hash)
}

/// A walk of a model folder: the regular files found so far, and the folders
/// (as canonical paths) that lead to the one being listed, to tell a link
/// loop from a folder. A diffusers folder is two levels deep and holds a few
/// dozen files, a sharded checkpoint a few hundred.
#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    ancestors: Vec<PathBuf>,
    entries: usize,
}

impl Walk {
    const MAX_DEPTH: usize = 16;
    const MAX_ENTRIES: usize = 100_000;

    /// Regular files under `dir/rel`, as paths relative to `dir`, hidden ones skipped.
    /// Links are followed (a model folder made of links to shared weights is hashed
    /// by what the links point at), each checked for what it points at.
    fn folder(&mut self, dir: &Path, rel: &Path) -> Result<()> {
        let here = dir.join(rel);
        let unlisted = |e: std::io::Error| Error::model(&here, format!("cannot list: {e}"));
        let canonical = here.canonicalize().map_err(unlisted)?;
        if self.ancestors.contains(&canonical) {
            return Err(Error::model(
                &here,
                format!(
                    "a link loop: this folder is {}, which contains it",
                    canonical.display()
                ),
            ));
        }
        if self.ancestors.len() >= Self::MAX_DEPTH {
            return Err(Error::model(
                &here,
                format!(
                    "more than {} folders deep: not a model folder",
                    Self::MAX_DEPTH
                ),
            ));
        }
        self.ancestors.push(canonical);
        for entry in std::fs::read_dir(&here).map_err(unlisted)? {
            let name = entry.map_err(unlisted)?.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            self.entries += 1;
            if self.entries > Self::MAX_ENTRIES {
                return Err(Error::model(
                    dir,
                    format!(
                        "more than {} files and folders: not a model folder",
                        Self::MAX_ENTRIES
                    ),
                ));
            }
            self.entry(dir, &rel.join(&name))?;
        }
        self.ancestors.pop();
        Ok(())
    }

    /// One entry: a folder is walked, a regular file kept, anything else refused
    /// by the one check every model reader uses (by what a link points at, never
    /// by opening it).
    fn entry(&mut self, dir: &Path, rel: &Path) -> Result<()> {
        let path = dir.join(rel);
        crate::weights::regular_file(&path)?;
        let meta = std::fs::metadata(&path)
            .map_err(|e| Error::model(&path, format!("cannot read: {e}")))?;
        if meta.is_dir() {
            self.folder(dir, rel)
        } else {
            self.files.push(rel.to_path_buf());
            Ok(())
        }
    }
}

/// `slug-of-the-prompt-0123456789abcdef.png`: up to 32 characters of the prompt
/// (lowercase letters, digits, `-`) and 64 bits of FNV-1a over the canonical
/// parameters' JSON. FNV-1a, not std's hasher: the name must not change between
/// Rust versions.
pub fn stable_name(r: &Request, model: &str) -> String {
    let canonical = Canonical {
        model,
        prompt: &r.prompt,
        seed: r.seed,
        size: r.size,
        steps: r.steps,
        candidates: r.candidates,
        guidance: r.guidance,
        sampler: r.sampler.map(Sampler::cli_name),
        upscale: r.upscale,
        score_every: r.score_every,
        until_score: r.until_score,
        until_margin: r.until_margin,
        schedule: r.schedule.as_ref().map(|sch| sch.text.as_str()),
        start: r.start.as_ref().map(start_key),
        negative: r.negative.as_deref().filter(|n| !n.trim().is_empty()),
        karras: r.karras,
        precision: (r.precision != Precision::Auto).then(|| r.precision.to_string()),
    };
    let json = serde_json::to_string(&canonical).expect("plain data serializes");
    let hash = fnv1a(FNV_OFFSET, json.as_bytes());
    let mut slug = String::new();
    for c in r.prompt.chars().flat_map(char::to_lowercase) {
        if slug.len() >= 32 {
            break;
        }
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        format!("{hash:016x}.png")
    } else {
        format!("{slug}-{hash:016x}.png")
    }
}
