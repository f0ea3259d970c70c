//! wgsl/matmul.wgsl against tests/reference/matmul.rs, for every kernel variant.

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::matmul::Matmul;
use easel::gpu::dispatch::GemmOp;
use easel::gpu::{dispatch, Policy};
use easel::ops::matmul;
use matmul::{MatmulOptions, MatmulVariant};

const VARIANTS: [MatmulVariant; 5] = MatmulVariant::F32_OPERANDS;

/// One case: sizes, layout flags and whether `b` has its own batch dim.
#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    transpose_a: bool,
    transpose_b: bool,
    bias: bool,
    b_shared: bool,
    alpha: f32,
}

impl Case {
    fn new(batch: usize, m: usize, n: usize, k: usize) -> Self {
        Self {
            batch,
            m,
            n,
            k,
            transpose_a: false,
            transpose_b: false,
            bias: false,
            b_shared: false,
            alpha: 1.0,
        }
    }
}

/// Run `case` on `variant` and compare. Inputs are uniform in [-1, 1), so each
/// output is a sum of K products of size ≤ 1 with random signs: f32 rounding
/// grows like √K, and 1e-5·√K (plus 1e-5 relative for the bias and alpha)
/// bounds it with margin.
fn check(case: Case, variant: MatmulVariant, seed: u64) {
    let Case { batch, m, n, k, .. } = case;
    let mut rng = Rng::new(seed);
    let a_mat = if case.transpose_a { [k, m] } else { [m, k] };
    let b_mat = if case.transpose_b { [n, k] } else { [k, n] };
    let (a, ah) = random(&mut rng, &[batch, a_mat[0], a_mat[1]]);
    let b_shape: Vec<usize> = if case.b_shared {
        b_mat.to_vec()
    } else {
        vec![batch, b_mat[0], b_mat[1]]
    };
    let (b, bh) = random(&mut rng, &b_shape);
    let (bias, bias_h) = random(&mut rng, &[n]);
    let out = zeros(&[batch, m, n]);
    let opts = MatmulOptions {
        transpose_a: case.transpose_a,
        transpose_b: case.transpose_b,
        alpha: case.alpha,
        variant: Some(variant),
        ..MatmulOptions::default()
    };
    let d = matmul::matmul(ctx(), &a, &b, case.bias.then_some(&bias), &out, &opts).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    let want = Matmul {
        a: &ah,
        b: &bh,
        bias: case.bias.then_some(&bias_h[..]),
        batch,
        m,
        n,
        k,
        transpose_a: case.transpose_a,
        transpose_b: case.transpose_b,
        b_shared: case.b_shared,
        alpha: case.alpha as f64,
    }
    .run();
    let atol = 1e-5 * (k as f64).sqrt();
    let got = out.to_vec(ctx()).unwrap();
    assert_close(&format!("{variant:?} {case:?}"), &got, &want, atol, 1e-5);
}

