//! Render farms: `easel batch jobs.jsonl --out DIR` runs one job per line of a
//! JSON Lines file on one loaded [`Engine`], and is safe to kill and rerun.
//!
//! - A job's output name is stable: its `out` field, or a slug of its prompt and a
//!   hash of its canonical parameters (after defaults), so a rerun finds finished work
//!   and skips it.
//! - Outputs are written atomically ([`write_atomic`]): a kill at any instant leaves
//!   either a complete PNG or none (and perhaps a `.NAME.PID.tmp`, removed by the next
//!   run of the same shard). A file already at a job's name is trusted only if it is a
//!   whole PNG; a broken one is rendered again, and the manifest says so.
//! - One run per shard and folder at a time (`folder::Lock`); jobs write only inside
//!   the folder, never through a link, and never over anything but a regular file.
//! - `DIR/manifest.jsonl` gets one line per finished or failed job, fsynced.
//! - Sharding: job `i` (its 0-based line number) belongs to shard `i mod N`. The
//!   engine does not distribute work; Slurm job arrays or Kubernetes Indexed Jobs do,
//!   and [`Shard::from_env`] reads their variables.
//!
//! A job line is read and named in `jobs` and `naming`, dealt to its shard in
//! `shard`, and recorded in `manifest`; `folder` guards what a run may touch in the
//! output folder; this file runs a shard's jobs in order.

mod folder;
mod jobs;
mod manifest;
mod naming;
mod shard;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

pub use jobs::{parse_jobs, parse_size, Defaults, Entry, Job, JobModel};
pub use manifest::MANIFEST;
pub use naming::{model_key, stable_name, with_loras, LoraHashes};
pub use shard::Shard;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::lora::LoraSpec;
use crate::output::{encode_png, write_atomic};
use crate::request::Image;
use folder::Found;
use manifest::{Manifest, Record};

/// How a batch runs.
pub struct Batch<'a> {
    pub out_dir: &'a Path,
    pub shard: Shard,
    /// Where a line per job goes, and each job's end (`None`: nowhere, `-q`).
    pub report: Option<&'a dyn Report>,
    /// Set to a signal number (by a signal handler) to stop after the current job.
    pub stop: &'a AtomicUsize,
}

/// Where a batch reports while it runs. The CLI writes the lines to stderr as they
/// are, or, on a terminal, above an overall bar that [`Report::finished`] moves.
pub trait Report {
    /// One line about the batch (`easel: [0/1] 1/3 job 0: done ...`).
    fn line(&self, line: &str);
    /// A job is through (done, skipped or failed); `so_far` counts them.
    fn finished(&self, so_far: &Summary) {
        let _ = so_far;
    }
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

/// Run this shard's jobs one after another. `load` opens the engine with a job's
/// LoRAs when the first job needs rendering (a rerun with every output present
/// touches no GPU), and again when a job asks for other LoRAs than the loaded ones.
/// Errors are for the batch as a whole (output folder, model, adapter); a job's own
/// failure is recorded in the manifest and the summary.
pub fn run(
    entries: &[Entry],
    batch: &Batch,
    load: impl Fn(&[LoraSpec]) -> Result<Engine>,
) -> Result<Summary> {
    let started = Instant::now();
    let dir = batch.out_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| crate::bad_input!("--out {}: cannot create: {e}", dir.display()))?;
    // Held until the batch returns: a second run of this shard here fails (exit 2).
    let _lock = folder::Lock::take(dir, batch.shard)?;
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| batch.shard.contains(e.index))
        .collect();
    folder::remove_stale_temps(dir, &mine)?;
    let manifest_path = dir.join(MANIFEST);
    let mut worker = Worker {
        batch,
        manifest: Manifest::open(&manifest_path)?,
        summary: Summary {
            shard: batch.shard.to_string(),
            jobs: mine.len(),
            manifest: manifest_path.display().to_string(),
            ..Summary::default()
        },
        load,
        engine: None,
    };
    for (n, entry) in mine.iter().enumerate() {
        if worker.stopped(mine.len() - n) {
            break;
        }
        let tag = format!("{}/{} job {}", n + 1, mine.len(), entry.index);
        worker.job(entry, &tag)?;
        if let Some(report) = batch.report {
            report.finished(&worker.summary);
        }
    }
    Ok(worker.finish(started))
}

/// A batch under way: its manifest, its counts so far, and the engine once a job
/// has needed it.
struct Worker<'a, L> {
    batch: &'a Batch<'a>,
    manifest: Manifest,
    summary: Summary,
    /// Opens the engine with the given LoRAs.
    load: L,
    /// The engine and the LoRAs it was loaded with.
    engine: Option<(Vec<LoraSpec>, Engine)>,
}

