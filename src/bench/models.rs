//! `easel bench models`: forward time of each model of a pipeline folder at
//! several batch sizes, the figures `tools/bench_torch.py` measures in PyTorch on
//! the same weights, shapes and inputs (its `pattern` and `token_ids` mirror
//! [`pattern`] and [`token_rows`]), so `tools/compare.py` or `easel bench --vs`
//! can set them side by side.
//!
//! Models:
//! - `unet`: UNet2DConditionModel, sample `[B, 3, S, S]` (S = `sample_size`),
//!   B timesteps, context `[B, 77, cross_attention_dim]`.
//! - `text_encoder`: CLIPTextModel on ids `[B, 77]`.
//! - `scorer`: CLIPModel's vision tower + visual_projection on `[B, 3, S, S]`.
//! - `upscaler`: SRVGGNetCompact, `[B, 3, 32, 32]` → `[B, 3, 32·r, 32·r]`.
//!
//! Protocol (the same constants as tools/bench_torch.py): plan the graph once,
//! run it once to warm up, then time runs by wall clock around submit + wait
//! until about `BUDGET_S` has passed (at least `MIN_RUNS`, at most `MAX_RUNS`).
//! Separately, a few runs with one timestamped pass per dispatch give the sum of
//! kernel times (`gpu_ms`) and the per-kernel breakdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::bench::{device_label, fixed, Stats, Table};
use crate::error::{Error, Result};
use crate::gpu::profiler::{Clock, Profiler};
use crate::gpu::Tensor;
use crate::gpu::{Context, Dispatch};
use crate::models::clip::{self, CLIPModel, CLIPTextModel};
use crate::models::layers::component_config;
use crate::models::pipeline;
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::upscaler::SRVGGNetCompact;
use crate::models::Graph;
use crate::weights::WeightPrecision;

pub const MODELS: [&str; 4] = ["unet", "text_encoder", "scorer", "upscaler"];
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

/// Settings of one `easel bench models` run.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// A pipeline folder (diffusers layout).
    pub model: PathBuf,
    pub batches: Vec<usize>,
    /// Only models whose name contains this.
    pub filter: Option<String>,
    /// Precision of layer weights on the GPU (`--weights`).
    pub weights: WeightPrecision,
}

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
    /// Component `name` of a pipeline folder, loaded as the engine loads it.
    fn load(ctx: &Context, dir: &Path, name: &str, w: WeightPrecision) -> Result<Self> {
        Ok(match name {
            "unet" => {
                let config: UNet2DConditionConfig = component_config(dir)?;
                let (size, cross) = (config.sample_size.unwrap_or(32), config.cross_attention_dim);
                Model::Unet(pipeline::load_unet(ctx, dir, &config, w)?, size, cross)
            }
            "text_encoder" => Model::Text(pipeline::load_text_encoder(
                ctx,
                dir,
                &component_config(dir)?,
                w,
            )?),
            "scorer" => {
                let config: clip::CLIPConfig = component_config(dir)?;
                let size = config.vision_config.image_size;
                Model::Scorer(pipeline::load_scorer(ctx, dir, &config, w)?, size)
            }
            "upscaler" => Model::Upscaler(pipeline::load_upscaler(
                ctx,
                dir,
                &component_config(dir)?,
                w,
            )?),
            other => return Err(Error::BadInput(format!("unknown model {other}"))),
        })
    }

    fn plan<'a>(&self, ctx: &'a Context, batch: usize) -> Result<Graph<'a>> {
        let mut g = Graph::new(ctx, "bench");
        let image = |s: usize, phase| {
            Tensor::from_f32(
                ctx,
                "pixels",
                &[batch, 3, s, s],
                &signed(batch * 3 * s * s, phase),
            )
        }; // [B, 3, S, S] in [-1, 1]
        match self {
            Model::Unet(unet, size, cross) => {
                let sample = image(*size, 0.0)?;
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
            Model::Scorer(clip, size) => {
                let pixels = image(*size, 2.0)?;
                clip.image_embeds(&mut g, &pixels)?; // [B, proj]
            }
            Model::Upscaler(up) => {
                let x = Tensor::from_f32(
                    ctx,
                    "input",
                    &[batch, 3, 32, 32],
                    &pattern(batch * 3 * 32 * 32, 3.0),
                )?; // [B, 3, 32, 32] in [0, 1]
                up.forward(&mut g, &x)?; // [B, 3, 32r, 32r]
            }
        }
        Ok(g)
    }
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
    stats: Stats,
    /// Median over the profiled runs of the summed per-dispatch kernel times.
    gpu_ms: Option<f64>,
    dispatches: usize,
    gflop_per_item: f64,
    /// Per kernel label, averaged over the profiled runs.
    kernels: BTreeMap<String, KernelTime>,
}

impl Row {
    fn gflops(&self) -> f64 {
        self.gflop_per_item * self.batch as f64 / (self.stats.median_ms * 1e-3)
    }

