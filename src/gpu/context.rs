//! The headless GPU context: instance → adapter → device, read in one story.
//!
//! Adapter choice follows `AdapterOptions` (from `--backend`/`--adapter`) and
//! wgpu's own environment variables (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`,
//! `WGPU_POWER_PREF`). GL is only searched when asked for: without a Vulkan
//! driver wgpu would otherwise fall back silently to llvmpipe over EGL, which
//! lacks f16 and subgroups.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::gpu::coop::Coop;
use crate::gpu::memory::{self, Buffer, Limit, Memory};
use crate::gpu::pipelines::PipelineCache;
use crate::gpu::policy::Policy;

/// What the user asked for when choosing an adapter.
#[derive(Clone, Debug, Default)]
pub struct AdapterOptions {
    /// `vulkan`, `metal`, `dx12`, `gl` (comma-separated); default: the primary backends.
    pub backend: Option<String>,
    /// Case-insensitive substring of the adapter name, or its index in `easel devices`.
    pub adapter: Option<String>,
}

/// How kernels should be shaped for this adapter (DESIGN.md "Engine rules").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterClass {
    /// A real GPU: shared-memory tiles, barriers, wide workgroups.
    Gpu,
    /// A software rasteriser on CPU cores (lavapipe, llvmpipe, WARP): barriers are
    /// expensive and caches replace shared memory, so register-blocked kernels win.
    Cpu,
}

/// The features easel uses when present; everything else stays off.
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::SUBGROUP);

/// Row-wise ops whose intermediate would be larger run in row chunks (see
/// [`Context::activation_chunk_bytes`]). 128 MiB is the smallest storage binding
/// limit adapters have (lavapipe's, WebGPU's default), so a plan that binds there
/// binds everywhere, and a chunk this large is thousands of GEMM rows: chunking
/// costs launches only where the image is large (SD-1.5 above 512x512).
pub const ACTIVATION_CHUNK_BYTES: u64 = 128 << 20;

/// Embedding tables larger than this stay in host memory, their rows gathered
/// on the host for each run ([`Context::table_on_host`]): CLIP's 49,408-row
/// token table (76 MB in f16, SD-1.5's) of which a run reads 77 rows per
/// prompt. Small tables (the default model's 5,862 rows) stay on the GPU.
pub const HOST_TABLE_BYTES: u64 = 16 << 20;

/// The message printed when no adapter can be used (exit code 3).
pub const NO_ADAPTER_HELP: &str = "no usable GPU adapter found; install a Vulkan driver \
(Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`, which includes the lavapipe software \
driver), or choose one with --backend/--adapter or WGPU_BACKEND/WGPU_ADAPTER_NAME \
(`easel devices` lists what is found)";

pub struct Context {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub class: AdapterClass,
    pub pipelines: PipelineCache,
    readbacks: AtomicU64,
    memory: Arc<Memory>,
    /// Errors wgpu reports outside an error scope; checked after every wait.
    uncaptured: Arc<Mutex<Vec<String>>>,
    /// A binding limit below the adapter's, for tests of split bindings.
    binding_limit: Option<u64>,
    /// A chunk size below [`ACTIVATION_CHUNK_BYTES`], for tests of chunked ops.
    chunk_limit: Option<u64>,
    /// A table size below [`HOST_TABLE_BYTES`], for tests of host tables.
    host_table_limit: Option<u64>,
    /// Graphs reuse activation buffers by liveness (`models::arena`); off only
    /// to compare against the unplanned pass.
    plan_activations: bool,
    /// The cooperative-matrix configuration the GEMM tile can use, if any.
    pub coop: Option<Coop>,
    /// `EASEL_COOPERATIVE`: off (the device is opened without the feature),
    /// auto (on GPUs, once the self-test has passed) or always (CPU drivers
    /// too, to check the kernels end to end on lavapipe).
    pub coop_policy: Policy,
    /// `EASEL_WIDE_TILES`: off, auto (GPUs, problems that fill the grid:
    /// `ops::matmul::MatmulVariant::for_problem`) or always (every GEMM not
    /// on cooperative matrices, on any adapter: to time or check the tile).
    pub wide_policy: Policy,
    /// `EASEL_SPLIT_NORMS`: off, auto (GPUs, group norms of few long segments:
    /// `ops::norm::group_norm_chunks`) or always (every group norm of two
    /// elements or more per segment, on any adapter: to time or check it).
    pub split_norms: Policy,
    /// `EASEL_WEIGHT_TEXTURES`: off, auto (llvmpipe) or always: the subgroup
    /// GEMM kernels read layer weights through texture copies (`gpu::texture`).
    pub weight_textures: Policy,
    /// `EASEL_IMAGE_TEXTURES`: off, auto (llvmpipe before Mesa 23) or always:
    /// those kernels' convolutions gather from their image staged in a texture.
    pub image_textures: Policy,
    pub(crate) scratch: crate::gpu::texture::Scratch,
    /// Whether GEMM choices read the tables `easel tune` measured
    /// (`ops::tuning`): yes unless `EASEL_TUNING=off`; tests of the built-in
    /// rules turn it off.
    pub tuned: bool,
    /// Whether the cooperative kernels passed their start-up self-test
    /// (`ops::matmul::coop_ready`), decided on first use.
    pub(crate) coop_checked: OnceLock<bool>,
}

