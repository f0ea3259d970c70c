//! What a component's `config.json` may say. Every field that sizes or divides
//! something is checked as the file is read ([`CheckedConfig`], called by
//! [`component_config`](super::layers::component_config)), so a 0 where a model
//! divides (heads, groups, patches), a count no checkpoint could hold, or a list
//! that does not match its neighbours is an error naming the file and the field:
//! never a panic, or an allocation the size of the number, while the model is built.
//!
//! The bounds are far above any published checkpoint (Stable Diffusion's widest
//! layer is 5,120, its deepest stack 24 layers) and low enough that every shape a
//! model builds from them is a product that fits in `u64`.

use std::ops::RangeInclusive;

use crate::models::clip::{CLIPConfig, CLIPTextConfig, CLIPVisionConfig};
use crate::models::layers::CheckedConfig;
use crate::models::unet_2d_condition::{PerBlock, UNet2DConditionConfig};
use crate::models::upscaler::SRVGGNetCompactConfig;
use crate::models::vae::AutoencoderKLConfig;

/// Channels, hidden sizes, vocabulary and position counts.
pub const WIDTHS: RangeInclusive<usize> = 1..=1 << 20;
/// Layers in a stack, resnets in a block.
pub const LAYERS: RangeInclusive<usize> = 0..=1024;
/// Resolution levels of a UNet or VAE: each halves the size, 2^15 at most.
pub const LEVELS: RangeInclusive<usize> = 1..=16;
/// A model's native image or sample side in pixels.
pub const SIDES: RangeInclusive<usize> = 1..=1 << 16;

