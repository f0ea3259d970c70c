//! [`Graph`]'s per-pixel layers between NCHW and tokens: an nn.Linear (or a
//! 1x1 conv, the same layer) whose GEMM reads NCHW as tokens or writes NCHW
//! from them, so Transformer2DModel's projections and the VAE's attention need
//! no permutes (`MatmulOptions::transpose_a`, `transpose_out`).

use crate::error::Result;
use crate::gpu::Tensor;
use crate::models::graph::{nchw, Graph};
use crate::models::layers::Linear;
use crate::ops::matmul::{self, MatmulOptions};

impl Graph<'_> {
    /// `layer` on every pixel of NCHW `x`: `layer(x.permute(0, 2, 3, 1))` as
    /// tokens `[N, H·W, C']`, the permute folded into the GEMM's reads.
    pub fn linear_from_nchw(&mut self, x: &Tensor, layer: &Linear) -> Result<Tensor> {
        let [n, c, h, w] = nchw(x)?;
        let out = self.tensor(&[n, h * w, layer.out_features()])?;
        let opts = MatmulOptions {
            transpose_a: true,
            ..MatmulOptions::linear()
        };
        let x = x.reshape(&[n, c, h * w])?;
        let epilogue = matmul::Epilogue::bias(layer.bias.as_ref());
        let ds = matmul::linear_with(self.ctx, &x, &layer.weight, epilogue, &out, &opts)?;
        self.extend(ds);
        Ok(out)
    }

    /// `layer(tokens)` as NCHW `[N, C', H, W]` plus `residual` (NCHW, which
    /// gives H and W): the permute folded into the GEMM's store, the add into
    /// its epilogue.
    pub fn linear_to_nchw_add(
        &mut self,
        tokens: &Tensor,
        layer: &Linear,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let [n, _, h, w] = nchw(residual)?;
        let flat = [n, layer.out_features(), h * w];
        let out = self.tensor(&[flat[0], flat[1], h, w])?;
        let opts = MatmulOptions {
            transpose_out: true,
            ..MatmulOptions::linear()
        };
        let residual = residual.reshape(&flat)?;
        let epilogue = matmul::Epilogue {
            bias: layer.bias.as_ref(),
            residual: Some((&residual, 1.0)),
        };
        let flat_out = out.reshape(&flat)?;
        let ds = matmul::linear_with(self.ctx, tokens, &layer.weight, epilogue, &flat_out, &opts)?;
        self.extend(ds);
        Ok(out)
    }
}
