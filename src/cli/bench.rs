//! `easel bench peak|kernels|models|generate`: the library's benchmarks
//! ([`easel::bench`]) from the command line: a table on stdout, `--json FILE`
//! for every figure, `--vs FILE` for ratios against another engine's report,
//! `--plot FILE.svg` for the scaling curves of `generate`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use easel::bench::generate::GenerateOptions;
use easel::bench::kernels::KernelOptions;
use easel::bench::models::ModelOptions;
use easel::bench::{self, compare, parse_counts, Report};
use easel::gpu::profiler::Profiler;
use easel::gpu::{AdapterOptions, Context};
use easel::memory_plan::Precision;
use easel::output::check_writable;
use easel::weights::WeightPrecision;
use easel::{Engine, Error, PipelineConfig, Result};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: What,
    /// Also write every figure to FILE as one JSON document (the schema
    /// tools/bench_torch.py --json writes).
    // Own ids: global values also reach the top-level parser, whose `--json`
    // (of `easel "prompt" --json`) is a flag.
    #[arg(long = "json", id = "bench_json", global = true, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Print ratios against another engine's report (tools/bench_torch.py --json).
    #[arg(long = "vs", id = "bench_vs", global = true, value_name = "FILE")]
    pub vs: Option<PathBuf>,
    /// Time kernels with the host wall clock even where GPU timestamps exist.
    #[arg(long, global = true)]
    pub wall_clock: bool,
}

#[derive(Subcommand, Debug)]
pub enum What {
    /// The adapter's attainable peak: f32 FMA GFLOP/s and copy GB/s.
    Peak {
        /// Short probes (for tests).
        #[arg(long)]
        quick: bool,
    },
    /// Every kernel family and variant at the default model's shapes, with % of peak.
    Kernels {
        /// Tiny shapes and the adapter's own variants only (for tests).
        #[arg(long)]
        quick: bool,
        /// Only this variant: gpu, gpuwide, cpu, cpusubgroup, cputall or coop (cooperative
        /// matrices), or all. With --model: also time each GEMM launch on it (all:
        /// on every one) beside the kernel easel chooses.
        #[arg(long)]
        variant: Option<String>,
        /// Instead, each distinct launch of this model folder's UNet (batch 2) and
        /// VAE decoder at the model's own sample size.
        #[arg(long)]
        model: Option<PathBuf>,
        /// With --model: the activations' precision, auto, f32 or f16 (as a run).
        #[arg(long, default_value = "auto")]
        precision: Precision,
        /// Only rows whose "kernel shape" contains this, e.g. "conv2d 8x64".
        filter: Option<String>,
    },
    /// Forward time of each model of a pipeline folder (as tools/bench_torch.py).
    Models {
        /// Model folder; default: EASEL_MODEL, else the model built into easel.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Batch sizes, comma-separated.
        #[arg(long, default_value = "1,4,8")]
        batches: String,
        /// Only models whose name contains this (unet, text_encoder, scorer, upscaler).
        filter: Option<String>,
        /// Layer weights on the GPU: auto (as the file), f32 or f16.
        #[arg(long, default_value = "auto")]
        weights: WeightPrecision,
        /// The UNet's and VAE decoder's activations: auto (f16 on a GPU with
        /// SHADER_F16 when the weights are f16), f32 or f16.
        #[arg(long, default_value = "auto")]
        precision: Precision,
    },
    /// The whole loop through Engine::generate for several K and sizes, with phases.
    Generate {
        /// Model folder; default: EASEL_MODEL, else the model built into easel.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value = "red apple")]
        prompt: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Candidate counts K, comma-separated (1,2,4,8,16 for the whole curve).
        #[arg(long, default_value = "1,2,4,8")]
        candidates: String,
        /// Sizes WxH, comma-separated; default: the UNet's sample size and twice it.
        #[arg(long)]
        sizes: Option<String>,
        /// Sampler steps per image (fewer than a real run, to stay quick on lavapipe).
        #[arg(long, default_value_t = 4)]
        steps: usize,
        /// Timed generations per (size, K), after one warm-up.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Write the scaling curves (time vs K, time per candidate vs K) as SVG.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// Layer weights on the GPU: auto (as the file), f32 or f16.
        #[arg(long, default_value = "auto")]
        weights: WeightPrecision,
        /// The UNet's and VAE decoder's activations: auto (f16 on a GPU with
        /// SHADER_F16 when the weights are f16), f32 or f16.
        #[arg(long, default_value = "auto")]
        precision: Precision,
    },
}

