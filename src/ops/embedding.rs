//! Embeddings (wgsl/embedding.wgsl): diffusers' sinusoidal timestep embedding
//! (the UNet's `time_proj`) and CLIP's input embeddings for text and vision.

use crate::error::{Error, Result};
use crate::gpu::{Access, Context, Dispatch, Launch};
use crate::gpu::{DType, Shader, Tensor};
use crate::ops::{expect_dtype, expect_shape, grid_1d, groups, EMBEDDING, EMBEDDING_F16};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    dim: u32,
    half_dim: u32,
    rows: u32,
    scale: f32,
    vocab: u32,
    row0: u32,
    block_rows: u32,
}

const WORKGROUP: usize = 256;

/// diffusers' `Timesteps` module: the arguments of `get_timestep_embedding`.
#[derive(Clone, Copy, Debug)]
pub struct Timesteps {
    /// `embedding_dim`; an odd one gets a zero last column.
    pub num_channels: usize,
    /// `[cos | sin]` instead of `[sin | cos]`; Stable Diffusion 1.x: true.
    pub flip_sin_to_cos: bool,
    /// Frequencies are `max_period^(-k / (half - shift))`; Stable Diffusion 1.x: 0.
    pub downscale_freq_shift: f64,
    /// Multiplies the angles; diffusers' default 1.
    pub scale: f64,
    /// diffusers' default 10,000.
    pub max_period: f64,
}

