//! The README's gallery: the default model on a dozen prompts with the README's
//! default settings, tiled into one PNG, so what easel draws out of the box is
//! shown, not described. Regenerate it whenever the model changes:
//!
//! ```sh
//! cargo run --release --example gallery -- docs/gallery.png
//! ```
//!
//! Optional second argument: a model folder (default weights/easel-emoji).
//! The prompts and their order are [`PROMPTS`]; each image uses seed 7.

use std::path::PathBuf;

use easel::output::{encode_png, write_atomic, Parameters};
use easel::{AdapterOptions, Engine, Request, Result};

/// What the bundled model knows: emoji names (docs: weights/README.md).
const PROMPTS: [&str; 12] = [
    "red apple",
    "cat",
    "smiling face",
    "dog",
    "house",
    "pizza",
    "rocket",
    "sun",
    "red heart",
    "evergreen tree",
    "fish",
    "apple:: tart::",
];
const COLUMNS: usize = 4;
const GAP: usize = 4;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "docs/gallery.png".into()));
    let model = PathBuf::from(args.next().unwrap_or_else(|| "weights/easel-emoji".into()));
    let engine = Engine::new(&model, &AdapterOptions::default())?;
    let mut tiles = Vec::new();
    for prompt in PROMPTS {
        // The CLI's defaults: best of 4, the learned x4 upscaler.
        let request = Request {
            seed: 7,
            candidates: Some(4),
            upscale: Some(4),
            ..Request::new(prompt)
        };
        let image = engine.generate(&request)?;
        eprintln!("gallery: {prompt} ({:.1} s)", image.seconds);
        tiles.push(image);
    }
    let (w, h) = (tiles[0].width, tiles[0].height);
    let rows = PROMPTS.len().div_ceil(COLUMNS);
    let (sw, sh) = (COLUMNS * (w + GAP) + GAP, rows * (h + GAP) + GAP);
    let mut sheet = vec![255u8; sw * sh * 4];
    for (i, tile) in tiles.iter().enumerate() {
        let (ox, oy) = (
            GAP + (i % COLUMNS) * (w + GAP),
            GAP + (i / COLUMNS) * (h + GAP),
        );
        for y in 0..h {
            let from = &tile.rgba[y * w * 4..(y + 1) * w * 4];
            let at = ((oy + y) * sw + ox) * 4;
            sheet[at..at + w * 4].copy_from_slice(from);
        }
    }
    let parameters = Parameters {
        prompt: PROMPTS.join(" | "),
        ..tiles[0].parameters.clone()
    };
    write_atomic(&out, &encode_png(&sheet, sw, sh, &parameters)?)?;
    eprintln!("gallery: wrote {} ({sw}x{sh})", out.display());
    Ok(())
}
