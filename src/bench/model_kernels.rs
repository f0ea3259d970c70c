//! `easel bench kernels --model DIR`: the launches of a model's own forward
//! passes, as the engine plans them (module docs of [`crate::bench::kernels`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bench::models::Model;
use crate::bench::row::Bound;
use crate::bench::runner::Runner;
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::ops::matmul;
use crate::weights::WeightPrecision;

/// What makes two launches the same: kernel (its pipeline: one label may
/// have several, with other override constants), workgroups, FLOPs, bytes.
type Launch = (usize, [u32; 3], u64, u64);

fn launch_key(d: &Dispatch) -> Launch {
    (
        Arc::as_ptr(&d.kernel) as usize,
        d.workgroups,
        d.flops,
        d.bytes,
    )
}

/// Time each distinct launch of model `name`'s forward pass (module docs);
/// a model that cannot exist on the adapter is skipped with its error. Rows
/// of the kernels easel chooses say `easel`; with `--variant`, each GEMM
/// launch is also timed on that variant (or every one: `all`) where it runs
/// another kernel, from a plan of the same model with it pinned.
pub(crate) fn model_launches(r: &mut Runner, dir: &std::path::Path, name: &str) -> Result<()> {
    let batch = if name == "unet" { 2 } else { 1 };
    let plans = Model::load(r.ctx, dir, name, WeightPrecision::Auto).and_then(|model| {
        let plan = || model.plan(r.ctx, batch, r.opts.precision);
        let pinned = r.pinned_variants().into_iter().map(|v| {
            let g = matmul::with_variant(v, plan)?;
            Ok((format!("{v:?}"), g))
        });
        let mut plans = vec![("easel".to_string(), plan()?)];
        plans.extend(pinned.collect::<Result<Vec<_>>>()?);
        Ok((plans, model))
    });
    let (plans, _model) = match plans {
        Ok(planned) => planned,
        Err(e @ Error::DeviceLimit(_)) => {
            eprintln!("skipping {name}: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let easel = &plans[0].1.dispatches;
    // Distinct launches in first-use order, with how many times the pass makes each.
    let mut seen: BTreeMap<Launch, (usize, usize)> = BTreeMap::new();
    for (i, d) in easel.iter().enumerate() {
        seen.entry(launch_key(d)).or_insert((i, 0)).1 += 1;
    }
    let mut order: Vec<(usize, usize)> = seen.into_values().collect();
    order.sort();
    for (i, count) in order {
        for (variant, g) in &plans {
            // A pinned plan's launch i is easel's on another kernel (same graph);
            // where it is easel's own kernel, easel's row says it.
            let Some(d) = g.dispatches.get(i) else {
                continue;
            };
            let easels =
                d.kernel.label == easel[i].kernel.label && d.workgroups == easel[i].workgroups;
            if variant == "easel" || !easels {
                model_row(r, name, variant, d, count)?;
            }
        }
    }
    Ok(())
}

/// One launch's row; compute-bound when its FLOPs per byte pass the adapter's
/// FMA / copy ratio. The Dispatch is owned by its graph: timed in place.
fn model_row(r: &mut Runner, name: &str, variant: &str, d: &Dispatch, count: usize) -> Result<()> {
    let [x, y, z] = d.workgroups;
    let shape = format!(
        "{} [{}] x{count} {:.4} GFLOP {:.2} MB wg {x}x{y}x{z}",
        d.kernel.label,
        d.kernel.constants,
        d.flops as f64 / 1e9,
        d.bytes as f64 / 1e6
    );
    if !r.wants(name, &shape) {
        return Ok(());
    }
    let ridge = r.peak.gflops / r.peak.gbps;
    let bound = match d.flops as f64 / d.bytes.max(1) as f64 > ridge {
        true => Bound::Compute,
        false => Bound::Memory,
    };
    r.add_ref(name, variant, &shape, d, bound)
}
