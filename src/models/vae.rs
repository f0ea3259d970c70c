//! diffusers' `AutoencoderKL` (models/autoencoders/autoencoder_kl.py, vae.py
//! `Encoder` and `Decoder`) for latent models such as Stable Diffusion 1.x: the
//! decoder turns latents into the image; the encoder (img2img, inpainting)
//! turns a start image into latents. Each half is loaded on its own and
//! leaves the other's tensors unread (see [`UNUSED_PREFIXES`], [`ENCODER_UNUSED`]).

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::models::attention::Attention;
use crate::models::layers::{Conv2d, GroupNorm, Vars};
use crate::models::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::models::Graph;
use crate::ops::layout;

/// Tensors of a vae/ checkpoint that decoding never reads: the encoder half.
pub const UNUSED_PREFIXES: &[&str] = &["encoder.", "quant_conv."];
/// Tensors of a vae/ checkpoint that encoding never reads: the decoder half.
pub const ENCODER_UNUSED: &[&str] = &["decoder.", "post_quant_conv."];

fn d_true() -> bool {
    true
}
fn d_groups() -> usize {
    32
}
fn d_one() -> usize {
    1
}
fn d_three() -> usize {
    3
}
fn d_scaling() -> f64 {
    0.18215
}

#[derive(Clone, Debug, Deserialize)]
pub struct AutoencoderKLConfig {
    #[serde(default = "d_three")]
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub up_block_types: Vec<String>,
    /// Only the encoder reads it (absent: the decoder alone can be used).
    #[serde(default)]
    pub down_block_types: Vec<String>,
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
    pub use_quant_conv: bool,
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

/// diffusers' `UNetMidBlock2D` as both VAE halves use it (no time embedding,
/// eps 1e-6, one attention head over all channels): resnet, attention, resnet.
struct UNetMidBlock2D {
    resnets: [ResnetBlock2D; 2],
    attention: Option<VaeAttention>,
}

impl UNetMidBlock2D {
    fn new(vb: &Vars, c: &AutoencoderKLConfig, channels: usize) -> Result<Self> {
        let groups = c.norm_num_groups;
        let resnet = |j: usize| {
            let vb = vb.pp("resnets").pp(j);
            ResnetBlock2D::new(&vb, channels, channels, None, groups, EPS, 1.0)
        };
        let attention = match c.mid_block_add_attention {
            true => {
                let vb = vb.pp("attentions").pp(0);
                Some(VaeAttention {
                    group_norm: GroupNorm::new(&vb.pp("group_norm"), groups, channels, EPS)?,
                    attn: Attention::self_attention(&vb, channels, 1, channels, true)?,
                })
            }
            false => None,
        };
        Ok(Self {
            resnets: [resnet(0)?, resnet(1)?],
            attention,
        })
    }

    /// x `[N, C, h, w]` → `[N, C, h, w]`.
    fn forward(&self, g: &mut Graph, x: &Tensor) -> Result<Tensor> {
        let mut x = self.resnets[0].forward(g, x, None)?;
        if let Some(a) = &self.attention {
            let normed = g.group_norm(&x, &a.group_norm, false)?;
            // residual_connection=True, rescale 1: the add in to_out's store.
            x = a.attn.forward_nchw_add(g, &normed, &x)?;
        }
        self.resnets[1].forward(g, &x, None)
    }
}

pub struct AutoencoderKLDecoder {
    pub config: AutoencoderKLConfig,
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid_block: UNetMidBlock2D,
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
            mid_block: UNetMidBlock2D::new(&dec.pp("mid_block"), c, top)?,
            up_blocks,
            conv_norm_out: GroupNorm::new(&dec.pp("conv_norm_out"), groups, c0, EPS)?,
            conv_out: Conv2d::new(&dec.pp("conv_out"), c0, c.out_channels, 3, 1, 1)?,
            config,
        })
    }

    /// The dtype its layer weights have on the GPU (`--precision auto` follows it).
    pub fn weights_dtype(&self) -> crate::gpu::DType {
        self.conv_in.weight.dtype
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

    /// z `[N, latent, h, w]` (already divided by scaling_factor) → image `[N, out, h·f, w·f]`
    /// in [-1, 1] (f32; activations in the graph's precision, [`Graph::in_precision`]).
    pub fn forward(&self, g: &mut Graph, z: &Tensor) -> Result<Tensor> {
        g.in_precision(&[z], |g, z| self.forward_in(g, &z[0]))
    }

    fn forward_in(&self, g: &mut Graph, z: &Tensor) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(conv) => g.conv2d(z, conv)?,
            None => z.clone(),
        };
        let mut x = g.conv2d(&z, &self.conv_in)?; // [N, top, h, w]
        x = self.mid_block.forward(g, &x)?;
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

/// The encoder half (vae.py `Encoder` with `double_z`, then `quant_conv`):
/// image → the diagonal Gaussian's mean and log-variance.
pub struct AutoencoderKLEncoder {
    pub config: AutoencoderKLConfig,
    conv_in: Conv2d,
    down_blocks: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
}

