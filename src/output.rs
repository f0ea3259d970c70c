//! Writing the finished image: PNG with an A1111-style `parameters` tEXt chunk,
//! written to a temporary file beside the target and renamed into place, so a
//! crash or kill leaves either the complete file or none.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What the PNG's `parameters` chunk records (the A1111 / ComfyUI convention:
/// the prompt line, then `Key: value` pairs).
#[derive(Clone, Debug, Default)]
pub struct Parameters {
    pub prompt: String,
    pub steps: usize,
    pub sampler: String,
    pub guidance: f32,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub model: String,
    pub candidates: usize,
    /// The winner's final score, when the scorer ran.
    pub score: Option<f32>,
    /// The `--schedule` text, when the run had phases.
    pub schedule: Option<String>,
}

impl Parameters {
    pub fn to_text(&self) -> String {
        let mut line = format!(
            "Steps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {}, Candidates: {}",
            self.steps, self.sampler, self.guidance, self.seed, self.width, self.height, self.model, self.candidates
        );
        if let Some(score) = self.score {
            line.push_str(&format!(", Score: {score:.4}"));
        }
        if let Some(schedule) = &self.schedule {
            // A1111 quotes values that contain commas or colons.
            line.push_str(&format!(", Schedule: {}", serde_json::json!(schedule)));
        }
        format!("{}\n{line}", self.prompt)
    }
}

/// Encode RGBA8 pixels as PNG bytes with the parameters chunk.
pub fn encode_png(
    rgba: &[u8],
    width: usize,
    height: usize,
    params: &Parameters,
) -> Result<Vec<u8>> {
    if rgba.len() != width * height * 4 {
        return Err(Error::Gpu(format!(
            "image: {} bytes for {width}x{height} RGBA",
            rgba.len()
        )));
    }
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let png_err = |e: png::EncodingError| Error::Gpu(format!("png: {e}"));
    let text = params.to_text();
    // tEXt holds Latin-1 only; prompts beyond it (curly quotes, emoji, CJK) go in
    // an iTXt chunk (UTF-8), as Pillow and the A1111 web UI write them.
    if text.chars().all(|c| u32::from(c) < 0x100) {
        encoder.add_text_chunk("parameters".into(), text)
    } else {
        encoder.add_itxt_chunk("parameters".into(), text)
    }
    .map_err(png_err)?;
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(rgba).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(bytes)
}

/// Check, before any GPU work, that `path` can be written: its folder exists
/// and accepts a file. Nothing is left behind.
pub fn check_writable(path: &Path) -> Result<()> {
    let probe = temp_path(path);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| Error::BadInput(format!("{}: cannot write output: {e}", path.display())))?;
    drop(file);
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Write `bytes` to `path` atomically: temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// `dir/.name.<pid>.tmp`: hidden, unique per process, on the same filesystem.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = format!(".{name}.{}.tmp", std::process::id());
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(tmp),
        _ => PathBuf::from(tmp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Parameters {
        Parameters {
            prompt: "apple:: tart::".into(),
            steps: 30,
            sampler: "DDIM".into(),
            guidance: 4.5,
            seed: 7,
            width: 32,
            height: 32,
            model: "easel-emoji".into(),
            candidates: 4,
            score: Some(0.3125),
            schedule: None,
        }
    }

    #[test]
    fn parameters_text_is_a1111_style() {
        assert_eq!(
            params().to_text(),
            "apple:: tart::\nSteps: 30, Sampler: DDIM, CFG scale: 4.5, Seed: 7, Size: 32x32, \
             Model: easel-emoji, Candidates: 4, Score: 0.3125"
        );
    }

    #[test]
    fn png_round_trips_pixels_and_parameters() {
        let rgba: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 10) as u8).collect();
        let bytes = encode_png(&rgba, 2, 3, &params()).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let text = &reader.info().uncompressed_latin1_text;
        assert_eq!(text[0].keyword, "parameters");
        assert_eq!(text[0].text, params().to_text());
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(buf, rgba);
    }

    #[test]
    fn prompts_beyond_latin1_go_in_itxt() {
        let mut p = params();
        p.prompt = "japanese “congratulations” button:: 🍎 りんご".into();
        let bytes = encode_png(&[0; 4], 1, 1, &p).unwrap();
        let reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let info = reader.info();
        assert!(info.uncompressed_latin1_text.is_empty());
        assert_eq!(info.utf8_text[0].keyword, "parameters");
        assert_eq!(info.utf8_text[0].get_text().unwrap(), p.to_text());
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("easel-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.png");
        check_writable(&path).unwrap();
        write_atomic(&path, b"abc").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.png")]);
        let missing = dir.join("no-such-dir").join("y.png");
        let err = check_writable(&missing).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
