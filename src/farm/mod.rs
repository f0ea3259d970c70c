//! Render farms: `easel batch jobs.jsonl --out DIR` runs one job per line of a
//! JSON Lines file on one loaded [`Engine`], and is safe to kill and rerun.
//!
//! - A job's output name is stable: its `out` field, or a slug of its prompt and a
//!   hash of its canonical parameters (after defaults), so a rerun finds finished work
//!   and skips it.
//! - Outputs are written atomically ([`write_atomic`]): a kill at any instant leaves
//!   either a complete PNG or none (and perhaps a `.NAME.PID.tmp`, removed by the next
//!   run of the same shard).
//! - `DIR/manifest.jsonl` gets one line per finished or failed job, fsynced.
//! - Sharding: job `i` (its 0-based line number) belongs to shard `i mod N`. The
//!   engine does not distribute work; Slurm job arrays or Kubernetes Indexed Jobs do,
//!   and [`Shard::from_env`] reads their variables.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, Request};
use crate::error::{Error, Result};
use crate::output::{encode_png, write_atomic};
use crate::phases::Schedule;
use crate::schedulers::Sampler;

/// The manifest's file name inside the output folder.
pub const MANIFEST: &str = "manifest.jsonl";

/// What a job line leaves out comes from a template request (the command
/// line's flags); its prompt is not used.
pub type Defaults = Request;

/// One line of the job file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobLine {
    prompt: String,
    seed: Option<u64>,
    size: Option<String>,
    steps: Option<usize>,
    candidates: Option<usize>,
    guidance: Option<f32>,
    sampler: Option<String>,
    upscale: Option<usize>,
    /// `--schedule` phases.
    schedule: Option<String>,
    out: Option<String>,
}

/// A job ready to run: what to make and where it goes (relative to the output folder).
#[derive(Clone, Debug)]
pub struct Job {
    pub request: Request,
    pub output: PathBuf,
}

/// A line of the job file: its index (0-based line number) and the job, or why it is bad.
#[derive(Debug)]
pub struct Entry {
    pub index: usize,
    pub job: std::result::Result<Job, String>,
}

/// `WxH` (also `WXH`), e.g. `32x32`.
pub fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("size `{s}`: expected WxH, e.g. 32x32"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("size `{s}`: `{v}` is not a size"))
    };
    Ok((n(w)?, n(h)?))
}

/// Parse a job file. Blank lines are not jobs but keep their index, so a job's index is
/// always its line number minus one. `model` ([`model_key`]: the model folder's name
/// and contents) is part of each job's hash: another model makes other images, under
/// other names.
pub fn parse_jobs(text: &str, defaults: &Defaults, model: &str) -> Vec<Entry> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| Entry {
            index,
            job: parse_job(line, defaults, model),
        })
        .collect()
}

fn parse_job(line: &str, d: &Defaults, model: &str) -> std::result::Result<Job, String> {
    let j: JobLine = serde_json::from_str(line).map_err(|e| format!("bad job line: {e}"))?;
    // Checks that need no GPU; sizes the model cannot make fail in `generate`.
    crate::prompt::parse(&j.prompt).map_err(|e| e.to_string())?;
    let size = match &j.size {
        Some(s) => Some(parse_size(s)?),
        None => d.size,
    };
    let steps = j.steps.or(d.steps);
    if steps == Some(0) {
        return Err("steps 0: need at least 1 step".into());
    }
    let sampler = match &j.sampler {
        Some(s) => Some(Sampler::parse(s).map_err(|e| e.to_string())?),
        None => d.sampler,
    };
    let schedule = match &j.schedule {
        Some(text) => Some(Schedule::parse(text).map_err(|e| e.to_string())?),
        None => d.schedule.clone(),
    };
    let request = Request {
        prompt: j.prompt,
        seed: j.seed.unwrap_or(d.seed),
        size,
        steps,
        candidates: j.candidates.unwrap_or(d.candidates),
        guidance: j.guidance.or(d.guidance),
        sampler,
        upscale: j.upscale.unwrap_or(d.upscale),
        schedule,
        ..d.clone()
    };
    let output = match &j.out {
        Some(out) => checked_out(out)?,
        None => PathBuf::from(stable_name(&request, model)),
    };
    Ok(Job { request, output })
}

