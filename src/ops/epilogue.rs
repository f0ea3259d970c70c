//! What a GEMM's store does besides writing the product (matmul and conv2d).

use crate::error::Result;
use crate::gpu::{Access, Tensor};
use crate::ops::{expect_activations, expect_shape};

/// What a GEMM's store does besides writing the product (matmul and conv2d):
/// add the bias, then optionally add a residual laid out as the output and
/// scale the sum, `(product + bias + residual) · scale`, so a layer and the
/// residual add after it are one launch and one pass over the output. The sum
/// is the separate add's (f32 addition commutes), so the bits are the same.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a Tensor>,
    pub residual: Option<(&'a Tensor, f32)>,
}

impl<'a> Epilogue<'a> {
    pub fn bias(bias: Option<&'a Tensor>) -> Self {
        Self {
            bias,
            residual: None,
        }
    }

    /// The bias (`[channels]`) and the residual (the output's shape, or
    /// `broadcast`) checked.
    pub(crate) fn check(
        &self,
        op: &str,
        channels: usize,
        out: &Tensor,
        broadcast: Option<&[usize]>,
    ) -> Result<()> {
        if let Some(bias) = self.bias {
            expect_shape(op, "bias", bias, &[channels])?;
        }
        if let Some((residual, _)) = self.residual {
            if broadcast != Some(&residual.shape[..]) {
                expect_shape(op, "residual", residual, &out.shape)?;
            }
        }
        Ok(())
    }

    /// `HAS_BIAS` and `HAS_RESIDUAL`.
    pub(crate) fn constants(&self) -> [(&'static str, f64); 2] {
        [
            ("HAS_BIAS", self.bias.is_some() as u32 as f64),
            ("HAS_RESIDUAL", self.residual.is_some() as u32 as f64),
        ]
    }

    /// The bias and residual bindings: `unused` (an input of the same dispatch,
    /// never read through them) where there is none.
    pub(crate) fn bindings(&self, unused: &'a Tensor) -> [(&'a Tensor, Access); 2] {
        [
            (self.bias.unwrap_or(unused), Access::Read),
            (self.residual.map_or(unused, |(r, _)| r), Access::Read),
        ]
    }

    /// `x`, `out` and the residual share one activation dtype
    /// ([`expect_activations`]).
    pub(crate) fn expect_activations(&self, op: &str, x: &Tensor, out: &Tensor) -> Result<()> {
        let mut acts = vec![("out", out)];
        acts.extend(self.residual.map(|(r, _)| ("residual", r)));
        expect_activations(op, x, &acts)
    }

    pub(crate) fn scale(&self) -> f32 {
        self.residual.map_or(1.0, |(_, scale)| scale)
    }
}
