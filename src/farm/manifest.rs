//! `DIR/manifest.jsonl`: one JSON line per finished or failed job, appended and
//! fsynced as each job ends, so what a killed batch did is on disk line by line.
//! Shards of one batch share the file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Job, Shard};
use crate::error::{Error, Result};
use crate::lora::LoraUsed;
use crate::output::open_regular;
use crate::request::Image;

/// The manifest's file name inside the output folder.
pub const MANIFEST: &str = "manifest.jsonl";

/// One manifest line.
#[derive(Serialize)]
pub(super) struct Record<'a> {
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
    /// Why a file already at the job's name was not trusted and was rendered again
    /// (empty, cut short, not a PNG).
    rerendered: Option<String>,
    /// The LoRAs merged into the model (`--lora`), when there were any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    loras: Vec<LoraUsed>,
}

impl<'a> Record<'a> {
    /// Job `index` rendered `image` into `name` in `seconds`.
    pub(super) fn done(
        index: usize,
        job: &'a Job,
        name: &str,
        image: &Image,
        shard: Shard,
        seconds: f64,
    ) -> Self {
        Record {
            index,
            output: Some(name.to_string()),
            status: "done",
            seconds,
            error: None,
            seed: Some(job.request.seed),
            steps_run: Some(image.steps_run),
            score: image.scores.last().copied(),
            prompt: Some(&job.request.prompt),
            shard: shard.to_string(),
            pid: std::process::id(),
            rerendered: None,
            loras: image.parameters.loras.clone(),
        }
    }

    /// The record of a job whose output was there but broken (`why`), and was
    /// rendered again.
    pub(super) fn rerendered(self, why: Option<&str>) -> Self {
        Record {
            rerendered: why.map(str::to_string),
            ..self
        }
    }

    /// Job `index` failed with `message`; `job` (with its output name) is `None`
    /// when its line did not parse.
    pub(super) fn failed(
        index: usize,
        job: Option<(&'a Job, &str)>,
        message: &str,
        shard: Shard,
        seconds: f64,
    ) -> Self {
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
            rerendered: None,
            loras: Vec::new(),
        }
    }
}

/// `manifest.jsonl`, opened for appending. Each record is one `write` of one line
/// (O_APPEND: shards on one machine never interleave), then `sync_data`, so a line
/// that is there survives a power cut.
pub(super) struct Manifest {
    file: File,
    path: PathBuf,
}

impl Manifest {
    /// Open (or create) `path`; a link or a non-regular file there is refused (exit 2),
    /// not appended to or through.
    pub(super) fn open(path: &Path) -> Result<Self> {
        let mut options = OpenOptions::new();
        options.create(true).append(true).read(true);
        let mut file = open_regular(path, &options)?;
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

    pub(super) fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record).expect("plain data serializes");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }
}
