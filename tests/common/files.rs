//! Model files for tests: a temporary folder removed on drop, and safetensors
//! files written with the safetensors crate's own serializer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A fresh folder under the system temp dir, deleted when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("easel-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Write `text` to `rel` (creating parent folders); returns the full path.
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One tensor to write: name, dtype, shape, little-endian bytes.
pub struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

pub fn f32s(name: &str, shape: &[usize], values: &[f32]) -> Entry {
    entry(
        name,
        Dtype::F32,
        shape,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

pub fn f16s(name: &str, shape: &[usize], values: &[f32]) -> Entry {
    let bytes = values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    entry(name, Dtype::F16, shape, bytes)
}

pub fn bf16s(name: &str, shape: &[usize], values: &[f32]) -> Entry {
    let bytes = values
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect();
    entry(name, Dtype::BF16, shape, bytes)
}

pub fn i64s(name: &str, shape: &[usize], values: &[i64]) -> Entry {
    entry(
        name,
        Dtype::I64,
        shape,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// An f32 tensor of `shape` filled with 0, 1, 2, ...
pub fn ramp(name: &str, shape: &[usize]) -> Entry {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
    f32s(name, shape, &values)
}

fn entry(name: &str, dtype: Dtype, shape: &[usize], bytes: Vec<u8>) -> Entry {
    Entry {
        name: name.to_string(),
        dtype,
        shape: shape.to_vec(),
        bytes,
    }
}

/// The bytes of a safetensors file holding `entries`.
pub fn safetensors_bytes(entries: &[Entry]) -> Vec<u8> {
    let views = entries.iter().map(|e| {
        let view = TensorView::new(e.dtype, e.shape.clone(), &e.bytes).unwrap();
        (e.name.clone(), view)
    });
    safetensors::serialize(views, None).unwrap()
}

/// The tiny random pixel pipeline (tests/golden/pipeline, made by
/// tools/make_golden.py) with CLIP's full tokenizer (weights/easel-emoji/clip_tokenizer), assembled once per
/// test binary in a temp folder.
pub fn tiny_pipeline() -> &'static Path {
    static DIR: std::sync::OnceLock<TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = TempDir::new("pipeline");
        copy_dir(&root.join("tests/golden/pipeline"), dir.path());
        copy_dir(
            &root.join("weights/easel-emoji/clip_tokenizer"),
            &dir.path().join("tokenizer"),
        );
        dir
    })
    .path()
}

/// A tiny latent pipeline (tests/golden/latent_pipeline: UNet over 8x8 latents,
/// VAE to 16x16) with the pixel pipeline's text encoder and scorer and the
/// full CLIP tokenizer.
#[allow(dead_code)]
pub fn tiny_latent_pipeline() -> &'static Path {
    static DIR: std::sync::OnceLock<TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = TempDir::new("latent-pipeline");
        copy_dir(&root.join("tests/golden/latent_pipeline"), dir.path());
        for part in ["text_encoder", "scorer"] {
            copy_dir(
                &root.join("tests/golden/pipeline").join(part),
                &dir.path().join(part),
            );
        }
        copy_dir(
            &root.join("weights/easel-emoji/clip_tokenizer"),
            &dir.path().join("tokenizer"),
        );
        dir
    })
    .path()
}

/// The tiny latent pipeline with a dedicated inpainting UNet
/// (tests/golden/img2img/unet9: in_channels 9, made by
/// tools/make_img2img_golden.py) instead of its own.
#[allow(dead_code)]
pub fn tiny_inpainting_pipeline() -> &'static Path {
    static DIR: std::sync::OnceLock<TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = TempDir::new("inpainting-pipeline");
        copy_dir(tiny_latent_pipeline(), dir.path());
        let unet = dir.path().join("unet");
        std::fs::remove_dir_all(&unet).unwrap();
        copy_dir(&root.join("tests/golden/img2img/unet9"), &unet);
        dir
    })
    .path()
}

/// Copy a folder tree (files and folders only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A batch folder's manifest records (a half-written line from a killed run is skipped).
pub fn manifest(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
