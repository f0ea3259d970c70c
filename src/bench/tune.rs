//! `easel tune`: time every GEMM kernel (matmul, conv2d, attention) at a
//! model's own launches on this adapter and keep the fastest per shape class
//! ([`crate::ops::tuning`]),
//! which later runs on the adapter choose before the built-in rules.
//!
//! Each model of the folder is planned as the loop runs it (the UNet at the
//! batches of CFG with 1 and 4 candidates, the decoder at 1, the text encoder
//! at 2, the scorer at 4), once per variant pinned
//! ([`crate::ops::matmul::with_variant`]), each launch timed in place as the
//! whole pass runs. The variants take turns, one pass each per round, so a
//! machine getting busier or quieter during the run weighs on all of them
//! alike (timed one variant after another, a build finishing beside the run
//! made one kernel look 20-40 % faster than another in small classes). A
//! class's winner is the variant with the least summed time (each launch's
//! median over the rounds) over the class's launches, unless the kernel the
//! rules choose there is within 5 % of it ([`MARGIN`]) or was faster in any
//! one round (a paired sign test: a kernel no faster than the rules' one is
//! ahead in all 5 rounds by chance once in 32).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::bench::models::Model;
use crate::bench::{Stats, Table};
use crate::error::{Error, Result};
use crate::gpu::dispatch::Gemm;
use crate::gpu::dispatch::GemmOp::Attention;
use crate::gpu::profiler::Profiler;
use crate::gpu::{Context, Dispatch};
use crate::memory_plan::Precision;
use crate::ops::matmul::{coop_ready, with_variant, MatmulVariant};
use crate::ops::tuning::{AdapterKey, AdapterTable, ShapeClass, Winner};
use crate::weights::WeightPrecision;
use MatmulVariant::{CpuTall, GpuWide};

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

/// What one class's launches took.
#[derive(Default)]
struct ClassTimes {
    /// Each variant's summed median, ms.
    times: BTreeMap<MatmulVariant, f64>,
    /// Each variant's summed time per round, ms: the rounds pair the variants'
    /// passes, which ran next to each other.
    rounds: BTreeMap<MatmulVariant, Vec<f64>>,
    /// Launches of the class in the passes timed.
    launches: usize,
    /// What the rules choose there (for the class's first launch).
    rules: Option<MatmulVariant>,
}

type Sums = BTreeMap<ShapeClass, ClassTimes>;

/// A measured winner must beat the rules' choice by this fraction of its
/// time: in-pass medians move by 2-3 % between runs on lavapipe, and a table
/// should not flip kernels (and output bits) on noise.
const MARGIN: f64 = 0.05;

