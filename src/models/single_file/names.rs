//! diffusers' and transformers' tensor names → the original Stable Diffusion
//! layout of a single-file checkpoint, one [`NameMap`] per model. They are the
//! inverse of diffusers' `convert_ldm_unet_checkpoint`,
//! `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint` and
//! `convert_open_clip_checkpoint` (diffusers/loaders/single_file_utils.py):
//! going from the model's name to the file's lets a missing tensor be named as
//! the file would hold it.

use crate::weights::{NameMap, Part};

/// `model.diffusion_model.`: the UNet (ldm's `UNetModel`).
pub const UNET: &str = "model.diffusion_model.";
/// `first_stage_model.`: the VAE (ldm's `AutoencoderKL`).
pub const VAE: &str = "first_stage_model.";
/// `cond_stage_model.transformer.`: SD 1.x's text encoder, a transformers
/// `CLIPTextModel` as saved by transformers 4 (`text_model.*`).
pub const CLIP: &str = "cond_stage_model.transformer.";
/// `cond_stage_model.model.`: SD 2.x's text encoder, an OpenCLIP text tower.
pub const OPEN_CLIP: &str = "cond_stage_model.model.";

/// `prefix.{n}.rest` → `(n, rest)`.
fn indexed<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let (n, rest) = name.strip_prefix(prefix)?.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

/// The first path segment of `leaf` renamed by `table` (others kept).
fn rename_first(leaf: &str, table: &[(&str, &str)]) -> String {
    let (head, tail) = leaf.split_once('.').unwrap_or((leaf, ""));
    let head = table
        .iter()
        .find(|(new, _)| *new == head)
        .map_or(head, |(_, old)| old);
    match tail {
        "" => head.to_string(),
        _ => format!("{head}.{tail}"),
    }
}

/// diffusers `UNet2DConditionModel` → ldm `UNetModel`: `input_blocks`,
/// `middle_block` and `output_blocks` are numbered through all levels,
/// `layers_per_block + 1` entries per level.
pub struct UNetNames {
    pub layers_per_block: usize,
    /// Per up block: whether it has attentions (its upsampler is then the
    /// output block's third module, `.2.conv`, else its second, `.1.conv`).
    pub up_attentions: Vec<bool>,
}

/// `ResnetBlock2D` → ldm `ResBlock` (`update_unet_resnet_ldm_to_diffusers`).
const UNET_RESNET: [(&str, &str); 6] = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
];

/// Top-level layers (`DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]`).
const UNET_LAYERS: [(&str, &str); 5] = [
    ("time_embedding.linear_1.", "time_embed.0."),
    ("time_embedding.linear_2.", "time_embed.2."),
    ("conv_in.", "input_blocks.0.0."),
    ("conv_norm_out.", "out.0."),
    ("conv_out.", "out.2."),
];

impl UNetNames {
    fn name(&self, name: &str) -> Option<String> {
        for (new, old) in UNET_LAYERS {
            if let Some(rest) = name.strip_prefix(new) {
                return Some(format!("{old}{rest}"));
            }
        }
        let per = self.layers_per_block + 1;
        if let Some((b, rest)) = indexed(name, "down_blocks.") {
            return Some(
                match (indexed(rest, "resnets."), indexed(rest, "attentions.")) {
                    (Some((j, leaf)), _) => {
                        let leaf = rename_first(leaf, &UNET_RESNET);
                        format!("input_blocks.{}.0.{leaf}", 1 + b * per + j)
                    }
                    (_, Some((j, rest))) => format!("input_blocks.{}.1.{rest}", 1 + b * per + j),
                    _ => {
                        let rest = rest.strip_prefix("downsamplers.0.conv.")?;
                        format!("input_blocks.{}.0.op.{rest}", (b + 1) * per)
                    }
                },
            );
        }
        if let Some(rest) = name.strip_prefix("mid_block.") {
            return Some(
                match (indexed(rest, "resnets."), indexed(rest, "attentions.")) {
                    (Some((k, leaf)), _) => {
                        format!(
                            "middle_block.{}.{}",
                            2 * k,
                            rename_first(leaf, &UNET_RESNET)
                        )
                    }
                    (_, Some((0, rest))) => format!("middle_block.1.{rest}"),
                    _ => return None,
                },
            );
        }
        let (b, rest) = indexed(name, "up_blocks.")?;
        Some(
            match (indexed(rest, "resnets."), indexed(rest, "attentions.")) {
                (Some((j, leaf)), _) => {
                    let leaf = rename_first(leaf, &UNET_RESNET);
                    format!("output_blocks.{}.0.{leaf}", b * per + j)
                }
                (_, Some((j, rest))) => format!("output_blocks.{}.1.{rest}", b * per + j),
                _ => {
                    let rest = rest.strip_prefix("upsamplers.0.conv.")?;
                    let module = if *self.up_attentions.get(b)? { 2 } else { 1 };
                    format!("output_blocks.{}.{module}.conv.{rest}", b * per + per - 1)
                }
            },
        )
    }
}

