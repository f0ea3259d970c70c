//! Which model folder a run loads when none is named, so that `easel "red apple"`
//! works from any folder and one executable is all a machine needs.
//!
//! [`resolve`] is the one place the order is written (the CLI's `generate`, `batch`,
//! `inspect` and `bench` all call it):
//!
//! 1. `--model DIR`, as given;
//! 2. `EASEL_MODEL`, when set and not empty;
//! 3. with the `embedded-model` feature (on by default): the default model compiled
//!    into the executable, extracted once into the user's cache folder
//!    ([`embedded::extracted`]) and loaded from there like any other folder;
//! 4. without it: `easel-emoji` next to the executable, then
//!    `$XDG_DATA_HOME/easel/models/easel-emoji` (`~/.local/share/...`), then
//!    `weights/easel-emoji` in the current folder.
//!
//! Nothing found is bad input (exit 2), in one line that lists where it looked and
//! how to name a model.

#[cfg(feature = "embedded-model")]
pub mod embedded;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The default model's folder name, which is also its name in PNG metadata and in
/// the farm's output names (`models::pipeline::model_name`).
pub const DEFAULT_MODEL: &str = "easel-emoji";

/// The environment variable that names a model folder when `--model` does not.
pub const ENV: &str = "EASEL_MODEL";

/// The model folder to load: `given` (from `--model`) if any, else the default
/// model found in the order of the module docs.
pub fn resolve(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = env_path(ENV) {
        if !dir.exists() {
            return Err(Error::model(
                &dir,
                format!("model folder not found (named by {ENV})"),
            ));
        }
        return Ok(dir);
    }
    default_model()
}

/// The default model, when neither `--model` nor `EASEL_MODEL` names one.
#[cfg(feature = "embedded-model")]
pub fn default_model() -> Result<PathBuf> {
    embedded::extracted(&cache_home())
}

/// The default model, when neither `--model` nor `EASEL_MODEL` names one: the first
/// of [`search_path`] that exists.
#[cfg(not(feature = "embedded-model"))]
pub fn default_model() -> Result<PathBuf> {
    let candidates = search_path();
    if let Some(dir) = candidates.iter().find(|dir| dir.is_dir()) {
        return Ok(dir.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(Error::BadInput(format!(
        "no model: none of {} exists; name a model folder with --model DIR or {ENV}=DIR",
        looked.join(", ")
    )))
}

/// Where a build without the embedded model looks for `easel-emoji`, in order.
pub fn search_path() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join(DEFAULT_MODEL));
    }
    if let Some(data) = xdg_home("XDG_DATA_HOME", ".local/share") {
        dirs.push(data.join("easel").join("models").join(DEFAULT_MODEL));
    }
    dirs.push(Path::new("weights").join(DEFAULT_MODEL));
    dirs
}

/// The user's cache folder: `$XDG_CACHE_HOME`, else `~/.cache`, else (no home at
/// all, say a bare container) the system's temporary folder.
pub fn cache_home() -> PathBuf {
    xdg_home("XDG_CACHE_HOME", ".cache").unwrap_or_else(|| std::env::temp_dir().join("easel-cache"))
}

/// `$var` when it is an absolute path (the XDG spec says to ignore a relative one),
/// else `$HOME/fallback`.
fn xdg_home(var: &str, fallback: &str) -> Option<PathBuf> {
    match env_path(var) {
        Some(dir) if dir.is_absolute() => Some(dir),
        _ => env_path("HOME").map(|home| home.join(fallback)),
    }
}

/// An environment variable as a path; unset and empty are the same.
fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v: &OsString| !v.is_empty())
        .map(PathBuf::from)
}
