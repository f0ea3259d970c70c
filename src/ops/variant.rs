//! The GEMM kernels (matmul's and conv2d's) by name, and a benchmark's pin of
//! one of them. Which one a problem gets is `MatmulVariant::for_problem`
//! (src/ops/matmul.rs, where the cooperative self-test runs), and what decides
//! between the CPU drivers' kernels.

use std::cell::Cell;

use crate::gpu::dispatch::Gemm;
use crate::gpu::Context;

/// Which kernel shape to run; see wgsl/matmul.wgsl. All run on any adapter
/// (`CpuSubgroup` and `CpuTall` fall back to `Cpu`, `Coop` to `Gpu`, where they cannot run).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum MatmulVariant {
    /// 64×64 workgroup-memory tiles with barriers, 4×4 outputs per thread:
    /// for real GPUs, on problems too small to fill one with `GpuWide`'s tiles.
    Gpu,
    /// 128×128 tiles, 8×8 outputs per thread read as vec4 from workgroup
    /// memory (wgsl/gemm_tile.wgsl): half the workgroup-memory reads per FMA of
    /// `Gpu`, for the large problems a GPU without cooperative matrices runs.
    GpuWide,
    /// Register blocks read straight from global memory: for CPU drivers (lavapipe).
    Cpu,
    /// `Cpu` with the operand its SIMD lanes share read once per 8-lane
    /// subgroup (wgsl/matmul_subgroup.wgsl). Needs SUBGROUP with 8-lane
    /// subgroups and contiguous dims that are multiples of 4; otherwise runs `Cpu`.
    CpuSubgroup,
    /// `CpuSubgroup` with tall subgroup tiles: a subgroup owns up to 64 rows
    /// (output channels) and 32 columns (pixels), each lane 4 columns of all its
    /// rows, so a lane loads 12 vec4s per 1,024 FMAs instead of 9 per 256
    /// (wgsl/tall.wgsl). For drivers whose every storage load is a loop over
    /// the SIMD lanes (llvmpipe before Mesa 23). Same needs as `CpuSubgroup`.
    CpuTall,
    /// `Gpu`'s tile on cooperative matrices (wgsl/gemm_coop.wgsl): operands
    /// rounded to f16, f32 accumulation. Needs an adapter configuration
    /// [`crate::gpu::coop::Coop::for_adapter`] accepts; otherwise runs `Gpu`.
    Coop,
}

impl MatmulVariant {
    /// The variants with f32 operands: the same products, up to f32 rounding.
    pub const F32_OPERANDS: [Self; 5] = [
        Self::Gpu,
        Self::GpuWide,
        Self::Cpu,
        Self::CpuSubgroup,
        Self::CpuTall,
    ];
    pub const ALL: [Self; 6] = [
        Self::Gpu,
        Self::GpuWide,
        Self::Cpu,
        Self::CpuSubgroup,
        Self::CpuTall,
        Self::Coop,
    ];
}

thread_local! {
    /// The variant [`with_variant`] pins on this thread, if any.
    static PINNED: Cell<Option<MatmulVariant>> = const { Cell::new(None) };
}

/// Run `f` with every matmul and conv2d it records on this thread pinned to
/// `variant` (where it cannot run, its fallback): `easel bench kernels --model
/// --variant` times a model's own launches on each kernel this way.
pub fn with_variant<R>(variant: MatmulVariant, f: impl FnOnce() -> R) -> R {
    /// Restores the previous pin, even if `f` unwinds.
    struct Restore(Option<MatmulVariant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            PINNED.set(self.0);
        }
    }
    let _restore = Restore(PINNED.replace(Some(variant)));
    f()
}

/// The variant pinned on this thread.
pub(crate) fn pinned() -> Option<MatmulVariant> {
    PINNED.get()
}

pub use crate::gpu::texture::lane_by_lane_loads;

/// Whether the `*_subgroup` kernels can run: they assume 8-lane subgroups
/// laid along x of an 8×8 workgroup.
pub(crate) fn subgroups_of_8(ctx: &Context) -> bool {
    ctx.features().contains(wgpu::Features::SUBGROUP)
        && ctx.info.subgroup_min_size == 8
        && ctx.info.subgroup_max_size == 8
}

/// `CpuTall`: 8 lanes × 4 columns; rows are 8 subgroups × [`tall_block`].
pub(crate) const CPU_TALL_COLS: usize = 8 * 4;

/// Rows (output channels) one subgroup of a `CpuTall` kernel owns: the
/// smallest of 8, 16, 32, 64 that holds `rows`, so a narrow problem spends no
/// FMAs on clamped duplicates (the unused accumulators fold away).
pub(crate) fn tall_block(rows: usize) -> usize {
    rows.next_power_of_two().clamp(8, 64)
}

/// Whether a `CpuTall` launch is long enough to repay its pipeline's compile:
/// LLVM takes about 3.5 s longer over a tall kernel's unrolled 64-row block than
/// over `CpuSubgroup`'s (without Mesa's shader cache, which keeps them after
/// the first run), and at the default model's shapes (at most ~40 MFLOP a
/// launch) the tall tiles gain little. From 2^28 FLOPs (SD-1.5's convolutions and
/// projections) a launch takes tens of ms on lavapipe, and every step reruns it.
pub(crate) fn tall_pays(g: Gemm) -> bool {
    let flops = 2 * (g.batch * g.rows * g.cols) as u64 * g.depth as u64;
    g.rows >= 64 && flops >= 1 << 28
}
