//! diffusers' `UNet2DConditionModel` (models/unets/unet_2d_condition.py): the
//! denoiser. Built from its config.json; every field Stable Diffusion 1.x and
//! 2.x use is honoured, and fields easel cannot honour are refused by name.

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::models::attention::{Cross, CrossContext};
use crate::models::layers::{Conv2d, GroupNorm, Linear, Vars};
use crate::models::time_projections::TimeProjections;
use crate::models::unet_blocks::{BlockConfig, DownBlock, MidBlock, UpBlock};
pub use crate::models::unet_config::{PerBlock, UNet2DConditionConfig};
use crate::models::Graph;
use crate::ops::elementwise::Activation;
use crate::ops::embedding::Timesteps;

/// `TimestepEmbedding`: linear_1 → SiLU → linear_2.
struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    fn new(vb: &Vars, in_channels: usize, time_embed_dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::new(&vb.pp("linear_1"), in_channels, time_embed_dim, true)?,
            linear_2: Linear::new(&vb.pp("linear_2"), time_embed_dim, time_embed_dim, true)?,
        })
    }
}

/// The config read per resolution level: the per-block fields expanded to one
/// value per block, and what builds the down, mid and up blocks from them.
struct Levels<'a> {
    config: &'a UNet2DConditionConfig,
    layers: Vec<usize>,
    transformer_layers: Vec<usize>,
    heads: Vec<usize>,
}

impl<'a> Levels<'a> {
    fn new(config: &'a UNet2DConditionConfig) -> Result<Self> {
        let blocks = config.block_out_channels.len();
        Ok(Self {
            config,
            layers: config.layers_per_block.expand("layers_per_block", blocks)?,
            transformer_layers: config
                .transformer_layers_per_block
                .expand("transformer_layers_per_block", blocks)?,
            heads: config.heads()?,
        })
    }

    /// What the blocks of level `i` share.
    fn block(&self, i: usize) -> BlockConfig {
        let config = self.config;
        BlockConfig {
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            temb: config.block_out_channels[0] * 4,
            cross_attention_dim: config.cross_attention_dim,
            heads: self.heads[i],
            transformer_layers: self.transformer_layers[i],
            use_linear_projection: config.use_linear_projection,
            downsample_padding: config.downsample_padding,
        }
    }

    /// `down_blocks.{i}`: each level's resnets, then a downsampler but at the lowest.
    fn down_blocks(&self, vb: &Vars) -> Result<Vec<DownBlock>> {
        let channels = &self.config.block_out_channels;
        let blocks = channels.len();
        let mut down_blocks = Vec::with_capacity(blocks);
        let mut cin = channels[0];
        for (i, kind) in self.config.down_block_types.iter().enumerate() {
            let last = i + 1 == blocks;
            let vb = vb.pp("down_blocks").pp(i);
            down_blocks.push(DownBlock::new(
                &vb,
                kind,
                &self.block(i),
                cin,
                channels[i],
                self.layers[i],
                !last,
            )?);
            cin = channels[i];
        }
        Ok(down_blocks)
    }

    /// `mid_block`, at the lowest level's width (or none, as the config says).
    fn mid_block(&self, vb: &Vars) -> Result<Option<MidBlock>> {
        let blocks = self.config.block_out_channels.len();
        let top = self.config.block_out_channels[blocks - 1];
        match self.config.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => Ok(Some(MidBlock::new(
                &vb.pp("mid_block"),
                &self.block(blocks - 1),
                top,
                self.config.mid_block_scale_factor,
            )?)),
            None => Ok(None),
            Some(other) => Err(Error::BadInput(format!(
                "unet config: `mid_block_type` = {other:?} is not supported by easel"
            ))),
        }
    }

    /// `up_blocks.{i}`: the down levels mirrored, each with one resnet more than
    /// its down block (`layers_per_block + 1`, as diffusers builds them).
    fn up_blocks(&self, vb: &Vars) -> Result<Vec<UpBlock>> {
        let channels = &self.config.block_out_channels;
        let blocks = channels.len();
        let mut up_blocks = Vec::with_capacity(blocks);
        let mut prev = channels[blocks - 1];
        for (i, kind) in self.config.up_block_types.iter().enumerate() {
            let r = blocks - 1 - i; // the down block this one mirrors
            let out = channels[r];
            let skip_in = channels[r.saturating_sub(1)];
            let last = i + 1 == blocks;
            let vb = vb.pp("up_blocks").pp(i);
            let up = UpBlock::new(
                &vb,
                kind,
                &self.block(r),
                prev,
                out,
                skip_in,
                self.layers[r] + 1,
                !last,
            )?;
            up_blocks.push(up);
            prev = out;
        }
        Ok(up_blocks)
    }
}

