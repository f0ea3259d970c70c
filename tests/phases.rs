//! `--schedule` phases (`easel::phases`): lengths and settings resolved over a run,
//! scoring rounds, errors that point at the text, and the step table of mixed
//! samplers run on the CPU reference (tests/reference/sampler.rs) against the
//! exact denoiser of Gaussian data.

#[path = "reference/mod.rs"]
mod reference;

use easel::phases::{step_table, Defaults, Phase, Schedule};
use easel::schedulers::{Sampler, SchedulerConfig, StepCoefficients};
use easel::Result;
use reference::sampler::apply;
const D: Defaults = Defaults {
    sampler: Sampler::Ddim,
    candidates: 4,
    score_every: None,
    guidance: 4.0,
};

fn phases(text: &str, steps: usize) -> Result<Vec<Phase>> {
    Schedule::parse(text)?.resolve(steps, &D)
}

#[test]
fn percentages_and_rest_cover_the_run() {
    let p = phases(
        "40% sampler=euler_a candidates=8; rest k=2 every=3 cfg=6",
        25,
    )
    .unwrap();
    assert_eq!(p[0].steps, 0..10);
    assert_eq!(
        (p[0].sampler, p[0].candidates),
        (Sampler::EulerAncestral, 8)
    );
    assert_eq!(p[0].score_every, 7, "default: four rounds per run");
    assert_eq!(p[1].steps, 10..25);
    assert_eq!(
        (p[1].sampler, p[1].candidates, p[1].score_every),
        (Sampler::Ddim, 2, 3)
    );
    assert_eq!(p[1].guidance, 6.0);
    let halves = phases("50%; 50%", 7).unwrap();
    assert_eq!((halves[0].steps.len(), halves[1].steps.len()), (4, 3));
}

#[test]
fn plain_counts_set_the_length() {
    let s = Schedule::parse("10 k=8; 20 k=1").unwrap();
    assert_eq!(s.total_steps(None, 50), 30);
    assert_eq!(s.total_steps(Some(40), 50), 40);
    assert!(s.resolve(40, &D).is_err());
    assert_eq!(
        Schedule::parse("50%; rest").unwrap().total_steps(None, 50),
        50
    );
}

#[test]
fn rounds_end_every_phase() {
    let p = phases("5 every=2; rest every=10", 12).unwrap();
    assert_eq!(p[0].rounds(), vec![1, 3, 4]);
    assert_eq!(p[1].rounds(), vec![11]);
}

/// Runs `table` on the CPU ([`apply`]) with the exact denoiser of
/// Gaussian data N(0, s²) (eps prediction) and returns the final samples.
fn sample_gaussian(
    table: &[StepCoefficients],
    init: f32,
    config: &SchedulerConfig,
    s: f64,
) -> Vec<f32> {
    let alphas = config.alphas_cumprod();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut normal = move || {
        let mut u = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let (a, b) = (u().max(1e-300), u());
        ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
    };
    let n = 20_000;
    let mut x: Vec<f32> = (0..n).map(|_| init * normal()).collect();
    let mut x0 = vec![0.0; n];
    for row in table {
        let ab = alphas[row.timestep.round() as usize];
        let (a, sigma) = (ab.sqrt(), (1.0 - ab).sqrt());
        let eps: Vec<f32> = x
            .iter()
            .map(|&xi| {
                let xt = row.in_scale as f64 * xi as f64;
                let x0_hat = a * s * s / (a * a * s * s + sigma * sigma) * xt;
                ((xt - a * x0_hat) / sigma) as f32
            })
            .collect();
        let noise: Vec<f32> = (0..n).map(|_| normal()).collect();
        (x, x0) = apply(row, &x, &eps, &x0, &noise);
    }
    x
}

/// Every sampler, alone and mixed in phases (with branch rows after rounds),
/// turns noise into the data's distribution: a wrong scale at a seam between
/// Euler's and DDIM's conventions would change the final spread.
#[test]
fn mixed_phases_sample_the_data_distribution() {
    let config = SchedulerConfig::from_json(
        r#"{"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "beta_end": 0.012, "timestep_spacing": "trailing",
            "clip_sample": false, "set_alpha_to_one": false}"#,
        "test",
    )
    .unwrap();
    let s = 0.5;
    let spread = |text: &str| {
        let phases = Schedule::parse(text).unwrap().resolve(50, &D).unwrap();
        let rounds: Vec<usize> = phases.iter().flat_map(Phase::rounds).collect();
        let (table, init) = step_table(&phases, &rounds, &config).unwrap();
        let x = sample_gaussian(&table, init, &config, s);
        let std = (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
        (std, table.last().unwrap().timestep)
    };
    // Alone: the last step returns the denoiser's estimate at the last timestep,
    // whose spread is the posterior mean's, sqrt(a² s⁴ / (a² s² + σ²)); 50 steps
    // land within 8 % of it (Euler ancestral is furthest, 7 % here).
    for sampler in ["ddim", "euler_a", "dpm++2m"] {
        let (std, t) = spread(&format!("rest sampler={sampler}"));
        let ab = config.alphas_cumprod()[t.round() as usize];
        let ideal = (ab * s.powi(4) / (ab * s * s + 1.0 - ab)).sqrt();
        assert!(
            (std / ideal - 1.0).abs() < 0.08,
            "{sampler}: std {std}, ideal {ideal}"
        );
    }
    // Mixed: within 2 % of the last phase's sampler alone (20,000 samples: ~0.5 %
    // noise). A missing convention scale at a seam is off by 3.5-120 % here.
    for (text, last) in [
        ("40% sampler=euler_a k=4; rest sampler=ddim k=2", "ddim"),
        (
            "30% sampler=ddim; 30% sampler=euler_a; rest sampler=dpm++2m k=3",
            "dpm++2m",
        ),
        (
            "50% sampler=dpm++2m k=1; 50% sampler=euler_a k=8",
            "euler_a",
        ),
    ] {
        let (std, _) = spread(text);
        let (alone, _) = spread(&format!("rest sampler={last}"));
        assert!(
            (std / alone - 1.0).abs() < 0.02,
            "{text}: std {std}, {last} alone {alone}"
        );
    }
}

#[test]
fn errors_point_at_the_text() {
    for (text, steps, wanted, column) in [
        ("40% k=0; rest", 10, "candidates=0", 4),
        ("40% sampler=plms; rest", 10, "unknown sampler", 4),
        ("40% k8", 10, "expected key=value", 4),
        ("x%; rest", 10, "phase length `x%`", 0),
        ("120%", 10, "at most 100%", 0),
        ("rest; rest", 10, "only one phase", 6),
        ("5;;5", 10, "empty phase", 2),
        ("5 k=2; 3", 10, "cover 8 steps", 8),
        ("10; rest", 10, "leave none", 4),
        ("1%; rest", 10, "rounds to 0 steps", 0),
        ("5 color=red; rest", 10, "unknown setting `color`", 2),
        ("5 cfg=nan; rest", 10, "guidance=nan", 2),
    ] {
        let e = phases(text, steps).unwrap_err().to_string();
        assert!(e.contains(wanted), "{text}: {e}");
        let caret = e.lines().nth(2).unwrap();
        assert_eq!(caret.find('^'), Some(2 + column), "{text}: {e}");
    }
}
