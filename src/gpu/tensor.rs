//! A GPU tensor: a storage buffer, a shape (row-major, leading batch dim) and a
//! dtype. Activations are f32; weights may stay f16 ([`DType::F16`], packed two
//! to a u32 so that every adapter can read them without `SHADER_F16`); kernels
//! compute in f32.

use std::sync::Arc;

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::gpu::{readback, Buffer, Context};

/// Usage of every tensor: kernels bind it, copies fill and read it.
pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    /// Raw u32 bits: token ids and GPU-written indices (argmax winners).
    U32,
    /// IEEE half floats packed in pairs: element i is in u32 i / 2, the low
    /// half for even i, the high half for odd i, which is what WGSL's
    /// `unpack2x16float(w).x` / `.y` return. Weights only (wgsl/weight_f16.wgsl).
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }

    /// Bytes of `n` elements as stored: whole u32 words (a lone last half is padded).
    pub fn bytes(self, n: usize) -> u64 {
        ((n * self.size()) as u64).next_multiple_of(4)
    }
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub buffer: Arc<Buffer>,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// `(offset, size)` in bytes of a [`Tensor::rows`] view, which kernels bind
    /// as that range alone; `None`: kernels bind the whole buffer.
    pub window: Option<(u64, u64)>,
}

impl Tensor {
    /// An uninitialised (zeroed by wgpu) f32 tensor.
    pub fn zeros(ctx: &Context, label: &str, shape: &[usize]) -> Result<Self> {
        let bytes = (numel(shape) * DType::F32.size()) as u64;
        ctx.check_binding_size(label, bytes)?;
        Ok(Self::wrap(ctx.create_buffer(label, bytes, STORAGE), shape))
    }

    /// Wrap an existing buffer large enough for `shape`.
    pub fn wrap(buffer: Buffer, shape: &[usize]) -> Self {
        debug_assert!(buffer.size() as usize >= numel(shape) * 4);
        Self {
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
            dtype: DType::F32,
            window: None,
        }
    }

    pub fn from_f32(ctx: &Context, label: &str, shape: &[usize], data: &[f32]) -> Result<Self> {
        check_len(label, shape, data.len())?;
        let tensor = Self::zeros(ctx, label, shape)?;
        ctx.queue
            .write_buffer(&tensor.buffer, 0, bytemuck::cast_slice(data));
        Ok(tensor)
    }

    /// An integer tensor (token ids, indices); kernels bind it as `array<u32>`.
    pub fn from_u32(ctx: &Context, label: &str, shape: &[usize], data: &[u32]) -> Result<Self> {
        check_len(label, shape, data.len())?;
        let mut tensor = Self::zeros(ctx, label, shape)?;
        tensor.dtype = DType::U32;
        ctx.queue
            .write_buffer(&tensor.buffer, 0, bytemuck::cast_slice(data));
        Ok(tensor)
    }

    /// An f16 tensor ([`DType::F16`]), uploaded as is. Unlike the f32 and
    /// u32 constructors this one may exceed the adapter's binding limit (up to
    /// its buffer limit): weights that large are bound in row blocks
    /// ([`Tensor::row_blocks`]) by the ops that take them.
    pub fn from_f16(ctx: &Context, label: &str, shape: &[usize], data: &[f16]) -> Result<Self> {
        check_len(label, shape, data.len())?;
        let mut words: Vec<u16> = data.iter().map(|x| x.to_bits()).collect();
        if words.len() % 2 == 1 {
            words.push(0);
        }
        let tensor = Self::weight_buffer(ctx, label, shape, DType::F16)?;
        ctx.queue
            .write_buffer(&tensor.buffer, 0, bytemuck::cast_slice(&words));
        Ok(tensor)
    }

    /// An f32 weight: as [`Tensor::from_f32`], but bounded by the buffer limit
    /// rather than the binding limit (see [`Tensor::from_f16`]).
    pub fn weight_f32(ctx: &Context, label: &str, shape: &[usize], data: &[f32]) -> Result<Self> {
        check_len(label, shape, data.len())?;
        let tensor = Self::weight_buffer(ctx, label, shape, DType::F32)?;
        ctx.queue
            .write_buffer(&tensor.buffer, 0, bytemuck::cast_slice(data));
        Ok(tensor)
    }

    /// bf16 has f32's range, so values beyond f16's are refused (naming the
    /// tensor) rather than turned into infinities.
    pub fn from_bf16(ctx: &Context, label: &str, shape: &[usize], data: &[bf16]) -> Result<Self> {
        let halves = to_f16(label, data.iter().map(|x| x.to_f32()))?;
        Self::from_f16(ctx, label, shape, &halves)
    }

