//! wgsl/sampler.wgsl against tests/reference/sampler.rs.

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::sampler as reference;
use easel::gpu::dispatch;
use easel::gpu::Tensor;
use easel::ops::sampler;
use easel::schedulers::StepCoefficients;

fn table(rng: &mut Rng, steps: usize) -> (Tensor, Vec<f32>) {
    random(rng, &[steps, sampler::STEP_ROW])
}

/// Random coefficients with a clamp that bites (|x0| can reach ~2, clip 0.75).
fn step_table(rng: &mut Rng, steps: usize) -> (Vec<StepCoefficients>, Tensor) {
    let rows: Vec<StepCoefficients> = (0..steps)
        .map(|_| {
            let mut v = [0.0f32; 10];
            v.iter_mut().for_each(|c| *c = rng.uniform());
            let mut s: StepCoefficients = bytemuck::cast(v);
            s.clip = 0.75;
            s
        })
        .collect();
    let t = sampler::upload_table(ctx(), &rows).unwrap();
    (rows, t)
}

#[test]
fn prepare_replicates_candidates_per_prompt() {
    let mut rng = Rng::new(10);
    let (k, prompts) = (3, 2);
    let (tab, tab_h) = table(&mut rng, 4);
    let (x, xh) = random(&mut rng, &[k, 3, 5, 7]);
    let model_in = zeros(&[(prompts + 1) * k, 3, 5, 7]);
    let timesteps = zeros(&[(prompts + 1) * k]);
    let d = sampler::prepare(ctx(), &tab, 2, &x, prompts, &model_in, &timesteps).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    let (want_in, want_t) = reference::prepare(
        &tab_h[2 * sampler::STEP_ROW..3 * sampler::STEP_ROW],
        &xh,
        prompts,
        k,
    );
    // One f32 multiply: exact up to rounding.
    assert_close(
        "model_in",
        &model_in.to_vec(ctx()).unwrap(),
        &want_in,
        0.0,
        1e-7,
    );
    assert_close(
        "timesteps",
        &timesteps.to_vec(ctx()).unwrap(),
        &want_t,
        0.0,
        0.0,
    );
}

/// A dedicated inpainting UNet's input `[(1+P)K, C + E, h, w]`: `prepare`
/// fills the first C channels of every item, `condition` the last E (the
/// same for every item), as `torch.cat([scaled x, mask, masked latents], 1)`.
/// Copies and one f32 multiply: exact up to rounding.
#[test]
fn prepare_and_condition_fill_an_inpainting_unets_input() {
    let mut rng = Rng::new(11);
    let (k, prompts, [c, e, h, w]) = (2, 1, [4, 5, 3, 2]);
    let (tab, tab_h) = table(&mut rng, 3);
    let (x, xh) = random(&mut rng, &[k, c, h, w]);
    let (extra, extra_h) = random(&mut rng, &[1, e, h, w]);
    let model_in = zeros(&[(prompts + 1) * k, c + e, h, w]);
    let timesteps = zeros(&[(prompts + 1) * k]);
    let condition = sampler::condition(ctx(), &extra, &model_in).unwrap();
    let d = sampler::prepare(ctx(), &tab, 1, &x, prompts, &model_in, &timesteps).unwrap();
    dispatch::run(ctx(), &[condition, d]).unwrap();
    let row = &tab_h[sampler::STEP_ROW..2 * sampler::STEP_ROW];
    let (scaled, want_t) = reference::prepare(row, &xh, prompts, k);
    let want = reference::concat_channels(&scaled, c * h * w, &extra_h);
    let got = model_in.to_vec(ctx()).unwrap();
    assert_close("model_in", &got, &want, 0.0, 1e-7);
    assert_close(
        "timesteps",
        &timesteps.to_vec(ctx()).unwrap(),
        &want_t,
        0.0,
        0.0,
    );
    let narrow = zeros(&[k, c + e, h + 1, w]);
    let err = sampler::condition(ctx(), &extra, &narrow).unwrap_err();
    assert!(err.to_string().contains("do not fit"), "{err}");
}

#[test]
fn guide_combines_sub_prompts() {
    let mut rng = Rng::new(11);
    for prompts in [1, 3] {
        let k = 2;
        let (out, out_h) = random(&mut rng, &[(prompts + 1) * k, 3, 4, 4]);
        let (w, w_h) = random(&mut rng, &[prompts]);
        let guided = zeros(&[k, 3, 4, 4]);
        let d = sampler::guide(ctx(), &out, &w, 7.5, &guided).unwrap();
        dispatch::run(ctx(), &[d]).unwrap();
        let want = reference::guide(&out_h, &w_h, 7.5, k * 48);
        // A few f32 operations on values <= 1 scaled by 7.5.
        assert_close("guide", &guided.to_vec(ctx()).unwrap(), &want, 1e-5, 1e-6);
    }
}

