//! One error type for the library, and the exit code each kind maps to.
//!
//! The CLI promises (DESIGN.md): 0 ok, 2 bad input (prompt, arguments, model
//! files), 3 no usable GPU adapter, 1 anything else. Every error is one line
//! that says what went wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user gave something we cannot use: arguments, prompt, sizes, paths.
    #[error("{0}")]
    BadInput(String),

    /// A model folder or weight file is missing, corrupt or mismatched.
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },

    /// No adapter, or none that can run easel's kernels.
    #[error("{0}")]
    NoAdapter(String),

    /// A device limit would be exceeded by the requested work.
    #[error("{0}")]
    DeviceLimit(String),

    /// The run's arithmetic produced NaN or infinity (found by the loop's guard).
    #[error("{0}")]
    NonFinite(String),

    /// The GPU or its driver failed (validation error, lost device, map failure).
    #[error("gpu: {0}")]
    Gpu(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Exit code documented in DESIGN.md and README.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BadInput(_) | Error::Model { .. } | Error::DeviceLimit(_) => 2,
            Error::NoAdapter(_) => 3,
            Error::Gpu(_) | Error::NonFinite(_) | Error::Io { .. } => 1,
        }
    }

    pub fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A device-limit error with what would help appended (`help` names a flag:
    /// only the layer that planned the tensor knows which); other errors unchanged.
    pub fn advise(self, help: &str) -> Self {
        match self {
            Error::DeviceLimit(message) => Error::DeviceLimit(format!("{message}; {help}")),
            other => other,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `bail!(BadInput, "...")`-style shorthand used across the crate.
#[macro_export]
macro_rules! bad_input {
    ($($arg:tt)*) => { $crate::error::Error::BadInput(format!($($arg)*)) };
}
