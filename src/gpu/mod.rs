//! Everything that talks to wgpu directly, in the order a program meets it:
//! the context (instance → adapter → device), the pipeline cache, tensors
//! (storage buffers with a shape), dispatches (a kernel bound to its tensors,
//! recorded later), the profiler and the one readback helper. Nothing here
//! knows about ops or models.

pub mod context;
pub mod coop;
pub mod dispatch;
pub mod memory;
pub mod pipelines;
pub mod policy;
pub mod profiler;
pub mod readback;
pub mod tensor;
pub mod texture;

pub use context::{AdapterClass, AdapterOptions, Context};
pub use dispatch::{Dispatch, Launch};
pub use memory::Buffer;
pub use pipelines::{Access, Kernel, KernelSpec, Shader};
pub use policy::Policy;
pub use tensor::{numel, DType, Tensor};