/// An `out` field: a relative path inside the output folder; `.png` added if it has
/// no extension.
fn checked_out(out: &str) -> std::result::Result<PathBuf, String> {
    let path = PathBuf::from(out);
    let inside = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if out.is_empty() || !inside || path.file_name().is_none() || out == MANIFEST {
        return Err(format!(
            "out `{out}`: must be a relative file path inside --out (no `..`, not absolute)"
        ));
    }
    Ok(if path.extension().is_none() {
        path.with_extension("png")
    } else {
        path
    })
}

/// Everything that decides the image, in a fixed order (the hash's input).
#[derive(Serialize)]
struct Canonical<'a> {
    model: &'a str,
    prompt: &'a str,
    seed: u64,
    size: Option<(usize, usize)>,
    steps: Option<usize>,
    candidates: usize,
    guidance: Option<f32>,
    sampler: Option<&'static str>,
    upscale: usize,
    score_every: Option<usize>,
    until_score: Option<f32>,
    until_margin: Option<f32>,
    /// Absent without phases, so names from before `schedule` existed still match.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<&'a str>,
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
pub fn model_key(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    model_files(dir, Path::new(""), &mut files)?;
    files.sort();
    let mut hash = FNV_OFFSET;
    for rel in &files {
        let path = dir.join(rel);
        let bytes =
            std::fs::read(&path).map_err(|e| Error::model(&path, format!("cannot read: {e}")))?;
        // `/` on every platform, so a farm of mixed hosts agrees on names.
        let name: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
        hash = fnv1a(hash, name.join("/").as_bytes());
        hash = fnv1a(hash, &(bytes.len() as u64).to_le_bytes());
        hash = fnv1a(hash, &bytes);
    }
    Ok(format!("{}@{hash:016x}", crate::engine::model_name(dir)))
}

/// Regular files under `dir/rel`, as paths relative to `dir`, hidden ones skipped.
fn model_files(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let here = dir.join(rel);
    let unlisted = |e: std::io::Error| Error::model(&here, format!("cannot list: {e}"));
    for entry in std::fs::read_dir(&here).map_err(unlisted)? {
        let entry = entry.map_err(unlisted)?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = rel.join(&name);
        // Follows links: a model folder made of links to shared weights is hashed by
        // what the links point at.
        if dir.join(&path).is_dir() {
            model_files(dir, &path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
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

/// This process's share of the jobs: those whose index ≡ `index` (mod `count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(crate::bad_input!(
                "shard {index}/{count}: need 0 <= I < N (shards are numbered from 0)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// `I/N`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || crate::bad_input!("--shard `{s}`: expected I/N, e.g. 3/16");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let num = |v: &str| v.trim().parse::<usize>().map_err(|_| bad());
        Shard::new(num(i)?, num(n)?)
    }

    /// The shard from the flags and the scheduler's environment (`var` looks a name up):
    /// `--shard I/N` wins; `--shards N` pairs with Kubernetes' `JOB_COMPLETION_INDEX`;
    /// with neither, a Slurm array task is shard `(ID - MIN) / STEP` of
    /// `SLURM_ARRAY_TASK_COUNT`; otherwise every job is ours. Contradictions are errors,
    /// not guesses: a farm that silently ran every job in every task would redo the
    /// whole batch N times.
    pub fn from_env(
        shard: Option<&str>,
        shards: Option<usize>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let num = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    crate::bad_input!("{name}=`{v}`: expected a non-negative integer")
                }),
            }
        };
        match (shard, shards) {
            (Some(_), Some(_)) => Err(crate::bad_input!(
                "--shard I/N and --shards N: give one (--shards N takes I from JOB_COMPLETION_INDEX)"
            )),
            (Some(s), None) => Shard::parse(s),
            (None, Some(n)) => match num("JOB_COMPLETION_INDEX")? {
                Some(i) => Shard::new(i, n),
                None => Err(crate::bad_input!(
                    "--shards {n}: JOB_COMPLETION_INDEX is not set (run as a Kubernetes Indexed Job, or use --shard I/N)"
                )),
            },
            (None, None) => {
                if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
                    let count = num("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                        crate::bad_input!(
                            "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (use --shard I/N)"
                        )
                    })?;
                    let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
                    let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
                    if id < min || (id - min) % step != 0 {
                        return Err(crate::bad_input!(
                            "SLURM_ARRAY_TASK_ID={id} is not in the array (min {min}, step {step})"
                        ));
                    }
                    Shard::new((id - min) / step, count)
                } else if var("JOB_COMPLETION_INDEX").is_some() {
                    Err(crate::bad_input!(
                        "JOB_COMPLETION_INDEX is set: pass --shards N (the Job's completions), or --shard I/N"
                    ))
                } else {
                    Ok(Shard::ALL)
                }
            }
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        index % self.count == self.index
    }
}

