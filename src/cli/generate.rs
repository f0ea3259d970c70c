//! `easel "prompt" [...]` (also `easel generate`): one image from the CLI,
//! over the library's `Engine::generate`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use easel::gpu::{AdapterOptions, Context};
use easel::output::{check_png_name, check_writable, encode_png, same_file, write_atomic};
use easel::request::Progress;
use easel::{Engine, Error, Request, Result};

#[derive(Args, Clone, Debug)]
pub struct GenerateArgs {
    /// The prompt; `a:: b::2` weights sub-prompts, `--no x` inside it pushes away
    /// (see also --negative).
    pub prompt: Option<String>,
    #[command(flatten)]
    pub render: super::RenderArgs,
    /// Output PNG (written atomically; only over a regular file, never through a
    /// link), or `-` for standard output (then nothing is written to disk).
    #[arg(short, long, default_value = "easel.png")]
    pub output: PathBuf,
    /// Also write a contact sheet of every scoring round to this PNG (a row per round,
    /// its step at the left; candidates with score bars per sub-prompt and total, the
    /// total's value, the winner framed in green).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print a one-line JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

impl GenerateArgs {
    /// A failure is printed as `{"error", "exit_code"}` on stdout too: with `--json`,
    /// unless `-o -` gives standard output to the PNG alone.
    pub fn errors_as_json(&self) -> bool {
        self.json && self.output.as_os_str() != "-"
    }
}

pub fn run(args: &GenerateArgs, adapter: &AdapterOptions) -> Result<()> {
    let prompt = args.prompt.clone().ok_or_else(|| {
        Error::BadInput("no prompt: easel \"a red apple\" -o apple.png (see --help)".into())
    })?;
    let drawn = super::progress::drawn(args.quiet);
    // Bad input fails before the GPU is touched, and leaves no file behind.
    let model = args.render.pipeline_config()?;
    let request = Request {
        progress: drawn.then(|| Arc::new(super::progress::StepBar::new()) as Arc<dyn Progress>),
        trace: args.trace.clone(),
        ..args.render.request(prompt, &model)?
    };
    request.check(&model)?;
    if !args.quiet {
        let notes = easel::request::note(&request, &model).into_iter();
        notes
            .chain(super::start::notes(&request, &model))
            .for_each(|note| eprintln!("easel: {note}"));
    }
    let model_default_steps = model.settings.default_steps;
    // The scorer's folder name, for --json.
    let scorer = model
        .scorer
        .as_ref()
        .map(|s| easel::models::pipeline::model_name(&s.dir));
    if args.render.seed == super::Seed::Random && !args.quiet {
        eprintln!("easel: seed {}", request.seed);
    }
    let to_stdout = args.output.as_os_str() == "-";
    check_outputs(args, to_stdout)?;
    let loading = super::progress::spinner(drawn, "loading the model");
    let engine = Engine::load(Context::new(adapter)?, model)?;
    loading.finish_and_clear();
    let image = engine.generate(&request)?;
    let png = encode_png(&image.rgba, image.width, image.height, &image.parameters)?;
    let wrote = if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(&png)
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("standard output", e))?;
        "standard output".to_string()
    } else {
        write_atomic(&args.output, &png)?;
        args.output.display().to_string()
    };
    if args.json {
        let steps_asked = steps_asked(&request, model_default_steps);
        let run = (steps_asked, scorer.as_deref());
        println!("{}", summary(&args.output, &request, run, &image));
    } else if !args.quiet {
        eprintln!(
            "easel: wrote {wrote} ({}x{}, {} steps{}, {:.1} s)",
            image.width,
            image.height,
            image.steps_run,
            if image.stopped_early {
                ", stopped early"
            } else {
                ""
            },
            image.seconds
        );
    }
    Ok(())
}

