//! wgsl/embedding.wgsl against tests/reference/embedding.rs.

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::embedding as reference;
use easel::gpu::dispatch;
use easel::gpu::Tensor;
use easel::ops::embedding;

#[test]
fn timestep_embedding_matches_diffusers() {
    // Batch of 6, fractional and DDPM-range timesteps.
    let t = [0.0f32, 1.0, 2.5, 37.0, 500.25, 999.0];
    let timesteps = Tensor::from_f32(ctx(), "timesteps", &[t.len()], &t).unwrap();
    for dim in [32, 33, 320] {
        for flip in [false, true] {
            for shift in [0.0, 1.0] {
                let config = embedding::Timesteps::new(dim, flip, shift);
                let freqs = config.upload_frequencies(ctx()).unwrap();
                let out = zeros(&[t.len(), dim]);
                let d = embedding::timestep_embedding(ctx(), &config, &freqs, &timesteps, &out)
                    .unwrap();
                dispatch::run(ctx(), &[d]).unwrap();
                let got = out.to_vec(ctx()).unwrap();
                let want = reference::timestep_embedding(&t, dim, flip, shift, 1.0, 10_000.0);
                // Same f32 frequencies and angles as the reference: what remains
                // is GPU sin/cos after range reduction. 1e-6 absolute.
                assert_close(
                    &format!("timestep_embedding dim={dim} flip={flip} shift={shift}"),
                    &got,
                    &want,
                    1e-6,
                    0.0,
                );
            }
        }
    }
}

#[test]
fn timestep_embedding_scale_and_max_period() {
    let t = [3.0f32, 250.0];
    let timesteps = Tensor::from_f32(ctx(), "timesteps", &[2], &t).unwrap();
    let config = embedding::Timesteps {
        scale: 0.5,
        max_period: 1000.0,
        ..embedding::Timesteps::new(16, true, 0.0)
    };
    let freqs = config.upload_frequencies(ctx()).unwrap();
    let out = zeros(&[2, 16]);
    let d = embedding::timestep_embedding(ctx(), &config, &freqs, &timesteps, &out).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    // As above.
    assert_close(
        "timestep_embedding scale=0.5 max_period=1000",
        &out.to_vec(ctx()).unwrap(),
        &reference::timestep_embedding(&t, 16, true, 0.0, 0.5, 1000.0),
        1e-6,
        0.0,
    );
}

#[test]
fn timestep_embedding_rejects_zero_denominator() {
    let config = embedding::Timesteps::new(2, false, 1.0);
    let err = config.upload_frequencies(ctx()).unwrap_err();
    assert!(err.to_string().contains("divides by zero"), "{err}");
}

#[test]
fn clip_text_embeddings_gather_tokens_and_positions() {
    let mut rng = Rng::new(20);
    // Batch 3 of 9 tokens from a 50-word vocabulary, 12 positions, D = 20; then
    // CLIP's real sequence length 77 with a small width.
    for (b, l, v, p, d) in [(3, 9, 50, 12, 20), (2, 77, 300, 77, 64)] {
        let ids: Vec<u32> = (0..b * l)
            .map(|_| (rng.next_u64() % v as u64) as u32)
            .collect();
        let input_ids = Tensor::from_u32(ctx(), "input_ids", &[b, l], &ids).unwrap();
        let (token, token_h) = random(&mut rng, &[v, d]);
        let (position, position_h) = random(&mut rng, &[p, d]);
        let out = zeros(&[b, l, d]);
        let dispatches =
            embedding::clip_text_embeddings(ctx(), &input_ids, &token, &position, &out).unwrap();
        dispatch::run(ctx(), &dispatches).unwrap();
        // One f32 add, correctly rounded on both sides: exact.
        assert_close(
            &format!("clip_text_embeddings B={b} L={l} D={d}"),
            &out.to_vec(ctx()).unwrap(),
            &reference::clip_text_embeddings(&ids, l, &token_h, &position_h, d),
            0.0,
            0.0,
        );
    }
}

#[test]
fn clip_text_embeddings_checks_types_and_lengths() {
    let ids = Tensor::from_u32(ctx(), "input_ids", &[1, 5], &[0; 5]).unwrap();
    let err = embedding::clip_text_embeddings(
        ctx(),
        &ids,
        &zeros(&[4, 8]),
        &zeros(&[3, 8]),
        &zeros(&[1, 5, 8]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("3 positions"), "{err}");
    let float_ids = zeros(&[1, 5]);
    let err = embedding::clip_text_embeddings(
        ctx(),
        &float_ids,
        &zeros(&[4, 8]),
        &zeros(&[5, 8]),
        &zeros(&[1, 5, 8]),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("input_ids is F32, expected U32"),
        "{err}"
    );
}

#[test]
fn clip_vision_embeddings_prepend_class_and_add_positions() {
    let mut rng = Rng::new(21);
    // Batch 3, D = 24, a 5×7 patch grid; then ViT-B/32's 7×7 grid at a small width.
    for [b, d, gh, gw] in [[3, 24, 5, 7], [2, 64, 7, 7]] {
        let np = gh * gw;
        let (patches, patches_h) = random(&mut rng, &[b, d, gh, gw]);
        let (class, class_h) = random(&mut rng, &[d]);
        let (position, position_h) = random(&mut rng, &[np + 1, d]);
        let out = zeros(&[b, np + 1, d]);
        let dispatch =
            embedding::clip_vision_embeddings(ctx(), &patches, &class, &position, &out).unwrap();
        dispatch::run(ctx(), &[dispatch]).unwrap();
        // One f32 add: exact.
        assert_close(
            &format!("clip_vision_embeddings B={b} D={d} {gh}x{gw}"),
            &out.to_vec(ctx()).unwrap(),
            &reference::clip_vision_embeddings(&patches_h, [b, d, np], &class_h, &position_h),
            0.0,
            0.0,
        );
    }
}