#[test]
fn step_applies_the_linear_form() {
    let mut rng = Rng::new(12);
    let shape = [4, 3, 9, 9];
    let (tab_h, tab) = step_table(&mut rng, 3);
    let (m, m_h) = random(&mut rng, &shape);
    let (noise, noise_h) = random(&mut rng, &shape);
    let (x, x_h) = random(&mut rng, &shape);
    let (x0, x0_h) = random(&mut rng, &shape);
    let steps_run = Tensor::from_u32(ctx(), "steps run", &[1], &[5]).unwrap();
    let d = sampler::step(ctx(), &tab, 1, &m, &noise, &x, &x0, &steps_run).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    // One executed step counts once, whatever its workgroup count (4 here).
    let counted = steps_run.to_vec(ctx()).unwrap();
    assert_eq!(bytemuck::cast_slice::<f32, u32>(&counted), [6]);
    let (want_x, want_x0) = reference::apply(&tab_h[1], &x_h, &m_h, &x0_h, &noise_h);
    let widen = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    // A few f32 multiply-adds of values <= 1 (apply rounds its f64 result to f32).
    assert_close(
        "x_next",
        &x.to_vec(ctx()).unwrap(),
        &widen(want_x),
        2e-6,
        1e-6,
    );
    assert_close(
        "x0",
        &x0.to_vec(ctx()).unwrap(),
        &widen(want_x0),
        2e-6,
        1e-6,
    );
}

#[test]
fn step_rejects_a_row_past_the_table() {
    let tab = zeros(&[2, sampler::STEP_ROW]);
    let x = zeros(&[1, 4]);
    let err = sampler::step(ctx(), &tab, 2, &x, &x, &x, &x, &x).unwrap_err();
    assert!(err.to_string().contains("step table"), "{err}");
}

/// img2img's start: each candidate is the image noised with its own draw, x0
/// the image. One multiply-add per element: within a few f32 ulps.
#[test]
fn add_noise_starts_every_candidate_from_the_image() {
    let mut rng = Rng::new(40);
    let (k, shape) = (3, [4, 5, 6]);
    let (init, init_h) = random(&mut rng, &[1, 4, 5, 6]);
    let (noise, noise_h) = random(&mut rng, &[k, shape[0], shape[1], shape[2]]);
    let x = zeros(&[k, 4, 5, 6]);
    let x0 = zeros(&[k, 4, 5, 6]);
    let level = (0.8, 0.6);
    let d = sampler::add_noise(ctx(), &init, &noise, level, &x, &x0).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    let (want_x, want_x0) = reference::add_noise(&init_h, &noise_h, level);
    assert_close("x", &x.to_vec(ctx()).unwrap(), &want_x, 1e-6, 1e-6);
    assert_close("x0", &x0.to_vec(ctx()).unwrap(), &want_x0, 0.0, 0.0);
    let err = sampler::add_noise(ctx(), &x, &noise, level, &x, &x0).unwrap_err();
    assert!(err.to_string().contains("init"), "{err}");
}

/// Inpainting's pull-back with a soft mask (0, 1 and values between): a mix
/// of two multiply-adds, within a few f32 ulps.
#[test]
fn keep_pulls_the_unmasked_region_back_to_the_image() {
    let mut rng = Rng::new(41);
    let k = 2;
    let (init, init_h) = random(&mut rng, &[1, 3, 4, 4]);
    let (noise, noise_h) = random(&mut rng, &[k, 3, 4, 4]);
    let (x, x_h) = random(&mut rng, &[k, 3, 4, 4]);
    let (x0, x0_h) = random(&mut rng, &[k, 3, 4, 4]);
    let mask_h: Vec<f32> = (0..48).map(|i| [0.0, 1.0, 0.25][i % 3]).collect();
    let mask = Tensor::from_f32(ctx(), "mask", &[1, 3, 4, 4], &mask_h).unwrap();
    let level = (0.5, 0.9);
    let d = sampler::keep(ctx(), &init, &noise, &mask, level, (&x, &x0)).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    let (want_x, want_x0) = reference::keep(&init_h, &noise_h, &mask_h, level, (&x_h, &x0_h));
    assert_close("x", &x.to_vec(ctx()).unwrap(), &want_x, 1e-6, 1e-6);
    assert_close("x0", &x0.to_vec(ctx()).unwrap(), &want_x0, 1e-6, 1e-6);
}
