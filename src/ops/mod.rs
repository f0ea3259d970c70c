//! GPU ops: one Rust wrapper per file in wgsl/, with the same name.
//!
//! An op is a constructor that checks shapes and returns a [`Dispatch`]
//! record (pipeline, bind group, workgroup counts). Recording and submitting
//! happen elsewhere ([`encode`], [`run`]), so a whole denoising step is one
//! command buffer and per-step work only encodes dispatches.
//!
//! Binding convention shared by every kernel: `@binding(0)` is a uniform
//! `Params` struct; `@binding(1..)` are storage buffers in the order the op
//! passes them.

use crate::error::{Error, Result};
use crate::gpu::{DType, Shader, Tensor};

/// Loop iterations one invocation may run on llvmpipe (lavapipe), counted over
/// all its loops together: past it, every loop of the invocation exits early and
/// what is left unwritten stays as it was (Mesa's gallivm loop limiter,
/// `LP_MAX_TGSI_LOOP_ITERATIONS`; measured on Mesa 22.3.6: a serial group_norm of
/// 32,400 values per group stopped writing after 733 of its third pass,
/// 2 x 32,400 + 733 = 65,533). Kernels that give one invocation a whole row on
/// CPU drivers check their count against it (with a margin for short loops).
pub const CPU_LOOP_LIMIT: usize = 60_000;

pub mod attention;
pub mod blend;
pub mod cast;
pub mod conv2d;
pub mod elementwise;
pub mod embedding;
pub mod epilogue;
pub mod finite;
pub mod image;
pub mod layout;
pub mod lora;
pub mod matmul;
pub mod noise;
pub mod norm;
pub mod peak;
pub mod resample;
pub mod sampler;
pub mod score;
pub mod tuning;
pub mod variant;

macro_rules! shaders {
    ($($ident:ident $(as $name:literal)? $(/ $half:ident as $half_name:literal)?
        => $(after $pre:literal)? [$($file:literal),+]),* $(,)?) => {
        $(pub static $ident: Shader = Shader {
            name: name!($($name)?; $($file),+),
            parts: &[$($pre, )? $(act!(f32 $half), )? $($file),+],
            source: concat!(
                $(include_str!(concat!("../../wgsl/", $pre, ".wgsl")),)?
                $(include_str!(concat!("../../wgsl/", act!(f32 $half), ".wgsl")),)?
                $(include_str!(concat!("../../wgsl/", $file, ".wgsl"))),+
            ),
            half: half!($($half)?),
        };
        twin!($($half, $half_name)?; $($pre)?; $($file),+);)*
        /// Every embedded shader, for validation tests and warm-up.
        pub static ALL_SHADERS: &[&Shader] = &[$(&$ident, $(&$half,)?)*];
    };
}

/// A shader's name: the one given with `as`, else its last file's.
macro_rules! name {
    ($name:literal; $($file:literal),+) => { $name };
    (; $($file:literal),+) => { last!($($file),+) };
}

macro_rules! last {
    ($file:literal) => { $file };
    ($_first:literal, $($rest:literal),+) => { last!($($rest),+) };
}

/// A twinned shader's f16-activation form (nothing for a shader without one):
/// its prefix, or wgsl/enable_f16.wgsl, then wgsl/act_f16.wgsl, then its files.
macro_rules! twin {
    (; $($pre:literal)?; $($file:literal),+) => {};
    ($half:ident, $half_name:literal; ; $($file:literal),+) => {
        twin!($half, $half_name; "enable_f16"; $($file),+);
    };
    ($half:ident, $half_name:literal; $pre:literal; $($file:literal),+) => {
        pub static $half: Shader = Shader {
            name: $half_name,
            parts: &[$pre, "act_f16", $($file),+],
            source: concat!(
                include_str!(concat!("../../wgsl/", $pre, ".wgsl")),
                include_str!("../../wgsl/act_f16.wgsl"),
                $(include_str!(concat!("../../wgsl/", $file, ".wgsl"))),+
            ),
            half: None,
        };
    };
}

/// The activation-type file of a twinned shader (the ident only selects the arm).
macro_rules! act {
    (f32 $_half:ident) => {
        "act_f32"
    };
    (f16 $_half:ident) => {
        "act_f16"
    };
}

macro_rules! half {
    () => {
        None
    };
    ($half:ident) => {
        Some(&$half)
    };
}

