//! `easel "prompt" [...]` (also `easel generate`): one image from the CLI,
//! over the library's `Engine::generate`.

use std::path::{Path, PathBuf};

use clap::Args;
use easel::gpu::{AdapterOptions, Context};
use easel::output::{check_writable, encode_png, write_atomic};
use easel::{Engine, Error, PipelineConfig, Request, Result};

#[derive(Args, Clone, Debug)]
pub struct GenerateArgs {
    /// The prompt; `a:: b::2` weights sub-prompts, `--no x` inside it pushes away.
    pub prompt: Option<String>,
    #[command(flatten)]
    pub render: super::RenderArgs,
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

pub fn run(args: &GenerateArgs, adapter: &AdapterOptions) -> Result<()> {
    let prompt = args.prompt.clone().ok_or_else(|| {
        Error::BadInput("no prompt: easel \"a red apple\" -o apple.png (see --help)".into())
    })?;
    let request = Request {
        progress: !args.quiet,
        trace: args.trace.clone(),
        ..args.render.request(prompt)?
    };
    // Bad input fails before the GPU is touched, and leaves no file behind.
    let model = PipelineConfig::read(&args.render.model)?;
    request.check(&model)?;
    check_writable(&args.output)?;
    if let Some(trace) = &args.trace {
        check_writable(trace)?;
    }
    let engine = Engine::load(Context::new(adapter)?, model)?;
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
