//! Where easel writes, end to end on the tiny random pipeline: `-o`, `--trace`, a
//! batch's job outputs and manifest never replace, or write through, anything but a
//! regular file (links, FIFOs, device nodes, folders are refused with exit 2 or a
//! failed job); `-o -` is standard output; two runs of one shard on one folder do not
//! both run; a resume re-renders a broken PNG and trusts only a whole one; jobs that
//! share an output fail; repeated sub-prompts keep their own `--json` scores.
//!
//! Device nodes are made with `mknod` inside a temp folder (only as root, as in CI):
//! no test touches a real system file.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::files::{manifest, TempDir};

fn model() -> &'static str {
    common::files::tiny_pipeline().to_str().unwrap()
}

/// Tiny render settings, shared by `generate` and `batch`.
const TINY: [&str; 8] = [
    "--size",
    "16x16",
    "--steps",
    "2",
    "--candidates",
    "2",
    "--upscale",
    "1",
];

fn easel() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
    cmd.env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .env_remove("JOB_COMPLETION_INDEX");
    cmd
}

/// `easel generate PROMPT --model tiny ... ARGS`.
fn generate(prompt: &str, args: &[&str]) -> Command {
    let mut cmd = easel();
    cmd.args(["generate", prompt, "--model", model()])
        .args(TINY)
        .args(args);
    cmd
}

/// `easel batch JOBS --out OUT --model tiny ... ARGS`.
fn batch(jobs: &Path, out: &Path, args: &[&str]) -> Command {
    let mut cmd = easel();
    cmd.arg("batch")
        .args([jobs, Path::new("--out"), out])
        .args(["--model", model()])
        .args(TINY)
        .args(args);
    cmd
}

/// Exit code, stdout, stderr; a panic fails the test.
fn run(cmd: &mut Command) -> (i32, Vec<u8>, String) {
    let out: Output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), out.stdout, stderr)
}

/// The one `easel:` error line of a failed run.
fn error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("easel:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0]
}

fn decode(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).expect("a whole PNG");
    (img.width(), img.height())
}

/// What is at `path`, in words: a file's bytes, a link's target, a FIFO, a device.
fn describe(path: &Path) -> String {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let t = meta.file_type();
    if t.is_symlink() {
        format!("link to {}", std::fs::read_link(path).unwrap().display())
    } else if t.is_fifo() {
        "fifo".into()
    } else if t.is_char_device() {
        "char device".into()
    } else if t.is_dir() {
        format!("folder of {}", std::fs::read_dir(path).unwrap().count())
    } else {
        format!("file {:?}", std::fs::read(path).unwrap())
    }
}

/// Things that are not regular files, in `dir`: (name, what the message says).
/// A device node (like /dev/null, 1:3) only as root.
fn specials(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let target = dir.join("target.txt");
    std::fs::write(&target, b"keep").unwrap();
    let link = dir.join("link.png");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let dangling = dir.join("dangling.png");
    std::os::unix::fs::symlink(dir.join("nowhere.png"), &dangling).unwrap();
    let fifo = dir.join("fifo.png");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let folder = dir.join("folder.png");
    std::fs::create_dir(&folder).unwrap();
    let mut cases = vec![
        (link, "is a symbolic link"),
        (dangling, "is a symbolic link"),
        (fifo, "is not a regular file (a FIFO)"),
        (folder, "is not a regular file (a folder)"),
    ];
    let node = dir.join("null.png");
    let made = Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "3"])
        .status();
    if made.is_ok_and(|s| s.success()) {
        cases.push((node, "is not a regular file (a character device)"));
    }
    cases
}

