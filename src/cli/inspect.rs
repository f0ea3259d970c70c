//! `easel inspect PATH`: what a model folder holds, or exactly what is wrong
//! with it. Reads headers only (memory-mapped), never opens a GPU.
//!
//! Everything that can be listed is listed, even in a partial folder; each
//! problem (missing folder, no weights, a corrupt file, a component that
//! model_index.json names but that is not there) is reported on stderr with its
//! path, and any problem makes the command exit with code 2.

use std::path::{Path, PathBuf};

use easel::weights::{self, Config, SafetensorsFile, TEXT_MODEL_PREFIX};
use easel::{Error, Result};
use serde_json::Value;

/// Longest config value shown before it is cut.
const VALUE_WIDTH: usize = 60;

/// Counts over one file, one component or the whole model.
#[derive(Default, Clone, Copy)]
struct Totals {
    tensors: usize,
    bytes: usize,
    params: usize,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.tensors += other.tensors;
        self.bytes += other.bytes;
        self.params += other.params;
    }

    fn line(&self) -> String {
        format!(
            "{} tensors, {} ({} bytes), {} parameters",
            self.tensors,
            human_bytes(self.bytes as u64),
            self.bytes,
            self.params
        )
    }
}

/// What a walk over the folder found.
#[derive(Default)]
struct Report {
    totals: Totals,
    problems: Vec<Error>,
}

/// Inspect `path`, or the model easel loads when none is named
/// (`easel::model_dir::resolve`).
pub fn run(path: Option<&Path>) -> Result<()> {
    let path = &easel::model_dir::resolve(path)?;
    if !path.exists() {
        return Err(Error::model(path, "no such file or folder"));
    }
    let mut report = Report::default();
    if path.is_file() {
        println!("{}", path.display());
        if super::checkpoint::describe(path, &mut report.problems) {
            list_file(path, "  ", &mut report);
        }
    } else {
        list_model(path, &mut report);
    }
    finish(report)
}

/// Print every problem but the last on stderr; the last becomes the exit status.
fn finish(mut report: Report) -> Result<()> {
    let last = report.problems.pop();
    for problem in &report.problems {
        eprintln!("easel: {problem}");
    }
    last.map_or(Ok(()), Err)
}

fn list_model(dir: &Path, report: &mut Report) {
    println!("{}/", dir.display());
    let index = dir.join("model_index.json");
    let own_config = dir.join("config.json").is_file();
    let subdirs: Vec<PathBuf> = match weights::list_dir(dir) {
        Ok(entries) => entries.into_iter().filter(|p| p.is_dir()).collect(),
        Err(e) => return report.problems.push(e),
    };
    if index.is_file() {
        list_model_index(&index, dir, report);
    } else if !own_config {
        report.problems.push(Error::model(
            dir,
            "no model_index.json (a pipeline folder) or config.json (a component folder)",
        ));
    }
    // A component folder itself (unet/, or a transformers model), then any sub-folders.
    if own_config || has_safetensors(dir) {
        list_component(dir, ".", report);
    }
    for sub in &subdirs {
        let name = sub.file_name().unwrap_or_default().to_string_lossy();
        list_component(sub, &format!("{name}/"), report);
    }
    println!("total: {}", report.totals.line());
    if !has_safetensors(dir) && !subdirs.iter().any(|d| has_safetensors(d)) {
        report.problems.push(Error::model(
            dir,
            "no .safetensors weights in this folder or its sub-folders",
        ));
    }
}

/// model_index.json: its keys, and a problem for each component folder it names
/// that is missing (entries like `"safety_checker": [null, null]` name none).
fn list_model_index(index: &Path, dir: &Path, report: &mut Report) {
    let config = match Config::read(index) {
        Ok(config) => config,
        Err(e) => return report.problems.push(e),
    };
    println!("  model_index.json");
    print_fields(&config, "    ");
    for (name, value) in &config.fields {
        let names_component = value
            .as_array()
            .is_some_and(|pair| pair.len() == 2 && pair.iter().all(Value::is_string));
        if names_component && !dir.join(name).is_dir() {
            report.problems.push(Error::model(
                dir.join(name),
                format!("model_index.json names component `{name}` but its folder is missing"),
            ));
        }
    }
}

/// One component folder: its JSON configs, its weights, other files by size.
fn list_component(dir: &Path, label: &str, report: &mut Report) {
    println!("  {label}");
    let entries = match weights::list_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return report.problems.push(e),
    };
    let mut component = Totals::default();
    for path in entries.iter().filter(|p| p.is_file()) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".safetensors") {
            component.add(list_file(path, "    ", report));
        } else if name.ends_with("config.json") && name != "model_index.json" {
            match Config::read(path) {
                Ok(config) => {
                    println!("    {name}");
                    print_fields(&config, "      ");
                    if let Some(note) = super::checkpoint::inpainting_note(&config.fields) {
                        println!("      {note}");
                    }
                }
                Err(e) => report.problems.push(e),
            }
        } else if name != "model_index.json" {
            println!("    {name} ({})", human_bytes(file_len(path)));
        }
    }
    if dir.join("config.json").is_file() && !has_safetensors(dir) {
        report
            .problems
            .push(Error::model(dir, "config.json but no .safetensors weights"));
    } else if has_safetensors(dir) {
        // Which files a model would load, or why that is ambiguous.
        if let Err(e) = weights::weight_files(dir) {
            report.problems.push(e);
        }
        println!("    {label} total: {}", component.line());
    }
    report.totals.add(component);
}

/// One .safetensors file: every tensor with dtype and shape, then its totals.
fn list_file(path: &Path, indent: &str, report: &mut Report) -> Totals {
    let file = match SafetensorsFile::open(path) {
        Ok(file) => file,
        Err(e) => {
            report.problems.push(e);
            return Totals::default();
        }
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    println!("{indent}{name} ({})", human_bytes(file.file_bytes() as u64));
    let names = file.names();
    if !names.is_empty() && names.iter().all(|n| n.starts_with(TEXT_MODEL_PREFIX)) {
        println!("{indent}  every name starts with `{TEXT_MODEL_PREFIX}` (transformers 4 layout)");
    }
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let mut totals = Totals::default();
    for tensor in &names {
        let info = file.info(tensor).expect("name from the same header");
        println!(
            "{indent}  {tensor:<width$}  {:<4}  {:?}",
            info.dtype.to_string(),
            info.shape
        );
        totals.add(Totals {
            tensors: 1,
            bytes: info.bytes(),
            params: info.numel(),
        });
    }
    println!("{indent}  {}", totals.line());
    totals
}

/// `name = value` per field, values as compact JSON cut to VALUE_WIDTH characters.
fn print_fields(config: &Config, indent: &str) {
    for (name, value) in &config.fields {
        let text = value.to_string();
        let short = if text.chars().count() > VALUE_WIDTH {
            let cut: String = text.chars().take(VALUE_WIDTH - 3).collect();
            format!("{cut}...")
        } else {
            text
        };
        println!("{indent}{name} = {short}");
    }
}

fn has_safetensors(dir: &Path) -> bool {
    weights::list_dir(dir).is_ok_and(|entries| {
        entries
            .iter()
            .any(|p| p.is_file() && p.to_string_lossy().ends_with(".safetensors"))
    })
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
