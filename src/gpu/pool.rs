//! Storage buffers planned up front and reused.
//!
//! A model plans every activation from its config before the first step
//! (llama2.c style); the pool hands out buffers by size class and takes them
//! back, so a second plan of the same shape creates nothing new.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::gpu::Context;

pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
pub struct BufferPool {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
}

impl BufferPool {
    /// A storage buffer of at least `size` bytes, reused if one is free.
    pub fn take(&self, ctx: &Context, size: u64) -> wgpu::Buffer {
        let class = size_class(size);
        if let Some(buffer) = self.free.lock().unwrap().get_mut(&class).and_then(Vec::pop) {
            return buffer;
        }
        ctx.create_buffer("easel pool", class, STORAGE)
    }

    /// Return a buffer for reuse by a later plan.
    pub fn give(&self, buffer: wgpu::Buffer) {
        let class = buffer.size();
        self.free
            .lock()
            .unwrap()
            .entry(class)
            .or_default()
            .push(buffer);
    }
}

/// Round up to a quarter-power-of-two step so near sizes share buffers while
/// wasting at most 25 %.
fn size_class(size: u64) -> u64 {
    let size = size.max(256);
    let pow = 63 - size.leading_zeros() as u64; // floor(log2)
    let step = (1u64 << pow) / 4;
    size.div_ceil(step) * step
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_and_waste_little() {
        for size in [1, 255, 256, 257, 1000, 4096, 5000, 1 << 20, (1 << 20) + 1] {
            let class = size_class(size);
            assert!(class >= size, "{size} -> {class}");
            assert!(
                class <= (size.max(256) * 5).div_ceil(4),
                "{size} -> {class}"
            );
        }
    }
}
