//! `--trace`: a contact sheet of every scoring round, to see what the check
//! output process chose and why. One row per round, labelled at the left with
//! the step it followed; one tile per candidate (2x nearest), the winner framed
//! in green; under each tile one bar per sub-prompt and one (black) for the
//! weighted total (length ~ cosine in [-1, 1], centre = 0), then the weighted
//! total as a number. The PNG's `parameters` chunk carries the run's
//! parameters and this legend.

use std::path::Path;

use ::image::{Rgb, RgbImage};

use crate::error::Result;
use crate::output::{encode_png, write_atomic, Parameters};
use crate::request::Round;

const SCALE: usize = 2;
const PAD: usize = 4;
const BAR: usize = 3;
const WINNER: Rgb<u8> = Rgb([0, 170, 0]);
const TOTAL: Rgb<u8> = Rgb([0, 0, 0]);
const SUB_PROMPT: Rgb<u8> = Rgb([60, 90, 200]);
/// Digits are drawn 3x5, scaled by this (by 1 where a tile is too narrow for
/// six characters), with one scaled pixel between them.
const TEXT: usize = 2;
const GLYPH_W: usize = 4 * TEXT;
const LINE: usize = 6 * TEXT;
/// The row label's column: room for a four-digit step.
const LABEL_W: usize = 4 * GLYPH_W + PAD;

/// What the sheet shows, for the PNG's metadata.
pub const LEGEND: &str = "trace: one row per scoring round (the step at the left), one tile per \
candidate (the winner framed in green); bars: cosine to each sub-prompt (blue) and the weighted \
total (black), whose value is printed under them";

/// The geometry of one sheet: images of `[h, w]`, `prompts` sub-prompts.
struct Sheet {
    image: RgbImage,
    h: usize,
    w: usize,
    prompts: usize,
    /// A tile's width, padding included.
    tw: usize,
    /// The scale of the numbers under the tiles.
    text: usize,
}

/// Draw `rounds` (images `[K, 3, h, w]` in [-1, 1]) and write the sheet to `path`
/// as PNG, atomically, with the run's `parameters` (and [`LEGEND`]).
pub fn write(
    path: &Path,
    rounds: &[Round],
    [h, w]: [usize; 2],
    prompts: usize,
    parameters: &Parameters,
) -> Result<()> {
    let k = rounds
        .iter()
        .map(|r| r.scores.len() / (prompts + 1))
        .max()
        .unwrap_or(1);
    let (tw, th) = (
        w * SCALE + 2 * PAD,
        h * SCALE + 2 * PAD + (prompts + 1) * (BAR + 1) + LINE,
    );
    let image = RgbImage::from_pixel(
        (LABEL_W + k * tw) as u32,
        (rounds.len() * th).max(1) as u32,
        Rgb([255, 255, 255]),
    );
    let mut sheet = Sheet {
        image,
        h,
        w,
        prompts,
        tw,
        text: if tw >= 6 * GLYPH_W + 2 * PAD { TEXT } else { 1 },
    };
    for (row, round) in rounds.iter().enumerate() {
        sheet.text((0, row * th + PAD), &(round.step + 1).to_string(), TEXT);
        for c in 0..round.scores.len() / (prompts + 1) {
            let origin = (LABEL_W + c * tw, row * th);
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
    let (sw, sh) = (sheet.image.width() as usize, sheet.image.height() as usize);
    let rgba: Vec<u8> = sheet
        .image
        .pixels()
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect();
    let parameters = Parameters {
        prompt: format!("{}\n{LEGEND}", parameters.prompt),
        ..parameters.clone()
    };
    write_atomic(path, &encode_png(&rgba, sw, sh, &parameters)?)
}

impl Sheet {
    fn fill(&mut self, xs: std::ops::Range<usize>, ys: std::ops::Range<usize>, colour: Rgb<u8>) {
        let (w, h) = (self.image.width() as usize, self.image.height() as usize);
        for y in ys.start.min(h)..ys.end.min(h) {
            for x in xs.start.min(w)..xs.end.min(w) {
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
        let total = row.last().copied().unwrap_or(0.0);
        let y = oy + h * SCALE + 2 * PAD + row.len() * (BAR + 1) + TEXT;
        self.text((ox + PAD, y), &format!("{total:.3}"), self.text);
    }

    /// `text` (digits, `.` and `-`) from `(x, y)`, in the 3x5 font at `scale`.
    fn text(&mut self, (x, y): (usize, usize), text: &str, scale: usize) {
        for (i, c) in text.chars().enumerate() {
            let Some(rows) = glyph(c) else { continue };
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        let (px, py) = (x + (4 * i + col) * scale, y + r * scale);
                        self.fill(px..px + scale, py..py + scale, TOTAL);
                    }
                }
            }
        }
    }
}

/// A 3x5 glyph, one row of 3 bits (most significant = left) per line.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        _ => return None,
    })
}
