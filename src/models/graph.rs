//! The [`Graph`] that records a forward pass as dispatches.
//!
//! A model's `forward` reads like its PyTorch original: each call allocates the
//! output tensor and appends the kernel launch to the graph. Building the graph
//! is the plan (done once per model, batch and size); running it only encodes
//! the recorded dispatches, so a forward pass allocates nothing.

use crate::error::Result;
use crate::gpu::{Context, DType, Dispatch, Tensor};
use crate::models::arena::{lock, Arena, SharedArena};
use crate::models::layers::{Conv2d, GroupNorm, LayerNorm, Linear};
use crate::ops::attention::{self, Sdpa};
use crate::ops::cast;
use crate::ops::conv2d::{self, Conv2dOptions};
use crate::ops::elementwise::{self, Activation, BinaryOp};
use crate::ops::embedding::{self, Timesteps};
use crate::ops::layout;
use crate::ops::matmul::{self, MatmulOptions};
use crate::ops::norm;
use crate::ops::resample;

/// A forward pass being recorded: the dispatches in order and the tensors they
/// write, which an [`Arena`] places in buffers reused by liveness.
pub struct Graph<'a> {
    pub ctx: &'a Context,
    pub dispatches: Vec<Dispatch>,
    label: &'static str,
    arena: SharedArena,
    /// This graph's id in its arena.
    id: u32,
    /// The dtype of the activations ops allocate now: f32, or f16 inside a
    /// model forward run [`Graph::in_precision`].
    act: DType,
    /// What [`Graph::in_precision`] runs a model in (`--precision`).
    precision: DType,
}

impl<'a> Graph<'a> {
    /// A graph with an arena of its own.
    pub fn new(ctx: &'a Context, label: &'static str) -> Self {
        Self::in_arena(ctx, label, &Arena::shared(ctx))
    }

    /// A graph whose activations share `arena` with other graphs that never run
    /// at the same time as it (see [`crate::models::arena`]).
    pub fn in_arena(ctx: &'a Context, label: &'static str, arena: &SharedArena) -> Self {
        let id = lock(arena).join();
        Self {
            ctx,
            dispatches: Vec::new(),
            label,
            arena: arena.clone(),
            id,
            act: DType::F32,
            precision: DType::F32,
        }
    }

    /// Run the models that support it ([`Graph::in_precision`]) with
    /// activations of `dtype` (F32 or F16).
    pub fn set_precision(&mut self, dtype: DType) {
        self.precision = dtype;
    }

    /// A model's forward `f` with its activations in the graph's precision:
    /// `inputs` cast to it on entry (handed to `f` in order), the output
    /// widened to f32 on exit, so what the rest of a run reads (sampler,
    /// scorer, images) stays f32 whatever the precision. At f32 it is `f`.
    pub fn in_precision(
        &mut self,
        inputs: &[&Tensor],
        f: impl FnOnce(&mut Self, &[Tensor]) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let out = self.with_precision(inputs, f)?;
        self.to_dtype(&out, DType::F32)
    }

    /// [`Self::in_precision`] with what `f` returns left in the precision:
    /// values a model's forward reads later in it (the UNet's cross-attention
    /// keys and values, projected once per run).
    pub fn with_precision<R>(
        &mut self,
        inputs: &[&Tensor],
        f: impl FnOnce(&mut Self, &[Tensor]) -> Result<R>,
    ) -> Result<R> {
        let outer = std::mem::replace(&mut self.act, self.precision);
        let out = self.cast_all(inputs).and_then(|xs| f(self, &xs));
        self.act = outer;
        out
    }

    fn cast_all(&mut self, xs: &[&Tensor]) -> Result<Vec<Tensor>> {
        xs.iter().map(|x| self.to_dtype(x, self.act)).collect()
    }

    /// `x` as `dtype`: itself when it already is, else cast into a new tensor.
    pub fn to_dtype(&mut self, x: &Tensor, dtype: DType) -> Result<Tensor> {
        if x.dtype == dtype {
            return Ok(x.clone());
        }
        let out = self.tensor_of(&x.shape, dtype)?;
        let d = cast::cast(self.ctx, x, &out)?;
        self.push(d);
        Ok(out)
    }

