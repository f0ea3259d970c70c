//! transformers' CLIP (models/clip/modeling_clip.py): `CLIPTextModel`, the
//! text encoder the denoiser conditions on, and `CLIPModel`, the scorer (text
//! and vision towers with their projections).
//!
//! Checkpoint names: `CLIPModel` keeps `text_model.` / `vision_model.`;
//! a standalone `CLIPTextModel` has `text_model.` when written by transformers
//! 4 (and in Stable Diffusion 1.x's `text_encoder/`) and no prefix when written
//! by transformers 5. The rule: the prefix is used if every tensor has it
//! ([`Weights::detect_prefix`](crate::weights::Weights::detect_prefix)).
//! `position_ids` buffers, which older exports saved, are ignored
//! ([`IGNORED`]).

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::models::layers::{Conv2d, LayerNorm, Linear, Vars};
use crate::models::Graph;
use crate::ops::elementwise::Activation;
use crate::ops::image::{self, Normalize};
use crate::ops::{layout, resample};
use crate::weights::RowOrder;

mod tokens;

pub use tokens::TokenInputs;
use tokens::{token_embedding, TokenEmbedding};

/// Saved buffers that are not weights (transformers 4 wrote `embeddings.position_ids`).
pub const IGNORED: &[&str] = &["position_ids"];

fn d_eps() -> f64 {
    1e-5
}
fn d_quick_gelu() -> String {
    "quick_gelu".into()
}
fn d_eos() -> u32 {
    2
}
fn d_channels() -> usize {
    3
}
fn d_projection() -> usize {
    512
}

#[derive(Clone, Debug, Deserialize)]
pub struct CLIPTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "d_quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// 2 in old configs, which means "pool at argmax(input_ids)" (the highest id is EOS).
    #[serde(default = "d_eos")]
    pub eos_token_id: u32,
    #[serde(default = "d_projection")]
    pub projection_dim: usize,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CLIPVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CLIPConfig {
    pub text_config: CLIPTextConfig,
    pub vision_config: CLIPVisionConfig,
    #[serde(default = "d_projection")]
    pub projection_dim: usize,
}

fn activation(name: &str) -> Result<Activation> {
    match name {
        "quick_gelu" => Ok(Activation::QuickGelu),
        "gelu" => Ok(Activation::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
        other => Err(Error::BadInput(format!(
            "clip config: `hidden_act` = {other:?} is not supported by easel"
        ))),
    }
}

/// `CLIPImageProcessor`'s settings, as the GPU applies them.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessor {
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// `size.shortest_edge`: the short side after resizing.
    pub shortest_edge: usize,
    /// `crop_size`: the square the vision tower sees (its `image_size`).
    pub crop_size: usize,
}

impl ImageProcessor {
    /// Where `[h, w]` is cut before resizing to `crop_size`: `(top, left, side)`,
    /// the centred square that resizing the short side to `shortest_edge` and
    /// cropping `crop_size` keeps (transformers rounds the resized long side down
    /// and crops at `(long − crop) // 2`; this differs from it by under a pixel).
    pub fn crop(&self, [h, w]: [usize; 2]) -> (usize, usize, usize) {
        let short = h.min(w);
        let side = (self.crop_size * short + self.shortest_edge / 2) / self.shortest_edge;
        let side = side.clamp(1, short);
        ((h - side) / 2, (w - side) / 2, side)
    }
}

/// `CLIPAttention`: q/k/v/out projections, all with bias; q, k and v as one
/// GEMM over their stacked weights ([`Linear::stack`]).
struct CLIPAttention {
    qkv_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

/// `CLIPEncoderLayer`: pre-LN self-attention and MLP, each residual.
struct CLIPEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: CLIPAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl CLIPEncoderLayer {
    fn new(
        vb: &Vars,
        dim: usize,
        mlp: usize,
        heads: usize,
        eps: f64,
        act: Activation,
    ) -> Result<Self> {
        let attn = vb.pp("self_attn");
        Ok(Self {
            layer_norm1: LayerNorm::new(&vb.pp("layer_norm1"), dim, eps)?,
            self_attn: CLIPAttention {
                qkv_proj: Linear::stack(&attn, &["q_proj", "k_proj", "v_proj"], dim, dim, true)?,
                out_proj: Linear::new(&attn.pp("out_proj"), dim, dim, true)?,
                heads,
            },
            layer_norm2: LayerNorm::new(&vb.pp("layer_norm2"), dim, eps)?,
            fc1: Linear::new(&vb.pp("mlp").pp("fc1"), dim, mlp, true)?,
            fc2: Linear::new(&vb.pp("mlp").pp("fc2"), mlp, dim, true)?,
            act,
        })
    }

