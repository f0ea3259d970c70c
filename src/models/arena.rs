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
//! as exactly the tensor's bytes); a tensor no free buffer holds takes the
//! largest free one and grows it, and only when none is free gets a new one.
//! Buffers can grow because they are deferred ([`Buffer::deferred`]): made at
//! their final size when the plan is finished ([`Arena::make_buffers`]) or first
//! bound, so a late large tensor enlarges a dead small buffer instead of adding
//! a buffer beside it. Running a planned graph allocates nothing.
//!
//! Several graphs that never run at the same time (a run's text encoders, UNet
//! passes, scoring passes and post-processing, one after another on one queue)
//! can share one arena ([`SharedArena`]), so the decoder takes the UNet's dead
//! buffers instead of adding its own: the run holds the largest graph's
//! activations, not their sum. Bindings are counted per graph: a buffer bound by
//! two graphs' dispatches carries a value from one to the other and is never
//! reused; one bound by a single graph's dispatches is that graph's own
//! activation, whose value lives within one run of it, so any graph may take it
//! once it is dead. What sharing cannot make safe is a value that outlives its
//! graph's run and took a buffer another graph used before: that graph may run
//! while the value waits, and overwrite it. So graphs that pass values through
//! tensors whose handles they drop (a run's text stage: its conditioning is
//! read by every UNet pass) keep arenas of their own; [`check_shared`] refuses
//! a plan where a value passed between two graphs sits in a third one's
//! buffer; and a run's passes have their outputs (the UNet's prediction, the
//! decoded images) read by the dispatches right after them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::tensor::{numel, STORAGE};
use crate::gpu::{Buffer, Context, DType, Dispatch, Tensor};

/// One activation buffer and how many bindings of recorded dispatches hold it.
struct Slot {
    buffer: Arc<Buffer>,
    bindings: usize,
    /// Bytes of the tensor it holds now.
    held: u64,
    /// The graph whose dispatches bind it, or `None` before any does.
    graph: Option<u32>,
    /// Bound by more than one graph: a value passed between them.
    shared: bool,
    /// Graphs that ever bound the buffer (bit `id` for ids below 64, ids from
    /// 63 on share bit 63), and which had when the current tensor took it.
    history: u64,
    before: u64,
}

impl Slot {
    /// Nothing but the arena and the recorded dispatches holds it, and no
    /// other graph reads what one graph wrote into it.
    fn is_free(&self) -> bool {
        !self.shared && Arc::strong_count(&self.buffer) == 1 + self.bindings
    }
}

/// One arena for several graphs (see the module docs): [`Graph::in_arena`].
///
/// [`Graph::in_arena`]: crate::models::Graph::in_arena
pub type SharedArena = Arc<Mutex<Arena>>;

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
    /// Graphs that have recorded into it, for their ids.
    graphs: u32,
    /// A value passed between graphs in a buffer another graph used before.
    hazard: Option<String>,
}

impl Arena {
    pub fn new(ctx: &Context) -> Self {
        Self {
            reuse: ctx.plan_activations(),
            slots: Vec::new(),
            by_buffer: HashMap::new(),
            live_peak: 0,
            graphs: 0,
            hazard: None,
        }
    }

    /// A new arena that graphs can share.
    pub fn shared(ctx: &Context) -> SharedArena {
        Arc::new(Mutex::new(Self::new(ctx)))
    }

    /// An id for a graph that records into this arena.
    pub fn join(&mut self) -> u32 {
        self.graphs += 1;
        self.graphs
    }

