//! wgsl/attention.wgsl against tests/reference/attention.rs, every kernel variant.

use crate::common::{assert_close, ctx, zeros, Rng};
use crate::reference::attention::{self as reference, Shape};
use easel::gpu::dispatch;
use easel::gpu::Tensor;
use easel::ops::attention;

fn check(rng: &mut Rng, s: Shape, causal: bool, scale: Option<f32>, q_magnitude: f32) {
    let width = s.heads * s.dh;
    let q_shape = [s.b, s.lq, width];
    let kv_shape = [s.b, s.lk, width];
    let qh: Vec<f32> = rng
        .vec(s.b * s.lq * width)
        .iter()
        .map(|v| v * q_magnitude)
        .collect();
    let kh = rng.vec(s.b * s.lk * width);
    let vh = rng.vec(s.b * s.lk * width);
    let upload = |shape: &[usize], data: &[f32]| Tensor::from_f32(ctx(), "x", shape, data).unwrap();
    let (q, k, v) = (
        upload(&q_shape, &qh),
        upload(&kv_shape, &kh),
        upload(&kv_shape, &vh),
    );
    let scale_f64 = scale.map_or(1.0 / (s.dh as f64).sqrt(), |x| x as f64);
    let want = reference::scaled_dot_product_attention(&qh, &kh, &vh, s, scale_f64, causal);
    let cfg = attention::Sdpa {
        heads: s.heads,
        scale,
        is_causal: causal,
    };
    // Coop rounds its operands to f16: tests/ops/coop.rs, with its own tolerance.
    for variant in attention::AttentionVariant::F32_OPERANDS {
        let out = zeros(&q_shape);
        let d = attention::scaled_dot_product_attention_with(ctx(), &q, &k, &v, &out, cfg, variant)
            .unwrap();
        dispatch::run(ctx(), &[d]).unwrap();
        // Outputs are convex combinations of values in [-1, 1]: 1e-5 absolute +
        // 1e-4 relative covers f32 scores and exp (scores reach ~±30 here).
        assert_close(
            &format!("attention {s:?} causal={causal} scale={scale:?} {variant:?}"),
            &out.to_vec(ctx()).unwrap(),
            &want,
            1e-5,
            1e-4,
        );
    }
}

fn shape(b: usize, lq: usize, lk: usize, heads: usize, dh: usize) -> Shape {
    Shape {
        b,
        lq,
        lk,
        heads,
        dh,
    }
}

#[test]
fn cross_attention_matches_reference() {
    let mut rng = Rng::new(20);
    // Lq != Lk, lengths that are not multiples of 4, 8, 64 or the GPU key tiles.
    check(&mut rng, shape(2, 13, 7, 1, 8), false, None, 1.0);
    check(&mut rng, shape(2, 37, 77, 8, 40), false, None, 1.0); // SD 1.x: Dh 40, 77 tokens
    check(&mut rng, shape(1, 19, 23, 2, 160), false, None, 1.0); // SD 1.x's deepest Dh
    check(&mut rng, shape(1, 70, 5, 3, 64), false, Some(0.3), 1.0);
}

/// Heads wider than the registers hold run `attention_wide` in column slices:
/// the VAE's one head of 512 (4 slices of 128), 192 (2 of 96), 168 (2 of 84).
#[test]
fn wide_head_attention_matches_reference() {
    let mut rng = Rng::new(24);
    check(&mut rng, shape(1, 37, 45, 1, 512), false, None, 1.0);
    check(&mut rng, shape(2, 13, 17, 2, 192), false, None, 1.0);
    check(&mut rng, shape(1, 21, 21, 1, 168), true, None, 1.0);
    check(&mut rng, shape(1, 30, 30, 1, 256), false, None, 8.0); // scores up to ~±30
}