/// How a batch runs.
pub struct Batch<'a> {
    pub out_dir: &'a Path,
    pub shard: Shard,
    /// Print a line per job and a summary on stderr.
    pub progress: bool,
    /// Set to a signal number (by a signal handler) to stop after the current job.
    pub stop: &'a AtomicUsize,
}

/// What a batch did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub shard: String,
    /// This shard's jobs.
    pub jobs: usize,
    pub done: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Jobs not reached because a signal stopped the batch.
    pub not_run: usize,
    /// The signal that stopped the batch, if one did.
    pub interrupted_by: Option<usize>,
    pub seconds: f64,
    /// Opening the adapter and loading the model (0 when every job was skipped).
    pub load_seconds: f64,
    /// Images made per hour of wall time, model load included.
    pub images_per_hour: f64,
    pub manifest: String,
}

/// One manifest line.
#[derive(Serialize)]
struct Record<'a> {
    index: usize,
    output: Option<String>,
    status: &'static str,
    seconds: f64,
    error: Option<String>,
    seed: Option<u64>,
    steps_run: Option<usize>,
    score: Option<f32>,
    prompt: Option<&'a str>,
    shard: String,
    pid: u32,
}

/// Run this shard's jobs one after another. `load` opens the engine, once, when the
/// first job needs rendering: a rerun with every output present touches no GPU.
/// Errors are for the batch as a whole (output folder, model, adapter); a job's own
/// failure is recorded in the manifest and the summary.
pub fn run(
    entries: &[Entry],
    batch: &Batch,
    load: impl FnOnce() -> Result<Engine>,
) -> Result<Summary> {
    let started = Instant::now();
    let dir = batch.out_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| crate::bad_input!("--out {}: cannot create: {e}", dir.display()))?;
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| batch.shard.contains(e.index))
        .collect();
    remove_stale_temps(dir, &mine)?;
    let manifest_path = dir.join(MANIFEST);
    let mut manifest = Manifest::open(&manifest_path)?;
    let mut summary = Summary {
        shard: batch.shard.to_string(),
        jobs: mine.len(),
        manifest: manifest_path.display().to_string(),
        ..Summary::default()
    };
    let mut load = Some(load);
    let mut engine: Option<Engine> = None;
    let say = |line: String| {
        if batch.progress {
            eprintln!("easel: [{}] {line}", batch.shard);
        }
    };
    for (n, entry) in mine.iter().enumerate() {
        let signal = batch.stop.load(Ordering::SeqCst);
        if signal != 0 {
            summary.interrupted_by = Some(signal);
            summary.not_run = mine.len() - n;
            say(format!(
                "signal {signal}: stopping; {} jobs not run",
                summary.not_run
            ));
            break;
        }
        let tag = format!("{}/{} job {}", n + 1, mine.len(), entry.index);
        let job = match &entry.job {
            Ok(job) => job,
            Err(message) => {
                manifest.append(&failed(entry.index, None, message, batch.shard, 0.0))?;
                summary.failed += 1;
                say(format!("{tag}: FAILED: {message}"));
                continue;
            }
        };
        let path = dir.join(&job.output);
        let name = job.output.display().to_string();
        if path.exists() {
            summary.skipped += 1;
            say(format!("{tag}: skipped, {name} exists"));
            continue;
        }
        if engine.is_none() {
            let t = Instant::now();
            let load = load.take().expect("loaded once");
            engine = Some(load()?);
            summary.load_seconds = t.elapsed().as_secs_f64();
        }
        let engine = engine.as_ref().expect("loaded above");
        let t = Instant::now();
        match render(engine, job, &path) {
            Ok(image) => {
                let seconds = t.elapsed().as_secs_f64();
                manifest.append(&Record {
                    index: entry.index,
                    output: Some(name.clone()),
                    status: "done",
                    seconds,
                    error: None,
                    seed: Some(job.request.seed),
                    steps_run: Some(image.steps_run),
                    score: image.scores.last().copied(),
                    prompt: Some(&job.request.prompt),
                    shard: batch.shard.to_string(),
                    pid: std::process::id(),
                })?;
                summary.done += 1;
                say(format!("{tag}: done {name} ({seconds:.2} s)"));
            }
            Err(e) => {
                let seconds = t.elapsed().as_secs_f64();
                let message = e.to_string();
                manifest.append(&failed(
                    entry.index,
                    Some((job, &name)),
                    &message,
                    batch.shard,
                    seconds,
                ))?;
                summary.failed += 1;
                say(format!("{tag}: FAILED: {message}"));
            }
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary.images_per_hour = if summary.seconds > 0.0 {
        summary.done as f64 * 3600.0 / summary.seconds
    } else {
        0.0
    };
    Ok(summary)
}

fn render(engine: &Engine, job: &Job, path: &Path) -> Result<crate::Image> {
    let image = engine.generate(&job.request)?;
    let png = encode_png(&image.rgba, image.width, image.height, &image.parameters)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    write_atomic(path, &png)?;
    Ok(image)
}

fn failed<'a>(
    index: usize,
    job: Option<(&'a Job, &str)>,
    message: &str,
    shard: Shard,
    seconds: f64,
) -> Record<'a> {
    Record {
        index,
        output: job.map(|(_, name)| name.to_string()),
        status: "failed",
        seconds,
        error: Some(message.to_string()),
        seed: job.map(|(j, _)| j.request.seed),
        steps_run: None,
        score: None,
        prompt: job.map(|(j, _)| j.request.prompt.as_str()),
        shard: shard.to_string(),
        pid: std::process::id(),
    }
}

