//! Low-rank patches (LoRA modules) on layer weights: registered by name before
//! a model is built, checked against the tensor's shape then, and merged on the
//! GPU (`ops::lora`) as [`Weights::get_weight`] uploads the weight, in the
//! weight's own precision. A patch no layer took is an error
//! ([`Weights::check_patches_applied`]), never a silent no-op.

use std::path::PathBuf;

use super::{RowOrder, Weights};
use crate::error::{Error, Result};
use crate::gpu::{Context, Tensor};

/// `W += scale · up @ down` for one layer weight `W` (`[out, ...]`, seen as `[out, K]`).
#[derive(Clone, Debug)]
pub struct Patch {
    /// The file and the tensor it came from, for messages.
    pub file: PathBuf,
    pub source: String,
    /// `[out, rank]`, row-major.
    pub up: Vec<f32>,
    /// `[rank, K]`, row-major.
    pub down: Vec<f32>,
    pub rank: usize,
    pub scale: f32,
}

impl Weights {
    /// Register `patch` for the layer weight `name`, whose shape it must fit
    /// (`up` `[out, rank]`, `down` `[rank, K]` with K = the weight's elements per row).
    pub fn add_patch(&mut self, name: &str, patch: Patch) -> Result<()> {
        let info = self.info(name)?;
        let out = info.shape.first().copied().unwrap_or(0);
        let k = info.numel() / out.max(1);
        if patch.up.len() != out * patch.rank || patch.down.len() != patch.rank * k {
            return Err(Error::model(
                &patch.file,
                format!(
                    "`{}`: up [{}, {r}] @ down [{r}, {}] does not fit `{name}` of shape {:?} \
                     (a LoRA for another model?)",
                    patch.source,
                    patch.up.len() / patch.rank.max(1),
                    patch.down.len() / patch.rank.max(1),
                    info.shape,
                    r = patch.rank
                ),
            ));
        }
        let full = self.full_name(name);
        self.patches.entry(full).or_default().push(patch);
        Ok(())
    }

    /// Merge the patches registered for `full` into `tensor`, whose rows are in
    /// `order` (so `up`'s rows are put in it too), on the GPU.
    pub(super) fn apply_patches(
        &self,
        ctx: &Context,
        full: &str,
        tensor: &Tensor,
        order: RowOrder,
    ) -> Result<()> {
        let Some(patches) = self.patches.get(full) else {
            return Ok(());
        };
        for patch in patches {
            let out = tensor.shape[0];
            let k = tensor.numel() / out;
            let up = order.apply(&patch.up, out);
            let up = Tensor::from_f32(ctx, &patch.source, &[out, patch.rank], &up)?;
            let down = Tensor::from_f32(ctx, &patch.source, &[patch.rank, k], &patch.down)?;
            let merge = crate::ops::lora::merge(ctx, tensor, &up, &down, patch.scale)?;
            crate::gpu::dispatch::run(ctx, &merge)?;
        }
        self.patched
            .lock()
            .expect("patched set")
            .insert(full.to_string());
        Ok(())
    }

    /// After a model is built: every registered patch was merged into a layer
    /// weight the model read, or the first one that was not is an error.
    pub fn check_patches_applied(&self) -> Result<()> {
        let patched = self.patched.lock().expect("patched set");
        match self
            .patches
            .iter()
            .find(|(name, _)| !patched.contains(*name))
        {
            None => Ok(()),
            Some((name, patches)) => Err(Error::model(
                &patches[0].file,
                format!(
                    "`{}` targets `{name}`, which the model does not read as a layer weight",
                    patches[0].source
                ),
            )),
        }
    }
}
