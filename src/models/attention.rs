//! diffusers' `Transformer2DModel` (continuous input) with
//! `BasicTransformerBlock`s: self-attention, cross-attention to the text, and
//! a GEGLU feed-forward (models/transformers/transformer_2d.py, attention.py).

use std::cell::Cell;

use crate::error::{Error, Result};
use crate::gpu::tensor::row_step;
use crate::gpu::Tensor;
use crate::models::layers::{Conv2d, GroupNorm, LayerNorm, Linear, Vars};
use crate::models::Graph;
use crate::weights::RowOrder;

/// diffusers `Attention` without norms: to_q/to_k/to_v (no bias in UNets),
/// to_out.0. The projections of one input run as one GEMM over their stacked
/// weights ([`Linear::stack`]): q, k and v for self-attention; k and v of the
/// text for cross-attention.
pub struct Attention {
    projections: Projections,
    to_out: Linear,
    heads: usize,
}

enum Projections {
    /// to_q, to_k, to_v stacked: `[3·inner, dim]`.
    SelfQkv(Linear),
    /// to_q of the queries; to_k and to_v of the context, stacked.
    Cross { to_q: Linear, to_kv: Linear },
}

impl Attention {
    /// Tokens of `dim` features attending each other; `qkv_bias` is diffusers'
    /// `bias` (false in UNets, true in the VAE).
    pub fn self_attention(
        vb: &Vars,
        dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let qkv = Linear::stack(vb, &["to_q", "to_k", "to_v"], dim, inner, qkv_bias)?;
        Self::with(vb, Projections::SelfQkv(qkv), inner, dim, heads)
    }

    /// Tokens of `query_dim` features attending a context of `kv_dim`.
    pub fn cross_attention(
        vb: &Vars,
        query_dim: usize,
        kv_dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let projections = Projections::Cross {
            to_q: Linear::new(&vb.pp("to_q"), query_dim, inner, qkv_bias)?,
            to_kv: Linear::stack(vb, &["to_k", "to_v"], kv_dim, inner, qkv_bias)?,
        };
        Self::with(vb, projections, inner, query_dim, heads)
    }

    fn with(
        vb: &Vars,
        projections: Projections,
        inner: usize,
        query_dim: usize,
        heads: usize,
    ) -> Result<Self> {
        Ok(Self {
            projections,
            to_out: Linear::new(&vb.pp("to_out").pp(0), inner, query_dim, true)?,
            heads,
        })
    }

    /// `attn(x) + residual` over x `[N, L, D]` (self-attention), the add in
    /// to_out's store (to_out.1 is dropout: inference only).
    fn forward_self_add(&self, g: &mut Graph, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let [q, k, v] = parts(g.linear_parts(x, self.self_qkv()?, 3)?);
        let o = g.attention(&q, &k, &v, self.heads, false)?;
        g.linear_add(&o, &self.to_out, residual)
    }

    /// `attn(x, context) + residual` attending keys and values already
    /// projected ([`Self::key_value`]).
    fn forward_kv_add(
        &self,
        g: &mut Graph,
        x: &Tensor,
        (k, v): &KeyValue,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let Projections::Cross { to_q, .. } = &self.projections else {
            return Err(Error::BadInput(
                "attention: a self-attention given keys".into(),
            ));
        };
        let q = g.linear(x, to_q)?; // [N, L, H*Dh]
        let o = g.attention(&q, k, v, self.heads, false)?;
        g.linear_add(&o, &self.to_out, residual)
    }

    /// Self-attention over the pixels of NCHW `x`, written NCHW plus
    /// `residual` (the VAE mid-block's), with no permutes: the projections
    /// read and write NCHW themselves ([`Graph::linear_parts_from_nchw`]).
    pub fn forward_nchw_add(&self, g: &mut Graph, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let [q, k, v] = parts(g.linear_parts_from_nchw(x, self.self_qkv()?, 3)?); // [N, hw, H*Dh]
        let o = g.attention(&q, &k, &v, self.heads, false)?;
        g.linear_to_nchw_add(&o, &self.to_out, residual)
    }

    /// The keys and values of `context` `[N, S, Dkv]`: `[N, S, H*Dh]` each.
    fn key_value(&self, g: &mut Graph, context: &Tensor) -> Result<KeyValue> {
        let Projections::Cross { to_kv, .. } = &self.projections else {
            return Err(Error::BadInput(
                "attention: a self-attention has no context".into(),
            ));
        };
        let [k, v] = parts(g.linear_parts(context, to_kv, 2)?);
        Ok((k, v))
    }