    /// x `[N, L, D]` → `[N, L, D]`.
    fn forward(&self, g: &mut Graph, x: &Tensor, causal: bool) -> Result<Tensor> {
        let a = &self.self_attn;
        // Handles are reassigned or dropped, not shadowed, so each dies when
        // it is last read (the arena reuses it).
        let mut h = g.layer_norm(x, &self.layer_norm1)?;
        let qkv = g.linear_parts(&h, &a.qkv_proj, 3)?; // q, k, v: [N, L, D] each
        let o = g.attention(&qkv[0], &qkv[1], &qkv[2], a.heads, causal)?; // [N, L, D]
        drop(qkv);
        let x = g.linear_add(&o, &a.out_proj, x)?; // residual, in out_proj's store
        drop(o);
        h = g.layer_norm(&x, &self.layer_norm2)?;
        h = g.linear_act(&h, &self.fc1, self.act)?; // [N, L, mlp], the activation in fc1's store
        g.linear_add(&h, &self.fc2, &x)
    }
}

fn encoder(
    vb: &Vars,
    layers: usize,
    dim: usize,
    mlp: usize,
    heads: usize,
    eps: f64,
    act: &str,
) -> Result<Vec<CLIPEncoderLayer>> {
    let act = activation(act)?;
    (0..layers)
        .map(|i| {
            CLIPEncoderLayer::new(
                &vb.pp("encoder").pp("layers").pp(i),
                dim,
                mlp,
                heads,
                eps,
                act,
            )
        })
        .collect()
}

/// The text tower (`CLIPTextTransformer`).
pub struct CLIPTextModel {
    pub config: CLIPTextConfig,
    token_embedding: TokenEmbedding,
    position_embedding: Tensor,
    layers: Vec<CLIPEncoderLayer>,
    final_layer_norm: LayerNorm,
}

/// What the text tower returns.
pub struct TextOutput {
    /// `[N, L, D]` after final_layer_norm: what the UNet cross-attends.
    pub last_hidden_state: Tensor,
    /// `[N, D]`: the row at each sequence's EOS token.
    pub pooler_output: Tensor,
}

impl CLIPTextModel {
    pub fn new(vb: &Vars, config: CLIPTextConfig) -> Result<Self> {
        let c = &config;
        let emb = vb.pp("embeddings");
        Ok(Self {
            // The one large table (49,408 × 768 in SD 1.x): a layer weight. The
            // position table (77 rows) stays f32 like biases.
            token_embedding: token_embedding(&emb.pp("token_embedding"), c)?,
            position_embedding: emb
                .pp("position_embedding")
                .get("weight", &[c.max_position_embeddings, c.hidden_size])?,
            layers: encoder(
                vb,
                c.num_hidden_layers,
                c.hidden_size,
                c.intermediate_size,
                c.num_attention_heads,
                c.layer_norm_eps,
                &c.hidden_act,
            )?,
            final_layer_norm: LayerNorm::new(
                &vb.pp("final_layer_norm"),
                c.hidden_size,
                c.layer_norm_eps,
            )?,
            config,
        })
    }

    /// Where each sequence pools: the first EOS, or argmax of the ids for legacy configs.
    pub fn eos_positions(&self, ids: &[Vec<u32>]) -> Vec<u32> {
        ids.iter()
            .map(|row| {
                let pos = if self.config.eos_token_id == 2 {
                    // torch.argmax returns the first maximum.
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&t| t == max)
                } else {
                    row.iter().position(|&t| t == self.config.eos_token_id)
                };
                pos.unwrap_or(row.len().saturating_sub(1)) as u32
            })
            .collect()
    }

    /// Token inputs ([`Self::inputs`]) → hidden states and pooled rows.
    pub fn forward(&self, g: &mut Graph, inputs: &TokenInputs) -> Result<TextOutput> {
        let table = match (&self.token_embedding, &inputs.rows) {
            (TokenEmbedding::Gpu(table), _) => table,
            (TokenEmbedding::Host(_), Some(rows)) => rows,
            (TokenEmbedding::Host(_), None) => {
                return Err(Error::BadInput(
                    "text encoder: inputs made for another model (no token rows)".into(),
                ))
            }
        };
        let (ids, eos) = (&inputs.ids, &inputs.eos);
        let mut x = g.token_embedding(ids, table, &self.position_embedding)?; // [N, L, D]
        for layer in &self.layers {
            x = layer.forward(g, &x, true)?;
        }
        let last_hidden_state = g.layer_norm(&x, &self.final_layer_norm)?;
        let pooler_output = g.gather_rows(&last_hidden_state, eos)?; // [N, D]
        Ok(TextOutput {
            last_hidden_state,
            pooler_output,
        })
    }
}

/// The vision tower (`CLIPVisionTransformer`).
pub struct CLIPVisionModel {
    pub config: CLIPVisionConfig,
    class_embedding: Tensor,
    patch_embedding: Conv2d,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<CLIPEncoderLayer>,
    post_layernorm: LayerNorm,
}

