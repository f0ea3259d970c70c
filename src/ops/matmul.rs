//! Batched matrix multiply (wgsl/matmul.wgsl): `out[b] = alpha · op(a[b]) · op(b[b]) + bias`,
//! the kernel behind every nn.Linear, attention projection and (through
//! conv2d's implicit GEMM) most of the UNet's time.

use crate::error::{Error, Result};
use crate::gpu::coop::{Coop, COLS};
use crate::gpu::dispatch::{Gemm, GemmOp};
use crate::gpu::{dispatch, Access, AdapterClass, Context, Dispatch, Launch, Policy};
use crate::gpu::{texture, DType, Shader, Tensor};
use crate::ops::elementwise::Activation;
use crate::ops::{groups, tuning, variant};

mod shape;

pub use crate::ops::epilogue::Epilogue;
pub use crate::ops::variant::{lane_by_lane_loads, with_variant, MatmulVariant};
use crate::ops::variant::{subgroups_of_8, tall_block, tall_pays, CPU_TALL_COLS};
use crate::ops::{
    MATMUL, MATMUL_F16, MATMUL_SUBGROUP, MATMUL_SUBGROUP_F16, MATMUL_SUBGROUP_TEXTURE,
};
use crate::ops::{MATMUL_COOP16, MATMUL_COOP16_F16, MATMUL_COOP8, MATMUL_COOP8_F16};
use shape::Shape;

// The enum is in ops::variant, beside the benchmarks' pin; choosing one needs
// the cooperative self-test below, which runs a matmul.
impl MatmulVariant {
    /// The fastest kernel for this adapter (measured: benches/kernels.rs).
    /// Cooperative matrices on GPUs (on any adapter with `EASEL_COOPERATIVE=always`),
    /// once their self-test has passed.
    pub fn for_adapter(ctx: &Context) -> Self {
        let coop_wanted = ctx.class == AdapterClass::Gpu || ctx.coop_policy == Policy::Always;
        if coop_wanted && coop_ready(ctx).is_some() {
            return Self::Coop;
        }
        match ctx.class {
            AdapterClass::Gpu => Self::Gpu,
            AdapterClass::Cpu if subgroups_of_8(ctx) && lane_by_lane_loads(&ctx.info) => {
                Self::CpuTall
            }
            AdapterClass::Cpu if subgroups_of_8(ctx) => Self::CpuSubgroup,
            AdapterClass::Cpu => Self::Cpu,
        }
    }

    /// The kernel for one GEMM problem: a benchmark's [`with_variant`] pin,
    /// else the winner `easel tune` measured for its class on this adapter
    /// ([`tuning`]; not where `EASEL_COOPERATIVE` or `EASEL_WIDE_TILES` pins a
    /// choice, nor `Coop` where the self-test failed), else [`Self::by_rules`].
    pub fn for_problem(ctx: &Context, gemm: Gemm) -> Self {
        if let Some(pinned) = variant::pinned() {
            return pinned;
        }
        let rules = Self::by_rules(ctx, gemm);
        let policies_auto = ctx.coop_policy == Policy::Auto && ctx.wide_policy == Policy::Auto;
        match policies_auto.then(|| tuning::winner(ctx, gemm)).flatten() {
            Some(Self::Coop) if rules != Self::Coop => rules,
            Some(measured) => measured,
            None => rules,
        }
    }

    /// The choice without measurements: [`Self::for_adapter`], and on a GPU
    /// without cooperative matrices `GpuWide` where its grid has at least
    /// [`MIN_WIDE_GROUPS`] workgroups (`EASEL_WIDE_TILES` can pin it); where
    /// that is `CpuTall`, `CpuSubgroup` for launches too short to repay it.
    pub fn by_rules(ctx: &Context, gemm: Gemm) -> Self {
        let adapter = match Self::for_adapter(ctx) {
            // Attention has one subgroup kernel.
            Self::CpuTall if gemm.op == GemmOp::Attention || !tall_pays(gemm) => Self::CpuSubgroup,
            adapter => adapter,
        };
        match (adapter, ctx.wide_policy) {
            (Self::Coop, _) | (_, Policy::Off) => adapter,
            // Attention has one tiled kernel: `GpuWide` would run `Gpu`'s.
            _ if gemm.op == GemmOp::Attention => adapter,
            (_, Policy::Always) => Self::GpuWide,
            (Self::Gpu, Policy::Auto) if wide_fills(gemm) => Self::GpuWide,
            (variant, _) => variant,
        }
    }