/// Backends searched: `--backend`'s, else `WGPU_BACKEND`'s, else the primary
/// ones (never GL unless asked). Both are parsed here: wgpu's own reading of
/// `WGPU_BACKEND` skips a name it does not know, so a typo searched no backend
/// and read as "no adapter" (exit 3) rather than bad input.
fn backends(opts: &AdapterOptions) -> Result<wgpu::Backends> {
    if let Some(names) = &opts.backend {
        return parse_backends("--backend", names);
    }
    match std::env::var("WGPU_BACKEND") {
        Ok(names) if !names.trim().is_empty() => parse_backends("WGPU_BACKEND", &names),
        _ => Ok(wgpu::Backends::PRIMARY),
    }
}

/// A comma-separated list of backend names, from `source` (a flag or a variable).
fn parse_backends(source: &str, names: &str) -> Result<wgpu::Backends> {
    let mut out = wgpu::Backends::empty();
    for name in names.split(',').map(|s| s.trim().to_ascii_lowercase()) {
        out |= match name.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "primary" => wgpu::Backends::PRIMARY,
            "all" => wgpu::Backends::all(),
            _ => {
                return Err(Error::BadInput(format!(
                    "{source}: unknown backend `{name}` (expected vulkan, metal, dx12, gl, primary or all, comma-separated)"
                )))
            }
        };
    }
    Ok(out)
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter the chosen backends expose, in wgpu's order.
pub fn enumerate(opts: &AdapterOptions) -> Result<Vec<wgpu::Adapter>> {
    let backends = backends(opts)?;
    Ok(pollster::block_on(
        instance(backends).enumerate_adapters(backends),
    ))
}