/// Many keys against a CPU driver's cap on one invocation's loop iterations
/// (`ops::CPU_LOOP_LIMIT`): the fused kernel's per-key loops unroll, so 13,000
/// keys of 40 (SD-1.5's UNet self-attention at ~900x900) are right; the wide
/// head (the VAE's 512) is right up to its bound and refused past it there
/// (before, lavapipe silently stopped looping: 2,100 keys came out wrong).
#[test]
fn attention_over_more_keys_than_a_cpu_invocation_may_loop() {
    let mut rng = Rng::new(25);
    check(&mut rng, shape(1, 9, 13_000, 1, 40), false, None, 1.0);
    let max = attention::cpu_key_limit(512).unwrap();
    assert_eq!(attention::cpu_key_limit(160), None);
    check(&mut rng, shape(1, 9, max, 1, 512), false, None, 1.0);
    let (q, kv) = (zeros(&[1, 9, 512]), zeros(&[1, max + 4, 512]));
    let cfg = attention::Sdpa {
        heads: 1,
        scale: None,
        is_causal: false,
    };
    let got = attention::scaled_dot_product_attention(ctx(), &q, &kv, &kv, &q, cfg);
    match ctx().class {
        easel::gpu::AdapterClass::Cpu => match got {
            Err(e) => {
                assert_eq!(e.exit_code(), 2);
                assert!(e.to_string().contains("--vae-tiles"), "{e}");
            }
            Ok(_) => panic!("{} keys of 512 accepted on a CPU driver", max + 4),
        },
        easel::gpu::AdapterClass::Gpu => assert!(got.is_ok()),
    }
}

#[test]
fn causal_self_attention_matches_reference() {
    let mut rng = Rng::new(21);
    check(&mut rng, shape(1, 77, 77, 8, 64), true, None, 1.0); // CLIP text encoder
    check(&mut rng, shape(2, 50, 50, 2, 32), true, None, 1.0);
    check(&mut rng, shape(2, 9, 70, 1, 32), true, None, 1.0); // Lq < Lk: top-left mask
    check(&mut rng, shape(1, 70, 9, 1, 8), true, None, 1.0); // Lq > Lk
}

#[test]
fn attention_with_large_scores() {
    // Scores up to ~±30: the running max must be rescaled as it grows.
    let mut rng = Rng::new(22);
    check(&mut rng, shape(2, 33, 45, 2, 32), false, None, 20.0);
    check(&mut rng, shape(1, 40, 40, 1, 32), true, Some(1.0), 5.0);
}

#[test]
fn attention_tiny_unet_shape() {
    // The largest tiny-UNet cross-attention: 2 candidates, 16x16 tokens, 77 text tokens.
    let mut rng = Rng::new(23);
    check(&mut rng, shape(2, 256, 77, 4, 32), false, None, 1.0);
}

#[test]
fn attention_rejects_bad_head_dim() {
    let q = zeros(&[1, 4, 30]);
    let cfg = attention::Sdpa {
        heads: 5,
        scale: None,
        is_causal: false,
    };
    let err = attention::scaled_dot_product_attention(ctx(), &q, &q, &q, &zeros(&[1, 4, 30]), cfg)
        .unwrap_err();
    assert!(err.to_string().contains("multiple of 4"), "{err}");
    let k = zeros(&[1, 4, 32]);
    let cfg = attention::Sdpa { heads: 1, ..cfg };
    let q = zeros(&[1, 4, 32]);
    let err = attention::scaled_dot_product_attention(
        ctx(),
        &q,
        &k,
        &zeros(&[1, 5, 32]),
        &zeros(&[1, 4, 32]),
        cfg,
    )
    .unwrap_err();
    assert!(err.to_string().contains("v has shape"), "{err}");
}

/// One head wider than the fused kernel holds (the VAE's 512-channel mid block):
/// `Graph::attention` runs it without the `[N, Lq, Lk]` scores, so the graph's
/// only activation is its output.
#[test]
fn graph_attention_handles_one_wide_head() {
    let mut rng = Rng::new(77);
    let s = shape(2, 9, 9, 1, 192);
    let (qh, kh, vh) = (
        rng.vec(2 * 9 * 192),
        rng.vec(2 * 9 * 192),
        rng.vec(2 * 9 * 192),
    );
    let upload = |data: &[f32]| Tensor::from_f32(ctx(), "x", &[2, 9, 192], data).unwrap();
    let mut g = easel::models::Graph::new(ctx(), "wide");
    let out = g
        .attention(&upload(&qh), &upload(&kh), &upload(&vh), 1, false)
        .unwrap();
    g.run().unwrap();
    assert_eq!(
        g.activation_bytes(),
        out.bytes(),
        "activations: the output alone"
    );
    let want =
        reference::scaled_dot_product_attention(&qh, &kh, &vh, s, 1.0 / 192f64.sqrt(), false);
    // As in `check`.
    assert_close("wide head", &out.to_vec(ctx()).unwrap(), &want, 1e-5, 1e-4);
}
