//! matmul's problem: its operands' shapes checked against each other and
//! against its options.

use super::{Epilogue, MatmulOptions};
use crate::error::{Error, Result};
use crate::gpu::dispatch::{Gemm, GemmOp};
use crate::gpu::Tensor;
use crate::ops::elementwise::Activation;
use crate::ops::expect_shape;

/// Problem size after checking `a` and `b` against each other.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

impl Shape {
    pub(super) fn gemm(&self) -> Gemm {
        Gemm {
            op: GemmOp::Matmul,
            batch: self.batch,
            rows: self.m,
            cols: self.n,
            depth: self.k,
        }
    }

    /// What the store is asked to do checked against the problem, then `out`'s
    /// shape (see [`Self::out`]; with parts, `[parts, >= one part]`).
    pub(super) fn check_out(
        &self,
        op: &str,
        a: &Tensor,
        out: &Tensor,
        epilogue: &Epilogue,
        opts: &MatmulOptions,
    ) -> Result<()> {
        self.check_store(epilogue, opts)?;
        let parts = opts.parts;
        let part = self.batch * self.m * (self.n / parts.max(1));
        let fits = out.shape.len() == 2 && out.shape[0] == parts && out.shape[1] >= part;
        match parts {
            0 | 1 => expect_shape(op, "out", out, &self.out(a, opts)),
            _ if fits => Ok(()),
            _ => Err(Error::BadInput(format!(
                "{op}: out has shape {:?}, expected [{parts}, n] with n >= {part}: {parts} \
                 parts of {} columns",
                out.shape,
                self.n / parts
            ))),
        }
    }

    /// GEGLU pairs columns and parts group them: neither with a transposed
    /// output or a residual, nor with each other; an activation neither with a
    /// residual nor with GEGLU.
    fn check_store(&self, epilogue: &Epilogue, opts: &MatmulOptions) -> Result<()> {
        let activation = opts.activation != Activation::Identity;
        if activation && (opts.geglu || epilogue.residual.is_some()) {
            return Err(Error::BadInput(format!(
                "matmul: an activation ({:?}) in the store cannot take GEGLU or a residual",
                opts.activation
            )));
        }
        let (what, columns) = match (opts.geglu, opts.parts > 1) {
            (false, false) => return Ok(()),
            (true, true) => {
                return Err(Error::BadInput(
                    "matmul: GEGLU in the store cannot take parts".into(),
                ))
            }
            (true, false) => ("GEGLU", 2),
            (false, true) => ("parts", opts.parts),
        };
        let why = if !self.n.is_multiple_of(columns) {
            format!("{} columns, not a multiple of {columns}", self.n)
        } else if opts.transpose_out {
            "a transposed output".into()
        } else if epilogue.residual.is_some() {
            "a residual".into()
        } else {
            return Ok(());
        };
        Err(Error::BadInput(format!(
            "matmul: {what} in the store cannot take {why}"
        )))
    }

    /// The output's shape: `a`'s batch dims, then `[M, N]` (`[N, M]` if
    /// `transpose_out`; `[M, N / 2]` with GEGLU).
    pub(super) fn out(&self, a: &Tensor, opts: &MatmulOptions) -> Vec<usize> {
        let mut shape = a.shape[..a.shape.len() - 2].to_vec();
        let n = self.n / opts.columns_per_output();
        shape.extend(match opts.transpose_out {
            true => [n, self.m],
            false => [self.m, n],
        });
        shape
    }

    pub(super) fn of(a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Result<Self> {
        let bad = |msg: String| Error::BadInput(format!("matmul: {msg}"));
        if a.shape.len() < 2 {
            return Err(bad(format!(
                "a has shape {:?}, expected [.., M, K]",
                a.shape
            )));
        }
        let (batch_dims, mat) = a.shape.split_at(a.shape.len() - 2);
        let (m, k) = if opts.transpose_a {
            (mat[1], mat[0])
        } else {
            (mat[0], mat[1])
        };
        let b_ok = b.shape.len() == 2 || b.shape[..b.shape.len().saturating_sub(2)] == *batch_dims;
        if !b_ok || b.shape.len() < 2 {
            return Err(bad(format!(
                "b has shape {:?}, expected [K, N] or a's batch dims {batch_dims:?} then [K, N]",
                b.shape
            )));
        }
        let bm = &b.shape[b.shape.len() - 2..];
        let (kb, n) = if opts.transpose_b {
            (bm[1], bm[0])
        } else {
            (bm[0], bm[1])
        };
        if kb != k {
            return Err(bad(format!(
                "inner dimensions differ: a {:?} gives K = {k}, b {:?} gives K = {kb}",
                a.shape, b.shape
            )));
        }
        if m == 0 || n == 0 || k == 0 {
            return Err(bad(format!(
                "empty product: a {:?}, b {:?}",
                a.shape, b.shape
            )));
        }
        let batch = batch_dims.iter().product();
        Ok(Self { batch, m, n, k })
    }

    /// Whether `matmul_cpu_vec4` can read both operands 4 floats at a time:
    /// each contiguous dimension (and so each row and batch stride) a multiple of 4.
    pub(super) fn vec4_aligned(&self, opts: &MatmulOptions) -> bool {
        self.k.is_multiple_of(4)
            && (!opts.transpose_a || self.m.is_multiple_of(4))
            && (opts.transpose_b || self.n.is_multiple_of(4))
    }
}
