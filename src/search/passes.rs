//! The tensors of a run and the passes that work on them: the candidates'
//! state (sized for the largest candidate count), the text stage, and for each
//! candidate count its views of the state, its UNet pass and its scoring pass.

use crate::error::Result;
use crate::gpu::{Context, DType, Dispatch, Tensor};
use crate::memory_plan::{f16_hint, Limits, MemoryPlan};
use crate::models::arena::SharedArena;
use crate::models::clip::TokenInputs;
use crate::models::pipeline::Pipeline;
use crate::models::scorer::Scorer;
use crate::models::Graph;
use crate::ops::score::{self, CHOICE_WORDS};
use crate::ops::{layout, sampler};
use crate::request::Settings;

/// The tensors a step works on for K candidates: the whole state's (the
/// largest K), or a phase's prefix view of them.
pub(crate) struct Candidates {
    /// `[K, C, h, w]`: the current samples.
    pub(crate) x: Tensor,
    /// `[K, C, h, w]`: their predicted clean samples (and DPM-Solver's previous x0).
    pub(crate) x0: Tensor,
    pub(crate) noise: Tensor,
    pub(crate) guided: Tensor,
    /// `[(1 + P)·K, C_in, h, w]` and `[(1 + P)·K]`: the UNet's batch (`C_in`
    /// is `C`, or `2·C + 1` for a dedicated inpainting UNet).
    pub(crate) model_in: Tensor,
    pub(crate) timesteps: Tensor,
    /// `[K, P + 1]`: the last round's scores.
    pub(crate) scores: Tensor,
}

impl Candidates {
    /// The first `k` candidates' views (the bindings cover the whole buffers;
    /// kernels read only what the shapes say).
    fn prefix(&self, k: usize) -> Result<Self> {
        let mut sample = self.x.shape.clone();
        sample[0] = k;
        let mut model_in = self.model_in.shape.clone();
        model_in[0] = model_in[0] / self.x.shape[0] * k;
        Ok(Self {
            x: self.x.prefix(&sample)?,
            x0: self.x0.prefix(&sample)?,
            noise: self.noise.prefix(&sample)?,
            guided: self.guided.prefix(&sample)?,
            model_in: self.model_in.prefix(&model_in)?,
            timesteps: self.timesteps.prefix(&model_in[..1])?,
            scores: self.scores.prefix(&[k, self.scores.shape[1]])?,
        })
    }
}

/// The run's state, sized for the largest candidate count, and what every
/// step reuses.
pub(crate) struct State {
    pub(crate) cands: Candidates,
    pub(crate) table: Tensor,
    pub(crate) weights: Tensor,
    /// Winner, best score, margin, stopped-at step (u32 words).
    pub(crate) choice: Tensor,
    /// `[1]` u32: steps the GPU executed (the sampler step counts itself).
    pub(crate) steps_run: Tensor,
    /// `[1]` u32: the NaN/Inf guard's earliest failing check, or ALL_FINITE.
    pub(crate) status: Tensor,
    /// `[rounds·K, P + 1]`: every round's scores, round r at row r·K (read back
    /// once with the image, for `--json`).
    pub(crate) history: Tensor,
}

/// What one candidate count needs: its views of the state, the UNet pass over
/// its `(1 + P)·K` batch and the scoring pass over its K candidates.
pub(crate) struct Passes {
    pub(crate) cands: Candidates,
    pub(crate) unet: Vec<Dispatch>,
    pub(crate) model_out: Tensor,
    /// The candidates as the scorer sees them, `[K, 3, H, W]` in [-1, 1]: `x0`,
    /// or its VAE decoding (made by the scoring pass) for a latent model.
    pub(crate) images: Tensor,
    pub(crate) score: Vec<Dispatch>,
}

/// The inputs a run writes into a plan: the tokens of the text encoder's and
/// the scorer's prompts.
pub(crate) struct Inputs {
    pub(crate) text: TokenInputs,
    pub(crate) scorer: Option<TokenInputs>,
}

