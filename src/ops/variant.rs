//! Which GEMM kernel runs (matmul and conv2d share them): the variants, the
//! adapter's and the problem's choice, and the cooperative kernels' start-up
//! self-test.

use crate::error::Result;
use crate::gpu::coop::Coop;
use crate::gpu::{dispatch, AdapterClass, Context, CoopPolicy, Shader, Tensor};
use crate::ops::matmul::{matmul, MatmulOptions};

/// Which kernel shape to run; see wgsl/matmul.wgsl. All run on any adapter
/// (`CpuSubgroup` falls back to `Cpu`, `Coop` to `Gpu`, where they cannot run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// subgroups, contiguous dims that are multiples of 4 and no `transpose_a`;
    /// otherwise runs `Cpu`.
    CpuSubgroup,
    /// `Gpu`'s tile on cooperative matrices (wgsl/gemm_coop.wgsl): operands
    /// rounded to f16, f32 accumulation. Needs an adapter configuration
    /// [`Coop::for_adapter`] accepts; otherwise runs `Gpu`.
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

    /// The fastest kernel for this adapter (measured: benches/kernels.rs).
    /// Cooperative matrices on GPUs (on any adapter with `EASEL_COOPERATIVE=always`),
    /// once their self-test has passed.
    pub fn for_adapter(ctx: &Context) -> Self {
        let coop_wanted = ctx.class == AdapterClass::Gpu || ctx.coop_policy == CoopPolicy::Always;
        if coop_wanted && coop_ready(ctx).is_some() {
            return Self::Coop;
        }
        match ctx.class {
            AdapterClass::Gpu => Self::Gpu,
            AdapterClass::Cpu if subgroups_of_8(ctx) => Self::CpuSubgroup,
            AdapterClass::Cpu => Self::Cpu,
        }
    }

    /// [`Self::for_adapter`] for one problem of `batch` × `rows` × `cols`
    /// outputs: on a GPU without cooperative matrices, `GpuWide` where its grid
    /// has at least [`MIN_WIDE_GROUPS`] workgroups, else `Gpu`.
    pub fn for_problem(ctx: &Context, batch: usize, rows: usize, cols: usize) -> Self {
        match Self::for_adapter(ctx) {
            Self::Gpu if wide_fills(batch, rows, cols) => Self::GpuWide,
            variant => variant,
        }
    }

    /// The variants that run as themselves here (`Coop` only with cooperative
    /// matrices), for benchmarks that label what they time.
    pub fn available(ctx: &Context) -> Vec<Self> {
        let coop = ctx.coop.is_some();
        Self::ALL
            .into_iter()
            .filter(|&v| v != Self::Coop || coop)
            .collect()
    }
}

/// The shader of a cooperative kernel for the adapter's fragments:
/// `shaders[16-wide fragments]`.
pub(crate) fn coop_shader(coop: Coop, shaders: [&'static Shader; 2]) -> &'static Shader {
    shaders[(coop.frag == 16) as usize]
}

/// The cooperative-matrix configuration, if the adapter has one and the
/// cooperative GEMM agreed with the tiled one on a test problem (run once per
/// context, on first use). A disagreement turns them off with one line on stderr.
pub fn coop_ready(ctx: &Context) -> Option<Coop> {
    let coop = ctx.coop?;
    let ok = *ctx.coop_checked.get_or_init(|| match coop_difference(ctx) {
        Ok(diff) if diff <= 1e-3 => true,
        Ok(diff) => {
            eprintln!(
                "easel: {0}x{0} cooperative-matrix GEMM differs from the tiled one by {diff} \
                 on {1}; using the tiled kernels",
                coop.frag, ctx.info.name
            );
            false
        }
        Err(e) => {
            eprintln!(
                "easel: cooperative-matrix GEMM failed its self-test on {}: {e}; using the \
                 tiled kernels",
                ctx.info.name
            );
            false
        }
    });
    ok.then_some(coop)
}

/// Largest difference between the `Coop` and `Gpu` kernels on a ragged
/// nn.Linear with a bias. The inputs are quarters in [-2, 2], exact in f16, so
/// every product and partial sum is exact in f32 and the two must agree exactly.
fn coop_difference(ctx: &Context) -> Result<f32> {
    let (m, n, k) = (70, 90, 100);
    let quarters = |len: usize, seed: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed) % 17) as f32 / 4.0 - 2.0)
            .collect()
    };
    let x = Tensor::from_f32(ctx, "self-test x", &[m, k], &quarters(m * k, 1))?;
    let w = Tensor::from_f32(ctx, "self-test w", &[n, k], &quarters(n * k, 5))?;
    let bias = Tensor::from_f32(ctx, "self-test bias", &[n], &quarters(n, 3))?;
    let mut results = Vec::new();
    for variant in [MatmulVariant::Coop, MatmulVariant::Gpu] {
        let out = Tensor::zeros(ctx, "self-test out", &[m, n])?;
        let opts = MatmulOptions {
            variant: Some(variant),
            ..MatmulOptions::linear()
        };
        dispatch::run(ctx, &[matmul(ctx, &x, &w, Some(&bias), &out, &opts)?])?;
        results.push(out.to_vec_uncounted(ctx)?);
    }
    Ok(results[0]
        .iter()
        .zip(&results[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max))
}

/// Whether the `*_subgroup` kernels can run: they assume 8-lane subgroups
/// laid along x of an 8×8 workgroup.
pub(crate) fn subgroups_of_8(ctx: &Context) -> bool {
    ctx.features().contains(wgpu::Features::SUBGROUP)
        && ctx.info.subgroup_min_size == 8
        && ctx.info.subgroup_max_size == 8
}

/// Fewest workgroups `GpuWide` is chosen with: below it a GPU's compute units
/// (132 on an H200, tens on most) would idle where `Gpu`'s four times as many
/// workgroups fill them. Not yet measured on a GPU (`easel bench kernels`
/// times both there).
pub const MIN_WIDE_GROUPS: usize = 128;

/// `GpuWide`'s output tile, (columns, rows): wgsl/gemm_tile.wgsl's `gemm_tile_wide`.
pub(crate) const WIDE_TILE: (usize, usize) = (128, 128);

/// Whether `GpuWide`'s grid for `batch` × `rows` × `cols` outputs has at
/// least [`MIN_WIDE_GROUPS`] workgroups.
fn wide_fills(batch: usize, rows: usize, cols: usize) -> bool {
    batch * rows.div_ceil(WIDE_TILE.1) * cols.div_ceil(WIDE_TILE.0) >= MIN_WIDE_GROUPS
}

#[cfg(test)]
mod tests {
    use super::wide_fills;

    #[test]
    fn the_wide_tile_takes_the_problems_that_fill_its_grid() {
        // SD-1.5 at 512x512, CFG batch 2: 320 channels x 4096 pixels -> 3 x 32 x 2.
        assert!(wide_fills(2, 320, 4096));
        // Its VAE decoder's 128-channel convolutions at 512x512: 1 x 2048.
        assert!(wide_fills(1, 128, 512 * 512));
        // The default model's 32x32 UNet, batch 8: 16 channels x 1024 pixels -> 8 x 8.
        assert!(!wide_fills(8, 16, 1024));
        // Just below and at the bound: 127 and 128 workgroups.
        assert!(!wide_fills(1, 127 * 128, 128));
        assert!(wide_fills(1, 128 * 128, 128));
    }
}
