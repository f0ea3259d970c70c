//! A GPU tensor: a storage buffer, a shape (row-major, leading batch dim) and a
//! dtype. Host data in f32, f16 or bf16 is converted on upload; kernels compute
//! in f32.

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
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub buffer: Arc<Buffer>,
    pub shape: Vec<usize>,
    pub dtype: DType,
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
        }
    }

    pub fn from_f32(ctx: &Context, label: &str, shape: &[usize], data: &[f32]) -> Result<Self> {
        if data.len() != numel(shape) {
            return Err(Error::BadInput(format!(
                "{label}: {} values for shape {shape:?} ({} expected)",
                data.len(),
                numel(shape)
            )));
        }
        let tensor = Self::zeros(ctx, label, shape)?;
        ctx.queue
            .write_buffer(&tensor.buffer, 0, bytemuck::cast_slice(data));
        Ok(tensor)
    }

    /// An integer tensor (token ids, indices); kernels bind it as `array<u32>`.
    pub fn from_u32(ctx: &Context, label: &str, shape: &[usize], data: &[u32]) -> Result<Self> {
        if data.len() != numel(shape) {
            return Err(Error::BadInput(format!(
                "{label}: {} values for shape {shape:?} ({} expected)",
                data.len(),
                numel(shape)
            )));
        }
        let mut tensor = Self::zeros(ctx, label, shape)?;
        tensor.dtype = DType::U32;
        ctx.queue
            .write_buffer(&tensor.buffer, 0, bytemuck::cast_slice(data));
        Ok(tensor)
    }

    pub fn from_f16(ctx: &Context, label: &str, shape: &[usize], data: &[f16]) -> Result<Self> {
        let data: Vec<f32> = data.iter().map(|x| x.to_f32()).collect();
        Self::from_f32(ctx, label, shape, &data)
    }

    pub fn from_bf16(ctx: &Context, label: &str, shape: &[usize], data: &[bf16]) -> Result<Self> {
        let data: Vec<f32> = data.iter().map(|x| x.to_f32()).collect();
        Self::from_f32(ctx, label, shape, &data)
    }

    /// Overwrite the contents from the host (same element count).
    pub fn write(&self, ctx: &Context, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(Error::BadInput(format!(
                "write: {} values into a tensor of shape {:?}",
                data.len(),
                self.shape
            )));
        }
        ctx.queue
            .write_buffer(&self.buffer, 0, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Read the whole tensor back (one counted readback).
    pub fn to_vec(&self, ctx: &Context) -> Result<Vec<f32>> {
        let bytes = readback::read_bytes(ctx, &self.buffer, 0, self.bytes())?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
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
