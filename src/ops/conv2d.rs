//! 2-D convolution (wgsl/conv2d.wgsl): `torch.nn.functional.conv2d` for NCHW
//! input, PyTorch's weight layout `[Cout, Cin, kh, kw]`, any kernel size,
//! stride and padding (symmetric, plus optional extra zeros after the last row
//! and column), groups = 1, fused bias. An implicit GEMM:
//! the same two kernel shapes as matmul, with the input gathered on the fly.

use crate::error::{Error, Result};
use crate::gpu::coop::COLS;
use crate::gpu::dispatch::{Gemm, GemmOp};
use crate::gpu::{texture, Access, Context, DType, Dispatch, Launch, Shader, Tensor};
use crate::ops::epilogue::Epilogue;
use crate::ops::matmul::{coop_shader, MatmulVariant};
use crate::ops::variant::{subgroups_of_8, tall_block, CPU_TALL_COLS};
use crate::ops::{expect_shape, groups};
use crate::ops::{
    CONV2D, CONV2D_F16, CONV2D_SUBGROUP, CONV2D_SUBGROUP_F16, CONV2D_SUBGROUP_TEXTURE,
    CONV2D_SUBGROUP_TEXTURES, STAGE_IMAGE,
};
use crate::ops::{CONV2D_COOP16, CONV2D_COOP16_F16, CONV2D_COOP8, CONV2D_COOP8_F16};

/// conv2d runs the same kernel shapes as matmul (`Gpu` tiles, `Cpu` register
/// blocks, `CpuSubgroup` sharing the weight across a subgroup and `CpuTall`
/// sharing up to 64 channels' weights, both needing K % 4 == 0; `Coop` the
/// `Gpu` tile on cooperative matrices).
pub type ConvVariant = MatmulVariant;

/// `[f32 weight, f16 weight][8×8, 16×16 fragments]`.
/// `[f16 weight][16-wide fragments]`.
const COOP_SHADERS: [[&Shader; 2]; 2] = [
    [&CONV2D_COOP8, &CONV2D_COOP16],
    [&CONV2D_COOP8_F16, &CONV2D_COOP16_F16],
];

#[derive(Clone, Copy, Debug)]
pub struct Conv2dOptions {
    /// (y, x), like `stride=` of nn.Conv2d.
    pub stride: (usize, usize),
    /// (y, x) zeros on both sides, like `padding=`.
    pub padding: (usize, usize),
    /// (y, x) more zeros after the last row and column only: diffusers'
    /// `Downsample2D` with `padding=0` pads `(0, 1, 0, 1)` before its conv.
    pub pad_end: (usize, usize),
    /// Read x as if nearest-upsampled by this factor first (1: as it is):
    /// diffusers' `Upsample2D` in one launch, without the upsampled tensor.
    pub upsample: usize,
    /// Kernel override; `None` picks [`MatmulVariant::for_problem`].
    pub variant: Option<ConvVariant>,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Self {
            stride: (1, 1),
            padding: (0, 0),
            pad_end: (0, 0),
            upsample: 1,
            variant: None,
        }
    }
}

impl Conv2dOptions {
    /// `stride` and `padding` the same along both axes.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride: (stride, stride),
            padding: (padding, padding),
            ..Self::default()
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    hout: u32,
    wout: u32,
    kh: u32,
    kw: u32,
    stride_y: u32,
    stride_x: u32,
    pad_y: u32,
    pad_x: u32,
    k: u32,
    p: u32,
    co0: u32,
    cout_total: u32,
    residual_scale: f32,
    _pad: [u32; 3],
}

/// Output tile per workgroup: (pixels, channels), per the shader's entry points.
const GPU_TILE: (usize, usize) = (64, 64);
const WIDE_TILE: (usize, usize) = (128, 128);
const CPU_TILE: (usize, usize) = (8 * 4, 8 * 8);
/// The subgroup kernel's pixels per workgroup; its channels are 8 × `CO_BLOCK`.
const CPU_SUBGROUP_PIXELS: usize = 8 * 2;

/// `(Hout, Wout)` of a `kh × kw` convolution over `h × w`, or `None` if the
/// padded input is smaller than the kernel.
pub fn output_size(
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    opts: &Conv2dOptions,
) -> Option<(usize, usize)> {
    let (sy, sx) = opts.stride;
    let (py, px) = opts.padding;
    let (ey, ex) = opts.pad_end;
    let hout = (h + 2 * py + ey).checked_sub(kh)? / sy + 1;
    let wout = (w + 2 * px + ex).checked_sub(kw)? / sx + 1;
    Some((hout, wout))
}

