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
    /// List the adapters wgpu finds, their features and limits, and the one easel picks.
    Devices {
        #[command(flatten)]
        adapter: AdapterArgs,
    },
    /// List a model folder (model_index.json, each component's config.json keys, every
    /// tensor's dtype and shape, totals) or say exactly what is wrong with it. Opens no GPU.
    Inspect {
        /// A model folder in the Hugging Face layout, one component folder, or a
        /// .safetensors file.
        #[arg(default_value = cli::inspect::DEFAULT_MODEL)]
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    cli::quiet_headless_vulkan();
    let cli = Cli::parse();
    let result = match cli.command {
        None => cli::generate::run(&cli.generate, &cli.adapter.options()),
        Some(Command::Generate { args, adapter }) => cli::generate::run(&args, &adapter.options()),
        Some(Command::Devices { adapter }) => cli::devices::run(&adapter.options()),
        Some(Command::Inspect { path }) => cli::inspect::run(&path),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("easel: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