/// Measure (module docs) and return this adapter's table.
pub fn run(ctx: &Context, profiler: &Profiler, opts: &TuneOptions) -> Result<AdapterTable> {
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
            let timed = (&model, batch, &variants[..]);
            match time_rounds(ctx, profiler, timed, opts) {
                Err(e @ Error::DeviceLimit(_)) => {
                    eprintln!("skipping {name} at batch {batch}: {e}")
                }
                other => add_medians(other?, |g| MatmulVariant::by_rules(ctx, g), &mut sums),
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
    Ok(table)
}

/// The component folders `tune` times, those a model folder has.
pub const MODELS: [&str; 4] = ["unet", "vae", "text_encoder", "scorer"];

/// The models the loop runs, each at the batches it runs them.
fn batches(quick: bool) -> [(&'static str, &'static [usize]); 4] {
    let unet: &[usize] = if quick { &[2] } else { &[2, 8] };
    let [unet_dir, vae, text_encoder, scorer] = MODELS;
    [
        (unet_dir, unet),
        (vae, &[1]),
        (text_encoder, &[2]),
        (scorer, &[4]),
    ]
}

/// Rounds of timed passes: the median of 5 is steady on a shared machine.
fn rounds(quick: bool) -> usize {
    if quick {
        2
    } else {
        5
    }
}

/// Each launch of one model at one batch: its problem (`None` for kernels
/// that are not GEMMs), then its times (ms) per variant, one per round.
type LaunchTimes = Vec<(Option<Gemm>, BTreeMap<MatmulVariant, Vec<f64>>)>;

/// Time the model at `batch` on every variant in turns: per round, each
/// variant's plan (made afresh, so one plan's buffers exist at a time) runs a
/// warm-up pass and one pass with every launch timed in place (after the
/// launches before it, on the pass's own data, as a run meets it: alone and
/// repeated, a launch can time very differently, as a 64×64 projection
/// writing NCHW did on lavapipe, 4-5 ms alone, ~0.1 ms in a pass).
fn time_rounds(
    ctx: &Context,
    profiler: &Profiler,
    (model, batch, variants): (&Model, usize, &[MatmulVariant]),
    opts: &TuneOptions,
) -> Result<LaunchTimes> {
    let mut launches = LaunchTimes::new();
    for _ in 0..rounds(opts.quick) {
        for &v in variants {
            let graph = with_variant(v, || model.plan(ctx, batch, opts.precision))?;
            let pass: Vec<&Dispatch> = graph.dispatches.iter().collect();
            profiler.time(ctx, &pass)?;
            let times = profiler.time(ctx, &pass)?;
            if !launches.is_empty() && launches.len() != pass.len() {
                return Err(Error::Gpu(format!(
                    "tune: the plan on {v:?} has {} launches, another variant's {}",
                    pass.len(),
                    launches.len()
                )));
            }
            launches.resize_with(pass.len(), || (None, BTreeMap::new()));
            for ((gemm, by_variant), (d, ms)) in launches.iter_mut().zip(pass.iter().zip(times)) {
                *gemm = d.gemm;
                by_variant.entry(v).or_default().push(ms);
            }
        }
    }
    Ok(launches)
}

/// Add each GEMM launch's median on each variant to its class (counted once,
/// with what `rules` choose for its first launch).
fn add_medians(launches: LaunchTimes, rules: impl Fn(Gemm) -> MatmulVariant, sums: &mut Sums) {
    for (gemm, by_variant) in launches {
        let Some(gemm) = gemm else {
            continue;
        };
        let class = sums.entry(ShapeClass::of(gemm)).or_default();
        class.launches += 1;
        class.rules.get_or_insert_with(|| rules(gemm));
        for (variant, ms) in by_variant {
            // Attention's `GpuWide` runs `Gpu`'s kernel and its `CpuTall`
            // `CpuSubgroup`'s: a second timing of one kernel would only let
            // noise pick between them.
            if gemm.op == Attention && matches!(variant, GpuWide | CpuTall) {
                continue;
            }
            let rounds = class.rounds.entry(variant).or_default();
            rounds.resize(rounds.len().max(ms.len()), 0.0);
            rounds.iter_mut().zip(&ms).for_each(|(sum, ms)| *sum += ms);
            let median = Stats::of(ms).map_or(0.0, |s| s.median_ms);
            *class.times.entry(variant).or_default() += median;
        }
    }
}

/// The winners, with what was measured.
fn adapter_table(ctx: &Context, opts: &TuneOptions, sums: &Sums) -> AdapterTable {
    let winners = sums
        .iter()
        .map(|(&class, c)| Winner {
            class,
            variant: winner(c),
            ms: c
                .times
                .iter()
                .map(|(&v, &ms)| (v, (ms * 1e3).round() / 1e3))
                .collect(),
            rules: c.rules,
        })
        .collect();
    let model = opts.model.file_name().unwrap_or_default().to_string_lossy();
    AdapterTable {
        adapter: AdapterKey::of_context(ctx),
        name: format!("{} ({})", ctx.info.name, ctx.info.driver_info),
        measured: format!(
            "easel {} tune, model {model}, activations {:?}",
            env!("CARGO_PKG_VERSION"),
            opts.precision
        ),
        winners,
    }
}

/// The fastest variant, unless the rules' choice is within [`MARGIN`] of it
/// or beat it in some round.
fn winner(c: &ClassTimes) -> MatmulVariant {
    let least = c.times.iter().min_by(|a, b| a.1.total_cmp(b.1));
    let (&fastest, &best) = least.expect("a timed class has a time per variant");
    let Some((rules, ms)) = c.rules.and_then(|r| Some((r, *c.times.get(&r)?))) else {
        return fastest;
    };
    let rounds = |v| c.rounds.get(&v).map_or(&[][..], Vec::as_slice);
    let ahead_in_every_round = rounds(fastest)
        .iter()
        .zip(rounds(rules))
        .all(|(f, r)| f < r);
    match ms > best * (1.0 + MARGIN) && ahead_in_every_round {
        true => fastest,
        false => rules,
    }
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
    for (w, c) in table.winners.iter().zip(sums.values()) {
        let mut cells = vec![
            format!("{:?}", w.class.op).to_lowercase(),
            w.class.max_outputs.to_string(),
            w.class.max_depth.to_string(),
            c.launches.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::dispatch::GemmOp;
    use MatmulVariant::{Cpu, CpuSubgroup, Gpu};

    /// A class whose variants took the same time in each of 3 rounds.
    fn class(times: &[(MatmulVariant, f64)], rules: MatmulVariant) -> ClassTimes {
        ClassTimes {
            times: times.iter().copied().collect(),
            rounds: times.iter().map(|&(v, ms)| (v, vec![ms; 3])).collect(),
            launches: 1,
            rules: Some(rules),
        }
    }

    /// Medians over the rounds, summed per class; launches counted once per
    /// class; attention's `GpuWide` (`Gpu`'s kernel) left out; other kernels skipped.
    #[test]
    fn medians_are_summed_per_class() {
        let gemm = |op, rows| Gemm {
            op,
            batch: 1,
            rows,
            cols: 64,
            depth: 64,
        };
        let times = |v: &[(MatmulVariant, &[f64])]| {
            v.iter()
                .map(|&(k, ms)| (k, ms.to_vec()))
                .collect::<BTreeMap<_, _>>()
        };
        let launches: LaunchTimes = vec![
            (
                Some(gemm(GemmOp::Matmul, 60)),
                times(&[(Gpu, &[3.0, 1.0, 2.0]), (Cpu, &[5.0, 4.0, 9.0])]),
            ),
            (None, times(&[(Gpu, &[100.0])])),
            (
                Some(gemm(GemmOp::Matmul, 64)),
                times(&[(Gpu, &[1.0, 1.0, 1.0]), (Cpu, &[1.0, 2.0, 2.0])]),
            ),
            (
                Some(gemm(Attention, 64)),
                times(&[(Gpu, &[7.0]), (GpuWide, &[1.0])]),
            ),
        ];
        let mut sums = Sums::new();
        add_medians(launches, |_| Cpu, &mut sums);
        let matmul = &sums[&ShapeClass::of(gemm(GemmOp::Matmul, 64))];
        assert_eq!((matmul.launches, matmul.rules), (2, Some(Cpu)));
        assert_eq!(matmul.times, [(Gpu, 3.0), (Cpu, 7.0)].into_iter().collect());
        let rounds = [(Gpu, vec![4.0, 2.0, 3.0]), (Cpu, vec![6.0, 6.0, 11.0])];
        assert_eq!(matmul.rounds, rounds.into_iter().collect());
        let attention = &sums[&ShapeClass::of(gemm(Attention, 64))];
        assert_eq!(attention.times, [(Gpu, 7.0)].into_iter().collect());
        assert_eq!(sums.len(), 2);
    }

    #[test]
    fn the_rules_choice_stays_unless_beaten_by_the_margin() {
        let near = class(&[(Gpu, 10.0), (Cpu, 9.7), (CpuSubgroup, 10.2)], Gpu);
        assert_eq!(winner(&near), Gpu);
        let beaten = class(&[(Gpu, 10.0), (Cpu, 9.0), (CpuSubgroup, 9.4)], Gpu);
        assert_eq!(winner(&beaten), Cpu);
        let untimed_rules = class(&[(Gpu, 10.0), (Cpu, 9.9)], CpuSubgroup);
        assert_eq!(winner(&untimed_rules), Cpu);
    }

    /// Ahead by the margin in the medians but behind in one round (noise in a
    /// small class): the rules' choice stays.
    #[test]
    fn a_winner_must_be_ahead_in_every_round() {
        let mut c = class(&[(Gpu, 10.0), (Cpu, 9.0)], Gpu);
        assert_eq!(winner(&c), Cpu);
        c.rounds.insert(Cpu, vec![8.0, 10.5, 9.0]);
        assert_eq!(winner(&c), Gpu);
    }
}