    /// `parts` (one dtype, equal shapes past dim 0) stacked along dim 0 into a
    /// new weight buffer by buffer copies, bit for bit: a self-attention's
    /// to_q, to_k and to_v as one GEMM's weight. Each part must fill whole u32
    /// words (an f16 part of odd size would leave a gap).
    pub fn stack_rows(ctx: &Context, label: &str, parts: &[&Tensor]) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| Error::BadInput(format!("{label}: nothing to stack")))?;
        let same = |t: &&Tensor| t.dtype == first.dtype && t.shape[1..] == first.shape[1..];
        if !parts.iter().all(same) || parts.iter().any(|t| t.numel() * t.dtype.size() % 4 != 0) {
            let shapes: Vec<_> = parts.iter().map(|t| (&t.shape, t.dtype)).collect();
            return Err(Error::BadInput(format!(
                "{label}: cannot stack the rows of {shapes:?}"
            )));
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|t| t.shape[0]).sum();
        let stacked = Self::weight_buffer(ctx, label, &shape, first.dtype)?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        let mut at = 0;
        for part in parts {
            let offset = part.window.map_or(0, |(offset, _)| offset);
            encoder.copy_buffer_to_buffer(&part.buffer, offset, &stacked.buffer, at, part.bytes());
            at += part.bytes();
        }
        ctx.queue.submit([encoder.finish()]);
        Ok(stacked)
    }

    fn weight_buffer(ctx: &Context, label: &str, shape: &[usize], dtype: DType) -> Result<Self> {
        let bytes = dtype.bytes(numel(shape));
        let limit = ctx.limits().max_buffer_size;
        if bytes > limit {
            return Err(Error::DeviceLimit(format!(
                "{label} needs a {bytes}-byte buffer but {} allows at most {limit} bytes per buffer; \
                 --weights f16 halves f32 weights",
                ctx.info.name
            )));
        }
        let mut tensor = Self::wrap(ctx.create_buffer(label, bytes, STORAGE), shape);
        tensor.dtype = dtype;
        Ok(tensor)
    }

    /// Overwrite the contents of an f32 tensor from the host (same element count).
    pub fn write(&self, ctx: &Context, data: &[f32]) -> Result<()> {
        if self.dtype != DType::F32 {
            return Err(Error::BadInput(format!(
                "write: f32 values into a {:?} tensor of shape {:?}",
                self.dtype, self.shape
            )));
        }
        if data.len() != self.numel() {
            return Err(Error::BadInput(format!(
                "write: {} values into a tensor of shape {:?}",
                data.len(),
                self.shape
            )));
        }
        ctx.queue
            .write_buffer(&self.buffer, 0, bytemuck::cast_slice(data));
        if let Some(copy) = self.buffer.texture() {
            crate::gpu::texture::copy(ctx, self, &copy.texture);
        }
        Ok(())
    }

    /// Read the whole tensor back (one counted readback); f16 is widened to f32.
    pub fn to_vec(&self, ctx: &Context) -> Result<Vec<f32>> {
        let offset = self.window.map_or(0, |(offset, _)| offset);
        Ok(self.decode(readback::read_bytes(
            ctx,
            &self.buffer,
            offset,
            self.bytes(),
        )?))
    }

    /// [`Tensor::to_vec`] for a start-up self-test: not counted as a readback.
    pub(crate) fn to_vec_uncounted(&self, ctx: &Context) -> Result<Vec<f32>> {
        let offset = self.window.map_or(0, |(offset, _)| offset);
        let bytes = readback::read_bytes_uncounted(ctx, &self.buffer, offset, self.bytes())?;
        Ok(self.decode(bytes))
    }

    fn decode(&self, bytes: Vec<u8>) -> Vec<f32> {
        match self.dtype {
            DType::F16 => bytes
                .chunks_exact(2)
                .take(self.numel())
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::F32 | DType::U32 => bytemuck::cast_slice(&bytes).to_vec(),
        }
    }

    /// How kernels bind this tensor: the whole buffer, or a [`Tensor::rows`]
    /// view's range alone.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        Self::binding_of(&self.buffer, self.window)
    }

    /// [`Tensor::binding`] of a buffer and window (what a dispatch keeps).
    pub fn binding_of(buffer: &Buffer, window: Option<(u64, u64)>) -> wgpu::BindingResource<'_> {
        match window {
            None => buffer.as_entire_binding(),
            Some((offset, size)) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: buffer.make(),
                offset,
                size: std::num::NonZeroU64::new(size),
            }),
        }
    }

    /// Bytes a kernel binding this tensor sees (see [`Tensor::binding`]).
    pub fn binding_size(&self) -> u64 {
        self.window.map_or(self.buffer.size(), |(_, size)| size)
    }

    /// Rows `start..start + count` along dim 0, bound alone. `start`'s byte
    /// offset must suit the adapter's offset alignment ([`Tensor::row_blocks`]
    /// picks such rows).
    pub fn rows(&self, start: usize, count: usize) -> Result<Self> {
        let rows = self.shape.first().copied().unwrap_or(0);
        let row = self.numel() / rows.max(1);
        if start + count > rows || count == 0 {
            return Err(Error::BadInput(format!(
                "rows {start}..{} of a tensor of shape {:?}",
                start + count,
                self.shape
            )));
        }
        let base = self.window.map_or(0, |(offset, _)| offset);
        let offset = base + (start * row * self.dtype.size()) as u64;
        let mut shape = self.shape.clone();
        shape[0] = count;
        Ok(Self {
            buffer: self.buffer.clone(),
            window: Some((offset, self.dtype.bytes(count * row))),
            shape,
            dtype: self.dtype,
        })
    }

    /// The tensor as row blocks along dim 0 (`(first row, view)`), each small
    /// enough for one binding on `ctx`: one block, the tensor itself, when it
    /// fits. Blocks start at offsets the adapter can bind. A single row above
    /// the limit cannot be split and is an error naming `what`.
    pub fn row_blocks(&self, ctx: &Context, what: &str) -> Result<Vec<(usize, Self)>> {
        self.row_blocks_in(ctx, what, 1)
    }

    /// [`Self::row_blocks`] with every block a multiple of `multiple` rows
    /// (GEGLU's interleaved pairs of rows stay in one block).
    pub fn row_blocks_in(
        &self,
        ctx: &Context,
        what: &str,
        multiple: usize,
    ) -> Result<Vec<(usize, Self)>> {
        let limit = ctx.max_binding_size();
        if self.binding_size() <= limit {
            return Ok(vec![(0, self.clone())]);
        }
        let rows = self.shape.first().copied().unwrap_or(1).max(1);
        let row_bytes = (self.numel() / rows * self.dtype.size()) as u64;
        // Rows per block: a multiple of the rows between aligned offsets.
        let step = lcm(row_step(ctx, row_bytes), multiple.max(1) as u64);
        let per_block = (limit / row_bytes.max(1)) / step * step;
        if per_block == 0 {
            return Err(Error::DeviceLimit(format!(
                "{what}: {} bytes of shape {:?} cannot be split into bindings of at most {limit} bytes \
                 on {} (one block of rows is {} bytes)",
                self.bytes(),
                self.shape,
                ctx.info.name,
                row_bytes * step
            )));
        }
        (0..rows)
            .step_by(per_block as usize)
            .map(|start| {
                Ok((
                    start,
                    self.rows(start, (per_block as usize).min(rows - start))?,
                ))
            })
            .collect()
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Bytes the elements take (whole u32 words; see [`DType::bytes`]).
    pub fn bytes(&self) -> u64 {
        self.dtype.bytes(self.numel())
    }

    /// The same buffer seen with another shape of equal element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if numel(shape) != self.numel() {
            return Err(Error::BadInput(format!(
                "reshape {:?} -> {shape:?}: element counts differ",
                self.shape
            )));
        }
        Ok(Self {
            buffer: self.buffer.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
            window: self.window,
        })
    }

    /// A view of the first `n` elements, shape `[n]` (the binding still covers
    /// the whole buffer; kernels read only what the shape says).
    pub fn head(&self, n: usize) -> Result<Self> {
        self.prefix(&[n])
    }

    /// A view of the first elements with `shape` (e.g. the first K candidates of a
    /// `[K_max, ...]` tensor); as with [`Tensor::head`], kernels read only what
    /// the shape says.
    pub fn prefix(&self, shape: &[usize]) -> Result<Self> {
        if numel(shape) > self.numel() {
            return Err(Error::BadInput(format!(
                "view {shape:?} of a tensor of shape {:?}",
                self.shape
            )));
        }
        Ok(Self {
            buffer: self.buffer.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
            window: self.window,
        })
    }

    /// Size of dimension `i` in PyTorch's convention (`x.size(i)`): from the
    /// front for `i >= 0`, from the back for `i < 0` (`dim(-1)` is the last).
    /// Panics when out of range, like PyTorch: a wrong index is a bug, not input.
    pub fn dim(&self, i: isize) -> usize {
        let n = self.shape.len() as isize;
        let at = if i < 0 { n + i } else { i };
        assert!(
            (0..n).contains(&at),
            "dim({i}) of a tensor of shape {:?}",
            self.shape
        );
        self.shape[at as usize]
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The fewest rows of `row_bytes` each between offsets `ctx` can bind a view at
/// ([`Tensor::rows`]): row blocks and chunks are multiples of it.
pub fn row_step(ctx: &Context, row_bytes: u64) -> u64 {
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment).max(4);
    align / gcd(row_bytes.max(1), align)
}

fn lcm(a: u64, b: u64) -> u64 {
    a / gcd(a, b) * b
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn check_len(label: &str, shape: &[usize], len: usize) -> Result<()> {
    if len != numel(shape) {
        return Err(Error::BadInput(format!(
            "{label}: {len} values for shape {shape:?} ({} expected)",
            numel(shape)
        )));
    }
    Ok(())
}

/// Round to f16, refusing a value outside its range (naming `label`) rather
/// than storing an infinity that would spread to every image.
pub fn to_f16(label: &str, values: impl Iterator<Item = f32>) -> Result<Vec<f16>> {
    values
        .enumerate()
        .map(|(i, v)| {
            let h = f16::from_f32(v);
            if h.is_finite() || !v.is_finite() {
                Ok(h)
            } else {
                Err(Error::BadInput(format!(
                    "{label}: value {v} at index {i} is outside f16's range (±65504)"
                )))
            }
        })
        .collect()
}
