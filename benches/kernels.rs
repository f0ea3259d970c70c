//! Kernel throughput on the chosen adapter: every variant of matmul and conv2d
//! at the shapes the default model uses, timed per dispatch by the profiler
//! (GPU timestamps where the adapter has them). Prints a table and one JSON
//! line per result. Run: `cargo bench --bench kernels` (release build).
//!
//! Inputs are random in [-1, 1); only the time matters here, correctness is
//! tests/ops' job.

use std::time::Instant;

use easel::gpu::profiler::Profiler;
use easel::gpu::{AdapterOptions, Context};
use easel::ops::conv2d::{self, Conv2dOptions};
use easel::ops::matmul::{self, MatmulOptions, MatmulVariant};
use easel::ops::Dispatch;
use easel::tensor::Tensor;

/// Stop repeating a case after about this long.
const BUDGET_S: f64 = 1.5;
const MIN_REPEATS: usize = 3;
const MAX_REPEATS: usize = 25;

struct Result {
    kernel: &'static str,
    variant: String,
    /// The shader and entry point the variant ran (`file::entry`).
    entry: String,
    shape: String,
    median_ms: f64,
    min_ms: f64,
    /// At the median time.
    gflops: f64,
}

/// Every variant, or the one named by `EASEL_BENCH_VARIANT` (Gpu, Cpu or CpuSubgroup).
fn variants() -> Vec<MatmulVariant> {
    let only = std::env::var("EASEL_BENCH_VARIANT").unwrap_or_default();
    MatmulVariant::ALL
        .into_iter()
        .filter(|v| only.is_empty() || format!("{v:?}").eq_ignore_ascii_case(&only))
        .collect()
}

fn random(ctx: &Context, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    // A cheap LCG: the values do not matter, only that they are not all zero.
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_f32(ctx, "bench input", shape, &data).unwrap()
}