    /// An activation tensor, planned now and reused by every run of the graph:
    /// its buffer may be one whose values are dead (see [`Arena`]), so the op
    /// that writes it must write all of it.
    pub fn tensor(&mut self, shape: &[usize]) -> Result<Tensor> {
        self.tensor_of(shape, self.act)
    }

    /// The dtype [`Graph::tensor`] allocates now.
    pub fn activation_dtype(&self) -> DType {
        self.act
    }

    /// [`Graph::tensor`] of a given dtype (an f32 output of a kernel that has
    /// no f16 form, inside an f16 forward).
    pub fn tensor_of(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        lock(&self.arena).tensor(self.ctx, self.label, shape, dtype)
    }

    /// Record a dispatch: it runs after every one recorded before it.
    pub fn push(&mut self, dispatch: Dispatch) {
        lock(&self.arena).record(&dispatch, self.id);
        self.dispatches.push(dispatch);
    }

    /// Record dispatches in order.
    pub fn extend(&mut self, dispatches: impl IntoIterator<Item = Dispatch>) {
        dispatches.into_iter().for_each(|d| self.push(d));
    }

    /// Make the arena's buffers at their final sizes: a finished plan holds
    /// them from now (else each is made when first bound; see [`Arena`]).
    pub fn make_buffers(&self) {
        lock(&self.arena).make_buffers();
    }

    /// Bytes of the activation buffers of the graph's arena (shared or its own).
    pub fn activation_bytes(&self) -> u64 {
        lock(&self.arena).bytes()
    }

    /// The most activation bytes alive at once in the graph's arena: the least
    /// any placement of its activations could hold.
    pub fn live_activation_bytes(&self) -> u64 {
        lock(&self.arena).live_peak_bytes()
    }

    /// Run the recorded pass once and wait (tests, one-off work).
    pub fn run(&self) -> Result<()> {
        crate::gpu::dispatch::run(self.ctx, &self.dispatches)
    }
}

