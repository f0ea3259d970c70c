//! [`Graph`]'s stacked projections: several layers of one input (a
//! self-attention's to_q, to_k and to_v; a cross-attention's to_k and to_v)
//! run as one GEMM over their stacked weights ([`Linear::stack`]), each
//! layer's output written as a tensor of its own (`MatmulOptions::parts`):
//! one launch instead of three, and one wider GEMM that fills a GPU better.

use crate::error::Result;
use crate::gpu::tensor::{numel, row_step};
use crate::gpu::Tensor;
use crate::models::graph::{nchw, Graph};
use crate::models::layers::Linear;
use crate::ops::matmul::{self, MatmulOptions};

impl Graph<'_> {
    /// The `parts` layers stacked in `layer`, each on x `[.., in]`: `parts`
    /// tensors `[.., out / parts]`.
    pub fn linear_parts(
        &mut self,
        x: &Tensor,
        layer: &Linear,
        parts: usize,
    ) -> Result<Vec<Tensor>> {
        let din = x.dim(-1);
        let lead = &x.shape[..x.shape.len() - 1];
        let tokens = x.reshape(&[numel(lead), din])?;
        self.parts_of(&tokens, lead, layer, parts, MatmulOptions::linear())
    }

    /// [`Graph::linear_parts`] on every pixel of NCHW `x`, read as tokens
    /// (`[N, H·W, out / parts]` each), like [`Graph::linear_from_nchw`].
    pub fn linear_parts_from_nchw(
        &mut self,
        x: &Tensor,
        layer: &Linear,
        parts: usize,
    ) -> Result<Vec<Tensor>> {
        let [n, c, h, w] = nchw(x)?;
        let opts = MatmulOptions {
            transpose_a: true,
            ..MatmulOptions::linear()
        };
        self.parts_of(&x.reshape(&[n, c, h * w])?, &[n, h * w], layer, parts, opts)
    }

    /// One GEMM of `a` (as `opts` reads it) by the stacked weight into one
    /// `[parts, stride]` activation, each part a view at an offset the
    /// adapter can bind.
    fn parts_of(
        &mut self,
        a: &Tensor,
        lead: &[usize],
        layer: &Linear,
        parts: usize,
        opts: MatmulOptions,
    ) -> Result<Vec<Tensor>> {
        layer.expect_rows(false)?;
        let mut shape = lead.to_vec();
        shape.push(layer.out_features() / parts.max(1));
        let step = row_step(self.ctx, self.activation_dtype().size() as u64) as usize;
        let out = self.tensor(&[parts, numel(&shape).next_multiple_of(step)])?;
        let opts = MatmulOptions { parts, ..opts };
        let epilogue = matmul::Epilogue::bias(layer.bias.as_ref());
        let ds = matmul::linear_with(self.ctx, a, &layer.weight, epilogue, &out, &opts)?;
        self.extend(ds);
        (0..parts).map(|p| out.rows(p, 1)?.prefix(&shape)).collect()
    }
}
