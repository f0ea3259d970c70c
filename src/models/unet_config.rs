//! `UNet2DConditionModel`'s config.json: every field Stable Diffusion 1.x and
//! 2.x use, with diffusers' defaults, and the check that refuses by name what
//! easel cannot honour.

use serde::Deserialize;

use crate::error::{Error, Result};

/// A config field that diffusers accepts as one value or one per block.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    pub(crate) fn expand(&self, field: &str, blocks: usize) -> Result<Vec<T>> {
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
