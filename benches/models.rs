//! Forward time of each default model on the chosen adapter, at batch 1, 4
//! and 8: the figures `tools/bench_torch.py` measures in PyTorch on the same
//! weights, shapes and inputs, and `tools/compare.py` sets side by side.
//!
//! Run: `cargo bench --bench models` (a name filter may follow `--`, e.g.
//! `cargo bench --bench models -- unet`). Prints a table, the kernels that
//! dominate each model at batch 8, and one JSON line per row.
//!
//! Models (weights from weights/easel-emoji/, or `EASEL_WEIGHTS`):
//! - `unet`: UNet2DConditionModel, sample `[B, 3, 32, 32]`, B timesteps, context
//!   `[B, 77, 128]`. From `unet/` when the training job has exported it; until
//!   then from `target/bench/unet-random/`, random weights in the exact default
//!   architecture written by `tools/bench_torch.py --write-random-unet` (run here
//!   automatically when the folder is missing): timing does not depend on
//!   trained values. `EASEL_BENCH_UNET=DIR` picks another folder.
//! - `text_encoder`: CLIPTextModel on ids `[B, 77]`.
//! - `scorer`: CLIPModel's vision tower + visual_projection on `[B, 3, 32, 32]`.
//! - `upscaler`: SRVGGNetCompact, `[B, 3, 32, 32]` → `[B, 3, 128, 128]`.
//!
//! Protocol (the same constants as tools/bench_torch.py): plan the graph once,
//! run it once to warm up, then time runs by wall clock around submit + wait
//! until about `BUDGET_S` has passed (at least `MIN_RUNS`, at most `MAX_RUNS`).
//! Separately, a few runs with one timestamped pass per dispatch give the sum of
//! kernel times (`gpu_ms`) and the per-kernel breakdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use easel::gpu::profiler::{Clock, Profiler};
use easel::gpu::{AdapterOptions, Context};
use easel::models::clip::{self, CLIPModel, CLIPTextConfig, CLIPTextModel};
use easel::models::layers::{check_all_used, open_component, Vars};
use easel::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use easel::models::upscaler::{SRVGGNetCompact, SRVGGNetCompactConfig};
use easel::models::Graph;
use easel::ops::Dispatch;
use easel::tensor::Tensor;
use easel::Result;

const BATCHES: [usize; 3] = [1, 4, 8];
const BUDGET_S: f64 = 3.0;
const MIN_RUNS: usize = 3;
const MAX_RUNS: usize = 20;
/// Timestamped runs per row (one pass per dispatch, so slower than a plain run).
const PROFILED_RUNS: usize = 2;
/// Kernels listed per model in the breakdown.
const TOP_KERNELS: usize = 8;

/// CLIP's special tokens and context length (tools/common.py).
const BOS_ID: u32 = 49406;
const EOS_ID: u32 = 49407;
const CONTEXT: usize = 77;

/// n values in [0, 1]: `0.5 + 0.5 sin(0.37 i + phase)`, as tools/bench_torch.py computes them.
fn pattern(n: usize, phase: f64) -> Vec<f32> {
    (0..n)
        .map(|i| (0.5 + 0.5 * (0.37 * i as f64 + phase).sin()) as f32)
        .collect()
}

/// `pattern` mapped to [-1, 1].
fn signed(n: usize, phase: f64) -> Vec<f32> {
    pattern(n, phase).iter().map(|v| v * 2.0 - 1.0).collect()
}

/// `[B, 77]`: BOS, 6 word tokens that differ per row, EOS, EOS padding.
fn token_rows(batch: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            let mut row = vec![BOS_ID];
            row.extend((0..6).map(|j| 320 + 7 * b as u32 + j));
            row.push(EOS_ID);
            row.resize(CONTEXT, EOS_ID);
            row
        })
        .collect()
}

