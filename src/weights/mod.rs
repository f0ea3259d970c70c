//! Checkpoints on disk → tensors on the GPU, by exact name.
//!
//! A model sub-folder in the Hugging Face layout (diffusers'
//! `diffusion_pytorch_model.safetensors`, transformers' `model.safetensors`, or
//! shards listed by a `*.safetensors.index.json`) is memory-mapped and its
//! headers parsed once; tensors are uploaded only when a model constructor
//! asks for them by name and shape: layer weights ([`Weights::get_weight`]) in
//! the precision [`WeightPrecision`] picks, everything else as f32.
//!
//! The name map is strict (stable-diffusion.cpp #434, #1425: a doubled prefix
//! silently left every tensor unloaded): a missing tensor is an error naming the
//! nearest existing name, a shape or dtype mismatch names both, and
//! [`Weights::unused`] lists what a model never asked for so its constructor can
//! refuse leftovers. The only renamings are an explicit, detected prefix
//! ([`Weights::detect_prefix`]: transformers 4 wrote `CLIPTextModel` tensors as
//! `text_model.*`, transformers 5 writes them without it) and a [`NameMap`] from
//! a model's names to another layout's, under one prefix of a file that holds
//! several models ([`Weights::rename`]: a single-file Stable Diffusion checkpoint).
//!
//! The files are found in `files` (which ones make a component) and read in
//! `safetensors` (one mapped file, its header checked against its size);
//! [`Config`], in `config`, reads the `config.json` beside them, with errors that
//! name the file and the field.

mod config;
mod files;
pub mod hash;
mod patch;
mod rows;
mod safetensors;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use self::safetensors::{Part, SafetensorsFile, TensorInfo};
pub use config::Config;
pub use files::{list_dir, regular_file, stream_file, weight_files, WEIGHT_FILES};
pub use patch::Patch;
pub use rows::RowOrder;

use crate::error::{Error, Result};

/// The prefix transformers 4 (and Stable Diffusion 1.x's `text_encoder/`) put on
/// every `CLIPTextModel` tensor; transformers 5 leaves it out.
pub const TEXT_MODEL_PREFIX: &str = "text_model.";

/// What precision layer weights take on the GPU (`--weights`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightPrecision {
    /// As the file stores them: f16 stays f16 (bf16 becomes f16), f32 stays f32.
    #[default]
    Auto,
    /// Everything f32 (f16 files are widened; exact).
    F32,
    /// Everything f16 (f32 files are rounded at load: half the memory).
    F16,
}

impl std::str::FromStr for WeightPrecision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            _ => Err(format!("`{s}`: expected auto, f32 or f16")),
        }
    }
}

impl WeightPrecision {
    /// The flag's value when it asks for a precision (`None` for `auto`).
    pub fn asked(self) -> Option<&'static str> {
        match self {
            Self::Auto => None,
            Self::F32 => Some("f32"),
            Self::F16 => Some("f16"),
        }
    }
}

/// A model's tensor names in another layout: where the tensor a model asks for
/// by `name` is stored (its name after the prefix, and which [`Part`] of it), or
/// `None` when the layout has no such tensor.
pub trait NameMap: Send + Sync {
    fn stored(&self, name: &str) -> Option<(String, Part)>;
}

/// The weights of one model component: one file or several shards, a detected
/// name prefix, and the set of tensors a model has asked for so far.
pub struct Weights {
    files: Vec<SafetensorsFile>,
    /// Full tensor name (with prefix) → index into `files`.
    index: BTreeMap<String, usize>,
    prefix: String,
    used: Mutex<BTreeSet<String>>,
    precision: WeightPrecision,
    /// The model's names → the files' (after `prefix`), when they differ.
    names: Option<Box<dyn NameMap>>,
    /// Low-rank patches (LoRA) by full tensor name, merged as the weight loads.
    patches: BTreeMap<String, Vec<Patch>>,
    /// Full names whose patches were merged.
    patched: Mutex<BTreeSet<String>>,
}

/// A layer weight in host memory ([`Weights::get_host_weight`]), as the GPU
/// would hold it: f16 or f32 values, row-major.
#[derive(Clone, Debug)]
pub enum HostWeight {
    F16(Vec<half::f16>),
    F32(Vec<f32>),
}

/// Where one tensor a model asked for is stored.
struct Located<'a> {
    file: &'a SafetensorsFile,
    /// Its full name in the file.
    full: String,
    part: Part,
}

impl Located<'_> {
    fn info(&self) -> Option<TensorInfo> {
        self.file.part_info(&self.full, self.part)
    }

    fn to_f32(&self) -> Result<Vec<f32>> {
        self.file.part_to_f32(&self.full, self.part)
    }
}

