//! easel: text-to-image on any GPU wgpu reaches.
//!
//! A prompt goes through a loop: a seeded start image, a diffusion denoiser
//! (the *art process*) that makes several candidates, a CLIP-style scorer (the
//! *check output process*) that keeps the best, repeated until the step budget
//! is spent or the scorer is certain enough, then post-processing. Everything
//! runs in hand-written WGSL; only the final image is read back.

pub mod bench;
pub mod engine;
pub mod error;
pub mod farm;
pub mod gpu;
pub mod models;
pub mod ops;
pub mod output;
pub mod phases;
pub mod prompt;
pub mod schedulers;
pub mod search;
pub mod tensor;
pub mod tokenizer;
pub mod weights;

pub use engine::{Engine, Image, Request, Round};
pub use error::{Error, Result};
