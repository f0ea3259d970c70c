//! One timed kernel as a row of the table that `easel bench peak` and `easel
//! bench kernels` print and of their JSON: what limits it ([`Bound`]), its times
//! and rates ([`KernelRow`]), how it is measured ([`measure`]) and printed
//! ([`table`], [`print_row`]). Both benchmarks build on this module, so the peak
//! probes and the kernels they are read against share one row and one clock.

use serde::Serialize;

use crate::bench::{fixed, Budget, Stats, Table};
use crate::error::Result;
use crate::gpu::profiler::Profiler;
use crate::gpu::Context;
use crate::gpu::Dispatch;

/// What limits a kernel, so which peak its figure is read against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Compute,
    Memory,
}

/// One timed kernel: a row of the table and of the JSON `kernels` list.
#[derive(Clone, Debug, Serialize)]
pub struct KernelRow {
    /// The family (`matmul`), or `peak` for the probes.
    pub kernel: String,
    pub variant: String,
    /// The shader and entry point that ran (`file::entry`).
    pub entry: String,
    pub shape: String,
    #[serde(flatten)]
    pub stats: Stats,
    /// At the median time.
    pub gflops: f64,
    pub gbps: f64,
    pub bound: Bound,
    /// Of the FMA peak (compute-bound) or the copy bandwidth (memory-bound).
    pub pct_of_peak: Option<f64>,
    pub clock: &'static str,
}

/// The repeats of a `--quick` run (tests): a few, whatever they cost.
pub(crate) const QUICK_BUDGET: Budget = Budget {
    seconds: 0.05,
    min: 2,
    max: 5,
};

/// The table both `peak` and `kernels` print.
pub(crate) fn table() -> Table {
    Table::new(
        &[
            ("kernel", 11),
            ("variant", 11),
            ("shape", 44),
            ("median ms", 10),
            ("min ms", 9),
            ("max ms", 9),
            ("GFLOP/s", 9),
            ("GB/s", 8),
            ("% peak", 7),
            ("clock", 15),
        ],
        3,
    )
}

pub(crate) fn print_row(table: &Table, r: &KernelRow) {
    table.row(&[
        r.kernel.clone(),
        r.variant.clone(),
        r.shape.clone(),
        format!("{:.3}", r.stats.median_ms),
        format!("{:.3}", r.stats.min_ms),
        format!("{:.3}", r.stats.max_ms),
        format!("{:.2}", r.gflops),
        format!("{:.2}", r.gbps),
        fixed(r.pct_of_peak, 1),
        r.clock.to_string(),
    ]);
}

/// Time `d` and describe it as a row (no % of peak yet).
pub(crate) fn measure(
    ctx: &Context,
    profiler: &Profiler,
    (kernel, variant, shape): (&str, &str, String),
    d: &Dispatch,
    bound: Bound,
    budget: Budget,
) -> Result<KernelRow> {
    let stats = crate::bench::time_dispatch(ctx, profiler, d, budget)?;
    let per_ms = 1.0 / (stats.median_ms * 1e6);
    Ok(KernelRow {
        kernel: kernel.to_string(),
        variant: variant.to_string(),
        entry: d.kernel.label.clone(),
        shape,
        stats,
        gflops: d.flops as f64 * per_ms,
        gbps: d.bytes as f64 * per_ms,
        bound,
        pct_of_peak: None,
        clock: profiler.clock().name(),
    })
}