    fn self_qkv(&self) -> Result<&Linear> {
        match &self.projections {
            Projections::SelfQkv(qkv) => Ok(qkv),
            Projections::Cross { .. } => Err(Error::BadInput(
                "attention: a cross-attention run without its context".into(),
            )),
        }
    }
}

/// The N parts of a stacked projection (`Graph::linear_parts` makes as many
/// as asked).
fn parts<const N: usize>(parts: Vec<Tensor>) -> [Tensor; N] {
    parts.try_into().expect("as many parts as asked for")
}

/// `FeedForward(dim, activation_fn="geglu")`: net.0.proj → GEGLU → net.2.
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(vb: &Vars, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: Linear::with_rows(
                &vb.pp("net").pp(0).pp("proj"),
                dim,
                2 * inner,
                true,
                RowOrder::HalvesInterleaved,
            )?,
            out: Linear::new(&vb.pp("net").pp(2), inner, dim, true)?,
        })
    }

    /// `ff(x) + residual`: GEGLU in net.0.proj's store, the add in net.2's.
    /// Rows are independent, so where the `[rows, inner]` intermediate would
    /// exceed the context's chunk size (SD-1.5 at 1024x1024: 168 MB at batch 2)
    /// the rows run in chunks written into one output: the same values, bound
    /// within every adapter's limits, and a fraction of the intermediate's memory.
    fn forward_add(&self, g: &mut Graph, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let dim = x.dim(-1);
        let rows = x.numel() / dim.max(1);
        let chunk = self.chunk_rows(g, dim);
        if chunk >= rows {
            let h = g.linear_geglu(x, &self.proj)?; // hidden * gelu(gate): [N, L, inner]
            return g.linear_add(&h, &self.out, residual);
        }
        let (x, r) = (x.reshape(&[rows, dim])?, residual.reshape(&[rows, dim])?);
        let out = g.tensor(&[rows, dim])?;
        for start in (0..rows).step_by(chunk) {
            let n = chunk.min(rows - start);
            let h = g.linear_geglu(&x.rows(start, n)?, &self.proj)?; // [n, inner]
            g.linear_into(
                &h,
                &self.out,
                Some(&r.rows(start, n)?),
                &out.rows(start, n)?,
            )?;
        }
        out.reshape(&residual.shape)
    }

    /// Rows per chunk: as many as keep `[rows, inner]` within the chunk size,
    /// a multiple of the rows between offsets the adapter can bind.
    fn chunk_rows(&self, g: &Graph, dim: usize) -> usize {
        let inner = self.proj.out_features() / 2;
        let rows = g.ctx.activation_chunk_bytes() / (inner * 4) as u64;
        let step = row_step(g.ctx, dim as u64 * 4);
        (rows / step * step).max(step) as usize
    }
}

