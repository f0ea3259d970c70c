//! The text tower's input: token ids, and where the token table's rows come
//! from (a GPU lookup, or rows gathered on the host for a large table).

use crate::error::{Error, Result};
use crate::gpu::{Context, DType, Tensor};
use crate::models::clip::{CLIPTextConfig, CLIPTextModel};
use crate::models::layers::Vars;
use crate::weights::HostWeight;

/// CLIP's token table: on the GPU, where a kernel gathers a run's rows, or
/// in host memory when large ([`Context::table_on_host`]: SD's 49,408 rows,
/// 76 MB of an adapter's memory in f16), where a run's rows are gathered
/// before they are uploaded. The same values reach the encoder either way.
pub(super) enum TokenEmbedding {
    Gpu(Tensor),
    Host(HostWeight),
}

/// A text tower's inputs on the GPU for `n` sequences of `len` tokens
/// ([`CLIPTextModel::inputs`]), written before each run
/// ([`CLIPTextModel::write_inputs`]).
pub struct TokenInputs {
    /// `[n, len]` u32: the token ids; with a host table, the rows of `rows`
    /// in order (written once).
    pub(super) ids: Tensor,
    /// `[n]` u32: where each sequence pools.
    pub(super) eos: Tensor,
    /// `[n·len, D]`: the ids' rows of a host table, in its precision.
    pub(super) rows: Option<Tensor>,
}

impl CLIPTextModel {
    /// The GPU inputs for `n` sequences of `len` tokens (ids and EOS
    /// positions, and a host table's gathered rows), to be written by
    /// [`Self::write_inputs`].
    pub fn inputs(&self, ctx: &Context, n: usize, len: usize) -> Result<TokenInputs> {
        if len > self.config.max_position_embeddings {
            return Err(Error::BadInput(format!(
                "text encoder: {len} tokens exceed max_position_embeddings = {}",
                self.config.max_position_embeddings
            )));
        }
        let u32s =
            |label, shape: &[usize], values: &[u32]| Tensor::from_u32(ctx, label, shape, values);
        let eos = u32s("eos", &[n], &vec![0; n])?;
        let (rows, ids) = match &self.token_embedding {
            TokenEmbedding::Gpu(_) => (None, vec![0; n * len]),
            TokenEmbedding::Host(table) => {
                let shape = [n * len, self.config.hidden_size];
                let rows = match table {
                    HostWeight::F16(_) => Tensor::from_f16(
                        ctx,
                        "token rows",
                        &shape,
                        &vec![half::f16::ZERO; n * len * shape[1]],
                    )?,
                    HostWeight::F32(_) => Tensor::zeros(ctx, "token rows", &shape)?,
                };
                (Some(rows), (0..(n * len) as u32).collect())
            }
        };
        let ids = u32s("input_ids", &[n, len], &ids)?;
        Ok(TokenInputs { ids, eos, rows })
    }

    /// Write a run's token ids (one row of `len` per sequence): the ids, or a
    /// host table's rows for them; and each sequence's EOS position.
    pub fn write_inputs(
        &self,
        ctx: &Context,
        inputs: &TokenInputs,
        ids: &[Vec<u32>],
    ) -> Result<()> {
        let flat: Vec<u32> = ids.concat();
        if flat.len() != inputs.ids.numel() || ids.len() != inputs.eos.numel() {
            return Err(Error::BadInput(format!(
                "text encoder: {} sequences of {} ids for inputs of shape {:?}",
                ids.len(),
                ids.first().map_or(0, Vec::len),
                inputs.ids.shape
            )));
        }
        let write = |t: &Tensor, bytes: &[u8]| ctx.queue.write_buffer(&t.buffer, 0, bytes);
        write(&inputs.eos, bytemuck::cast_slice(&self.eos_positions(ids)));
        let d = self.config.hidden_size;
        match (&self.token_embedding, &inputs.rows) {
            (TokenEmbedding::Host(HostWeight::F16(table)), Some(rows)) => {
                write(rows, bytemuck::cast_slice(&gather(table, &flat, d)));
            }
            (TokenEmbedding::Host(HostWeight::F32(table)), Some(rows)) => {
                write(rows, bytemuck::cast_slice(&gather(table, &flat, d)));
            }
            _ => write(&inputs.ids, bytemuck::cast_slice(&flat)),
        }
        Ok(())
    }

    /// [`Self::inputs`] for `ids` (one row per sequence), written with them.
    pub fn inputs_for(&self, ctx: &Context, ids: &[Vec<u32>]) -> Result<TokenInputs> {
        let len = ids.first().map_or(0, Vec::len);
        let inputs = self.inputs(ctx, ids.len(), len)?;
        self.write_inputs(ctx, &inputs, ids)?;
        Ok(inputs)
    }
}

/// The rows `ids` of a `[vocab, d]` table, in order; ids past the table are
/// clamped, as the GPU gather clamps them.
fn gather<T: Copy>(table: &[T], ids: &[u32], d: usize) -> Vec<T> {
    let last = table.len() / d - 1;
    (ids.iter())
        .flat_map(|&id| {
            let row = (id as usize).min(last) * d;
            table[row..row + d].iter().copied()
        })
        .collect()
}

/// The token table where [`Context::table_on_host`] says (its size in f32).
pub(super) fn token_embedding(vb: &Vars, c: &CLIPTextConfig) -> Result<TokenEmbedding> {
    let shape = [c.vocab_size, c.hidden_size];
    let bytes = DType::F32.bytes(c.vocab_size * c.hidden_size);
    Ok(if vb.ctx.table_on_host(bytes) {
        TokenEmbedding::Host(vb.get_host_weight("weight", &shape)?)
    } else {
        TokenEmbedding::Gpu(vb.get_weight("weight", &shape)?)
    })
}
