//! A single-file checkpoint's configs, inferred from its tensors' shapes as
//! diffusers' `create_unet_diffusers_config_from_ldm` and
//! `create_vae_diffusers_config_from_ldm` read them from the original yaml:
//! channels, levels, layers, attention, cross-attention width and linear or
//! conv `proj_in` from the shapes; what no shape holds from the Stable Diffusion
//! release the layout belongs to (v1-inference.yaml, v2-inference-v.yaml):
//! 32 norm groups, 8 heads (1.x) or 64 channels per head (2.x), the VAE's
//! scaling factor 0.18215, CLIP ViT-L/14's or OpenCLIP ViT-H's text settings.

use serde_json::{json, Value};

use super::names::{UNetNames, CLIP, OPEN_CLIP, UNET, VAE};
use super::Version;
use crate::error::{Error, Result};
use crate::models::unet_2d_condition::{PerBlock, UNet2DConditionConfig};
use crate::weights::SafetensorsFile;

/// The tensors of one file under one prefix, read by shape.
pub struct Shapes<'a> {
    pub file: &'a SafetensorsFile,
    pub prefix: &'a str,
}

impl Shapes<'_> {
    /// The shape of `prefix + name`, or an error naming the tensor it needs.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let full = format!("{}{name}", self.prefix);
        self.file.info(&full).map(|i| i.shape).ok_or_else(|| {
            Error::model(
                &self.file.path,
                format!("no tensor `{full}`: cannot infer the model's configuration without it"),
            )
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.info(&format!("{}{name}", self.prefix)).is_some()
    }

    /// How many `{stem}{n}.` entries there are (1 + the largest `n`; 0 for none).
    pub fn count(&self, stem: &str) -> usize {
        let stem = format!("{}{stem}", self.prefix);
        let index = |name: &str| -> Option<usize> {
            name.strip_prefix(&stem)?.split('.').next()?.parse().ok()
        };
        let names = self.file.names();
        names
            .iter()
            .filter_map(|n| index(n))
            .max()
            .map_or(0, |n| n + 1)
    }

    fn dim(&self, name: &str, axis: usize) -> Result<usize> {
        let shape = self.shape(name)?;
        shape.get(axis).copied().ok_or_else(|| {
            let full = format!("{}{name}", self.prefix);
            Error::model(
                &self.file.path,
                format!("tensor `{full}` {shape:?}: no axis {axis}"),
            )
        })
    }
}

/// diffusers' `UNet2DConditionModel` config of the file's `model.diffusion_model.*`.
pub fn unet(file: &SafetensorsFile, version: Version, v_prediction: bool) -> Result<Value> {
    let s = Shapes { file, prefix: UNET };
    let in_channels = s.dim("input_blocks.0.0.weight", 1)?;
    // `input_blocks.{k}.0.op` is the downsampler that ends level k / (layers + 1) - 1.
    let first_op =
        (1..s.count("input_blocks.")).find(|k| s.has(&format!("input_blocks.{k}.0.op.weight")));
    let inputs = s.count("input_blocks.");
    let layers = first_op.map_or(inputs.saturating_sub(1), |k| k - 1);
    let per = layers + 1;
    let levels = (inputs.saturating_sub(1)).div_ceil(per.max(1)).max(1);
    let mut channels = Vec::new();
    let (mut down, mut up) = (Vec::new(), Vec::new());
    for b in 0..levels {
        channels.push(s.dim(
            &format!("input_blocks.{}.0.out_layers.3.weight", 1 + b * per),
            0,
        )?);
        let attn = s.has(&format!("input_blocks.{}.1.norm.weight", 1 + b * per));
        down.push(if attn {
            "CrossAttnDownBlock2D"
        } else {
            "DownBlock2D"
        });
        let attn = s.has(&format!("output_blocks.{}.1.norm.weight", b * per));
        up.push(if attn {
            "CrossAttnUpBlock2D"
        } else {
            "UpBlock2D"
        });
    }
    let attention = file
        .names()
        .into_iter()
        .find(|n| n.starts_with(UNET) && n.ends_with(".1.proj_in.weight"))
        .ok_or_else(|| Error::model(&file.path, "no attention in `model.diffusion_model.*`"))?;
    let block = attention[UNET.len()..].trim_end_matches("proj_in.weight");
    let linear = s.shape(&format!("{block}proj_in.weight"))?.len() == 2;
    let context = s.dim(&format!("{block}transformer_blocks.0.attn2.to_k.weight"), 1)?;
    let depth = s.count(&format!("{block}transformer_blocks."));
    let heads: Value = match version {
        // v1-inference.yaml: num_heads 8.
        Version::V1 => json!(8),
        // v2-inference*.yaml: num_head_channels 64, so heads grow with the channels.
        Version::V2 => channels.iter().map(|c| c / 64).collect(),
    };
    Ok(json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": sample_size(version, v_prediction, levels_of_vae(file)),
        "in_channels": in_channels,
        "out_channels": s.dim("out.2.weight", 0)?,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": channels,
        "layers_per_block": layers,
        "cross_attention_dim": context,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "transformer_layers_per_block": depth,
        "upcast_attention": version == Version::V2 && v_prediction,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
    }))
}

