//! Throughput of the data-movement kernels (resample, layout) on the adapter
//! easel picks, for each kernel variant: `cargo run --release --example
//! bench_data_movement`. Prints one line per kernel: milliseconds per dispatch
//! and GB/s (bytes read + written). To be folded into `easel bench`.

use easel::gpu::dispatch;
use std::time::Instant;

use easel::gpu::Tensor;
use easel::gpu::{AdapterOptions, Context, Dispatch};
use easel::ops::{layout, layout::PermuteVariant, resample};
use easel::Result;

const REPEATS: usize = 10;

fn tensor(ctx: &Context, shape: &[usize]) -> Result<Tensor> {
    Tensor::zeros(ctx, "bench", shape)
}

/// Run `make()`'s dispatch REPEATS times in one submission, after a warm-up.
fn time(ctx: &Context, name: &str, make: impl Fn() -> Result<Dispatch>) -> Result<()> {
    dispatch::run(ctx, &[make()?])?;
    let dispatches: Vec<Dispatch> = (0..REPEATS).map(|_| make()).collect::<Result<_>>()?;
    let bytes = dispatches[0].bytes as f64;
    let start = Instant::now();
    dispatch::run(ctx, &dispatches)?;
    let seconds = start.elapsed().as_secs_f64() / REPEATS as f64;
    println!(
        "{name:<48} {:>8.3} ms {:>7.2} GB/s",
        seconds * 1e3,
        bytes / seconds / 1e9
    );
    Ok(())
}

fn main() -> Result<()> {
    let ctx = Context::new(&AdapterOptions::default())?;
    println!("{} ({:?})", ctx.info.name, ctx.info.backend);
    let ctx = &ctx;
    // Transformer2DModel's NCHW <-> [N, H*W, C] at a UNet's 32×32 level.
    let nchw = tensor(ctx, &[8, 320, 32, 32])?;
    let nhwc = tensor(ctx, &[8, 32, 32, 320])?;
    for variant in [PermuteVariant::Direct, PermuteVariant::Tiled] {
        time(
            ctx,
            &format!("permute [8,320,32,32] -> NHWC {variant:?}"),
            || layout::permute_with(ctx, &nchw, &[0, 2, 3, 1], &nhwc, variant),
        )?;
        time(
            ctx,
            &format!("permute [8,32,32,320] -> NCHW {variant:?}"),
            || layout::permute_with(ctx, &nhwc, &[0, 3, 1, 2], &nchw, variant),
        )?;
    }
    let skip_half = tensor(ctx, &[8, 320, 32, 32])?;
    time(ctx, "baseline: elementwise identity [8,320,32,32]", || {
        easel::ops::elementwise::unary(
            ctx,
            &nchw,
            &skip_half,
            easel::ops::elementwise::Activation::Identity,
            1.0,
            0.0,
        )
    })?;
    let skip = tensor(ctx, &[8, 640, 32, 32])?;
    time(ctx, "concat dim 1 (one input) -> [8,640,32,32]", || {
        layout::copy_into(ctx, &nchw, &skip, 1, 320)
    })?;
    let small = tensor(ctx, &[8, 320, 16, 16])?;
    time(ctx, "upsample_nearest2d x2 [8,320,16,16]", || {
        resample::upsample_nearest2d(ctx, &small, &nchw, 2)
    })?;
    time(ctx, "avg_pool2d [8,320,32,32]", || {
        resample::avg_pool2d(ctx, &nchw, &small)
    })?;
    let image = tensor(ctx, &[8, 3, 64, 64])?;
    let scorer_input = tensor(ctx, &[8, 3, 224, 224])?;
    time(ctx, "interpolate_bilinear [8,3,64,64] -> 224²", || {
        resample::interpolate_bilinear(ctx, &image, &scorer_input)
    })?;
    let features = tensor(ctx, &[1, 48, 128, 128])?;
    let upscaled = tensor(ctx, &[1, 3, 512, 512])?;
    time(ctx, "pixel_shuffle r=4 [1,48,128,128]", || {
        resample::pixel_shuffle(ctx, &features, &upscaled, 4)
    })?;
    let winner = Tensor::from_u32(ctx, "winner", &[1], &[3])?;
    time(ctx, "broadcast_row_in_place [8,320,32,32]", || {
        layout::broadcast_row_in_place(ctx, &nchw, &winner)
    })?;
    Ok(())
}
