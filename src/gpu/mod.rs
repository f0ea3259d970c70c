//! Everything that talks to wgpu directly: the context (instance → adapter →
//! device), the pipeline cache, the buffer pool and the readback helper.

pub mod context;
pub mod pipelines;
pub mod pool;
pub mod profiler;
pub mod readback;

pub use context::{AdapterClass, AdapterOptions, Context};
pub use pipelines::{Access, Kernel, KernelSpec, Shader};
