//! `easel "prompt" [...]` (also `easel generate`): one image from the CLI,
//! over the library's `Engine::generate`.

use std::path::{Path, PathBuf};

use clap::Args;
use easel::gpu::AdapterOptions;
use easel::output::{check_writable, encode_png, write_atomic};
use easel::schedulers::Sampler;
use easel::{Engine, Error, Request, Result};

#[derive(Args, Clone, Debug)]
pub struct GenerateArgs {
    /// The prompt; `a:: b::2` weights sub-prompts, `--no x` inside it pushes away.
    pub prompt: Option<String>,
    /// Seed of the start image and of every noise draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// WxH of the denoised image (before upscaling); default: the model's sample size.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(usize, usize)>,
    /// Sampler steps; default: the model's (model_index.json `_easel.default_steps`).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Candidates denoised side by side; the scorer keeps the best each round.
    #[arg(long, default_value_t = 4)]
    pub candidates: usize,
    /// Classifier-free guidance scale; default: the model's.
    #[arg(long)]
    pub guidance: Option<f32>,
    /// ddim, euler-a or dpm++2m; default: from scheduler_config.json.
    #[arg(long, value_parser = parse_sampler)]
    pub sampler: Option<Sampler>,
    /// Learned upscaling after denoising: 1, 2 or 4.
    #[arg(long, default_value_t = 4)]
    pub upscale: usize,
    /// Scoring rounds every N steps (and after the last); default: 4 rounds per run.
    #[arg(long)]
    pub score_every: Option<usize>,
    /// Stop early when the winner's weighted score reaches this.
    #[arg(long)]
    pub until_score: Option<f32>,
    /// Stop early when the winner leads the runner-up by this much.
    #[arg(long)]
    pub until_margin: Option<f32>,
    /// Model folder (diffusers layout).
    #[arg(long, default_value = crate::cli::inspect::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Output PNG (written atomically).
    #[arg(short, long, default_value = "easel.png")]
    pub output: PathBuf,
    /// Also write a contact sheet of every scoring round (candidates, score bars per
    /// sub-prompt and total, winner framed in green) to this PNG.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print a one-line JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}`: expected WxH, e.g. 32x32"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{s}`: `{v}` is not a size"))
    };
    Ok((n(w)?, n(h)?))
}

fn parse_sampler(s: &str) -> std::result::Result<Sampler, String> {
    Sampler::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: &GenerateArgs, adapter: &AdapterOptions) -> Result<()> {
    let prompt = args.prompt.clone().ok_or_else(|| {
        Error::BadInput("no prompt: easel \"a red apple\" -o apple.png (see --help)".into())
    })?;
    // Bad input fails before the GPU is touched, and leaves no file behind.
    easel::prompt::parse(&prompt)?;
    if args.steps == Some(0) {
        return Err(Error::BadInput("--steps 0: need at least 1 step".into()));
    }
    check_writable(&args.output)?;
    if let Some(trace) = &args.trace {
        check_writable(trace)?;
    }
    let engine = Engine::new(&args.model, adapter)?;
    let request = Request {
        seed: args.seed,
        size: args.size,
        steps: args.steps,
        candidates: args.candidates,
        guidance: args.guidance,
        sampler: args.sampler,
        upscale: args.upscale,
        score_every: args.score_every,
        until_score: args.until_score,
        until_margin: args.until_margin,
        progress: !args.quiet,
        trace: args.trace.clone(),
        ..Request::new(prompt)
    };
    let image = engine.generate(&request)?;
    let png = encode_png(&image.rgba, image.width, image.height, &image.parameters)?;
    write_atomic(&args.output, &png)?;
    if args.json {
        println!("{}", summary(&args.output, &image));
    } else if !args.quiet {
        eprintln!(
            "easel: wrote {} ({}x{}, {} steps{}, {:.1} s)",
            args.output.display(),
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

fn summary(path: &Path, image: &easel::Image) -> serde_json::Value {
    let scores: serde_json::Map<String, serde_json::Value> = image
        .sub_prompts
        .iter()
        .zip(&image.scores)
        .map(|(p, s)| (p.clone(), serde_json::json!(s)))
        .collect();
    serde_json::json!({
        "file": path.display().to_string(),
        "seed": image.parameters.seed,
        "steps": image.steps_run,
        "stopped_early": image.stopped_early,
        "scores": scores,
        "score": image.scores.last(),
        "width": image.width,
        "height": image.height,
        "seconds": image.seconds,
    })
}