/// The name map of a UNet config: levels and which up blocks have attentions.
pub fn unet_names(config: &UNet2DConditionConfig) -> UNetNames {
    UNetNames {
        // ldm's UNetModel has one `num_res_blocks` for every level.
        layers_per_block: match &config.layers_per_block {
            PerBlock::One(n) => *n,
            PerBlock::Each(n) => n.first().copied().unwrap_or(0),
        },
        up_attentions: config
            .up_block_types
            .iter()
            .map(|t| t.starts_with("CrossAttn"))
            .collect(),
    }
}

/// Default sample: 512 pixels (768 for SD 2.x v-prediction, as diffusers'
/// `DIFFUSERS_TO_LDM_DEFAULT_IMAGE_SIZE_MAP`), over the VAE's factor.
fn sample_size(version: Version, v_prediction: bool, vae_levels: usize) -> usize {
    let pixels = if version == Version::V2 && v_prediction {
        768
    } else {
        512
    };
    pixels >> vae_levels.saturating_sub(1)
}

fn levels_of_vae(file: &SafetensorsFile) -> usize {
    Shapes { file, prefix: VAE }.count("decoder.up.")
}

/// diffusers' `AutoencoderKL` config of the file's `first_stage_model.*`.
pub fn vae(file: &SafetensorsFile) -> Result<Value> {
    let s = Shapes { file, prefix: VAE };
    let levels = s.count("decoder.up.");
    let channels = (0..levels)
        .map(|i| s.dim(&format!("decoder.up.{i}.block.0.conv2.weight"), 0))
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "_class_name": "AutoencoderKL",
        "in_channels": if s.has("encoder.conv_in.weight") { s.dim("encoder.conv_in.weight", 1)? } else { 3 },
        "out_channels": s.dim("decoder.conv_out.weight", 0)?,
        "latent_channels": s.dim("decoder.conv_in.weight", 1)?,
        "block_out_channels": channels,
        "down_block_types": vec!["DownEncoderBlock2D"; levels],
        "up_block_types": vec!["UpDecoderBlock2D"; levels],
        // The decoder's levels hold one more resnet than the encoder's.
        "layers_per_block": s.count("decoder.up.0.block.").saturating_sub(1),
        "scaling_factor": 0.18215,
        "use_post_quant_conv": s.has("post_quant_conv.weight"),
        "use_quant_conv": s.has("quant_conv.weight"),
        "mid_block_add_attention": s.has("decoder.mid.attn_1.q.weight"),
    }))
}

/// transformers' `CLIPTextConfig` of the file's text encoder: CLIP ViT-L/14's
/// (SD 1.x) or OpenCLIP ViT-H/14's less its last block (SD 2.x conditions on
/// the penultimate layer; diffusers' `SD_2_TEXT_ENCODER_KEYS_TO_IGNORE`).
pub fn text_encoder(file: &SafetensorsFile, version: Version) -> Result<Value> {
    let (s, table, act, layers, fc1) = match version {
        Version::V1 => {
            let s = Shapes { file, prefix: CLIP };
            let layers = s.count("text_model.encoder.layers.");
            let table = "text_model.embeddings.token_embedding.weight";
            (
                s,
                table,
                "quick_gelu",
                layers,
                "text_model.encoder.layers.0.mlp.fc1.weight",
            )
        }
        Version::V2 => {
            let s = Shapes {
                file,
                prefix: OPEN_CLIP,
            };
            let layers = s.count("transformer.resblocks.").saturating_sub(1);
            (
                s,
                "token_embedding.weight",
                "gelu",
                layers,
                "transformer.resblocks.0.mlp.c_fc.weight",
            )
        }
    };
    let position = match version {
        Version::V1 => "text_model.embeddings.position_embedding.weight",
        Version::V2 => "positional_embedding",
    };
    let hidden = s.dim(table, 1)?;
    Ok(json!({
        "vocab_size": s.dim(table, 0)?,
        "hidden_size": hidden,
        "intermediate_size": s.dim(fc1, 0)?,
        "num_hidden_layers": layers,
        // 64 channels per head in both (ViT-L/14: 768 / 12, ViT-H/14: 1024 / 16).
        "num_attention_heads": (hidden / 64).max(1),
        "max_position_embeddings": s.dim(position, 0)?,
        "hidden_act": act,
        "projection_dim": hidden,
    }))
}

/// The scheduler Stable Diffusion 1.x/2.x folders ship (diffusers'
/// `SCHEDULER_DEFAULT_CONFIG`, a PNDM config easel samples with DDIM).
pub fn scheduler(v_prediction: bool) -> Value {
    json!({
        "_class_name": "PNDMScheduler",
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "num_train_timesteps": 1000,
        "prediction_type": if v_prediction { "v_prediction" } else { "epsilon" },
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "timestep_spacing": "leading",
    })
}
