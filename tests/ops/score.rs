//! wgsl/score.wgsl against tests/reference/score.rs.

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::score as reference;
use easel::gpu::dispatch;
use easel::gpu::Tensor;
use easel::ops::score;

fn words(t: &Tensor) -> Vec<u32> {
    bytemuck::cast_slice(&t.to_vec(ctx()).unwrap()).to_vec()
}

fn upload_words(shape: &[usize], data: &[u32]) -> Tensor {
    Tensor::from_f32(ctx(), "words", shape, bytemuck::cast_slice(data)).unwrap()
}

#[test]
fn similarity_matches_reference() {
    let mut rng = Rng::new(20);
    for (k, prompts, dim) in [(1, 1, 16), (5, 3, 128), (16, 2, 77)] {
        let (image, image_h) = random(&mut rng, &[k, dim]);
        let (text, text_h) = random(&mut rng, &[prompts, dim]);
        let (weights, weights_h) = random(&mut rng, &[prompts]);
        let scores = zeros(&[k, prompts + 1]);
        let [a, b] = score::similarity(ctx(), &image, &text, &weights, &scores).unwrap();
        dispatch::run(ctx(), &[a, b]).unwrap();
        let want = reference::similarity(&image_h, &text_h, &weights_h, dim);
        // Sums of `dim` f32 products of values in [-1, 1], normalised: 1e-5 absolute.
        assert_close(
            "similarity",
            &scores.to_vec(ctx()).unwrap(),
            &want,
            1e-5,
            0.0,
        );
    }
}

/// Scores `[K, 2]` whose totals (column 1) are `totals`.
fn scores_with_totals(totals: &[f32]) -> Tensor {
    let data: Vec<f32> = totals.iter().flat_map(|&t| [0.0, t]).collect();
    Tensor::from_f32(ctx(), "scores", &[totals.len(), 2], &data).unwrap()
}

fn pick(totals: &[f32], step: usize, certainty: score::Certainty, choice: &Tensor, args: &Tensor) {
    let scores = scores_with_totals(totals);
    let d = score::pick(ctx(), &scores, step, certainty, choice, args, 6..600).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
}

#[test]
fn pick_finds_winner_and_margin() {
    let choice = upload_words(&[4], &[0, 0, 0, score::NOT_STOPPED]);
    let args = upload_words(&[603], &[7; 603]);
    pick(
        &[0.1, 0.4, 0.25, 0.4, -1.0],
        3,
        score::Certainty::NEVER,
        &choice,
        &args,
    );
    let c = words(&choice);
    assert_eq!(
        c[0], 1,
        "argmax; the tie at index 3 goes to the lower index"
    );
    assert_eq!(f32::from_bits(c[1]), 0.4);
    assert_eq!(f32::from_bits(c[2]), 0.0, "margin to the tied runner-up");
    assert_eq!(c[3], score::NOT_STOPPED);
    assert!(words(&args).iter().all(|&w| w == 7), "nothing cancelled");
}

#[test]
fn pick_cancels_remaining_steps_when_certain() {
    let choice = upload_words(&[4], &[0, 0, 0, score::NOT_STOPPED]);
    let args = upload_words(&[603], &[7; 603]);
    let certain = score::Certainty {
        min_score: 0.3,
        min_margin: f32::INFINITY,
    };
    pick(&[0.1, 0.2], 4, certain, &choice, &args);
    assert_eq!(words(&choice)[3], score::NOT_STOPPED, "0.2 < 0.3: not yet");
    pick(&[0.1, 0.35], 5, certain, &choice, &args);
    pick(&[0.5, 0.35], 6, certain, &choice, &args);
    let c = words(&choice);
    assert_eq!(
        (c[0], c[3]),
        (1, 5),
        "stopped at the first certain round; a later pick (stale scores) changes nothing"
    );
    let a = words(&args);
    assert!(
        a[..6].iter().chain(&a[600..]).all(|&w| w == 7),
        "outside the range untouched"
    );
    assert!(a[6..600].iter().all(|&w| w == 0), "the range is zeroed");
}

#[test]
fn pick_margin_needs_two_candidates() {
    let choice = upload_words(&[4], &[0, 0, 0, score::NOT_STOPPED]);
    let args = upload_words(&[603], &[7; 603]);
    let by_margin = score::Certainty {
        min_score: f32::INFINITY,
        min_margin: 0.1,
    };
    pick(&[0.9], 1, by_margin, &choice, &args);
    assert_eq!(
        words(&choice)[3],
        score::NOT_STOPPED,
        "one candidate has no margin"
    );
    pick(&[0.9, 0.5], 2, by_margin, &choice, &args);
    assert_eq!(words(&choice)[3], 2);
}