/// The text stage: the denoiser's conditioning `[1 + P, 77, D]` and the
/// scorer's text embeddings `[P, proj]` (encoded once per request), with the token tensors they read.
pub(super) struct Text<'a> {
    pub(super) graph: Graph<'a>,
    pub(super) inputs: Inputs,
    pub(super) hidden: Tensor,
    pub(super) embeds: Option<Tensor>,
}

/// The text stage: the denoiser's conditioning, the scorer's embeddings.
pub(super) fn plan_text<'a>(ctx: &'a Context, pipeline: &Pipeline, p: usize) -> Result<Text<'a>> {
    let mut graph = Graph::new(ctx, "text");
    let len = pipeline.tokenizer.model_max_length;
    let text = pipeline.text_encoder.inputs(ctx, 1 + p, len)?;
    let hidden = pipeline
        .text_encoder
        .forward(&mut graph, &text)?
        .last_hidden_state; // [1 + P, 77, D]
    let (scorer, embeds) = match &pipeline.scorer {
        Some(scorer) => {
            // The scorer's own tokenizer and context length.
            let len = scorer.tokenizer.model_max_length;
            let inputs = scorer.model.text_model.inputs(ctx, p, len)?;
            let embeds = scorer.model.text_embeds(&mut graph, &inputs)?; // [P, proj]
            (Some(inputs), Some(embeds))
        }
        None => (None, None),
    };
    Ok(Text {
        graph,
        inputs: Inputs { text, scorer },
        hidden,
        embeds,
    })
}

/// Each prompt's row of `hidden` repeated for K candidates: `[(1 + P)·K, 77, D]`,
/// in the UNet batch order.
fn repeat_context(ctx: &Context, g: &mut Graph, hidden: &Tensor, k: usize) -> Result<Tensor> {
    let (rows, l, d) = (hidden.shape[0], hidden.shape[1], hidden.shape[2]);
    let context = g.tensor(&[rows * k, l, d])?;
    for j in 0..rows {
        let index = Tensor::from_u32(ctx, "prompt index", &[1], &[j as u32])?;
        let group = g.tensor(&[k, l, d])?;
        g.push(layout::broadcast_row(ctx, hidden, &index, &group)?);
        g.push(layout::copy_into(ctx, &group, &context, 0, j * k)?);
    }
    Ok(context)
}

fn u32_tensor(ctx: &Context, label: &str, n: usize) -> Result<Tensor> {
    let mut t = Tensor::zeros(ctx, label, &[n])?;
    t.dtype = DType::U32;
    Ok(t)
}

/// The state: the candidates `shape = [K_max, C, h, w]` and what every step
/// reuses; the UNet reads `c_in` channels (`C`, or more for an inpainting UNet).
pub(super) fn state(ctx: &Context, s: &Settings, shape: [usize; 4], c_in: usize) -> Result<State> {
    let [k, c, h, w] = shape;
    let prompts = s.prompts;
    let batch = (1 + prompts) * k;
    let cands = Candidates {
        x: Tensor::zeros(ctx, "x", &shape)?,
        x0: Tensor::zeros(ctx, "x0", &shape)?,
        noise: Tensor::zeros(ctx, "noise", &shape)?,
        guided: Tensor::zeros(ctx, "guided", &shape)?,
        model_in: Tensor::zeros(ctx, "model_in", &[batch, c.max(c_in), h, w])?,
        timesteps: Tensor::zeros(ctx, "timesteps", &[batch])?,
        scores: Tensor::zeros(ctx, "scores", &[k, prompts + 1])?,
    };
    Ok(State {
        cands,
        table: sampler::upload_table(ctx, &s.table)?,
        weights: Tensor::zeros(ctx, "weights", &[prompts])?,
        choice: u32_tensor(ctx, "choice", CHOICE_WORDS)?,
        steps_run: u32_tensor(ctx, "steps run", 1)?,
        status: u32_tensor(ctx, "finite status", 1)?,
        history: Tensor::zeros(
            ctx,
            "round scores",
            &[s.rounds.len().max(1) * k, prompts + 1],
        )?,
    })
}