pub struct UNet2DConditionModel {
    pub config: UNet2DConditionConfig,
    /// `time_proj`: the sinusoidal embedding and its frequency table.
    time_proj: (Timesteps, Tensor),
    time_embedding: TimestepEmbedding,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    /// Every resnet's `time_emb_proj`, run at once at the start of a forward.
    time_emb_projs: TimeProjections,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    pub fn new(vb: &Vars, config: UNet2DConditionConfig) -> Result<Self> {
        config.check_supported()?;
        let levels = Levels::new(&config)?;
        let c0 = config.block_out_channels[0];

        // 1. time: diffusers sizes the time MLP from block_out_channels[0].
        let timesteps = Timesteps::new(c0, config.flip_sin_to_cos, config.freq_shift);
        let time_proj = (timesteps, timesteps.upload_frequencies(vb.ctx)?);
        let temb_dim = config.time_embedding_dim.unwrap_or(c0 * 4);
        let time_embedding = TimestepEmbedding::new(&vb.pp("time_embedding"), c0, temb_dim)?;

        // 2. pre-process
        let k = config.conv_in_kernel;
        let conv_in = Conv2d::new(&vb.pp("conv_in"), config.in_channels, c0, k, 1, k / 2)?;

        // 3. down
        let mut down_blocks = levels.down_blocks(vb)?;

        // 4. mid
        let mut mid_block = levels.mid_block(vb)?;

        // 5. up: mirrored, with heads and layers reversed like diffusers.
        let mut up_blocks = levels.up_blocks(vb)?;
        let resnets = (down_blocks.iter_mut().flat_map(|b| b.resnets_mut()))
            .chain(mid_block.iter_mut().flat_map(|b| b.resnets_mut()))
            .chain(up_blocks.iter_mut().flat_map(|b| b.resnets_mut()));
        let projections = resnets.map(|r| r.take_time_emb_proj()).collect();
        let time_emb_projs = TimeProjections::new(vb.ctx, &vb.name("time_emb_proj"), projections)?;

        // 6. post-process
        let (groups, eps) = (config.norm_num_groups, config.norm_eps);
        let conv_norm_out = GroupNorm::new(&vb.pp("conv_norm_out"), groups, c0, eps)?;
        let k = config.conv_out_kernel;
        let conv_out = Conv2d::new(&vb.pp("conv_out"), c0, config.out_channels, k, 1, k / 2)?;
        Ok(Self {
            config,
            time_proj,
            time_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            time_emb_projs,
            conv_norm_out,
            conv_out,
        })
    }

    /// The dtype its layer weights have on the GPU (`conv_in`'s stands for all:
    /// one file, one `--weights`), which `--precision auto` follows.
    pub fn weights_dtype(&self) -> crate::gpu::DType {
        self.conv_in.weight.dtype
    }

    /// sample `[N, in, H, W]`, timesteps `[N]`, encoder_hidden_states `[N, L, cross]`
    /// (or their projections, [`Self::project_context`]) → noise (or v)
    /// prediction `[N, out, H, W]` (f32; activations in the graph's precision,
    /// [`Graph::in_precision`]).
    pub fn forward(
        &self,
        g: &mut Graph,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &CrossContext,
    ) -> Result<Tensor> {
        match context {
            CrossContext::Hidden(hidden) => g.in_precision(&[sample, hidden], |g, xs| {
                let hidden = CrossContext::Hidden(xs[1].clone());
                self.forward_in(g, &xs[0], timesteps, &Cross::new(&hidden))
            }),
            CrossContext::Projected(_) => g.in_precision(&[sample], |g, xs| {
                self.forward_in(g, &xs[0], timesteps, &Cross::new(context))
            }),
        }
    }

    /// Every cross-attention block's keys and values of `hidden` `[N, L,
    /// cross]`, in the graph's precision, for [`Self::forward`]: a run records
    /// them once, with its text stage, instead of once per step.
    pub fn project_context(&self, g: &mut Graph, hidden: &Tensor) -> Result<CrossContext> {
        let down = self.down_blocks.iter().flat_map(|b| b.transformers());
        let mid = self.mid_block.iter().flat_map(|b| b.transformers());
        let up = self.up_blocks.iter().flat_map(|b| b.transformers());
        g.with_precision(&[hidden], |g, xs| {
            let mut projected = Vec::new();
            for transformer in down.chain(mid).chain(up) {
                transformer.project(g, &xs[0], &mut projected)?;
            }
            Ok(CrossContext::Projected(projected))
        })
    }

    fn forward_in(
        &self,
        g: &mut Graph,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Cross,
    ) -> Result<Tensor> {
        let factor = self.config.downscale_factor();
        let (h, w) = (sample.dim(-2), sample.dim(-1));
        if h % factor != 0 || w % factor != 0 {
            return Err(Error::BadInput(format!(
                "unet: size {w}x{h} must be a multiple of {factor} (the model downsamples {} times)",
                factor.trailing_zeros()
            )));
        }
        // 1. time
        let t_emb = g.timestep_embedding(timesteps, &self.time_proj.0, &self.time_proj.1)?; // [N, C0]
        let emb = g.linear_act(&t_emb, &self.time_embedding.linear_1, Activation::Silu)?;
        // ResnetBlock2D applies SiLU to temb before its projection: do it once
        // here, in linear_2's store.
        let emb = g.linear_act(&emb, &self.time_embedding.linear_2, Activation::Silu)?; // [N, 4*C0]
        let mut times = self.time_emb_projs.forward(g, &emb)?; // [N, Cout] per resnet

        // 2. pre-process
        let sample = if self.config.center_input_sample {
            g.scale(sample, 2.0, -1.0)?
        } else {
            sample.clone()
        };
        let mut x = g.conv2d(&sample, &self.conv_in)?; // [N, C0, H, W]

        // 3. down
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(g, &x, &mut skips, &mut times, context)?;
        }

        // 4. mid
        if let Some(mid) = &self.mid_block {
            x = mid.forward(g, &x, &mut times, context)?;
        }

        // 5. up
        for block in &self.up_blocks {
            let take = block.resnets();
            let res = skips.split_off(skips.len() - take);
            x = block.forward(g, &x, res, &mut times, context)?;
        }

        // 6. post-process
        let x = g.group_norm(&x, &self.conv_norm_out, true)?;
        g.conv2d(&x, &self.conv_out) // [N, out, H, W]
    }
}
