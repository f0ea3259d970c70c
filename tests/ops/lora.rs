//! LoRA merge (wgsl/lora.wgsl) against tests/reference/lora.rs: f32 and packed
//! f16 weights, Linear- and Conv2d-shaped (`[out, in, 3, 3]`, K = 9·in), an odd
//! element count (the last u32 half-empty), and a weight bound in row blocks at
//! a tiny binding limit.
//!
//! Tolerances. f32: the kernel sums r products of values in [-1, 1) in f32,
//! so |err| <= r · 2^-24 · Σ|up · down| + 2^-24 · |result| <= 2e-7 · (r² + 4)
//! with |scale| < 1 and |W| < 1 (the bound written loosely). f16: the sum is
//! rounded to f16 once, so |err| <= one f16 ulp of the result (2^-10 · |v|,
//! rtol; 2^-24 at the subnormal end) plus the f32 bound (atol), whichever way
//! pack2x16float rounds.

use half::f16;

use crate::common::{assert_close, ctx, new_context, Rng};
use crate::reference::lora as reference;
use easel::gpu::{dispatch, Context, DType, Tensor};
use easel::ops::lora;

const F16_RTOL: f64 = 1.0 / 1024.0;

fn f32_atol(rank: usize) -> f64 {
    2e-7 * (rank * rank + 4) as f64
}

/// Upload `host` as a weight of `dtype`; returns the tensor and the values it
/// holds (rounded to f16 for f16).
fn weight(ctx: &Context, host: &[f32], shape: &[usize], dtype: DType) -> (Tensor, Vec<f32>) {
    match dtype {
        DType::F16 => {
            let halves: Vec<f16> = host.iter().map(|&v| f16::from_f32(v)).collect();
            let t = Tensor::from_f16(ctx, "lora weight", shape, &halves).unwrap();
            (t, halves.iter().map(|h| h.to_f32()).collect())
        }
        _ => (
            Tensor::weight_f32(ctx, "lora weight", shape, host).unwrap(),
            host.to_vec(),
        ),
    }
}

/// Merge a random rank-`rank` LoRA into a random weight of `shape` on `ctx`
/// and compare with the reference.
fn check(ctx: &Context, shape: &[usize], rank: usize, dtype: DType, what: &str) {
    let mut rng = Rng::new(shape.iter().product::<usize>() as u64 + rank as u64);
    let (out, numel) = (shape[0], shape.iter().product::<usize>());
    let k = numel / out;
    let (w, held) = weight(ctx, &rng.vec(numel), shape, dtype);
    let (up_h, down_h) = (rng.vec(out * rank), rng.vec(rank * k));
    let up = Tensor::from_f32(ctx, "up", &[out, rank], &up_h).unwrap();
    let down = Tensor::from_f32(ctx, "down", &[rank, k], &down_h).unwrap();
    let scale = 0.75;
    let d = lora::merge(ctx, &w, &up, &down, scale).unwrap();
    dispatch::run(ctx, &d).unwrap();
    let want = reference::merge(&held, &up_h, &down_h, rank, scale);
    let got = w.to_vec(ctx).unwrap();
    let what = format!(
        "{what} {dtype:?} {shape:?} rank {rank} ({} dispatches)",
        d.len()
    );
    match dtype {
        DType::F16 => assert_close(&what, &got, &want, f32_atol(rank) + 6e-8, F16_RTOL),
        _ => assert_close(&what, &got, &want, f32_atol(rank), 0.0),
    }
}

#[test]
fn lora_merge_matches_reference() {
    for dtype in [DType::F32, DType::F16] {
        check(ctx(), &[24, 40], 4, dtype, "linear");
        check(ctx(), &[7, 13], 3, dtype, "linear, odd element count");
        check(ctx(), &[16, 8, 3, 3], 8, dtype, "conv 3x3");
        check(ctx(), &[12, 6, 1, 1], 16, dtype, "conv 1x1");
    }
}

/// A weight above the binding limit is merged block by block, with each block's
/// rows taking their own rows of `up`.
#[test]
fn lora_merge_in_row_blocks_matches_reference() {
    let mut limited = new_context();
    limited.limit_bindings_for_tests(1024);
    for dtype in [DType::F32, DType::F16] {
        check(&limited, &[40, 30], 4, dtype, "row blocks");
    }
}

/// Scale 0 leaves every bit of the weight as it was (`--lora FILE:0` is no LoRA).
#[test]
fn lora_merge_at_scale_zero_keeps_every_bit() {
    let mut rng = Rng::new(5);
    for dtype in [DType::F32, DType::F16] {
        let (w, held) = weight(ctx(), &rng.vec(21 * 5), &[21, 5], dtype);
        let up = Tensor::from_f32(ctx(), "up", &[21, 2], &rng.vec(42)).unwrap();
        let down = Tensor::from_f32(ctx(), "down", &[2, 5], &rng.vec(10)).unwrap();
        dispatch::run(ctx(), &lora::merge(ctx(), &w, &up, &down, 0.0).unwrap()).unwrap();
        let got = w.to_vec(ctx()).unwrap();
        let same = got
            .iter()
            .zip(&held)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{dtype:?}: scale 0 changed the weight");
    }
}

#[test]
fn lora_merge_refuses_matrices_that_do_not_fit() {
    let w = Tensor::weight_f32(ctx(), "w", &[4, 6], &[0.0; 24]).unwrap();
    let up = Tensor::from_f32(ctx(), "up", &[4, 2], &[0.0; 8]).unwrap();
    let down = Tensor::from_f32(ctx(), "down", &[2, 5], &[0.0; 10]).unwrap();
    let err = lora::merge(ctx(), &w, &up, &down, 1.0).unwrap_err();
    assert!(err.to_string().contains("does not make a weight"), "{err}");
}
