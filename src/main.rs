//! The `easel` command line: parses arguments, calls the library, and maps
//! errors to the exit codes in DESIGN.md (0 ok, 2 bad input, 3 no adapter,
//! 1 anything else).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use easel::gpu::{context, AdapterOptions};
use easel::Result;

#[derive(Parser)]
#[command(
    name = "easel",
    version,
    about = "Text-to-image on any GPU wgpu reaches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// List the adapters wgpu finds, their features and limits, and the one easel picks.
    Devices {
        #[command(flatten)]
        adapter: AdapterArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices { adapter } => devices(&adapter.options()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("easel: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn devices(opts: &AdapterOptions) -> Result<()> {
    let adapters = context::enumerate(opts)?;
    let picked = context::pick(&adapters, opts)?;
    for (i, adapter) in adapters.iter().enumerate() {
        let info = adapter.get_info();
        let features = adapter.features();
        let limits = adapter.limits();
        let mark = if i == picked { "*" } else { " " };
        println!(
            "{mark} [{i}] {} ({:?}, {:?})",
            info.name, info.backend, info.device_type
        );
        println!("      driver: {} {}", info.driver, info.driver_info);
        let has = |f: wgpu::Features| if features.contains(f) { "yes" } else { "no" };
        println!(
            "      shader-f16: {}  timestamp-query: {} (inside passes: {})  subgroups: {} (size {}..{})",
            has(wgpu::Features::SHADER_F16),
            has(wgpu::Features::TIMESTAMP_QUERY),
            has(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            has(wgpu::Features::SUBGROUP),
            info.subgroup_min_size,
            info.subgroup_max_size,
        );
        println!(
            "      max storage binding: {} MiB  max buffer: {} MiB  workgroup storage: {} KiB  invocations/workgroup: {}",
            limits.max_storage_buffer_binding_size >> 20,
            limits.max_buffer_size >> 20,
            limits.max_compute_workgroup_storage_size >> 10,
            limits.max_compute_invocations_per_workgroup,
        );
    }
    let info = adapters[picked].get_info();
    println!("easel uses [{picked}] {} via {:?}", info.name, info.backend);
    Ok(())
}
