//! The activation arena of one forward pass: activation buffers reused by
//! liveness over the recorded graph.
//!
//! A [`Graph`](crate::models::Graph) records its dispatches in the order they
//! run, and a model's forward holds a tensor handle exactly as long as it may
//! still record a dispatch that reads it (PyTorch's own lifetime rule). So an
//! activation buffer is dead for the rest of the pass once nobody holds it but
//! the arena and the dispatches already recorded: every read of it happens
//! before any dispatch recorded from now on, and a new activation may take it.
//! Dispatches of one pass run in order with a barrier between any write and a
//! read or write of the same buffer (wgpu's usage tracking), so reuse never
//! overlaps two live values.
//!
//! Liveness is counted, not guessed: each buffer's strong count is the arena's
//! own handle, one per binding of a recorded dispatch of this graph, and any
//! other holder (a tensor handle, a dispatch of another graph, a plan's state),
//! so a buffer that anything outside this graph still names is never reused.
//! Reuse is best fit (the smallest free buffer that holds the new tensor, bound
//! as exactly the tensor's bytes); a tensor no free buffer holds gets a new one.
//! The buffers are sized once, when the graph is planned; running it allocates
//! nothing.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Result;
use crate::gpu::tensor::{numel, STORAGE};
use crate::gpu::{Buffer, Context, DType, Dispatch, Tensor};

/// One activation buffer and how many bindings of recorded dispatches hold it.
struct Slot {
    buffer: Arc<Buffer>,
    bindings: usize,
    /// Bytes of the tensor it holds now.
    held: u64,
}

impl Slot {
    /// Nothing but the arena and the recorded dispatches holds it.
    fn is_dead(&self) -> bool {
        Arc::strong_count(&self.buffer) == 1 + self.bindings
    }
}

/// The activation buffers of one graph (see the module docs).
pub struct Arena {
    /// `false`: every activation gets its own buffer (the unplanned pass, for
    /// comparing against; [`Context::plan_activations`]).
    reuse: bool,
    slots: Vec<Slot>,
    /// A buffer's slot, by its address.
    by_buffer: HashMap<usize, usize>,
    /// The most tensor bytes alive at once so far: what a perfect placement
    /// would need, against [`Arena::bytes`], what best fit holds.
    live_peak: u64,
}

impl Arena {
    pub fn new(ctx: &Context) -> Self {
        Self {
            reuse: ctx.plan_activations(),
            slots: Vec::new(),
            by_buffer: HashMap::new(),
            live_peak: 0,
        }
    }

    /// An f32 activation of `shape`: a dead buffer large enough, bound as the
    /// tensor's bytes alone, or a new one (contents undefined either way: every
    /// op writes its whole output).
    pub fn tensor(&mut self, ctx: &Context, label: &str, shape: &[usize]) -> Result<Tensor> {
        let bytes = (numel(shape) * DType::F32.size()) as u64;
        ctx.check_binding_size(label, bytes)?;
        let live: u64 = self
            .slots
            .iter()
            .filter(|s| !s.is_dead())
            .map(|s| s.held)
            .sum();
        self.live_peak = self.live_peak.max(live + bytes);
        let slot = match self.reuse.then(|| self.best_fit(bytes)).flatten() {
            Some(i) => i,
            None => self.add(ctx.create_buffer(label, bytes.max(4), STORAGE)),
        };
        self.slots[slot].held = bytes;
        let buffer = self.slots[slot].buffer.clone();
        let window = (buffer.size() != bytes).then_some((0, bytes));
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype: DType::F32,
            window,
        })
    }

    /// Count the bindings of a dispatch recorded into the graph.
    pub fn record(&mut self, dispatch: &Dispatch) {
        for buffer in &dispatch.buffers {
            if let Some(&i) = self.by_buffer.get(&address(buffer)) {
                self.slots[i].bindings += 1;
            }
        }
    }

    /// Bytes of the arena's buffers (what its activations hold at once).
    pub fn bytes(&self) -> u64 {
        self.slots.iter().map(|s| s.buffer.size()).sum()
    }

    /// The most activation bytes alive at once (see `live_peak`).
    pub fn live_peak_bytes(&self) -> u64 {
        self.live_peak
    }

    fn best_fit(&self, bytes: u64) -> Option<usize> {
        (self.slots.iter().enumerate())
            .filter(|(_, s)| s.buffer.size() >= bytes && s.is_dead())
            .min_by_key(|(_, s)| s.buffer.size())
            .map(|(i, _)| i)
    }

    /// A new slot for `buffer`: its index.
    fn add(&mut self, buffer: Buffer) -> usize {
        let buffer = Arc::new(buffer);
        self.by_buffer.insert(address(&buffer), self.slots.len());
        self.slots.push(Slot {
            buffer,
            bindings: 0,
            held: 0,
        });
        self.slots.len() - 1
    }
}

fn address(buffer: &Arc<Buffer>) -> usize {
    Arc::as_ptr(buffer) as usize
}