impl CLIPVisionModel {
    pub fn new(vb: &Vars, config: CLIPVisionConfig) -> Result<Self> {
        let c = &config;
        let d = c.hidden_size;
        let patches = (c.image_size / c.patch_size).pow(2);
        let emb = vb.pp("embeddings");
        let patch = emb.pp("patch_embedding");
        Ok(Self {
            class_embedding: emb.get("class_embedding", &[d])?,
            // The patch embedding is a stride-p conv without bias.
            patch_embedding: Conv2d {
                weight: patch.layer_weight(
                    "weight",
                    &[d, c.num_channels, c.patch_size, c.patch_size],
                    RowOrder::Stored,
                )?,
                bias: None,
                stride: c.patch_size,
                padding: 0,
            },
            position_embedding: emb
                .pp("position_embedding")
                .get("weight", &[patches + 1, d])?,
            // (sic: transformers' name)
            pre_layrnorm: LayerNorm::new(&vb.pp("pre_layrnorm"), d, c.layer_norm_eps)?,
            layers: encoder(
                vb,
                c.num_hidden_layers,
                d,
                c.intermediate_size,
                c.num_attention_heads,
                c.layer_norm_eps,
                &c.hidden_act,
            )?,
            post_layernorm: LayerNorm::new(&vb.pp("post_layernorm"), d, c.layer_norm_eps)?,
            config,
        })
    }

    /// pixels `[N, C, S, S]` (already CLIP-normalised) → pooled `[N, D]`.
    pub fn forward(&self, g: &mut Graph, pixels: &Tensor) -> Result<Tensor> {
        let s = self.config.image_size;
        crate::ops::expect_shape(
            "vision",
            "pixels",
            pixels,
            &[pixels.shape[0], self.config.num_channels, s, s],
        )?;
        let p = g.conv2d(pixels, &self.patch_embedding)?; // [N, D, S/p, S/p]
        let x = g.vision_embeddings(&p, &self.class_embedding, &self.position_embedding)?; // [N, 1+P, D]
        let mut x = g.layer_norm(&x, &self.pre_layrnorm)?;
        for layer in &self.layers {
            x = layer.forward(g, &x, false)?;
        }
        let cls = g.first_token(&x)?; // [N, D]
        g.layer_norm(&cls, &self.post_layernorm)
    }
}

/// `CLIPModel`: both towers and their projections into the shared space.
pub struct CLIPModel {
    pub text_model: CLIPTextModel,
    pub vision_model: CLIPVisionModel,
    visual_projection: Linear,
    text_projection: Linear,
    /// exp(logit_scale), read once at load.
    pub logit_scale: Tensor,
}

impl CLIPModel {
    pub fn new(vb: &Vars, config: CLIPConfig) -> Result<Self> {
        let proj = config.projection_dim;
        let (dt, dv) = (
            config.text_config.hidden_size,
            config.vision_config.hidden_size,
        );
        Ok(Self {
            text_model: CLIPTextModel::new(&vb.pp("text_model"), config.text_config)?,
            vision_model: CLIPVisionModel::new(&vb.pp("vision_model"), config.vision_config)?,
            visual_projection: Linear::new(&vb.pp("visual_projection"), dv, proj, false)?,
            text_projection: Linear::new(&vb.pp("text_projection"), dt, proj, false)?,
            logit_scale: vb.get("logit_scale", &[])?,
        })
    }

    /// Token inputs ([`CLIPTextModel::inputs`]) → text embeddings `[N, proj]`
    /// (not normalised).
    pub fn text_embeds(&self, g: &mut Graph, inputs: &TokenInputs) -> Result<Tensor> {
        let out = self.text_model.forward(g, inputs)?;
        g.linear(&out.pooler_output, &self.text_projection)
    }

    /// transformers' `CLIPImageProcessor` on the GPU, for images in [-1, 1]
    /// `[N, 3, H, W]`: to [0, 1] (clamped: the scorer rates the image a user
    /// would get), normalised by the processor's `image_mean` and `image_std`,
    /// the centred square it keeps cut out ([`ImageProcessor::crop`]) and
    /// resized bilinearly to the vision tower's `image_size` → pixels `[N, 3, S, S]`.
    pub fn preprocess(
        &self,
        g: &mut Graph,
        images: &Tensor,
        processor: &ImageProcessor,
    ) -> Result<Tensor> {
        let (n, h, w) = (images.dim(0), images.dim(-2), images.dim(-1));
        let normed = g.tensor(&[n, 3, h, w])?;
        let stats = Normalize::clip(processor.image_mean, processor.image_std);
        g.push(image::normalize(g.ctx, images, &normed, &stats)?);
        let (top, left, side) = processor.crop([h, w]);
        let mut square = normed;
        for (dim, start, len) in [(2, top, h), (3, left, w)] {
            if len == side {
                continue;
            }
            let mut shape = square.shape.clone();
            shape[dim] = side;
            let cut = g.tensor(&shape)?; // [N, 3, side, ·]
            g.push(layout::narrow(g.ctx, &square, dim, start, &cut)?);
            square = cut;
        }
        let size = self.vision_model.config.image_size;
        if side == size {
            return Ok(square);
        }
        let resized = g.tensor(&[n, 3, size, size])?;
        g.push(resample::interpolate_bilinear(g.ctx, &square, &resized)?);
        Ok(resized)
    }

    /// pixels `[N, C, S, S]` → image embeddings `[N, proj]` (not normalised).
    pub fn image_embeds(&self, g: &mut Graph, pixels: &Tensor) -> Result<Tensor> {
        let pooled = self.vision_model.forward(g, pixels)?;
        g.linear(&pooled, &self.visual_projection)
    }
}
