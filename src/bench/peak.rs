//! `easel bench peak`: the adapter's attainable arithmetic peak and memory
//! bandwidth, measured with wgsl/peak.wgsl, so "% of peak" in `easel bench
//! kernels` means something on any GPU, including lavapipe (a roofline: FLOP-bound
//! kernels against the FMA figure, memory-bound ones against the copy figure).

use serde_json::{json, Value};

use crate::bench::row::{self, Bound, KernelRow};
use crate::bench::{random, Budget};
use crate::error::Result;
use crate::gpu::profiler::Profiler;
use crate::gpu::Tensor;
use crate::gpu::{AdapterClass, Context};
use crate::ops::peak;

/// The attainable peak, the denominators of "% of peak": each probe's best
/// repeat (its minimum time), since what limits a probe on a shared machine
/// is the other work, not the adapter; kernels are then read at their median,
/// so "% of peak" errs low, never above 100 % by contention alone.
#[derive(Clone, Copy, Debug)]
pub struct Peak {
    /// f32 FMA throughput, an FMA counted as 2 FLOPs.
    pub gflops: f64,
    /// Copy bandwidth, read + write bytes.
    pub gbps: f64,
}

/// x ← x·0.999 + 0.001 converges to 1: finite however long the chains run.
const A: f32 = 0.999;
const B: f32 = 0.001;
/// Invocations at which any current GPU is full (an H100: 132 SMs × 2,048
/// resident threads = 270k); beyond it the chains get longer instead.
const FILL: usize = 1 << 22;
const MAX_ITERATIONS: u32 = 1 << 16;

/// Measure both probes, print them as kernel rows, and return the peak with
/// its JSON section.
pub fn run(ctx: &Context, profiler: &Profiler, quick: bool) -> Result<(Peak, Value)> {
    let (target_ms, budget) = if quick {
        (2.0, row::QUICK_BUDGET)
    } else {
        (
            20.0,
            Budget {
                seconds: 1.0,
                min: 5,
                max: 50,
            },
        )
    };
    let table = row::table();
    let fma = fma(ctx, profiler, target_ms, budget)?;
    row::print_row(&table, &fma);
    let copy = copy(ctx, profiler, quick, budget)?;
    row::print_row(&table, &copy);
    // Rates at the best repeat (see Peak).
    let best = |row: &KernelRow| row.stats.median_ms / row.stats.min_ms;
    let peak = Peak {
        gflops: fma.gflops * best(&fma),
        gbps: copy.gbps * best(&copy),
    };
    println!(
        "attainable peak (best repeat): {:.2} GFLOP/s f32 FMA, {:.2} GB/s copy",
        peak.gflops, peak.gbps
    );
    let section = json!({
        "fma_gflops": peak.gflops,
        "copy_gbps": peak.gbps,
        "fma_gflops_median": fma.gflops,
        "copy_gbps_median": copy.gbps,
        "rows": [fma, copy],
    });
    Ok((peak, section))
}

/// Grow the launch until one dispatch takes `target_ms` (first more
/// invocations, to fill the device, then longer chains), then time it.
fn fma(ctx: &Context, profiler: &Profiler, target_ms: f64, budget: Budget) -> Result<KernelRow> {
    let seeds = random(ctx, &[64, 4], 1)?;
    let max_n = FILL.min(ctx.limits().max_storage_buffer_binding_size as usize / 16);
    let (mut n, mut iterations) = (4096, 256);
    let d = loop {
        let out = Tensor::zeros(ctx, "fma_chains out", &[n, 4])?;
        let d = peak::fma_chains(ctx, &seeds, &out, iterations, A, B)?;
        // The second time: the first may include compiling the pipeline.
        let ms = profiler.time(ctx, &[&d, &d])?[1];
        if ms >= target_ms || iterations >= MAX_ITERATIONS {
            break d;
        }
        if n * 4 <= max_n {
            n *= 4;
        } else {
            iterations *= 4;
        }
    };
    let shape = format!(
        "{n} invocations x {} vec4 chains x {iterations} FMAs",
        peak::CHAINS
    );
    row::measure(
        ctx,
        profiler,
        ("peak", "fma", shape),
        &d,
        Bound::Compute,
        budget,
    )
}

/// Copy a buffer much larger than a CPU's caches (lavapipe) or a GPU's L2.
fn copy(ctx: &Context, profiler: &Profiler, quick: bool, budget: Budget) -> Result<KernelRow> {
    let wanted: u64 = match (quick, ctx.class) {
        (true, _) => 8 << 20,
        (false, AdapterClass::Cpu) => 64 << 20,
        (false, AdapterClass::Gpu) => 256 << 20,
    };
    let bytes = wanted.min(ctx.limits().max_storage_buffer_binding_size) / 16 * 16;
    let rows = (bytes / 16) as usize;
    let src = random(ctx, &[rows, 4], 2)?;
    let dst = Tensor::zeros(ctx, "copy dst", &[rows, 4])?;
    let d = peak::copy(ctx, &src, &dst)?;
    let shape = format!("{} MiB", bytes >> 20);
    row::measure(
        ctx,
        profiler,
        ("peak", "copy", shape),
        &d,
        Bound::Memory,
        budget,
    )
}
