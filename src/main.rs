//! The `easel` command line: parses arguments, calls the library, and maps
//! errors to the exit codes in DESIGN.md (0 ok, 2 bad input, 3 no adapter,
//! 1 anything else).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use easel::gpu::AdapterOptions;

#[derive(Parser)]
#[command(
    name = "easel",
    version,
    about = "Text-to-image on any GPU wgpu reaches",
    args_conflicts_with_subcommands = true,
    allow_negative_numbers = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `easel "prompt" ...` is `easel generate "prompt" ...`.
    #[command(flatten)]
    generate: cli::generate::GenerateArgs,
    #[command(flatten)]
    adapter: AdapterArgs,
}

#[derive(Args, Clone)]
struct AdapterArgs {
    /// Backends to search: vulkan, metal, dx12, gl (comma-separated). Default: primary
    /// backends (not GL), or WGPU_BACKEND.
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Adapter to use: index from `easel devices` or part of its name. Default: the
    /// best found, or WGPU_ADAPTER_NAME.
    #[arg(long, global = true)]
    adapter: Option<String>,
}

impl AdapterArgs {
    fn options(&self) -> AdapterOptions {
        AdapterOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Make one image from a prompt (the default command).
    Generate {
        #[command(flatten)]
        args: Box<cli::generate::GenerateArgs>,
        #[command(flatten)]
        adapter: AdapterArgs,
    },
    /// Run a JSON Lines job file, one PNG per job into --out: resumable (finished
    /// outputs are skipped), sharded (--shard I/N, Slurm arrays, Kubernetes Indexed Jobs),
    /// with DIR/manifest.jsonl. Exit 1 if any job failed, 2 if the job file is unreadable,
    /// 128+N when signal N stopped it.
    Batch {
        #[command(flatten)]
        args: Box<cli::batch::BatchArgs>,
        #[command(flatten)]
        adapter: AdapterArgs,
    },
    /// Benchmarks: `peak` (attainable FMA GFLOP/s, copy GB/s), `kernels` (every kernel,
    /// % of peak), `models` (forward passes), `generate` (the whole loop vs candidates K).
    Bench {
        #[command(flatten)]
        args: Box<cli::bench::BenchArgs>,
        #[command(flatten)]
        adapter: AdapterArgs,
    },
    /// Time every GEMM and attention kernel at a model's launches on this adapter and save the fastest
    /// per shape class (EASEL_TUNING, default ~/.cache/easel/tuning.json), which later
    /// runs on the adapter use.
    Tune {
        #[command(flatten)]
        args: Box<cli::tune::TuneArgs>,
        #[command(flatten)]
        adapter: AdapterArgs,
    },
    /// List the adapters wgpu finds, their features and limits, and the one easel picks.
    Devices {
        #[command(flatten)]
        adapter: AdapterArgs,
    },
    /// List a model folder (model_index.json, each component's config.json keys, every
    /// tensor's dtype and shape, totals) or say exactly what is wrong with it. Opens no GPU.
    Inspect {
        /// A model folder in the Hugging Face layout, one component folder, or a
        /// .safetensors file; default: EASEL_MODEL, else the model built into easel.
        path: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    cli::quiet_headless_vulkan();
    let cli = Cli::parse();
    // `generate --json` reports a failure as JSON on stdout too.
    let json = match &cli.command {
        None => cli.generate.errors_as_json(),
        Some(Command::Generate { args, .. }) => args.errors_as_json(),
        Some(_) => false,
    };
    let done = |r: easel::Result<()>| r.map(|()| 0);
    let result = match cli.command {
        None => done(cli::generate::run(&cli.generate, &cli.adapter.options())),
        Some(Command::Generate { args, adapter }) => {
            done(cli::generate::run(&args, &adapter.options()))
        }
        // A batch that ran has its own codes: 1 if a job failed, 128+N after signal N.
        Some(Command::Batch { args, adapter }) => cli::batch::run(&args, &adapter.options()),
        Some(Command::Bench { args, adapter }) => done(cli::bench::run(&args, &adapter.options())),
        Some(Command::Tune { args, adapter }) => done(cli::tune::run(&args, &adapter.options())),
        Some(Command::Devices { adapter }) => done(cli::devices::run(&adapter.options())),
        Some(Command::Inspect { path }) => done(cli::inspect::run(path.as_deref())),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let message = e.to_string();
            eprintln!("easel: {}", terminal_safe(&message));
            if json {
                let error = serde_json::json!({"error": message, "exit_code": e.exit_code()});
                println!("{error}");
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Control characters a user's text may carry into a message (ESC, NUL, CR)
/// are shown escaped, so an error cannot drive the terminal; line feeds stay
/// (a prompt error's caret block is three lines).
fn terminal_safe(message: &str) -> String {
    message
        .chars()
        .flat_map(|c| match c {
            '\n' => vec!['\n'],
            c if c.is_control() => c.escape_default().collect(),
            c => vec![c],
        })
        .collect()
}
