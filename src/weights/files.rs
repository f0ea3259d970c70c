//! Which files hold a component's weights: diffusers' or transformers' single
//! file, the shards an index lists, or the folder's only `.safetensors`. Anything
//! else is ambiguous and an error naming what was found.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::read_json;
use crate::error::{Error, Result};

/// diffusers' and transformers' single-file weight names, in the order tried.
pub const WEIGHT_FILES: [&str; 2] = ["diffusion_pytorch_model.safetensors", "model.safetensors"];

/// The weight files of a component folder: diffusers' or transformers' single
/// file, else the shards a `*.safetensors.index.json` lists, else the folder's
/// only `*.safetensors`. Anything else is ambiguous and an error.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::model(dir, "no such folder"));
    }
    for name in WEIGHT_FILES {
        if dir.join(name).is_file() {
            return Ok(vec![dir.join(name)]);
        }
    }
    let listed = list_dir(dir)?;
    let with_suffix = |suffix: &str| -> Vec<PathBuf> {
        listed
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .cloned()
            .collect()
    };
    let indexes = with_suffix(".safetensors.index.json");
    if let [index] = indexes.as_slice() {
        return shard_files(index);
    }
    let files = with_suffix(".safetensors");
    match (indexes.len(), files.as_slice()) {
        (0, [one]) => Ok(vec![one.clone()]),
        (0, []) => Err(Error::model(dir, "no .safetensors file in this folder")),
        _ => Err(Error::model(
            dir,
            format!(
                "ambiguous weights: expected {} or one index json, found {}",
                WEIGHT_FILES.join(" or "),
                names_of(&[indexes, files].concat())
            ),
        )),
    }
}

/// Sorted entries of a folder.
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::model(dir, e.to_string()))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    Ok(paths)
}

fn names_of(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    names.join(", ")
}

/// The distinct files a sharded checkpoint's `weight_map` points at, in name order.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let json = read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::model(index, "no `weight_map` object"))?;
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::model(index, format!("weight_map.{tensor}: expected a file name"))
        })?;
        files.insert(file.to_string());
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Refuse to read `path` unless it is a regular file (or a link to one): a
/// FIFO would block the reader forever and a device such as /dev/zero never
/// ends. A missing file is left to the reader, which says so.
pub fn regular_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() && !meta.is_dir() => Err(Error::model(
            path,
            "not a regular file (a FIFO, socket or device): model files must be files",
        )),
        _ => Ok(()),
    }
}

/// Read the regular file at `path` in 1 MiB chunks, handing each to `chunk`
/// (a checkpoint may be larger than memory, and is never held whole); returns
/// its length, which must not change while it is read.
pub fn stream_file(path: &Path, mut chunk: impl FnMut(&[u8])) -> Result<u64> {
    use std::io::Read;
    regular_file(path)?;
    let unreadable = |e: std::io::Error| Error::model(path, format!("cannot read: {e}"));
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(unreadable)?;
        if n == 0 {
            break;
        }
        chunk(&buf[..n]);
        read += n as u64;
    }
    if read != len {
        return Err(Error::model(
            path,
            format!("changed while being read ({len} bytes, then {read})"),
        ));
    }
    Ok(len)
}
