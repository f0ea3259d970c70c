//! What a batch may touch in its output folder, and what it trusts there.
//!
//! - One run per (folder, shard): [`Lock`] holds `DIR/.easel-batch.I-of-N.lock` with an
//!   advisory lock (`flock` on Unix, `LockFileEx` on Windows; NFS passes `flock` on to
//!   the server as a POSIX lock) for the process's life, so a second run of the same
//!   shard on the same folder fails at once, naming the first, instead of rendering
//!   every job again and deleting its live temp files.
//! - A job writes only inside `--out`: a symbolic link (or a file) where a job's
//!   folder should be is refused ([`check_inside`]), as is a link at the output itself.
//! - A file already at a job's name is trusted as finished only if it is a whole PNG
//!   ([`found`]): a regular file with the PNG signature that ends with an IEND chunk.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use super::{Entry, Shard};
use crate::error::{Error, Result};
use crate::output::{check_target, open_regular};

/// This process's claim on a shard of an output folder, released (and its file
/// removed) when dropped; a killed process's claim ends with it.
pub(super) struct Lock {
    path: PathBuf,
    // Closed after `drop` has removed the name: the lock ends last.
    _file: File,
}

impl Lock {
    /// Claim `shard` of `dir`, or fail (exit 2) naming the run that holds it.
    pub(super) fn take(dir: &Path, shard: Shard) -> Result<Lock> {
        let name = format!(".easel-batch.{}-of-{}.lock", shard.index, shard.count);
        let path = dir.join(name);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true);
        loop {
            let mut file = open_regular(&path, &options).map_err(|e| match e {
                Error::Io { source, .. } => crate::bad_input!(
                    "--out {}: cannot create the lock file {}: {source}",
                    dir.display(),
                    path.display()
                ),
                other => other,
            })?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    return Err(crate::bad_input!(
                        "--out {}: shard {shard} is being rendered by another easel batch ({}; lock {}): \
                         wait for it or stop it, two runs of one shard would render every job twice",
                        dir.display(),
                        if holder.is_empty() { "pid unknown" } else { holder },
                        path.display()
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            // The run we waited on may have removed the name as it finished: a lock on
            // a file no longer at `path` claims nothing, so take the name anew.
            if still_named(&file, &path) {
                let holder = format!("pid {} on {}", std::process::id(), host());
                file.set_len(0)
                    .and_then(|()| file.write_all(holder.as_bytes()))
                    .map_err(|e| Error::io(&path, e))?;
                return Ok(Lock { path, _file: file });
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Unix only: elsewhere an open file cannot be removed, and the file stays.
        if cfg!(unix) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Is `file` still the file at `path`?
fn still_named(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => crate::output::same_inode(&a, &b),
        _ => false,
    }
}

/// This machine's name, for the lock file ("which run holds it").
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".into())
}

/// Refuse a job path whose folders inside `dir` are not real folders: a symbolic link
/// there would let the job write outside `--out`. Folders not made yet are fine
/// (`create_dir_all` makes real ones). The message is the job's failure.
pub(super) fn check_inside(dir: &Path, rel: &Path) -> std::result::Result<(), String> {
    let mut at = dir.to_path_buf();
    let folders: Vec<Component> = match rel.parent() {
        Some(parent) => parent.components().collect(),
        None => Vec::new(),
    };
    for part in folders {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Err(_) => return Ok(()),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{}: is a symbolic link inside --out; a job writes only inside --out",
                    at.display()
                ))
            }
            Ok(m) if !m.is_dir() => {
                return Err(format!(
                    "{}: is not a folder, and job output {} needs one there",
                    at.display(),
                    rel.display()
                ))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// What is at a job's output path.
#[derive(Debug, PartialEq)]
pub(super) enum Found {
    Nothing,
    /// A whole PNG: the job is done.
    Whole,
    /// A regular file that is not a whole PNG (why): rendered again over it.
    Broken(String),
}

/// What is at `dir/rel`, or why the job cannot write there (a link on the way or at
/// the name, something that is not a regular file).
pub(super) fn found(dir: &Path, rel: &Path) -> std::result::Result<Found, String> {
    check_inside(dir, rel)?;
    let path = dir.join(rel);
    check_target(&path).map_err(|e| e.to_string())?;
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(Error::io(&path, e).to_string()),
    };
    whole_png(&mut file)
        .map(|why| why.map_or(Found::Whole, Found::Broken))
        .map_err(|e| Error::io(&path, e).to_string())
}

/// `None` if `file` starts with the PNG signature and ends with an IEND chunk (what a
/// complete write leaves), else what is wrong. The middle is not decoded: a file that
/// was renamed into place was written whole, and this catches what else happens to one
/// (emptied, cut short, another format).
fn whole_png(file: &mut File) -> std::io::Result<Option<String>> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    // Length 0, `IEND`, its CRC.
    const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82];
    let len = file.metadata()?.len();
    if len < (SIGNATURE.len() + IEND.len()) as u64 {
        return Ok(Some(format!("{len} bytes, too short for a PNG")));
    }
    let mut head = [0u8; 8];
    file.read_exact(&mut head)?;
    if head != SIGNATURE {
        return Ok(Some("no PNG signature".into()));
    }
    let mut tail = [0u8; 12];
    file.seek(SeekFrom::End(-(IEND.len() as i64)))?;
    file.read_exact(&mut tail)?;
    if tail != IEND {
        return Ok(Some("cut short (no IEND chunk at its end)".into()));
    }
    Ok(None)
}

/// Remove `.NAME.PID.tmp` files that a killed run left beside this shard's outputs.
/// Only this shard's names: shards share the folder, and another shard's live temp
/// file must not vanish under it (a PID check would not do: shards run on other
/// hosts; a second run of this shard cannot get here, it holds no [`Lock`]). Folders
/// reached through a link are not listed: they are outside `--out`.
pub(super) fn remove_stale_temps(dir: &Path, mine: &[&Entry]) -> Result<()> {
    let own = std::process::id().to_string();
    let mut by_folder: HashMap<PathBuf, HashSet<String>> = Default::default();
    for job in mine.iter().filter_map(|e| e.job.as_ref().ok()) {
        if check_inside(dir, &job.output).is_err() {
            continue;
        }
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