impl Timesteps {
    /// `Timesteps(num_channels, flip_sin_to_cos, downscale_freq_shift)` with
    /// diffusers' defaults `scale=1`, `max_period=10000`.
    pub fn new(num_channels: usize, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Self {
        Self {
            num_channels,
            flip_sin_to_cos,
            downscale_freq_shift,
            scale: 1.0,
            max_period: 10_000.0,
        }
    }

    /// The `embedding_dim / 2` frequencies `exp(-ln(max_period) * k / (half -
    /// shift))`, rounded to f32 where torch rounds (its Python scalars, the
    /// exponent, the exp). Computed here, once, because GPU exp is a few ulp
    /// off and the angle `t * freq` (up to 1000 rad) magnifies that error.
    pub fn frequencies(&self) -> Result<Vec<f32>> {
        let half = self.num_channels / 2;
        let denominator = half as f64 - self.downscale_freq_shift;
        if self.num_channels == 0 || (half > 0 && denominator == 0.0) {
            return Err(Error::BadInput(format!(
                "timestep_embedding: num_channels {} with downscale_freq_shift {} divides by zero",
                self.num_channels, self.downscale_freq_shift
            )));
        }
        let neg_log = -self.max_period.ln() as f32;
        let denominator = denominator as f32;
        Ok((0..half)
            .map(|k| ((neg_log * k as f32 / denominator) as f64).exp() as f32)
            .collect())
    }

    /// Upload [`Timesteps::frequencies`] (at model load, not per step): the
    /// table [`timestep_embedding`] reads.
    pub fn upload_frequencies(&self, ctx: &Context) -> Result<Tensor> {
        let freqs = self.frequencies()?;
        Tensor::from_f32(ctx, "time_proj frequencies", &[freqs.len()], &freqs)
    }
}

/// `get_timestep_embedding(timesteps, ...)`: timesteps [N] (f32, may be
/// fractional) and the frequencies from [`Timesteps::upload_frequencies`]
/// [num_channels / 2] -> out [N, num_channels].
pub fn timestep_embedding(
    ctx: &Context,
    config: &Timesteps,
    frequencies: &Tensor,
    timesteps: &Tensor,
    out: &Tensor,
) -> Result<Dispatch> {
    const OP: &str = "timestep_embedding";
    expect_dtype(OP, "timesteps", timesteps, DType::F32)?;
    let [n] = timesteps.shape[..] else {
        return Err(Error::BadInput(format!(
            "{OP}: timesteps has shape {:?}, expected [N]",
            timesteps.shape
        )));
    };
    let dim = config.num_channels;
    let half = dim / 2;
    expect_dtype(OP, "frequencies", frequencies, DType::F32)?;
    expect_shape(OP, "frequencies", frequencies, &[half])?;
    expect_shape(OP, "out", out, &[n, dim])?;
    let params = Params {
        n: (n * dim) as u32,
        dim: dim as u32,
        half_dim: half as u32,
        scale: config.scale as f32,
        ..Params::default()
    };
    let flip = f64::from(u8::from(config.flip_sin_to_cos));
    launch(
        ctx,
        (&EMBEDDING, "timestep_embedding"),
        &[("FLIP_SIN_TO_COS", flip)],
        &[
            (timesteps, Access::Read),
            (frequencies, Access::Read),
            (out, Access::ReadWrite),
        ],
        &params,
        4,
    )
}

/// transformers' `CLIPTextEmbeddings`: `token_embedding(input_ids) +
/// position_embedding(arange(L))`. input_ids [B, L] (u32), token_embedding
/// [V, D] (f32 or f16), position_embedding [P, D] (f32) with L <= P -> out
/// [B, L, D]. A token table above the adapter's binding limit is bound in
/// blocks of rows, one dispatch each (each writes the tokens in its block).
pub fn clip_text_embeddings(
    ctx: &Context,
    input_ids: &Tensor,
    token_embedding: &Tensor,
    position_embedding: &Tensor,
    out: &Tensor,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "clip_text_embeddings";
    expect_dtype(OP, "input_ids", input_ids, DType::U32)?;
    let [b, l] = input_ids.shape[..] else {
        return Err(Error::BadInput(format!(
            "{OP}: input_ids has shape {:?}, expected [B, L]",
            input_ids.shape
        )));
    };
    let shader = match token_embedding.dtype {
        DType::F16 => &EMBEDDING_F16,
        _ => &EMBEDDING,
    };
    let [v, d] = table(
        OP,
        "token_embedding",
        token_embedding,
        token_embedding.dtype,
    )?;
    let [positions, _] = table(OP, "position_embedding", position_embedding, DType::F32)?;
    expect_shape(
        OP,
        "position_embedding",
        position_embedding,
        &[positions, d],
    )?;
    if l > positions || v == 0 {
        return Err(Error::BadInput(format!(
            "{OP}: {l} tokens but position_embedding has {positions} positions"
        )));
    }
    expect_shape(OP, "out", out, &[b, l, d])?;
    let blocks = token_embedding.row_blocks(ctx, "token_embedding")?;
    blocks
        .iter()
        .map(|(row0, block)| {
            let params = Params {
                n: (b * l * d) as u32,
                dim: d as u32,
                rows: l as u32,
                vocab: v as u32,
                row0: *row0 as u32,
                block_rows: block.shape[0] as u32,
                ..Params::default()
            };
            launch(
                ctx,
                (shader, "clip_text_embeddings"),
                &[],
                &[
                    (input_ids, Access::Read),
                    (block, Access::Read),
                    (out, Access::ReadWrite),
                    (position_embedding, Access::Read),
                ],
                &params,
                1,
            )
        })
        .collect()
}

/// transformers' `CLIPVisionEmbeddings` after its patch conv:
/// `cat([class_embedding, patch_embeds.flatten(2).transpose(1, 2)], dim=1) +
/// position_embedding(arange(NP + 1))`. patch_embeds [B, D, H/p, W/p] (the conv's
/// output), class_embedding [D], position_embedding [NP + 1, D] -> out [B, NP + 1, D].
pub fn clip_vision_embeddings(
    ctx: &Context,
    patch_embeds: &Tensor,
    class_embedding: &Tensor,
    position_embedding: &Tensor,
    out: &Tensor,
) -> Result<Dispatch> {
    const OP: &str = "clip_vision_embeddings";
    expect_dtype(OP, "patch_embeds", patch_embeds, DType::F32)?;
    let [b, d, gh, gw] = patch_embeds.shape[..] else {
        return Err(Error::BadInput(format!(
            "{OP}: patch_embeds has shape {:?}, expected [B, D, H/p, W/p]",
            patch_embeds.shape
        )));
    };
    let patches = gh * gw;
    expect_dtype(OP, "class_embedding", class_embedding, DType::F32)?;
    expect_shape(OP, "class_embedding", class_embedding, &[d])?;
    expect_dtype(OP, "position_embedding", position_embedding, DType::F32)?;
    expect_shape(
        OP,
        "position_embedding",
        position_embedding,
        &[patches + 1, d],
    )?;
    expect_shape(OP, "out", out, &[b, patches + 1, d])?;
    let params = Params {
        n: out.numel() as u32,
        dim: d as u32,
        rows: patches as u32,
        ..Params::default()
    };
    launch(
        ctx,
        (&EMBEDDING, "clip_vision_embeddings"),
        &[],
        &[
            (patch_embeds, Access::Read),
            (class_embedding, Access::Read),
            (out, Access::ReadWrite),
            (position_embedding, Access::Read),
        ],
        &params,
        1,
    )
}

/// An embedding table's [rows, D], checking it is f32 or, where the kernel
/// reads it through weight_at, f16.
fn table(op: &str, what: &str, t: &Tensor, dtype: DType) -> Result<[usize; 2]> {
    if dtype != DType::F16 {
        expect_dtype(op, what, t, DType::F32)?;
    }
    t.shape[..].try_into().map_err(|_| {
        Error::BadInput(format!(
            "{op}: {what} has shape {:?}, expected [rows, D]",
            t.shape
        ))
    })
}

fn launch(
    ctx: &Context,
    (shader, entry): (&'static Shader, &str),
    constants: &[(&str, f64)],
    tensors: &[(&Tensor, Access)],
    params: &Params,
    flops_per_output: u64,
) -> Result<Dispatch> {
    let n = params.n as usize;
    Launch {
        shader,
        entry,
        constants,
        tensors,
        workgroups: grid_1d(groups(n, WORKGROUP)),
        flops: flops_per_output * n as u64,
        bytes: tensors.iter().map(|(t, _)| t.bytes()).sum(),
    }
    .build(ctx, params)
}
