//! Real-ESRGAN's compact super-resolution network, `SRVGGNetCompact`
//! (basicsr/archs/srvgg_arch.py, the realesr-general-x4v3 layout): convs with
//! PReLU, a pixel shuffle, and the nearest-upsampled input added back.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::models::layers::{Conv2d, Vars};
use crate::models::Graph;
use crate::weights::SafetensorsFile;

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

/// The configuration of a bare `.safetensors` file in Real-ESRGAN's layout
/// (`realesr-general-x4v3` converted from its `.pth`: `body.{i}.weight`/`.bias`
/// with no config.json), read from its tensors' shapes as basicsr's own loader
/// would need it given: `body.0.weight` `[num_feat, num_in_ch, 3, 3]`, a PReLU
/// `body.{2i+1}.weight` `[num_feat]` after every conv but the last, and the last
/// conv's `[num_out_ch·upscale², num_feat, 3, 3]` (num_out_ch = 3: RGB).
pub fn infer_config(file: &SafetensorsFile) -> Result<SRVGGNetCompactConfig> {
    let bad = |message: String| Error::model(&file.path, message);
    let shape = |name: &str| file.info(name).map(|t| t.shape);
    let Some([num_feat, num_in_ch, 3, 3]) = shape("body.0.weight")
        .as_deref()
        .map(|s| <[usize; 4]>::try_from(s).unwrap_or_default())
    else {
        return Err(bad(
            "not an SRVGGNetCompact (Real-ESRGAN compact) checkpoint: no 3x3 conv `body.0.weight`"
                .into(),
        ));
    };
    // Convs at body.0, body.2, ...; the last is the one without a PReLU after it.
    let mut convs = 1;
    while shape(&format!("body.{}.weight", 2 * convs - 1)).is_some() {
        convs += 1;
    }
    let last = shape(&format!("body.{}.weight", 2 * (convs - 1))).ok_or_else(|| {
        bad(format!(
            "`body.{}.weight`: missing (the last conv)",
            2 * (convs - 1)
        ))
    })?;
    let out = last.first().copied().unwrap_or(0);
    let upscale = (1..=16).find(|r| 3 * r * r == out).ok_or_else(|| {
        bad(format!(
            "the last conv makes {out} channels: not 3·upscale² for an upscale of 1 to 16"
        ))
    })?;
    if convs < 2 {
        return Err(bad("fewer than two convs: not an SRVGGNetCompact".into()));
    }
    Ok(SRVGGNetCompactConfig {
        num_in_ch,
        num_out_ch: 3,
        num_feat,
        num_conv: convs - 2,
        upscale,
        act_type: "prelu".into(),
    })
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
