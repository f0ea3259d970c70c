//! The GEMM kernels (matmul's and conv2d's) by name, and a benchmark's pin of
//! one of them. Which one a problem gets is `MatmulVariant::for_problem`
//! (src/ops/matmul.rs, where the cooperative self-test runs).

use std::cell::Cell;

/// Which kernel shape to run; see wgsl/matmul.wgsl. All run on any adapter
/// (`CpuSubgroup` falls back to `Cpu`, `Coop` to `Gpu`, where they cannot run).
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
    /// `Gpu`'s tile on cooperative matrices (wgsl/gemm_coop.wgsl): operands
    /// rounded to f16, f32 accumulation. Needs an adapter configuration
    /// [`crate::gpu::coop::Coop::for_adapter`] accepts; otherwise runs `Gpu`.
    Coop,
}

impl MatmulVariant {
    /// The variants with f32 operands: the same products, up to f32 rounding.
    pub const F32_OPERANDS: [Self; 4] = [Self::Gpu, Self::GpuWide, Self::Cpu, Self::CpuSubgroup];
    pub const ALL: [Self; 5] = [
        Self::Gpu,
        Self::GpuWide,
        Self::Cpu,
        Self::CpuSubgroup,
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
