//! The VAE decoder in tiles (diffusers' `AutoencoderKL.tiled_decode`, with a
//! weighted cross-fade where diffusers blends and crops): the latents are cut
//! into overlapping tiles, each tile is decoded alone, and wgsl/blend.wgsl adds
//! the decoded tiles into the image with weights that ramp linearly across each
//! overlap. Only one tile's activations exist at a time, so the decoder's memory
//! follows the tile's size, not the image's.
//!
//! Each tile normalises (GroupNorm) over its own pixels and sees zero padding at
//! its cut edges, so a tiled image differs slightly from the whole decode; the
//! overlap (a quarter of a tile) hides the seams. tests/memory_plan.rs states
//! the difference on the tiny latent pipeline.

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::gpu::Tensor;
use crate::models::vae::AutoencoderKLDecoder;
use crate::models::Graph;
use crate::ops::blend::{self, Placement};
use crate::ops::layout;

/// `--vae-tiles`: whether the VAE decodes in tiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VaeTiles {
    /// When the whole decode would not fit the adapter (the request's memory plan decides).
    #[default]
    Auto,
    /// Never: the whole image at once.
    Off,
    /// Tiles of this many image pixels a side.
    Pixels(usize),
}

impl FromStr for VaeTiles {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            _ => match s.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Self::Pixels(n)),
                _ => Err(format!(
                    "`{s}`: auto, off, or a tile's side in pixels (a positive whole number)"
                )),
            },
        }
    }
}

/// Tiles of `tile` latent pixels a side overlapping by at least `overlap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub tile: usize,
    pub overlap: usize,
}

/// The smallest tile side in latent pixels: a quarter of it still overlaps.
pub const MIN_TILE: usize = 4;

impl Tiling {
    /// Tiles of `tile` latent pixels overlapping by a quarter of a tile.
    pub fn new(tile: usize) -> Self {
        let tile = tile.max(MIN_TILE);
        Self {
            tile,
            overlap: tile / 4,
        }
    }

    /// The tiles along an axis of `len` latent pixels, `(start, len)` each:
    /// spread evenly from 0 to the end, neighbours overlapping by at least
    /// `overlap`; one tile when the axis fits in one.
    pub fn spans(&self, len: usize) -> Vec<(usize, usize)> {
        if len <= self.tile {
            return vec![(0, len)];
        }
        let stride = self.tile - self.overlap;
        let n = (len - self.overlap).div_ceil(stride);
        (0..n)
            .map(|i| (i * (len - self.tile) / (n - 1), self.tile))
            .collect()
    }
}

/// Ramp lengths, in latent pixels, at the start and the end of span `i`: its
/// overlap with the previous and the next span (0 at the axis's ends).
fn ramps(spans: &[(usize, usize)], i: usize) -> [usize; 2] {
    let (start, len) = spans[i];
    let before = i
        .checked_sub(1)
        .map_or(0, |p| spans[p].0 + spans[p].1 - start);
    let after = spans.get(i + 1).map_or(0, |next| start + len - next.0);
    [before, after]
}

impl AutoencoderKLDecoder {
    /// [`Self::decode`] in tiles: latents `[N, latent, h, w]` → image
    /// `[N, out, h·f, w·f]`; the whole decode when one tile covers the latents.
    pub fn decode_tiled(&self, g: &mut Graph, latents: &Tensor, tiling: Tiling) -> Result<Tensor> {
        let [n, c, h, w]: [usize; 4] = latents.shape[..].try_into().map_err(|_| {
            Error::BadInput(format!("vae decode: latents of shape {:?}", latents.shape))
        })?;
        let (rows, cols) = (tiling.spans(h), tiling.spans(w));
        let z = self.unscale(g, latents)?;
        if rows.len() * cols.len() == 1 {
            return self.forward(g, &z);
        }
        let (ctx, f) = (g.ctx, self.config.upscale_factor());
        let image = g.tensor(&[n, self.config.out_channels, h * f, w * f])?;
        let weight = g.tensor(&[h * f, w * f])?;
        g.push(blend::clear(ctx, &image, &weight)?);
        for (i, &(y0, th)) in rows.iter().enumerate() {
            for (j, &(x0, tw)) in cols.iter().enumerate() {
                let band = g.tensor(&[n, c, th, w])?;
                g.push(layout::narrow(ctx, &z, 2, y0, &band)?);
                let crop = g.tensor(&[n, c, th, tw])?;
                g.push(layout::narrow(ctx, &band, 3, x0, &crop)?);
                drop(band);
                let tile = self.forward(g, &crop)?; // [N, out, th·f, tw·f]
                let ([top, bottom], [left, right]) = (ramps(&rows, i), ramps(&cols, j));
                let place = Placement {
                    at: [y0 * f, x0 * f],
                    ramps: [top, bottom, left, right].map(|r| r * f),
                };
                g.push(blend::accumulate(ctx, &tile, &image, &weight, place)?);
            }
        }
        g.push(blend::normalize(ctx, &image, &weight)?);
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_the_axis_with_the_overlap() {
        let t = Tiling::new(32); // SD's 256-pixel tiles: 32 latents, overlap 8
        assert_eq!(t.spans(64), [(0, 32), (16, 32), (32, 32)]);
        assert_eq!(t.spans(32), [(0, 32)]);
        assert_eq!(t.spans(20), [(0, 20)]);
        for len in 33..200 {
            let s = t.spans(len);
            assert_eq!(s[0].0, 0);
            assert_eq!(s.last().map(|(a, b)| a + b), Some(len));
            for i in 1..s.len() {
                let r = ramps(&s, i);
                assert!(r[0] >= 8 && r[0] < 32, "len {len}: {s:?}");
            }
        }
        assert_eq!(ramps(&t.spans(64), 1), [16, 16]);
        assert_eq!(ramps(&t.spans(64), 0), [0, 16]);
    }

    #[test]
    fn vae_tiles_parse() {
        assert_eq!("auto".parse(), Ok(VaeTiles::Auto));
        assert_eq!("off".parse(), Ok(VaeTiles::Off));
        assert_eq!("256".parse(), Ok(VaeTiles::Pixels(256)));
        assert!("0".parse::<VaeTiles>().unwrap_err().contains("auto, off"));
        assert!("big".parse::<VaeTiles>().is_err());
    }
}
