//! diffusers' `UNet2DConditionModel` (models/unets/unet_2d_condition.py): the
//! denoiser. Built from its config.json; every field Stable Diffusion 1.x and
//! 2.x use is honoured, and fields easel cannot honour are refused by name.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::models::layers::{Conv2d, GroupNorm, Linear, Vars};
use crate::models::unet_blocks::{BlockConfig, DownBlock, MidBlock, UpBlock};
use crate::models::Graph;
use crate::ops::embedding::Timesteps;

/// A config field that diffusers accepts as one value or one per block.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    fn expand(&self, field: &str, blocks: usize) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); blocks]),
            PerBlock::Each(v) if v.len() == blocks => Ok(v.clone()),
            PerBlock::Each(v) => Err(Error::BadInput(format!(
                "unet config: `{field}` has {} entries for {blocks} blocks",
                v.len()
            ))),
        }
    }
}

fn d_true() -> bool {
    true
}
fn d_groups() -> usize {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_one_usize() -> usize {
    1
}
fn d_one_f64() -> f64 {
    1.0
}
fn d_three() -> usize {
    3
}
fn d_four() -> usize {
    4
}
fn d_layers() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn d_heads() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn d_transformer_layers() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_silu() -> String {
    "silu".into()
}
fn d_default() -> String {
    "default".into()
}
fn d_positional() -> String {
    "positional".into()
}

/// `unet/config.json`. Defaults are diffusers' `UNet2DConditionModel.__init__` defaults.
#[derive(Clone, Debug, Deserialize)]
pub struct UNet2DConditionConfig {
    #[serde(default)]
    pub sample_size: Option<usize>,
    #[serde(default = "d_four")]
    pub in_channels: usize,
    #[serde(default = "d_four")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "d_one_usize")]
    pub downsample_padding: usize,
    #[serde(default = "d_one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    #[serde(default = "d_transformer_layers")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Legacy name: the number of heads when `num_attention_heads` is null.
    #[serde(default = "d_heads")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub only_cross_attention: serde_json::Value,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default = "d_three")]
    pub conv_in_kernel: usize,
    #[serde(default = "d_three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default = "d_default")]
    pub attention_type: String,
}

impl UNet2DConditionConfig {
    /// Refuse, by field name, what easel does not implement (rather than run it wrong).
    pub fn check_supported(&self) -> Result<()> {
        let refuse = |field: &str, value: &dyn std::fmt::Debug| {
            Err(Error::BadInput(format!(
                "unet config: `{field}` = {value:?} is not supported by easel"
            )))
        };
        if self.act_fn != "silu" {
            return refuse("act_fn", &self.act_fn);
        }
        if self.resnet_time_scale_shift != "default" {
            return refuse("resnet_time_scale_shift", &self.resnet_time_scale_shift);
        }
        if self.time_embedding_type != "positional" {
            return refuse("time_embedding_type", &self.time_embedding_type);
        }
        if self.attention_type != "default" {
            return refuse("attention_type", &self.attention_type);
        }
        if self.dual_cross_attention {
            return refuse("dual_cross_attention", &true);
        }
        if !matches!(
            self.only_cross_attention,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        ) {
            return refuse("only_cross_attention", &self.only_cross_attention);
        }
        let optional = [
            ("class_embed_type", &self.class_embed_type),
            ("addition_embed_type", &self.addition_embed_type),
            ("time_embedding_act_fn", &self.time_embedding_act_fn),
            ("timestep_post_act", &self.timestep_post_act),
        ];
        for (field, value) in optional {
            if let Some(v) = value {
                return refuse(field, v);
            }
        }
        if let Some(v) = self.time_cond_proj_dim {
            return refuse("time_cond_proj_dim", &v);
        }
        if let Some(v) = self.encoder_hid_dim {
            return refuse("encoder_hid_dim", &v);
        }
        if self.down_block_types.len() != self.block_out_channels.len()
            || self.up_block_types.len() != self.block_out_channels.len()
        {
            return Err(Error::BadInput(format!(
                "unet config: {} down blocks, {} up blocks and {} block_out_channels must agree",
                self.down_block_types.len(),
                self.up_block_types.len(),
                self.block_out_channels.len()
            )));
        }
        Ok(())
    }

    /// Heads per down block: `num_attention_heads`, or the legacy `attention_head_dim`
    /// (which diffusers reads as a head count when `num_attention_heads` is null).
    pub fn heads(&self) -> Result<Vec<usize>> {
        let blocks = self.block_out_channels.len();
        match &self.num_attention_heads {
            Some(h) => h.expand("num_attention_heads", blocks),
            None => self.attention_head_dim.expand("attention_head_dim", blocks),
        }
    }

    /// How much the spatial size shrinks from input to the lowest block.
    pub fn downscale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

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
        let down_blocks = levels.down_blocks(vb)?;

        // 4. mid
        let mid_block = levels.mid_block(vb)?;

        // 5. up: mirrored, with heads and layers reversed like diffusers.
        let up_blocks = levels.up_blocks(vb)?;

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
    /// → noise (or v) prediction `[N, out, H, W]` (f32; activations in the
    /// graph's precision, [`Graph::in_precision`]).
    pub fn forward(
        &self,
        g: &mut Graph,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor> {
        g.in_precision(&[sample, context], |g, xs| {
            self.forward_in(g, &xs[0], timesteps, &xs[1])
        })
    }

    fn forward_in(
        &self,
        g: &mut Graph,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
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
        let emb = g.linear(&t_emb, &self.time_embedding.linear_1)?;
        let emb = g.silu(&emb)?;
        let emb = g.linear(&emb, &self.time_embedding.linear_2)?; // [N, 4*C0]

        // ResnetBlock2D applies SiLU to temb before its projection: do it once here.
        let emb = g.silu(&emb)?;

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
            x = block.forward(g, &x, &mut skips, &emb, context)?;
        }

        // 4. mid
        if let Some(mid) = &self.mid_block {
            x = mid.forward(g, &x, &emb, context)?;
        }

        // 5. up
        for block in &self.up_blocks {
            let take = block.resnets();
            let res = skips.split_off(skips.len() - take);
            x = block.forward(g, &x, res, &emb, context)?;
        }

        // 6. post-process
        let x = g.group_norm(&x, &self.conv_norm_out, true)?;
        g.conv2d(&x, &self.conv_out) // [N, out, H, W]
    }
}