impl AutoencoderKLEncoder {
    pub fn new(vb: &Vars, config: AutoencoderKLConfig) -> Result<Self> {
        let c = &config;
        check_encoder(c)?;
        let (groups, blocks) = (c.norm_num_groups, c.block_out_channels.len());
        let enc = vb.pp("encoder");
        let mut down_blocks = Vec::new();
        let mut prev = c.block_out_channels[0];
        for (i, &out) in c.block_out_channels.iter().enumerate() {
            let vb = enc.pp("down_blocks").pp(i);
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    let cin = if j == 0 { prev } else { out };
                    ResnetBlock2D::new(&vb.pp("resnets").pp(j), cin, out, None, groups, EPS, 1.0)
                })
                .collect::<Result<Vec<_>>>()?;
            // add_downsample = not is_final_block, downsample_padding=0.
            let down = match i + 1 < blocks {
                true => Some(Downsample2D::new(&vb.pp("downsamplers").pp(0), out, 0)?),
                false => None,
            };
            down_blocks.push((resnets, down));
            prev = out;
        }
        let (c0, top, z2) = (c.block_out_channels[0], prev, 2 * c.latent_channels);
        Ok(Self {
            conv_in: Conv2d::new(&enc.pp("conv_in"), c.in_channels, c0, 3, 1, 1)?,
            down_blocks,
            mid_block: UNetMidBlock2D::new(&enc.pp("mid_block"), c, top)?,
            conv_norm_out: GroupNorm::new(&enc.pp("conv_norm_out"), groups, top, EPS)?,
            conv_out: Conv2d::new(&enc.pp("conv_out"), top, z2, 3, 1, 1)?,
            quant_conv: match c.use_quant_conv {
                true => Some(Conv2d::new(&vb.pp("quant_conv"), z2, z2, 1, 1, 0)?),
                false => None,
            },
            config,
        })
    }

    /// Image `[N, in, H, W]` in [-1, 1] → the posterior's moments
    /// `[N, 2·latent, H/f, W/f]`: mean, then log-variance (diffusers'
    /// `DiagonalGaussianDistribution(moments)` splits them along channels).
    /// f32; activations in the graph's precision ([`Graph::in_precision`]).
    pub fn forward(&self, g: &mut Graph, x: &Tensor) -> Result<Tensor> {
        g.in_precision(&[x], |g, x| self.forward_in(g, &x[0]))
    }

    fn forward_in(&self, g: &mut Graph, x: &Tensor) -> Result<Tensor> {
        let mut x = g.conv2d(x, &self.conv_in)?; // [N, c0, H, W]
        for (resnets, down) in &self.down_blocks {
            for resnet in resnets {
                x = resnet.forward(g, &x, None)?;
            }
            if let Some(down) = down {
                x = down.forward(g, &x)?; // [N, C, h/2, w/2]
            }
        }
        x = self.mid_block.forward(g, &x)?; // [N, top, H/f, W/f]
        let x = g.group_norm(&x, &self.conv_norm_out, true)?;
        let moments = g.conv2d(&x, &self.conv_out)?; // [N, 2·latent, H/f, W/f]
        match &self.quant_conv {
            Some(conv) => g.conv2d(&moments, conv),
            None => Ok(moments),
        }
    }

    /// Image `[N, in, H, W]` in [-1, 1] → latents as a diffusion model samples
    /// them `[N, latent, H/f, W/f]`: the posterior's mean (not a sample: the
    /// start is the same for every seed, and a trained VAE's variance is tiny),
    /// `(mean − shift_factor) · scaling_factor`, the inverse of [`AutoencoderKLDecoder::decode`].
    pub fn encode(&self, g: &mut Graph, image: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let moments = self.forward(g, image)?;
        let [n, _, h, w] = moments.shape[..] else {
            unreachable!("conv2d makes NCHW")
        };
        let mean = g.tensor(&[n, c.latent_channels, h, w])?;
        g.push(layout::narrow(g.ctx, &moments, 1, 0, &mean)?);
        let shift = c.shift_factor.unwrap_or(0.0);
        g.scale(
            &mean,
            c.scaling_factor as f32,
            (-shift * c.scaling_factor) as f32,
        )
    }
}

/// What the encoder needs of the config beyond the decoder's checks.
fn check_encoder(c: &AutoencoderKLConfig) -> Result<()> {
    let bad = |msg: String| Err(Error::BadInput(format!("vae config: {msg}")));
    if c.in_channels != 3 {
        return bad(format!(
            "in_channels {}: the encoder takes RGB images (3)",
            c.in_channels
        ));
    }
    if c.down_block_types.len() != c.block_out_channels.len() {
        return bad(format!(
            "down_block_types ({}) needs one entry per block_out_channels ({}) to encode images",
            c.down_block_types.len(),
            c.block_out_channels.len()
        ));
    }
    match c
        .down_block_types
        .iter()
        .find(|k| *k != "DownEncoderBlock2D")
    {
        Some(kind) => bad(format!(
            "down block type {kind:?} is not supported by easel"
        )),
        None => Ok(()),
    }
}
