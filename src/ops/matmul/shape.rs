//! matmul's problem: its operands' shapes checked against each other and
//! against its options.

use super::{Epilogue, MatmulOptions};
use crate::error::{Error, Result};
use crate::gpu::dispatch::{Gemm, GemmOp};
use crate::gpu::Tensor;

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

    /// The output's shape: `a`'s batch dims, then `[M, N]` (`[N, M]` if
    /// `transpose_out`; `[M, N / 2]` with GEGLU).
    pub(super) fn out(&self, a: &Tensor, opts: &MatmulOptions) -> Vec<usize> {
        let mut shape = a.shape[..a.shape.len() - 2].to_vec();
        let n = self.n / (1 + opts.geglu as usize);
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

/// What GEGLU in the store needs: column pairs, and nothing else in the
/// store that would see the halved output.
pub(super) fn check_geglu(shape: &Shape, epilogue: &Epilogue, opts: &MatmulOptions) -> Result<()> {
    if !opts.geglu {
        return Ok(());
    }
    let why = if shape.n % 2 == 1 {
        "an odd number of columns"
    } else if opts.transpose_out {
        "a transposed output"
    } else if epilogue.residual.is_some() {
        "a residual"
    } else {
        return Ok(());
    };
    Err(Error::BadInput(format!(
        "matmul: GEGLU in the store needs column pairs and no more; got {why} ({} columns)",
        shape.n
    )))
}