impl NameMap for UNetNames {
    fn stored(&self, name: &str) -> Option<(String, Part)> {
        Some((self.name(name)?, Part::Whole))
    }
}

/// diffusers `AutoencoderKL` → ldm `AutoencoderKL` (`convert_ldm_vae_checkpoint`):
/// the decoder's `up` levels are numbered from the bottom, diffusers' `up_blocks`
/// from the top.
pub struct VaeNames {
    pub blocks: usize,
}

/// The mid block attention (`update_vae_attentions_ldm_to_diffusers`).
const VAE_ATTENTION: [(&str, &str); 5] = [
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out", "proj_out"),
];

impl VaeNames {
    fn name(&self, name: &str) -> Option<(String, Part)> {
        let whole = |s: String| Some((s, Part::Whole));
        let (half, rest) = name.split_once('.')?;
        if !matches!(half, "encoder" | "decoder") {
            return matches!(half, "quant_conv" | "post_quant_conv")
                .then(|| (name.into(), Part::Whole));
        }
        let resnet = |leaf: &str| rename_first(leaf, &[("conv_shortcut", "nin_shortcut")]);
        if let Some(rest) = rest.strip_prefix("conv_norm_out.") {
            return whole(format!("{half}.norm_out.{rest}"));
        }
        if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
            return whole(name.to_string());
        }
        if let Some(rest) = rest.strip_prefix("mid_block.") {
            if let Some((k, leaf)) = indexed(rest, "resnets.") {
                return whole(format!("{half}.mid.block_{}.{}", k + 1, resnet(leaf)));
            }
            let leaf = rest.strip_prefix("attentions.0.")?;
            let leaf = leaf.replace("to_out.0.", "to_out.");
            let part = match leaf.starts_with("group_norm.") || leaf.ends_with(".bias") {
                true => Part::Whole,
                // ldm's 1x1 convs [c, c, 1, 1] read as Linear [c, c] (`conv_attn_to_linear`).
                false => Part::Squeezed,
            };
            let leaf = rename_first(&leaf, &VAE_ATTENTION);
            return Some((format!("{half}.mid.attn_1.{leaf}"), part));
        }
        let (level, rest, kind) = match half {
            "encoder" => {
                let (i, rest) = indexed(rest, "down_blocks.")?;
                (i, rest, ("down", "downsamplers.0.", "downsample."))
            }
            _ => {
                let (i, rest) = indexed(rest, "up_blocks.")?;
                (
                    self.blocks.checked_sub(i + 1)?,
                    rest,
                    ("up", "upsamplers.0.", "upsample."),
                )
            }
        };
        let (dir, new_sampler, old_sampler) = kind;
        if let Some((j, leaf)) = indexed(rest, "resnets.") {
            return whole(format!("{half}.{dir}.{level}.block.{j}.{}", resnet(leaf)));
        }
        let rest = rest.strip_prefix(new_sampler)?;
        whole(format!("{half}.{dir}.{level}.{old_sampler}{rest}"))
    }
}

impl NameMap for VaeNames {
    fn stored(&self, name: &str) -> Option<(String, Part)> {
        self.name(name)
    }
}

/// transformers 5 `CLIPTextModel` → the same model as transformers 4 saved it
/// (`text_model.*`), which is what SD 1.x files hold (`convert_ldm_clip_checkpoint`).
pub struct ClipNames;

impl NameMap for ClipNames {
    fn stored(&self, name: &str) -> Option<(String, Part)> {
        Some((format!("text_model.{name}"), Part::Whole))
    }
}

/// transformers `CLIPTextModel` → OpenCLIP's text tower (`convert_open_clip_checkpoint`):
/// `resblocks`, `ln_1`/`ln_2`, `mlp.c_fc`/`c_proj`, and q, k, v as thirds of
/// one fused `in_proj`.
pub struct OpenClipNames;

const OPEN_CLIP_LAYERS: [(&str, &str); 3] = [
    (
        "embeddings.token_embedding.weight",
        "token_embedding.weight",
    ),
    (
        "embeddings.position_embedding.weight",
        "positional_embedding",
    ),
    ("final_layer_norm.", "ln_final."),
];

const OPEN_CLIP_BLOCK: [(&str, &str); 5] = [
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("self_attn.out_proj.", "attn.out_proj."),
];

