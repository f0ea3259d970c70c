//! CPU reference for ops::conv2d: `torch.nn.functional.conv2d(x, weight, bias,
//! stride, padding)` for NCHW input, groups = 1, accumulated in f64.

pub struct Conv2d<'a> {
    pub x: &'a [f32],      // [N, Cin, H, W]
    pub weight: &'a [f32], // [Cout, Cin, kh, kw]
    pub bias: Option<&'a [f32]>,
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl Conv2d<'_> {
    pub fn out_size(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.padding.0 - self.kh) / self.stride.0 + 1,
            (self.w + 2 * self.padding.1 - self.kw) / self.stride.1 + 1,
        )
    }

    /// `[N, Cout, Hout, Wout]`.
    pub fn run(&self) -> Vec<f64> {
        let (hout, wout) = self.out_size();
        let mut out = Vec::with_capacity(self.n * self.cout * hout * wout);
        for b in 0..self.n {
            for co in 0..self.cout {
                for oy in 0..hout {
                    for ox in 0..wout {
                        let mut acc = self.bias.map_or(0.0, |c| c[co] as f64);
                        for ci in 0..self.cin {
                            for ky in 0..self.kh {
                                for kx in 0..self.kw {
                                    let iy = (oy * self.stride.0 + ky) as isize
                                        - self.padding.0 as isize;
                                    let ix = (ox * self.stride.1 + kx) as isize
                                        - self.padding.1 as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= self.h as isize
                                        || ix >= self.w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((b * self.cin + ci) * self.h + iy as usize) * self.w
                                        + ix as usize;
                                    let wi = ((co * self.cin + ci) * self.kh + ky) * self.kw + kx;
                                    acc += self.x[xi] as f64 * self.weight[wi] as f64;
                                }
                            }
                        }
                        out.push(acc);
                    }
                }
            }
        }
        out
    }
}