/// Remove `.NAME.PID.tmp` files that a killed run left beside this shard's outputs.
/// Only this shard's names: shards share the folder, and another shard's live temp
/// file must not vanish under it. (A PID check would not do: shards run on other hosts.)
fn remove_stale_temps(dir: &Path, mine: &[&Entry]) -> Result<()> {
    let own = std::process::id().to_string();
    let mut by_folder: std::collections::HashMap<PathBuf, HashSet<String>> = Default::default();
    for job in mine.iter().filter_map(|e| e.job.as_ref().ok()) {
        let path = dir.join(&job.output);
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            continue;
        };
        by_folder
            .entry(parent.to_path_buf())
            .or_default()
            .insert(name.to_string_lossy().into_owned());
    }
    for (folder, names) in by_folder {
        let Ok(listing) = std::fs::read_dir(&folder) else {
            continue; // not created yet: nothing stale in it
        };
        for item in listing.flatten() {
            let file = item.file_name().to_string_lossy().into_owned();
            let stale = file
                .strip_prefix('.')
                .and_then(|f| f.strip_suffix(".tmp"))
                .and_then(|f| f.rsplit_once('.'))
                .is_some_and(|(name, pid)| {
                    names.contains(name)
                        && pid != own
                        && !pid.is_empty()
                        && pid.bytes().all(|b| b.is_ascii_digit())
                });
            if stale {
                std::fs::remove_file(item.path()).map_err(|e| Error::io(item.path(), e))?;
            }
        }
    }
    Ok(())
}

/// `manifest.jsonl`, opened for appending. Each record is one `write` of one line
/// (O_APPEND: shards on one machine never interleave), then `sync_data`, so a line
/// that is there survives a power cut.
struct Manifest {
    file: File,
    path: PathBuf,
}