/// The ops a model's forward pass calls: each allocates its output and records
/// one or more dispatches. Shapes follow PyTorch's for the same call.
impl Graph<'_> {
    /// `nn.Linear` over the last dim: x `[.., in]` → `[.., out]`, one GEMM with
    /// every leading dim folded into M.
    pub fn linear(&mut self, x: &Tensor, layer: &Linear) -> Result<Tensor> {
        self.linear_with(x, layer, None, &MatmulOptions::linear())
    }

    /// `layer(x) + residual` in one kernel (the add in the GEMM's store:
    /// [`matmul::Epilogue`]), the transformer blocks' `attn(x) + x`.
    pub fn linear_add(&mut self, x: &Tensor, layer: &Linear, residual: &Tensor) -> Result<Tensor> {
        self.linear_with(x, layer, Some(residual), &MatmulOptions::linear())
    }

    /// `layer(x)` as `opts` store it, into a new activation: `[.., out]`, or
    /// `[.., out / 2]` with GEGLU.
    fn linear_with(
        &mut self,
        x: &Tensor,
        layer: &Linear,
        residual: Option<&Tensor>,
        opts: &MatmulOptions,
    ) -> Result<Tensor> {
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("linear input has a last dim") =
            layer.out_features() / opts.columns_per_output();
        let out = self.tensor(&shape)?;
        self.linear_into_with(x, layer, residual, &out, opts)?;
        Ok(out)
    }

    /// `out = layer(x) (+ residual)`, written into `out` (a row view of a larger
    /// output, for ops that run in row chunks).
    pub fn linear_into(
        &mut self,
        x: &Tensor,
        layer: &Linear,
        residual: Option<&Tensor>,
        out: &Tensor,
    ) -> Result<()> {
        self.linear_into_with(x, layer, residual, out, &MatmulOptions::linear())
    }

    /// `act(layer(x))`, the activation in the layer's store.
    pub fn linear_act(&mut self, x: &Tensor, layer: &Linear, act: Activation) -> Result<Tensor> {
        let opts = MatmulOptions {
            activation: act,
            ..MatmulOptions::linear()
        };
        self.linear_with(x, layer, None, &opts)
    }

    /// diffusers' `GEGLU`, `hidden · gelu(gate)` of `layer(x)`'s two halves, in
    /// the projection's store: x `[.., in]` → `[.., out / 2]`. `layer` is loaded
    /// with its rows interleaved ([`RowOrder::HalvesInterleaved`]).
    pub fn linear_geglu(&mut self, x: &Tensor, layer: &Linear) -> Result<Tensor> {
        self.linear_with(x, layer, None, &MatmulOptions::linear_geglu())
    }

    fn linear_into_with(
        &mut self,
        x: &Tensor,
        layer: &Linear,
        residual: Option<&Tensor>,
        out: &Tensor,
        opts: &MatmulOptions,
    ) -> Result<()> {
        layer.expect_rows(opts.geglu)?;
        let din = x.dim(-1);
        let rows = x.numel() / din.max(1);
        let flat = [rows, out.numel() / rows.max(1)];
        let residual = residual.map(|r| r.reshape(&flat)).transpose()?;
        let epilogue = matmul::Epilogue {
            bias: layer.bias.as_ref(),
            residual: residual.as_ref().map(|r| (r, 1.0)),
        };
        let ds = matmul::linear_with(
            self.ctx,
            &x.reshape(&[rows, din])?,
            &layer.weight,
            epilogue,
            &out.reshape(&flat)?,
            opts,
        )?;
        self.extend(ds);
        Ok(())
    }

    /// `x * scale + bias`.
    pub fn scale(&mut self, x: &Tensor, scale: f32, bias: f32) -> Result<Tensor> {
        self.unary(x, Activation::Identity, scale, bias)
    }

    fn unary(&mut self, x: &Tensor, act: Activation, scale: f32, bias: f32) -> Result<Tensor> {
        let out = self.tensor(&x.shape)?;
        let d = elementwise::unary(self.ctx, x, &out, act, scale, bias)?;
        self.push(d);
        Ok(out)
    }

    /// `a + b` with `b` broadcast to `a`'s shape.
    pub fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.binary(a, b, BinaryOp::Add, 1.0)
    }

    /// `(a + b) * scale` (diffusers' residual `/ output_scale_factor`).
    pub fn add_scaled(&mut self, a: &Tensor, b: &Tensor, scale: f32) -> Result<Tensor> {
        self.binary(a, b, BinaryOp::Add, scale)
    }

    /// nn.PReLU: x `[N, C, H, W]`, per-channel slope `[C]`.
    pub fn prelu(&mut self, x: &Tensor, slope: &Tensor) -> Result<Tensor> {
        let c = slope.numel();
        self.binary(x, &slope.reshape(&[c, 1, 1])?, BinaryOp::Prelu, 1.0)
    }

    fn binary(&mut self, a: &Tensor, b: &Tensor, op: BinaryOp, scale: f32) -> Result<Tensor> {
        let out = self.tensor(&a.shape)?;
        let d = elementwise::binary(self.ctx, a, b, &out, op, scale)?;
        self.push(d);
        Ok(out)
    }

    /// `nn.Conv2d`: x `[N, Cin, H, W]` → `[N, Cout, Hout, Wout]`.
    pub fn conv2d(&mut self, x: &Tensor, layer: &Conv2d) -> Result<Tensor> {
        self.conv2d_with(x, layer, &Conv2dOptions::new(layer.stride, layer.padding))
    }

    /// `layer(F.interpolate(x, scale_factor=factor, mode="nearest"))` in one
    /// kernel (diffusers' `Upsample2D`): the conv reads x through the
    /// upsampling, so the upsampled tensor never exists.
    pub fn upsample_conv2d(&mut self, x: &Tensor, factor: usize, layer: &Conv2d) -> Result<Tensor> {
        let opts = Conv2dOptions {
            upsample: factor,
            ..Conv2dOptions::new(layer.stride, layer.padding)
        };
        self.conv2d_with(x, layer, &opts)
    }

    /// `(layer(x) + residual) · scale` in one kernel ([`matmul::Epilogue`]):
    /// ResnetBlock2D's `(shortcut + conv2(h)) / output_scale_factor`.
    pub fn conv2d_add(
        &mut self,
        x: &Tensor,
        layer: &Conv2d,
        residual: &Tensor,
        scale: f32,
    ) -> Result<Tensor> {
        let opts = Conv2dOptions::new(layer.stride, layer.padding);
        self.conv2d_epilogue(x, layer, &opts, Some((residual, scale)))
    }

    /// [`Self::conv2d`] with options other than the layer's stride and padding.
    pub fn conv2d_with(
        &mut self,
        x: &Tensor,
        layer: &Conv2d,
        opts: &Conv2dOptions,
    ) -> Result<Tensor> {
        self.conv2d_epilogue(x, layer, opts, None)
    }

    fn conv2d_epilogue(
        &mut self,
        x: &Tensor,
        layer: &Conv2d,
        opts: &Conv2dOptions,
        residual: Option<(&Tensor, f32)>,
    ) -> Result<Tensor> {
        let (kh, kw) = (layer.weight.dim(-2), layer.weight.dim(-1));
        let (h, w) = (x.dim(-2) * opts.upsample, x.dim(-1) * opts.upsample);
        let (hout, wout) = conv2d::output_size(h, w, kh, kw, opts).ok_or_else(|| {
            crate::Error::BadInput(format!(
                "conv2d: input {:?} is smaller than the {kh}x{kw} kernel",
                x.shape
            ))
        })?;
        let out = self.tensor(&[x.shape[0], layer.out_channels(), hout, wout])?;
        let epilogue = matmul::Epilogue {
            bias: layer.bias.as_ref(),
            residual,
        };
        let ds = conv2d::conv2d_split_with(self.ctx, x, &layer.weight, epilogue, &out, opts)?;
        self.extend(ds);
        Ok(out)
    }

    /// `nn.GroupNorm`, optionally followed by SiLU (fused).
    pub fn group_norm(&mut self, x: &Tensor, layer: &GroupNorm, silu: bool) -> Result<Tensor> {
        let out = self.tensor(&x.shape)?;
        let cfg = norm::GroupNorm {
            num_groups: layer.groups,
            eps: layer.eps,
            silu,
        };
        let (weight, bias, ctx) = (&layer.weight, &layer.bias, self.ctx);
        let chunks = norm::group_norm_chunks(ctx.class, ctx.split_norms, &x.shape, layer.groups);
        if chunks == 1 {
            let d = norm::group_norm(ctx, x, weight, bias, &out, cfg)?;
            self.push(d);
        } else {
            let moments = self.tensor_of(&[2 * x.shape[0] * layer.groups * chunks], DType::F32)?;
            let ds = norm::group_norm_split(ctx, x, weight, bias, &moments, &out, cfg, chunks)?;
            self.extend(ds);
        }
        Ok(out)
    }

    /// `nn.LayerNorm` over the last dim.
    pub fn layer_norm(&mut self, x: &Tensor, layer: &LayerNorm) -> Result<Tensor> {
        let out = self.tensor(&x.shape)?;
        let d = norm::layer_norm(self.ctx, x, &layer.weight, &layer.bias, &out, layer.eps)?;
        self.push(d);
        Ok(out)
    }

    /// Multi-head attention on `[N, L, H*Dh]` projections → `[N, Lq, H*Dh]`.
    pub fn attention(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
        is_causal: bool,
    ) -> Result<Tensor> {
        let out = self.tensor(&q.shape)?;
        let cfg = Sdpa {
            heads,
            scale: None,
            is_causal,
        };
        let d = attention::scaled_dot_product_attention(self.ctx, q, k, v, &out, cfg)?;
        self.push(d);
        Ok(out)
    }

    /// diffusers' `time_proj`: timesteps `[N]` → `[N, num_channels]`.
    pub fn timestep_embedding(
        &mut self,
        t: &Tensor,
        config: &Timesteps,
        frequencies: &Tensor,
    ) -> Result<Tensor> {
        let out = self.tensor_of(&[t.numel(), config.num_channels], DType::F32)?;
        let d = embedding::timestep_embedding(self.ctx, config, frequencies, t, &out)?;
        self.push(d);
        self.to_dtype(&out, self.act)
    }

    /// CLIP text input: ids `[N, L]` (u32) → token + position embeddings `[N, L, D]`.
    pub fn token_embedding(
        &mut self,
        ids: &Tensor,
        token: &Tensor,
        position: &Tensor,
    ) -> Result<Tensor> {
        let out = self.tensor_of(&[ids.shape[0], ids.dim(-1), token.dim(-1)], DType::F32)?;
        let ds = embedding::clip_text_embeddings(self.ctx, ids, token, position, &out)?;
        self.extend(ds);
        self.to_dtype(&out, self.act)
    }

    /// CLIP vision input: patch embeddings `[N, D, gh, gw]` → `[N, 1 + gh·gw, D]`
    /// with the class token first and positions added.
    pub fn vision_embeddings(
        &mut self,
        patches: &Tensor,
        class: &Tensor,
        position: &Tensor,
    ) -> Result<Tensor> {
        let tokens = patches.dim(-1) * patches.dim(-2);
        let out = self.tensor(&[patches.shape[0], 1 + tokens, patches.shape[1]])?;
        let d = embedding::clip_vision_embeddings(self.ctx, patches, class, position, &out)?;
        self.push(d);
        Ok(out)
    }

    /// `F.interpolate(x, scale_factor=factor, mode="nearest")`.
    pub fn upsample_nearest(&mut self, x: &Tensor, factor: usize) -> Result<Tensor> {
        let [n, c, h, w] = nchw(x)?;
        let out = self.tensor(&[n, c, h * factor, w * factor])?;
        let d = resample::upsample_nearest2d(self.ctx, x, &out, factor)?;
        self.push(d);
        Ok(out)
    }

    /// `nn.PixelShuffle(r)`: `[N, C·r², H, W]` → `[N, C, H·r, W·r]`.
    pub fn pixel_shuffle(&mut self, x: &Tensor, r: usize) -> Result<Tensor> {
        let [n, c, h, w] = nchw(x)?;
        let out = self.tensor(&[n, c / (r * r), h * r, w * r])?;
        let d = resample::pixel_shuffle(self.ctx, x, &out, r)?;
        self.push(d);
        Ok(out)
    }

    /// `torch.cat(xs, dim)`.
    pub fn concat(&mut self, xs: &[&Tensor], dim: usize) -> Result<Tensor> {
        let mut shape = xs[0].shape.clone();
        shape[dim] = xs.iter().map(|x| x.shape[dim]).sum();
        let out = self.tensor(&shape)?;
        for d in layout::concat(self.ctx, xs, dim, &out)? {
            self.push(d);
        }
        Ok(out)
    }

    /// `x[b, index[b], :]`: x `[N, L, D]`, index `[N]` (u32) → `[N, D]`.
    pub fn gather_rows(&mut self, x: &Tensor, index: &Tensor) -> Result<Tensor> {
        let out = self.tensor(&[x.shape[0], x.dim(-1)])?;
        let d = layout::select_rows(self.ctx, x, index, &out)?;
        self.push(d);
        Ok(out)
    }

    /// `x[:, 0, :]`: x `[N, L, D]` → `[N, D]`.
    pub fn first_token(&mut self, x: &Tensor) -> Result<Tensor> {
        let (n, d) = (x.shape[0], x.dim(-1));
        let out = self.tensor(&[n, 1, d])?;
        let dispatch = layout::narrow(self.ctx, x, 1, 0, &out)?;
        self.push(dispatch);
        out.reshape(&[n, d])
    }

    /// `F.normalize(x, dim=-1)`.
    pub fn l2_normalize(&mut self, x: &Tensor) -> Result<Tensor> {
        let out = self.tensor(&x.shape)?;
        let d = norm::l2_normalize(self.ctx, x, &out)?;
        self.push(d);
        Ok(out)
    }
}

pub(crate) fn nchw(x: &Tensor) -> Result<[usize; 4]> {
    x.shape[..].try_into().map_err(|_| {
        crate::Error::BadInput(format!("expected an NCHW tensor, got shape {:?}", x.shape))
    })
}
