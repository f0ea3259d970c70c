//! `easel inspect FILE` on a single-file checkpoint: what easel makes of it
//! before any loading (`easel::models::single_file`): the release its layout
//! belongs to, the prediction type and where it comes from, dtypes, and per
//! model its tensors, parameters and inferred configuration; a pickle is
//! recognised by its name or first bytes and reported, never read.

use std::collections::BTreeMap;
use std::path::Path;

use easel::models::single_file::{self, infer, names, Version};
use easel::weights::SafetensorsFile;
use easel::Error;
use serde_json::Value;

/// The models of a single file, by prefix, in the order they are described.
const MODELS: [(&str, &str); 4] = [
    ("unet", names::UNET),
    ("vae", names::VAE),
    ("text_encoder", names::CLIP),
    ("text_encoder", names::OPEN_CLIP),
];

/// Describe `path` if it is a pickle or a Stable Diffusion single file; other
/// files are left to the plain tensor listing. Problems go to `problems`.
/// Returns whether the tensors may be listed (not a pickle's).
pub fn describe(path: &Path, problems: &mut Vec<Error>) -> bool {
    if let Err(e) = single_file::refuse_pickle(path) {
        println!("  a PyTorch pickle checkpoint: not read");
        problems.push(e);
        return false;
    }
    if let Ok(file) = SafetensorsFile::open(path) {
        summarise(&file, problems);
    }
    true
}

/// The single file's release, prediction, models and inferred configs (nothing
/// for a file that is no Stable Diffusion checkpoint).
fn summarise(file: &SafetensorsFile, problems: &mut Vec<Error>) {
    let version = match Version::detect(file) {
        Ok(version) => version,
        Err(e) if is_stable_diffusion(file) => return problems.push(e),
        Err(_) => return,
    };
    println!("  single-file checkpoint: {}", version.name());
    let (prediction, source) = match single_file::metadata_prediction(file) {
        Some(p) => (p, "the file's modelspec metadata"),
        None if version == Version::V1 => (
            easel::schedulers::PredictionType::Epsilon,
            "SD 1.x's default",
        ),
        None => (
            easel::schedulers::PredictionType::VPrediction,
            "SD 2.x's default (2.1 768; --prediction epsilon for 2.x-base)",
        ),
    };
    let v = prediction == easel::schedulers::PredictionType::VPrediction;
    let shown = if v { "v" } else { "epsilon" };
    println!("  prediction: {shown} ({source}; --prediction overrides)");
    for (label, prefix) in MODELS {
        if file.names().iter().any(|n| n.starts_with(prefix)) {
            println!(
                "  {label} ({prefix}*): {}",
                counts(file, |n| n.starts_with(prefix))
            );
        }
    }
    let other = |n: &str| !MODELS.iter().any(|(_, p)| n.starts_with(p));
    if file.names().iter().any(|n| other(n)) {
        println!("  other (not read): {}", counts(file, other));
    }
    let inferred = [
        ("unet", infer::unet(file, version, v)),
        ("vae", infer::vae(file)),
        ("text_encoder", infer::text_encoder(file, version)),
    ];
    for (label, config) in inferred {
        match config {
            Ok(config) => {
                println!("  inferred {label} config: {}", brief(&config));
                let fields = config.as_object().into_iter();
                fields
                    .filter_map(inpainting_note)
                    .for_each(|n| println!("  {n}"));
            }
            Err(e) => problems.push(e),
        }
    }
}

/// A line saying that a UNet config is a dedicated inpainting UNet's
/// (`in_channels` = 2·`out_channels` + 1, SD-1.5-inpainting's 9), if it is.
pub fn inpainting_note(config: &serde_json::Map<String, Value>) -> Option<String> {
    let count = |k: &str| config.get(k).and_then(Value::as_u64);
    let (c_in, c) = (count("in_channels")?, count("out_channels")?);
    let unet = config.get("_class_name") == Some(&Value::from("UNet2DConditionModel"));
    (unet && c_in == 2 * c + 1).then(|| {
        format!(
            "an inpainting UNet: in_channels {c_in} = {c} latents + the mask + {c} masked-image \
             latents (runs need --init and --mask)"
        )
    })
}

/// Whether the file is meant as a Stable Diffusion checkpoint at all (any of
/// the original layout's prefixes, or SDXL's).
fn is_stable_diffusion(file: &SafetensorsFile) -> bool {
    file.names().iter().any(|n| {
        MODELS.iter().any(|(_, p)| n.starts_with(p)) || n.starts_with("conditioner.embedders.")
    })
}

/// `N tensors, P parameters, B bytes (F16 x, F32 y)` over the names `keep` accepts.
fn counts(file: &SafetensorsFile, keep: impl Fn(&str) -> bool) -> String {
    let (mut tensors, mut params, mut bytes) = (0, 0, 0);
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    for name in file.names().iter().filter(|n| keep(n)) {
        let info = file.info(name).expect("name from the same header");
        tensors += 1;
        params += info.numel();
        bytes += info.bytes();
        *dtypes.entry(info.dtype.to_string()).or_default() += 1;
    }
    let dtypes: Vec<String> = dtypes.iter().map(|(d, n)| format!("{d} x{n}")).collect();
    format!(
        "{tensors} tensors, {params} parameters, {bytes} bytes ({})",
        dtypes.join(", ")
    )
}

/// The inferred config's fields as `key=value`, compact JSON values.
fn brief(config: &Value) -> String {
    let fields = config.as_object().into_iter().flatten();
    let shown: Vec<String> = fields
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    shown.join(" ")
}