#[test]
fn generate_refuses_to_replace_links_and_special_files() {
    let dir = TempDir::new("out-special");
    let cases = specials(dir.path());
    for (path, wanted) in &cases {
        let before = describe(path);
        for flag in ["-o", "--trace"] {
            let p = path.to_str().unwrap();
            let elsewhere = dir.path().join("ok.png");
            let args = match flag {
                "-o" => vec!["-o", p],
                _ => vec!["-o", elsewhere.to_str().unwrap(), "--trace", p],
            };
            let (code, _, stderr) = run(&mut generate("red apple", &args));
            assert_eq!(code, 2, "{flag} {p}: {stderr}");
            let line = error_line(&stderr);
            assert!(line.contains(p) && line.contains(wanted), "{line}");
            assert_eq!(describe(path), before, "{flag} {p} was changed");
            assert!(!elsewhere.exists());
        }
    }
    assert_eq!(
        std::fs::read(dir.path().join("target.txt")).unwrap(),
        b"keep"
    );
    assert!(!dir.path().join("nowhere.png").exists(), "written through");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn dash_writes_the_png_to_stdout_and_nothing_to_disk() {
    let dir = TempDir::new("out-stdout");
    let (code, png, stderr) = run(generate("red apple", &["-o", "-"]).current_dir(dir.path()));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(decode(&png), (16, 16));
    assert!(stderr.contains("easel: wrote standard output"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // The same bytes as a file would hold.
    let file = dir.path().join("apple.png");
    let (code, _, stderr) = run(&mut generate(
        "red apple",
        &["-q", "-o", file.to_str().unwrap()],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), png);

    for (args, wanted) in [
        (&["-o", "-", "--json"][..], "-o - and --json"),
        (&["-o", "x.png", "--trace", "-"][..], "--trace -"),
    ] {
        let (code, out, stderr) = run(generate("red apple", args).current_dir(dir.path()));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(error_line(&stderr).contains(wanted), "{stderr}");
        assert!(out.is_empty());
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn trace_and_output_must_be_two_files() {
    let dir = TempDir::new("out-trace");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let o = dir.path().join("x.png");
    let same = dir.path().join("sub/../x.png");
    let (code, _, stderr) = run(&mut generate(
        "red apple",
        &["-o", o.to_str().unwrap(), "--trace", same.to_str().unwrap()],
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(error_line(&stderr).contains("is the -o file"), "{stderr}");
    assert!(!o.exists());
}

#[test]
fn repeated_sub_prompts_each_keep_their_json_score() {
    let dir = TempDir::new("out-json");
    let o = dir.path().join("x.png");
    let (code, stdout, stderr) = run(&mut generate(
        "cat:: cat::2 hat::",
        &["--json", "-o", o.to_str().unwrap()],
    ));
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let scores = summary["scores"].as_array().expect("a list");
    let prompts: Vec<&str> = scores
        .iter()
        .map(|s| s["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["cat", "cat", "hat"], "{summary}");
    assert!(scores.iter().all(|s| s["score"].is_number()), "{summary}");
}

// --- batch ----------------------------------------------------------------------------

/// Job lines, one per `out` name, each its own seed.
fn jobs_named(names: &[&str]) -> String {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!("{{\"prompt\": \"red apple\", \"seed\": {i}, \"out\": \"{name}\"}}\n")
        })
        .collect()
}

#[test]
fn batch_jobs_never_write_through_links_or_over_special_files() {
    let dir = TempDir::new("out-batch-links");
    let out = dir.path().join("renders");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // A folder link inside --out pointing outside it.
    std::os::unix::fs::symlink(&outside, out.join("escape")).unwrap();
    // A stale temp file beside the link's target: a run must not clean outside --out.
    let temp = outside.join(".a.png.4194999.tmp");
    std::fs::write(&temp, b"not the batch's").unwrap();
    let specials = specials(&out);
    let mut names = vec!["escape/a.png".to_string(), "good.png".into()];
    names.extend(
        specials
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()),
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let jobs = dir.write("jobs.jsonl", jobs_named(&names));
    let befores: Vec<String> = specials.iter().map(|(p, _)| describe(p)).collect();

    let (code, _, stderr) = run(&mut batch(&jobs, &out, &[]));
    assert_eq!(code, 1, "failed jobs: {stderr}");
    let records = manifest(&out);
    assert_eq!(records.len(), names.len(), "{records:?}");
    for r in &records {
        let index = r["index"].as_u64().unwrap() as usize;
        let error = r["error"].as_str().unwrap_or_default();
        match index {
            0 => assert!(error.contains("is a symbolic link inside --out"), "{r}"),
            1 => assert_eq!(r["status"], "done", "{r}"),
            i => {
                let (path, wanted) = &specials[i - 2];
                assert!(
                    error.contains(wanted) && error.contains(path.to_str().unwrap()),
                    "{r}"
                );
                assert_eq!(
                    describe(path),
                    befores[i - 2],
                    "{} was changed",
                    path.display()
                );
            }
        }
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written outside"
    );
    assert!(temp.exists(), "a temp file outside --out was removed");
    assert_eq!(std::fs::read(out.join("target.txt")).unwrap(), b"keep");
}

#[test]
fn batch_refuses_a_manifest_that_is_a_link() {
    let dir = TempDir::new("out-batch-manifest");
    let out = dir.path().join("renders");
    std::fs::create_dir_all(&out).unwrap();
    let target = dir.write("elsewhere.log", "keep\n");
    std::os::unix::fs::symlink(&target, out.join("manifest.jsonl")).unwrap();
    let jobs = dir.write("jobs.jsonl", jobs_named(&["a"]));
    let (code, _, stderr) = run(&mut batch(&jobs, &out, &[]));
    assert_eq!(code, 2, "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("manifest.jsonl: is a symbolic link"),
        "{line}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"keep\n");
    assert!(
        !out.join("a.png").exists(),
        "no job before the manifest is usable"
    );
}

#[test]
fn a_second_run_of_a_shard_on_one_folder_fails_naming_the_first() {
    let dir = TempDir::new("out-batch-lock");
    let out = dir.path().join("renders");
    let names: Vec<String> = (0..200).map(|i| format!("job-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let jobs = dir.write("jobs.jsonl", jobs_named(&names));
    let first = batch(&jobs, &out, &["-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    // The lock file names its holder once the lock is held.
    let lock = out.join(".easel-batch.0-of-1.lock");
    let start = Instant::now();
    while std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(start.elapsed() < Duration::from_secs(30), "no lock taken");
        std::thread::sleep(Duration::from_millis(2));
    }
    let (code, _, stderr) = run(&mut batch(&jobs, &out, &["-q"]));
    // The first run then stops cleanly (after its job under way), as on SIGTERM.
    let term = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    assert!(term.unwrap().success());
    let o = first.wait_with_output().unwrap();
    assert_eq!(code, 2, "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("shard 0/1 is being rendered by another easel batch"),
        "{line}"
    );
    assert!(line.contains(&format!("(pid {pid} on ")), "{line}");
    let first_err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{first_err}");
    let mut indices: Vec<u64> = manifest(&out)
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    let n = indices.len();
    indices.sort();
    indices.dedup();
    assert_eq!(indices.len(), n, "a job rendered twice: {indices:?}");
    assert!(!lock.exists(), "the lock file is removed at the end");
    // Another shard of the same folder is not blocked, nor is the next run of this one.
    let (code, _, stderr) = run(&mut batch(&jobs, &out, &["-q", "--shard", "1/50"]));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn resume_rerenders_broken_pngs_and_trusts_only_whole_ones() {
    let dir = TempDir::new("out-batch-resume");
    let out = dir.path().join("renders");
    let jobs = dir.write(
        "jobs.jsonl",
        jobs_named(&["empty", "cut", "text", "whole", "new"]),
    );
    std::fs::create_dir_all(&out).unwrap();
    // A whole PNG from an earlier run of the same job.
    let (code, _, stderr) = run(&mut batch(&jobs, &dir.path().join("first"), &["-q"]));
    assert_eq!(code, 0, "{stderr}");
    let whole = std::fs::read(dir.path().join("first/whole.png")).unwrap();
    std::fs::write(out.join("whole.png"), &whole).unwrap();
    std::fs::write(out.join("empty.png"), b"").unwrap();
    std::fs::write(out.join("cut.png"), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(
        out.join("text.png"),
        "not a png, but long enough to look like one",
    )
    .unwrap();

    let (code, stdout, stderr) = run(&mut batch(&jobs, &out, &["--json"]));
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(
        (summary["done"].as_u64(), summary["skipped"].as_u64()),
        (Some(4), Some(1))
    );
    for (name, why) in [
        ("empty", "0 bytes"),
        ("cut", "cut short"),
        ("text", "no PNG signature"),
    ] {
        let r = manifest(&out)
            .into_iter()
            .find(|r| r["output"] == format!("{name}.png"))
            .unwrap();
        assert_eq!(r["status"], "done", "{r}");
        assert!(
            r["rerendered"].as_str().unwrap_or_default().contains(why),
            "{r}"
        );
        assert_eq!(
            decode(&std::fs::read(out.join(format!("{name}.png"))).unwrap()),
            (16, 16)
        );
    }
    assert!(stderr.contains("rendered again"), "{stderr}");
    assert_eq!(std::fs::read(out.join("whole.png")).unwrap(), whole);
}

#[test]
fn jobs_with_one_output_fail_up_front_naming_their_lines() {
    let dir = TempDir::new("out-batch-dup");
    let out = dir.path().join("renders");
    let text = [
        r#"{"prompt": "red apple", "out": "a"}"#,
        r#"{"prompt": "green pear", "out": "b"}"#,
        r#"{"prompt": "a cat", "out": "a.png"}"#,
    ]
    .join("\n");
    let jobs = dir.write("jobs.jsonl", text);
    let (code, _, stderr) = run(&mut batch(&jobs, &out, &[]));
    assert_eq!(code, 1, "{stderr}");
    let records = manifest(&out);
    for index in [0, 2] {
        let r = records.iter().find(|r| r["index"] == index).unwrap();
        assert_eq!(r["status"], "failed", "{r}");
        let error = r["error"].as_str().unwrap();
        assert!(
            error.contains("a.png is written by the jobs on lines 1 and 3"),
            "{r}"
        );
    }
    assert!(!out.join("a.png").exists());
    assert!(out.join("b.png").is_file());
}
