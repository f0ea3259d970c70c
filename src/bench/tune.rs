//! `easel tune`: time every GEMM kernel at a model's own launches on this
//! adapter and keep the fastest per shape class ([`crate::ops::tuning`]),
//! which later runs on the adapter choose before the built-in rules.
//!
//! Each model of the folder is planned as the loop runs it (the UNet at the
//! batches of CFG with 1 and 4 candidates, the decoder at 1, the text encoder
//! at 2, the scorer at 4), once per variant pinned
//! ([`crate::ops::matmul::with_variant`]); each distinct GEMM launch is timed
//! alone (median of repeats) and counted as often as the pass makes it, and a
//! class's winner is the variant with the least summed time there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::bench::model_kernels::{launch_key, Launch};
use crate::bench::models::Model;
use crate::bench::row::QUICK_BUDGET;
use crate::bench::{device_label, time_dispatch, Budget, Table};
use crate::error::{Error, Result};
use crate::gpu::profiler::Profiler;
use crate::gpu::{Context, Dispatch};
use crate::memory_plan::Precision;
use crate::ops::matmul::{coop_ready, with_variant, MatmulVariant};
use crate::ops::tuning::{AdapterKey, AdapterTable, ShapeClass, Winner};
use crate::weights::WeightPrecision;

/// Settings of one `easel tune` run.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    /// A pipeline folder (diffusers layout).
    pub model: PathBuf,
    /// The UNet's and VAE decoder's activations, as a run resolves them.
    pub precision: Precision,
    /// Short budgets, the UNet at batch 2 only (for tests).
    pub quick: bool,
}

/// Repeats per distinct launch: a steady median without timing each launch
/// for long (a model has tens to hundreds of them, times every variant).
const BUDGET: Budget = Budget {
    seconds: 0.25,
    min: 3,
    max: 10,
};

/// Each variant's summed time per class, in ms, and the launches counted.
type Sums = BTreeMap<ShapeClass, (BTreeMap<MatmulVariant, f64>, usize)>;

/// Measure (module docs) and return this adapter's table, and the figures as JSON.
pub fn run(
    ctx: &Context,
    profiler: &Profiler,
    opts: &TuneOptions,
) -> Result<(AdapterTable, Value)> {
    let variants: Vec<MatmulVariant> = MatmulVariant::available(ctx)
        .into_iter()
        .filter(|&v| v != MatmulVariant::Coop || coop_ready(ctx).is_some())
        .collect();
    let mut sums = Sums::new();
    for (name, batches) in batches(opts.quick) {
        let dir = opts.model.join(name);
        if !dir.is_dir() {
            continue;
        }
        let model = Model::load(ctx, &dir, name, WeightPrecision::Auto)?;
        for &batch in batches {
            println!("timing {name} at batch {batch} on {variants:?}");
            for (i, &v) in variants.iter().enumerate() {
                let planned = with_variant(v, || model.plan(ctx, batch, opts.precision));
                let graph = match planned {
                    Err(e @ Error::DeviceLimit(_)) => {
                        eprintln!("skipping {name} at batch {batch}: {e}");
                        break;
                    }
                    other => other?,
                };
                let timing = (v, budget(opts.quick), i == 0);
                time_gemms(ctx, profiler, &graph.dispatches, timing, &mut sums)?;
            }
        }
    }
    if sums.is_empty() {
        let dir = opts.model.display();
        return Err(Error::BadInput(format!(
            "{dir}: no model with GEMM launches to time"
        )));
    }
    let table = adapter_table(ctx, opts, &sums);
    print(&sums, &table, &variants);
    let figures = json!({"device": device_label(ctx), "table": table});
    Ok((table, figures))
}

/// The models the loop runs, each at the batches it runs them.
fn batches(quick: bool) -> [(&'static str, &'static [usize]); 4] {
    let unet: &[usize] = if quick { &[2] } else { &[2, 8] };
    [
        ("unet", unet),
        ("vae", &[1]),
        ("text_encoder", &[2]),
        ("scorer", &[4]),
    ]
}

fn budget(quick: bool) -> Budget {
    if quick {
        QUICK_BUDGET
    } else {
        BUDGET
    }
}

/// Time each distinct GEMM launch of one planned pass on `variant` and add
/// its median, times its count, to its class (and the count, on the `first`
/// variant timed).
fn time_gemms(
    ctx: &Context,
    profiler: &Profiler,
    dispatches: &[Dispatch],
    (variant, budget, first): (MatmulVariant, Budget, bool),
    sums: &mut Sums,
) -> Result<()> {
    // Same kernel, grid, work and problem: the same time.
    let mut distinct: BTreeMap<(Launch, ShapeClass), (&Dispatch, usize)> = BTreeMap::new();
    for d in dispatches {
        if let Some(gemm) = d.gemm {
            let key = (launch_key(d), ShapeClass::of(gemm));
            distinct.entry(key).or_insert((d, 0)).1 += 1;
        }
    }
    for ((_, class), (d, count)) in distinct {
        let ms = time_dispatch(ctx, profiler, d, budget)?.median_ms;
        let (times, launches) = sums.entry(class).or_default();
        *times.entry(variant).or_default() += ms * count as f64;
        if first {
            *launches += count;
        }
    }
    Ok(())
}

/// The winners, with what was measured.
fn adapter_table(ctx: &Context, opts: &TuneOptions, sums: &Sums) -> AdapterTable {
    let winners = sums
        .iter()
        .map(|(&class, (times, _))| Winner {
            class,
            variant: fastest(times),
            ms: times
                .iter()
                .map(|(&v, &ms)| (v, (ms * 1e3).round() / 1e3))
                .collect(),
        })
        .collect();
    let model = opts.model.file_name().unwrap_or_default().to_string_lossy();
    AdapterTable {
        adapter: AdapterKey::of(&ctx.info),
        name: format!("{} ({})", ctx.info.name, ctx.info.driver_info),
        measured: format!(
            "easel {} tune, model {model}, activations {:?}",
            env!("CARGO_PKG_VERSION"),
            opts.precision
        ),
        winners,
    }
}

/// The variant of least time (the first of equals, in the enum's order).
fn fastest(times: &BTreeMap<MatmulVariant, f64>) -> MatmulVariant {
    let least = times.iter().min_by(|a, b| a.1.total_cmp(b.1));
    *least.expect("a timed class has a time per variant").0
}

/// One row per class: each variant's summed ms and the winner.
fn print(sums: &Sums, table: &AdapterTable, variants: &[MatmulVariant]) {
    let names: Vec<String> = variants.iter().map(|v| format!("{v:?} ms")).collect();
    let mut columns = vec![
        ("op", 6),
        ("outputs <=", 10),
        ("depth <=", 8),
        ("launches", 8),
    ];
    columns.extend(names.iter().map(|n| (n.as_str(), n.len().max(9))));
    columns.push(("winner", 11));
    let out = Table::new(&columns, 1);
    for (w, (_, launches)) in table.winners.iter().zip(sums.values()) {
        let mut cells = vec![
            format!("{:?}", w.class.op).to_lowercase(),
            w.class.max_outputs.to_string(),
            w.class.max_depth.to_string(),
            launches.to_string(),
        ];
        let ms = |v| {
            w.ms.get(v)
                .map_or("-".into(), |ms: &f64| format!("{ms:.3}"))
        };
        cells.extend(variants.iter().map(ms));
        cells.push(format!("{:?}", w.variant));
        out.row(&cells);
    }
}