/// `out = conv2d(x, weight) + bias`.
///
/// - `x`: `[N, Cin, H, W]`
/// - `weight`: `[Cout, Cin, kh, kw]`, f32 or f16 ([`DType::F16`])
/// - `bias`: `[Cout]`
/// - `out`: `[N, Cout, Hout, Wout]` (see [`output_size`]); must not alias `x`.
pub fn conv2d(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    out: &Tensor,
    opts: &Conv2dOptions,
) -> Result<Dispatch> {
    let epilogue = Epilogue::bias(bias);
    let conv = Geometry::checked(x, weight, &epilogue, out, opts)?;
    launch(ctx, x, weight, epilogue, out, opts, (0, conv.cout))
}

/// [`conv2d`] for a weight of any size: one above the adapter's binding limit
/// runs as one dispatch per block of output channels (its rows), each writing
/// its channels of `out`, with the same sums as one dispatch.
pub fn conv2d_split(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    out: &Tensor,
    opts: &Conv2dOptions,
) -> Result<Vec<Dispatch>> {
    conv2d_split_with(ctx, x, weight, Epilogue::bias(bias), out, opts)
}

/// [`conv2d_split`] with a residual added in the same kernel ([`Epilogue`]):
/// of `out`'s shape, or `[N, Cout, 1, 1]` (one value per image and channel).
pub fn conv2d_split_with(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    epilogue: Epilogue,
    out: &Tensor,
    opts: &Conv2dOptions,
) -> Result<Vec<Dispatch>> {
    let conv = Geometry::checked(x, weight, &epilogue, out, opts)?;
    weight
        .row_blocks(ctx, "nn.Conv2d weight")?
        .into_iter()
        .map(|(co0, block)| launch(ctx, x, &block, epilogue, out, opts, (co0, conv.cout)))
        .collect()
}