/// A loaded model that plans a forward graph for a batch.
// One value per model, built once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Model {
    Unet(UNet2DConditionModel, usize, usize),
    Text(CLIPTextModel),
    Scorer(CLIPModel, usize),
    Upscaler(SRVGGNetCompact),
}

impl Model {
    fn plan<'a>(&self, ctx: &'a Context, batch: usize) -> Result<Graph<'a>> {
        let mut g = Graph::new(ctx, "bench");
        match self {
            Model::Unet(unet, size, cross) => {
                let s = *size;
                let sample = Tensor::from_f32(
                    ctx,
                    "sample",
                    &[batch, 3, s, s],
                    &signed(batch * 3 * s * s, 0.0),
                )?; // [B, 3, S, S]
                let t: Vec<f32> = (0..batch).map(|b| 999.0 - 100.0 * b as f32).collect();
                let t = Tensor::from_f32(ctx, "timesteps", &[batch], &t)?; // [B]
                let context = Tensor::from_f32(
                    ctx,
                    "context",
                    &[batch, CONTEXT, *cross],
                    &signed(batch * CONTEXT * cross, 1.0),
                )?; // [B, 77, cross]
                unet.forward(&mut g, &sample, &t, &context)?;
            }
            Model::Text(text) => {
                let rows = token_rows(batch);
                let ids = Tensor::from_u32(ctx, "ids", &[batch, CONTEXT], &rows.concat())?; // [B, 77]
                let eos = Tensor::from_u32(ctx, "eos", &[batch], &text.eos_positions(&rows))?; // [B]
                text.forward(&mut g, &ids, &eos)?;
            }
            Model::Scorer(clip, s) => {
                let s = *s;
                let pixels = Tensor::from_f32(
                    ctx,
                    "pixels",
                    &[batch, 3, s, s],
                    &signed(batch * 3 * s * s, 2.0),
                )?; // [B, 3, S, S]
                clip.image_embeds(&mut g, &pixels)?; // [B, proj]
            }
            Model::Upscaler(up) => {
                let x = Tensor::from_f32(
                    ctx,
                    "input",
                    &[batch, 3, 32, 32],
                    &pattern(batch * 3 * 32 * 32, 3.0),
                )?; // [B, 3, 32, 32] in [0, 1]
                up.forward(&mut g, &x)?; // [B, 3, 128, 128]
            }
        }
        Ok(g)
    }
}

fn weights_dir() -> PathBuf {
    std::env::var_os("EASEL_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/easel-emoji"))
}

/// The UNet folder: `EASEL_BENCH_UNET`, the exported `unet/`, or the random
/// default-architecture one (written with the tools' Python if missing).
fn unet_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("EASEL_BENCH_UNET") {
        return Some(PathBuf::from(dir));
    }
    let real = weights_dir().join("unet");
    if real.join("config.json").exists() {
        return Some(real);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let random = root.join("target/bench/unet-random");
    if !random.join("config.json").exists() {
        let python = std::env::var_os("EASEL_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("tools/.venv/bin/python"));
        eprintln!(
            "no {}: writing a random default-architecture UNet to {}",
            real.display(),
            random.display()
        );
        let ok = Command::new(&python)
            .arg(root.join("tools/bench_torch.py"))
            .arg("--write-random-unet")
            .arg(&random)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "skipping the UNet: `{} tools/bench_torch.py --write-random-unet {}` failed",
                python.display(),
                random.display()
            );
            return None;
        }
    }
    Some(random)
}

