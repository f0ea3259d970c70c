//! Kernel choices pinned through the environment: `EASEL_COOPERATIVE` (the
//! cooperative-matrix kernels) and `EASEL_WIDE_TILES` (the 128×128 GEMM tile),
//! each `off`, `auto` (the default) or `always`; [`crate::gpu::Context`] says
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

impl Policy {
    /// The policy environment variable `name` sets; unset or empty is `Auto`.
    pub(crate) fn from_env(name: &str) -> Result<Self> {
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