/// One dispatch of `weight`'s channels into channels `co0..` of an output
/// with `cout_total` channels (shapes checked by the caller).
fn launch(
    ctx: &Context,
    x: &Tensor,
    weight: &Tensor,
    epilogue: Epilogue,
    out: &Tensor,
    opts: &Conv2dOptions,
    (co0, cout_total): (usize, usize),
) -> Result<Dispatch> {
    let conv = Geometry::of(x, weight, opts)?;
    let (k, p) = (conv.k(), conv.p());
    let gemm = Gemm {
        op: GemmOp::Conv2d,
        batch: conv.n,
        rows: conv.cout,
        cols: p,
        depth: k,
    };
    // Lazily: choosing runs the cooperative self-test, which itself calls this
    // with an explicit variant (eagerly it would wait on its own OnceLock).
    // Tile rows are output channels, columns pixels.
    let variant = opts
        .variant
        .unwrap_or_else(|| MatmulVariant::for_problem(ctx, gemm));
    epilogue.expect_activations("conv2d", x, out)?;
    let mut entry = Entry::pick(ctx, variant, &conv, &epilogue, weight, x)?;
    entry.constants.push(("UPSAMPLE", opts.upsample as f64));
    let (tile_p, tile_c) = entry.tile;
    let [bias, residual] = epilogue.bindings(x);
    let mut params = conv.params(opts);
    (params.co0, params.cout_total) = (co0 as u32, cout_total as u32);
    params.residual_scale = epilogue.scale();
    let scratch = entry.stages_image.then(|| texture::scratch(ctx, x));
    let image = scratch
        .as_ref()
        .map_or((x, Access::Read), |s| (s, Access::Texture));
    let workgroups = [groups(p, tile_p), groups(conv.cout, tile_c), conv.n as u32];
    let d = Launch {
        shader: entry.shader,
        entry: entry.name,
        constants: &entry.constants,
        tensors: &[
            image,
            (weight, entry.weight_access),
            bias,
            (out, Access::ReadWrite),
            residual,
        ],
        workgroups,
        flops: conv.flops(),
        bytes: (x.dtype.size() * (x.numel() + conv.n * conv.cout * p)
            + weight.dtype.size() * weight.numel()) as u64,
    }
    .build(ctx, &params)?
    .with_gemm(gemm);
    match scratch {
        Some(scratch) => Ok(d.with_stage(stage_image(ctx, x, &scratch, workgroups)?)),
        None => Ok(d),
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StageParams {
    n: u32,
    groups: [u32; 3],
}

/// The launch that copies `x` into its `scratch` texture (wgsl/stage_image.wgsl),
/// on the convolution's grid `workgroups`.
fn stage_image(
    ctx: &Context,
    x: &Tensor,
    scratch: &Tensor,
    workgroups: [u32; 3],
) -> Result<Dispatch> {
    let params = StageParams {
        n: x.numel() as u32,
        groups: workgroups,
    };
    Launch {
        shader: &STAGE_IMAGE,
        entry: "stage_image",
        constants: &[],
        tensors: &[(x, Access::Read), (scratch, Access::StorageTexture)],
        workgroups,
        flops: 0,
        bytes: ((x.dtype.size() + 4) * x.numel()) as u64,
    }
    .build(ctx, &params)
}

/// The sizes of one convolution, checked against each other.
struct Geometry {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    hout: usize,
    wout: usize,
}

impl Geometry {
    fn of(x: &Tensor, weight: &Tensor, opts: &Conv2dOptions) -> Result<Self> {
        let bad = |msg: String| Error::BadInput(format!("conv2d: {msg}"));
        let [n, cin, h, w] = x.shape[..] else {
            return Err(bad(format!(
                "x has shape {:?}, expected [N, Cin, H, W]",
                x.shape
            )));
        };
        let [cout, wcin, kh, kw] = weight.shape[..] else {
            return Err(bad(format!(
                "weight has shape {:?}, expected [Cout, Cin, kh, kw]",
                weight.shape
            )));
        };
        if wcin != cin {
            return Err(bad(format!(
                "weight {:?} expects {wcin} input channels, x {:?} has {cin}",
                weight.shape, x.shape
            )));
        }
        if opts.stride.0 == 0 || opts.stride.1 == 0 {
            return Err(bad(format!("stride {:?} must be positive", opts.stride)));
        }
        if opts.upsample == 0 {
            return Err(bad("upsample factor must be positive".into()));
        }
        // The convolution sees the upsampled input.
        let (h, w) = (h * opts.upsample, w * opts.upsample);
        let (hout, wout) = output_size(h, w, kh, kw, opts).ok_or_else(|| {
            bad(format!(
                "kernel {kh}x{kw} is larger than the padded input {h}x{w} + 2x{:?} + {:?}",
                opts.padding, opts.pad_end
            ))
        })?;
        Ok(Self {
            n,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            hout,
            wout,
        })
    }

    /// `[N, Cout, Hout, Wout]`.
    fn out_shape(&self) -> [usize; 4] {
        [self.n, self.cout, self.hout, self.wout]
    }

    /// [`Self::of`], with `out` and the epilogue's tensors checked against it.
    fn checked(
        x: &Tensor,
        weight: &Tensor,
        epilogue: &Epilogue,
        out: &Tensor,
        opts: &Conv2dOptions,
    ) -> Result<Self> {
        let conv = Self::of(x, weight, opts)?;
        expect_shape("conv2d", "out", out, &conv.out_shape())?;
        epilogue.check("conv2d", conv.cout, out, Some(&conv.per_channel_shape()))?;
        Ok(conv)
    }

    /// `[N, Cout, 1, 1]`: a residual with one value per image and channel.
    fn per_channel_shape(&self) -> [usize; 4] {
        [self.n, self.cout, 1, 1]
    }

    /// Whether staging the image in a texture repays its copy and launch: each
    /// element is gathered once per tap and block of output channels, so a
    /// 1x1 convolution gathers it about as often as the staging copies it,
    /// and below ~2 MFLOP the extra launch costs what it saves (the default
    /// UNet's launches, Mesa 22: 3x3 ones 0.4-0.8x the time, 1x1 and the
    /// smallest 1.2-1.25x).
    fn stages_pay(&self) -> bool {
        self.kh * self.kw > 1 && self.flops() >= 1 << 21
    }

    /// Multiply-adds, counted as two operations each.
    fn flops(&self) -> u64 {
        2 * (self.n * self.cout * self.p() * self.k()) as u64
    }

    /// The GEMM's shared dimension: im2col columns per output pixel, `Cin·kh·kw`.
    fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// The GEMM's pixel dimension, `Hout·Wout`.
    fn p(&self) -> usize {
        self.hout * self.wout
    }

    fn params(&self, opts: &Conv2dOptions) -> Params {
        Params {
            cin: self.cin as u32,
            h: self.h as u32,
            w: self.w as u32,
            cout: self.cout as u32,
            hout: self.hout as u32,
            wout: self.wout as u32,
            kh: self.kh as u32,
            kw: self.kw as u32,
            stride_y: opts.stride.0 as u32,
            stride_x: opts.stride.1 as u32,
            pad_y: opts.padding.0 as u32,
            pad_x: opts.padding.1 as u32,
            k: self.k() as u32,
            p: self.p() as u32,
            co0: 0,
            cout_total: self.cout as u32,
            residual_scale: 1.0,
            _pad: [0; 3],
        }
    }
}

/// The wgsl/conv2d.wgsl entry point that runs a convolution, with its
/// constants and the output tile of one workgroup.
struct Entry {
    shader: &'static Shader,
    name: &'static str,
    constants: Vec<(&'static str, f64)>,
    /// (pixels, channels).
    tile: (usize, usize),
    /// How it binds the weight: through its texture copy for the subgroup
    /// kernels' `_texture` shader.
    weight_access: Access,
    /// Whether it gathers from the image staged in a texture (the subgroup
    /// kernels' `_textures` shader, [`texture::reads_image`]).
    stages_image: bool,
}

impl Entry {
    fn pick(
        ctx: &Context,
        variant: ConvVariant,
        conv: &Geometry,
        epilogue: &Epilogue,
        weight: &Tensor,
        x: &Tensor,
    ) -> Result<Self> {
        let (k, dtype) = (conv.k(), weight.dtype);
        let mut constants = epilogue.constants().to_vec();
        let per_channel = epilogue
            .residual
            .is_some_and(|(r, _)| r.shape == conv.per_channel_shape() && conv.p() > 1);
        constants.push(("RESIDUAL_PER_CHANNEL", per_channel as u32 as f64));
        let (base, subgroup) = match dtype {
            DType::F32 => (&CONV2D, &CONV2D_SUBGROUP),
            DType::F16 => (&CONV2D_F16, &CONV2D_SUBGROUP_F16),
            DType::U32 => {
                return Err(Error::BadInput(
                    "conv2d: weight is U32, expected F32 or F16".into(),
                ))
            }
        };
        let weights = texture::reads_weight(ctx, weight);
        let images = weights && texture::reads_image(ctx, x, conv.stages_pay());
        let (subgroup, subgroup_access) = match (weights, images) {
            (true, true) => (&CONV2D_SUBGROUP_TEXTURES, Access::Texture),
            (true, false) => (&CONV2D_SUBGROUP_TEXTURE, Access::Texture),
            (false, _) => (subgroup, Access::Read),
        };
        let (mut weight_access, mut stages_image) = (Access::Read, false);
        let (shader, name, tile) = match (variant, ctx.coop) {
            (MatmulVariant::Coop, Some(coop)) => {
                // Tile rows are output channels.
                let (block, rows) = coop.block_for(conv.cout);
                constants.push(("SUBGROUP_SIZE", coop.subgroup as f64));
                constants.push(("BLOCK_ROWS", block as f64));
                let rows = rows as usize;
                let shader = coop_shader(coop, COOP_SHADERS[(dtype == DType::F16) as usize]);
                (shader, "conv2d_gpu", (COLS as usize, rows))
            }
            (MatmulVariant::Gpu | MatmulVariant::Coop, _) => (base, "conv2d_gpu", GPU_TILE),
            (MatmulVariant::GpuWide, _) => (base, "conv2d_gpu_wide", WIDE_TILE),
            (MatmulVariant::CpuSubgroup, _) if k.is_multiple_of(4) && subgroups_of_8(ctx) => {
                // The narrowest channel block that holds Cout (up to 32).
                let block = conv.cout.next_power_of_two().clamp(8, 32);
                constants.push(("CO_BLOCK", block as f64));
                let tile = (CPU_SUBGROUP_PIXELS, 8 * block);
                weight_access = subgroup_access;
                stages_image = images;
                (subgroup, "conv2d_cpu_subgroup", tile)
            }
            (MatmulVariant::CpuTall, _) if k.is_multiple_of(4) && subgroups_of_8(ctx) => {
                let block = tall_block(conv.cout);
                constants.push(("TALL_BLOCK", block as f64));
                weight_access = subgroup_access;
                stages_image = images;
                (subgroup, "conv2d_cpu_tall", (CPU_TALL_COLS, 8 * block))
            }
            _ if k.is_multiple_of(4) => (base, "conv2d_cpu_vec4", CPU_TILE),
            _ => (base, "conv2d_cpu", CPU_TILE),
        };
        Ok(Self {
            shader,
            name,
            constants,
            tile,
            weight_access,
            stages_image,
        })
    }
}
