//! Batched matrix multiply (wgsl/matmul.wgsl): `out[b] = alpha · op(a[b]) · op(b[b]) + bias`,
//! the kernel behind every nn.Linear, attention projection and (through
//! conv2d's implicit GEMM) most of the UNet's time.

use crate::error::{Error, Result};
use crate::gpu::coop::COLS;
use crate::gpu::{Access, Context, Dispatch, Launch};
use crate::gpu::{DType, Shader, Tensor};
use crate::ops::variant::WIDE_TILE;
use crate::ops::{expect_activations, expect_shape, groups};
use crate::ops::{MATMUL, MATMUL_F16, MATMUL_SUBGROUP, MATMUL_SUBGROUP_F16};
use crate::ops::{MATMUL_COOP16, MATMUL_COOP16_F16, MATMUL_COOP8, MATMUL_COOP8_F16};

pub use crate::ops::variant::{coop_ready, MatmulVariant, MIN_WIDE_GROUPS};
pub(crate) use crate::ops::variant::{coop_shader, subgroups_of_8};

/// How to read the operands. `Default` is plain `a · b`.
#[derive(Clone, Copy, Debug)]
pub struct MatmulOptions {
    /// `a` is stored `[.., K, M]` (multiply by its transpose).
    pub transpose_a: bool,
    /// `b` is stored `[.., N, K]`: nn.Linear's `weight [out, in]`, so `x · Wᵀ`.
    pub transpose_b: bool,
    /// Scales the product before the bias is added (attention's 1/√d).
    pub alpha: f32,
    /// Kernel override; `None` picks [`MatmulVariant::for_problem`].
    pub variant: Option<MatmulVariant>,
}

impl Default for MatmulOptions {
    fn default() -> Self {
        Self {
            transpose_a: false,
            transpose_b: false,
            alpha: 1.0,
            variant: None,
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
    _pad: [u32; 2],
}

/// What a GEMM's store does besides writing the product (matmul and conv2d):
/// add the bias, then optionally add a residual laid out as the output and
/// scale the sum, `(product + bias + residual) · scale`, so a layer and the
/// residual add after it are one launch and one pass over the output. The sum
/// is the separate add's (f32 addition commutes), so the bits are the same.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a Tensor>,
    pub residual: Option<(&'a Tensor, f32)>,
}

impl<'a> Epilogue<'a> {
    pub fn bias(bias: Option<&'a Tensor>) -> Self {
        Self {
            bias,
            residual: None,
        }
    }

    /// The bias (`[channels]`) and the residual (the output's shape, or
    /// `broadcast`) checked.
    pub(crate) fn check(
        &self,
        op: &str,
        channels: usize,
        out: &Tensor,
        broadcast: Option<&[usize]>,
    ) -> Result<()> {
        if let Some(bias) = self.bias {
            expect_shape(op, "bias", bias, &[channels])?;
        }
        if let Some((residual, _)) = self.residual {
            if broadcast != Some(&residual.shape[..]) {
                expect_shape(op, "residual", residual, &out.shape)?;
            }
        }
        Ok(())
    }

    /// `HAS_BIAS` and `HAS_RESIDUAL`.
    pub(crate) fn constants(&self) -> [(&'static str, f64); 2] {
        [
            ("HAS_BIAS", self.bias.is_some() as u32 as f64),
            ("HAS_RESIDUAL", self.residual.is_some() as u32 as f64),
        ]
    }

    /// The bias and residual bindings: `unused` (an input of the same dispatch,
    /// never read through them) where there is none.
    pub(crate) fn bindings(&self, unused: &'a Tensor) -> [(&'a Tensor, Access); 2] {
        [
            (self.bias.unwrap_or(unused), Access::Read),
            (self.residual.map_or(unused, |(r, _)| r), Access::Read),
        ]
    }

    /// `x`, `out` and the residual share one activation dtype
    /// ([`expect_activations`]).
    pub(crate) fn expect_activations(&self, op: &str, x: &Tensor, out: &Tensor) -> Result<()> {
        let mut acts = vec![("out", out)];
        acts.extend(self.residual.map(|(r, _)| ("residual", r)));
        expect_activations(op, x, &acts)
    }

    pub(crate) fn scale(&self) -> f32 {
        self.residual.map_or(1.0, |(_, scale)| scale)
    }
}

/// Output tile per workgroup: (columns, rows), per the shader's entry points.
const GPU_TILE: (usize, usize) = (64, 64);
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
    let mut out_shape = a.shape[..a.shape.len() - 2].to_vec();
    out_shape.extend([shape.m, shape.n]);
    expect_shape("matmul", "out", out, &out_shape)?;
    let epilogue = Epilogue::bias(bias);
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
    linear_with(ctx, x, weight, Epilogue::bias(bias), out)
}

/// [`linear`] with a residual added in the same kernel ([`Epilogue`]).
pub fn linear_with(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    epilogue: Epilogue,
    out: &Tensor,
) -> Result<Vec<Dispatch>> {
    let opts = MatmulOptions::linear();
    let shape = Shape::of(x, weight, &opts)?;
    expect_shape("linear", "out", out, &[shape.m, shape.n])?;
    epilogue.check("linear", shape.n, out, None)?;
    weight
        .row_blocks(ctx, "nn.Linear weight")?
        .into_iter()
        .map(|(row0, block)| launch(ctx, x, &block, epilogue, out, &opts, (row0, shape.n)))
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
        _pad: [0; 2],
    };
    epilogue.expect_activations("matmul", a, out)?;
    let kernel = pick(ctx, &shape, b.dtype, opts)?;
    let (tile_n, tile_m) = kernel.tile;
    let mut constants = vec![
        ("TRANSPOSE_A", opts.transpose_a as u32 as f64),
        ("TRANSPOSE_B", opts.transpose_b as u32 as f64),
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
            (b, Access::Read),
            bias,
            (out, Access::ReadWrite),
            residual,
        ],
        workgroups: [groups(n, tile_n), groups(m, tile_m), batch as u32],
        flops: 2 * (batch * m * n * k) as u64,
        bytes: (a.dtype.size() * (batch * m * k + batch * m * n) + b.dtype.size() * b_reads) as u64,
    }
    .build(ctx, &params)
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
}

