//! Layer weights read through texture copies (src/gpu/texture.rs,
//! `EASEL_WEIGHT_TEXTURES`): the subgroup kernels compute the very bits from a
//! weight's texture that they compute from its buffer (tolerance 0: the texels
//! hold the weight's own values, widened exactly), for nn.Linear and conv2d,
//! f32 and f16 weights; rewriting a weight refreshes its copy; a weight that
//! cannot have one (no whole texels, or bound in row blocks) keeps the buffer.
//! A layer weight held in its copy alone (`texture::hold`) costs the copy's
//! bytes only, until a kernel that reads buffers or a readback makes its
//! buffer again, with the same values.

use std::sync::Arc;

use half::f16;

use crate::common::{new_context, Rng};
use easel::gpu::{dispatch, texture, Context, DType, Dispatch, Policy, Tensor};
use easel::ops::conv2d::{self, Conv2dOptions};
use easel::ops::matmul::{self, with_variant, MatmulVariant};

/// The variants that read weights through textures, where the adapter has them.
fn subgroup_variants(ctx: &Context) -> Vec<MatmulVariant> {
    let available = MatmulVariant::available(ctx);
    [MatmulVariant::CpuSubgroup, MatmulVariant::CpuTall]
        .into_iter()
        .filter(|v| available.contains(v))
        .collect()
}

/// A context of its own and the first variant that reads weights through
/// textures, or `None` (saying so) where the adapter has none.
fn subgroup_context() -> Option<(Context, MatmulVariant)> {
    let ctx = new_context();
    let variant = subgroup_variants(&ctx).first().copied();
    if variant.is_none() {
        eprintln!("no subgroup kernels on this adapter: nothing to check");
    }
    Some((ctx, variant?))
}

fn upload(ctx: &Context, dtype: DType, shape: &[usize], values: &[f32]) -> Tensor {
    match dtype {
        DType::F16 => {
            let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            Tensor::from_f16(ctx, "weight", shape, &halves).unwrap()
        }
        _ => Tensor::weight_f32(ctx, "weight", shape, values).unwrap(),
    }
}

/// Run what `build` makes with the weights read from buffers (`Off`) and from
/// textures (`Always`); both outputs, and the bytes the texture run added.
fn both_ways(
    ctx: &mut Context,
    out: &Tensor,
    build: impl Fn(&Context) -> Vec<Dispatch>,
) -> (Vec<f32>, Vec<f32>, u64) {
    let mut run = |policy| {
        ctx.weight_textures = policy;
        let before = ctx.live_bytes();
        dispatch::run(ctx, &build(ctx)).unwrap();
        (out.to_vec(ctx).unwrap(), ctx.live_bytes() - before)
    };
    let (buffer, buffer_bytes) = run(Policy::Off);
    assert_eq!(buffer_bytes, 0, "no copy without the policy");
    let (texture, texture_bytes) = run(Policy::Always);
    (buffer, texture, texture_bytes)
}

/// nn.Linear, weight `[N, K]`: K = 64, 96 (2,304 texels: a whole row of 2,048
/// and a part row) and 40 (the subgroup kernels), K = 7 and
/// 9 (not vec4-aligned: the scalar kernel, which reads the buffer, so no copy).
#[test]
fn linear_reads_the_same_bits_from_a_weight_texture() {
    let mut ctx = new_context();
    for variant in subgroup_variants(&ctx) {
        for dtype in [DType::F32, DType::F16] {
            for (m, n, k) in [
                (9, 24, 64),
                (4, 96, 96),
                (33, 70, 40),
                (5, 12, 7),
                (3, 5, 9),
            ] {
                let mut rng = Rng::new(40 + k as u64);
                let x = Tensor::from_f32(&ctx, "x", &[m, k], &rng.vec(m * k)).unwrap();
                let w = upload(&ctx, dtype, &[n, k], &rng.vec(n * k));
                let bias = Tensor::from_f32(&ctx, "bias", &[n], &rng.vec(n)).unwrap();
                let out = Tensor::zeros(&ctx, "out", &[m, n]).unwrap();
                let (buffer, texture, bytes) = both_ways(&mut ctx, &out, |ctx| {
                    with_variant(variant, || {
                        matmul::linear(ctx, &x, &w, Some(&bias), &out).unwrap()
                    })
                });
                let what = format!("{variant:?} {dtype:?} linear m={m} n={n} k={k}");
                assert!(buffer == texture, "{what}: texture and buffer differ");
                assert_eq!(bytes, copy_bytes(&w, k % 4 == 0), "{what}: texture bytes");
            }
        }
    }
}

