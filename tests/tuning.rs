//! `easel tune` and the tables it writes (src/ops/tuning.rs): a run measures
//! every GEMM variant at a model's launches and saves this adapter's winners
//! beside other adapters' tables; a table decides what later runs launch; an
//! unreadable table is an error (exit 2), never a silent change of kernels.

mod common;

use std::path::Path;

use common::binary::{command, easel, output, stderr, stdout};
use common::files::{tiny_latent_pipeline, TempDir};
use serde_json::{json, Value};

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `easel tune --quick` on the tiny latent pipeline into `out`.
fn tune(out: &Path) -> std::process::Output {
    let model = path_str(tiny_latent_pipeline());
    easel(&["tune", "--quick", "--model", model, "--out", path_str(out)])
}

/// The entries of easel's own GEMM launches (matmul, conv2d, attention) in
/// `bench kernels --quick --model`, with `EASEL_TUNING` naming `table` and
/// the environment `envs`.
fn chosen_gemm_entries(table: &Path, dir: &TempDir, envs: &[(&str, &str)]) -> Vec<String> {
    let json = dir.path().join("kernels.json");
    let model = path_str(tiny_latent_pipeline());
    let args = ["bench", "kernels", "--quick", "--model", model];
    let mut cmd = command(&[&args[..], &["--json", path_str(&json)]].concat());
    let run = output(cmd.env("EASEL_TUNING", table).envs(envs.iter().copied()));
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let rows = read_json(&json)["kernels"].as_array().unwrap().clone();
    rows.iter()
        .map(|r| r["entry"].as_str().unwrap().to_string())
        .filter(|e| {
            ["matmul", "conv2d", "attention"]
                .iter()
                .any(|op| e.contains(op))
        })
        .collect()
}

/// A run saves this adapter's winners (every variant timed in each class, the
/// winner the fastest, within 5 % of it, or the rules' choice, which stays
/// unless beaten by more in every round) and keeps another adapter's table in
/// the file.
#[test]
fn tune_saves_this_adapters_winners_beside_other_tables() {
    let dir = TempDir::new("tune");
    let other = json!({
        "adapter": {"backend": "Metal", "vendor": 4203, "device": 1, "driver": "m"},
        "winners": [{"op": "matmul", "max_outputs": 4096, "max_depth": 64, "variant": "Gpu"}]
    });
    let out = dir.write(
        "tuning.json",
        json!({"version": 1, "adapters": [other.clone()]}).to_string(),
    );
    let run = tune(&out);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(stdout(&run).contains("saved"), "{}", stdout(&run));
    let tables = read_json(&out);
    let adapters = tables["adapters"].as_array().unwrap();
    assert_eq!(adapters.len(), 2, "{tables}");
    assert_eq!(adapters[0]["adapter"], other["adapter"]);
    let winners = adapters[1]["winners"].as_array().unwrap();
    assert!(!winners.is_empty());
    for w in winners {
        let ms = w["ms"].as_object().unwrap();
        // Attention's GpuWide is Gpu's kernel, timed once.
        let variants = if w["op"] == "attention" { 3 } else { 4 };
        assert!(ms.len() >= variants, "every variant timed: {w}");
        let least = ms
            .iter()
            .map(|(_, v)| v.as_f64().unwrap())
            .fold(f64::MAX, f64::min);
        let variant = w["variant"].as_str().unwrap();
        let near = ms[variant].as_f64().unwrap() <= least * 1.05;
        assert!(near || w["rules"] == variant, "{w}");
        assert!(["matmul", "conv2d", "attention"].contains(&w["op"].as_str().unwrap()));
    }
    // Tuning again replaces this adapter's table, not adds one; --json writes
    // the bench report (device, clock) with the table measured.
    let json = dir.path().join("report.json");
    let model = path_str(tiny_latent_pipeline());
    let args = ["tune", "--quick", "--model", model, "--out", path_str(&out)];
    let run = easel(&[&args[..], &["--json", path_str(&json)]].concat());
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(read_json(&out)["adapters"].as_array().unwrap().len(), 2);
    let report = read_json(&json);
    assert!(report["device"].is_string(), "{report}");
    assert!(!report["tune"]["winners"].as_array().unwrap().is_empty());
}

