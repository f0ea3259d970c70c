//! Real-ESRGAN's compact super-resolution network, `SRVGGNetCompact`
//! (basicsr/archs/srvgg_arch.py, the realesr-general-x4v3 layout): convs with
//! PReLU, a pixel shuffle, and the nearest-upsampled input added back.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::models::layers::{Conv2d, Vars};
use crate::models::Graph;

fn d_three() -> usize {
    3
}
fn d_prelu() -> String {
    "prelu".into()
}

#[derive(Clone, Debug, Deserialize)]
pub struct SRVGGNetCompactConfig {
    #[serde(default = "d_three")]
    pub num_in_ch: usize,
    #[serde(default = "d_three")]
    pub num_out_ch: usize,
    pub num_feat: usize,
    pub num_conv: usize,
    pub upscale: usize,
    #[serde(default = "d_prelu")]
    pub act_type: String,
}

pub struct SRVGGNetCompact {
    pub config: SRVGGNetCompactConfig,
    /// `body.{2i}` convs with `body.{2i+1}` PReLU slopes `[num_feat]`; the last conv has none.
    convs: Vec<(Conv2d, Option<Tensor>)>,
}

impl SRVGGNetCompact {
    pub fn new(vb: &Vars, config: SRVGGNetCompactConfig) -> Result<Self> {
        let c = &config;
        if c.act_type != "prelu" {
            return Err(Error::BadInput(format!(
                "upscaler config: `act_type` = {:?} is not supported by easel (prelu only)",
                c.act_type
            )));
        }
        let body = vb.pp("body");
        let mut convs = Vec::with_capacity(c.num_conv + 2);
        let mut cin = c.num_in_ch;
        for i in 0..=c.num_conv {
            let conv = Conv2d::new(&body.pp(2 * i), cin, c.num_feat, 3, 1, 1)?;
            let slope = body.pp(2 * i + 1).get("weight", &[c.num_feat])?;
            convs.push((conv, Some(slope)));
            cin = c.num_feat;
        }
        let out = c.num_out_ch * c.upscale * c.upscale;
        let last = Conv2d::new(&body.pp(2 * c.num_conv + 2), c.num_feat, out, 3, 1, 1)?;
        convs.push((last, None));
        Ok(Self { config, convs })
    }

    /// x `[N, 3, H, W]` in [0, 1] → `[N, 3, H·r, W·r]`.
    pub fn forward(&self, g: &mut Graph, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (conv, slope) in &self.convs {
            h = g.conv2d(&h, conv)?;
            if let Some(slope) = slope {
                h = g.prelu(&h, slope)?;
            }
        }
        let r = self.config.upscale;
        let h = g.pixel_shuffle(&h, r)?; // [N, 3, H·r, W·r]
        let base = g.upsample_nearest(x, r)?;
        g.add(&h, &base)
    }
}
