//! `cargo bench --bench models [-- NAME]`: forward time of each default model at
//! batch 1, 4 and 8, as `tools/bench_torch.py` measures them in PyTorch. The same
//! code as `easel bench models` (easel::bench::models); prints the table, the
//! kernel breakdown, then the whole JSON report on one line, which
//! `tools/compare.py` reads. `EASEL_WEIGHTS=DIR` benches another pipeline folder.

use std::path::PathBuf;

use easel::bench::models::{self, ModelOptions};
use easel::bench::{self, Report};
use easel::gpu::{AdapterOptions, Context};

fn main() -> easel::Result<()> {
    let ctx = Context::new(&AdapterOptions::default())?;
    let profiler = bench::profiler(&ctx, false);
    let opts = ModelOptions {
        model: std::env::var_os("EASEL_WEIGHTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/easel-emoji")
            }),
        batches: vec![1, 4, 8],
        filter: bench::cargo_bench_filter(),
        weights: Default::default(),
        precision: Default::default(),
    };
    let mut report = Report::new(&ctx, &profiler);
    report.set("models", models::run(&ctx, &profiler, &opts)?);
    println!("{}", report.value());
    Ok(())
}