/// A table that names the 64×64 shared-memory tile for every class makes
/// every GEMM launch run it (attention its tiled kernel); without one,
/// lavapipe's own kernels run.
#[test]
fn a_table_decides_which_kernel_runs() {
    let dir = TempDir::new("tune-choice");
    let measured = dir.path().join("measured.json");
    let run = tune(&measured);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let mut tables = read_json(&measured);
    for w in tables["adapters"][0]["winners"].as_array_mut().unwrap() {
        w["variant"] = json!("Gpu");
    }
    let pinned = dir.write("pinned.json", tables.to_string());
    let gpu = chosen_gemm_entries(&pinned, &dir, &[]);
    let tiled = |e: &String| e.contains("_gpu") || e.ends_with("::attention");
    assert!(gpu.iter().any(|e| e.contains("attention")), "{gpu:?}");
    assert!(gpu.iter().all(tiled), "{gpu:?}");
    let own = chosen_gemm_entries(&dir.path().join("absent.json"), &dir, &[]);
    assert!(own.iter().all(|e| !tiled(e)), "{own:?}");
    // Measured with weights through textures (llvmpipe), the table is not
    // used with them off: lavapipe's own kernels run.
    if tables["adapters"][0]["adapter"]["weight_textures"] == json!(true) {
        let off = [("EASEL_WEIGHT_TEXTURES", "off")];
        let own = chosen_gemm_entries(&pinned, &dir, &off);
        assert!(own.iter().all(|e| !tiled(e)), "{own:?}");
    } else {
        eprintln!("weights not read through textures here: one table for both settings");
    }
}

/// A corrupt or foreign table stops a run before any work, naming the file;
/// `tune` leaves such a file as it was.
#[test]
fn an_unreadable_table_is_bad_input() {
    let dir = TempDir::new("tune-bad");
    let model = path_str(tiny_latent_pipeline());
    let png = dir.path().join("out.png");
    let cases = [
        (
            "corrupt.json",
            "{\"version\": 1, \"adapters\": [".to_string(),
        ),
        (
            "future.json",
            json!({"version": 99, "adapters": []}).to_string(),
        ),
        (
            "variant.json",
            json!({"version": 1, "adapters": [{
                "adapter": {"backend": "Vulkan", "vendor": 1, "device": 2, "driver": "d"},
                "winners": [{"op": "matmul", "max_outputs": 4096, "max_depth": 64,
                             "variant": "Fastest"}]}]})
            .to_string(),
        ),
    ];
    for (name, text) in cases {
        let table = dir.write(name, &text);
        let args = [
            "red apple",
            "--model",
            model,
            "--steps",
            "1",
            "-o",
            path_str(&png),
        ];
        let run = output(command(&args).env("EASEL_TUNING", &table));
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(name) && err.trim().lines().count() == 1,
            "{err}"
        );
        assert!(!png.exists(), "{name}: no image from a refused run");
        let run = tune(&table);
        assert_eq!(run.status.code(), Some(2), "{name}: {}", stderr(&run));
        assert_eq!(
            std::fs::read_to_string(&table).unwrap(),
            text,
            "{name} kept"
        );
    }
}

/// With tables off and no `--out` there is nowhere to save: exit 2.
#[test]
fn tune_with_tables_off_needs_an_out_file() {
    let model = path_str(tiny_latent_pipeline());
    let run = output(command(&["tune", "--quick", "--model", model]).env("EASEL_TUNING", "off"));
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("--out"), "{}", stderr(&run));
}

/// Arguments that cannot work fail before any GPU work, exit 2, one line.
#[test]
fn bad_tune_arguments_exit_2_before_any_work() {
    let dir = TempDir::new("tune-args");
    let out = dir.path().join("t.json");
    let model = path_str(tiny_latent_pipeline());
    let file = dir.write("file", "x");
    let under_file = file.join("t.json");
    let cases: [&[&str]; 3] = [
        &[
            "tune",
            "--model",
            path_str(dir.path()),
            "--out",
            path_str(&out),
        ],
        &["tune", "--model", model, "--out", path_str(dir.path())],
        &["tune", "--model", model, "--out", path_str(&under_file)],
    ];
    for args in cases {
        let run = easel(args);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(stdout(&run).is_empty(), "no GPU work: {}", stdout(&run));
    }
    assert!(!out.exists());
}
