//! The decoder half of diffusers' `AutoencoderKL` (models/autoencoders/
//! autoencoder_kl.py, vae.py `Decoder`): latents → image, for latent models
//! such as Stable Diffusion 1.x. The encoder's tensors are in the same file and
//! are not used (see [`UNUSED_PREFIXES`]).

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::models::attention::Attention;
use crate::models::layers::{Conv2d, GroupNorm, Vars};
use crate::models::resnet::{ResnetBlock2D, Upsample2D};
use crate::models::Graph;

/// Tensors of a vae/ checkpoint that decoding never reads: the encoder half.
pub const UNUSED_PREFIXES: &[&str] = &["encoder.", "quant_conv."];

fn d_true() -> bool {
    true
}
fn d_groups() -> usize {
    32
}
fn d_one() -> usize {
    1
}
fn d_scaling() -> f64 {
    0.18215
}

#[derive(Clone, Debug, Deserialize)]
pub struct AutoencoderKLConfig {
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub up_block_types: Vec<String>,
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    /// Latents are divided by this before decoding.
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    /// Added after the division (SD3/Flux VAEs; `null` or absent for SD 1.x/2.x).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
}

impl AutoencoderKLConfig {
    /// How much larger the image is than the latents (one 2x upsampler per
    /// decoder block but the last).
    pub fn upscale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// The VAE mid block's attention: GroupNorm, one head over all channels, residual.
struct VaeAttention {
    group_norm: GroupNorm,
    attn: Attention,
}

pub struct AutoencoderKLDecoder {
    pub config: AutoencoderKLConfig,
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid_resnets: [ResnetBlock2D; 2],
    mid_attention: Option<VaeAttention>,
    up_blocks: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// The decoder's norms all use eps 1e-6.
const EPS: f64 = 1e-6;

impl AutoencoderKLDecoder {
    pub fn new(vb: &Vars, config: AutoencoderKLConfig) -> Result<Self> {
        let c = &config;
        if let Some(kind) = c.up_block_types.iter().find(|k| *k != "UpDecoderBlock2D") {
            return Err(Error::BadInput(format!(
                "vae config: up block type {kind:?} is not supported by easel"
            )));
        }
        let groups = c.norm_num_groups;
        let top = *c
            .block_out_channels
            .last()
            .ok_or_else(|| Error::BadInput("vae config: empty block_out_channels".into()))?;
        let dec = vb.pp("decoder");
        let resnet =
            |vb: &Vars, cin, cout| ResnetBlock2D::new(vb, cin, cout, None, groups, EPS, 1.0);
        let mid = dec.pp("mid_block");
        let mid_attention = if c.mid_block_add_attention {
            let vb = mid.pp("attentions").pp(0);
            Some(VaeAttention {
                group_norm: GroupNorm::new(&vb.pp("group_norm"), groups, top, EPS)?,
                attn: Attention::new(&vb, top, top, 1, top, true)?,
            })
        } else {
            None
        };
        let mut up_blocks = Vec::new();
        let mut prev = top;
        let blocks = c.block_out_channels.len();
        for i in 0..blocks {
            let out = c.block_out_channels[blocks - 1 - i];
            let vb = dec.pp("up_blocks").pp(i);
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    resnet(
                        &vb.pp("resnets").pp(j),
                        if j == 0 { prev } else { out },
                        out,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let up = if i + 1 < blocks {
                Some(Upsample2D::new(&vb.pp("upsamplers").pp(0), out)?)
            } else {
                None
            };
            up_blocks.push((resnets, up));
            prev = out;
        }
        let c0 = c.block_out_channels[0];
        Ok(Self {
            post_quant_conv: if c.use_post_quant_conv {
                Some(Conv2d::new(
                    &vb.pp("post_quant_conv"),
                    c.latent_channels,
                    c.latent_channels,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
            conv_in: Conv2d::new(&dec.pp("conv_in"), c.latent_channels, top, 3, 1, 1)?,
            mid_resnets: [
                resnet(&mid.pp("resnets").pp(0), top, top)?,
                resnet(&mid.pp("resnets").pp(1), top, top)?,
            ],
            mid_attention,
            up_blocks,
            conv_norm_out: GroupNorm::new(&dec.pp("conv_norm_out"), groups, c0, EPS)?,
            conv_out: Conv2d::new(&dec.pp("conv_out"), c0, c.out_channels, 3, 1, 1)?,
            config,
        })
    }

    /// Latents as a diffusion model samples them `[N, latent, h, w]` → image
    /// `[N, out, h·f, w·f]` in [-1, 1]: diffusers' `latents / scaling_factor +
    /// shift_factor`, then [`Self::forward`].
    pub fn decode(&self, g: &mut Graph, latents: &Tensor) -> Result<Tensor> {
        let z = self.unscale(g, latents)?;
        self.forward(g, &z)
    }

    /// `latents / scaling_factor + shift_factor`: what [`Self::forward`] takes.
    pub fn unscale(&self, g: &mut Graph, latents: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        g.scale(
            latents,
            (1.0 / c.scaling_factor) as f32,
            c.shift_factor.unwrap_or(0.0) as f32,
        )
    }

    /// z `[N, latent, h, w]` (already divided by scaling_factor) → image `[N, out, h·f, w·f]` in [-1, 1].
    pub fn forward(&self, g: &mut Graph, z: &Tensor) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(conv) => g.conv2d(z, conv)?,
            None => z.clone(),
        };
        let mut x = g.conv2d(&z, &self.conv_in)?; // [N, top, h, w]
        x = self.mid_resnets[0].forward(g, &x, None)?;
        if let Some(a) = &self.mid_attention {
            let (h, w) = (x.dim(-2), x.dim(-1));
            let normed = g.group_norm(&x, &a.group_norm, false)?;
            let tokens = g.nchw_to_tokens(&normed)?; // [N, hw, C]
            let out = a.attn.forward(g, &tokens, &tokens)?;
            let out = g.tokens_to_nchw(&out, h, w)?;
            x = g.add(&out, &x)?; // residual_connection=True, rescale 1
        }
        x = self.mid_resnets[1].forward(g, &x, None)?;
        for (resnets, up) in &self.up_blocks {
            for resnet in resnets {
                x = resnet.forward(g, &x, None)?;
            }
            if let Some(up) = up {
                x = up.forward(g, &x)?;
            }
        }
        let x = g.group_norm(&x, &self.conv_norm_out, true)?;
        g.conv2d(&x, &self.conv_out)
    }
}
