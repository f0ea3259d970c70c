//! `easel bench generate`: the whole loop through the public API
//! (`Engine::generate`) for several candidate counts K and sizes, and what each
//! phase of it costs.
//!
//! Per (size, K): one warm-up generation (pipeline compiles), then `runs` timed
//! ones, wall clock around `engine.generate`. Reported: images/s (K candidates
//! make one image, so 1 / seconds), ms per step (the whole run over its steps),
//! the per-candidate cost `t(K)·K₀ / (K·t(K₀))` against the smallest K₀ in the list
//! (with K₀ = 1: `t(K) / (K·t(1))`; batching pays when it is below 1, the target
//! at K = 8 is ≤ 0.4), and the peak GPU memory of a run (`Image::gpu_peak_bytes`:
//! the model's weights plus every buffer the run holds at once).
//!
//! The phases are the loop's own planned dispatches (the plan the last
//! generation left in the engine), timed apart with the profiler: the text
//! encoders (1 + P prompts), one UNet pass at batch (1 + P)·K, one scoring pass
//! at batch K, the post-processing (upscaler and RGBA8 of the winner) and the
//! final readback (wall clock).

use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::{fixed, mb, unet_sample_size, Stats, Table};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::gpu::profiler::Profiler;
use crate::gpu::readback;
use crate::gpu::Dispatch;
use crate::models::pipeline::PipelineConfig;
use crate::request::Request;

/// Settings of one `easel bench generate` run.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub prompt: String,
    pub seed: u64,
    pub candidates: Vec<usize>,
    /// (width, height) of the denoised image; default: the UNet's sample size and twice it.
    pub sizes: Option<Vec<(usize, usize)>>,
    pub steps: usize,
    /// Timed generations per (size, K), after one warm-up.
    pub runs: usize,
    /// The UNet's and VAE decoder's activations (`--precision`).
    pub precision: crate::memory_plan::Precision,
}

/// Profiled passes per phase; the median of their summed kernel times is reported.
const PHASE_RUNS: usize = 3;

/// Milliseconds of each phase of one generation, measured apart (module docs).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Phases {
    /// Denoiser and scorer text encoders on the 1 + P prompts (once per image).
    pub text_ms: f64,
    /// One UNet pass at batch (1 + P)·K (every step).
    pub unet_ms: f64,
    /// One scoring pass at batch K (every scoring round).
    pub score_ms: f64,
    /// Upscaler and RGBA8 of the winner (once per image).
    pub post_ms: f64,
    /// The one readback of the finished image, wall clock.
    pub readback_ms: f64,
}

/// One (size, K) of the scaling curve.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub width: usize,
    pub height: usize,
    pub candidates: usize,
    pub steps: usize,
    #[serde(flatten)]
    pub stats: Stats,
    pub images_per_s: f64,
    pub ms_per_step: f64,
    /// `t(K)·K₀ / (K·t(K₀))`, K₀ the smallest K measured at this size.
    pub per_candidate_ratio: f64,
    /// The most GPU bytes one run held at once (weights included).
    pub gpu_peak_bytes: u64,
    pub phases: Phases,
}

impl Point {
    /// Wall-clock milliseconds per candidate.
    pub fn ms_per_candidate(&self) -> f64 {
        self.stats.median_ms / self.candidates as f64
    }
}

/// The sizes to run: those asked for, or the UNet's sample size and twice it.
fn sizes(config: &PipelineConfig, opts: &GenerateOptions) -> Vec<(usize, usize)> {
    opts.sizes.clone().unwrap_or_else(|| {
        let s = unet_sample_size(&config.unet);
        vec![(s, s), (2 * s, 2 * s)]
    })
}

/// The upscaling every run does: the model's default (its upscaler's own factor, if it has one).
fn upscale(config: &PipelineConfig) -> usize {
    Request::new("").upscale_for(config)
}

/// The request of one point of the sweep.
fn request(opts: &GenerateOptions, size: (usize, usize), k: usize) -> Request {
    Request {
        seed: opts.seed,
        size: Some(size),
        steps: Some(opts.steps),
        candidates: Some(k),
        precision: opts.precision,
        ..Request::new(opts.prompt.clone())
    }
}

/// Check every request the sweep will make against the model (no GPU work).
pub fn check(config: &PipelineConfig, opts: &GenerateOptions) -> Result<()> {
    if opts.steps == 0 || opts.runs == 0 {
        return Err(Error::BadInput(
            "--steps and --runs: need at least 1".into(),
        ));
    }
    for size in sizes(config, opts) {
        for &k in &opts.candidates {
            request(opts, size, k).check(config)?;
        }
    }
    Ok(())
}

/// Time the loop at every size and K; returns the `generate` section and its points.
pub fn run(
    engine: &Engine,
    profiler: &Profiler,
    opts: &GenerateOptions,
) -> Result<(Value, Vec<Point>)> {
    check(engine.config(), opts)?;
    let sweep = Sweep {
        engine,
        profiler,
        opts,
        // Everything held before the first run is the model's weights (and a few uniforms).
        weight_bytes: engine.ctx.live_bytes(),
        upscale: upscale(engine.config()),
    };
    sweep.print_header();
    let table = table();
    let mut points: Vec<Point> = Vec::new();
    for size in sizes(engine.config(), opts) {
        let first = points.len();
        for &k in &opts.candidates {
            let point = sweep.point(size, k, points.get(first))?;
            print_point(&table, &point);
            points.push(point);
        }
    }
    Ok((sweep.section(&points), points))
}

