//! diffusers' `ResnetBlock2D` (models/resnet.py), `Downsample2D` and
//! `Upsample2D` (models/downsampling.py, upsampling.py), with the default
//! time-embedding norm ("default": added after conv1).

use crate::error::Result;
use crate::gpu::Tensor;
use crate::models::layers::{Conv2d, GroupNorm, Linear, Vars};
use crate::models::Graph;
use crate::ops::conv2d::Conv2dOptions;

pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    /// Absent in the VAE, whose blocks have no time embedding; in a UNet, here
    /// until the model takes it to run all of them at once
    /// ([`ResnetBlock2D::take_time_emb_proj`], `models::time_projections`).
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f32,
}

impl ResnetBlock2D {
    pub fn new(
        vb: &Vars,
        cin: usize,
        cout: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
        output_scale_factor: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(&vb.pp("norm1"), groups, cin, eps)?,
            conv1: Conv2d::new(&vb.pp("conv1"), cin, cout, 3, 1, 1)?,
            time_emb_proj: match temb {
                Some(t) => Some(Linear::new(&vb.pp("time_emb_proj"), t, cout, true)?),
                None => None,
            },
            norm2: GroupNorm::new(&vb.pp("norm2"), groups, cout, eps)?,
            conv2: Conv2d::new(&vb.pp("conv2"), cout, cout, 3, 1, 1)?,
            // use_in_shortcut defaults to in != out; the shortcut is a 1x1 conv.
            conv_shortcut: if cin != cout {
                Some(Conv2d::new(&vb.pp("conv_shortcut"), cin, cout, 1, 1, 0)?)
            } else {
                None
            },
            output_scale_factor: output_scale_factor as f32,
        })
    }

    /// Its time projection, `time_emb_proj(SiLU(temb))`, left for the caller
    /// to run and pass to [`ResnetBlock2D::forward`].
    pub fn take_time_emb_proj(&mut self) -> Option<Linear> {
        self.time_emb_proj.take()
    }

    /// x `[N, Cin, H, W]`, `time` = `time_emb_proj(SiLU(temb))` `[N, Cout]` (in
    /// a UNet; None in the VAE) → `[N, Cout, H, W]`.
    ///
    /// `h` is reassigned, not shadowed, so each intermediate is dropped as soon
    /// as the next is made: the arena reuses a buffer once no handle names it
    /// (`models::arena`), and a shadowed handle would live to the end of the
    /// block (the VAE's last blocks hold 33 MB tensors at 256x256 in f16).
    pub fn forward(&self, g: &mut Graph, x: &Tensor, time: Option<&Tensor>) -> Result<Tensor> {
        let mut h = g.group_norm(x, &self.norm1, true)?;
        h = match time {
            Some(t) => {
                let t = t.reshape(&[t.shape[0], t.shape[1], 1, 1])?;
                // conv1(h) + t, the add in conv1's store.
                g.conv2d_add(&h, &self.conv1, &t, 1.0)?
            }
            None => g.conv2d(&h, &self.conv1)?, // [N, Cout, H, W]
        };
        h = g.group_norm(&h, &self.norm2, true)?;
        // dropout: inference only
        let shortcut = match &self.conv_shortcut {
            Some(conv) => g.conv2d(x, conv)?,
            None => x.clone(),
        };
        // (shortcut + conv2(h)) / output_scale_factor, the add in conv2's store.
        g.conv2d_add(&h, &self.conv2, &shortcut, 1.0 / self.output_scale_factor)
    }
}

/// `Downsample2D(use_conv=True)`: a 3x3 stride-2 conv named `conv`. With
/// `padding` 0 (the VAE encoder's), diffusers first pads one zero row and
/// column after the input (`F.pad(x, (0, 1, 0, 1))`), so even sizes halve.
pub struct Downsample2D {
    conv: Conv2d,
    opts: Conv2dOptions,
}

impl Downsample2D {
    pub fn new(vb: &Vars, channels: usize, padding: usize) -> Result<Self> {
        let mut opts = Conv2dOptions::new(2, padding);
        if padding == 0 {
            opts.pad_end = (1, 1);
        }
        Ok(Self {
            conv: Conv2d::new(&vb.pp("conv"), channels, channels, 3, 2, padding)?,
            opts,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: &Tensor) -> Result<Tensor> {
        g.conv2d_with(x, &self.conv, &self.opts) // [N, C, H/2, W/2]
    }
}

/// `Upsample2D(use_conv=True)`: nearest ×2, then a 3x3 conv named `conv`.
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(vb: &Vars, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(&vb.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: &Tensor) -> Result<Tensor> {
        g.upsample_conv2d(x, 2, &self.conv) // [N, C, 2H, 2W]
    }
}
