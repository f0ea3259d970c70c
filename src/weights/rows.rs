//! Loading tensors onto the GPU, rows as stored or reordered for a kernel
//! ([`RowOrder`]).

use std::borrow::Cow;

use super::{HostWeight, Weights};
use crate::error::Result;
use crate::gpu::{Context, Tensor};

/// How a tensor's rows (dim 0) are laid out on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowOrder {
    /// As the file stores them.
    Stored,
    /// The two halves interleaved: row 2q is stored row q, row 2q + 1 stored
    /// row rows / 2 + q. A feed-forward's net.0.proj so, with its bias, puts
    /// each hidden feature beside its gate, which GEGLU in the projection's
    /// store needs (`ops::matmul::MatmulOptions::geglu`).
    HalvesInterleaved,
}

impl RowOrder {
    /// `data` (`rows` rows of equal length) in this order: borrowed as it is
    /// when stored, copied when reordered.
    pub fn apply<T: Copy>(self, data: &[T], rows: usize) -> Cow<'_, [T]> {
        match self {
            Self::Stored => Cow::Borrowed(data),
            Self::HalvesInterleaved => {
                let len = data.len() / rows.max(1);
                let half = rows / 2 * len;
                let (hidden, gate) = data.split_at(half);
                let interleaved = hidden
                    .chunks(len.max(1))
                    .zip(gate.chunks(len.max(1)))
                    .flat_map(|(h, g)| h.iter().chain(g).copied());
                Cow::Owned(interleaved.collect())
            }
        }
    }
}

impl Weights {
    /// Load `name` onto the GPU as an f32 tensor of `expected_shape`; marks it used.
    /// For biases, norm weights and small tables, which kernels read as f32.
    pub fn get(&self, ctx: &Context, name: &str, expected_shape: &[usize]) -> Result<Tensor> {
        self.get_in(ctx, name, expected_shape, RowOrder::Stored)
    }

    /// [`Weights::get`] with the rows in `order`.
    pub fn get_in(
        &self,
        ctx: &Context,
        name: &str,
        expected_shape: &[usize],
        order: RowOrder,
    ) -> Result<Tensor> {
        let rows = expected_shape.first().copied().unwrap_or(1);
        let data = self.get_f32(name, expected_shape)?;
        let data = order.apply(&data, rows);
        Tensor::from_f32(ctx, &self.full_name(name), expected_shape, &data)
    }

    /// Load a layer weight (nn.Linear, nn.Conv2d, the token table) onto the GPU
    /// in the precision [`Weights::set_precision`] picked: f16 ([`DType::F16`])
    /// for an f16 or bf16 file under `Auto`, or always under `F16`; marks it
    /// used. It may exceed the adapter's binding limit (the ops bind it in row
    /// blocks), not its buffer limit. Patches registered for it
    /// ([`Weights::add_patch`]) are merged into it on the GPU.
    ///
    /// [`DType::F16`]: crate::gpu::DType::F16
    pub fn get_weight(
        &self,
        ctx: &Context,
        name: &str,
        expected_shape: &[usize],
    ) -> Result<Tensor> {
        self.get_weight_in(ctx, name, expected_shape, RowOrder::Stored)
    }

    /// [`Weights::get_weight`] with the rows in `order` (patches reordered alike).
    pub fn get_weight_in(
        &self,
        ctx: &Context,
        name: &str,
        expected_shape: &[usize],
        order: RowOrder,
    ) -> Result<Tensor> {
        let at = self.checked(name, expected_shape)?;
        let label = self.full_name(name);
        let rows = expected_shape.first().copied().unwrap_or(1);
        let tensor = match self.layer_values(&at)? {
            HostWeight::F16(data) => {
                Tensor::from_f16(ctx, &label, expected_shape, &order.apply(&data, rows))?
            }
            HostWeight::F32(data) => {
                Tensor::weight_f32(ctx, &label, expected_shape, &order.apply(&data, rows))?
            }
        };
        self.apply_patches(ctx, &label, &tensor, order)?;
        self.used.lock().expect("used set").insert(at.full);
        Ok(tensor)
    }
}