/// The run's memory plan: the VAE decodes every candidate each round when a
/// scorer sees them, else the winner alone.
pub(super) fn memory_plan(ctx: &Context, pipeline: &Pipeline, s: &Settings) -> Result<MemoryPlan> {
    let images = if pipeline.scorer.is_some() {
        s.k_max()
    } else {
        1
    };
    let [_, h, w] = s.sample;
    let precision = s.precision.resolve(ctx, pipeline.unet.weights_dtype())?;
    MemoryPlan::new(
        pipeline.config.vae.as_ref(),
        images,
        [h, w],
        s.vae_tiles,
        &Limits::of(ctx, precision),
    )
}

/// The views, UNet pass and scoring pass for K candidates, decoding latents
/// in the `memory` plan's tiles and running the UNet and decoder in its
/// precision, their activations in the run's `arena`. The context broadcast
/// and its cross-attention projections go into the text stage (run once per run).
pub(super) fn plan_passes(
    ctx: &Context,
    pipeline: &Pipeline,
    (text, arena): (&mut Text, &SharedArena),
    st: &State,
    k: usize,
    memory: &MemoryPlan,
) -> Result<Passes> {
    let cands = st.cands.prefix(k)?;
    let hidden = repeat_context(ctx, &mut text.graph, &text.hidden, k)?;
    // The cross-attention keys and values, like the text, are the same every
    // step: the text stage projects them once, in the UNet's precision.
    text.graph.set_precision(memory.precision);
    let context = pipeline.unet.project_context(&mut text.graph, &hidden)?;
    let mut unet = Graph::in_arena(ctx, "unet", arena);
    unet.set_precision(memory.precision);
    let model_out = pipeline
        .unet
        .forward(&mut unet, &cands.model_in, &cands.timesteps, &context)
        .map_err(|e| e.advise(&too_large_run(ctx, "the UNet", k, memory)))?;
    let mut passes = Passes {
        images: cands.x0.clone(),
        cands,
        unet: unet.dispatches,
        model_out,
        score: Vec::new(),
    };
    if let (Some(scorer), Some(embeds)) = (&pipeline.scorer, &text.embeds) {
        let pass = "the scoring pass (which decodes every candidate)";
        let help = too_large_run(ctx, pass, k, memory);
        passes.score = plan_score(
            ctx,
            (pipeline, memory),
            scorer,
            (embeds, arena),
            st,
            &mut passes,
        )
        .map_err(|e| e.advise(&help))?;
    }
    Ok(passes)
}

/// What to change when a pass's activation at `k` candidates does not fit.
fn too_large_run(ctx: &Context, pass: &str, k: usize, memory: &MemoryPlan) -> String {
    let hint = f16_hint(ctx, memory.precision);
    format!(
        "an activation of {pass} at {k} candidate(s): a smaller --size or fewer --candidates \
         needs less{hint}"
    )
}

/// The scoring pass: every candidate's image, its CLIP embedding, its scores.
fn plan_score(
    ctx: &Context,
    (pipeline, memory): (&Pipeline, &MemoryPlan),
    scorer: &Scorer,
    (embeds, arena): (&Tensor, &SharedArena),
    st: &State,
    passes: &mut Passes,
) -> Result<Vec<Dispatch>> {
    let mut g = Graph::in_arena(ctx, "scorer", arena);
    g.set_precision(memory.precision);
    let x0 = passes.cands.x0.clone();
    passes.images = pipeline.to_image(&mut g, x0, memory.vae_tiling)?;
    let model = &scorer.model;
    let pixels = model.preprocess(&mut g, &passes.images, &scorer.processor)?; // [K, 3, S, S]
    let image_embeds = model.image_embeds(&mut g, &pixels)?; // [K, proj]
    let scores = &passes.cands.scores;
    for d in score::similarity(ctx, &image_embeds, embeds, &st.weights, scores)? {
        g.push(d);
    }
    Ok(g.dispatches)
}