// A shader is its files concatenated: the subgroup kernels reuse their base
// file's Params, bindings and helpers, and stay separate files because a module
// that calls subgroup builtins does not compile where the feature is missing.
// conv2d and matmul share their GPU tile (gemm_tile), which comes first so the
// shader keeps its kernel file's name (WGSL declarations may come in any order).
// The kernels that take a weight read it through weight_f32 or weight_f16; the
// f16 shaders are named with `as` (names key the pipeline cache). The subgroup
// kernels' `_texture` shaders read a layer weight of either precision through
// its texture copy (weight_texture, src/gpu/texture.rs), and their
// `_textures` shaders the convolution's input image too, staged in a texture
// by stage_image (image_texture; image_buffer otherwise). The `_coop`
// shaders put wgsl/gemm_coop.wgsl (cooperative matrices) where gemm_tile was,
// after the prefix that enables the extension and names the fragment size;
// attention_coop follows attention, whose Params and bindings it uses.
//
// Kernels that read and write activations name their element type `act`
// (wgsl/act_f32.wgsl). `A / A_H as "a_h"` builds both: A after act_f32, A_H
// after enable_f16 and act_f16 (f16 activations, `--precision f16`), and
// [`Shader::for_activations`] picks between them by the activations' dtype.
// `after "coop8"` puts a prefix first (`enable` must come first; the
// cooperative prefixes enable f16 themselves, so their twins need no
// enable_f16).
shaders! {
    ATTENTION / ATTENTION_H as "attention_h" => ["bound", "attention"],
    ATTENTION_SUBGROUP / ATTENTION_SUBGROUP_H as "attention_subgroup_h" =>
        ["bound", "attention", "subgroup", "attention_subgroup"],
    ATTENTION_COOP8 as "attention_coop8" / ATTENTION_COOP8_H as "attention_coop8_h" =>
        after "coop8" ["bound", "attention", "attention_coop"],
    ATTENTION_COOP16 as "attention_coop16" / ATTENTION_COOP16_H as "attention_coop16_h" =>
        after "coop16" ["bound", "attention", "attention_coop"],
    BLEND => ["bound", "blend"],
    CAST => ["cast"],
    CONV2D / CONV2D_H as "conv2d_h" => ["bound", "gemm_tile", "weight_f32", "image_buffer", "conv2d"],
    CONV2D_F16 as "conv2d_f16" / CONV2D_F16_H as "conv2d_f16_h" =>
        ["bound", "gemm_tile", "weight_f16", "image_buffer", "conv2d"],
    CONV2D_COOP8 as "conv2d_coop8" / CONV2D_COOP8_H as "conv2d_coop8_h" =>
        after "coop8" ["bound", "gemm_coop", "weight_f32", "image_buffer", "conv2d"],
    CONV2D_COOP8_F16 as "conv2d_coop8_f16" / CONV2D_COOP8_F16_H as "conv2d_coop8_f16_h" =>
        after "coop8" ["bound", "gemm_coop", "weight_f16", "image_buffer", "conv2d"],
    CONV2D_COOP16 as "conv2d_coop16" / CONV2D_COOP16_H as "conv2d_coop16_h" =>
        after "coop16" ["bound", "gemm_coop", "weight_f32", "image_buffer", "conv2d"],
    CONV2D_COOP16_F16 as "conv2d_coop16_f16" / CONV2D_COOP16_F16_H as "conv2d_coop16_f16_h" =>
        after "coop16" ["bound", "gemm_coop", "weight_f16", "image_buffer", "conv2d"],
    CONV2D_SUBGROUP / CONV2D_SUBGROUP_H as "conv2d_subgroup_h" =>
        ["bound", "gemm_tile", "weight_f32", "image_buffer", "conv2d", "subgroup", "tall", "conv2d_subgroup"],
    CONV2D_SUBGROUP_F16 as "conv2d_subgroup_f16" / CONV2D_SUBGROUP_F16_H as "conv2d_subgroup_f16_h" =>
        ["bound", "gemm_tile", "weight_f16", "image_buffer", "conv2d", "subgroup", "tall", "conv2d_subgroup"],
    CONV2D_SUBGROUP_TEXTURE as "conv2d_subgroup_texture" / CONV2D_SUBGROUP_TEXTURE_H as "conv2d_subgroup_texture_h" =>
        ["bound", "gemm_tile", "weight_texture", "image_buffer", "conv2d", "subgroup", "tall", "conv2d_subgroup"],
    CONV2D_SUBGROUP_TEXTURES as "conv2d_subgroup_textures" / CONV2D_SUBGROUP_TEXTURES_H as "conv2d_subgroup_textures_h" =>
        ["bound", "gemm_tile", "weight_texture", "image_texture", "conv2d", "subgroup", "tall", "conv2d_subgroup"],
    ELEMENTWISE / ELEMENTWISE_H as "elementwise_h" => ["activation", "elementwise"],
    EMBEDDING => ["weight_f32", "embedding"],
    EMBEDDING_F16 as "embedding_f16" => ["weight_f16", "embedding"],
    FINITE => ["finite"],
    IMAGE => ["image"],
    LAYOUT / LAYOUT_H as "layout_h" => ["layout"],
    LORA => ["bound", "lora"],
    MATMUL / MATMUL_H as "matmul_h" => ["bound", "gemm_tile", "weight_f32", "activation", "matmul"],
    MATMUL_F16 as "matmul_f16" / MATMUL_F16_H as "matmul_f16_h" =>
        ["bound", "gemm_tile", "weight_f16", "activation", "matmul"],
    MATMUL_COOP8 as "matmul_coop8" / MATMUL_COOP8_H as "matmul_coop8_h" =>
        after "coop8" ["bound", "gemm_coop", "weight_f32", "activation", "matmul"],
    MATMUL_COOP8_F16 as "matmul_coop8_f16" / MATMUL_COOP8_F16_H as "matmul_coop8_f16_h" =>
        after "coop8" ["bound", "gemm_coop", "weight_f16", "activation", "matmul"],
    MATMUL_COOP16 as "matmul_coop16" / MATMUL_COOP16_H as "matmul_coop16_h" =>
        after "coop16" ["bound", "gemm_coop", "weight_f32", "activation", "matmul"],
    MATMUL_COOP16_F16 as "matmul_coop16_f16" / MATMUL_COOP16_F16_H as "matmul_coop16_f16_h" =>
        after "coop16" ["bound", "gemm_coop", "weight_f16", "activation", "matmul"],
    MATMUL_SUBGROUP / MATMUL_SUBGROUP_H as "matmul_subgroup_h" =>
        ["bound", "gemm_tile", "weight_f32", "activation", "matmul", "subgroup", "tall", "matmul_subgroup"],
    MATMUL_SUBGROUP_F16 as "matmul_subgroup_f16" / MATMUL_SUBGROUP_F16_H as "matmul_subgroup_f16_h" =>
        ["bound", "gemm_tile", "weight_f16", "activation", "matmul", "subgroup", "tall", "matmul_subgroup"],
    MATMUL_SUBGROUP_TEXTURE as "matmul_subgroup_texture" / MATMUL_SUBGROUP_TEXTURE_H as "matmul_subgroup_texture_h" =>
        ["bound", "gemm_tile", "weight_texture", "activation", "matmul", "subgroup", "tall", "matmul_subgroup"],
    NOISE => ["noise"],
    NORM / NORM_H as "norm_h" => ["bound", "norm"],
    PEAK => ["bound", "peak"],
    RESAMPLE / RESAMPLE_H as "resample_h" => ["resample"],
    SAMPLER => ["bound", "sampler"],
    SCORE => ["bound", "score"],
    STAGE_IMAGE / STAGE_IMAGE_H as "stage_image_h" => ["bound", "stage_image"],
}

