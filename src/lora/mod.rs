//! LoRA files (`--lora FILE[:WEIGHT]`): small low-rank changes to a model's
//! layer weights, merged into them on the GPU as the model loads.
//!
//! A file is read whole when opened: every tensor must belong to a module of
//! one of the two formats in `keys` (kohya / A1111, diffusers / peft), or the
//! file is refused naming the first that does not. [`Lora::patch`] then finds
//! each module's layer among the component's own tensor names (the strict map
//! of `weights`; a module whose layer is missing or of another shape names
//! itself and the layer: a LoRA for another architecture) and registers the
//! change `W += scale · up @ down` with the component's [`Weights`], which
//! merges it as the layer loads (`ops::lora`, f16 weights staying f16).
//!
//! The scale is `WEIGHT · alpha / rank` (A1111's `multiplier · alpha / dim`):
//! alpha from the module's `.alpha` tensor; for the diffusers format without
//! one, from peft's `lora_alpha` / `alpha_pattern` in the file's
//! `lora_adapter_metadata` header (`alpha / √rank` under `use_rslora`), and
//! alpha = rank (scale `WEIGHT`) when the file says nothing, as diffusers does.

mod keys;

use std::path::PathBuf;

use sha2::{Digest, Sha256};

pub use keys::{Component, Format, Module};

use crate::error::{Error, Result};
use crate::weights::{Patch, SafetensorsFile, Weights};

/// `FILE[:WEIGHT]` as given to `--lora` or a job's `lora` list.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    /// The multiplier on every module's change (default 1).
    pub weight: f32,
}

impl std::str::FromStr for LoraSpec {
    type Err = String;

    /// The text after the last `:` is the weight when it is a number;
    /// otherwise the whole text is the file (so `C:\x.safetensors` stays a path).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (path, weight) = match s.rsplit_once(':') {
            Some((path, w)) if w.parse::<f32>().is_ok() => {
                (path, w.parse::<f32>().expect("checked"))
            }
            _ => (s, 1.0),
        };
        if path.is_empty() {
            return Err(format!(
                "`{s}`: expected FILE[:WEIGHT], e.g. style.safetensors:0.8"
            ));
        }
        if !weight.is_finite() {
            return Err(format!("`{s}`: the weight must be a finite number"));
        }
        Ok(Self {
            path: PathBuf::from(path),
            weight,
        })
    }
}

impl std::fmt::Display for LoraSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.weight)
    }
}

/// A LoRA as A1111 records it: `<lora:NAME:WEIGHT>` in the prompt line and
/// `NAME: HASH` in `Lora hashes`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LoraUsed {
    pub name: String,
    pub weight: f32,
    /// sha256 of the file's data section (after its header), hex; A1111
    /// records its first 12 digits.
    pub sha256: String,
}

/// An opened LoRA file: its modules, its name and hash for the PNG.
pub struct Lora {
    pub spec: LoraSpec,
    /// The file's name without `.safetensors` (what A1111's `<lora:NAME>` names).
    pub name: String,
    /// sha256 of the file's data section (after the header), hex: A1111's and
    /// kohya's LoRA hash (`sshs_model_hash`), unchanged by metadata edits.
    pub hash: String,
    pub modules: Vec<Module>,
    file: SafetensorsFile,
}