/// `field` must lie in `range`.
fn within(field: &str, value: usize, range: RangeInclusive<usize>) -> Result<(), String> {
    match range.contains(&value) {
        true => Ok(()),
        false => Err(format!(
            "`{field}` {value}: must be from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// `divisor` (at least 1) must divide `value`.
fn divides(divisor: (&str, usize), value: (&str, usize)) -> Result<(), String> {
    within(divisor.0, divisor.1, WIDTHS)?;
    match value.1 % divisor.1 {
        0 => Ok(()),
        _ => Err(format!(
            "`{}` {} does not divide `{}` {}",
            divisor.0, divisor.1, value.0, value.1
        )),
    }
}

/// `field` must be exactly `want` (an image has 3 channels), saying why.
fn exactly(field: &str, value: usize, want: usize, why: &str) -> Result<(), String> {
    match value == want {
        true => Ok(()),
        false => Err(format!("`{field}` {value}: must be {want} ({why})")),
    }
}

/// One value per resolution level, each in `range`.
fn per_block(
    field: &str,
    value: &PerBlock<usize>,
    blocks: usize,
    range: RangeInclusive<usize>,
) -> Result<Vec<usize>, String> {
    let values = match value {
        PerBlock::One(v) => vec![*v; blocks],
        PerBlock::Each(v) if v.len() == blocks => v.clone(),
        PerBlock::Each(v) => {
            return Err(format!(
                "`{field}` has {} entries for {blocks} blocks",
                v.len()
            ))
        }
    };
    for (i, &v) in values.iter().enumerate() {
        within(&format!("{field}[{i}]"), v, range.clone())?;
    }
    Ok(values)
}

/// A list of channels, one per resolution level, each a width that `groups` divides.
fn levels(field: &str, channels: &[usize], groups: usize) -> Result<(), String> {
    within(&format!("{field} (entries)"), channels.len(), LEVELS)?;
    for (i, &c) in channels.iter().enumerate() {
        let name = format!("{field}[{i}]");
        within(&name, c, WIDTHS)?;
        divides(("norm_num_groups", groups), (&name, c))?;
    }
    Ok(())
}

/// An odd kernel side, so `k / 2` padding keeps the size.
fn kernel(field: &str, k: usize) -> Result<(), String> {
    within(field, k, 1..=31)?;
    match k % 2 {
        1 => Ok(()),
        _ => Err(format!(
            "`{field}` {k}: must be odd (padding k/2 keeps the size)"
        )),
    }
}

impl CheckedConfig for UNet2DConditionConfig {
    fn check(&self) -> Result<(), String> {
        let channels = &self.block_out_channels;
        levels("block_out_channels", channels, self.norm_num_groups)?;
        let blocks = channels.len();
        if self.down_block_types.len() != blocks || self.up_block_types.len() != blocks {
            return Err(format!(
                "`down_block_types` ({}) and `up_block_types` ({}) need one entry per \
                 `block_out_channels` ({blocks})",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        for (field, value) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("cross_attention_dim", self.cross_attention_dim),
        ] {
            within(field, value, WIDTHS)?;
        }
        if let Some(t) = self.time_embedding_dim {
            within("time_embedding_dim", t, WIDTHS)?;
        }
        kernel("conv_in_kernel", self.conv_in_kernel)?;
        kernel("conv_out_kernel", self.conv_out_kernel)?;
        within("downsample_padding", self.downsample_padding, 0..=1)?;
        per_block("layers_per_block", &self.layers_per_block, blocks, 1..=1024)?;
        let transformers = &self.transformer_layers_per_block;
        per_block(
            "transformer_layers_per_block",
            transformers,
            blocks,
            1..=1024,
        )?;
        self.check_heads()?;
        self.check_sizes()
    }
}

impl UNet2DConditionConfig {
    /// Heads (`num_attention_heads`, or the legacy `attention_head_dim`) divide
    /// the channels of every level that has attention: head size = channels / heads.
    fn check_heads(&self) -> Result<(), String> {
        let channels = &self.block_out_channels;
        let blocks = channels.len();
        let (field, value) = match &self.num_attention_heads {
            Some(h) => ("num_attention_heads", h),
            None => ("attention_head_dim", &self.attention_head_dim),
        };
        let heads = per_block(field, value, blocks, WIDTHS)?;
        let cross = |kind: &String| kind.starts_with("CrossAttn");
        for (i, (&c, &h)) in channels.iter().zip(&heads).enumerate() {
            let mirrored = &self.up_block_types[blocks - 1 - i];
            let mid = i + 1 == blocks && self.mid_block_type.is_some();
            if cross(&self.down_block_types[i]) || cross(mirrored) || mid {
                divides(
                    (&format!("{field}[{i}]"), h),
                    (&format!("block_out_channels[{i}]"), c),
                )?;
            }
        }
        Ok(())
    }

    /// `sample_size` (the default size) is one the UNet can halve at every
    /// level; the timestep embedding's divisor `C0/2 - freq_shift` is not 0.
    fn check_sizes(&self) -> Result<(), String> {
        if let Some(side) = self.sample_size {
            within("sample_size", side, SIDES)?;
            let factor = self.downscale_factor();
            if side % factor != 0 {
                return Err(format!(
                    "`sample_size` {side}: must be a multiple of {factor} (the UNet halves it {} times)",
                    factor.trailing_zeros()
                ));
            }
        }
        let half = (self.block_out_channels[0] / 2) as f64;
        if !self.freq_shift.is_finite() || (half > 0.0 && half == self.freq_shift) {
            return Err(format!(
                "`freq_shift` {}: the timestep embedding divides by block_out_channels[0] / 2 - freq_shift",
                self.freq_shift
            ));
        }
        Ok(())
    }
}

/// A CLIP tower's sizes `[hidden_size, intermediate_size, num_hidden_layers]`:
/// heads divide the hidden size; `prefix` names the sub-config (`text_config.`
/// in a `CLIPModel`).
fn transformer(
    prefix: &str,
    [hidden, mlp, layers]: [usize; 3],
    heads: usize,
) -> Result<(), String> {
    within(&format!("{prefix}hidden_size"), hidden, WIDTHS)?;
    within(&format!("{prefix}intermediate_size"), mlp, WIDTHS)?;
    within(&format!("{prefix}num_hidden_layers"), layers, LAYERS)?;
    divides(
        (&format!("{prefix}num_attention_heads"), heads),
        (&format!("{prefix}hidden_size"), hidden),
    )
}

fn text_tower(c: &CLIPTextConfig, prefix: &str) -> Result<(), String> {
    let sizes = [c.hidden_size, c.intermediate_size, c.num_hidden_layers];
    transformer(prefix, sizes, c.num_attention_heads)?;
    within(&format!("{prefix}vocab_size"), c.vocab_size, WIDTHS)?;
    let positions = c.max_position_embeddings;
    within(
        &format!("{prefix}max_position_embeddings"),
        positions,
        WIDTHS,
    )?;
    within(&format!("{prefix}projection_dim"), c.projection_dim, WIDTHS)
}

fn vision_tower(c: &CLIPVisionConfig, prefix: &str) -> Result<(), String> {
    let sizes = [c.hidden_size, c.intermediate_size, c.num_hidden_layers];
    transformer(prefix, sizes, c.num_attention_heads)?;
    within(&format!("{prefix}image_size"), c.image_size, SIDES)?;
    // A stride-p convolution cuts the image into (image_size / p)² patches.
    within(
        &format!("{prefix}patch_size"),
        c.patch_size,
        1..=c.image_size,
    )?;
    let why = "the scorer is given RGB images";
    exactly(&format!("{prefix}num_channels"), c.num_channels, 3, why)
}

impl CheckedConfig for CLIPTextConfig {
    fn check(&self) -> Result<(), String> {
        text_tower(self, "")
    }
}

impl CheckedConfig for CLIPConfig {
    fn check(&self) -> Result<(), String> {
        text_tower(&self.text_config, "text_config.")?;
        vision_tower(&self.vision_config, "vision_config.")?;
        within("projection_dim", self.projection_dim, WIDTHS)
    }
}

impl CheckedConfig for AutoencoderKLConfig {
    fn check(&self) -> Result<(), String> {
        let channels = &self.block_out_channels;
        levels("block_out_channels", channels, self.norm_num_groups)?;
        if self.up_block_types.len() != channels.len() {
            return Err(format!(
                "`up_block_types` ({}) needs one entry per `block_out_channels` ({})",
                self.up_block_types.len(),
                channels.len()
            ));
        }
        within("latent_channels", self.latent_channels, WIDTHS)?;
        exactly(
            "out_channels",
            self.out_channels,
            3,
            "easel makes RGB images",
        )?;
        within("layers_per_block", self.layers_per_block, LAYERS)?;
        // Latents are divided by it.
        let scaling = self.scaling_factor;
        if !scaling.is_finite() || scaling == 0.0 {
            return Err(format!(
                "`scaling_factor` {scaling}: must be a finite number other than 0 (latents are divided by it)"
            ));
        }
        Ok(())
    }
}

impl CheckedConfig for SRVGGNetCompactConfig {
    fn check(&self) -> Result<(), String> {
        exactly("num_in_ch", self.num_in_ch, 3, "it upscales RGB images")?;
        exactly("num_out_ch", self.num_out_ch, 3, "it upscales RGB images")?;
        within("num_feat", self.num_feat, WIDTHS)?;
        within("num_conv", self.num_conv, LAYERS)?;
        // The pixel shuffle's factor: the last conv makes num_out_ch · upscale² channels.
        within("upscale", self.upscale, 1..=16)
    }
}
