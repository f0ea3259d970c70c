//! `easel batch` end to end on the tiny random pipeline (tests/golden/pipeline plus the
//! default tokenizer, as in tests/generate.rs): files and manifest, resume, bad jobs,
//! Indexed-Job sharding, kill -9 at random moments, SIGTERM.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::files::{manifest, TempDir};
use common::Rng;

fn model_dir() -> &'static Path {
    common::files::tiny_pipeline()
}

/// `n` tiny jobs, each with its own seed; `named` gives them `out` names job-I.png.
fn jobs(n: usize, named: bool) -> String {
    let prompts = ["red apple", "green pear", "apple:: tart::", "a cat"];
    (0..n)
        .map(|i| {
            let out = if named {
                format!(", \"out\": \"job-{i}\"")
            } else {
                String::new()
            };
            format!(
                "{{\"prompt\": \"{}\", \"seed\": {i}{out}}}\n",
                prompts[i % prompts.len()]
            )
        })
        .collect()
}

/// `easel batch JOBS --out OUT` with tiny defaults, and no scheduler variables from
/// the environment the tests run in.
fn batch(jobs: &Path, out: &Path, extra: &[&str]) -> Command {
    batch_on(model_dir(), jobs, out, extra)
}

/// [`batch`] with another model folder.
fn batch_on(model: &Path, jobs: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
    cmd.args([
        "batch",
        jobs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .args(["--model", model.to_str().unwrap()])
    .args(["--size", "16x16", "--steps", "2", "--candidates", "2"])
    .args(["--upscale", "1"])
    .args(extra)
    .env_remove("SLURM_ARRAY_TASK_ID")
    .env_remove("SLURM_ARRAY_TASK_COUNT")
    .env_remove("JOB_COMPLETION_INDEX");
    cmd
}

fn run(mut cmd: Command) -> (i32, serde_json::Value, String) {
    let out: Output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), summary, stderr)
}

