//! `easel bench models`: forward time of each model of a pipeline folder at
//! several batch sizes, the figures `tools/bench_torch.py` measures in PyTorch on
//! the same weights, shapes and inputs (its `pattern` and `token_ids` mirror
//! [`pattern`] and [`token_rows`]), so `tools/compare.py` or `easel bench --vs`
//! can set them side by side.
//!
//! Models:
//! - `unet`: UNet2DConditionModel, sample `[B, in_channels, S, S]` (S =
//!   `sample_size`: pixels of a pixel-space model, latents of a latent one),
//!   B timesteps, context `[B, 77, cross_attention_dim]`.
//! - `vae`: AutoencoderKL's decoder on latents `[B, latent_channels, S, S]`
//!   (S = the UNet's `sample_size`) → images `[B, 3, S·f, S·f]` (f = 8 for SD), in
//!   tiles where a run would tile it (the memory plan's `--vae-tiles auto`).
//! - `text_encoder`: CLIPTextModel on ids `[B, 77]`.
//! - `scorer`: CLIPModel's vision tower + visual_projection on `[B, 3, S, S]`.
//! - `upscaler`: SRVGGNetCompact, `[B, 3, 32, 32]` → `[B, 3, 32·r, 32·r]`.
//!
//! Protocol (the same constants as tools/bench_torch.py): plan the graph once,
//! run it once to warm up, then time runs by wall clock around submit + wait
//! until about `BUDGET_S` has passed (at least `MIN_RUNS`, at most `MAX_RUNS`).
//! Separately, a few runs with one timestamped pass per dispatch give the sum of
//! kernel times (`gpu_ms`) and the per-kernel breakdown.
//!
//! Memory: `weights_bytes`, what loading the model added to the GPU bytes held,
//! and `peak_bytes`, the most held at once by one forward at that batch (the
//! weights, the inputs and every activation, all planned before it runs). A
//! model or batch that cannot exist on the adapter (a device limit) is skipped
//! with its error on stderr, so the others are still measured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::bench::{device_label, fixed, mb, unet_sample_size, Stats, Table};
use crate::error::{Error, Result};
use crate::gpu::profiler::{Clock, Profiler};
use crate::gpu::{Context, Dispatch};
use crate::gpu::{DType, Tensor};
use crate::memory_plan::{Limits, MemoryPlan, Precision};
use crate::models::attention::CrossContext;
use crate::models::clip::{self, CLIPModel, CLIPTextModel};
use crate::models::layers::component_config;
use crate::models::pipeline;
use crate::models::unet_2d_condition::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::upscaler::SRVGGNetCompact;
use crate::models::vae::AutoencoderKLDecoder;
use crate::models::vae_tiles::VaeTiles;
use crate::models::Graph;
use crate::weights::WeightPrecision;

pub const MODELS: [&str; 5] = ["unet", "vae", "text_encoder", "scorer", "upscaler"];
const BUDGET_S: f64 = 3.0;
const MIN_RUNS: usize = 3;
const MAX_RUNS: usize = 20;
/// Timestamped runs per row (one pass per dispatch, so slower than a plain run).
const PROFILED_RUNS: usize = 2;
/// Kernels listed per model in the breakdown.
const TOP_KERNELS: usize = 8;

/// CLIP's context length (tools/common.py).
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
    /// The UNet's and VAE decoder's activations (`--precision`).
    pub precision: Precision,
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

/// `[B, 77]`: BOS, 6 word tokens that differ per row, EOS, EOS padding. CLIP's
/// vocabularies (the full 49,408 ids and the default model's pruned one) end with
/// `<|startoftext|>`, `<|endoftext|>`.
fn token_rows(batch: usize, vocab_size: usize) -> Vec<Vec<u32>> {
    let (bos, eos) = (vocab_size as u32 - 2, vocab_size as u32 - 1);
    (0..batch)
        .map(|b| {
            let mut row = vec![bos];
            row.extend((0..6).map(|j| 320 + 7 * b as u32 + j));
            row.push(eos);
            row.resize(CONTEXT, eos);
            row
        })
        .collect()
}