    /// An activation of `shape` and `dtype`: a dead buffer large enough, bound
    /// as the tensor's bytes alone, or a new one (contents undefined either
    /// way: every op writes its whole output).
    pub fn tensor(
        &mut self,
        ctx: &Context,
        label: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let bytes = dtype.bytes(numel(shape));
        ctx.check_binding_size(label, bytes)?;
        let live: u64 = self
            .slots
            .iter()
            .filter(|s| !s.is_free())
            .map(|s| s.held)
            .sum();
        self.live_peak = self.live_peak.max(live + bytes);
        let slot = match self.reuse.then(|| self.best_fit(bytes)).flatten() {
            Some(i) => i,
            None if self.reuse => self.add(ctx.deferred_buffer(label, bytes, STORAGE)),
            None => self.add(ctx.create_buffer(label, bytes.max(4), STORAGE)),
        };
        // A new tensor: which graphs bind it is counted afresh (the buffer's
        // earlier values were each one graph's own, or it would not be free).
        let s = &mut self.slots[slot];
        (s.held, s.graph, s.shared, s.before) = (bytes, None, false, s.history);
        // Bound as its own bytes: the buffer may be (or grow) larger.
        Ok(Tensor {
            buffer: s.buffer.clone(),
            shape: shape.to_vec(),
            dtype,
            window: Some((0, bytes)),
        })
    }

    /// Count the bindings of a dispatch recorded into graph `graph`.
    pub fn record(&mut self, dispatch: &Dispatch, graph: u32) {
        for buffer in dispatch.bound() {
            if let Some(&i) = self.by_buffer.get(&address(buffer)) {
                let slot = &mut self.slots[i];
                slot.bindings += 1;
                let first = *slot.graph.get_or_insert(graph);
                slot.shared |= first != graph;
                slot.history |= bit(graph);
                if slot.shared && slot.before & !bit(first) != 0 && self.hazard.is_none() {
                    self.hazard = Some(format!(
                        "a value graph {first} passes to graph {graph} is in a buffer of another graph"
                    ));
                }
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

    /// The smallest free buffer that holds `bytes`; else the largest free one
    /// that can still grow, grown to `bytes`.
    fn best_fit(&self, bytes: u64) -> Option<usize> {
        let free = || (self.slots.iter().enumerate()).filter(|(_, s)| s.is_free());
        let fits = free()
            .filter(|(_, s)| s.buffer.size() >= bytes)
            .min_by_key(|(_, s)| s.buffer.size());
        if let Some((i, _)) = fits {
            return Some(i);
        }
        let (i, slot) = free()
            .filter(|(_, s)| !s.buffer.is_made())
            .max_by_key(|(_, s)| s.buffer.size())?;
        slot.buffer.grow(bytes).then_some(i)
    }

    /// Make every buffer at its final size (what a finished plan holds, counted
    /// from now; otherwise each is made when first bound).
    pub fn make_buffers(&self) {
        self.slots.iter().for_each(|s| {
            s.buffer.make();
        });
    }

    /// A new slot for `buffer`: its index.
    fn add(&mut self, buffer: Buffer) -> usize {
        let buffer = Arc::new(buffer);
        self.by_buffer.insert(address(&buffer), self.slots.len());
        self.slots.push(Slot {
            buffer,
            bindings: 0,
            held: 0,
            graph: None,
            shared: false,
            history: 0,
            before: 0,
        });
        self.slots.len() - 1
    }
}

/// Refuse a shared arena's plan where a value passed between graphs sits in a
/// buffer another graph used before (see the module docs): a bug in how a
/// plan shares its arena, caught before anything runs.
pub fn check_shared(arena: &SharedArena) -> Result<()> {
    match &lock(arena).hazard {
        Some(what) => Err(Error::Gpu(format!("memory plan: {what}"))),
        None => Ok(()),
    }
}

/// The arena; a panic while it was held leaves nothing half-done in it (each
/// call is one allocation or one count), so a poisoned lock is used as is.
pub(crate) fn lock(arena: &SharedArena) -> std::sync::MutexGuard<'_, Arena> {
    arena.lock().unwrap_or_else(|e| e.into_inner())
}

fn bit(graph: u32) -> u64 {
    1 << graph.min(63)
}

fn address(buffer: &Arc<Buffer>) -> usize {
    Arc::as_ptr(buffer) as usize
}