#[test]
fn odd_sizes_every_transpose() {
    // 1×1×1, sizes below, across and past the 4/8/64 tile edges, K not a multiple of 4.
    let sizes = [(1, 1, 1), (7, 13, 5), (65, 33, 17), (5, 70, 12)];
    let mut seed = 10;
    for variant in VARIANTS {
        for (m, n, k) in sizes {
            for (transpose_a, transpose_b) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let case = Case {
                    transpose_a,
                    transpose_b,
                    ..Case::new(2, m, n, k)
                };
                check(case, variant, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn aligned_sizes_every_transpose() {
    // Multiples of 4 take matmul_cpu_vec4; edges of the 4×8 and 64×64 tiles remain.
    let mut seed = 100;
    for variant in VARIANTS {
        for (transpose_a, transpose_b) in
            [(false, false), (true, false), (false, true), (true, true)]
        {
            let case = Case {
                transpose_a,
                transpose_b,
                ..Case::new(3, 36, 44, 20)
            };
            check(case, variant, seed);
            seed += 1;
        }
    }
}

/// The subgroup kernels broadcast the very blocks `Cpu`'s vec4 kernel loads
/// and add them in its order: `CpuSubgroup` and `CpuTall` give the same bits,
/// with `a` as is and transposed (proj_in reading NCHW activations), in row
/// blocks past M (36 rows: half of CpuSubgroup's last 8, CpuTall's 64-row block
/// with 28 clamped; 70: a second tall block of 6; 12: the 16-row block).
#[test]
fn subgroup_kernels_match_vec4_bit_for_bit() {
    let mut rng = Rng::new(120);
    for (batch, m, n, k) in [(2, 36, 40, 24), (1, 70, 36, 16), (2, 12, 8, 8)] {
        for transpose_a in [false, true] {
            let a_shape = if transpose_a {
                [batch, k, m]
            } else {
                [batch, m, k]
            };
            let (a, _) = random(&mut rng, &a_shape);
            let (b, _) = random(&mut rng, &[n, k]);
            let run = |variant| {
                let out = zeros(&[batch, m, n]);
                let opts = MatmulOptions {
                    transpose_a,
                    transpose_b: true,
                    variant: Some(variant),
                    ..MatmulOptions::default()
                };
                let d = matmul::matmul(ctx(), &a, &b, None, &out, &opts).unwrap();
                dispatch::run(ctx(), &[d]).unwrap();
                out.to_vec(ctx()).unwrap()
            };
            let vec4 = run(MatmulVariant::Cpu);
            for variant in [MatmulVariant::CpuSubgroup, MatmulVariant::CpuTall] {
                assert!(
                    vec4 == run(variant),
                    "Cpu and {variant:?} differ: {m}x{n}x{k}, transpose_a {transpose_a}"
                );
            }
        }
    }
}

/// On a driver that loads lane by lane (llvmpipe before Mesa 23) the rules
/// take `CpuTall` for GEMMs of 2^28 FLOPs and 64 rows or more, `CpuSubgroup`
/// below and for attention; elsewhere `CpuSubgroup` throughout.
#[test]
fn the_tall_tile_takes_long_launches_where_loads_go_lane_by_lane() {
    let mut cpu = crate::common::new_context();
    cpu.tuned = false;
    let subgroups = MatmulVariant::available(&cpu).contains(&MatmulVariant::CpuTall);
    if cpu.class != easel::gpu::AdapterClass::Cpu || !subgroups {
        return; // rules for CPU drivers with 8-lane subgroups: nothing to check here
    }
    let gemm = |op, batch, rows, cols, depth| easel::gpu::dispatch::Gemm {
        op,
        batch,
        rows,
        cols,
        depth,
    };
    // SD-1.5 at 256x256, CFG batch 2: 320 channels x 1024 pixels, K = 2880.
    let sd15 = gemm(GemmOp::Conv2d, 2, 320, 1024, 2880);
    // The default model's largest: 32 channels x 1024 pixels, K = 288, batch 8.
    let small = gemm(GemmOp::Conv2d, 8, 32, 1024, 288);
    let attention = gemm(GemmOp::Attention, 16, 1024, 1024, 40);
    let tall = matmul::lane_by_lane_loads(&cpu.info);
    let want = if tall {
        MatmulVariant::CpuTall
    } else {
        MatmulVariant::CpuSubgroup
    };
    let pick = |cpu: &easel::gpu::Context| {
        [sd15, small, attention].map(|g| MatmulVariant::for_problem(cpu, g))
    };
    let subgroup = MatmulVariant::CpuSubgroup;
    assert_eq!(pick(&cpu), [want, subgroup, subgroup]);
    // Pinning the GPU tiles off leaves the CPU kernels' choice as it was;
    // pinning them on takes every GEMM but attention, as on any adapter.
    cpu.wide_policy = Policy::Off;
    assert_eq!(pick(&cpu), [want, subgroup, subgroup]);
    cpu.wide_policy = Policy::Always;
    let wide = MatmulVariant::GpuWide;
    assert_eq!(pick(&cpu), [wide, wide, subgroup]);
    // Which drivers load lane by lane, from what the adapter reports.
    let driver = |driver: &str, driver_info: &str| {
        let mut info = cpu.info.clone();
        (info.driver, info.driver_info) = (driver.into(), driver_info.into());
        matmul::lane_by_lane_loads(&info)
    };
    assert!(driver("llvmpipe", "Mesa 22.3.6 (LLVM 15.0.6)"));
    assert!(!driver("llvmpipe", "Mesa 25.0.7-2+deb13u1 (LLVM 19.1.7)"));
    assert!(!driver("NVIDIA", "570.86.15"));
    assert!(!driver("llvmpipe", "unknown"));
}

#[test]
fn several_gpu_tiles_with_ragged_edges() {
    // 2×3 of GpuWide's 128×128 tiles (5×5 of Gpu's 64×64), each partly past the
    // edge, K past several slabs and not a multiple of 8; a shared weight as nn.Linear.
    let mut seed = 150;
    for variant in [MatmulVariant::Gpu, MatmulVariant::GpuWide] {
        for (transpose_a, transpose_b, b_shared) in [
            (false, false, false),
            (true, false, false),
            (false, true, true),
        ] {
            let case = Case {
                transpose_a,
                transpose_b,
                b_shared,
                bias: true,
                ..Case::new(2, 260, 300, 37)
            };
            check(case, variant, seed);
            seed += 1;
        }
    }
}

#[test]
fn bias_alpha_and_shared_weight() {
    let mut seed = 200;
    for variant in VARIANTS {
        for (m, n, k) in [(9, 13, 7), (12, 20, 16)] {
            for b_shared in [false, true] {
                let case = Case {
                    transpose_b: true,
                    bias: true,
                    b_shared,
                    alpha: 0.125,
                    ..Case::new(3, m, n, k)
                };
                check(case, variant, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn tiny_unet_linear() {
    // The default UNet's widest nn.Linear in attention: tokens of 8 images at
    // 16×16 through ff.net.0.proj (128 -> 512), weight [out, in] shared.
    for variant in VARIANTS {
        let case = Case {
            transpose_b: true,
            bias: true,
            b_shared: true,
            ..Case::new(1, 8 * 256, 512, 128)
        };
        check(case, variant, 300);
    }
}

#[test]
fn leading_dims_and_bad_shapes() {
    let a = zeros(&[2, 3, 4, 5]);
    let b = zeros(&[5, 6]);
    let out = zeros(&[2, 3, 4, 6]);
    assert!(matmul::matmul(ctx(), &a, &b, None, &out, &MatmulOptions::default()).is_ok());
    let err = matmul::matmul(
        ctx(),
        &a,
        &zeros(&[4, 6]),
        None,
        &out,
        &MatmulOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("inner dimensions"), "{err}");
    let err = matmul::matmul(
        ctx(),
        &a,
        &b,
        None,
        &zeros(&[2, 3, 4, 5]),
        &MatmulOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("matmul: out"), "{err}");
    let err = matmul::matmul(
        ctx(),
        &a,
        &b,
        Some(&zeros(&[5])),
        &out,
        &MatmulOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
}

#[test]
fn profiler_times_each_dispatch() {
    use easel::gpu::profiler::{Clock, Profiler};
    let mut rng = Rng::new(400);
    let (a, _) = random(&mut rng, &[1, 64, 64]);
    let (b, _) = random(&mut rng, &[64, 64]);
    let out = zeros(&[1, 64, 64]);
    let d = matmul::matmul(ctx(), &a, &b, None, &out, &MatmulOptions::default()).unwrap();
    // Lavapipe has TIMESTAMP_QUERY; the wall clock is the fallback elsewhere.
    for profiler in [Profiler::new(ctx()), Profiler::wall_clock()] {
        let times = profiler.time(ctx(), &[&d, &d, &d]).unwrap();
        assert_eq!(times.len(), 3, "{:?}", profiler.clock());
        // A 64³ matmul takes microseconds to milliseconds, never 0 or minutes.
        assert!(
            times.iter().all(|&t| t > 0.0 && t < 10_000.0),
            "{:?}: {times:?}",
            profiler.clock()
        );
    }
    if ctx().features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        assert_eq!(Profiler::new(ctx()).clock(), Clock::GpuTimestamps);
    }
}

/// `linear_with` between NCHW and tokens: `transpose_a` reads x `[N, C, HW]` as
/// tokens, `transpose_out` writes `[N, C', HW]` (with an NCHW residual), as a
/// Transformer2DModel's proj_in and proj_out run with no permute. Both against
/// the reference on explicitly permuted data, on every variant.
#[test]
fn linear_between_nchw_and_tokens() {
    // Past one 128x128 tile each way, ragged.
    let (n, cin, cout, hw) = (2, 12, 136, 140);
    let mut rng = Rng::new(300);
    let (x, xh) = random(&mut rng, &[n, cin, hw]);
    let (w, wh) = random(&mut rng, &[cout, cin]);
    let (bias, bh) = random(&mut rng, &[cout]);
    let (res, rh) = random(&mut rng, &[n, cout, hw]);
    // Tokens [N, HW, C] of x, and the reference layer on them: [N, HW, C'].
    let permute = |v: &[f32], rows: usize, cols: usize| -> Vec<f32> {
        let mut t = vec![0.0; v.len()];
        for (src, dst) in v.chunks(rows * cols).zip(t.chunks_mut(rows * cols)) {
            for r in 0..rows {
                for c in 0..cols {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
        t
    };
    let tokens_h = permute(&xh, cin, hw);
    let layer = |a: &[f32]| -> Vec<f64> {
        Matmul {
            a,
            b: &wh,
            bias: Some(&bh[..]),
            batch: n,
            m: hw,
            n: cout,
            k: cin,
            transpose_a: false,
            transpose_b: true,
            b_shared: true,
            alpha: 1.0,
        }
        .run()
    };
    let want_tokens = layer(&tokens_h);
    let as_f32: Vec<f32> = want_tokens.iter().map(|&v| v as f32).collect();
    let want_nchw: Vec<f64> = permute(&as_f32, hw, cout)
        .iter()
        .zip(&rh)
        .map(|(&y, &r)| y as f64 + r as f64)
        .collect();
    let tokens = easel::gpu::Tensor::from_f32(ctx(), "tokens", &[n, hw, cin], &tokens_h).unwrap();
    // One layout's launch on `variant`, against its reference.
    let check = |label: &str, x, epilogue, out_shape: &[usize], opts: MatmulOptions, want| {
        let out = zeros(out_shape);
        let ds = matmul::linear_with(ctx(), x, &w, epilogue, &out, &opts).unwrap();
        dispatch::run(ctx(), &ds).unwrap();
        let got = out.to_vec(ctx()).unwrap();
        assert_close(label, &got, want, 1e-4, 1e-5);
    };
    for variant in VARIANTS {
        let opts = MatmulOptions {
            variant: Some(variant),
            ..MatmulOptions::linear()
        };
        // proj_in: NCHW in, tokens out.
        let from_nchw = MatmulOptions {
            transpose_a: true,
            ..opts
        };
        let epilogue = matmul::Epilogue::bias(Some(&bias));
        let label = format!("{variant:?} from NCHW");
        check(
            &label,
            &x,
            epilogue,
            &[n, hw, cout],
            from_nchw,
            &want_tokens,
        );
        // proj_out: tokens in, NCHW out plus an NCHW residual.
        let to_nchw = MatmulOptions {
            transpose_out: true,
            ..opts
        };
        let epilogue = matmul::Epilogue {
            bias: Some(&bias),
            residual: Some((&res, 1.0)),
        };
        let label = format!("{variant:?} to NCHW");
        check(
            &label,
            &tokens,
            epilogue,
            &[n, cout, hw],
            to_nchw,
            &want_nchw,
        );
    }
}

/// Which tile a GPU without cooperative matrices runs, by problem size
/// (`MatmulVariant::for_problem`), and `EASEL_WIDE_TILES` pinning it: the
/// adapter here is taken for a GPU (the choice reads only its class and policy).
#[test]
fn the_wide_tile_takes_the_problems_that_fill_its_grid() {
    let mut gpu = crate::common::new_context();
    gpu.class = easel::gpu::AdapterClass::Gpu;
    gpu.coop = None;
    gpu.tuned = false; // the rules, not this adapter's measured table
    let pick_op = |ctx: &easel::gpu::Context, op, (batch, rows, cols)| {
        let depth = 64;
        let gemm = easel::gpu::dispatch::Gemm {
            op,
            batch,
            rows,
            cols,
            depth,
        };
        MatmulVariant::for_problem(ctx, gemm)
    };
    let pick = |ctx: &easel::gpu::Context, size| pick_op(ctx, GemmOp::Conv2d, size);
    // Attention has one tiled kernel, whatever its size.
    let sd15_self_attention = (2 * 8, 4096, 4096);
    assert_eq!(
        pick_op(&gpu, GemmOp::Attention, sd15_self_attention),
        MatmulVariant::Gpu
    );
    // SD-1.5 at 512x512, CFG batch 2: 320 channels x 4096 pixels -> 3 x 32 x 2 tiles.
    assert_eq!(pick(&gpu, (2, 320, 4096)), MatmulVariant::GpuWide);
    // Its VAE decoder's 128-channel convolutions at 512x512: 1 x 2048.
    assert_eq!(pick(&gpu, (1, 128, 512 * 512)), MatmulVariant::GpuWide);
    // The default model's 32x32 UNet, batch 8: 16 channels x 1024 pixels -> 8 x 8.
    assert_eq!(pick(&gpu, (8, 16, 1024)), MatmulVariant::Gpu);
    // Just below and at the bound: 127 and 128 workgroups.
    assert_eq!(matmul::MIN_WIDE_GROUPS, 128);
    assert_eq!(pick(&gpu, (1, 127 * 128, 128)), MatmulVariant::Gpu);
    assert_eq!(pick(&gpu, (1, 128 * 128, 128)), MatmulVariant::GpuWide);
    for (policy, want) in [
        (Policy::Off, MatmulVariant::Gpu),
        (Policy::Always, MatmulVariant::GpuWide),
    ] {
        gpu.wide_policy = policy;
        assert_eq!(pick(&gpu, (2, 320, 4096)), want, "{policy:?}");
        assert_eq!(pick(&gpu, (8, 16, 1024)), want, "{policy:?}");
    }
}