/// A loaded model that plans a forward graph for a batch.
// One value per model, built once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Model {
    /// The UNet, its sample size and channels, its context width.
    Unet(UNet2DConditionModel, usize, usize, usize),
    /// The VAE decoder and the latents' size (the UNet's sample size).
    Vae(AutoencoderKLDecoder, usize),
    Text(CLIPTextModel),
    Scorer(CLIPModel, usize),
    Upscaler(SRVGGNetCompact),
}

impl Model {
    /// Component `name` of a pipeline folder, loaded as the engine loads it.
    pub(crate) fn load(ctx: &Context, dir: &Path, name: &str, w: WeightPrecision) -> Result<Self> {
        Ok(match name {
            "unet" => {
                let config: UNet2DConditionConfig = component_config(dir)?;
                let (size, cross) = (unet_sample_size(&config), config.cross_attention_dim);
                let channels = config.in_channels;
                Model::Unet(
                    pipeline::load_unet(ctx, dir, &config, (w, &[]))?,
                    size,
                    channels,
                    cross,
                )
            }
            "vae" => {
                let unet: UNet2DConditionConfig = component_config(&dir.with_file_name("unet"))?;
                let vae = pipeline::load_vae(ctx, dir, &component_config(dir)?, w)?;
                Model::Vae(vae, unet_sample_size(&unet))
            }
            "text_encoder" => Model::Text(pipeline::load_text_encoder(
                ctx,
                dir,
                &component_config(dir)?,
                (w, &[]),
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

    /// The forward at `batch`; a UNet's or decoder's activations in `p` (resolved as a run does).
    pub(crate) fn plan<'a>(
        &self,
        ctx: &'a Context,
        batch: usize,
        p: Precision,
    ) -> Result<Graph<'a>> {
        let mut g = Graph::new(ctx, "bench");
        let weights = match self {
            Model::Unet(unet, ..) => unet.weights_dtype(),
            Model::Vae(vae, _) => vae.weights_dtype(),
            _ => DType::F32, // the other models run in f32 whatever the precision
        };
        let resolved = p.resolve(ctx, weights)?;
        g.set_precision(resolved);
        let image = |c: usize, s: usize, phase| {
            Tensor::from_f32(
                ctx,
                "pixels",
                &[batch, c, s, s],
                &signed(batch * c * s * s, phase),
            )
        }; // [B, C, S, S] in [-1, 1]
        match self {
            Model::Unet(unet, size, channels, cross) => {
                let sample = image(*channels, *size, 0.0)?;
                let t: Vec<f32> = (0..batch).map(|b| 999.0 - 100.0 * b as f32).collect();
                let t = Tensor::from_f32(ctx, "timesteps", &[batch], &t)?; // [B]
                let shape = [batch, CONTEXT, *cross];
                let hidden = signed(batch * CONTEXT * cross, 1.0);
                let hidden = Tensor::from_f32(ctx, "context", &shape, &hidden)?;
                // The whole forward, the context's projections included (as PyTorch runs it).
                unet.forward(&mut g, &sample, &t, &CrossContext::Hidden(hidden))?;
            }
            Model::Vae(vae, size) => {
                let latents = image(vae.config.latent_channels, *size, 4.0)?;
                // In tiles where a run would decode in tiles (the memory plan's auto).
                let plan = MemoryPlan::new(
                    Some(&vae.config),
                    batch,
                    [*size, *size],
                    VaeTiles::Auto,
                    &Limits::of(ctx, resolved),
                )?;
                match plan.vae_tiling {
                    Some(tiling) => vae.decode_tiled(&mut g, &latents, tiling)?,
                    None => vae.decode(&mut g, &latents)?,
                }; // [B, 3, S·f, S·f]
            }
            Model::Text(text) => {
                let rows = token_rows(batch, text.config.vocab_size);
                let inputs = text.inputs_for(ctx, &rows)?; // ids [B, 77], eos [B]
                text.forward(&mut g, &inputs)?;
            }
            Model::Scorer(clip, size) => {
                let pixels = image(3, *size, 2.0)?;
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
        g.make_buffers();
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
    /// GPU bytes of the model's weights, and the most held during one forward.
    weights_bytes: u64,
    peak_bytes: u64,
    /// The forward's activation buffers, and the most activation bytes alive at
    /// once (what a perfect placement would hold).
    activation_bytes: u64,
    live_activation_bytes: u64,
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
            "weights_bytes": self.weights_bytes,
            "peak_bytes": self.peak_bytes,
            "activation_bytes": self.activation_bytes,
            "live_activation_bytes": self.live_activation_bytes,
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
    (weights_bytes, peak_bytes): (u64, u64),
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
        weights_bytes,
        peak_bytes,
        activation_bytes: g.activation_bytes(),
        live_activation_bytes: g.live_activation_bytes(),
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
        "wall clock around submit + wait; gpu ms: {}; MB: GPU memory, the peak of one forward; \
         acts: its activation buffers, live: the most activation bytes alive at once",
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
            ("weights MB", 10),
            ("peak MB", 9),
            ("acts MB", 8),
            ("live MB", 8),
        ],
        1,
    );
    let device = device_label(ctx);
    let mut rows = Vec::new();
    for name in MODELS {
        if opts.filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let dir = opts.model.join(name);
        if !dir.is_dir() {
            eprintln!("skipping {name}: no {}", dir.display());
            continue;
        }
        for row in model_rows(ctx, profiler, name, &dir, opts)? {
            print_row(&table, &row);
            rows.push((row.json(&device, &dir), row));
        }
    }
    let largest = opts.batches.iter().max().copied().unwrap_or(0);
    if rows.iter().any(|(_, r)| !r.kernels.is_empty()) {
        println!("\nkernels by GPU time at batch {largest}:");
        for (_, r) in rows.iter().filter(|(_, r)| r.batch == largest) {
            print_kernels(r);
        }
    }
    Ok(Value::Array(rows.into_iter().map(|(j, _)| j).collect()))
}

/// Load model `name` from `dir` and measure it at every batch. What cannot
/// exist on this adapter (a device limit) is reported on stderr and skipped.
fn model_rows(
    ctx: &Context,
    profiler: &Profiler,
    name: &'static str,
    dir: &Path,
    opts: &ModelOptions,
) -> Result<Vec<Row>> {
    let skip = |what: String, e: Error| match e {
        Error::DeviceLimit(_) => {
            eprintln!("skipping {what}: {e}");
            Ok(Vec::new())
        }
        e => Err(e),
    };
    let held = ctx.live_bytes();
    let model = match Model::load(ctx, dir, name, opts.weights) {
        Ok(model) => model,
        Err(e) => return skip(name.to_string(), e),
    };
    let weights = ctx.live_bytes() - held;
    let mut rows = Vec::new();
    for &batch in &opts.batches {
        // Everything one forward holds is made when it is planned.
        ctx.reset_peak();
        let g = match model.plan(ctx, batch, opts.precision) {
            Ok(g) => g,
            Err(e) => {
                // Larger batches need more: they are skipped with it.
                skip(format!("{name} from batch {batch}"), e)?;
                break;
            }
        };
        let peak = ctx.peak_bytes() - held;
        rows.push(measure(ctx, profiler, name, batch, &g, (weights, peak))?);
    }
    Ok(rows)
}

fn print_row(table: &Table, row: &Row) {
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
        format!("{:.1}", mb(row.weights_bytes)),
        format!("{:.1}", mb(row.peak_bytes)),
        format!("{:.1}", mb(row.activation_bytes)),
        format!("{:.1}", mb(row.live_activation_bytes)),
    ]);
}