/// One `easel bench generate` run: the engine, its settings, and what it
/// holds before the first generation.
struct Sweep<'a> {
    engine: &'a Engine,
    profiler: &'a Profiler,
    opts: &'a GenerateOptions,
    weight_bytes: u64,
    upscale: usize,
}

impl Sweep<'_> {
    fn print_header(&self) {
        println!(
            "{}: \"{}\", {} steps, x{} upscale, weights {:.1} MB; wall clock around \
             engine.generate; phases: {}",
            self.engine.config().name,
            self.opts.prompt,
            self.opts.steps,
            self.upscale,
            mb(self.weight_bytes),
            self.profiler.clock().label()
        );
    }

    /// Time `k` candidates at `(w, h)`; `base` is the first point of this size
    /// (none for the first, which is its own base).
    fn point(&self, (w, h): (usize, usize), k: usize, base: Option<&Point>) -> Result<Point> {
        let (engine, opts) = (self.engine, self.opts);
        let request = request(opts, (w, h), k);
        // Warm-up: pipelines compile and the run is planned (every buffer it
        // holds is made here; the timed runs reuse the plan).
        let gpu_peak_bytes = engine.generate(&request)?.gpu_peak_bytes;
        let mut times = Vec::with_capacity(opts.runs);
        for _ in 0..opts.runs {
            let start = Instant::now();
            engine.generate(&request)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let stats = Stats::of(times).expect("runs > 0");
        let phases = phases(engine, self.profiler)?;
        let base = base.map_or((k, stats.median_ms), |p| (p.candidates, p.stats.median_ms));
        Ok(Point {
            width: w,
            height: h,
            candidates: k,
            steps: opts.steps,
            stats,
            images_per_s: 1e3 / stats.median_ms,
            ms_per_step: stats.median_ms / opts.steps as f64,
            per_candidate_ratio: stats.median_ms * base.0 as f64 / (k as f64 * base.1),
            gpu_peak_bytes,
            phases,
        })
    }

    /// The `generate` section of the report.
    fn section(&self, points: &[Point]) -> Value {
        json!({
            "model": self.engine.config().dir.display().to_string(),
            "prompt": self.opts.prompt,
            "seed": self.opts.seed,
            "steps": self.opts.steps,
            "upscale": self.upscale,
            "weights_bytes": self.weight_bytes,
            "clock": "wall-clock",
            "phase_clock": self.profiler.clock().name(),
            "rows": points,
        })
    }
}

fn table() -> Table {
    Table::new(
        &[
            ("size", 7),
            ("K", 3),
            ("median s", 9),
            ("min s", 8),
            ("max s", 8),
            ("images/s", 9),
            ("ms/step", 9),
            ("t/(K t0)", 8),
            ("peak MB", 8),
            ("text ms", 8),
            ("unet ms", 9),
            ("score ms", 9),
            ("post ms", 8),
            ("read ms", 8),
        ],
        1,
    )
}

fn print_point(table: &Table, p: &Point) {
    let ph = &p.phases;
    table.row(&[
        format!("{}x{}", p.width, p.height),
        p.candidates.to_string(),
        format!("{:.2}", p.stats.median_ms / 1e3),
        format!("{:.2}", p.stats.min_ms / 1e3),
        format!("{:.2}", p.stats.max_ms / 1e3),
        format!("{:.3}", p.images_per_s),
        format!("{:.1}", p.ms_per_step),
        format!("{:.2}", p.per_candidate_ratio),
        format!("{:.1}", mb(p.gpu_peak_bytes)),
        format!("{:.1}", ph.text_ms),
        format!("{:.1}", ph.unet_ms),
        fixed(Some(ph.score_ms), 1),
        format!("{:.1}", ph.post_ms),
        format!("{:.2}", ph.readback_ms),
    ]);
}

/// Median over `PHASE_RUNS` of the summed per-dispatch times of `dispatches`.
fn phase_ms(engine: &Engine, profiler: &Profiler, dispatches: &[Dispatch]) -> Result<f64> {
    if dispatches.is_empty() {
        return Ok(0.0);
    }
    let ctx = &engine.ctx;
    crate::gpu::dispatch::run(ctx, dispatches)?; // first touch
    let refs: Vec<&Dispatch> = dispatches.iter().collect();
    let sums = (0..PHASE_RUNS)
        .map(|_| Ok(profiler.time(ctx, &refs)?.iter().sum()))
        .collect::<Result<Vec<f64>>>()?;
    Ok(Stats::of(sums).expect("PHASE_RUNS > 0").median_ms)
}

/// Time each phase of the plan the last generation left in the engine.
fn phases(engine: &Engine, profiler: &Profiler) -> Result<Phases> {
    let ctx = &engine.ctx;
    let plan = engine.last_plan();
    let plan = plan
        .as_ref()
        .ok_or_else(|| Error::Gpu("bench: no planned run to time".into()))?;
    let phase = plan.phases();
    let time = |dispatches: &[Dispatch]| phase_ms(engine, profiler, dispatches);
    let out = plan.readback_buffer();
    let reads = (0..PHASE_RUNS)
        .map(|_| {
            let start = Instant::now();
            readback::read_bytes(ctx, out, 0, out.size())?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(Phases {
        text_ms: time(phase.text)?,
        unet_ms: time(phase.unet)?,
        score_ms: time(phase.score)?,
        post_ms: time(phase.post)?,
        readback_ms: Stats::of(reads).expect("PHASE_RUNS > 0").median_ms,
    })
}
