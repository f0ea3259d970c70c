//! diffusers' UNet blocks (models/unets/unet_2d_blocks.py): `DownBlock2D`,
//! `CrossAttnDownBlock2D`, `UNetMidBlock2DCrossAttn`, `UpBlock2D`,
//! `CrossAttnUpBlock2D`. A block type without attention is the same block
//! with no transformers, so one struct serves both.

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::models::attention::{Cross, Transformer2DModel};
use crate::models::layers::Vars;
use crate::models::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::models::time_projections::Times;
use crate::models::Graph;

/// What every block of one resolution level shares, from the UNet config.
pub struct BlockConfig {
    pub groups: usize,
    pub eps: f64,
    /// Width of the time embedding (`4 * block_out_channels[0]`).
    pub temb: usize,
    pub cross_attention_dim: usize,
    pub heads: usize,
    pub transformer_layers: usize,
    pub use_linear_projection: bool,
    pub downsample_padding: usize,
}

impl BlockConfig {
    fn resnet(&self, vb: &Vars, cin: usize, cout: usize, scale: f64) -> Result<ResnetBlock2D> {
        ResnetBlock2D::new(vb, cin, cout, Some(self.temb), self.groups, self.eps, scale)
    }

    /// The `layers` resnets of a down or up block of type `kind`, one of
    /// `types` (`resnets.{j}`, resnet j taking `resnet_in(j)` channels to `cout`),
    /// and for the cross-attention type a transformer after each
    /// (`attentions.{j}`), built in diffusers' order.
    fn layers(
        &self,
        vb: &Vars,
        kind: &str,
        types: BlockTypes,
        layers: usize,
        resnet_in: impl Fn(usize) -> usize,
        cout: usize,
    ) -> Result<(Vec<ResnetBlock2D>, Vec<Transformer2DModel>)> {
        let attention = has_attention(kind, types)?;
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for j in 0..layers {
            resnets.push(self.resnet(&vb.pp("resnets").pp(j), resnet_in(j), cout, 1.0)?);
            if attention {
                attentions.push(self.transformer(&vb.pp("attentions").pp(j), cout)?);
            }
        }
        Ok((resnets, attentions))
    }

    fn transformer(&self, vb: &Vars, channels: usize) -> Result<Transformer2DModel> {
        Transformer2DModel::new(
            vb,
            channels,
            self.heads,
            self.transformer_layers,
            self.cross_attention_dim,
            self.groups,
            self.use_linear_projection,
        )
    }
}

/// The two types of a down or up block in a config: (without, with cross-attention).
type BlockTypes = (&'static str, &'static str);
const DOWN_TYPES: BlockTypes = ("DownBlock2D", "CrossAttnDownBlock2D");
const UP_TYPES: BlockTypes = ("UpBlock2D", "CrossAttnUpBlock2D");

/// Whether a block type has cross-attention; other types are refused by name.
fn has_attention(kind: &str, (plain, cross): BlockTypes) -> Result<bool> {
    match kind {
        k if k == plain => Ok(false),
        k if k == cross => Ok(true),
        other => Err(Error::BadInput(format!(
            "unet config: block type {other:?} is not supported by easel (expected {plain} or {cross})"
        ))),
    }
}

/// A UNet resnet on x with the next of the step's time projections.
fn resnet(g: &mut Graph, resnet: &ResnetBlock2D, x: &Tensor, times: &mut Times) -> Result<Tensor> {
    let time = times.next().expect("one time projection per resnet");
    resnet.forward(g, x, Some(&time))
}

/// One layer of a down or up block: the resnet, then the transformer where
/// the block has cross-attention. x `[N, Cin, H, W]` → `[N, Cout, H, W]`.
fn resnet_attention(
    g: &mut Graph,
    block: &ResnetBlock2D,
    attention: Option<&Transformer2DModel>,
    x: &Tensor,
    times: &mut Times,
    context: &Cross,
) -> Result<Tensor> {
    let x = resnet(g, block, x, times)?;
    match attention {
        Some(attn) => attn.forward(g, &x, context),
        None => Ok(x),
    }
}

pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    /// Its transformers, in the order its forward runs them.
    pub fn transformers(&self) -> impl Iterator<Item = &Transformer2DModel> {
        self.attentions.iter()
    }

    /// Its resnets, in the order its forward runs them.
    pub fn resnets_mut(&mut self) -> impl Iterator<Item = &mut ResnetBlock2D> {
        self.resnets.iter_mut()
    }

    pub fn new(
        vb: &Vars,
        kind: &str,
        cfg: &BlockConfig,
        cin: usize,
        cout: usize,
        layers: usize,
        downsample: bool,
    ) -> Result<Self> {
        let resnet_in = |j: usize| if j == 0 { cin } else { cout };
        let (resnets, attentions) = cfg.layers(vb, kind, DOWN_TYPES, layers, resnet_in, cout)?;
        let downsampler = downsample
            .then(|| Downsample2D::new(&vb.pp("downsamplers").pp(0), cout, cfg.downsample_padding))
            .transpose()?;
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// x `[N, Cin, H, W]` → output; pushes onto `skips` the states the up path
    /// concatenates later (diffusers' `res_samples`), as `UpBlock` pops them.
    pub fn forward(
        &self,
        g: &mut Graph,
        x: &Tensor,
        skips: &mut Vec<Tensor>,
        times: &mut Times,
        context: &Cross,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            x = resnet_attention(g, resnet, self.attentions.get(j), &x, times, context)?;
            skips.push(x.clone()); // [N, Cout, H, W]
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(g, &x)?; // [N, Cout, H/2, W/2]
            skips.push(x.clone());
        }
        Ok(x)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (attention, resnet) per layer.
pub struct MidBlock {
    first: ResnetBlock2D,
    layers: Vec<(Transformer2DModel, ResnetBlock2D)>,
}

impl MidBlock {
    /// Its transformers, in the order its forward runs them.
    pub fn transformers(&self) -> impl Iterator<Item = &Transformer2DModel> {
        self.layers.iter().map(|(attn, _)| attn)
    }

    /// Its resnets, in the order its forward runs them.
    pub fn resnets_mut(&mut self) -> impl Iterator<Item = &mut ResnetBlock2D> {
        std::iter::once(&mut self.first).chain(self.layers.iter_mut().map(|(_, r)| r))
    }

    /// `UNet2DConditionModel` builds it with `num_layers` = 1: one (attention,
    /// resnet) pair, whose transformer has `cfg.transformer_layers` blocks.
    pub fn new(vb: &Vars, cfg: &BlockConfig, channels: usize, scale: f64) -> Result<Self> {
        let first = cfg.resnet(&vb.pp("resnets").pp(0), channels, channels, scale)?;
        let attn = cfg.transformer(&vb.pp("attentions").pp(0), channels)?;
        let resnet = cfg.resnet(&vb.pp("resnets").pp(1), channels, channels, scale)?;
        Ok(Self {
            first,
            layers: vec![(attn, resnet)],
        })
    }

    pub fn forward(
        &self,
        g: &mut Graph,
        x: &Tensor,
        times: &mut Times,
        context: &Cross,
    ) -> Result<Tensor> {
        let mut x = resnet(g, &self.first, x, times)?;
        for (attn, block) in &self.layers {
            x = attn.forward(g, &x, context)?;
            x = resnet(g, block, &x, times)?;
        }
        Ok(x)
    }
}

pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// Its transformers, in the order its forward runs them.
    pub fn transformers(&self) -> impl Iterator<Item = &Transformer2DModel> {
        self.attentions.iter()
    }

    /// `prev`: channels coming from below; `skip_in`: channels of the deepest skip
    /// this block concatenates (the level above's output); `layers` resnets.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: &Vars,
        kind: &str,
        cfg: &BlockConfig,
        prev: usize,
        cout: usize,
        skip_in: usize,
        layers: usize,
        upsample: bool,
    ) -> Result<Self> {
        // Resnet j takes the state from below (or the previous resnet's) and
        // one skip: the deepest one last.
        let resnet_in = |j: usize| {
            let skip = if j + 1 == layers { skip_in } else { cout };
            let c = if j == 0 { prev } else { cout };
            c + skip
        };
        let (resnets, attentions) = cfg.layers(vb, kind, UP_TYPES, layers, resnet_in, cout)?;
        let upsampler = upsample
            .then(|| Upsample2D::new(&vb.pp("upsamplers").pp(0), cout))
            .transpose()?;
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// How many skip states this block consumes.
    pub fn resnets(&self) -> usize {
        self.resnets.len()
    }

    /// Its resnets, in the order its forward runs them.
    pub fn resnets_mut(&mut self) -> impl Iterator<Item = &mut ResnetBlock2D> {
        self.resnets.iter_mut()
    }

    /// x `[N, prev, H, W]` and skips (consumed from the last) → `[N, Cout, 2H, 2W]`.
    pub fn forward(
        &self,
        g: &mut Graph,
        x: &Tensor,
        mut skips: Vec<Tensor>,
        times: &mut Times,
        context: &Cross,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().expect("one skip per resnet");
            let cat = g.concat(&[&x, &skip], 1)?; // [N, C + Cskip, H, W]
            x = resnet_attention(g, resnet, self.attentions.get(j), &cat, times, context)?;
        }
        if let Some(up) = &self.upsampler {
            x = up.forward(g, &x)?;
        }
        Ok(x)
    }
}