/// Rank adapters like a user would: discrete > integrated > virtual > software > other.
fn preference(info: &wgpu::AdapterInfo) -> u8 {
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// The index (into `adapters`) easel would pick for these options.
pub fn pick(adapters: &[wgpu::Adapter], opts: &AdapterOptions) -> Result<usize> {
    if adapters.is_empty() {
        return Err(Error::NoAdapter(NO_ADAPTER_HELP.into()));
    }
    // WGPU_ADAPTER_NAME panics inside wgpu when nothing matches, so match it here.
    let wanted = opts
        .adapter
        .clone()
        .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
    if let Some(wanted) = wanted {
        if let Ok(index) = wanted.parse::<usize>() {
            return if index < adapters.len() {
                Ok(index)
            } else {
                Err(Error::NoAdapter(format!(
                    "adapter index {index} out of range: {} adapter(s) found (see `easel devices`)",
                    adapters.len()
                )))
            };
        }
        let needle = wanted.to_lowercase();
        return adapters
            .iter()
            .position(|a| a.get_info().name.to_lowercase().contains(&needle))
            .ok_or_else(|| {
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                Error::NoAdapter(format!(
                    "no adapter name contains `{wanted}`; found: {}",
                    names.join(", ")
                ))
            });
    }
    let best = (0..adapters.len())
        .min_by_key(|&i| preference(&adapters[i].get_info()))
        .expect("non-empty");
    Ok(best)
}

/// The adapter's cooperative-matrix configuration for the GEMM tile, unless
/// the policy is off.
fn cooperative(adapter: &wgpu::Adapter, policy: Policy) -> Option<Coop> {
    if policy == Policy::Off {
        return None;
    }
    Coop::for_adapter(adapter, &adapter.limits()).ok()
}

impl Context {
    /// Open the adapter `opts` chooses, with every limit it offers and the optional
    /// features it has: wgpu defaults to the WebGPU baseline (256 invocations,
    /// 16 KiB workgroup memory), which would cripple the kernels.
    pub fn new(opts: &AdapterOptions) -> Result<Self> {
        let adapters = enumerate(opts)?;
        let index = pick(&adapters, opts)?;
        let adapter = adapters.into_iter().nth(index).expect("picked index");
        Self::from_adapter(adapter)
    }

    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let coop_policy = Policy::from_env("EASEL_COOPERATIVE")?;
        let wide_policy = Policy::from_env("EASEL_WIDE_TILES")?;
        let split_norms = Policy::from_env("EASEL_SPLIT_NORMS")?;
        let weight_textures = Policy::from_env("EASEL_WEIGHT_TEXTURES")?;
        let image_textures = Policy::from_env("EASEL_IMAGE_TEXTURES")?;
        let coop = cooperative(&adapter, coop_policy);
        let mut features = adapter.features() & OPTIONAL_FEATURES;
        let mut experimental = wgpu::ExperimentalFeatures::disabled();
        if coop.is_some() {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            // SAFETY: wgpu asks callers of experimental features to accept that
            // their validation is incomplete. easel enables them only with a
            // configuration its kernel fits (gpu::coop), and uses them only after
            // the self-test agreed with the tiled kernel (ops::matmul::coop_ready).
            experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("easel"),
            required_features: features,
            required_limits: adapter.limits(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::NoAdapter(format!(
                "{}: cannot open device: {e}. {NO_ADAPTER_HELP}",
                info.name
            ))
        })?;
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(first_line(&e.to_string()));
        }));
        let class = match info.device_type {
            wgpu::DeviceType::Cpu => AdapterClass::Cpu,
            _ => AdapterClass::Gpu,
        };
        Ok(Self {
            pipelines: PipelineCache::new(device.clone()),
            adapter,
            device,
            queue,
            info,
            class,
            readbacks: AtomicU64::new(0),
            memory: Arc::default(),
            uncaptured,
            binding_limit: None,
            chunk_limit: None,
            host_table_limit: None,
            plan_activations: true,
            coop,
            coop_policy,
            wide_policy,
            split_norms,
            weight_textures,
            image_textures,
            scratch: Default::default(),
            tuned: !crate::gpu::policy::tuning_off(),
            coop_checked: OnceLock::new(),
        })
    }

    pub fn features(&self) -> wgpu::Features {
        self.device.features()
    }

    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// Whether kernels can store activations as f16 (`--precision f16`): WGSL's
    /// `f16` in storage buffers, which SHADER_F16 brings.
    pub fn has_f16_activations(&self) -> bool {
        self.features().contains(wgpu::Features::SHADER_F16)
    }

    /// [`Context::has_f16_activations`], or the error that says what lacks it.
    pub fn check_f16_activations(&self) -> Result<()> {
        if self.has_f16_activations() {
            return Ok(());
        }
        Err(Error::DeviceLimit(format!(
            "f16 activations need SHADER_F16, which {} lacks; use --precision f32",
            self.info.name
        )))
    }

    /// Block until all submitted work is done, then surface any wgpu error.
    pub fn wait(&self) -> Result<()> {
        self.poll(wgpu::PollType::wait_indefinitely())
    }

    /// Block until submission `index` is done (later ones may still run),
    /// then surface any wgpu error.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
    }

    fn poll(&self, how: wgpu::PollType) -> Result<()> {
        self.device
            .poll(how)
            .map_err(|e| Error::Gpu(e.to_string()))?;
        self.check_errors()
    }

    /// Turn errors wgpu reported asynchronously into an `Err`.
    pub fn check_errors(&self) -> Result<()> {
        let mut errors = self.uncaptured.lock().unwrap();
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.join("; ");
        errors.clear();
        Err(Error::Gpu(message))
    }

    /// GPU→CPU copies made so far (DESIGN.md: one per image).
    pub fn readback_count(&self) -> u64 {
        self.readbacks.load(Ordering::Relaxed)
    }

    pub(crate) fn count_readback(&self) {
        self.readbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Buffers created through easel so far (tests assert none are made per step).
    pub fn buffer_count(&self) -> u64 {
        self.memory.made()
    }

    /// Bytes of the buffers created through easel so far, freed or not.
    pub fn buffer_bytes(&self) -> u64 {
        self.memory.made_bytes()
    }

    /// Bytes of the buffers easel holds now (see [`memory`] for what counts).
    pub fn live_bytes(&self) -> u64 {
        self.memory.live()
    }

    /// The most bytes held at once since the last [`Context::reset_peak`].
    pub fn peak_bytes(&self) -> u64 {
        self.memory.peak()
    }

    /// Start measuring a new peak from the bytes held now (a request's start).
    pub fn reset_peak(&self) {
        self.memory.reset_peak()
    }

    /// Create a buffer, counted until dropped. `size` is rounded up to 4 bytes.
    /// Callers check `size` first ([`Context::check_buffer_size`]): wgpu
    /// reports an oversized buffer only later, as a validation error.
    pub fn create_buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> Buffer {
        let size = size.max(4).next_multiple_of(4);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        Buffer::new(buffer, self.memory.clone())
    }

    /// A buffer of at least `size` bytes made when first needed, which may
    /// grow until then ([`Buffer::deferred`]): an activation arena's slot.
    pub fn deferred_buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> Buffer {
        let size = size.max(4).next_multiple_of(4);
        Buffer::deferred(&self.device, label, size, usage, self.memory.clone())
    }

    /// The most bytes one storage binding may cover: the adapter's
    /// `max_storage_buffer_binding_size`, or less under
    /// [`Context::limit_bindings_for_tests`]. Larger weights are bound in row blocks.
    pub fn max_binding_size(&self) -> u64 {
        let adapter = self.limits().max_storage_buffer_binding_size;
        self.binding_limit.map_or(adapter, |l| l.min(adapter))
    }

    /// Pretend the adapter binds at most `bytes` per storage binding, so that
    /// tests can split tiny weights the way large ones are split on real adapters.
    #[doc(hidden)]
    pub fn limit_bindings_for_tests(&mut self, bytes: u64) {
        self.binding_limit = Some(bytes);
    }

    /// The most bytes one intermediate of a row-wise op may take before the op
    /// runs in row chunks (the transformer feed-forward's `[rows, 4·dim]`):
    /// [`ACTIVATION_CHUNK_BYTES`], or the binding limit where that is lower.
    pub fn activation_chunk_bytes(&self) -> u64 {
        let chunk = self.chunk_limit.unwrap_or(ACTIVATION_CHUNK_BYTES);
        chunk.min(self.max_binding_size())
    }

    /// Chunk row-wise ops at `bytes`, so that tests can chunk tiny models the way
    /// large images are chunked.
    #[doc(hidden)]
    pub fn chunk_activations_for_tests(&mut self, bytes: u64) {
        self.chunk_limit = Some(bytes);
    }

    /// Whether an embedding table of `bytes` stays in host memory
    /// ([`HOST_TABLE_BYTES`]).
    pub fn table_on_host(&self, bytes: u64) -> bool {
        bytes > self.host_table_limit.unwrap_or(HOST_TABLE_BYTES)
    }

    /// Keep tables above `bytes` on the host, so that tests can do it with tiny
    /// models.
    #[doc(hidden)]
    pub fn host_tables_for_tests(&mut self, bytes: u64) {
        self.host_table_limit = Some(bytes);
    }

    /// Whether graphs reuse activation buffers by liveness (`models::arena`).
    pub fn plan_activations(&self) -> bool {
        self.plan_activations
    }

    /// Give every activation its own buffer, as before activations were
    /// planned, so that tests can compare a planned pass's bytes and outputs.
    #[doc(hidden)]
    pub fn unplanned_activations_for_tests(&mut self) {
        self.plan_activations = false;
    }

    /// Refuse a buffer of `bytes` for `what` that wgpu would reject: one kernel
    /// binding covers it, so it must pass both the binding and the buffer limit.
    /// The message names `what`, the bytes and the limit; the layer that
    /// planned `what` adds the flag that would help ([`Error::advise`]).
    pub fn check_binding_size(&self, what: &str, bytes: u64) -> Result<()> {
        let limit = self.max_binding_size();
        if bytes > limit {
            let name = &self.info.name;
            return Err(memory::too_large(what, bytes, name, Limit::Binding, limit));
        }
        self.check_buffer_size(what, bytes)
    }

    /// Refuse a buffer above the adapter's `max_buffer_size` (one that is
    /// bound in parts may pass the binding limit and still fail this one).
    pub fn check_buffer_size(&self, what: &str, bytes: u64) -> Result<()> {
        let limit = self.limits().max_buffer_size;
        if bytes > limit {
            let name = &self.info.name;
            return Err(memory::too_large(what, bytes, name, Limit::Buffer, limit));
        }
        Ok(())
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
