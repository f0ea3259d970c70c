//! Kernel choices pinned through the environment: `EASEL_COOPERATIVE` (the
//! cooperative-matrix kernels), `EASEL_WIDE_TILES` (the 128×128 GEMM tile),
//! `EASEL_SPLIT_NORMS` (group norms over chunks of each segment),
//! `EASEL_WEIGHT_TEXTURES` (layer weights read through textures) and
//! `EASEL_IMAGE_TEXTURES` (convolution images staged in textures), each `off`,
//! `auto` (the default) or `always`; [`crate::gpu::Context`] says
//! what each means for its kernels.

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Never.
    Off,
    /// Where easel expects it to pay (the default).
    Auto,
    /// Wherever it can run: to check or time it.
    Always,
}

/// The environment variable naming the measured kernel tables' file
/// (`ops::tuning`), or `off`.
pub const TUNING_ENV: &str = "EASEL_TUNING";

/// `EASEL_TUNING=off`: no measured table is read, the rules choose every kernel.
pub fn tuning_off() -> bool {
    std::env::var_os(TUNING_ENV).is_some_and(|v| v.eq_ignore_ascii_case("off"))
}

impl Policy {
    /// The policy environment variable `name` sets; unset or empty is `Auto`.
    pub fn from_env(name: &str) -> Result<Self> {
        let value = std::env::var(name).unwrap_or_default();
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            "always" => Ok(Self::Always),
            other => Err(Error::BadInput(format!(
                "{name}={other}: expected off, auto or always"
            ))),
        }
    }
}
