//! GPU memory as easel sees it: every buffer made through
//! [`Context::create_buffer`](crate::gpu::Context::create_buffer) is a [`Buffer`]
//! whose bytes count as live until it is dropped, so the context knows the bytes
//! held now and the most held at once (the peak a request reports), and the
//! one-line error a user gets when a buffer cannot exist on this adapter.
//!
//! Counted: storage and uniform buffers (weights, activations, a plan's state),
//! for as long as a tensor or a planned [`Dispatch`](crate::gpu::Dispatch) that
//! binds them lives (a bind group keeps its buffers alive, so the dispatch
//! keeps them counted too).
//! Not counted: the staging copy of a readback (host-visible, freed at once).
//! A buffer's bytes are those asked for (rounded to 4); drivers may round
//! further, so the figures are a lower bound of what the driver reserves.
//!
//! A buffer may be deferred ([`Buffer::deferred`]): an activation arena's slot,
//! whose size can still grow while a plan is made (`models::arena`), made (and
//! counted) the first time anything needs the wgpu buffer, or when the plan is
//! finished ([`Buffer::make`]).
//!
//! A layer weight held in its texture copy ([`Buffer::held_in`],
//! `gpu::texture::hold`) is deferred too: only its texture counts until
//! something binds or reads the buffer, which is then made and filled from the
//! texture.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::Error;
use crate::gpu::texture::{self, Texture};

/// Bytes of the counted buffers alive now, the most alive at once since the
/// last [`Memory::reset_peak`], and how many buffers (and bytes) were ever made.
#[derive(Debug, Default)]
pub struct Memory {
    live: AtomicU64,
    peak: AtomicU64,
    made: AtomicU64,
    made_bytes: AtomicU64,
}

impl Memory {
    fn allocated(&self, bytes: u64) {
        let live = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(live, Ordering::Relaxed);
        self.made.fetch_add(1, Ordering::Relaxed);
        self.made_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Buffers made so far (tests assert a reused plan makes none).
    pub fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    /// Bytes of the buffers made so far.
    pub fn made_bytes(&self) -> u64 {
        self.made_bytes.load(Ordering::Relaxed)
    }

    fn freed(&self, bytes: u64) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Start a new peak from what is alive now (a request's start: its peak
    /// includes the weights and a reused plan, not an earlier request's).
    pub fn reset_peak(&self) {
        self.peak.store(self.live(), Ordering::Relaxed);
    }
}

/// A counted `wgpu::Buffer` (it derefs to one): its bytes leave the live count
/// when the last owner drops it.
pub struct Buffer {
    kind: Kind,
    memory: Arc<Memory>,
    /// A weight's texture copy (`gpu::texture`), made when a kernel first
    /// binds it; counted with the buffer.
    texture: OnceLock<Texture>,
}

enum Kind {
    Made(wgpu::Buffer),
    Deferred(Deferred),
}

/// A buffer made at its size then, the first time it is needed.
struct Deferred {
    device: wgpu::Device,
    label: String,
    usage: wgpu::BufferUsages,
    /// Held while the buffer is made, so a growth and the making never race.
    size: Mutex<u64>,
    made: OnceLock<wgpu::Buffer>,
    /// A held weight's: the queue that fills the buffer from its texture copy
    /// when made ([`Buffer::held_in`]).
    fill: Option<wgpu::Queue>,
}

impl Buffer {
    pub(crate) fn new(buffer: wgpu::Buffer, memory: Arc<Memory>) -> Self {
        memory.allocated(buffer.size());
        Self {
            kind: Kind::Made(buffer),
            memory,
            texture: OnceLock::new(),
        }
    }

    /// A buffer of at least `size` bytes (a multiple of 4) made when first
    /// needed; until then [`Buffer::grow`] may enlarge it.
    pub(crate) fn deferred(
        device: &wgpu::Device,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
        memory: Arc<Memory>,
    ) -> Self {
        Self {
            kind: Kind::Deferred(Deferred {
                device: device.clone(),
                label: label.to_string(),
                usage,
                size: Mutex::new(size),
                made: OnceLock::new(),
                fill: None,
            }),
            memory,
            texture: OnceLock::new(),
        }
    }

    /// This deferred buffer, not made yet, as a weight whose values are in
    /// `copy` alone: made and filled from `copy` (by `queue`) the first time
    /// anything needs it, so until then only the texture counts.
    pub(crate) fn held_in(mut self, copy: Texture, queue: &wgpu::Queue) -> Self {
        match &mut self.kind {
            Kind::Deferred(d) if d.made.get().is_none() => d.fill = Some(queue.clone()),
            _ => unreachable!("only a deferred buffer not made yet is held in a texture"),
        }
        self.texture_or_init(|| copy);
        self
    }

    /// Bytes it has, or will have when made. Unlike `wgpu::Buffer::size`, this
    /// does not make a deferred buffer.
    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::Made(b) => b.size(),
            Kind::Deferred(d) => *lock(&d.size),
        }
    }

