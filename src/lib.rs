//! easel: text-to-image on any GPU wgpu reaches.
//!
//! A prompt goes through a loop: a seeded start image, a diffusion denoiser
//! (the *art process*) that makes several candidates, a CLIP-style scorer (the
//! *check output process*) that keeps the best, repeated until the step budget
//! is spent or the scorer is certain enough, then post-processing. Everything
//! runs in hand-written WGSL; only the final image is read back.
//!
//! The modules are layers, each importing only those below it (see
//! docs/architecture.md): [`gpu`] ← [`ops`] ← [`models`] ← the loop
//! ([`request`], `search`, `postprocess`, `trace`) ← [`engine`] ← [`farm`],
//! [`bench`] and the CLI. The request vocabulary is re-exported here.

pub mod bench;
pub mod engine;
pub mod error;
pub mod farm;
pub mod gpu;
pub mod lora;
pub mod memory_plan;
pub mod model_dir;
pub mod models;
pub mod ops;
pub mod output;
pub mod phases;
pub(crate) mod postprocess;
pub mod prompt;
pub mod request;
pub mod schedulers;
pub(crate) mod search;
pub mod tokenizer;
pub(crate) mod trace;
pub mod weights;

pub use engine::Engine;
pub use error::{Error, Result};
pub use gpu::AdapterOptions;
pub use models::pipeline::PipelineConfig;
pub use phases::Schedule;
pub use prompt::{parse as parse_prompt, MultiPrompt, SubPrompt};
pub use request::{Image, Picture, Request, Round, RoundScores, Settled, Start};
pub use schedulers::Sampler;