/// Workgroups needed to cover `n` items with `per_group` items each.
pub fn groups(n: usize, per_group: usize) -> u32 {
    n.div_ceil(per_group) as u32
}

/// Spread a 1-D launch of `n` workgroups over x and y so it stays under the
/// 65,535-per-dimension limit; kernels recover the index as `y * (x_count) + x`.
pub fn grid_1d(n: u32) -> [u32; 3] {
    const MAX_X: u32 = 65_535;
    if n <= MAX_X {
        [n, 1, 1]
    } else {
        [MAX_X, n.div_ceil(MAX_X), 1]
    }
}

/// Shape check shared by op constructors: a one-line message naming the op.
pub fn expect_shape(op: &str, what: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape != shape {
        return Err(Error::BadInput(format!(
            "{op}: {what} has shape {:?}, expected {shape:?}",
            t.shape
        )));
    }
    Ok(())
}

/// Dtype check shared by op constructors: a one-line message naming the op.
pub fn expect_dtype(op: &str, what: &str, t: &Tensor, dtype: DType) -> Result<()> {
    if t.dtype != dtype {
        return Err(Error::BadInput(format!(
            "{op}: {what} is {:?}, expected {dtype:?}",
            t.dtype
        )));
    }
    Ok(())
}

/// The activations an op binds share one dtype, f32 or f16 (`--precision`):
/// a kernel with f16 activations reads every one of them as f16 (binding 1's
/// dtype picks it; [`crate::gpu::Shader::for_activations`]).
pub fn expect_activations(op: &str, first: &Tensor, rest: &[(&str, &Tensor)]) -> Result<()> {
    if first.dtype == DType::U32 {
        return Err(Error::BadInput(format!(
            "{op}: input is U32, expected F32 or F16"
        )));
    }
    rest.iter()
        .try_for_each(|(what, t)| expect_dtype(op, what, t, first.dtype))
}