/// conv2d with 3x3 and 1x1 weights, f32 and f16, stride and padding.
#[test]
fn conv2d_reads_the_same_bits_from_a_weight_texture() {
    let mut ctx = new_context();
    for variant in subgroup_variants(&ctx) {
        for dtype in [DType::F32, DType::F16] {
            for (n, cin, hw, cout, kh, stride) in [(1, 8, 9, 16, 3, 1), (2, 4, 6, 12, 1, 2)] {
                let mut rng = Rng::new(60 + cout as u64);
                let x_shape = [n, cin, hw, hw];
                let x_len = n * cin * hw * hw;
                let x = Tensor::from_f32(&ctx, "x", &x_shape, &rng.vec(x_len)).unwrap();
                let w_shape = [cout, cin, kh, kh];
                let w = upload(&ctx, dtype, &w_shape, &rng.vec(cout * cin * kh * kh));
                let hout = (hw + 2 * (kh / 2) - kh) / stride + 1;
                let out = Tensor::zeros(&ctx, "out", &[n, cout, hout, hout]).unwrap();
                let opts = Conv2dOptions {
                    stride: (stride, stride),
                    padding: (kh / 2, kh / 2),
                    variant: Some(variant),
                    ..Conv2dOptions::default()
                };
                let (buffer, texture, bytes) = both_ways(&mut ctx, &out, |ctx| {
                    vec![conv2d::conv2d(ctx, &x, &w, None, &out, &opts).unwrap()]
                });
                let what = format!("{variant:?} {dtype:?} conv2d {w_shape:?}");
                assert!(buffer == texture, "{what}: texture and buffer differ");
                assert_eq!(bytes, copy_bytes(&w, true), "{what}: texture bytes");
            }
        }
    }
}

/// `Tensor::write` into a weight that has a texture copy copies it again: the
/// next run reads the new values.
#[test]
fn rewriting_a_weight_refreshes_its_texture() {
    let Some((mut ctx, variant)) = subgroup_context() else {
        return;
    };
    let (m, n, k) = (4, 8, 16);
    let mut rng = Rng::new(80);
    let x = Tensor::from_f32(&ctx, "x", &[m, k], &rng.vec(m * k)).unwrap();
    let w = Tensor::weight_f32(&ctx, "weight", &[n, k], &rng.vec(n * k)).unwrap();
    let out = Tensor::zeros(&ctx, "out", &[m, n]).unwrap();
    let build =
        |ctx: &Context| with_variant(variant, || matmul::linear(ctx, &x, &w, None, &out).unwrap());
    let (_, first, _) = both_ways(&mut ctx, &out, build);
    w.write(&ctx, &rng.vec(n * k)).unwrap();
    let (buffer, texture, bytes) = both_ways(&mut ctx, &out, build);
    assert_eq!(bytes, 0, "the copy is reused, not made again");
    assert!(buffer != first, "the new weight changes the output");
    assert!(buffer == texture, "the texture holds the new weight");
}

/// A weight above the binding limit runs in row blocks, each a window on its
/// buffer: no texture copy, and the same bits as one unsplit launch.
#[test]
fn row_blocks_keep_the_buffer_path() {
    let Some((mut ctx, variant)) = subgroup_context() else {
        return;
    };
    let (m, n, k) = (3, 16, 32);
    let mut rng = Rng::new(90);
    let (xv, wv) = (rng.vec(m * k), rng.vec(n * k));
    let linear = |ctx: &mut Context| {
        ctx.weight_textures = Policy::Always;
        let x = Tensor::from_f32(ctx, "x", &[m, k], &xv).unwrap();
        let w = Tensor::weight_f32(ctx, "weight", &[n, k], &wv).unwrap();
        let out = Tensor::zeros(ctx, "out", &[m, n]).unwrap();
        let before = ctx.live_bytes();
        let d = with_variant(variant, || matmul::linear(ctx, &x, &w, None, &out).unwrap());
        let launches = d.len();
        dispatch::run(ctx, &d).unwrap();
        drop(d); // its uniforms count too
        (
            launches,
            out.to_vec(ctx).unwrap(),
            ctx.live_bytes() - before,
        )
    };
    let (whole_launches, whole, whole_bytes) = linear(&mut ctx);
    ctx.limit_bindings_for_tests((4 * 4 * k) as u64);
    let (split_launches, split, split_bytes) = linear(&mut ctx);
    assert_eq!((whole_launches, split_launches), (1, 4));
    assert_eq!((whole_bytes, split_bytes), ((4 * n * k) as u64, 0));
    assert!(whole == split, "row blocks read the buffer: same bits");
}

