//! `cargo bench --bench kernels [-- FILTER]`: the adapter's attainable peak, then
//! every kernel family and variant at the default model's shapes with % of that
//! peak. The same code as `easel bench kernels` (easel::bench::kernels); prints
//! the table, then the whole JSON report on one line. `EASEL_BENCH_VARIANT=Cpu`
//! (Gpu, Cpu, CpuSubgroup) runs one variant.

use easel::bench::kernels::{self, KernelOptions};
use easel::bench::{self, Report};
use easel::gpu::{AdapterOptions, Context};

fn main() -> easel::Result<()> {
    let ctx = Context::new(&AdapterOptions::default())?;
    let profiler = bench::profiler(&ctx, false);
    let opts = KernelOptions {
        quick: false,
        filter: bench::cargo_bench_filter(),
        variant: std::env::var("EASEL_BENCH_VARIANT").ok(),
        model: None,
        precision: Default::default(),
    };
    let (peak, rows) = kernels::run(&ctx, &profiler, &opts)?;
    let mut report = Report::new(&ctx, &profiler);
    report.set("peak", peak);
    report.set("kernels", rows);
    println!("{}", report.value());
    Ok(())
}
