//! The job file: one JSON object per line, each turned into a [`Job`] (a full
//! [`Request`] and its output path) by filling what the line leaves out from the
//! command line's flags. Everything that can be checked without a GPU is checked
//! here, so a bad line fails alone, with its line number, before any rendering.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::naming::{stable_name, with_loras, LoraHashes};
use super::MANIFEST;
use crate::lora::LoraSpec;
use crate::models::pipeline::PipelineConfig;
use crate::phases::Schedule;
use crate::request::{Request, Start};
use crate::schedulers::SamplerName;

/// What a job line leaves out comes from a template request (the command
/// line's flags); its prompt is not used.
pub type Defaults = Request;

/// One line of the job file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobLine {
    prompt: String,
    seed: Option<u64>,
    size: Option<String>,
    steps: Option<usize>,
    candidates: Option<usize>,
    guidance: Option<f32>,
    sampler: Option<String>,
    /// Karras sigmas (`--karras`).
    karras: Option<bool>,
    /// The negative prompt (`--negative`).
    negative: Option<String>,
    upscale: Option<usize>,
    /// `--schedule` phases.
    schedule: Option<String>,
    /// `--init`, `--strength`, `--mask`, `--mask-blur` (paths as the command line's).
    init: Option<PathBuf>,
    strength: Option<f64>,
    mask: Option<PathBuf>,
    mask_blur: Option<f32>,
    /// `--vae-tiles`: auto, off or a tile's side in pixels.
    vae_tiles: Option<String>,
    /// `--precision`: auto, f32 or f16.
    precision: Option<String>,
    /// LoRAs as `FILE[:WEIGHT]` (`--lora`), instead of the command line's.
    lora: Option<Vec<String>>,
    out: Option<String>,
}

/// A job ready to run: what to make and where it goes (relative to the output folder).
#[derive(Clone, Debug)]
pub struct Job {
    pub request: Request,
    pub output: PathBuf,
    /// The LoRAs the model is loaded with for this job: the line's `lora`, else `--lora`.
    pub loras: Vec<LoraSpec>,
}

/// A line of the job file: its index (0-based line number) and the job, or why it is bad.
#[derive(Debug)]
pub struct Entry {
    pub index: usize,
    pub job: std::result::Result<Job, String>,
}

/// `WxH` (also `WXH`), e.g. `32x32`.
pub fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("size `{}`: expected WxH, e.g. 32x32", s.escape_debug()))?;
    let n = |v: &str| {
        v.trim().parse::<usize>().map_err(|_| {
            format!(
                "size `{}`: `{}` is not a size",
                s.escape_debug(),
                v.escape_debug()
            )
        })
    };
    Ok((n(w)?, n(h)?))
}

/// The model a job file runs on: its configs, which every job is checked
/// against, and its [`model_key`](super::model_key) (the folder's name and
/// contents), part of each job's hash: another model makes other images, under
/// other names.
pub struct JobModel<'a> {
    pub config: &'a PipelineConfig,
    pub key: &'a str,
}

/// Parse a job file. Blank lines are not jobs but keep their index, so a job's index is
/// always its line number minus one. Jobs that would write the same file all fail
/// ([`fail_shared_outputs`]).
pub fn parse_jobs(text: &str, defaults: &Defaults, model: &JobModel) -> Vec<Entry> {
    let mut hashes = LoraHashes::default();
    let mut entries: Vec<Entry> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| Entry {
            index,
            job: parse_job(line, defaults, model, &mut hashes).map_err(|e| at_line(e, index + 1)),
        })
        .collect();
    fail_shared_outputs(&mut entries);
    entries
}

/// Jobs whose outputs are one file (the same `out`, or the same parameters and so the
/// same hashed name) fail, every one of them, with a message naming their lines: run in
/// turn, the first would write the file and a resume would then skip the others as
/// done, whatever they asked for. Decided over the whole file, so every shard agrees.
fn fail_shared_outputs(entries: &mut [Entry]) {
    let mut lines: HashMap<PathBuf, Vec<usize>> = HashMap::new();
    for entry in entries.iter() {
        if let Ok(job) = &entry.job {
            lines
                .entry(job.output.clone())
                .or_default()
                .push(entry.index + 1);
        }
    }
    for entry in entries.iter_mut() {
        let Ok(job) = &entry.job else { continue };
        let shared = &lines[&job.output];
        if shared.len() > 1 {
            let (last, rest) = shared.split_last().expect("two or more");
            let rest: Vec<String> = rest.iter().map(usize::to_string).collect();
            entry.job = Err(format!(
                "output {} is written by the jobs on lines {} and {last}: give each its own \
                 `out` (none of them is run)",
                job.output.display(),
                rest.join(", ")
            ));
        }
    }
}