/// (median, min) time of `d` over enough repeats to fill the budget. The
/// minimum is the steadier figure on a machine shared with other work.
fn measure(ctx: &Context, profiler: &Profiler, d: &Dispatch) -> (f64, f64) {
    // Warm-up: pipeline compile, first-touch of buffers.
    let start = Instant::now();
    easel::ops::run(ctx, std::slice::from_ref(d)).unwrap();
    let once = start.elapsed().as_secs_f64();
    let repeats = ((BUDGET_S / once) as usize).clamp(MIN_REPEATS, MAX_REPEATS);
    let batch: Vec<&Dispatch> = std::iter::repeat_n(d, repeats).collect();
    let mut times = profiler.time(ctx, &batch).unwrap();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

fn report(r: &Result) {
    println!(
        "{:<8} {:<12} {:<38} {:<30} {:>10.3} {:>9.3} {:>9.2}",
        r.kernel, r.variant, r.entry, r.shape, r.median_ms, r.min_ms, r.gflops
    );
}

fn json(r: &Result, adapter: &str, clock: &str) -> String {
    serde_json::json!({
        "kernel": r.kernel,
        "variant": r.variant,
        "entry": r.entry,
        "shape": r.shape,
        "median_ms": r.median_ms,
        "min_ms": r.min_ms,
        "gflops": r.gflops,
        "adapter": adapter,
        "clock": clock,
    })
    .to_string()
}

/// (label, batch, M, N, K, transpose_b, b shared)
type MatmulShape = (&'static str, usize, usize, usize, usize, bool, bool);

const MATMUL_SHAPES: &[MatmulShape] = &[
    ("256^3", 1, 256, 256, 256, false, false),
    ("512^3", 1, 512, 512, 512, false, false),
    ("1024^3", 1, 1024, 1024, 1024, false, false),
    // nn.Linear of the default UNet: 8 images × 16×16 tokens, 128 -> 512, W [out, in].
    (
        "linear [2048,128]x[512,128]^T",
        1,
        2048,
        512,
        128,
        true,
        true,
    ),
    // Attention scores: 8 images, 16×16 tokens, head dim 32 (q · kᵀ, batched).
    ("bmm [8,256,32]x[8,256,32]^T", 8, 256, 256, 32, true, false),
];

fn bench_matmul(
    ctx: &Context,
    profiler: &Profiler,
    wants: &dyn Fn(&str) -> bool,
    out: &mut Vec<Result>,
) {
    for &(label, batch, m, n, k, transpose_b, b_shared) in MATMUL_SHAPES {
        if !wants(&format!("matmul {label}")) {
            continue;
        }
        let a = random(ctx, &[batch, m, k], 1);
        let b_mat = if transpose_b { [n, k] } else { [k, n] };
        let b = if b_shared {
            random(ctx, &b_mat, 2)
        } else {
            random(ctx, &[batch, b_mat[0], b_mat[1]], 2)
        };
        let bias = random(ctx, &[n], 3);
        let c = Tensor::zeros(ctx, "bench out", &[batch, m, n]).unwrap();
        for variant in variants() {
            let opts = MatmulOptions {
                transpose_b,
                variant: Some(variant),
                ..MatmulOptions::default()
            };
            let d = matmul::matmul(ctx, &a, &b, Some(&bias), &c, &opts).unwrap();
            let (ms, min_ms) = measure(ctx, profiler, &d);
            let r = Result {
                kernel: "matmul",
                variant: format!("{variant:?}"),
                entry: d.kernel.label.clone(),
                shape: label.to_string(),
                median_ms: ms,
                min_ms,
                gflops: d.flops as f64 / (ms * 1e6),
            };
            report(&r);
            out.push(r);
        }
    }
}

/// (label, N, Cin, H, W, Cout, kernel, stride, padding)
type ConvShape = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

const CONV_SHAPES: &[ConvShape] = &[
    // Default UNet (block_out_channels 32, 64, 128) at batch 8.
    ("8x32x32x32 -> 32, 3x3", 8, 32, 32, 32, 32, 3, 1, 1),
    ("8x64x16x16 -> 64, 3x3", 8, 64, 16, 16, 64, 3, 1, 1),
    ("8x128x8x8 -> 128, 3x3", 8, 128, 8, 8, 128, 3, 1, 1),
    ("8x64x16x16 -> 128, 1x1", 8, 64, 16, 16, 128, 1, 1, 0),
    ("8x32x32x32 -> 32, 3x3 s2", 8, 32, 32, 32, 32, 3, 2, 1),
    // SRVGGNetCompact body: 64 channels at 32x32.
    ("1x64x32x32 -> 64, 3x3", 1, 64, 32, 32, 64, 3, 1, 1),
];

fn bench_conv2d(
    ctx: &Context,
    profiler: &Profiler,
    wants: &dyn Fn(&str) -> bool,
    out: &mut Vec<Result>,
) {
    for &(label, n, cin, h, w, cout, kernel, stride, padding) in CONV_SHAPES {
        if !wants(&format!("conv2d {label}")) {
            continue;
        }
        let x = random(ctx, &[n, cin, h, w], 4);
        let weight = random(ctx, &[cout, cin, kernel, kernel], 5);
        let bias = random(ctx, &[cout], 6);
        let opts = Conv2dOptions::new(stride, padding);
        let (hout, wout) = conv2d::output_size(h, w, kernel, kernel, &opts).unwrap();
        let y = Tensor::zeros(ctx, "bench out", &[n, cout, hout, wout]).unwrap();
        for variant in variants() {
            let opts = Conv2dOptions {
                variant: Some(variant),
                ..opts
            };
            let d = conv2d::conv2d(ctx, &x, &weight, Some(&bias), &y, &opts).unwrap();
            let (ms, min_ms) = measure(ctx, profiler, &d);
            let r = Result {
                kernel: "conv2d",
                variant: format!("{variant:?}"),
                entry: d.kernel.label.clone(),
                shape: label.to_string(),
                median_ms: ms,
                min_ms,
                gflops: d.flops as f64 / (ms * 1e6),
            };
            report(&r);
            out.push(r);
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter may follow.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let ctx = Context::new(&AdapterOptions::default()).expect("a GPU adapter");
    let profiler = Profiler::new(&ctx);
    let adapter = format!(
        "{} ({:?}, {:?})",
        ctx.info.name, ctx.info.backend, ctx.class
    );
    println!("adapter: {adapter}; clock: {}", profiler.clock().label());
    println!(
        "{:<8} {:<12} {:<38} {:<30} {:>10} {:>9} {:>9}",
        "kernel", "variant", "entry point", "shape", "median ms", "min ms", "GFLOP/s"
    );
    let mut results = Vec::new();
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    bench_matmul(&ctx, &profiler, &wants, &mut results);
    bench_conv2d(&ctx, &profiler, &wants, &mut results);
    for r in &results {
        println!("{}", json(r, &adapter, profiler.clock().label()));
    }
}
