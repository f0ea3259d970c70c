//! `easel tune`: measure every GEMM kernel at a model's launches on the
//! adapter and save the fastest per shape class ([`easel::bench::tune`]) into
//! the table file later runs read ([`easel::ops::tuning`]).

use std::path::PathBuf;

use clap::Args;
use easel::bench::tune::{self, TuneOptions};
use easel::bench::Report;
use easel::gpu::{AdapterOptions, Context};
use easel::ops::tuning::{self, Tables};
use easel::output::{check_writable, write_json};
use easel::{Error, Result};

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Model folder whose launches to time; default: EASEL_MODEL, else the model
    /// built into easel. Tune with the model you run: classes it lacks take the
    /// nearest measured one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The UNet's and VAE decoder's activations: auto, f32 or f16 (as a run).
    #[arg(long, default_value = "auto")]
    pub precision: easel::memory_plan::Precision,
    /// Table file to update; default: EASEL_TUNING, else ~/.cache/easel/tuning.json
    /// ($XDG_CACHE_HOME). Other adapters' tables in it are kept.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also write the report to FILE as JSON (as `easel bench --json`: device, clock, the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Short timings, the UNet at batch 2 only (for tests; a noisy table).
    #[arg(long)]
    pub quick: bool,
}

pub fn run(args: &TuneArgs, adapter: &AdapterOptions) -> Result<()> {
    // Bad input fails before any GPU work: where to write, and what is there.
    let out = match args.out.clone().or_else(tuning::path) {
        Some(path) => path,
        None => return Err(Error::BadInput(no_path())),
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::BadInput(format!("{}: cannot create the folder: {e}", dir.display()))
        })?;
    }
    check_writable(&out)?;
    let mut tables = Tables::read(&out)?;
    if let Some(json) = &args.json {
        check_writable(json)?;
    }
    let model = easel::model_dir::resolve(args.model.as_deref())?;
    if !tune::MODELS.iter().any(|name| model.join(name).is_dir()) {
        let names = tune::MODELS.join(", ");
        let dir = model.display();
        return Err(Error::BadInput(format!(
            "{dir}: not a model folder (none of {names})"
        )));
    }
    let opts = TuneOptions {
        model,
        precision: args.precision,
        quick: args.quick,
    };
    let ctx = Context::new(adapter)?;
    let profiler = easel::bench::profiler(&ctx, false);
    let table = tune::run(&ctx, &profiler, &opts)?;
    let classes = table.winners.len();
    if let Some(json) = &args.json {
        // The report every `easel bench` writes (device, clock), with the table.
        let mut report = Report::new(&ctx, &profiler);
        report.set("tune", serde_json::json!(table));
        report.write(json)?;
    }
    tables.insert(table);
    write_json(&out, &tables)?;
    println!(
        "saved {classes} classes for this adapter to {}",
        out.display()
    );
    Ok(())
}

fn no_path() -> String {
    match std::env::var_os(tuning::ENV) {
        Some(_) => format!("{}=off: give the table file with --out", tuning::ENV),
        None => format!(
            "no cache folder (HOME, XDG_CACHE_HOME unset): give the table file with --out or {}",
            tuning::ENV
        ),
    }
}
