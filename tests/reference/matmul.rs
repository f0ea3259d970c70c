//! CPU reference for ops::matmul: `torch.baddbmm`-style `alpha · op(a) · op(b) + bias`.

/// Row-major operands as stored; `b` shared by all `batch` items when `b_shared`.
pub struct Matmul<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub transpose_a: bool,
    pub transpose_b: bool,
    pub b_shared: bool,
    pub alpha: f64,
}

impl Matmul<'_> {
    /// `[batch, M, N]`, accumulated in f64.
    pub fn run(&self) -> Vec<f64> {
        let (m, n, k) = (self.m, self.n, self.k);
        let mut out = Vec::with_capacity(self.batch * m * n);
        for bi in 0..self.batch {
            let a = &self.a[bi * m * k..];
            let b = if self.b_shared {
                self.b
            } else {
                &self.b[bi * k * n..]
            };
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 = (0..k)
                        .map(|kk| {
                            let x = if self.transpose_a {
                                a[kk * m + i]
                            } else {
                                a[i * k + kk]
                            };
                            let y = if self.transpose_b {
                                b[j * k + kk]
                            } else {
                                b[kk * n + j]
                            };
                            x as f64 * y as f64
                        })
                        .sum();
                    out.push(self.alpha * dot + self.bias.map_or(0.0, |c| c[j] as f64));
                }
            }
        }
        out
    }
}