    /// The variants that run as themselves here (`Coop` only with cooperative
    /// matrices, `CpuSubgroup` and `CpuTall` only with 8-lane subgroups:
    /// elsewhere they run `Gpu` and `Cpu`), for benchmarks that label what they time.
    pub fn available(ctx: &Context) -> Vec<Self> {
        let coop = ctx.coop.is_some();
        let subgroups = subgroups_of_8(ctx);
        Self::ALL
            .into_iter()
            .filter(|&v| v != Self::Coop || coop)
            .filter(|&v| !matches!(v, Self::CpuSubgroup | Self::CpuTall) || subgroups)
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

/// How to read the operands. `Default` is plain `a · b`.
#[derive(Clone, Copy, Debug)]
pub struct MatmulOptions {
    /// `a` is stored `[.., K, M]` (multiply by its transpose).
    pub transpose_a: bool,
    /// `b` is stored `[.., N, K]`: nn.Linear's `weight [out, in]`, so `x · Wᵀ`.
    pub transpose_b: bool,
    /// `out` is stored `[.., N, M]`: channels first, so a layer applied to
    /// every pixel's tokens writes NCHW (the residual is read the same way).
    pub transpose_out: bool,
    /// Scales the product before the bias is added (attention's 1/√d).
    pub alpha: f32,
    /// GEGLU in the store: op(b)'s columns are interleaved pairs (hidden,
    /// gate), as the loader lays out a feed-forward's net.0.proj
    /// (`weights::RowOrder::HalvesInterleaved`), and `out` `[.., M, N / 2]`
    /// receives `hidden · gelu(gate)`. Not with `transpose_out` or a residual.
    pub geglu: bool,
    /// Above 1, op(b)'s columns are this many equal parts (q, k and v of a
    /// self-attention's stacked projections) and `out` `[parts, n]` holds
    /// part p `[..batch, M, N / parts]` at element p·n (n at least the part's
    /// size: each part can start at an offset the adapter binds). Not with
    /// `transpose_out`, a residual or GEGLU.
    pub parts: usize,
    /// Applied to product + bias in the store (CLIP's fc1 and its
    /// activation, the UNet's time embedding and its SiLU in one launch).
    /// Not with a residual or GEGLU.
    pub activation: Activation,
    /// Kernel override; `None` picks [`MatmulVariant::for_problem`].
    pub variant: Option<MatmulVariant>,
    /// `b` is a layer weight (fixed once the model is built), which kernels
    /// may read through its texture copy (`gpu::texture`); set by [`linear_with`].
    pub weight_b: bool,
}

impl Default for MatmulOptions {
    fn default() -> Self {
        Self {
            transpose_a: false,
            transpose_b: false,
            transpose_out: false,
            alpha: 1.0,
            geglu: false,
            parts: 1,
            activation: Activation::Identity,
            variant: None,
            weight_b: false,
        }
    }
}

impl MatmulOptions {
    /// nn.Linear: `x · weightᵀ`.
    pub fn linear() -> Self {
        Self {
            transpose_b: true,
            ..Self::default()
        }
    }

    /// A feed-forward's net.0.proj with GEGLU in its store (see `geglu`).
    pub fn linear_geglu() -> Self {
        Self {
            geglu: true,
            ..Self::linear()
        }
    }

    /// Columns of the product per stored output: 2 with GEGLU, else 1.
    pub fn columns_per_output(&self) -> usize {
        1 + self.geglu as usize
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    alpha: f32,
    col0: u32,
    ldc: u32,
    residual_scale: f32,
    part_stride: u32,
    _pad: u32,
}

/// Fewest workgroups `GpuWide` is chosen with: below it a GPU's compute units
/// (132 on an H200, tens on most) would idle where `Gpu`'s four times as many
/// workgroups fill them. Not yet measured on a GPU (`easel bench kernels`
/// times both there).
pub const MIN_WIDE_GROUPS: usize = 128;

/// Output tile per workgroup: (columns, rows), per the shader's entry points.
const GPU_TILE: (usize, usize) = (64, 64);
const WIDE_TILE: (usize, usize) = (128, 128);
const CPU_TILE: (usize, usize) = (8 * 8, 8 * 4);
const CPU_VEC4_TILE: (usize, usize) = (8 * 8, 8 * 8);

/// `out = alpha · op(a) · op(b) + bias`.
///
/// - `a`: `[..batch, M, K]` (`[..batch, K, M]` if `transpose_a`); leading dims are the batch.
/// - `b`: `[K, N]` (`[N, K]` if `transpose_b`) shared by every batch item, or
///   with the same leading batch dims as `a`; f32, or f16 ([`DType::F16`], a weight).
/// - `bias`: `[N]`, added to every row.
/// - `out`: `[..batch, M, N]`; must not alias the inputs.
pub fn matmul(
    ctx: &Context,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    out: &Tensor,
    opts: &MatmulOptions,
) -> Result<Dispatch> {
    let shape = Shape::of(a, b, opts)?;
    let epilogue = Epilogue::bias(bias);
    shape.check_out("matmul", a, out, &epilogue, opts)?;
    epilogue.check("matmul", shape.n, out, None)?;
    launch(ctx, a, b, epilogue, out, opts, (0, shape.n))
}

/// nn.Linear: `out = x · weightᵀ + bias` with x `[M, K]`, weight `[N, K]`
/// (f32 or f16), bias `[N]`, out `[M, N]`. A weight above the adapter's binding
/// limit runs as one dispatch per block of its rows (output features), each
/// writing its columns of `out`: the same sums in the same order, so the same bits.
pub fn linear(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    out: &Tensor,
) -> Result<Vec<Dispatch>> {
    linear_with(
        ctx,
        x,
        weight,
        Epilogue::bias(bias),
        out,
        &MatmulOptions::linear(),
    )
}

/// [`linear`] with a residual added in the same kernel ([`Epilogue`]), on
/// `opts`' layouts (`MatmulOptions::linear()`, or with `transpose_a`: x
/// `[..batch, K, M]`, channels first, every pixel of NCHW viewed `[N, C, H·W]`;
/// with `transpose_out`: out `[..batch, N, M]`), so a layer between NCHW and
/// tokens needs no permute of its own.
pub fn linear_with(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    epilogue: Epilogue,
    out: &Tensor,
    opts: &MatmulOptions,
) -> Result<Vec<Dispatch>> {
    let shape = Shape::of(x, weight, opts)?;
    shape.check_out("linear", x, out, &epilogue, opts)?;
    let opts = &MatmulOptions {
        weight_b: true,
        ..*opts
    };
    epilogue.check("linear", shape.n, out, None)?;
    // GEGLU's pairs of rows stay in one block.
    weight
        .row_blocks_in(ctx, "nn.Linear weight", opts.columns_per_output())?
        .into_iter()
        .map(|(row0, block)| launch(ctx, x, &block, epilogue, out, opts, (row0, shape.n)))
        .collect()
}

/// One dispatch of `op(a) · op(b)` into columns `cols.0..` of an output with
/// `cols.1` columns (shapes checked by the caller).
fn launch(
    ctx: &Context,
    a: &Tensor,
    b: &Tensor,
    epilogue: Epilogue,
    out: &Tensor,
    opts: &MatmulOptions,
    (col0, ldc): (usize, usize),
) -> Result<Dispatch> {
    let shape = Shape::of(a, b, opts)?;
    let Shape { batch, m, n, k } = shape;
    // GEGLU writes one output per pair of columns; parts are as wide as their columns.
    let outputs = batch * m * n / opts.columns_per_output();
    let ldc = ldc / opts.columns_per_output() / opts.parts.max(1);
    let split = opts.parts > 1;
    let b_shared = b.shape.len() == 2;
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        stride_a: (m * k) as u32,
        stride_b: if b_shared { 0 } else { (k * n) as u32 },
        stride_c: (m * ldc) as u32,
        alpha: opts.alpha,
        col0: col0 as u32,
        ldc: ldc as u32,
        residual_scale: epilogue.scale(),
        part_stride: if split { out.shape[1] as u32 } else { 0 },
        _pad: 0,
    };
    epilogue.expect_activations("matmul", a, out)?;
    let kernel = pick(ctx, &shape, b, opts)?;
    let (tile_n, tile_m) = kernel.tile;
    let mut constants = vec![
        ("TRANSPOSE_A", opts.transpose_a as u32 as f64),
        ("TRANSPOSE_B", opts.transpose_b as u32 as f64),
        ("TRANSPOSE_C", opts.transpose_out as u32 as f64),
        ("GEGLU", opts.geglu as u32 as f64),
        ("SPLIT", split as u32 as f64),
        ("ACTIVATION", opts.activation as u32 as f64),
    ];
    constants.extend(epilogue.constants());
    constants.extend(kernel.constants.iter().copied());
    let [bias, residual] = epilogue.bindings(a);
    let b_reads = if b_shared { k * n } else { batch * k * n };
    Launch {
        shader: kernel.shader,
        entry: kernel.entry,
        constants: &constants,
        tensors: &[
            (a, Access::Read),
            (b, kernel.b_access),
            bias,
            (out, Access::ReadWrite),
            residual,
        ],
        workgroups: [groups(n, tile_n), groups(m, tile_m), batch as u32],
        flops: 2 * (batch * m * n * k) as u64,
        bytes: (a.dtype.size() * (batch * m * k + outputs) + b.dtype.size() * b_reads) as u64,
    }
    .build(ctx, &params)
    .map(|d| d.with_gemm(shape.gemm()))
}

/// The kernel one dispatch runs: shader (f32 or f16 `b`; its f16-activation
/// twin is taken by [`Launch`]), entry point and output tile.
struct Pick {
    shader: &'static Shader,
    entry: &'static str,
    /// Output (columns, rows) per workgroup.
    tile: (usize, usize),
    /// `SUBGROUP_SIZE` and `BLOCK_ROWS` of a cooperative kernel.
    constants: Vec<(&'static str, f64)>,
    /// How it binds `b`: through a texture copy for the subgroup kernels'
    /// `_texture` shader.
    b_access: Access,
}

fn pick(ctx: &Context, shape: &Shape, b: &Tensor, opts: &MatmulOptions) -> Result<Pick> {
    let b_dtype = b.dtype;
    let (base, subgroup_shader) = match b_dtype {
        DType::F32 => (&MATMUL, &MATMUL_SUBGROUP),
        DType::F16 => (&MATMUL_F16, &MATMUL_SUBGROUP_F16),
        DType::U32 => {
            return Err(Error::BadInput(
                "matmul: b is U32, expected F32 or F16".into(),
            ))
        }
    };
    // Lazily: choosing runs the cooperative self-test, which itself calls this
    // with an explicit variant (eagerly it would wait on its own OnceLock).
    let variant = opts
        .variant
        .unwrap_or_else(|| MatmulVariant::for_problem(ctx, shape.gemm()));
    let aligned = shape.vec4_aligned(opts);
    let subgroup = aligned && subgroups_of_8(ctx);
    let plain = |shader, entry, tile| Pick {
        shader,
        entry,
        tile,
        constants: Vec::new(),
        b_access: Access::Read,
    };
    let (subgroup_shader, b_subgroup) = if opts.weight_b && texture::reads_weight(ctx, b) {
        (&MATMUL_SUBGROUP_TEXTURE, Access::Texture)
    } else {
        (subgroup_shader, Access::Read)
    };
    Ok(match (variant, ctx.coop) {
        (MatmulVariant::Coop, Some(coop)) => {
            let (block, rows) = coop.block_for(shape.m);
            Pick {
                shader: coop_shader(coop, COOP_SHADERS[(b_dtype == DType::F16) as usize]),
                entry: "matmul_gpu",
                tile: (COLS as usize, rows as usize),
                constants: vec![
                    ("SUBGROUP_SIZE", coop.subgroup as f64),
                    ("BLOCK_ROWS", block as f64),
                ],
                b_access: Access::Read,
            }
        }
        (MatmulVariant::Gpu | MatmulVariant::Coop, _) => plain(base, "matmul_gpu", GPU_TILE),
        (MatmulVariant::GpuWide, _) => plain(base, "matmul_gpu_wide", WIDE_TILE),
        (MatmulVariant::CpuSubgroup, _) if subgroup => Pick {
            b_access: b_subgroup,
            ..plain(subgroup_shader, "matmul_cpu_subgroup", CPU_VEC4_TILE)
        },
        (MatmulVariant::CpuTall, _) if subgroup => {
            let rows = tall_block(shape.m);
            Pick {
                shader: subgroup_shader,
                entry: "matmul_cpu_tall",
                tile: (CPU_TALL_COLS, 8 * rows),
                constants: vec![("TALL_BLOCK", rows as f64)],
                b_access: b_subgroup,
            }
        }
        _ if aligned => plain(base, "matmul_cpu_vec4", CPU_VEC4_TILE),
        _ => plain(base, "matmul_cpu", CPU_TILE),
    })
}

/// `[f16 weight][16-wide fragments]`.
const COOP_SHADERS: [[&Shader; 2]; 2] = [
    [&MATMUL_COOP8, &MATMUL_COOP16],
    [&MATMUL_COOP8_F16, &MATMUL_COOP16_F16],
];

/// Whether `GpuWide`'s grid for `batch` × `rows` × `cols` outputs has at
/// least [`MIN_WIDE_GROUPS`] workgroups.
fn wide_fills(g: Gemm) -> bool {
    g.batch * g.rows.div_ceil(WIDE_TILE.1) * g.cols.div_ceil(WIDE_TILE.0) >= MIN_WIDE_GROUPS
}