/// serde_json places its errors on "line 1" of the one line it was given:
/// say the job file's line instead.
fn at_line(message: String, line: usize) -> String {
    match message.rsplit_once(" at line 1 column ") {
        Some((what, column)) => format!("{what} at line {line} column {column}"),
        None => message,
    }
}

fn parse_job(
    line: &str,
    d: &Defaults,
    model: &JobModel,
    hashes: &mut LoraHashes,
) -> std::result::Result<Job, String> {
    let j: JobLine = serde_json::from_str(line).map_err(|e| format!("bad job line: {e}"))?;
    let size = match &j.size {
        Some(s) => Some(parse_size(s)?),
        None => d.size,
    };
    let steps = j.steps.or(d.steps);
    let (sampler, karras) = match &j.sampler {
        Some(s) => {
            let name = SamplerName::parse(s).map_err(|e| e.to_string())?;
            (
                Some(name.sampler),
                name.karras || j.karras.unwrap_or(d.karras),
            )
        }
        None => (d.sampler, j.karras.unwrap_or(d.karras)),
    };
    let schedule = match &j.schedule {
        Some(text) => Some(Schedule::parse(text).map_err(|e| e.to_string())?),
        None => d.schedule.clone(),
    };
    let start = job_start(&j, d, model.config).map_err(|e| e.to_string())?;
    let request = Request {
        prompt: j.prompt,
        seed: j.seed.unwrap_or(d.seed),
        size,
        steps,
        candidates: j.candidates.or(d.candidates),
        guidance: j.guidance.or(d.guidance),
        sampler,
        karras,
        negative: j.negative.or_else(|| d.negative.clone()),
        upscale: j.upscale.or(d.upscale),
        schedule,
        start,
        vae_tiles: match &j.vae_tiles {
            Some(t) => t.parse().map_err(|e| format!("vae_tiles {e}"))?,
            None => d.vae_tiles,
        },
        precision: match &j.precision {
            Some(p) => p.parse().map_err(|e| format!("precision {e}"))?,
            None => d.precision,
        },
        ..d.clone()
    };
    // The model's defaults settled, so the name records what is made.
    let request = Request {
        candidates: Some(request.candidates_for(model.config)),
        upscale: Some(request.upscale_for(model.config)),
        ..request
    };
    // Everything the GPU is not needed for, as `easel generate` checks it.
    request.check(model.config).map_err(|e| e.to_string())?;
    let loras = match &j.lora {
        Some(list) => list
            .iter()
            .map(|s| s.parse::<LoraSpec>().map_err(|e| format!("lora {e}")))
            .collect::<std::result::Result<Vec<_>, _>>()?,
        None => model.config.loras.clone(),
    };
    // Opens each LoRA file (once per batch): a bad one fails its jobs here.
    let key = with_loras(model.key, &loras, hashes).map_err(|e| e.to_string())?;
    let output = match &j.out {
        Some(out) => checked_out(out)?,
        None => PathBuf::from(stable_name(&request, &key)),
    };
    Ok(Job {
        request,
        output,
        loras,
    })
}

/// A job's start picture: the line's `init` (with its `strength`, `mask` and
/// `mask_blur`, else the command line's or `model`'s defaults), else the command line's.
fn job_start(j: &JobLine, d: &Defaults, model: &PipelineConfig) -> crate::Result<Option<Start>> {
    let given = d.start.as_ref();
    let Some(init) = j.init.as_deref() else {
        if j.strength.is_some() || j.mask.is_some() || j.mask_blur.is_some() {
            return Err(crate::Error::BadInput(
                "`strength`, `mask` and `mask_blur` need an `init` picture".into(),
            ));
        }
        return Ok(given.cloned());
    };
    let strength = j.strength.or(given.map(|s| s.strength));
    let start = Start::open(init, strength.unwrap_or(Start::default_strength(model)))?;
    let blur = j.mask_blur.or(given.map(|s| s.mask_blur));
    Ok(Some(match &j.mask {
        Some(mask) => start.with_mask(mask, blur.unwrap_or(Start::DEFAULT_MASK_BLUR))?,
        None => start,
    }))
}