impl Manifest {
    fn open(path: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        // A run killed mid-append may have left half a line: end it, so the next
        // record starts on a line of its own (readers skip the broken one).
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(|e| Error::io(path, e))?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(|e| Error::io(path, e))?;
            }
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record).expect("plain data serializes");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            seed: 5,
            size: Some((16, 16)),
            steps: Some(4),
            candidates: 2,
            upscale: 1,
            ..Request::new("")
        }
    }

    fn job(line: &str) -> std::result::Result<Job, String> {
        parse_job(line, &defaults(), "m")
    }

    #[test]
    fn job_lines_take_defaults_and_overrides() {
        let j = job(r#"{"prompt": "red apple"}"#).unwrap();
        assert_eq!(
            (j.request.seed, j.request.size, j.request.steps),
            (5, Some((16, 16)), Some(4))
        );
        let j = job(r#"{"prompt": "a", "seed": 9, "size": "32x16", "steps": 2, "sampler": "euler_a", "upscale": 2, "out": "x/y"}"#).unwrap();
        assert_eq!(
            (j.request.seed, j.request.size, j.request.steps),
            (9, Some((32, 16)), Some(2))
        );
        assert_eq!(j.request.sampler, Some(Sampler::EulerAncestral));
        assert_eq!(j.output, PathBuf::from("x/y.png"));
        let j = job(r#"{"prompt": "a", "schedule": "5 k=8; rest"}"#).unwrap();
        assert_eq!(j.request.schedule.unwrap().phases.len(), 2);
    }

    #[test]
    fn bad_job_lines_say_why() {
        for (line, wanted) in [
            ("{not json", "bad job line"),
            (r#"{"seed": 1}"#, "missing field `prompt`"),
            (r#"{"prompt": "a", "step": 1}"#, "unknown field `step`"),
            (r#"{"prompt": ""}"#, "empty"),
            (r#"{"prompt": "a", "size": "16"}"#, "expected WxH"),
            (r#"{"prompt": "a", "steps": 0}"#, "steps 0"),
            (r#"{"prompt": "a", "sampler": "plms"}"#, "unknown sampler"),
            (r#"{"prompt": "a", "schedule": "5 k=0"}"#, "candidates=0"),
            (r#"{"prompt": "a", "out": "../x.png"}"#, "inside --out"),
            (r#"{"prompt": "a", "out": "/tmp/x.png"}"#, "inside --out"),
        ] {
            let e = job(line).unwrap_err();
            assert!(e.contains(wanted), "{line}: `{e}` lacks `{wanted}`");
        }
    }

    #[test]
    fn names_are_stable_and_follow_the_parameters() {
        let a = job(r#"{"prompt": "Red apple, on a table!"}"#)
            .unwrap()
            .output;
        let b = job(r#"{"seed": 5, "prompt": "Red apple, on a table!"}"#)
            .unwrap()
            .output;
        let c = job(r#"{"prompt": "Red apple, on a table!", "seed": 6}"#)
            .unwrap()
            .output;
        assert_eq!(a, b, "defaults spelled out name the same job");
        assert_ne!(a, c);
        let name = a.to_str().unwrap();
        assert!(name.starts_with("red-apple-on-a-table-"), "{name}");
        assert!(name.ends_with(".png") && name.len() == "red-apple-on-a-table-".len() + 20);
        // Pinned: a rerun after an upgrade must find the same files.
        let r = Request {
            seed: 1,
            ..Request::new("x")
        };
        assert_eq!(stable_name(&r, "m"), "x-ea3fb751b3ea4f33.png");
        assert_ne!(stable_name(&r, "other-model"), stable_name(&r, "m"));
    }

    #[test]
    fn indices_are_line_numbers() {
        let text = "{\"prompt\": \"a\"}\n\n{\"prompt\": \"b\"}\nnope\n";
        let entries = parse_jobs(text, &defaults(), "m");
        let indices: Vec<usize> = entries.iter().map(|e| e.index).collect();
        assert_eq!(indices, [0, 2, 3]);
        assert!(entries[2].job.is_err());
    }

    #[test]
    fn shards_come_from_flags_slurm_or_kubernetes() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = env(&[]);
        assert_eq!(Shard::from_env(None, None, none).unwrap(), Shard::ALL);
        assert_eq!(
            Shard::from_env(Some("3/16"), None, none).unwrap(),
            Shard::new(3, 16).unwrap()
        );
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ]);
        assert_eq!(
            Shard::from_env(None, None, slurm).unwrap(),
            Shard::new(4, 8).unwrap()
        );
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2")]);
        assert_eq!(
            Shard::from_env(None, Some(4), k8s).unwrap(),
            Shard::new(2, 4).unwrap()
        );
        for (shard, shards, var, wanted) in [
            (Some("4/4"), None, none, "0 <= I < N"),
            (Some("1/0"), None, none, "0 <= I < N"),
            (Some("x"), None, none, "expected I/N"),
            (Some("1/4"), Some(4), none, "give one"),
            (None, Some(4), none, "JOB_COMPLETION_INDEX is not set"),
            (None, None, k8s, "pass --shards N"),
            (None, Some(2), k8s, "0 <= I < N"),
        ] {
            let e = Shard::from_env(shard, shards, var).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(wanted), "{e}");
        }
        let e = Shard::from_env(None, None, env(&[("SLURM_ARRAY_TASK_ID", "1")])).unwrap_err();
        assert!(e.to_string().contains("SLURM_ARRAY_TASK_COUNT"), "{e}");
    }
}
