//! Which model a run loads when `--model` names none (src/model_dir.rs): the
//! embedded default model from any working folder, extracted once into the cache
//! byte for byte, safely when several first runs race; `EASEL_MODEL` before it,
//! `--model` before both; a missing `EASEL_MODEL` folder is exit 2 naming it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::binary::{self, stderr};
use common::files::TempDir;

/// The tiny pixel pipeline of tests/golden (fast to load, not the default model).
fn tiny() -> PathBuf {
    common::files::tiny_pipeline().to_path_buf()
}

/// `easel args` in `cwd` with the cache and data folders under `home`, and no
/// `EASEL_MODEL` unless `env` sets it.
fn easel_in(cwd: &Path, home: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = binary::command(args);
    command
        .current_dir(cwd)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("EASEL_MODEL")
        .envs(env.iter().copied());
    binary::output(&mut command)
}

#[test]
fn a_missing_easel_model_folder_is_exit_2_naming_it() {
    let dir = TempDir::new("model-env-missing");
    let missing = dir.path().join("no-such-model");
    for args in [&["red apple", "-o", "x.png"][..], &["inspect"][..]] {
        let output = easel_in(dir.path(), dir.path(), args, &[("EASEL_MODEL", &missing)]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert!(err.contains(missing.to_str().unwrap()), "{err}");
        assert!(err.contains("EASEL_MODEL"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    assert!(!dir.path().join("x.png").exists());
}

#[test]
fn easel_model_names_the_model_and_model_flag_wins() {
    let dir = TempDir::new("model-env");
    let tiny = tiny();
    let output = easel_in(
        dir.path(),
        dir.path(),
        &["inspect"],
        &[("EASEL_MODEL", &tiny)],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains(tiny.to_str().unwrap()), "{out}");
    // --model before EASEL_MODEL, even a missing one.
    let missing = dir.path().join("no-such-model");
    let args = ["inspect", tiny.to_str().unwrap()];
    let output = easel_in(dir.path(), dir.path(), &args, &[("EASEL_MODEL", &missing)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // Nothing extracted when a model is named.
    assert!(!dir.path().join("cache").exists());
}

#[cfg(feature = "embedded-model")]
mod embedded {
    use super::*;
    use easel::model_dir::embedded;

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    fn shipped() -> PathBuf {
        root().join("weights/easel-emoji")
    }

    /// Every file under `dir`, `/`-separated and relative to it, sorted.
    fn listing(dir: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap();
                    let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
                    out.push(parts.join("/"));
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    /// `dir` holds exactly the files of weights/easel-emoji, byte for byte.
    fn assert_same_as_shipped(dir: &Path) {
        assert_eq!(listing(dir), listing(&shipped()), "{}", dir.display());
        for rel in listing(dir) {
            let got = std::fs::read(dir.join(&rel)).unwrap();
            assert!(
                got == std::fs::read(shipped().join(&rel)).unwrap(),
                "{rel} differs"
            );
        }
    }

    /// The folder a run extracts the default model to under `home`.
    fn extracted_dir(home: &Path) -> PathBuf {
        let name = format!("easel-emoji-{}", embedded::hash());
        home.join("cache/easel/models")
            .join(name)
            .join("easel-emoji")
    }

    #[test]
    fn the_embedded_files_are_the_tracked_model() {
        let names: Vec<&str> = embedded::files().iter().map(|(rel, _)| *rel).collect();
        let git = Command::new("git")
            .args(["ls-files", "weights/easel-emoji"])
            .current_dir(root())
            .output();
        let tracked: Vec<String> = match git {
            Ok(out) if out.status.success() && !out.stdout.is_empty() => {
                let text = String::from_utf8(out.stdout).unwrap();
                let mut files: Vec<String> = text
                    .lines()
                    .map(|l| l.strip_prefix("weights/easel-emoji/").unwrap().to_string())
                    .collect();
                files.sort();
                files
            }
            // No git (a source tarball): the folder itself.
            _ => listing(&shipped()),
        };
        assert_eq!(names, tracked);
        for (rel, bytes) in embedded::files() {
            assert!(
                *bytes == std::fs::read(shipped().join(rel)).unwrap(),
                "{rel} differs"
            );
        }
    }

    #[test]
    fn extraction_is_byte_for_byte_and_repairs_a_damaged_folder() {
        let dir = TempDir::new("model-extract");
        let cache = dir.path().join("cache");
        let got = embedded::extracted(&cache).unwrap();
        assert_eq!(got, extracted_dir(dir.path()));
        assert_same_as_shipped(&got);
        // Nothing but the model is left beside it (no temporary folders).
        let models = cache.join("easel/models");
        let left: Vec<_> = std::fs::read_dir(&models).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");

        // A later run uses the folder as it is...
        let index = got.join("model_index.json");
        let modified = std::fs::metadata(&index).unwrap().modified().unwrap();
        assert_eq!(embedded::extracted(&cache).unwrap(), got);
        assert_eq!(
            std::fs::metadata(&index).unwrap().modified().unwrap(),
            modified
        );
        // ...unless a file is missing or cut short.
        std::fs::write(got.join("unet/config.json"), b"{}").unwrap();
        std::fs::remove_file(got.join("tokenizer/vocab.json")).unwrap();
        assert_eq!(embedded::extracted(&cache).unwrap(), got);
        assert_same_as_shipped(&got);
    }

    #[test]
    fn concurrent_first_runs_all_succeed() {
        let dir = TempDir::new("model-race");
        let runs: Vec<_> = (0..4)
            .map(|_| {
                binary::command(&["inspect"])
                    .current_dir(dir.path())
                    .env("XDG_CACHE_HOME", dir.path().join("cache"))
                    .env_remove("EASEL_MODEL")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for run in runs {
            let output = run.wait_with_output().unwrap();
            assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        }
        assert_same_as_shipped(&extracted_dir(dir.path()));
        let left: Vec<_> = std::fs::read_dir(dir.path().join("cache/easel/models"))
            .unwrap()
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn generate_from_another_folder_uses_the_embedded_model() {
        let dir = TempDir::new("model-default");
        let args = [
            "red apple",
            "--steps",
            "2",
            "--candidates",
            "1",
            "--upscale",
            "1",
            "-o",
            "out.png",
        ];
        let output = easel_in(dir.path(), dir.path(), &args, &[]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let png = std::fs::read(dir.path().join("out.png")).unwrap();
        // The metadata names the model as weights/easel-emoji would.
        let text = String::from_utf8_lossy(&png);
        assert!(text.contains("Model: easel-emoji,"), "{text:.400}");
        assert_same_as_shipped(&extracted_dir(dir.path()));
    }
}

#[cfg(not(feature = "embedded-model"))]
#[test]
fn no_model_anywhere_is_exit_2_saying_how_to_name_one() {
    let dir = TempDir::new("model-none");
    let output = easel_in(dir.path(), dir.path(), &["red apple"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("weights/easel-emoji"), "{err}");
    assert!(
        err.contains("--model") && err.contains("EASEL_MODEL"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