/// An `out` field: a relative path inside the output folder, `.` parts dropped (so
/// `./a.png` and `a.png` are one file); `.png` added if it has no extension. Hidden
/// names are easel's own (temp files, lock files), and so is the manifest.
fn checked_out(out: &str) -> std::result::Result<PathBuf, String> {
    let given = PathBuf::from(out);
    let inside = given
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    let path: PathBuf = given
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let Some(name) = path.file_name().filter(|_| inside) else {
        return Err(format!(
            "out `{out}`: must be a relative file path inside --out (no `..`, not absolute)"
        ));
    };
    if path == Path::new(MANIFEST) || name.to_string_lossy().starts_with('.') {
        return Err(format!(
            "out `{out}`: {MANIFEST} and names starting with `.` are easel's own files"
        ));
    }
    Ok(if path.extension().is_none() {
        path.with_extension("png")
    } else {
        path
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_plan::Precision;
    use crate::schedulers::Sampler;

    fn defaults() -> Defaults {
        Defaults {
            seed: 5,
            size: Some((16, 16)),
            steps: Some(4),
            candidates: Some(2),
            upscale: Some(1),
            ..Request::new("")
        }
    }

    /// The bundled model's configs (read once; no GPU).
    fn config() -> &'static PipelineConfig {
        static CONFIG: std::sync::OnceLock<PipelineConfig> = std::sync::OnceLock::new();
        CONFIG.get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/easel-emoji");
            PipelineConfig::read(&dir).expect("the bundled model's configs")
        })
    }

    fn model() -> JobModel<'static> {
        JobModel {
            config: config(),
            key: "m",
        }
    }

    fn job(line: &str) -> std::result::Result<Job, String> {
        parse_job(line, &defaults(), &model(), &mut LoraHashes::default())
    }

    #[test]
    fn job_lines_take_defaults_and_overrides() {
        let j = job(r#"{"prompt": "red apple"}"#).unwrap();
        assert_eq!(
            (j.request.seed, j.request.size, j.request.steps),
            (5, Some((16, 16)), Some(4))
        );
        let j = job(r#"{"prompt": "a", "seed": 9, "size": "32x16", "steps": 2, "sampler": "euler_a", "upscale": 2, "out": "x/y"}"#).unwrap();
        assert_eq!(
            (j.request.seed, j.request.size, j.request.steps),
            (9, Some((32, 16)), Some(2))
        );
        assert_eq!(j.request.sampler, Some(Sampler::EulerAncestral));
        assert_eq!(j.output, PathBuf::from("x/y.png"));
        assert!(!j.request.karras && j.request.negative.is_none());
        // A1111's spellings, the schedule in the sampler's name or on its own.
        for line in [
            r#"{"prompt": "a", "sampler": "DPM++ 2M Karras", "negative": "blur"}"#,
            r#"{"prompt": "a", "sampler": "dpm++2m", "karras": true, "negative": "blur"}"#,
        ] {
            let j = job(line).unwrap();
            assert_eq!(j.request.sampler, Some(Sampler::DpmSolverMultistep));
            assert!(j.request.karras, "{line}");
            assert_eq!(j.request.negative.as_deref(), Some("blur"));
        }
        // Karras with the model's DDIM is refused on its line.
        let err = job(r#"{"prompt": "a", "karras": true}"#).unwrap_err();
        assert!(err.contains("--karras"), "{err}");
        // Checked against the model with the defaults (4 steps), as `generate` would.
        let j = job(r#"{"prompt": "a", "schedule": "2 k=8; rest"}"#).unwrap();
        assert_eq!(j.request.schedule.unwrap().phases.len(), 2);
        // `precision` on its line; when asked for, it names a different output.
        let half = job(r#"{"prompt": "a", "precision": "f16"}"#).unwrap();
        assert_eq!(half.request.precision, Precision::F16);
        let auto = job(r#"{"prompt": "a", "precision": "auto"}"#).unwrap();
        assert_eq!(auto.output, job(r#"{"prompt": "a"}"#).unwrap().output);
        assert_ne!(half.output, auto.output);
    }

    #[test]
    fn bad_job_lines_say_why() {
        for (line, wanted) in [
            ("{not json", "bad job line"),
            (r#"{"seed": 1}"#, "missing field `prompt`"),
            (r#"{"prompt": "a", "step": 1}"#, "unknown field `step`"),
            (r#"{"prompt": ""}"#, "empty"),
            (r#"{"prompt": "a", "size": "16"}"#, "expected WxH"),
            (r#"{"prompt": "a", "steps": 0}"#, "steps 0"),
            (r#"{"prompt": "a", "sampler": "plms"}"#, "unknown sampler"),
            (
                r#"{"prompt": "a", "precision": "f8"}"#,
                "expected auto, f32 or f16",
            ),
            (r#"{"prompt": "a", "schedule": "5 k=0"}"#, "candidates=0"),
            (r#"{"prompt": "a", "out": "../x.png"}"#, "inside --out"),
            (r#"{"prompt": "a", "out": "/tmp/x.png"}"#, "inside --out"),
            (r#"{"prompt": "a", "out": "."}"#, "inside --out"),
            (
                r#"{"prompt": "a", "out": "./manifest.jsonl"}"#,
                "easel's own",
            ),
            (
                r#"{"prompt": "a", "out": "x/.easel-batch.0-of-1.lock"}"#,
                "easel's own",
            ),
        ] {
            let e = job(line).unwrap_err();
            assert!(e.contains(wanted), "{line}: `{e}` lacks `{wanted}`");
        }
    }

    #[test]
    fn names_are_stable_and_follow_the_parameters() {
        let a = job(r#"{"prompt": "Red apple, on a table!"}"#)
            .unwrap()
            .output;
        let b = job(r#"{"seed": 5, "prompt": "Red apple, on a table!"}"#)
            .unwrap()
            .output;
        let c = job(r#"{"prompt": "Red apple, on a table!", "seed": 6}"#)
            .unwrap()
            .output;
        assert_eq!(a, b, "defaults spelled out name the same job");
        assert_ne!(a, c);
        let name = a.to_str().unwrap();
        assert!(name.starts_with("red-apple-on-a-table-"), "{name}");
        assert!(name.ends_with(".png") && name.len() == "red-apple-on-a-table-".len() + 20);
        // Pinned: a rerun after an upgrade must find the same files (the job
        // reader settles candidates and upscale, so they hash as numbers).
        let r = Request {
            seed: 1,
            candidates: Some(1),
            upscale: Some(1),
            ..Request::new("x")
        };
        assert_eq!(stable_name(&r, "m"), "x-ea3fb751b3ea4f33.png");
        assert_ne!(stable_name(&r, "other-model"), stable_name(&r, "m"));
        // A negative prompt and Karras sigmas make other images, under other names.
        let negative = Request {
            negative: Some("blur".into()),
            ..r.clone()
        };
        let karras = Request {
            karras: true,
            ..r.clone()
        };
        let names = [&negative, &karras].map(|x| stable_name(x, "m"));
        assert!(names[0] != names[1] && !names.contains(&stable_name(&r, "m")));
    }

    #[test]
    fn json_errors_cite_the_job_file_line() {
        let text = "{\"prompt\": \"a\"}\n\n{\"prompt\": 3}\n";
        let entries = parse_jobs(text, &defaults(), &model());
        let e = entries[1].job.as_ref().unwrap_err();
        assert!(e.contains("at line 3 column"), "{e}");
    }

    #[test]
    fn indices_are_line_numbers() {
        let text = "{\"prompt\": \"a\"}\n\n{\"prompt\": \"b\"}\nnope\n";
        let entries = parse_jobs(text, &defaults(), &model());
        let indices: Vec<usize> = entries.iter().map(|e| e.index).collect();
        assert_eq!(indices, [0, 2, 3]);
        assert!(entries[2].job.is_err());
    }

    #[test]
    fn jobs_sharing_an_output_all_fail_naming_their_lines() {
        let text = [
            r#"{"prompt": "cat", "out": "pet"}"#,
            r#"{"prompt": "dog", "out": "./pet.png"}"#,
            r#"{"prompt": "red apple", "seed": 1}"#,
            "",
            r#"{"prompt": "red apple", "seed": 1}"#,
            r#"{"prompt": "red apple", "seed": 2}"#,
            r#"{"prompt": "bird", "out": "pet.png"}"#,
        ]
        .join("\n");
        let entries = parse_jobs(&text, &defaults(), &model());
        let errors: Vec<Option<String>> = entries.iter().map(|e| e.job.clone().err()).collect();
        let pet = "output pet.png is written by the jobs on lines 1, 2 and 7";
        let apple = "is written by the jobs on lines 3 and 5: give each its own `out`";
        for (i, wanted) in [(0, pet), (1, pet), (2, apple), (3, apple), (5, pet)] {
            let e = errors[i].as_deref().unwrap_or_default();
            assert!(e.contains(wanted), "job {i}: `{e}` lacks `{wanted}`");
        }
        assert!(errors[4].is_none(), "{:?}", errors[4]);
    }
}