fn load(ctx: &Context, name: &str) -> Result<(Model, PathBuf)> {
    let w = weights_dir();
    Ok(match name {
        "unet" => {
            let dir = unet_dir().ok_or_else(|| easel::Error::BadInput("no UNet folder".into()))?;
            let (weights, config): (_, UNet2DConditionConfig) = open_component(&dir)?;
            let (size, cross) = (config.sample_size.unwrap_or(32), config.cross_attention_dim);
            let unet = UNet2DConditionModel::new(&Vars::new(ctx, &weights), config)?;
            check_all_used(&weights, &[])?;
            (Model::Unet(unet, size, cross), dir)
        }
        "text_encoder" => {
            let dir = w.join("text_encoder");
            let (mut weights, config): (_, CLIPTextConfig) = open_component(&dir)?;
            weights.detect_prefix("text_model.");
            let text = CLIPTextModel::new(&Vars::new(ctx, &weights), config)?;
            check_all_used(&weights, clip::IGNORED)?;
            (Model::Text(text), dir)
        }
        "scorer" => {
            let dir = w.join("scorer");
            let (weights, config): (_, clip::CLIPConfig) = open_component(&dir)?;
            let size = config.vision_config.image_size;
            (
                Model::Scorer(CLIPModel::new(&Vars::new(ctx, &weights), config)?, size),
                dir,
            )
        }
        "upscaler" => {
            let dir = w.join("upscaler");
            let (weights, config): (_, SRVGGNetCompactConfig) = open_component(&dir)?;
            let up = SRVGGNetCompact::new(&Vars::new(ctx, &weights), config)?;
            check_all_used(&weights, &[])?;
            (Model::Upscaler(up), dir)
        }
        other => return Err(easel::Error::BadInput(format!("unknown model {other}"))),
    })
}

/// One kernel label's share of a profiled run.
#[derive(Default)]
struct KernelTime {
    dispatches: usize,
    ms: f64,
    flops: u64,
    bytes: u64,
}

struct Row {
    model: &'static str,
    batch: usize,
    median_ms: f64,
    min_ms: f64,
    runs: usize,
    /// Median over the profiled runs of the summed per-dispatch kernel times.
    gpu_ms: Option<f64>,
    dispatches: usize,
    gflop_per_item: f64,
    /// Per kernel label, averaged over the profiled runs.
    kernels: BTreeMap<String, KernelTime>,
}

impl Row {
    fn gflops(&self) -> f64 {
        self.gflop_per_item * self.batch as f64 / (self.median_ms * 1e-3)
    }
}

fn measure(
    ctx: &Context,
    profiler: &Profiler,
    model: &'static str,
    batch: usize,
    g: &Graph,
) -> Result<Row> {
    let dispatches = &g.dispatches;
    // Warm-up: pipelines are compiled at plan time; this is first touch of every buffer.
    easel::ops::run(ctx, dispatches)?;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < MIN_RUNS
        || (start.elapsed().as_secs_f64() < BUDGET_S && times.len() < MAX_RUNS)
    {
        let t = Instant::now();
        easel::ops::run(ctx, dispatches)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);

    let mut kernels: BTreeMap<String, KernelTime> = BTreeMap::new();
    let mut sums = Vec::new();
    if profiler.clock() == Clock::GpuTimestamps {
        let refs: Vec<&Dispatch> = dispatches.iter().collect();
        for _ in 0..PROFILED_RUNS {
            let per = profiler.time(ctx, &refs)?;
            sums.push(per.iter().sum::<f64>());
            for (d, ms) in dispatches.iter().zip(&per) {
                let k = kernels.entry(d.kernel.label.clone()).or_default();
                k.dispatches += 1;
                k.ms += ms;
                k.flops += d.flops;
                k.bytes += d.bytes;
            }
        }
        for k in kernels.values_mut() {
            k.dispatches /= PROFILED_RUNS;
            k.ms /= PROFILED_RUNS as f64;
            k.flops /= PROFILED_RUNS as u64;
            k.bytes /= PROFILED_RUNS as u64;
        }
        sums.sort_by(f64::total_cmp);
    }
    let flops: u64 = dispatches.iter().map(|d| d.flops).sum();
    Ok(Row {
        model,
        batch,
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        runs: times.len(),
        gpu_ms: sums.get(sums.len() / 2).copied(),
        dispatches: dispatches.len(),
        gflop_per_item: flops as f64 / 1e9 / batch as f64,
        kernels,
    })
}