/// `BasicTransformerBlock` with layer norms (norm_type="layer_norm").
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(vb: &Vars, dim: usize, heads: usize, cross_attention_dim: usize) -> Result<Self> {
        let head_dim = dim / heads;
        Ok(Self {
            norm1: LayerNorm::new(&vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::self_attention(&vb.pp("attn1"), dim, heads, head_dim, false)?,
            norm2: LayerNorm::new(&vb.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::cross_attention(
                &vb.pp("attn2"),
                dim,
                cross_attention_dim,
                heads,
                head_dim,
                false,
            )?,
            norm3: LayerNorm::new(&vb.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::new(&vb.pp("ff"), dim)?,
        })
    }

    /// x `[N, HW, C]` attending `context` → `[N, HW, C]`. Handles are
    /// reassigned, not shadowed, so each dies when replaced (the arena reuses it).
    fn forward(&self, g: &mut Graph, x: &Tensor, context: &Cross) -> Result<Tensor> {
        let mut h = g.layer_norm(x, &self.norm1)?;
        let mut x = self.attn1.forward_self_add(g, &h, x)?;
        h = g.layer_norm(&x, &self.norm2)?;
        let kv = context.key_value(g, &self.attn2)?;
        x = self.attn2.forward_kv_add(g, &h, &kv, &x)?;
        h = g.layer_norm(&x, &self.norm3)?;
        self.ff.forward_add(g, &h, &x)
    }
}

/// `proj_in`/`proj_out`: linears (`use_linear_projection`), or 1x1 convs
/// (SD 1.x), which are the same per-pixel layer: their weight `[C', C, 1, 1]`
/// is the linear's `[C', C]`. Either runs between NCHW and tokens in one GEMM.
fn projection(vb: &Vars, cin: usize, cout: usize, linear: bool) -> Result<Linear> {
    if linear {
        return Linear::new(vb, cin, cout, true);
    }
    let conv = Conv2d::new(vb, cin, cout, 1, 1, 0)?;
    Ok(Linear {
        weight: conv.weight.reshape(&[cout, cin])?,
        bias: conv.bias,
        rows: RowOrder::Stored,
    })
}

pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Linear,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Linear,
}

impl Transformer2DModel {
    pub fn new(
        vb: &Vars,
        channels: usize,
        heads: usize,
        layers: usize,
        cross_attention_dim: usize,
        groups: usize,
        use_linear_projection: bool,
    ) -> Result<Self> {
        let blocks = (0..layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    &vb.pp("transformer_blocks").pp(i),
                    channels,
                    heads,
                    cross_attention_dim,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            // Transformer2DModel's GroupNorm uses eps 1e-6, not the UNet's norm_eps.
            norm: GroupNorm::new(&vb.pp("norm"), groups, channels, 1e-6)?,
            proj_in: projection(&vb.pp("proj_in"), channels, channels, use_linear_projection)?,
            transformer_blocks: blocks,
            proj_out: projection(
                &vb.pp("proj_out"),
                channels,
                channels,
                use_linear_projection,
            )?,
        })
    }

    /// Its blocks' cross-attention keys and values of `hidden` `[N, S, cross]`,
    /// appended to `out` in the order [`Self::forward`] reaches them.
    pub fn project(&self, g: &mut Graph, hidden: &Tensor, out: &mut Vec<KeyValue>) -> Result<()> {
        for block in &self.transformer_blocks {
            out.push(block.attn2.key_value(g, hidden)?);
        }
        Ok(())
    }

    /// x `[N, C, H, W]` attending `context` → `[N, C, H, W]`.
    pub fn forward(&self, g: &mut Graph, x: &Tensor, context: &Cross) -> Result<Tensor> {
        // `normed` dies here, before the blocks run.
        let normed = g.group_norm(x, &self.norm, false)?;
        let mut tokens = g.linear_from_nchw(&normed, &self.proj_in)?; // [N, HW, C]
        drop(normed);
        for block in &self.transformer_blocks {
            tokens = block.forward(g, &tokens, context)?;
        }
        g.linear_to_nchw_add(&tokens, &self.proj_out, x) // residual, in proj_out's store
    }
}

/// One cross-attention block's keys and values: `[N, S, H*Dh]` each.
pub type KeyValue = (Tensor, Tensor);

/// What a UNet's cross-attention attends (`encoder_hidden_states`): the text's
/// hidden states `[N, S, cross]`, which each block projects to keys and values
/// as it runs, or those keys and values projected once for every block
/// (`UNet2DConditionModel::project_context`), in the order the forward pass
/// reaches the blocks: the text does not change between steps, so a run
/// projects it once instead of once per step.
pub enum CrossContext {
    Hidden(Tensor),
    Projected(Vec<KeyValue>),
}

/// A [`CrossContext`] as one forward pass reads it: the projected keys and
/// values are taken in order, one block at a time.
pub struct Cross<'a> {
    context: &'a CrossContext,
    next: Cell<usize>,
}

impl<'a> Cross<'a> {
    pub fn new(context: &'a CrossContext) -> Self {
        Self {
            context,
            next: Cell::new(0),
        }
    }

    /// The keys and values `attn` attends: projected now, or the next ones.
    fn key_value(&self, g: &mut Graph, attn: &Attention) -> Result<KeyValue> {
        let projected = match self.context {
            CrossContext::Hidden(hidden) => return attn.key_value(g, hidden),
            CrossContext::Projected(projected) => projected,
        };
        let i = self.next.replace(self.next.get() + 1);
        projected.get(i).cloned().ok_or_else(|| {
            Error::BadInput(format!(
                "unet: {} projected cross-attention contexts for more blocks",
                projected.len()
            ))
        })
    }
}