/// A held weight: only its copy counts; the subgroup kernels read it with
/// no buffer made and compute what they compute from a weight in a buffer;
/// a kernel that binds the buffer (`Cpu`), a readback and `Tensor::write`
/// make it again from the copy, with the weight's own values.
#[test]
fn a_held_weight_lives_in_its_texture_alone() {
    let Some((mut ctx, variant)) = subgroup_context() else {
        return;
    };
    ctx.weight_textures = Policy::Always;
    for dtype in [DType::F32, DType::F16] {
        for (m, n, k) in [(9, 24, 64), (4, 96, 96)] {
            let what = format!("{dtype:?} linear m={m} n={n} k={k}");
            let mut rng = Rng::new(100 + k as u64);
            let (xv, wv) = (rng.vec(m * k), rng.vec(n * k));
            let x = Tensor::from_f32(&ctx, "x", &[m, k], &xv).unwrap();
            let plain = upload(&ctx, dtype, &[n, k], &wv);
            let before = ctx.live_bytes();
            let held = texture::hold(&ctx, "weight", upload(&ctx, dtype, &[n, k], &wv));
            assert!(!held.buffer.is_made(), "{what}: no buffer after hold");
            assert_eq!(
                ctx.live_bytes() - before,
                copy_bytes(&held, true),
                "{what}: bytes"
            );
            let out = Tensor::zeros(&ctx, "out", &[m, n]).unwrap();
            let run = |w: &Tensor, variant| {
                let d = with_variant(variant, || matmul::linear(&ctx, &x, w, None, &out).unwrap());
                dispatch::run(&ctx, &d).unwrap();
                out.to_vec(&ctx).unwrap()
            };
            let first = run(&plain, variant);
            assert!(run(&held, variant) == first, "{what}: {variant:?}");
            assert!(
                !held.buffer.is_made(),
                "{what}: {variant:?} reads the copy alone"
            );
            let cpu = MatmulVariant::Cpu;
            assert!(
                run(&held, cpu) == run(&plain, cpu),
                "{what}: Cpu reads the buffer"
            );
            assert!(held.buffer.is_made(), "{what}: Cpu made the buffer");
            assert!(
                held.to_vec(&ctx).unwrap() == plain.to_vec(&ctx).unwrap(),
                "{what}"
            );
            if dtype != DType::F32 {
                assert!(
                    held.write(&ctx, &wv).is_err(),
                    "{what}: write takes f32 only"
                );
                continue;
            }
            let new = rng.vec(n * k);
            let fresh = texture::hold(&ctx, "weight", upload(&ctx, dtype, &[n, k], &wv));
            for w in [&plain, &held, &fresh] {
                w.write(&ctx, &new).unwrap();
            }
            let expected = run(&plain, variant);
            assert!(
                expected != first,
                "{what}: the new weight changes the output"
            );
            assert!(
                run(&held, variant) == expected,
                "{what}: rewritten after a readback"
            );
            assert!(
                run(&fresh, variant) == expected,
                "{what}: rewritten while held"
            );
        }
    }
}

/// `texture::hold` leaves a weight in its buffer where no kernel would read
/// the copy: the policy off, or rows that are not whole texels.
#[test]
fn hold_keeps_the_buffer_where_no_kernel_reads_a_copy() {
    let mut ctx = new_context();
    for (policy, shape) in [(Policy::Off, [8, 16]), (Policy::Always, [8, 6])] {
        ctx.weight_textures = policy;
        let w = upload(
            &ctx,
            DType::F32,
            &shape,
            &Rng::new(7).vec(shape[0] * shape[1]),
        );
        let before = ctx.live_bytes();
        let kept = texture::hold(&ctx, "weight", w.clone());
        assert!(Arc::ptr_eq(&kept.buffer, &w.buffer), "{policy:?} {shape:?}");
        assert_eq!(ctx.live_bytes(), before, "{policy:?} {shape:?}: no copy");
    }
}

/// What a texture copy of `w` holds in bytes (whole rows of
/// `texture::WIDTH` texels), or 0 where it has none.
fn copy_bytes(w: &Tensor, copied: bool) -> u64 {
    let texels = (w.numel() / 4) as u64;
    let width = u64::from(texture::WIDTH);
    let texel_bytes = 4 * w.bytes() / w.numel() as u64;
    match copied {
        true => texels.min(width) * texels.div_ceil(width) * texel_bytes,
        false => 0,
    }
}