fn print_row(r: &Row) {
    let gpu = r.gpu_ms.map_or("-".into(), |ms| format!("{ms:.2}"));
    println!(
        "{:<13} {:>5} {:>10.2} {:>9.2} {:>5} {:>9} {:>10} {:>11.4} {:>8.2}",
        r.model,
        r.batch,
        r.median_ms,
        r.min_ms,
        r.runs,
        gpu,
        r.dispatches,
        r.gflop_per_item,
        r.gflops()
    );
}

/// The kernels that take most of a profiled run, by label.
fn print_kernels(r: &Row) {
    let total: f64 = r.kernels.values().map(|k| k.ms).sum();
    let mut by_time: Vec<(&String, &KernelTime)> = r.kernels.iter().collect();
    by_time.sort_by(|a, b| b.1.ms.total_cmp(&a.1.ms));
    println!(
        "  {} batch {}: {} dispatches, {:.2} ms of kernel time",
        r.model, r.batch, r.dispatches, total
    );
    println!(
        "  {:<46} {:>6} {:>9} {:>6} {:>8} {:>7}",
        "kernel", "count", "ms", "share", "GFLOP/s", "GB/s"
    );
    for (label, k) in by_time.iter().take(TOP_KERNELS) {
        println!(
            "  {:<46} {:>6} {:>9.2} {:>5.1}% {:>8.2} {:>7.2}",
            label,
            k.dispatches,
            k.ms,
            100.0 * k.ms / total,
            k.flops as f64 / (k.ms * 1e6),
            k.bytes as f64 / (k.ms * 1e6)
        );
    }
}

fn json(r: &Row, device: &str, weights: &Path) -> String {
    serde_json::json!({
        "engine": "easel",
        "model": r.model,
        "batch": r.batch,
        "median_ms": r.median_ms,
        "min_ms": r.min_ms,
        "gpu_ms": r.gpu_ms,
        "runs": r.runs,
        "gflop_per_item": r.gflop_per_item,
        "gflops": r.gflops(),
        "device": device,
        "weights": weights.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(weights),
        "dispatches": r.dispatches,
        "kernels": r.kernels.iter().map(|(label, k)| serde_json::json!({
            "label": label, "dispatches": k.dispatches, "ms": k.ms, "flops": k.flops, "bytes": k.bytes,
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

fn main() {
    // `cargo bench` passes `--bench`; a model-name filter may follow.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let ctx = Context::new(&AdapterOptions::default()).expect("a GPU adapter");
    let profiler = Profiler::new(&ctx);
    let device = format!(
        "{} ({:?}, {:?}, {})",
        ctx.info.name, ctx.info.backend, ctx.class, ctx.info.driver_info
    );
    println!(
        "adapter: {device}; wall clock around submit + wait; gpu ms: {}",
        profiler.clock().label()
    );
    println!(
        "{:<13} {:>5} {:>10} {:>9} {:>5} {:>9} {:>10} {:>11} {:>8}",
        "model",
        "batch",
        "median ms",
        "min ms",
        "runs",
        "gpu ms",
        "dispatches",
        "GFLOP/item",
        "GFLOP/s"
    );
    let mut rows = Vec::new();
    for name in ["unet", "text_encoder", "scorer", "upscaler"] {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let (model, dir) = match load(&ctx, name) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                continue;
            }
        };
        for batch in BATCHES {
            let g = model.plan(&ctx, batch).expect("plan the forward graph");
            let row = measure(&ctx, &profiler, name, batch, &g).expect("run the forward graph");
            print_row(&row);
            rows.push((row, dir.clone()));
        }
    }
    println!("\nkernels by GPU time at the largest batch:");
    for (r, _) in rows.iter().filter(|(r, _)| r.batch == BATCHES[2]) {
        if !r.kernels.is_empty() {
            print_kernels(r);
        }
    }
    println!();
    for (r, dir) in &rows {
        println!("{}", json(r, &device, dir));
    }
}