impl<L: Fn(&[LoraSpec]) -> Result<Engine>> Worker<'_, L> {
    fn say(&self, line: String) {
        if let Some(report) = self.batch.report {
            report.line(&format!("easel: [{}] {line}", self.batch.shard));
        }
    }

    /// Has a signal asked the batch to stop? If so the `left` jobs not reached are
    /// counted as not run.
    fn stopped(&mut self, left: usize) -> bool {
        let signal = self.batch.stop.load(Ordering::SeqCst);
        if signal == 0 {
            return false;
        }
        self.summary.interrupted_by = Some(signal);
        self.summary.not_run = left;
        self.say(format!("signal {signal}: stopping; {left} jobs not run"));
        true
    }

    /// One job: failed if its line was bad or its output cannot be written, skipped if
    /// a whole PNG is there, else rendered; the manifest gets a line for each but the skip.
    fn job(&mut self, entry: &Entry, tag: &str) -> Result<()> {
        let shard = self.batch.shard;
        let job = match &entry.job {
            Ok(job) => job,
            Err(message) => {
                let record = Record::failed(entry.index, None, message, shard, 0.0);
                return self.failed(&record, message, tag);
            }
        };
        let dir = self.batch.out_dir;
        let name = job.output.display().to_string();
        let broken = match folder::found(dir, &job.output) {
            Ok(Found::Whole) => {
                self.summary.skipped += 1;
                self.say(format!("{tag}: skipped, {name} exists"));
                return Ok(());
            }
            Ok(Found::Nothing) => None,
            Ok(Found::Broken(why)) => Some(format!("{name} was there but {why}: rendered again")),
            Err(message) => {
                let record = Record::failed(entry.index, Some((job, &name)), &message, shard, 0.0);
                return self.failed(&record, &message, tag);
            }
        };
        if let Err(e) = self.engine(&job.loras) {
            // A LoRA that does not fit the model fails its jobs, not the batch.
            if job.loras.is_empty() || e.exit_code() != 2 {
                return Err(e);
            }
            let message = e.to_string();
            let record = Record::failed(entry.index, Some((job, &name)), &message, shard, 0.0);
            return self.failed(&record, &message, tag);
        }
        let engine = &self.engine.as_ref().expect("loaded").1;
        let t = Instant::now();
        let rendered = render(engine, job, dir);
        let seconds = t.elapsed().as_secs_f64();
        match rendered {
            Ok(image) => {
                let record = Record::done(entry.index, job, &name, &image, shard, seconds)
                    .rerendered(broken.as_deref());
                self.manifest.append(&record)?;
                self.summary.done += 1;
                let note = broken.map(|b| format!("; {b}")).unwrap_or_default();
                self.say(format!("{tag}: done {name} ({seconds:.2} s{note})"));
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                let record =
                    Record::failed(entry.index, Some((job, &name)), &message, shard, seconds);
                self.failed(&record, &message, tag)
            }
        }
    }

    fn failed(&mut self, record: &Record, message: &str, tag: &str) -> Result<()> {
        self.manifest.append(record)?;
        self.summary.failed += 1;
        self.say(format!("{tag}: FAILED: {message}"));
        Ok(())
    }

    /// Load the engine with `loras` unless it is loaded with them already
    /// (load times add up in the summary's `load_seconds`). The model loaded
    /// before is dropped first, so two never hold GPU memory at once.
    fn engine(&mut self, loras: &[LoraSpec]) -> Result<()> {
        if self.engine.as_ref().is_some_and(|(l, _)| l == loras) {
            return Ok(());
        }
        self.engine = None;
        let t = Instant::now();
        let engine = (self.load)(loras)?;
        self.summary.load_seconds += t.elapsed().as_secs_f64();
        self.engine = Some((loras.to_vec(), engine));
        Ok(())
    }

    fn finish(mut self, started: Instant) -> Summary {
        let summary = &mut self.summary;
        summary.seconds = started.elapsed().as_secs_f64();
        summary.images_per_hour = if summary.seconds > 0.0 {
            summary.done as f64 * 3600.0 / summary.seconds
        } else {
            0.0
        };
        self.summary
    }
}

/// Render `job` into `dir`: its folders made, and the PNG written atomically. The
/// folders are checked again (before and after they are made): a link that appeared
/// inside `--out` during the render is refused, not followed.
fn render(engine: &Engine, job: &Job, dir: &Path) -> Result<Image> {
    let image = engine.generate(&job.request)?;
    let png = encode_png(&image.rgba, image.width, image.height, &image.parameters)?;
    let path = dir.join(&job.output);
    let inside = || folder::check_inside(dir, &job.output).map_err(Error::BadInput);
    inside()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    inside()?;
    write_atomic(&path, &png)?;
    Ok(image)
}