/// Decode a PNG fully; its size.
fn decode(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

/// Every file under `dir` (relative names), sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let name = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                stack.push(name);
            } else {
                names.push(name.to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    names
}

#[test]
fn a_batch_makes_every_file_and_a_rerun_does_no_work() {
    let dir = TempDir::new("farm-basic");
    let mut text = jobs(9, false);
    text.push_str("{\"prompt\": \"red apple\", \"seed\": 3, \"out\": \"named/apple\"}\n");
    let jobs = dir.write("jobs.jsonl", text);
    let out = dir.path().join("renders");

    let t = Instant::now();
    let (code, summary, stderr) = run(batch(&jobs, &out, &["--json"]));
    eprintln!("10 tiny jobs: {:.2} s\n{stderr}", t.elapsed().as_secs_f64());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary["done"], 10, "{summary}");
    assert_eq!(
        stderr.matches(": done ").count(),
        10,
        "a line per job: {stderr}"
    );
    assert!(stderr.contains("images/hour"), "{stderr}");

    let records = manifest(&out);
    assert_eq!(records.len(), 10);
    let mut indices: Vec<u64> = records
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    indices.sort();
    assert_eq!(indices, (0..10).collect::<Vec<u64>>());
    for r in &records {
        assert_eq!(r["status"], "done", "{r}");
        assert_eq!(r["steps_run"], 2, "{r}");
        assert!(r["score"].is_number() && r["seconds"].is_number(), "{r}");
        let png = out.join(r["output"].as_str().unwrap());
        assert_eq!(decode(&png), (16, 16));
    }
    assert!(out.join("named/apple.png").is_file());
    let made = files(&out);
    assert_eq!(made.len(), 11, "10 PNGs and the manifest: {made:?}");
    assert!(
        made.iter().any(|f| f.starts_with("green-pear-")),
        "{made:?}"
    );

    let before = std::fs::read(out.join("manifest.jsonl")).unwrap();
    let (code, summary, stderr) = run(batch(&jobs, &out, &["--json", "-q"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        (summary["done"].as_u64(), summary["skipped"].as_u64()),
        (Some(0), Some(10))
    );
    assert_eq!(
        summary["load_seconds"], 0.0,
        "no model load when nothing is left"
    );
    assert_eq!(std::fs::read(out.join("manifest.jsonl")).unwrap(), before);
    assert_eq!(stderr, "", "--quiet");
}

#[test]
fn weights_retrained_in_place_give_new_names() {
    let dir = TempDir::new("farm-retrained");
    let model = dir.path().join("model");
    common::files::copy_dir(model_dir(), &model);
    let jobs = dir.write("jobs.jsonl", jobs(2, false));
    let out = dir.path().join("renders");
    let counts =
        |summary: &serde_json::Value| (summary["done"].as_u64(), summary["skipped"].as_u64());

    let (code, summary, stderr) = run(batch_on(&model, &jobs, &out, &["--json", "-q"]));
    assert_eq!(
        (code, counts(&summary)),
        (0, (Some(2), Some(0))),
        "{stderr}"
    );
    // A hidden file (an editor's, a sync tool's) is not part of the model.
    std::fs::write(model.join(".sync-lock"), "x").unwrap();
    let (code, summary, stderr) = run(batch_on(&model, &jobs, &out, &["--json", "-q"]));
    assert_eq!(
        (code, counts(&summary)),
        (0, (Some(0), Some(2))),
        "{stderr}"
    );

    // The UNet's weights change in place (its last byte: part of a tensor's data).
    let weights = model.join("unet/diffusion_pytorch_model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let (code, summary, stderr) = run(batch_on(&model, &jobs, &out, &["--json", "-q"]));
    assert_eq!(
        (code, counts(&summary)),
        (0, (Some(2), Some(0))),
        "other weights, other images: nothing skipped. {stderr}"
    );
    assert_eq!(files(&out).len(), 5, "4 PNGs and the manifest");
}

#[test]
fn bad_jobs_are_recorded_and_the_rest_run() {
    let dir = TempDir::new("farm-bad");
    let text = [
        r#"{"prompt": "red apple", "out": "good-0"}"#,
        r#"{"prompt": "red apple", oops"#,
        r#"{"prompt": "red apple", "size": "15x16"}"#,
        r#"{"prompt": ""}"#,
        r#"{"prompt": "red apple", "out": "good-4"}"#,
    ]
    .join("\n");
    let jobs = dir.write("jobs.jsonl", text);
    let out = dir.path().join("renders");
    let (code, summary, stderr) = run(batch(&jobs, &out, &["--json"]));
    assert_eq!(code, 1, "a failed job: exit 1\n{stderr}");
    assert_eq!(
        (summary["done"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(3))
    );
    let by_index: BTreeMap<u64, serde_json::Value> = manifest(&out)
        .into_iter()
        .map(|r| (r["index"].as_u64().unwrap(), r))
        .collect();
    for (index, wanted) in [(1, "bad job line"), (2, "multiples of"), (3, "empty")] {
        let r = &by_index[&index];
        assert_eq!(r["status"], "failed", "{r}");
        assert!(r["error"].as_str().unwrap().contains(wanted), "{r}");
    }
    assert_eq!(by_index[&4]["status"], "done");
    assert_eq!(decode(&out.join("good-0.png")), (16, 16));
    assert_eq!(decode(&out.join("good-4.png")), (16, 16));

    // No adapter: exit 3 when the first job needs the GPU; no job is marked failed.
    let elsewhere = dir.path().join("no-adapter");
    let (code, _, stderr) = run(batch(
        &jobs,
        &elsewhere,
        &["--adapter", "no-such-gpu-anywhere"],
    ));
    assert_eq!(code, 3, "{stderr}");
    assert!(manifest(&elsewhere).is_empty());

    // The job file itself, or the arguments, wrong: exit 2 before any job.
    let missing = dir.path().join("missing.jsonl");
    let (code, _, stderr) = run(batch(&missing, &out, &[]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot read job file"), "{stderr}");
    for (args, env, wanted) in [
        (&["--shard", "4/4"][..], None, "0 <= I < N"),
        (
            &["--shards", "4"][..],
            None,
            "JOB_COMPLETION_INDEX is not set",
        ),
        (
            &[][..],
            Some(("JOB_COMPLETION_INDEX", "1")),
            "pass --shards N",
        ),
        (
            &[][..],
            Some(("SLURM_ARRAY_TASK_ID", "1")),
            "SLURM_ARRAY_TASK_COUNT",
        ),
    ] {
        let mut cmd = batch(&jobs, &out, args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let (code, _, stderr) = run(cmd);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?} {env:?}: {stderr}");
    }
}

#[test]
fn four_indexed_job_pods_cover_every_job_once() {
    let dir = TempDir::new("farm-shards");
    let jobs = dir.write("jobs.jsonl", jobs(12, false));
    let out = dir.path().join("renders");
    let pods: Vec<Child> = (0..4)
        .map(|i| {
            let mut cmd = batch(&jobs, &out, &["--shards", "4", "--json", "-q"]);
            cmd.env("JOB_COMPLETION_INDEX", i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut done = 0;
    for (i, pod) in pods.into_iter().enumerate() {
        let o = pod.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "pod {i}: {stderr}");
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["shard"], format!("{i}/4"));
        assert_eq!(summary["jobs"], 3, "{summary}");
        done += summary["done"].as_u64().unwrap();
    }
    assert_eq!(done, 12);
    let records = manifest(&out);
    let mut seen = vec![0; 12];
    for r in &records {
        let index = r["index"].as_u64().unwrap() as usize;
        seen[index] += 1;
        assert_eq!(r["shard"], format!("{}/4", index % 4), "{r}");
        assert_eq!(decode(&out.join(r["output"].as_str().unwrap())), (16, 16));
    }
    assert_eq!(seen, vec![1; 12], "every job exactly once");
}

/// Kill -9 runs of one batch at seeded random moments until ten kills have landed in a
/// running batch, rerunning each trial to completion. The moments are drawn from the
/// time an uninterrupted run takes here, so on a fast GPU as on lavapipe they fall in
/// startup, in a job, in its write and between jobs; a trial whose runs get to the end
/// starts over in a fresh folder.
#[test]
fn kill_9_at_random_moments_then_resume() {
    let dir = TempDir::new("farm-kill");
    let n = 10;
    let jobs = dir.write("jobs.jsonl", jobs(n, true));
    let t = Instant::now();
    let (code, _, stderr) = run(batch(&jobs, &dir.path().join("timing"), &["-q"]));
    assert_eq!(code, 0, "{stderr}");
    let whole = t.elapsed().as_secs_f64();

    let mut rng = Rng::new(7);
    let mut kills = 0;
    // Up to 30 trials: under load, the timing run can be slower than the runs after
    // it, and more of them finish before their kill lands.
    for trial in 0..30 {
        if kills >= 10 {
            break;
        }
        let out = dir.path().join(format!("renders-{trial}"));
        std::fs::create_dir_all(&out).unwrap();
        // A temp file a killed process left (its PID is gone): the next run removes it.
        let stale = out.join(".job-3.png.4194999.tmp");
        std::fs::write(&stale, b"half a png").unwrap();
        let unrelated = out.join(".notes.txt.123.tmp");
        std::fs::write(&unrelated, b"not ours").unwrap();
        for round in 0..20 {
            let mut child = batch(&jobs, &out, &["-q"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let delay = whole * (0.1 + 0.8 * (rng.next_u64() % 1000) as f64 / 1000.0);
            std::thread::sleep(Duration::from_secs_f64(delay));
            let finished = child.try_wait().unwrap().is_some();
            if !finished {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
            }
            child.wait().unwrap();
            // At every instant: each PNG present is complete.
            let pngs: Vec<String> = files(&out)
                .into_iter()
                .filter(|f| f.ends_with(".png"))
                .collect();
            for f in &pngs {
                assert_eq!(decode(&out.join(f)), (16, 16), "round {round}: {f}");
            }
            eprintln!(
                "trial {trial} round {round}: {} after {:.0} ms, {} PNGs",
                if finished { "finished" } else { "killed" },
                delay * 1e3,
                pngs.len()
            );
            if finished || kills >= 10 {
                break;
            }
        }
        let (code, _, stderr) = run(batch(&jobs, &out, &[]));
        assert_eq!(code, 0, "{stderr}");
        assert!(!stale.exists(), "stale temp file removed");
        let mut expected: Vec<String> = (0..n).map(|i| format!("job-{i}.png")).collect();
        expected.push(".notes.txt.123.tmp".into());
        expected.push("manifest.jsonl".into());
        expected.sort();
        assert_eq!(files(&out), expected, "one PNG per job, no temp files left");
        for i in 0..n {
            assert_eq!(decode(&out.join(format!("job-{i}.png"))), (16, 16));
        }
        // A job is recorded done at most once: finished work is never redone.
        let mut done = vec![0; n];
        for r in manifest(&out) {
            assert_eq!(r["status"], "done", "{r}");
            done[r["index"].as_u64().unwrap() as usize] += 1;
        }
        assert!(done.iter().all(|&d| d <= 1), "{done:?}");
    }
    assert!(kills >= 10, "only {kills} runs killed mid-batch");
}

#[test]
fn sigterm_finishes_the_current_job_and_exits_143() {
    let dir = TempDir::new("farm-term");
    let jobs = dir.write("jobs.jsonl", jobs(60, true));
    let out = dir.path().join("renders");
    let child = batch(&jobs, &out, &["--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while manifest(&out).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "no job finished");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("signal 15: stopping"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["interrupted_by"], 15);
    let done = summary["done"].as_u64().unwrap() as usize;
    assert!(done < 60, "{summary}");
    assert_eq!(summary["not_run"].as_u64().unwrap() as usize, 60 - done);
    // The job under way was finished, not cut: every file there is whole, none is temp.
    let made = files(&out);
    assert_eq!(made.len(), done + 1, "{made:?}");
    for f in made.iter().filter(|f| f.ends_with(".png")) {
        assert_eq!(decode(&out.join(f)), (16, 16));
    }
    assert_eq!(manifest(&out).len(), done);
}
