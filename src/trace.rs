//! `--trace`: a contact sheet of every scoring round, to see what the check
//! output process chose and why. One row per round, one tile per candidate
//! (2x nearest), the winner framed in green, and under each tile one bar per
//! sub-prompt and one (black) for the weighted total: length ~ cosine in
//! [-1, 1], centre = 0.

use std::path::Path;

use ::image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::request::Round;

const SCALE: usize = 2;
const PAD: usize = 4;
const BAR: usize = 3;
const WINNER: Rgb<u8> = Rgb([0, 170, 0]);
const TOTAL: Rgb<u8> = Rgb([0, 0, 0]);
const SUB_PROMPT: Rgb<u8> = Rgb([60, 90, 200]);

/// The geometry of one sheet: images of `[h, w]`, `prompts` sub-prompts.
struct Sheet {
    image: RgbImage,
    h: usize,
    w: usize,
    prompts: usize,
    /// A tile's width, padding included.
    tw: usize,
}

/// Draw `rounds` (images `[K, 3, h, w]` in [-1, 1]) and write the sheet to `path`
/// as PNG, atomically.
pub fn write(path: &Path, rounds: &[Round], [h, w]: [usize; 2], prompts: usize) -> Result<()> {
    let k = rounds
        .iter()
        .map(|r| r.scores.len() / (prompts + 1))
        .max()
        .unwrap_or(1);
    let (tw, th) = (
        w * SCALE + 2 * PAD,
        h * SCALE + 2 * PAD + (prompts + 1) * (BAR + 1),
    );
    let image = RgbImage::from_pixel(
        (k * tw) as u32,
        (rounds.len() * th).max(1) as u32,
        Rgb([255, 255, 255]),
    );
    let mut sheet = Sheet {
        image,
        h,
        w,
        prompts,
        tw,
    };
    for (row, round) in rounds.iter().enumerate() {
        for c in 0..round.scores.len() / (prompts + 1) {
            let origin = (c * tw, row * th);
            if c == round.winner {
                sheet.frame(origin);
            }
            sheet.tile(origin, &round.images, c);
            sheet.bars(
                origin,
                &round.scores[c * (prompts + 1)..(c + 1) * (prompts + 1)],
            );
        }
    }
    let mut bytes = Vec::new();
    sheet
        .image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            ::image::ImageFormat::Png,
        )
        .map_err(|e| Error::Gpu(format!("trace: {e}")))?;
    crate::output::write_atomic(path, &bytes)
}

impl Sheet {
    fn fill(&mut self, xs: std::ops::Range<usize>, ys: std::ops::Range<usize>, colour: Rgb<u8>) {
        for y in ys {
            for x in xs.clone() {
                self.image.put_pixel(x as u32, y as u32, colour);
            }
        }
    }

    /// The green frame behind the winner's image.
    fn frame(&mut self, (ox, oy): (usize, usize)) {
        let (tw, h) = (self.tw, self.h);
        self.fill(ox..ox + tw, oy..oy + h * SCALE + 2 * PAD, WINNER);
    }

    /// Candidate `c` of `images` at `SCALE`x, nearest neighbour.
    fn tile(&mut self, (ox, oy): (usize, usize), images: &[f32], c: usize) {
        let (h, w) = (self.h, self.w);
        for y in 0..h * SCALE {
            for x in 0..w * SCALE {
                let i = |ch: usize| c * 3 * h * w + ch * h * w + (y / SCALE) * w + x / SCALE;
                let px = |ch| (((images[i(ch)] + 1.0) * 127.5).round().clamp(0.0, 255.0)) as u8;
                self.image.put_pixel(
                    (ox + PAD + x) as u32,
                    (oy + PAD + y) as u32,
                    Rgb([px(0), px(1), px(2)]),
                );
            }
        }
    }

    /// One bar per score of the row (sub-prompts, then the weighted total).
    fn bars(&mut self, (ox, oy): (usize, usize), row: &[f32]) {
        let (tw, h) = (self.tw, self.h);
        for (j, &score) in row.iter().enumerate() {
            let v = score.clamp(-1.0, 1.0);
            let mid = ox + tw / 2;
            let len = (v.abs() * (tw / 2 - PAD) as f32) as usize;
            let (from, to) = if v >= 0.0 {
                (mid, mid + len)
            } else {
                (mid - len, mid)
            };
            let colour = if j == self.prompts { TOTAL } else { SUB_PROMPT };
            let y0 = oy + h * SCALE + 2 * PAD + j * (BAR + 1);
            self.fill(from..to + 1, y0..y0 + BAR, colour);
        }
    }
}
