//! Checkpoints on disk → tensors on the GPU, by exact name.
//!
//! A model sub-folder in the Hugging Face layout (diffusers'
//! `diffusion_pytorch_model.safetensors`, transformers' `model.safetensors`, or
//! shards listed by a `*.safetensors.index.json`) is memory-mapped and its
//! headers parsed once; tensors are converted to f32 and uploaded only when a
//! model constructor asks for them by name and shape.
//!
//! The name map is strict (stable-diffusion.cpp #434, #1425: a doubled prefix
//! silently left every tensor unloaded): a missing tensor is an error naming the
//! nearest existing name, a shape or dtype mismatch names both, and
//! [`Weights::unused`] lists what a model never asked for so its constructor can
//! refuse leftovers. The only renaming is an explicit, detected prefix
//! ([`Weights::detect_prefix`]): transformers 4 wrote `CLIPTextModel` tensors as
//! `text_model.*`, transformers 5 writes them without it.
//!
//! [`Config`] reads the `config.json` beside the weights; its errors name the
//! file and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, SafeTensorError};
use safetensors::Dtype;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::tensor::Tensor;

/// diffusers' and transformers' single-file weight names, in the order tried.
pub const WEIGHT_FILES: [&str; 2] = ["diffusion_pytorch_model.safetensors", "model.safetensors"];

/// The prefix transformers 4 (and Stable Diffusion 1.x's `text_encoder/`) put on
/// every `CLIPTextModel` tensor; transformers 5 leaves it out.
pub const TEXT_MODEL_PREFIX: &str = "text_model.";

/// Dtype and shape of one tensor, as its file's header states them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.bitsize() / 8
    }
}

/// One memory-mapped `.safetensors` file with its parsed, validated header.
pub struct SafetensorsFile {
    pub path: PathBuf,
    mmap: Mmap,
    /// Bytes before the data section: the 8-byte length plus the JSON header.
    data_start: usize,
    metadata: Metadata,
}

impl SafetensorsFile {
    /// Map and validate a file: the header must be JSON that describes exactly
    /// the bytes that follow it (a truncated download fails here, not later).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::model(&path, e.to_string()))?;
        let len = file
            .metadata()
            .map_err(|e| Error::model(&path, e.to_string()))?
            .len();
        if len < 8 {
            return Err(Error::model(
                &path,
                format!("{len} bytes: too short to be a safetensors file (truncated?)"),
            ));
        }
        // SAFETY: the map is read-only and lives as long as `self`. Another process
        // truncating the file while it is mapped would fault; that is the usual
        // mmap caveat, accepted by every safetensors loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::model(&path, e.to_string()))?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&mmap)
            .map_err(|e| Error::model(&path, describe_header_error(&mmap, &e)))?;
        Ok(Self {
            path,
            mmap,
            data_start: 8 + header_len,
            metadata,
        })
    }

    /// Tensor names in file order (by data offset).
    pub fn names(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }

    pub fn info(&self, name: &str) -> Option<TensorInfo> {
        self.metadata.info(name).map(|i| TensorInfo {
            dtype: i.dtype,
            shape: i.shape.clone(),
        })
    }

    /// The `__metadata__` string map, if the writer left one.
    pub fn metadata(&self) -> Option<&std::collections::HashMap<String, String>> {
        self.metadata.metadata().as_ref()
    }

    pub fn len(&self) -> usize {
        self.metadata.offset_keys().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// File size in bytes.
    pub fn file_bytes(&self) -> usize {
        self.mmap.len()
    }

    /// The raw little-endian bytes of a tensor (header offsets were validated on open).
    fn raw(&self, name: &str) -> Option<&[u8]> {
        let info = self.metadata.info(name)?;
        let (begin, end) = info.data_offsets;
        Some(&self.mmap[self.data_start + begin..self.data_start + end])
    }

    /// A tensor converted to f32 on the host; f32, f16 and bf16 are accepted.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (info, raw) = match (self.info(name), self.raw(name)) {
            (Some(info), Some(raw)) => (info, raw),
            _ => return Err(Error::model(&self.path, format!("no tensor `{name}`"))),
        };
        // chunks_exact + from_le_bytes: the data section need not be 4-byte aligned.
        Ok(match info.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::model(
                    &self.path,
                    format!("tensor `{name}` has dtype {other}; easel loads F32, F16 or BF16"),
                ))
            }
        })
    }
}

/// Turn the safetensors crate's terse errors into what a user can act on.
fn describe_header_error(bytes: &[u8], e: &SafeTensorError) -> String {
    let declared = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes checked"));
    match e {
        SafeTensorError::InvalidHeaderLength | SafeTensorError::HeaderTooLarge => format!(
            "header length {declared} runs past the end of the file ({} bytes): \
             truncated, or not a safetensors file",
            bytes.len()
        ),
        SafeTensorError::MetadataIncompleteBuffer => {
            match declared_data_end(bytes, declared as usize) {
                Some(want) if want > bytes.len() => format!(
                    "truncated: the header describes {want} bytes, the file has {}",
                    bytes.len()
                ),
                Some(want) => format!(
                    "the header describes {want} bytes but the file has {} (trailing data or gaps)",
                    bytes.len()
                ),
                None => format!("corrupt header: {e}"),
            }
        }
        _ => format!("corrupt safetensors header: {e}"),
    }
}

/// File size the header implies: 8 + header + the largest data end offset.
fn declared_data_end(bytes: &[u8], header_len: usize) -> Option<usize> {
    let header: Value = serde_json::from_slice(bytes.get(8..8 + header_len)?).ok()?;
    let end = header
        .as_object()?
        .values()
        .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    Some(8 + header_len + end as usize)
}

