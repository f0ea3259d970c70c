//! The epilogues of matmul and conv2d. The residual ([`matmul::Epilogue`]): a
//! layer and the residual add after it in one kernel. The fused result must be
//! the two-launch result bit for bit (the same f32 sum, since addition
//! commutes), so the PyTorch goldens of every model hold unchanged. GEGLU in
//! the store (`MatmulOptions::geglu`): a feed-forward's net.0.proj with its
//! rows interleaved against the f64 reference of the projection then GEGLU.

use half::f16;

use crate::common::{assert_close, ctx, new_context, random, zeros, Rng};
use crate::reference::elementwise::geglu;
use crate::reference::matmul::Matmul;
use easel::gpu::{dispatch, Context, DType, Tensor};
use easel::ops::conv2d::{self, Conv2dOptions};
use easel::ops::elementwise::{self, Activation, BinaryOp};
use easel::ops::matmul::{self, Epilogue, MatmulOptions, MatmulVariant};
use easel::weights::RowOrder;

fn run(ds: Vec<easel::gpu::Dispatch>) {
    dispatch::run(ctx(), &ds).unwrap();
}

/// `layer` into a fresh tensor, then `(it + residual) · scale` as its own launch
/// (the residual broadcast where it is `[N, C, 1, 1]`).
fn unfused(shape: &[usize], residual: &Tensor, scale: f32, layer: impl Fn(&Tensor)) -> Vec<f32> {
    let (plain, out) = (zeros(shape), zeros(shape));
    layer(&plain);
    let add = elementwise::binary(ctx(), &plain, residual, &out, BinaryOp::Add, scale).unwrap();
    run(vec![add]);
    out.to_vec(ctx()).unwrap()
}

#[test]
fn linear_with_a_residual_is_the_separate_add() {
    let mut rng = Rng::new(71);
    for (m, k, n) in [(37, 24, 19), (64, 64, 64), (5, 128, 320)] {
        let (x, _) = random(&mut rng, &[m, k]);
        let (w, _) = random(&mut rng, &[n, k]);
        let (bias, _) = random(&mut rng, &[n]);
        let (residual, _) = random(&mut rng, &[m, n]);
        let want = unfused(&[m, n], &residual, 1.0, |out| {
            run(matmul::linear(ctx(), &x, &w, Some(&bias), out).unwrap())
        });
        let out = zeros(&[m, n]);
        let epilogue = Epilogue {
            bias: Some(&bias),
            residual: Some((&residual, 1.0)),
        };
        run(matmul::linear_with(ctx(), &x, &w, epilogue, &out, &MatmulOptions::linear()).unwrap());
        assert_eq!(out.to_vec(ctx()).unwrap(), want, "linear {m}x{k} -> {n}");
    }
}

#[test]
fn conv2d_with_a_scaled_residual_is_the_separate_add() {
    let mut rng = Rng::new(72);
    // ResnetBlock2D's conv2 (3x3, pad 1) with output_scale_factor 2, and a 1x1
    // projection without bias.
    for (n, cin, cout, kk, pad, bias, scale) in
        [(2, 5, 6, 3, 1, true, 0.5), (1, 8, 16, 1, 0, false, 1.0)]
    {
        let (h, w) = (9, 7);
        let (x, _) = random(&mut rng, &[n, cin, h, w]);
        let (weight, _) = random(&mut rng, &[cout, cin, kk, kk]);
        let (b, _) = random(&mut rng, &[cout]);
        let b = bias.then_some(&b);
        let (residual, _) = random(&mut rng, &[n, cout, h, w]);
        let opts = Conv2dOptions::new(1, pad);
        let shape = [n, cout, h, w];
        let want = unfused(&shape, &residual, scale, |out| {
            run(conv2d::conv2d_split(ctx(), &x, &weight, b, out, &opts).unwrap())
        });
        let out = zeros(&shape);
        let epilogue = Epilogue {
            bias: b,
            residual: Some((&residual, scale)),
        };
        run(conv2d::conv2d_split_with(ctx(), &x, &weight, epilogue, &out, &opts).unwrap());
        assert_eq!(
            out.to_vec(ctx()).unwrap(),
            want,
            "conv2d {cin}->{cout} k{kk}"
        );
    }
}

