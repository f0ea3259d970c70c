//! `scheduler_config.json` as diffusers reads it (`easel::schedulers::config`):
//! Python's non-standard numbers, and the order in which missing fields take
//! their defaults (the file's class, then the sampler's).

use easel::schedulers::config::{BetaSchedule, Defaults, SchedulerConfig, TimestepSpacing};

#[test]
fn python_infinity_reads_as_default() {
    let cfg = SchedulerConfig::from_json(
        r#"{"lambda_min_clipped": -Infinity, "_class_name": "a NaN \"Infinity\""}"#,
        "x.json",
    )
    .unwrap();
    assert_eq!(cfg.lambda_min_clipped, f64::NEG_INFINITY);
    assert_eq!(cfg.class_name.as_deref(), Some("a NaN \"Infinity\""));
}

#[test]
fn missing_fields_take_class_then_sampler_defaults() {
    let ddim = Defaults::of_class("DDIMScheduler").unwrap();
    let euler = Defaults::of_class("EulerAncestralDiscreteScheduler").unwrap();
    // SD 1.x: PNDMScheduler has no timestep_spacing in its file -> PNDM's "leading".
    let sd = SchedulerConfig::from_json(r#"{"_class_name": "PNDMScheduler"}"#, "x").unwrap();
    assert_eq!(sd.spacing(&euler), TimestepSpacing::Leading);
    assert!(!sd.set_alpha_to_one(&ddim));
    assert!(
        sd.clip_sample(&ddim),
        "PNDM has no clip_sample: DDIM's default"
    );
    // No class: the sampler's own defaults.
    let bare = SchedulerConfig::from_json("{}", "x").unwrap();
    assert_eq!(bare.spacing(&euler), TimestepSpacing::Linspace);
    assert_eq!(bare.spacing(&ddim), TimestepSpacing::Leading);
    assert_eq!(bare.num_train_timesteps, 1000);
    assert_eq!(bare.beta_schedule, BetaSchedule::Linear);
}