/// `-o` and `--trace` checked before any GPU work (exit 2): each a regular file or
/// none in a folder that takes a file, and not the same file; `-o -` is standard
/// output, which then carries the PNG alone (no `--json`) and is not a terminal.
fn check_outputs(args: &GenerateArgs, to_stdout: bool) -> Result<()> {
    if to_stdout {
        if args.json {
            return Err(Error::BadInput(
                "-o - and --json: both would go to standard output; give -o a file".into(),
            ));
        }
        if std::io::stdout().is_terminal() {
            return Err(Error::BadInput(
                "-o -: standard output is a terminal; redirect it (easel \"red apple\" -o - > apple.png)"
                    .into(),
            ));
        }
    } else {
        check_png_name("-o", &args.output)?;
        check_writable(&args.output)?;
    }
    let Some(trace) = &args.trace else {
        return Ok(());
    };
    if trace.as_os_str() == "-" {
        return Err(Error::BadInput(
            "--trace -: the contact sheet is written to a file; name one".into(),
        ));
    }
    check_png_name("--trace", trace)?;
    check_writable(trace)?;
    if !to_stdout && same_file(trace, &args.output) {
        return Err(Error::BadInput(format!(
            "--trace {} is the -o file {}: one would replace the other; give them two names",
            trace.display(),
            args.output.display()
        )));
    }
    Ok(())
}

/// The run's length as asked: `--steps`, else `--schedule`'s counted steps, else
/// the model's default (as `Request::check` settles it).
fn steps_asked(request: &Request, default_steps: usize) -> usize {
    match &request.schedule {
        Some(schedule) => schedule.total_steps(request.steps, default_steps),
        None => request.steps.unwrap_or(default_steps),
    }
}

/// The `--json` line: every parameter that produced the image. `sub_prompts` is a
/// list, one `{"prompt", "weight", "score"}` per sub-prompt in the prompt's order:
/// sub-prompts may repeat (`cat:: cat::`), and a map keyed by their text would keep
/// one of them. `scores` is the same list without weights (the earlier shape).
/// `rounds`: one `{"step", "candidate_scores", "winner"}` per scoring round that ran.
fn summary(
    path: &Path,
    request: &Request,
    (steps_asked, scorer): (usize, Option<&str>),
    image: &easel::Image,
) -> serde_json::Value {
    let p = &image.parameters;
    // The prompt parsed when the request was checked; the weights as written.
    let weights: Vec<f64> = easel::prompt::parse(&request.prompt)
        .map(|m| m.parts.iter().map(|part| part.weight).collect())
        .unwrap_or_default();
    let scores: Vec<serde_json::Value> = image
        .sub_prompts
        .iter()
        .zip(&image.scores)
        .map(|(p, s)| serde_json::json!({"prompt": p, "score": s}))
        .collect();
    let sub_prompts: Vec<serde_json::Value> = image
        .sub_prompts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            serde_json::json!({
                "prompt": text,
                "weight": weights.get(i),
                "score": image.scores.get(i),
            })
        })
        .collect();
    // Each scoring round: every candidate's scores (per sub-prompt, then the total)
    // and the one kept.
    let rounds: Vec<serde_json::Value> = image
        .round_scores
        .iter()
        .map(|r| {
            serde_json::json!({
                "step": r.step,
                "candidate_scores": r.candidate_scores,
                "winner": r.winner,
            })
        })
        .collect();
    let sampler = easel::schedulers::Sampler::parse(&p.sampler).ok();
    let upscale = image.upscale;
    serde_json::json!({
        "file": path.display().to_string(),
        "prompt": request.prompt,
        "negative": p.negative,
        "sub_prompts": sub_prompts,
        "scores": scores,
        "score": image.scores.last(),
        "seed": p.seed,
        "sampler": sampler.map(|s| s.cli_name()),
        "sampler_a1111": p.sampler,
        "karras": request.karras,
        "guidance": p.guidance,
        "steps": image.steps_run,
        "steps_asked": steps_asked,
        "steps_run": image.steps_run,
        "stopped_early": image.stopped_early,
        "candidates": p.candidates,
        "scorer": scorer,
        "rounds": rounds,
        "width": image.width,
        "height": image.height,
        "denoised_width": image.width / upscale,
        "denoised_height": image.height / upscale,
        "upscale": upscale,
        "schedule": p.schedule,
        "model": p.model,
        "model_hash": p.model_hash,
        // The weight as typed (0.8), not its f32 widened to f64 (0.800000011920929).
        "loras": p.loras.iter().map(|l| serde_json::json!({
            "name": l.name, "weight": l.weight.to_string().parse::<f64>().ok(), "sha256": l.sha256,
        })).collect::<Vec<_>>(),
        "seconds": image.seconds,
        "gpu_peak_bytes": image.gpu_peak_bytes,
    })
}