/// The weights of one model component: one file or several shards, a detected
/// name prefix, and the set of tensors a model has asked for so far.
pub struct Weights {
    files: Vec<SafetensorsFile>,
    /// Full tensor name (with prefix) → index into `files`.
    index: BTreeMap<String, usize>,
    prefix: String,
    used: Mutex<BTreeSet<String>>,
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
        })
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
        self.index.contains_key(&self.full_name(name))
    }

    /// Dtype and shape of `name` without loading it (does not mark it used).
    pub fn info(&self, name: &str) -> Result<TensorInfo> {
        let (file, full) = self.locate(name)?;
        Ok(file.info(&full).expect("indexed name is in its file"))
    }

    /// Load `name` as f32 on the host, checking its shape; marks it used.
    pub fn get_f32(&self, name: &str, expected_shape: &[usize]) -> Result<Vec<f32>> {
        let (file, full) = self.locate(name)?;
        let info = file.info(&full).expect("indexed name is in its file");
        if info.shape != expected_shape {
            return Err(Error::model(
                &file.path,
                format!(
                    "tensor `{full}`: expected shape {expected_shape:?}, found {:?} ({})",
                    info.shape, info.dtype
                ),
            ));
        }
        let data = file.to_f32(&full)?;
        self.used.lock().expect("used set").insert(full);
        Ok(data)
    }

    /// Load `name` onto the GPU as an f32 tensor of `expected_shape`; marks it used.
    pub fn get(&self, ctx: &Context, name: &str, expected_shape: &[usize]) -> Result<Tensor> {
        let data = self.get_f32(name, expected_shape)?;
        Tensor::from_f32(ctx, &self.full_name(name), expected_shape, &data)
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

    fn full_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The path errors about the whole set name: the file, or the first shard's folder.
    fn display_path(&self) -> PathBuf {
        match self.files.as_slice() {
            [one] => one.path.clone(),
            [first, ..] => first.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            [] => PathBuf::from("(no files)"),
        }
    }

    fn locate(&self, name: &str) -> Result<(&SafetensorsFile, String)> {
        let full = self.full_name(name);
        match self.index.get(&full) {
            Some(&i) => Ok((&self.files[i], full)),
            None => Err(Error::model(
                self.display_path(),
                self.missing_message(&full),
            )),
        }
    }

    fn missing_message(&self, full: &str) -> String {
        let prefix = if self.prefix.is_empty() {
            "no prefix detected".to_string()
        } else {
            format!("prefix `{}` detected", self.prefix)
        };
        match nearest(full, self.index.keys().map(String::as_str)) {
            Some(near) => format!("no tensor `{full}` ({prefix}); nearest: `{near}`"),
            None => format!("no tensor `{full}`: the file has no tensors"),
        }
    }
}

/// The weight files of a component folder: diffusers' or transformers' single
/// file, else the shards a `*.safetensors.index.json` lists, else the folder's
/// only `*.safetensors`. Anything else is ambiguous and an error.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::model(dir, "no such folder"));
    }
    for name in WEIGHT_FILES {
        if dir.join(name).is_file() {
            return Ok(vec![dir.join(name)]);
        }
    }
    let listed = list_dir(dir)?;
    let with_suffix = |suffix: &str| -> Vec<PathBuf> {
        listed
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .cloned()
            .collect()
    };
    let indexes = with_suffix(".safetensors.index.json");
    if let [index] = indexes.as_slice() {
        return shard_files(index);
    }
    let files = with_suffix(".safetensors");
    match (indexes.len(), files.as_slice()) {
        (0, [one]) => Ok(vec![one.clone()]),
        (0, []) => Err(Error::model(dir, "no .safetensors file in this folder")),
        _ => Err(Error::model(
            dir,
            format!(
                "ambiguous weights: expected {} or one index json, found {}",
                WEIGHT_FILES.join(" or "),
                names_of(&[indexes, files].concat())
            ),
        )),
    }
}

/// Sorted entries of a folder.
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::model(dir, e.to_string()))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    Ok(paths)
}

fn names_of(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    names.join(", ")
}

/// The distinct files a sharded checkpoint's `weight_map` points at, in name order.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let json = read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::model(index, "no `weight_map` object"))?;
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::model(index, format!("weight_map.{tensor}: expected a file name"))
        })?;
        files.insert(file.to_string());
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
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

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::model(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| Error::model(path, format!("invalid JSON: {e}")))
}

/// A `config.json` (or any JSON object file) with field access whose errors
/// name the file and the field. Typed configs use [`Config::parse`] with
/// `#[serde(default = ...)]` on each field, documenting the default there.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub fields: serde_json::Map<String, Value>,
}

impl Config {
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        match read_json(&path)? {
            Value::Object(fields) => Ok(Self { path, fields }),
            _ => Err(Error::model(&path, "expected a JSON object")),
        }
    }

    /// A required field.
    pub fn get<T: DeserializeOwned>(&self, field: &str) -> Result<T> {
        match self.fields.get(field) {
            Some(value) => self.convert(field, value),
            None => Err(Error::model(&self.path, format!("missing field `{field}`"))),
        }
    }

    /// An optional field: `default` when absent or null, an error when present
    /// with the wrong type.
    pub fn get_or<T: DeserializeOwned>(&self, field: &str, default: T) -> Result<T> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(value) => self.convert(field, value),
        }
    }

    /// The whole file as a typed struct (serde defaults apply to absent fields).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(Value::Object(self.fields.clone()))
            .map_err(|e| Error::model(&self.path, e.to_string()))
    }

    fn convert<T: DeserializeOwned>(&self, field: &str, value: &Value) -> Result<T> {
        T::deserialize(value).map_err(|e| Error::model(&self.path, format!("field `{field}`: {e}")))
    }
}