#[test]
fn a_residual_of_another_shape_is_refused() {
    let mut rng = Rng::new(73);
    let (x, _) = random(&mut rng, &[4, 8]);
    let (w, _) = random(&mut rng, &[6, 8]);
    let (residual, _) = random(&mut rng, &[4, 5]);
    let epilogue = Epilogue {
        bias: None,
        residual: Some((&residual, 1.0)),
    };
    let e = matmul::linear_with(
        ctx(),
        &x,
        &w,
        epilogue,
        &zeros(&[4, 6]),
        &MatmulOptions::linear(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("residual has shape [4, 5]"), "{e}");
}

/// A net.0.proj of `2d` outputs over `k` inputs: the weight (stored f32 or
/// f16) and bias uploaded with their rows interleaved, and the reference of
/// `geglu(x · wᵀ + b)` with the rows as stored.
struct GegluCase {
    w: Tensor,
    bias: Tensor,
    x: Tensor,
    want: Vec<f64>,
}

impl GegluCase {
    fn new(ctx: &Context, rng: &mut Rng, [m, d, k]: [usize; 3], weight: DType) -> Self {
        // On the f16 grid, so the cooperative kernels (operands staged as
        // f16) multiply the same values.
        let grid = |v: f32| f16::from_f32(v).to_f32();
        let x_h: Vec<f32> = rng.vec(m * k).iter().map(|&v| grid(v / 2.0)).collect();
        let w_h: Vec<f32> = rng.vec(2 * d * k).into_iter().map(grid).collect();
        let bias_h = rng.vec(2 * d);
        let y = Matmul {
            a: &x_h,
            b: &w_h,
            bias: Some(&bias_h),
            batch: 1,
            m,
            n: 2 * d,
            k,
            transpose_a: false,
            transpose_b: true,
            b_shared: true,
            alpha: 1.0,
        }
        .run();
        let order = RowOrder::HalvesInterleaved;
        let w_i = order.apply(&w_h, 2 * d);
        let w = match weight {
            DType::F16 => {
                let halves: Vec<f16> = w_i.iter().map(|&v| f16::from_f32(v)).collect();
                Tensor::from_f16(ctx, "w", &[2 * d, k], &halves).unwrap()
            }
            _ => Tensor::weight_f32(ctx, "w", &[2 * d, k], &w_i).unwrap(),
        };
        Self {
            w,
            bias: Tensor::from_f32(ctx, "bias", &[2 * d], &order.apply(&bias_h, 2 * d)).unwrap(),
            x: Tensor::from_f32(ctx, "x", &[m, k], &x_h).unwrap(),
            want: geglu(&y, d),
        }
    }

    fn run(&self, ctx: &Context, variant: Option<MatmulVariant>) -> Vec<f32> {
        let d = self.bias.shape[0] / 2;
        let out = Tensor::zeros(ctx, "out", &[self.x.shape[0], d]).unwrap();
        let opts = MatmulOptions {
            variant,
            ..MatmulOptions::linear_geglu()
        };
        let epilogue = Epilogue::bias(Some(&self.bias));
        let ds = matmul::linear_with(ctx, &self.x, &self.w, epilogue, &out, &opts).unwrap();
        dispatch::run(ctx, &ds).unwrap();
        out.to_vec(ctx).unwrap()
    }
}

/// Every kernel's store pairs a hidden feature with its own gate: ragged
/// shapes (partial tiles in both directions), several 64- and 128-wide tiles,
/// f32 and f16 weights. Tolerance: the f32 GEMM over k <= 160 values of
/// magnitude < 1 (|error| < 1e-5 at |y| < 8) times gelu's slope (< 1.13) and
/// |hidden|, plus erf's 1.5e-7; a hidden value paired with another feature's
/// gate is off by O(1).
#[test]
fn linear_with_geglu_in_the_store_matches_reference() {
    let mut rng = Rng::new(74);
    for shape in [[37, 10, 24], [64, 64, 64], [130, 80, 160]] {
        for weight in [DType::F32, DType::F16] {
            let case = GegluCase::new(ctx(), &mut rng, shape, weight);
            for variant in MatmulVariant::ALL {
                let what = format!("GEGLU {shape:?} {weight:?} weight on {variant:?}");
                assert_close(
                    &what,
                    &case.run(ctx(), Some(variant)),
                    &case.want,
                    2e-4,
                    1e-4,
                );
            }
        }
    }
}

/// A weight above the binding limit runs in row blocks of an even number of
/// rows (a hidden row and its gate in one block): 512 bytes a row under a
/// 1536-byte limit would be blocks of 3 rows, so 2.
#[test]
fn linear_with_geglu_in_row_blocks_keeps_pairs_together() {
    let mut limited = new_context();
    limited.limit_bindings_for_tests(1536);
    let case = GegluCase::new(&limited, &mut Rng::new(75), [2, 5, 128], DType::F32);
    let blocks = case.w.row_blocks_in(&limited, "w", 2).unwrap();
    assert!(blocks
        .iter()
        .all(|(row0, b)| row0 % 2 == 0 && b.shape[0] == 2));
    assert_close(
        "GEGLU in row blocks",
        &case.run(&limited, None),
        &case.want,
        2e-4,
        1e-4,
    );
}

#[test]
fn geglu_in_the_store_refuses_what_it_cannot_pair() {
    let mut rng = Rng::new(76);
    let (x, _) = random(&mut rng, &[4, 8]);
    let (odd, _) = random(&mut rng, &[7, 8]);
    let (w, _) = random(&mut rng, &[6, 8]);
    let (residual, _) = random(&mut rng, &[4, 3]);
    let geglu = MatmulOptions::linear_geglu();
    let refused = |w: &Tensor, epilogue: Epilogue, opts: &MatmulOptions, out: &[usize]| {
        let e = matmul::linear_with(ctx(), &x, w, epilogue, &zeros(out), opts).unwrap_err();
        e.to_string()
    };
    let e = refused(&odd, Epilogue::default(), &geglu, &[4, 3]);
    assert!(e.contains("7 columns, not a multiple of 2"), "{e}");
    let with_residual = Epilogue {
        bias: None,
        residual: Some((&residual, 1.0)),
    };
    let e = refused(&w, with_residual, &geglu, &[4, 3]);
    assert!(e.contains("a residual"), "{e}");
    let transposed = MatmulOptions {
        transpose_out: true,
        ..geglu
    };
    let e = refused(&w, Epilogue::default(), &transposed, &[3, 4]);
    assert!(e.contains("a transposed output"), "{e}");
}

/// The q, k, v of one GEMM over stacked weights (`MatmulOptions::parts`),
/// each part written at its own offset: the same bits as three separate
/// linears on the same kernel (each output is the same sum in the same order),
/// on every variant, tokens in and NCHW in (`transpose_a`), f32 and f16 weights,
/// and with the weight bound in row blocks that straddle the parts.
#[test]
fn linear_in_parts_is_three_linears() {
    let mut rng = Rng::new(77);
    let (m, k, d) = (37, 24, 20);
    for transpose_a in [false, true] {
        let x_shape = if transpose_a { [2, k, m] } else { [2, m, k] };
        let (x, _) = random(&mut rng, &x_shape);
        let parts: Vec<(Tensor, Tensor)> = (0..3)
            .map(|_| (random(&mut rng, &[d, k]).0, random(&mut rng, &[d]).0))
            .collect();
        for half in [false, true] {
            let parts: Vec<(Tensor, Tensor)> = match half {
                false => parts.clone(),
                true => parts.iter().map(|(w, b)| (to_half(w), b.clone())).collect(),
            };
            let ws: Vec<&Tensor> = parts.iter().map(|(w, _)| w).collect();
            let bs: Vec<&Tensor> = parts.iter().map(|(_, b)| b).collect();
            let w = Tensor::stack_rows(ctx(), "qkv", &ws).unwrap();
            let bias = Tensor::stack_rows(ctx(), "qkv bias", &bs).unwrap();
            for variant in MatmulVariant::ALL {
                let opts = MatmulOptions {
                    transpose_a,
                    variant: Some(variant),
                    ..MatmulOptions::linear()
                };
                let separate: Vec<Vec<f32>> = parts
                    .iter()
                    .map(|(w, b)| linear_out(ctx(), &x, w, b, &[2, m, d], &opts))
                    .collect();
                let stride = 2 * m * d + 5;
                let out = linear_out(
                    ctx(),
                    &x,
                    &w,
                    &bias,
                    &[3, stride],
                    &MatmulOptions { parts: 3, ..opts },
                );
                for (p, want) in separate.iter().enumerate() {
                    let got = &out[p * stride..p * stride + want.len()];
                    let what = format!("part {p} {variant:?} transpose_a {transpose_a} f16 {half}");
                    assert_eq!(got, &want[..], "{what}");
                }
            }
        }
    }
}

#[test]
fn parts_in_row_blocks_land_in_their_parts() {
    let mut limited = new_context();
    limited.limit_bindings_for_tests(1536);
    let mut rng = Rng::new(78);
    let (m, k, d) = (2, 128, 3);
    let x = Tensor::from_f32(&limited, "x", &[m, k], &rng.vec(m * k)).unwrap();
    let parts: Vec<Tensor> = (0..3)
        .map(|_| Tensor::weight_f32(&limited, "w", &[d, k], &rng.vec(d * k)).unwrap())
        .collect();
    let bias = Tensor::from_f32(&limited, "b", &[3 * d], &rng.vec(3 * d)).unwrap();
    let w = Tensor::stack_rows(&limited, "qkv", &parts.iter().collect::<Vec<_>>()).unwrap();
    // 512-byte rows under a 1536-byte limit: blocks of 3 rows, one per part here.
    assert_eq!(w.row_blocks(&limited, "w").unwrap().len(), 3);
    let opts = MatmulOptions::linear();
    let out = linear_out(
        &limited,
        &x,
        &w,
        &bias,
        &[3, 64],
        &MatmulOptions { parts: 3, ..opts },
    );
    let plain = linear_out(&limited, &x, &w, &bias, &[m, 3 * d], &opts);
    for p in 0..3 {
        for (i, row) in plain.chunks(3 * d).enumerate() {
            let got = &out[p * 64 + i * d..p * 64 + (i + 1) * d];
            assert_eq!(got, &row[p * d..(p + 1) * d], "part {p} row {i}");
        }
    }
}

#[test]
fn parts_refuse_what_they_cannot_split() {
    let mut rng = Rng::new(79);
    let (x, _) = random(&mut rng, &[4, 8]);
    let (w, _) = random(&mut rng, &[6, 8]);
    let (residual, _) = random(&mut rng, &[4, 6]);
    let parts = |n| MatmulOptions {
        parts: n,
        ..MatmulOptions::linear()
    };
    let refused = |epilogue: Epilogue, opts: &MatmulOptions, out: &[usize]| {
        let e = matmul::linear_with(ctx(), &x, &w, epilogue, &zeros(out), opts).unwrap_err();
        e.to_string()
    };
    let e = refused(Epilogue::default(), &parts(4), &[4, 8]);
    assert!(e.contains("6 columns, not a multiple of 4"), "{e}");
    let e = refused(Epilogue::default(), &parts(3), &[3, 7]);
    assert!(e.contains("expected [3, n] with n >= 8"), "{e}");
    let with_residual = Epilogue {
        bias: None,
        residual: Some((&residual, 1.0)),
    };
    let e = refused(with_residual, &parts(3), &[3, 8]);
    assert!(e.contains("a residual"), "{e}");
    let both = MatmulOptions {
        geglu: true,
        ..parts(3)
    };
    let e = refused(Epilogue::default(), &both, &[3, 8]);
    assert!(e.contains("GEGLU in the store cannot take parts"), "{e}");
    let odd = Tensor::from_f16(ctx(), "odd", &[1, 3], &[f16::ONE; 3]).unwrap();
    let e = Tensor::stack_rows(ctx(), "odd", &[&odd, &odd]).unwrap_err();
    assert!(e.to_string().contains("cannot stack"), "{e}");
}

/// `x · wᵀ + b` on `opts` into a fresh tensor of `out`'s shape, read back.
fn linear_out(
    ctx: &Context,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    out: &[usize],
    opts: &MatmulOptions,
) -> Vec<f32> {
    let t = Tensor::zeros(ctx, "out", out).unwrap();
    let ds = matmul::linear_with(ctx, x, w, Epilogue::bias(Some(b)), &t, opts).unwrap();
    dispatch::run(ctx, &ds).unwrap();
    t.to_vec(ctx).unwrap()
}

/// An f32 weight as f16 (rounded).
fn to_half(w: &Tensor) -> Tensor {
    let halves: Vec<f16> = w
        .to_vec(ctx())
        .unwrap()
        .into_iter()
        .map(f16::from_f32)
        .collect();
    Tensor::from_f16(ctx(), "w", &w.shape, &halves).unwrap()
}

/// An activation in the store (`MatmulOptions::activation`: CLIP's fc1, the
/// UNet's time embedding) against the layer then the activation's own launch:
/// the same function on the same rounded value, so the same bits, on every
/// kernel and for every activation.
#[test]
fn linear_with_an_activation_is_the_separate_launch() {
    let mut rng = Rng::new(80);
    let (m, k, n) = (37, 24, 44);
    let (x, _) = random(&mut rng, &[m, k]);
    let (w, _) = random(&mut rng, &[n, k]);
    let (bias, _) = random(&mut rng, &[n]);
    for act in [
        Activation::Silu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::QuickGelu,
    ] {
        for variant in MatmulVariant::ALL {
            let opts = MatmulOptions {
                variant: Some(variant),
                ..MatmulOptions::linear()
            };
            let plain = zeros(&[m, n]);
            run(
                matmul::linear_with(ctx(), &x, &w, Epilogue::bias(Some(&bias)), &plain, &opts)
                    .unwrap(),
            );
            let separate = zeros(&[m, n]);
            run(vec![elementwise::unary(
                ctx(),
                &plain,
                &separate,
                act,
                1.0,
                0.0,
            )
            .unwrap()]);
            let fused = MatmulOptions {
                activation: act,
                ..opts
            };
            let got = linear_out(ctx(), &x, &w, &bias, &[m, n], &fused);
            assert_eq!(
                got,
                separate.to_vec(ctx()).unwrap(),
                "{act:?} on {variant:?}"
            );
        }
    }
    let (residual, _) = random(&mut rng, &[m, n]);
    let with_residual = Epilogue {
        bias: None,
        residual: Some((&residual, 1.0)),
    };
    let silu = MatmulOptions {
        activation: Activation::Silu,
        ..MatmulOptions::linear()
    };
    let e = matmul::linear_with(ctx(), &x, &w, with_residual, &zeros(&[m, n]), &silu).unwrap_err();
    assert!(
        e.to_string().contains("cannot take GEGLU or a residual"),
        "{e}"
    );
}
