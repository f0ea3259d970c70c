//! Reference for wgsl/blend.wgsl: tiles `[N, C, th, tw]` added into an image
//! `[N, C, H, W]` with ramped weights, then divided by the weights' sum.

/// A tile, its shape, where it lands and its ramps (top, bottom, left, right).
pub struct Tile<'a> {
    pub data: &'a [f32],
    pub shape: [usize; 4],
    pub at: [usize; 2],
    pub ramps: [usize; 4],
}

/// `(d + 0.5) / len`, at most 1; 1 without a ramp.
fn ramp(d: usize, len: usize) -> f64 {
    if len == 0 {
        return 1.0;
    }
    ((d as f64 + 0.5) / len as f64).min(1.0)
}

/// The blended image: `sum_t w_t tile_t / sum_t w_t` per pixel.
pub fn blend(tiles: &[Tile], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    let mut image = vec![0.0; n * c * h * w];
    let mut weight = vec![0.0; h * w];
    for t in tiles {
        let [_, _, th, tw] = t.shape;
        let [top, bottom, left, right] = t.ramps;
        for y in 0..th {
            for x in 0..tw {
                let wt = ramp(y, top)
                    * ramp(th - 1 - y, bottom)
                    * ramp(x, left)
                    * ramp(tw - 1 - x, right);
                let o = (t.at[0] + y) * w + t.at[1] + x;
                weight[o] += wt;
                for plane in 0..n * c {
                    image[plane * h * w + o] += wt * t.data[(plane * th + y) * tw + x] as f64;
                }
            }
        }
    }
    (0..image.len())
        .map(|i| image[i] / weight[i % (h * w)])
        .collect()
}