impl Weights {
    /// Load a component folder (e.g. `unet/`), choosing its weight files by
    /// [`weight_files`].
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_files(&weight_files(dir.as_ref())?)
    }

    /// Load explicit files; a tensor name may appear in only one of them.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let files = paths
            .iter()
            .map(SafetensorsFile::open)
            .collect::<Result<Vec<_>>>()?;
        let mut index = BTreeMap::new();
        for (i, file) in files.iter().enumerate() {
            for name in file.names() {
                if let Some(&first) = index.get(&name) {
                    let first: &SafetensorsFile = &files[first];
                    return Err(Error::model(
                        &file.path,
                        format!("tensor `{name}` is also in {}", first.path.display()),
                    ));
                }
                index.insert(name, i);
            }
        }
        Ok(Self {
            files,
            index,
            prefix: String::new(),
            used: Mutex::new(BTreeSet::new()),
            precision: WeightPrecision::Auto,
            names: None,
            patches: BTreeMap::new(),
            patched: Mutex::new(BTreeSet::new()),
        })
    }

    /// Keep only the tensors under `prefix` that `keep` accepts (after the
    /// prefix), and look a model's names up through `names`: one model of a
    /// file that holds several, in another layout. Call once after opening,
    /// before any `get`.
    pub fn rename(&mut self, prefix: &str, keep: impl Fn(&str) -> bool, names: Box<dyn NameMap>) {
        self.index
            .retain(|full, _| full.strip_prefix(prefix).is_some_and(&keep));
        self.prefix = prefix.to_string();
        self.names = Some(names);
    }

    /// Use `prefix` for every lookup if, and only if, every tensor name starts
    /// with it; returns whether it did. Call once after opening, before any `get`.
    pub fn detect_prefix(&mut self, prefix: &str) -> bool {
        let all = !self.index.is_empty() && self.index.keys().all(|n| n.starts_with(prefix));
        self.prefix = if all {
            prefix.to_string()
        } else {
            String::new()
        };
        all
    }

    /// The precision [`Weights::get_weight`] uploads in (default: as the file).
    pub fn set_precision(&mut self, precision: WeightPrecision) {
        self.precision = precision;
    }

    /// The prefix lookups use (empty when none was detected).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// Tensor names as a model asks for them (prefix removed), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(|n| &n[self.prefix.len()..])
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.stored(name)
            .is_some_and(|(full, _)| self.index.contains_key(&full))
    }

    /// Dtype and shape of `name` without loading it (does not mark it used).
    pub fn info(&self, name: &str) -> Result<TensorInfo> {
        let at = self.locate(name)?;
        at.info().ok_or_else(|| self.uncut(&at))
    }

    /// Load `name` as f32 on the host, checking its shape; marks it used.
    pub fn get_f32(&self, name: &str, expected_shape: &[usize]) -> Result<Vec<f32>> {
        let at = self.checked(name, expected_shape)?;
        let data = at.to_f32()?;
        check_finite(&at, data.iter().copied())?;
        self.used.lock().expect("used set").insert(at.full);
        Ok(data)
    }

    /// A layer weight kept in host memory ([`HostWeight`]) in the precision
    /// [`Weights::get_weight`] would give it on the GPU, for tables only a few
    /// rows of which a run reads (CLIP's token table); marks it used. A LoRA
    /// patch for it is refused: patches merge on the GPU.
    pub fn get_host_weight(&self, name: &str, expected_shape: &[usize]) -> Result<HostWeight> {
        let at = self.checked(name, expected_shape)?;
        let label = self.full_name(name);
        if self.patches.contains_key(&label) {
            return Err(Error::BadInput(format!(
                "{label}: a LoRA patches the token table, which easel keeps in host memory; \
                 such LoRAs are not supported"
            )));
        }
        let weight = self.layer_values(&at)?;
        self.used.lock().expect("used set").insert(at.full);
        Ok(weight)
    }

    /// A layer weight's values in the precision [`Weights::set_precision`]
    /// picked (f16 for an f16 or bf16 file under `Auto`, or always under
    /// `F16`), each checked finite: what both loaders hold.
    fn layer_values(&self, at: &Located) -> Result<HostWeight> {
        let stored = at.info().expect("checked").dtype;
        let half = match self.precision {
            WeightPrecision::Auto => stored != ::safetensors::Dtype::F32,
            WeightPrecision::F16 => true,
            WeightPrecision::F32 => false,
        };
        Ok(if half {
            let data = at.file.part_to_f16(&at.full, at.part)?;
            check_finite(at, data.iter().map(|h| h.to_f32()))?;
            HostWeight::F16(data)
        } else {
            let data = at.to_f32()?;
            check_finite(at, data.iter().copied())?;
            HostWeight::F32(data)
        })
    }

    /// Where `name` is stored, its shape checked against `expected_shape`.
    fn checked(&self, name: &str, expected_shape: &[usize]) -> Result<Located<'_>> {
        let at = self.locate(name)?;
        let info = at.info().ok_or_else(|| self.uncut(&at))?;
        if info.shape != expected_shape {
            return Err(Error::model(
                &at.file.path,
                format!(
                    "tensor `{}`: expected shape {expected_shape:?}, found {:?} ({})",
                    at.full, info.shape, info.dtype
                ),
            ));
        }
        Ok(at)
    }

    /// A stored tensor that cannot be cut into the part a model reads.
    fn uncut(&self, at: &Located) -> Error {
        let shape = at.file.info(&at.full).map(|i| i.shape).unwrap_or_default();
        Error::model(
            &at.file.path,
            format!(
                "tensor `{}` {shape:?}: cannot be read as {:?}",
                at.full, at.part
            ),
        )
    }

    /// Tensors (prefix removed) that no `get` has asked for yet, sorted.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().expect("used set");
        self.index
            .keys()
            .filter(|n| !used.contains(*n))
            .map(|n| n[self.prefix.len()..].to_string())
            .collect()
    }

    /// For a model constructor's last line: every tensor in the files must have
    /// been used, or the checkpoint does not match the config.
    pub fn check_all_used(&self) -> Result<()> {
        let unused = self.unused();
        if unused.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
        let more = unused.len().saturating_sub(shown.len());
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        Err(Error::model(
            self.display_path(),
            format!(
                "{} tensor(s) not used by the model (checkpoint and config.json disagree?): {}{tail}",
                unused.len(),
                shown.join(", ")
            ),
        ))
    }

    /// `name`'s full name in the files and the part of it the model reads.
    fn stored(&self, name: &str) -> Option<(String, Part)> {
        match &self.names {
            None => Some((format!("{}{name}", self.prefix), Part::Whole)),
            Some(map) => {
                let (stored, part) = map.stored(name)?;
                Some((format!("{}{stored}", self.prefix), part))
            }
        }
    }

    /// The name GPU tensors (and the errors about them) and patches go by: the
    /// full name, or, in another layout, the model's name.
    fn full_name(&self, name: &str) -> String {
        match &self.names {
            None => format!("{}{name}", self.prefix),
            Some(_) => name.to_string(),
        }
    }

    /// The path errors about the whole set name: the file, or the first shard's folder.
    fn display_path(&self) -> PathBuf {
        match self.files.as_slice() {
            [one] => one.path.clone(),
            [first, ..] => first.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            [] => PathBuf::from("(no files)"),
        }
    }

    fn locate(&self, name: &str) -> Result<Located<'_>> {
        let Some((full, part)) = self.stored(name) else {
            return Err(Error::model(
                self.display_path(),
                format!("no tensor for `{name}`: the file's layout has no counterpart"),
            ));
        };
        match self.index.get(&full) {
            Some(&i) => Ok(Located {
                file: &self.files[i],
                full,
                part,
            }),
            None => Err(Error::model(
                self.display_path(),
                self.missing_message(name, &full),
            )),
        }
    }

    fn missing_message(&self, name: &str, full: &str) -> String {
        let prefix = match (&self.names, self.prefix.is_empty()) {
            (Some(_), _) => format!("the model's `{name}`"),
            (None, true) => "no prefix detected".to_string(),
            (None, false) => format!("prefix `{}` detected", self.prefix),
        };
        match nearest(full, self.index.keys().map(String::as_str)) {
            Some(near) => format!("no tensor `{full}` ({prefix}); nearest: `{near}`"),
            None => format!("no tensor `{full}` ({prefix}): the file has no such tensors"),
        }
    }
}

/// A NaN or infinity in a weight spreads to every image: refuse the file.
fn check_finite(at: &Located, mut values: impl Iterator<Item = f32>) -> Result<()> {
    match values.position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => {
            let value = at.to_f32()?[i];
            let full = &at.full;
            Err(Error::model(
                &at.file.path,
                format!("tensor `{full}` holds a non-finite value ({value}) at index {i}"),
            ))
        }
    }
}

/// The name among `names` closest to `wanted`: one that contains it or is
/// contained in it whole (a doubled or missing prefix) first, then the smallest
/// edit distance, ties broken by the longer common suffix.
pub fn nearest<'a>(wanted: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names.min_by_key(|name| {
        let nested = name.ends_with(wanted) || wanted.ends_with(*name);
        (
            !nested,
            edit_distance(wanted, name),
            usize::MAX - common_suffix(wanted, name),
        )
    })
}

fn common_suffix(a: &str, b: &str) -> usize {
    a.bytes()
        .rev()
        .zip(b.bytes().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// Levenshtein distance over bytes (tensor names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