impl NameMap for OpenClipNames {
    fn stored(&self, name: &str) -> Option<(String, Part)> {
        for (new, old) in OPEN_CLIP_LAYERS {
            if let Some(rest) = name.strip_prefix(new) {
                return Some((format!("{old}{rest}"), Part::Whole));
            }
        }
        let (i, rest) = indexed(name, "encoder.layers.")?;
        let block = format!("transformer.resblocks.{i}");
        for (new, old) in OPEN_CLIP_BLOCK {
            if let Some(leaf) = rest.strip_prefix(new) {
                return Some((format!("{block}.{old}{leaf}"), Part::Whole));
            }
        }
        let (proj, leaf) = rest.strip_prefix("self_attn.")?.split_once("_proj.")?;
        let index = ["q", "k", "v"].iter().position(|p| *p == proj)?;
        let part = Part::Chunk { index, count: 3 };
        Some((format!("{block}.attn.in_proj_{leaf}"), part))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unet(name: &str) -> String {
        let names = UNetNames {
            layers_per_block: 2,
            up_attentions: vec![false, true, true, true],
        };
        names.name(name).unwrap()
    }

    /// Names as SD 1.5's file and its diffusers folder spell them.
    #[test]
    fn unet_names_follow_diffusers() {
        for (new, old) in [
            ("conv_in.weight", "input_blocks.0.0.weight"),
            ("time_embedding.linear_2.bias", "time_embed.2.bias"),
            (
                "down_blocks.0.resnets.1.norm1.weight",
                "input_blocks.2.0.in_layers.0.weight",
            ),
            (
                "down_blocks.1.attentions.0.proj_in.weight",
                "input_blocks.4.1.proj_in.weight",
            ),
            (
                "down_blocks.2.downsamplers.0.conv.bias",
                "input_blocks.9.0.op.bias",
            ),
            (
                "down_blocks.1.resnets.0.conv_shortcut.weight",
                "input_blocks.4.0.skip_connection.weight",
            ),
            (
                "mid_block.resnets.1.time_emb_proj.weight",
                "middle_block.2.emb_layers.1.weight",
            ),
            (
                "mid_block.attentions.0.norm.bias",
                "middle_block.1.norm.bias",
            ),
            (
                "up_blocks.0.upsamplers.0.conv.weight",
                "output_blocks.2.1.conv.weight",
            ),
            (
                "up_blocks.1.upsamplers.0.conv.weight",
                "output_blocks.5.2.conv.weight",
            ),
            (
                "up_blocks.3.resnets.2.conv2.weight",
                "output_blocks.11.0.out_layers.3.weight",
            ),
            (
                "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight",
                "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight",
            ),
        ] {
            assert_eq!(unet(new), old, "{new}");
        }
    }

    #[test]
    fn vae_and_open_clip_names_follow_diffusers() {
        let vae = VaeNames { blocks: 4 };
        let squeezed = Part::Squeezed;
        for (new, old, part) in [
            (
                "decoder.up_blocks.0.resnets.2.conv1.weight",
                "decoder.up.3.block.2.conv1.weight",
                Part::Whole,
            ),
            (
                "decoder.up_blocks.2.upsamplers.0.conv.bias",
                "decoder.up.1.upsample.conv.bias",
                Part::Whole,
            ),
            (
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
                "encoder.down.1.block.0.nin_shortcut.weight",
                Part::Whole,
            ),
            (
                "decoder.mid_block.resnets.0.norm2.bias",
                "decoder.mid.block_1.norm2.bias",
                Part::Whole,
            ),
            (
                "decoder.mid_block.attentions.0.to_out.0.weight",
                "decoder.mid.attn_1.proj_out.weight",
                squeezed,
            ),
            (
                "decoder.mid_block.attentions.0.to_q.bias",
                "decoder.mid.attn_1.q.bias",
                Part::Whole,
            ),
            (
                "decoder.conv_norm_out.weight",
                "decoder.norm_out.weight",
                Part::Whole,
            ),
            (
                "post_quant_conv.weight",
                "post_quant_conv.weight",
                Part::Whole,
            ),
        ] {
            assert_eq!(vae.name(new), Some((old.to_string(), part)), "{new}");
        }
        let k = OpenClipNames.stored("encoder.layers.3.self_attn.k_proj.bias");
        let chunk = Part::Chunk { index: 1, count: 3 };
        assert_eq!(
            k,
            Some(("transformer.resblocks.3.attn.in_proj_bias".into(), chunk))
        );
        let fc = OpenClipNames
            .stored("encoder.layers.0.mlp.fc2.weight")
            .unwrap()
            .0;
        assert_eq!(fc, "transformer.resblocks.0.mlp.c_proj.weight");
    }
}
