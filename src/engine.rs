//! The library API: an [`Engine`] owns a GPU context, a loaded model folder
//! ([`Pipeline`]) and the last run's plan; [`Engine::generate`] checks a
//! [`Request`] against the model and runs the loop ([`crate::search`]) on it.
//! The CLI, the farm and `easel bench` are thin layers over these.
//!
//! ```no_run
//! use easel::{AdapterOptions, Engine, PipelineConfig, Request};
//! # fn main() -> easel::Result<()> {
//! let model = PipelineConfig::read("weights/easel-emoji".as_ref())?;
//! let request = Request { seed: 7, ..Request::new("red apple") };
//! request.check(&model)?; // every input error, before any GPU work
//! let engine = Engine::load(easel::gpu::Context::new(&AdapterOptions::default())?, model)?;
//! let image = engine.generate(&request)?;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::error::Result;
use crate::gpu::{AdapterOptions, Context};
use crate::models::pipeline::{Pipeline, PipelineConfig};
use crate::request::{Image, Request};
use crate::search::{self, Plan};

pub struct Engine {
    pub ctx: Context,
    pub pipeline: Pipeline,
    /// The last run's plan, reused by the next request of the same shape.
    plan: Mutex<Option<Plan>>,
}

impl Engine {
    /// Read the model folder `dir` (diffusers layout), open the adapter, load the models.
    pub fn new(dir: &Path, adapter: &AdapterOptions) -> Result<Self> {
        let config = PipelineConfig::read(dir)?;
        Self::load(Context::new(adapter)?, config)
    }

    /// [`Engine::new`] on an adapter already open.
    pub fn with_context(ctx: Context, dir: &Path) -> Result<Self> {
        Self::load(ctx, PipelineConfig::read(dir)?)
    }

    /// Load the models of a folder read (and perhaps checked against) before.
    pub fn load(ctx: Context, config: PipelineConfig) -> Result<Self> {
        // An unreadable kernel table (EASEL_TUNING) is an error now, not a
        // silent change of kernels at the first GEMM.
        crate::ops::tuning::tables()?;
        let pipeline = Pipeline::load(&ctx, config)?;
        Ok(Self {
            ctx,
            pipeline,
            plan: Mutex::default(),
        })
    }

    /// The model folder's configs.
    pub fn config(&self) -> &PipelineConfig {
        &self.pipeline.config
    }

    /// Check `request` against the model, then run the loop of DESIGN.md on it.
    pub fn generate(&self, request: &Request) -> Result<Image> {
        let started = Instant::now();
        let settled = request.check(&self.pipeline.config)?;
        let mut plan = self.last_plan();
        search::run(
            &self.ctx,
            &self.pipeline,
            &mut plan,
            request,
            settled,
            started,
        )
    }

    /// The last run's plan (for `easel bench generate`'s per-phase timing).
    pub(crate) fn last_plan(&self) -> MutexGuard<'_, Option<Plan>> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }
}