    /// Enlarge a deferred buffer not made yet to `size` bytes; `false` where
    /// it is made already (or was never deferred, or holds a weight): its size is final.
    pub fn grow(&self, size: u64) -> bool {
        let Kind::Deferred(d) = &self.kind else {
            return false;
        };
        let mut held = lock(&d.size);
        if d.made.get().is_some() || d.fill.is_some() {
            return false;
        }
        *held = (*held).max(size.next_multiple_of(4));
        true
    }

    /// Whether the wgpu buffer exists (a deferred one can no longer grow).
    pub fn is_made(&self) -> bool {
        match &self.kind {
            Kind::Made(_) => true,
            Kind::Deferred(d) => d.made.get().is_some(),
        }
    }

    /// The wgpu buffer, made now at its settled size if it was deferred.
    pub fn make(&self) -> &wgpu::Buffer {
        match &self.kind {
            Kind::Made(b) => b,
            Kind::Deferred(d) => {
                let size = lock(&d.size);
                d.made.get_or_init(|| {
                    self.memory.allocated(*size);
                    let buffer = d.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(&d.label),
                        size: *size,
                        usage: d.usage,
                        mapped_at_creation: false,
                    });
                    if let (Some(queue), Some(copy)) = (&d.fill, self.texture.get()) {
                        texture::restore(&d.device, queue, copy, &buffer);
                    }
                    buffer
                })
            }
        }
    }
}

impl Buffer {
    /// The texture copy, if one was made.
    pub(crate) fn texture(&self) -> Option<&Texture> {
        self.texture.get()
    }

    /// The texture copy, made by `make` (and counted) if there is none.
    pub(crate) fn texture_or_init(&self, make: impl FnOnce() -> Texture) -> &Texture {
        self.texture.get_or_init(|| {
            let texture = make();
            self.memory.allocated(texture.bytes());
            texture
        })
    }
}

/// The size lock; a panic while it was held leaves a valid size.
fn lock(size: &Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    size.lock().unwrap_or_else(|e| e.into_inner())
}

impl Deref for Buffer {
    type Target = wgpu::Buffer;

    fn deref(&self) -> &wgpu::Buffer {
        self.make()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.is_made() {
            self.memory.freed(self.size());
        }
        if let Some(texture) = self.texture.get() {
            self.memory.freed(texture.bytes());
        }
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Made(b) => b.fmt(f),
            Kind::Deferred(d) => write!(f, "Buffer({}, deferred, {} bytes)", d.label, self.size()),
        }
    }
}

/// Which of an adapter's limits a buffer passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `max_storage_buffer_binding_size`: the most one kernel binding may cover.
    Binding,
    /// `max_buffer_size`: the most one buffer may hold.
    Buffer,
}

/// The error for `what` (a tensor's label) needing `bytes` where `adapter`
/// allows `limit` bytes: what, how much, which limit; [`Error::advise`] adds
/// what would help, where the caller knows what the tensor is.
pub fn too_large(what: &str, bytes: u64, adapter: &str, kind: Limit, limit: u64) -> Error {
    let per = match kind {
        Limit::Binding => "per storage binding (max_storage_buffer_binding_size)",
        Limit::Buffer => "per buffer (max_buffer_size)",
    };
    Error::DeviceLimit(format!(
        "`{what}` needs {bytes} bytes ({}) but {adapter} allows at most {limit} bytes ({}) {per}",
        human(bytes),
        human(limit)
    ))
}

/// Bytes as a person reads them, in decimal units (`151.8 MB`, `12.96 GB`).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=999_999 => format!("{:.1} kB", b / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_bytes_fall_on_drop_and_the_peak_stays_until_reset() {
        let memory = Arc::new(Memory::default());
        memory.allocated(100);
        memory.allocated(50);
        memory.freed(100);
        assert_eq!((memory.live(), memory.peak()), (50, 150));
        memory.reset_peak();
        assert_eq!(memory.peak(), 50);
        memory.allocated(20);
        assert_eq!((memory.live(), memory.peak()), (70, 70));
    }

    #[test]
    fn too_large_names_the_tensor_bytes_limit_and_what_helps() {
        let e = too_large(
            "text_model.embeddings.token_embedding.weight",
            151_781_376,
            "llvmpipe",
            Limit::Binding,
            134_217_728,
        )
        .advise("`--weights f16` stores f32 weights in half the bytes");
        assert_eq!(e.exit_code(), 2, "DeviceLimit: docs/reliability.md");
        assert_eq!(
            e.to_string(),
            "`text_model.embeddings.token_embedding.weight` needs 151781376 bytes (151.8 MB) but \
             llvmpipe allows at most 134217728 bytes (134.2 MB) per storage binding \
             (max_storage_buffer_binding_size); `--weights f16` stores f32 weights in half the bytes"
        );
        let e = too_large("post", 5, "a", Limit::Buffer, 4);
        assert!(
            e.to_string().ends_with("per buffer (max_buffer_size)"),
            "{e}"
        );
        let other = Error::BadInput("x".into()).advise("y");
        assert_eq!(other.to_string(), "x", "only device limits get advice");
    }

    #[test]
    fn bytes_read_in_decimal_units() {
        assert_eq!(human(512), "0.5 kB");
        assert_eq!(human(151_781_376), "151.8 MB");
        assert_eq!(human(12_960_000_000), "12.96 GB");
    }
}