pub fn run(args: &BenchArgs, adapter: &AdapterOptions) -> Result<()> {
    // Bad input fails before any GPU work.
    if let Some(path) = &args.json {
        check_writable(path)?;
    }
    let theirs = args.vs.as_deref().map(compare::read).transpose()?;
    let report = match &args.what {
        What::Generate {
            model,
            prompt,
            seed,
            candidates,
            sizes,
            steps,
            runs,
            plot,
            weights,
            precision,
        } => {
            let opts = GenerateOptions {
                prompt: prompt.clone(),
                seed: *seed,
                candidates: parse_counts("--candidates", candidates)?,
                sizes: sizes.as_deref().map(parse_sizes).transpose()?,
                steps: *steps,
                runs: *runs,
                precision: *precision,
            };
            let model = easel::model_dir::resolve(model.as_deref())?;
            generate(args, adapter, (&model, *weights), &opts, plot.as_deref())?
        }
        What::Peak { quick } => peak(args, adapter, *quick)?,
        What::Kernels {
            quick,
            variant,
            model,
            precision,
            filter,
        } => {
            check_variant(variant.as_deref())?;
            let opts = KernelOptions {
                quick: *quick,
                filter: filter.clone(),
                variant: variant.clone(),
                model: model.clone(),
                precision: *precision,
            };
            kernels(args, adapter, &opts)?
        }
        What::Models {
            model,
            batches,
            filter,
            weights,
            precision,
        } => {
            let opts = ModelOptions {
                model: easel::model_dir::resolve(model.as_deref())?,
                batches: parse_counts("--batches", batches)?,
                filter: filter.clone(),
                weights: *weights,
                precision: *precision,
            };
            models(args, adapter, &opts)?
        }
    };
    if let Some(path) = &args.json {
        report.write(path)?;
    }
    if let Some(theirs) = theirs {
        compare::print(&report.value(), &theirs)?;
    }
    Ok(())
}

/// `easel bench generate`: the engine loads `model` (after every request and
/// `--plot` are checked), then the loop is timed and the curves drawn.
fn generate(
    args: &BenchArgs,
    adapter: &AdapterOptions,
    (model, weights): (&Path, WeightPrecision),
    opts: &GenerateOptions,
    plot: Option<&Path>,
) -> Result<Report> {
    let config = PipelineConfig {
        weights,
        ..PipelineConfig::read(model)?
    };
    bench::generate::check(&config, opts)?;
    if let Some(path) = plot {
        bench::plot::check_path(path)?;
    }
    let engine = Engine::load(Context::new(adapter)?, config)?;
    let profiler = bench::profiler(&engine.ctx, args.wall_clock);
    let mut report = Report::new(&engine.ctx, &profiler);
    let (section, points) = bench::generate::run(&engine, &profiler, opts)?;
    report.set("generate", section);
    if let Some(path) = plot {
        bench::plot::write(path, &points)?;
    }
    Ok(report)
}

fn peak(args: &BenchArgs, adapter: &AdapterOptions, quick: bool) -> Result<Report> {
    let (ctx, profiler, mut report) = open(args, adapter)?;
    report.set("peak", bench::peak::run(&ctx, &profiler, quick)?.1);
    Ok(report)
}

fn kernels(args: &BenchArgs, adapter: &AdapterOptions, opts: &KernelOptions) -> Result<Report> {
    let (ctx, profiler, mut report) = open(args, adapter)?;
    let (peak, kernels) = bench::kernels::run(&ctx, &profiler, opts)?;
    report.set("peak", peak);
    report.set("kernels", kernels);
    Ok(report)
}

fn models(args: &BenchArgs, adapter: &AdapterOptions, opts: &ModelOptions) -> Result<Report> {
    let (ctx, profiler, mut report) = open(args, adapter)?;
    report.set("models", bench::models::run(&ctx, &profiler, opts)?);
    Ok(report)
}

/// The adapter, its profiler and an empty report.
fn open(args: &BenchArgs, adapter: &AdapterOptions) -> Result<(Context, Profiler, Report)> {
    let ctx = Context::new(adapter)?;
    easel::ops::tuning::tables()?;
    let profiler = bench::profiler(&ctx, args.wall_clock);
    let report = Report::new(&ctx, &profiler);
    Ok((ctx, profiler, report))
}

fn parse_sizes(s: &str) -> Result<Vec<(usize, usize)>> {
    s.split(',')
        .map(|v| {
            easel::farm::parse_size(v.trim()).map_err(|e| Error::BadInput(format!("--sizes: {e}")))
        })
        .collect()
}

/// `bench kernels --variant`: one of the kernel variants, or `all`.
fn check_variant(variant: Option<&str>) -> Result<()> {
    const NAMES: [&str; 7] = [
        "gpu",
        "gpuwide",
        "cpu",
        "cpusubgroup",
        "cputall",
        "coop",
        "all",
    ];
    match variant {
        Some(v) if !NAMES.iter().any(|n| n.eq_ignore_ascii_case(v)) => Err(Error::BadInput(
            format!("--variant {v}: expected one of {}", NAMES.join(", ")),
        )),
        _ => Ok(()),
    }
}
