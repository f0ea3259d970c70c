//! The tensor names of the two LoRA file formats, grouped into modules (one
//! `down`/`up` pair and an optional `alpha` per adapted layer):
//!
//! - kohya / A1111 (sd-scripts): `lora_unet_{path}` and `lora_te_{path}`, the
//!   diffusers / transformers module path with `.` written `_`, then
//!   `.lora_down.weight`, `.lora_up.weight`, `.alpha`;
//! - diffusers / peft (`save_lora_weights`): `unet.{path}` and
//!   `text_encoder.{path}`, the module path as is, then `.lora_A.weight` (down)
//!   and `.lora_B.weight` (up); diffusers' older `.lora.down.weight` /
//!   `.lora.up.weight` spelling is read too.
//!
//! Every tensor must be one of these: anything else (an SDXL LoRA's
//! `lora_te1_`, LyCORIS' `hada_` / `lokr_` factors, DoRA's `dora_scale`) is an
//! error that names it, never skipped.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// The model component a LoRA module adapts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Unet,
    TextEncoder,
}

impl Component {
    /// Its folder in a model (and its prefix in the diffusers format).
    pub fn name(self) -> &'static str {
        match self {
            Component::Unet => "unet",
            Component::TextEncoder => "text_encoder",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    Kohya,
    Diffusers,
}

/// One adapted layer: where it is and the names of its tensors.
#[derive(Clone, Debug)]
pub struct Module {
    pub component: Component,
    pub format: Format,
    /// The layer's path as the file writes it (kohya: with `_` for `.`).
    pub path: String,
    pub down: String,
    pub up: String,
    pub alpha: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Down,
    Up,
    Alpha,
}

const PREFIXES: &[(&str, Component, Format)] = &[
    ("lora_unet_", Component::Unet, Format::Kohya),
    ("lora_te_", Component::TextEncoder, Format::Kohya),
    ("unet.", Component::Unet, Format::Diffusers),
    ("text_encoder.", Component::TextEncoder, Format::Diffusers),
];

const SUFFIXES: &[(&str, Format, Part)] = &[
    (".lora_down.weight", Format::Kohya, Part::Down),
    (".lora_up.weight", Format::Kohya, Part::Up),
    (".alpha", Format::Kohya, Part::Alpha),
    (".lora_A.weight", Format::Diffusers, Part::Down),
    (".lora_B.weight", Format::Diffusers, Part::Up),
    (".lora.down.weight", Format::Diffusers, Part::Down),
    (".lora.up.weight", Format::Diffusers, Part::Up),
    (".alpha", Format::Diffusers, Part::Alpha),
];

/// Which module and part `key` is, if it is a LoRA tensor easel reads.
fn classify(key: &str) -> Option<(Component, Format, &str, Part)> {
    let &(prefix, component, format) = PREFIXES.iter().find(|(p, ..)| key.starts_with(p))?;
    let rest = &key[prefix.len()..];
    let &(suffix, _, part) = SUFFIXES
        .iter()
        .find(|(s, f, _)| *f == format && rest.ends_with(s))?;
    let path = &rest[..rest.len() - suffix.len()];
    (!path.is_empty()).then_some((component, format, path, part))
}

/// Why a tensor name is not one easel reads, as specifically as the name tells.
fn unknown(key: &str) -> String {
    let why = if key.starts_with("lora_te1_")
        || key.starts_with("lora_te2_")
        || key.starts_with("text_encoder_2.")
    {
        "two text encoders: a LoRA for SDXL, not for this model"
    } else if ["hada_", "lokr_", ".oft_", "lora_mid"]
        .iter()
        .any(|m| key.contains(m))
    {
        "a LyCORIS factor (LoHa, LoKr, OFT, LoCon's mid): only plain LoRA / LoCon is read"
    } else if key.contains("dora_scale") || key.contains("lora_magnitude_vector") {
        "DoRA: only plain LoRA / LoCon is read"
    } else {
        "expected kohya's `lora_unet_*` / `lora_te_*` with `.lora_down.weight`, \
         `.lora_up.weight`, `.alpha`, or diffusers' `unet.*` / `text_encoder.*` with \
         `.lora_A.weight`, `.lora_B.weight`"
    };
    format!("tensor `{key}` is not a LoRA tensor easel reads ({why})")
}

/// Group a file's tensor names into modules; an unknown name, or a module
/// without both its down and up matrix, is an error naming the tensor.
pub fn modules(path: &Path, names: &[String]) -> Result<Vec<Module>> {
    type Parts = [Option<String>; 3];
    let mut grouped: BTreeMap<(Component, Format, String), Parts> = BTreeMap::new();
    for key in names {
        let (component, format, module, part) =
            classify(key).ok_or_else(|| Error::model(path, unknown(key)))?;
        let slot = &mut grouped
            .entry((component, format, module.to_string()))
            .or_default()[part as usize];
        if slot.replace(key.clone()).is_some() {
            return Err(Error::model(
                path,
                format!("tensor `{key}`: a second tensor for the same module and part"),
            ));
        }
    }
    if grouped.is_empty() {
        return Err(Error::model(path, "no tensors: not a LoRA file"));
    }
    grouped
        .into_iter()
        .map(|((component, format, path_in_file), [down, up, alpha])| {
            let first = down.as_ref().or(up.as_ref()).or(alpha.as_ref());
            let first = first.expect("a module has a tensor").clone();
            match (down, up) {
                (Some(down), Some(up)) => Ok(Module {
                    component,
                    format,
                    path: path_in_file,
                    down,
                    up,
                    alpha,
                }),
                (None, _) => Err(Error::model(
                    path,
                    format!("`{first}` has no down (A) matrix"),
                )),
                (_, None) => Err(Error::model(
                    path,
                    format!("`{first}` has no up (B) matrix"),
                )),
            }
        })
        .collect()
}

/// The model's layer weight `module` adapts, among `names` (the component's
/// tensor names, as its model asks for them), or `None`.
///
/// kohya names are the module path with `.` written `_`, which is not
/// reversible (`down_blocks_0` could be `down_blocks.0` or `down.blocks_0`), so
/// the map goes the other way, as diffusers' `_convert_kohya_lora_to_diffusers`
/// and A1111 do: every layer weight of the model is written the kohya way and
/// looked up. Text-encoder paths are transformers 4's, under `text_model.`,
/// which transformers 5 no longer writes (both load; see `weights`).
pub fn target(module: &Module, names: &[&str]) -> Option<String> {
    let text = module.component == Component::TextEncoder;
    match module.format {
        Format::Kohya => names.iter().find_map(|name| {
            let layer = name.strip_suffix(".weight")?;
            let canonical = if text {
                format!("text_model.{}", layer.trim_start_matches("text_model."))
            } else {
                layer.to_string()
            };
            (canonical.replace('.', "_") == module.path).then(|| name.to_string())
        }),
        Format::Diffusers => {
            let layer = match text {
                true => module.path.trim_start_matches("text_model."),
                false => &module.path,
            };
            let name = format!("{layer}.weight");
            names.contains(&name.as_str()).then_some(name)
        }
    }
}
