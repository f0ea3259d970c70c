//! `easel batch JOBS.jsonl --out DIR`: a render farm's worker, over [`easel::farm`].
//!
//! Exit codes: 0 every job of this shard done or skipped; 1 some job failed (see the
//! manifest); 2 bad arguments, an unreadable job file, a bad model folder, another run
//! holding this shard of `--out`, or a manifest that is a link or not a regular file;
//! 3 no adapter; 128+N when signal N (SIGTERM 15, SIGINT 2) stopped the batch early.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use clap::Args;
use easel::farm::{self, Batch, JobModel, Shard};
use easel::gpu::{AdapterOptions, Context};
use easel::{Engine, Error, Result};
use signal_hook::consts::{SIGINT, SIGTERM};

use super::progress::BatchBar;

#[derive(Args, Clone, Debug)]
pub struct BatchArgs {
    /// JSON Lines, one job per line: {"prompt": ..., "seed", "size": "WxH", "steps",
    /// "candidates", "guidance", "sampler", "upscale", "out"}; missing fields take the flags.
    pub jobs: PathBuf,
    /// Output folder: one PNG per job (the job's `out`, or a name hashed from its
    /// parameters) and manifest.jsonl; one run per shard at a time (a lock file).
    #[arg(long)]
    pub out: PathBuf,
    /// Run jobs whose line index ≡ I (mod N). Default: from SLURM_ARRAY_TASK_ID and
    /// SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX with --shards; else all jobs.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Number of shards when the index comes from JOB_COMPLETION_INDEX (Kubernetes
    /// Indexed Job; set it to the Job's `completions`).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Defaults for what a job line leaves out, and the model loaded once for all jobs.
    #[command(flatten)]
    pub render: super::RenderArgs,
    /// No per-job lines or summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the summary as one JSON line on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run the batch; `Ok` carries the exit code of a batch that ran.
pub fn run(args: &BatchArgs, adapter: &AdapterOptions) -> Result<u8> {
    if args.render.seed == super::Seed::Random {
        return Err(Error::BadInput(
            "--seed random: a batch names and resumes its outputs by their parameters; \
             give each job line its own \"seed\""
                .into(),
        ));
    }
    let shard = Shard::from_env(args.shard.as_deref(), args.shards, |name| {
        std::env::var(name).ok()
    })?;
    let text = read_jobs(&args.jobs)?;
    // A bad model folder fails before any job is touched; every job is checked
    // against its configs, without the GPU.
    let model_dir = args.render.model_dir()?;
    let config = args.render.pipeline_config()?;
    let key = job_key(&model_dir, &config)?;
    // A bad --lora file fails the batch before any job is touched.
    farm::with_loras(&key, &config.loras, &mut farm::LoraHashes::default())?;
    let defaults = args.render.request(String::new(), &config)?;
    if let Some(note) = easel::request::note(&defaults, &config).filter(|_| !args.quiet) {
        eprintln!("easel: {note}");
    }
    let model = JobModel {
        config: &config,
        key: &key,
    };
    let entries = farm::parse_jobs(&text, &defaults, &model);

    let bar = BatchBar::new(super::progress::drawn(args.quiet));
    let batch = Batch {
        out_dir: &args.out,
        shard,
        report: (!args.quiet).then_some(&bar as &dyn farm::Report),
        stop: stop_on_signals(),
    };
    let summary = farm::run(&entries, &batch, |loras| {
        bar.set_message("loading the model");
        let config = easel::PipelineConfig {
            loras: loras.to_vec(),
            ..config.clone()
        };
        Engine::load(Context::new(adapter)?, config)
    });
    bar.clear();
    let summary = summary?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&summary).expect("plain data serializes")
        );
    }
    if !args.quiet {
        eprintln!(
            "easel: batch shard {}: {} done, {} skipped, {} failed{} of {} jobs in {:.1} s \
             (model load {:.1} s): {:.0} images/hour",
            summary.shard,
            summary.done,
            summary.skipped,
            summary.failed,
            match summary.interrupted_by {
                Some(_) => format!(", {} not run", summary.not_run),
                None => String::new(),
            },
            summary.jobs,
            summary.seconds,
            summary.load_seconds,
            summary.images_per_hour,
        );
    }
    Ok(match summary.interrupted_by {
        Some(signal) => 128 + signal as u8,
        None if summary.failed > 0 => 1,
        None => 0,
    })
}

/// The job file's text.
fn read_jobs(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::BadInput(format!("{}: cannot read job file: {e}", path.display())))
}

/// The model as output names see it: its folder's key, and those of another
/// scorer or upscaler (they change the images, so their files are part of it).
fn job_key(model_dir: &std::path::Path, config: &easel::PipelineConfig) -> Result<String> {
    let mut key = farm::model_key(model_dir)?;
    let scorer = config.scorer.as_ref().map(|s| s.dir.as_path());
    let upscaler = config
        .upscaler
        .as_ref()
        .map(|_| config.upscaler_path.as_path());
    for part in [scorer, upscaler].into_iter().flatten() {
        if !part.starts_with(model_dir) {
            key = format!("{key}+{}", farm::model_key(part)?);
        }
    }
    Ok(key)
}

/// SIGTERM (what Slurm and Kubernetes send first) or SIGINT sets the returned flag to
/// the signal's number: the batch finishes the job under way and stops. A second
/// signal exits at once (128+N), abandoning the job; its temp file is removed by the
/// next run. signal-hook rather than raw libc `sigaction`: it keeps the handler
/// async-signal-safe and chains with any handler already installed, in a few lines.
fn stop_on_signals() -> &'static AtomicUsize {
    // The handlers live for the whole process, so the flags do too.
    static STOP: AtomicUsize = AtomicUsize::new(0);
    static ARMED: AtomicBool = AtomicBool::new(false);
    let can = "SIGTERM and SIGINT can be handled";
    for signal in [SIGTERM, SIGINT] {
        // Order matters: the shutdown checks ARMED before this signal sets it.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, &ARMED).expect(can);
        signal_hook::flag::register_usize(signal, &STOP, signal as usize).expect(can);
        signal_hook::flag::register(signal, &ARMED).expect(can);
    }
    &STOP
}