impl Lora {
    /// Open and check `spec`'s file: every tensor must be a LoRA tensor of a
    /// known format (no GPU; layers are matched by [`Lora::patch`]).
    pub fn open(spec: &LoraSpec) -> Result<Self> {
        let file = SafetensorsFile::open(&spec.path)?;
        let modules = keys::modules(&file.path, &file.names())?;
        let hash = crate::weights::hash::hex(&Sha256::digest(file.data_bytes()));
        let name = spec.path.file_stem().map_or_else(
            || spec.path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        Ok(Self {
            spec: spec.clone(),
            name,
            hash,
            modules,
            file,
        })
    }

    /// What the PNG and `--json` record of it.
    pub fn used(&self) -> LoraUsed {
        LoraUsed {
            name: self.name.clone(),
            weight: self.spec.weight,
            sha256: self.hash.clone(),
        }
    }

    /// Whether any module adapts `component`.
    pub fn adapts(&self, component: Component) -> bool {
        self.modules.iter().any(|m| m.component == component)
    }

    /// Register every module of `component` with its layer in `weights`; the
    /// first module whose layer is missing or does not fit is an error naming both.
    pub fn patch(&self, component: Component, weights: &mut Weights) -> Result<()> {
        let names: Vec<&str> = weights.names().collect();
        let mut patches = Vec::new();
        for module in self.modules.iter().filter(|m| m.component == component) {
            let Some(target) = keys::target(module, &names) else {
                return Err(self.unmatched(module, &names));
            };
            patches.push((target, self.module_patch(module)?));
        }
        patches
            .into_iter()
            .try_for_each(|(target, patch)| weights.add_patch(&target, patch))
    }

    fn unmatched(&self, module: &Module, names: &[&str]) -> Error {
        let near = crate::weights::nearest(&module.path, names.iter().copied())
            .map(|n| format!(" (nearest: `{n}`)"))
            .unwrap_or_default();
        Error::model(
            &self.file.path,
            format!(
                "`{}`: the model's {} has no layer `{}`{near}: a LoRA for another model?",
                module.down,
                module.component.name(),
                module.path
            ),
        )
    }

    /// One module's matrices as a [`Patch`] (`up` `[out, r]`, `down` `[r, K]`).
    fn module_patch(&self, module: &Module) -> Result<Patch> {
        let info = |key: &str| self.file.info(key).expect("listed tensor");
        let (down_shape, up_shape) = (info(&module.down).shape, info(&module.up).shape);
        let rank = down_shape.first().copied().unwrap_or(0);
        let up_fits =
            up_shape.len() >= 2 && up_shape[1] == rank && up_shape[2..].iter().all(|&d| d == 1);
        if rank == 0 || !up_fits {
            return Err(Error::model(
                &self.file.path,
                format!(
                    "`{}` {up_shape:?} does not pair with `{}` {down_shape:?} (up must be [out, rank])",
                    module.up, module.down
                ),
            ));
        }
        Ok(Patch {
            file: self.file.path.clone(),
            source: module.down.clone(),
            up: self.finite(&module.up)?,
            down: self.finite(&module.down)?,
            rank,
            scale: self.spec.weight * self.alpha_scale(module, rank)?,
        })
    }

    fn finite(&self, key: &str) -> Result<Vec<f32>> {
        let data = self.file.to_f32(key)?;
        match data.iter().position(|v| !v.is_finite()) {
            None => Ok(data),
            Some(i) => Err(Error::model(
                &self.file.path,
                format!(
                    "tensor `{key}` holds a non-finite value ({}) at index {i}",
                    data[i]
                ),
            )),
        }
    }

    /// `alpha / rank` for `module` (see the module docs for where alpha comes from).
    fn alpha_scale(&self, module: &Module, rank: usize) -> Result<f32> {
        if let Some(key) = &module.alpha {
            let alpha = self.finite(key)?;
            return match alpha.as_slice() {
                [a] => Ok(a / rank as f32),
                _ => Err(Error::model(
                    &self.file.path,
                    format!(
                        "tensor `{key}`: alpha must be one number, found {}",
                        alpha.len()
                    ),
                )),
            };
        }
        match module.format {
            Format::Kohya => Ok(1.0),
            Format::Diffusers => peft_scale(&self.file, module, rank),
        }
    }
}

/// peft's scale from the `lora_adapter_metadata` header diffusers writes
/// (`{component}.lora_alpha`, `.alpha_pattern`, `.use_rslora`, `.use_dora`);
/// 1 when there is none (diffusers then takes alpha = rank).
fn peft_scale(file: &SafetensorsFile, module: &Module, rank: usize) -> Result<f32> {
    let Some(text) = file.metadata().and_then(|m| m.get("lora_adapter_metadata")) else {
        return Ok(1.0);
    };
    let bad = |what: &str| Error::model(&file.path, format!("`lora_adapter_metadata`: {what}"));
    let meta: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let field = |name: &str| meta.get(format!("{}.{name}", module.component.name()));
    if field("use_dora").and_then(|v| v.as_bool()) == Some(true) {
        return Err(bad("use_dora: DoRA is not read, only plain LoRA / LoCon"));
    }
    // peft matches a pattern key against the end of the module path, whole segments.
    let pattern = field("alpha_pattern")
        .and_then(|p| p.as_object())
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| module.path == **k || module.path.ends_with(&format!(".{k}")))
                .map(|(_, v)| v)
        });
    let alpha = match pattern.or(field("lora_alpha")) {
        None => return Ok(1.0),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| bad("lora_alpha is not a number"))? as f32,
    };
    let rslora = field("use_rslora").and_then(|v| v.as_bool()) == Some(true);
    Ok(match rslora {
        true => alpha / (rank as f32).sqrt(),
        false => alpha / rank as f32,
    })
}

/// Register the modules of every LoRA in `loras` that adapt `component`.
pub fn patch_all(loras: &[Lora], component: Component, weights: &mut Weights) -> Result<()> {
    loras.iter().try_for_each(|l| l.patch(component, weights))
}