fn pick(ctx: &Context, shape: &Shape, b_dtype: DType, opts: &MatmulOptions) -> Result<Pick> {
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
        .unwrap_or_else(|| MatmulVariant::for_problem(ctx, shape.batch, shape.m, shape.n));
    let aligned = shape.vec4_aligned(opts);
    let subgroup = aligned && !opts.transpose_a && subgroups_of_8(ctx);
    let plain = |shader, entry, tile| Pick {
        shader,
        entry,
        tile,
        constants: Vec::new(),
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
            }
        }
        (MatmulVariant::Gpu | MatmulVariant::Coop, _) => plain(base, "matmul_gpu", GPU_TILE),
        (MatmulVariant::GpuWide, _) => plain(base, "matmul_gpu_wide", WIDE_TILE),
        (MatmulVariant::CpuSubgroup, _) if subgroup => {
            plain(subgroup_shader, "matmul_cpu_subgroup", CPU_VEC4_TILE)
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

/// Problem size after checking `a` and `b` against each other.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
}

impl Shape {
    fn of(a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Result<Self> {
        let bad = |msg: String| Error::BadInput(format!("matmul: {msg}"));
        if a.shape.len() < 2 {
            return Err(bad(format!(
                "a has shape {:?}, expected [.., M, K]",
                a.shape
            )));
        }
        let (batch_dims, mat) = a.shape.split_at(a.shape.len() - 2);
        let (m, k) = if opts.transpose_a {
            (mat[1], mat[0])
        } else {
            (mat[0], mat[1])
        };
        let b_ok = b.shape.len() == 2 || b.shape[..b.shape.len().saturating_sub(2)] == *batch_dims;
        if !b_ok || b.shape.len() < 2 {
            return Err(bad(format!(
                "b has shape {:?}, expected [K, N] or a's batch dims {batch_dims:?} then [K, N]",
                b.shape
            )));
        }
        let bm = &b.shape[b.shape.len() - 2..];
        let (kb, n) = if opts.transpose_b {
            (bm[1], bm[0])
        } else {
            (bm[0], bm[1])
        };
        if kb != k {
            return Err(bad(format!(
                "inner dimensions differ: a {:?} gives K = {k}, b {:?} gives K = {kb}",
                a.shape, b.shape
            )));
        }
        if m == 0 || n == 0 || k == 0 {
            return Err(bad(format!(
                "empty product: a {:?}, b {:?}",
                a.shape, b.shape
            )));
        }
        let batch = batch_dims.iter().product();
        Ok(Self { batch, m, n, k })
    }

    /// Whether `matmul_cpu_vec4` can read both operands 4 floats at a time:
    /// each contiguous dimension (and so each row and batch stride) a multiple of 4.
    fn vec4_aligned(&self, opts: &MatmulOptions) -> bool {
        self.k.is_multiple_of(4)
            && (!opts.transpose_a || self.m.is_multiple_of(4))
            && (opts.transpose_b || self.n.is_multiple_of(4))
    }
}
