//! The runner behind `easel bench kernels`: its settings, which rows a run
//! wants, and the measuring and printing of each.

use std::fmt::Debug;
use std::path::PathBuf;

use crate::bench::peak::Peak;
use crate::bench::row::{measure, print_row, Bound, KernelRow, QUICK_BUDGET};
use crate::bench::{random, Budget, Table};
use crate::error::Result;
use crate::gpu::profiler::Profiler;
use crate::gpu::{Context, Dispatch, Tensor};
use crate::memory_plan::Precision;
use crate::ops::matmul::MatmulVariant;

/// Settings of one `easel bench kernels` run.
#[derive(Clone, Debug, Default)]
pub struct KernelOptions {
    /// Tiny shapes, short budgets, the adapter's own variants only.
    pub quick: bool,
    /// Only rows whose `kernel shape` contains this.
    pub filter: Option<String>,
    /// Only this variant (`Gpu`, `Cpu`, `CpuSubgroup`, `Coop`; case-insensitive).
    pub variant: Option<String>,
    /// The launches of this model folder's UNet and VAE decoder instead of the families.
    pub model: Option<PathBuf>,
    /// Their activations (`--precision`, resolved against the model's weights).
    pub precision: Precision,
}

/// The repeats of a full run: enough for a steady median.
pub(crate) const BUDGET: Budget = Budget {
    seconds: 1.5,
    min: 3,
    max: 25,
};

pub(crate) struct Runner<'a> {
    pub(crate) ctx: &'a Context,
    pub(crate) profiler: &'a Profiler,
    pub(crate) opts: &'a KernelOptions,
    pub(crate) peak: Peak,
    pub(crate) table: Table,
    pub(crate) rows: Vec<KernelRow>,
}

impl Runner<'_> {
    pub(crate) fn wants(&self, kernel: &str, shape: &str) -> bool {
        let name = format!("{kernel} {shape}");
        self.opts.filter.as_deref().is_none_or(|f| name.contains(f))
    }

    /// The shapes to run: the tiny ones when quick, else the model's.
    pub(crate) fn shapes<S>(&self, full: &'static [S], quick: &'static [S]) -> &'static [S] {
        if self.opts.quick {
            quick
        } else {
            full
        }
    }

    /// The GEMM variants `--variant` pins a model's launches to (`all`: every
    /// one that runs as itself here).
    pub(crate) fn pinned_variants(&self) -> Vec<MatmulVariant> {
        let Some(only) = self.opts.variant.as_deref() else {
            return Vec::new();
        };
        MatmulVariant::available(self.ctx)
            .into_iter()
            .filter(|v| {
                only.eq_ignore_ascii_case("all") || format!("{v:?}").eq_ignore_ascii_case(only)
            })
            .collect()
    }

    /// The variants to run: the adapter's own one when quick, else every one
    /// (or the one `--variant` names).
    pub(crate) fn variants<V: Debug + Copy>(&self, all: &[V], chosen: V) -> Vec<V> {
        if self.opts.quick {
            return vec![chosen];
        }
        all.iter()
            .copied()
            .filter(|v| {
                let only = self.opts.variant.as_deref().unwrap_or("all");
                only.eq_ignore_ascii_case("all") || format!("{v:?}").eq_ignore_ascii_case(only)
            })
            .collect()
    }

    pub(crate) fn add(
        &mut self,
        kernel: &str,
        variant: &str,
        shape: &str,
        d: Dispatch,
        bound: Bound,
    ) -> Result<()> {
        self.add_ref(kernel, variant, shape, &d, bound)
    }

    pub(crate) fn add_ref(
        &mut self,
        kernel: &str,
        variant: &str,
        shape: &str,
        d: &Dispatch,
        bound: Bound,
    ) -> Result<()> {
        let budget = if self.opts.quick {
            QUICK_BUDGET
        } else {
            BUDGET
        };
        let name = (kernel, variant, shape.to_string());
        let mut row = measure(self.ctx, self.profiler, name, d, bound, budget)?;
        row.pct_of_peak = Some(match bound {
            Bound::Compute => 100.0 * row.gflops / self.peak.gflops,
            Bound::Memory => 100.0 * row.gbps / self.peak.gbps,
        });
        print_row(&self.table, &row);
        self.rows.push(row);
        Ok(())
    }

    pub(crate) fn random(&self, shape: &[usize], seed: u64) -> Result<Tensor> {
        random(self.ctx, shape, seed)
    }

    pub(crate) fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        Tensor::zeros(self.ctx, "bench out", shape)
    }
}
