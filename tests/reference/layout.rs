//! References for wgsl/layout.wgsl: pure data movement, compared bit for bit.

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// `x.permute(dims).contiguous()`.
pub fn permute(x: &[f32], shape: &[usize], dims: &[usize]) -> Vec<f32> {
    let in_strides = strides(shape);
    let out_shape: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
    let out_strides = strides(&out_shape);
    (0..x.len())
        .map(|i| {
            let src: usize = (0..dims.len())
                .map(|k| (i / out_strides[k]) % out_shape[k] * in_strides[dims[k]])
                .sum();
            x[src]
        })
        .collect()
}

/// `torch.cat(xs, dim)`.
pub fn concat(xs: &[(&[f32], &[usize])], dim: usize) -> Vec<f32> {
    let outer: usize = xs[0].1[..dim].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for (x, shape) in xs {
            let block: usize = shape[dim..].iter().product();
            out.extend_from_slice(&x[o * block..(o + 1) * block]);
        }
    }
    out
}

/// `x[arange(B), index]` for x [B, L, row].
pub fn select_rows(x: &[f32], l: usize, row: usize, index: &[u32]) -> Vec<f32> {
    index
        .iter()
        .enumerate()
        .flat_map(|(b, &i)| x[(b * l + i as usize) * row..][..row].to_vec())
        .collect()
}

/// `x[src].expand(m, ...)` for x [K, row].
pub fn broadcast_row(x: &[f32], row: usize, src: usize, m: usize) -> Vec<f32> {
    x[src * row..][..row].repeat(m)
}
