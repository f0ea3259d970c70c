//! One `.safetensors` file, memory-mapped: its header is parsed and checked
//! against the file's size when it is opened (a truncated download fails there,
//! with the sizes named), and a tensor is converted to f32 only when asked for.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, SafeTensorError};
use safetensors::Dtype;
use serde_json::Value;

use crate::error::{Error, Result};

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

/// Which elements of a stored tensor a model reads as one whole tensor: a
/// single-file checkpoint stores some of diffusers' tensors in another shape
/// (diffusers' `conv_attn_to_linear`, `convert_open_clip_checkpoint`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Part {
    #[default]
    Whole,
    /// Every element, trailing dimensions of size 1 dropped: a 1x1 conv's
    /// `[out, in, 1, 1]` read as a Linear's `[out, in]`.
    Squeezed,
    /// Chunk `index` of `count` equal chunks along the first dimension
    /// (`torch.chunk`): OpenCLIP's fused `in_proj_weight` `[3 * d, d]` read as
    /// `q_proj`, `k_proj`, `v_proj` `[d, d]`.
    Chunk { index: usize, count: usize },
}

impl Part {
    /// The part's shape and its element range in the stored tensor, or `None`
    /// when the stored tensor cannot be cut that way.
    pub fn locate(&self, stored: &[usize]) -> Option<(Vec<usize>, Range<usize>)> {
        let numel: usize = stored.iter().product();
        match *self {
            Part::Whole => Some((stored.to_vec(), 0..numel)),
            Part::Squeezed => {
                let kept = stored.len() - stored.iter().rev().take_while(|&&d| d == 1).count();
                Some((stored[..kept.max(1)].to_vec(), 0..numel))
            }
            Part::Chunk { index, count } => {
                let rows = *stored.first()?;
                if count == 0 || index >= count || !rows.is_multiple_of(count) {
                    return None;
                }
                let mut shape = stored.to_vec();
                shape[0] = rows / count;
                let len: usize = shape.iter().product();
                Some((shape, index * len..(index + 1) * len))
            }
        }
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
        super::regular_file(&path)?;
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
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.metadata.metadata().as_ref()
    }

    pub fn len(&self) -> usize {
        self.metadata.offset_keys().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data section: every tensor's bytes, after the header (what A1111 and
    /// kohya's scripts hash to name a LoRA file).
    pub fn data_bytes(&self) -> &[u8] {
        &self.mmap[self.data_start..]
    }

    /// File size in bytes.
    pub fn file_bytes(&self) -> usize {
        self.mmap.len()
    }

    /// Dtype and shape of `part` of the tensor `name`; `None` when there is no
    /// such tensor or it cannot be cut that way.
    pub fn part_info(&self, name: &str, part: Part) -> Option<TensorInfo> {
        let info = self.info(name)?;
        let (shape, _) = part.locate(&info.shape)?;
        Some(TensorInfo { shape, ..info })
    }

    /// The raw little-endian bytes of `part` of a tensor (header offsets were
    /// validated on open).
    fn raw(&self, name: &str, part: Part) -> Option<&[u8]> {
        let info = self.metadata.info(name)?;
        let (_, elements) = part.locate(&info.shape)?;
        let size = info.dtype.bitsize() / 8;
        let begin = self.data_start + info.data_offsets.0;
        Some(&self.mmap[begin + elements.start * size..begin + elements.end * size])
    }

    /// A tensor converted to f32 on the host; f32, f16 and bf16 are accepted.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.part_to_f32(name, Part::Whole)
    }

    /// [`SafetensorsFile::to_f32`] of `part` of the tensor.
    pub fn part_to_f32(&self, name: &str, part: Part) -> Result<Vec<f32>> {
        let (info, raw) = match (self.info(name), self.raw(name, part)) {
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

impl SafetensorsFile {
    /// A tensor as f16 on the host: an F16 tensor as stored, BF16 and F32
    /// rounded to nearest, refusing (naming the tensor) a finite value beyond
    /// f16's range, which would become an infinity.
    pub fn to_f16(&self, name: &str) -> Result<Vec<f16>> {
        self.part_to_f16(name, Part::Whole)
    }

    /// [`SafetensorsFile::to_f16`] of `part` of the tensor.
    pub fn part_to_f16(&self, name: &str, part: Part) -> Result<Vec<f16>> {
        if let (Some(info), Some(raw)) = (self.info(name), self.raw(name, part)) {
            if info.dtype == Dtype::F16 {
                return Ok(raw
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect());
            }
        }
        let wide = self.part_to_f32(name, part)?;
        crate::gpu::tensor::to_f16(&format!("tensor `{name}`"), wide.into_iter())
            .map_err(|e| Error::model(&self.path, e.to_string()))
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
    let header: Value =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(header_len)?)?).ok()?;
    let end = header
        .as_object()?
        .values()
        .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    // Offsets come from the file: add them without wrapping.
    8usize
        .checked_add(header_len)?
        .checked_add(usize::try_from(end).ok()?)
}