    fn json(&self, device: &str, weights: &Path) -> Value {
        json!({
            "engine": "easel",
            "model": self.model,
            "batch": self.batch,
            "median_ms": self.stats.median_ms,
            "min_ms": self.stats.min_ms,
            "max_ms": self.stats.max_ms,
            "gpu_ms": self.gpu_ms,
            "runs": self.stats.runs,
            "gflop_per_item": self.gflop_per_item,
            "gflops": self.gflops(),
            "device": device,
            "weights": weights.display().to_string(),
            "dispatches": self.dispatches,
            "kernels": self.kernels.iter().map(|(label, k)| json!({
                "label": label, "dispatches": k.dispatches, "ms": k.ms, "flops": k.flops, "bytes": k.bytes,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Wall-clock times of whole runs of `dispatches` (one submit + wait each).
pub(crate) fn time_runs(ctx: &Context, dispatches: &[Dispatch]) -> Result<Stats> {
    // Warm-up: pipelines are compiled at plan time; this is first touch of every buffer.
    crate::gpu::dispatch::run(ctx, dispatches)?;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < MIN_RUNS
        || (start.elapsed().as_secs_f64() < BUDGET_S && times.len() < MAX_RUNS)
    {
        let t = Instant::now();
        crate::gpu::dispatch::run(ctx, dispatches)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Stats::of(times).expect("at least MIN_RUNS"))
}

fn measure(
    ctx: &Context,
    profiler: &Profiler,
    model: &'static str,
    batch: usize,
    g: &Graph,
) -> Result<Row> {
    let dispatches = &g.dispatches;
    let stats = time_runs(ctx, dispatches)?;
    let mut kernels: BTreeMap<String, KernelTime> = BTreeMap::new();
    let mut sums = Vec::new();
    // Per-dispatch wall-clock times would mostly be submit overhead: only with timestamps.
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
    }
    let flops: u64 = dispatches.iter().map(|d| d.flops).sum();
    Ok(Row {
        model,
        batch,
        stats,
        gpu_ms: Stats::of(sums).map(|s| s.median_ms),
        dispatches: dispatches.len(),
        gflop_per_item: flops as f64 / 1e9 / batch as f64,
        kernels,
    })
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
    let table = Table::new(
        &[
            ("  kernel", 48),
            ("count", 6),
            ("ms", 9),
            ("share", 6),
            ("GFLOP/s", 8),
            ("GB/s", 7),
        ],
        1,
    );
    for (label, k) in by_time.iter().take(TOP_KERNELS) {
        table.row(&[
            format!("  {label}"),
            k.dispatches.to_string(),
            format!("{:.2}", k.ms),
            format!("{:.1}%", 100.0 * k.ms / total),
            format!("{:.2}", k.flops as f64 / (k.ms * 1e6)),
            format!("{:.2}", k.bytes as f64 / (k.ms * 1e6)),
        ]);
    }
}

/// Time every model of `opts.model` at every batch; returns the `models` section.
pub fn run(ctx: &Context, profiler: &Profiler, opts: &ModelOptions) -> Result<Value> {
    println!(
        "wall clock around submit + wait; gpu ms: {}",
        profiler.clock().label()
    );
    let table = Table::new(
        &[
            ("model", 13),
            ("batch", 5),
            ("median ms", 10),
            ("min ms", 9),
            ("max ms", 9),
            ("runs", 5),
            ("gpu ms", 9),
            ("dispatches", 10),
            ("GFLOP/item", 11),
            ("GFLOP/s", 8),
        ],
        1,
    );
    let device = device_label(ctx);
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for name in MODELS {
        if opts.filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let dir = opts.model.join(name);
        if !dir.is_dir() {
            eprintln!("skipping {name}: no {}", dir.display());
            continue;
        }
        let before = ctx.buffer_bytes();
        let model = Model::load(ctx, &dir, name, opts.weights)?;
        let weight_bytes = ctx.buffer_bytes() - before;
        println!(
            "{name}: {weight_bytes} bytes of weights on the GPU ({:.1} MB, --weights {:?})",
            weight_bytes as f64 / 1e6,
            opts.weights
        );
        for &batch in &opts.batches {
            let g = model.plan(ctx, batch)?;
            let row = measure(ctx, profiler, name, batch, &g)?;
            table.row(&[
                row.model.to_string(),
                row.batch.to_string(),
                format!("{:.2}", row.stats.median_ms),
                format!("{:.2}", row.stats.min_ms),
                format!("{:.2}", row.stats.max_ms),
                row.stats.runs.to_string(),
                fixed(row.gpu_ms, 2),
                row.dispatches.to_string(),
                format!("{:.4}", row.gflop_per_item),
                format!("{:.2}", row.gflops()),
            ]);
            let mut json = row.json(&device, &dir);
            json["weight_bytes"] = json!(weight_bytes);
            json_rows.push(json);
            rows.push(row);
        }
    }
    let largest = opts.batches.iter().max().copied().unwrap_or(0);
    if rows.iter().any(|r| !r.kernels.is_empty()) {
        println!("\nkernels by GPU time at batch {largest}:");
        for r in rows.iter().filter(|r| r.batch == largest) {
            print_kernels(r);
        }
    }
    Ok(Value::Array(json_rows))
}
