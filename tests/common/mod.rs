//! Shared test helpers: one GPU context per test binary, seeded random data and
//! a tolerance check that names the first bad index.
#![allow(dead_code)]

pub mod binary;
pub mod files;

use std::sync::OnceLock;

use easel::gpu::Tensor;
use easel::gpu::{AdapterOptions, Context};

/// The adapter easel would pick (lavapipe on a machine without a GPU), opened once.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(new_context)
}

/// A context of its own (for an `Engine`, which owns one).
pub fn new_context() -> Context {
    Context::new(&AdapterOptions::default()).expect("a GPU adapter (install mesa-vulkan-drivers)")
}

/// SplitMix64: deterministic, dependency-free test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// Upload seeded random data of `shape`, returning the tensor and its host copy.
pub fn random(rng: &mut Rng, shape: &[usize]) -> (Tensor, Vec<f32>) {
    let data = rng.vec(shape.iter().product());
    let t = Tensor::from_f32(ctx(), "test input", shape, &data).unwrap();
    (t, data)
}

pub fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(ctx(), "test output", shape).unwrap()
}

/// |got - want| <= atol + rtol * |want| everywhere; panics naming the first bad index.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= atol + rtol * w.abs() && g.is_finite(),
            "{what}: index {i}: got {g}, want {w} (|err| {err:.3e} > atol {atol:.0e} + rtol {rtol:.0e}·|want|)"
        );
        worst = worst.max(err);
    }
    eprintln!("{what}: {} values, max |err| {worst:.3e}", got.len());
}
