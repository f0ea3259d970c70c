//! Benchmarks as library code, so `easel bench` and `cargo bench` run the same
//! measurements (DESIGN.md "Benchmarks"): the adapter's attainable peak
//! ([`peak`]), every kernel family at the default model's shapes ([`kernels`]),
//! both as rows of one table ([`row`]), each model's forward pass ([`models`])
//! and the whole generation loop ([`generate`]). Each prints a table on stdout
//! as it goes and returns its figures as JSON; [`Report`] gathers them into one
//! document in the schema `tools/bench_torch.py --json` writes, which
//! [`compare`] sets side by side.
//!
//! Kernel times come from the [`Profiler`]: GPU timestamps where the adapter has
//! TIMESTAMP_QUERY, otherwise the host wall clock around a submit + wait per
//! dispatch; every table and JSON row names its clock.

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::gpu::profiler::Profiler;
use crate::gpu::Tensor;
use crate::gpu::{Context, Dispatch};
use crate::models::unet_2d_condition::UNet2DConditionConfig;

pub mod compare;
pub mod generate;
pub mod kernels;
pub mod model_kernels;
pub mod models;
pub mod peak;
pub mod plot;
pub mod row;
pub mod runner;
pub mod tune;

/// Repeated timings of one thing, in milliseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stats {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub runs: usize,
}

impl Stats {
    /// Median (upper middle), min and max of `samples`; `None` if there are none.
    pub fn of(mut samples: Vec<f64>) -> Option<Self> {
        samples.sort_by(f64::total_cmp);
        Some(Self {
            median_ms: *samples.get(samples.len() / 2)?,
            min_ms: samples[0],
            max_ms: samples[samples.len() - 1],
            runs: samples.len(),
        })
    }
}

/// How long to keep repeating one measurement: until about `seconds` have
/// passed, at least `min` and at most `max` times. The median of several is
/// the steadier figure on a machine shared with other work.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub seconds: f64,
    pub min: usize,
    pub max: usize,
}

impl Budget {
    /// Repeats for one case when a first run took `once_s` seconds.
    pub fn repeats(&self, once_s: f64) -> usize {
        ((self.seconds / once_s.max(1e-9)) as usize).clamp(self.min, self.max)
    }
}

/// Time `d` alone, repeated to fill `budget`, one profiler time per repeat.
pub fn time_dispatch(
    ctx: &Context,
    profiler: &Profiler,
    d: &Dispatch,
    budget: Budget,
) -> Result<Stats> {
    // Warm-up: pipeline compile, first touch of the buffers.
    let once = profiler.time(ctx, &[d])?[0] * 1e-3;
    let batch: Vec<&Dispatch> = std::iter::repeat_n(d, budget.repeats(once)).collect();
    Stats::of(profiler.time(ctx, &batch)?).ok_or_else(|| Error::Gpu("no timings".into()))
}

/// The profiler for `ctx` (`wall_clock` forces the fallback even where GPU
/// timestamps exist, to compare the two); prints the adapter and the clock.
pub fn profiler(ctx: &Context, wall_clock: bool) -> Profiler {
    let profiler = if wall_clock {
        Profiler::wall_clock()
    } else {
        Profiler::new(ctx)
    };
    println!(
        "adapter: {}; clock: {}",
        device_label(ctx),
        profiler.clock().label()
    );
    profiler
}

/// The adapter as the reports name it: name, backend, class, driver.
pub fn device_label(ctx: &Context) -> String {
    format!(
        "{} ({:?}, {:?}, {})",
        ctx.info.name, ctx.info.backend, ctx.class, ctx.info.driver_info
    )
}

/// A tensor of `shape` filled with values in [-1, 1) from a cheap LCG: only
/// time matters here (correctness is tests/ops' job), but not all zeros.
pub fn random(ctx: &Context, shape: &[usize], seed: u64) -> Result<Tensor> {
    let lcg = |x: u64| {
        x.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    };
    let mut x = lcg(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| {
            x = lcg(x);
            (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_f32(ctx, "bench input", shape, &data)
}

/// A table printed row by row as results arrive (lavapipe is slow; a user sees
/// progress). Columns are (header, width); the first `left` are left-aligned.
pub struct Table {
    widths: Vec<usize>,
    left: usize,
}

impl Table {
    /// Print the header and return the table.
    pub fn new(columns: &[(&str, usize)], left: usize) -> Self {
        let table = Self {
            widths: columns.iter().map(|c| c.1).collect(),
            left,
        };
        let head: Vec<String> = columns.iter().map(|c| c.0.to_string()).collect();
        table.row(&head);
        table
    }

    pub fn row(&self, cells: &[String]) {
        let line: Vec<String> = cells
            .iter()
            .zip(&self.widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                if i < self.left {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("{}", line.join(" ").trim_end());
    }
}

/// Bytes in decimal megabytes, as the memory columns print them.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The UNet's own sample size (pixels or latents), 32 where its config has none.
pub fn unet_sample_size(config: &UNet2DConditionConfig) -> usize {
    config.sample_size.unwrap_or(32)
}

/// `v` with `digits` decimals, or `-` where there is no figure.
pub fn fixed(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// One JSON document of every figure a run measured: `engine`, `device`,
/// `clock`, then a section per benchmark (`peak`, `kernels`, `models`,
/// `generate`), as `tools/bench_torch.py --json` writes it for PyTorch.
pub struct Report {
    doc: serde_json::Map<String, Value>,
}

impl Report {
    pub fn new(ctx: &Context, profiler: &Profiler) -> Self {
        let mut doc = serde_json::Map::new();
        doc.insert("engine".into(), json!("easel"));
        doc.insert("device".into(), json!(device_label(ctx)));
        doc.insert("clock".into(), json!(profiler.clock().name()));
        doc.insert("clock_label".into(), json!(profiler.clock().label()));
        Self { doc }
    }

    pub fn set(&mut self, section: &str, value: Value) {
        self.doc.insert(section.to_string(), value);
    }

    pub fn value(&self) -> Value {
        Value::Object(self.doc.clone())
    }

    /// Write the document (atomically, like every file easel writes).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::output::write_json(path, &self.doc)
    }
}

/// The name filter of a `cargo bench` run: cargo passes `--bench`, a filter may follow.
pub fn cargo_bench_filter() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with("--"))
}

/// Parse a comma-separated list of positive whole numbers (`--candidates 1,2,4`).
pub fn parse_counts(flag: &str, s: &str) -> Result<Vec<usize>> {
    let counts = s
        .split(',')
        .map(|v| match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Error::BadInput(format!(
                "{flag} {s}: `{}` is not a whole number above 0",
                v.trim()
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_median_of_sorted_samples() {
        let s = Stats::of(vec![3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!(
            (s.median_ms, s.min_ms, s.max_ms, s.runs),
            (3.0, 1.0, 10.0, 4)
        );
        assert!(Stats::of(Vec::new()).is_none());
    }

    #[test]
    fn counts_are_positive_whole_numbers() {
        assert_eq!(parse_counts("--k", "1, 2,8").unwrap(), vec![1, 2, 8]);
        for bad in ["0,1", "1,x", "", "1,,2", "-1"] {
            let e = parse_counts("--k", bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        }
    }
}
