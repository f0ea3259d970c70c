//! References for wgsl/elementwise.wgsl.

/// erf by its Taylor/continued-fraction-free series; exact to f64 rounding for |x| < 6.
pub fn erf(x: f64) -> f64 {
    // Abramowitz & Stegun 7.1.28 is too coarse for a reference; use the series
    // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)) for |x| <= 3,
    // and the complementary asymptotic bound beyond (erf = ±1 to 1e-8).
    if x.abs() > 5.0 {
        return x.signum();
    }
    let mut sum = 0.0;
    let mut term = x; // (-1)^n x^(2n+1) / n!
    for n in 0..200 {
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 {
            break;
        }
        term *= -x * x / (n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// `torch.nn.functional.silu`, `gelu`, `gelu(approximate="tanh")`, CLIP quick_gelu.
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

pub fn gelu_tanh(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

pub fn quick_gelu(x: f64) -> f64 {
    x / (1.0 + (-1.702 * x).exp())
}

/// NumPy broadcasting of `b` (shape `bs`) to `as_`: the index into `b` for flat index `i` of a.
pub fn broadcast_index(as_: &[usize], bs: &[usize], mut i: usize) -> usize {
    let pad = as_.len() - bs.len();
    let mut idx = 0;
    let mut stride = 1;
    for d in (0..as_.len()).rev() {
        let coord = i % as_[d];
        i /= as_[d];
        if d >= pad {
            let bd = bs[d - pad];
            if bd != 1 {
                idx += coord * stride;
            }
            stride *= bd;
        }
    }
    idx
}

/// diffusers GEGLU over rows of width 2d (hidden features, then their gates).
pub fn geglu(x: &[f64], d: usize) -> Vec<f64> {
    x.chunks(2 * d)
        .flat_map(|row| (0..d).map(move |j| row[j] * gelu(row[d + j])))
        .collect()
}
