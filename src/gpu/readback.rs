//! The one way data leaves the GPU: copy to a staging buffer, map, poll, read,
//! unmap, all in one helper, so a mapped range is never read early and every
//! buffer is unmapped before its next use (wgpu's `repeated_compute` warns of
//! both). Every call is counted: DESIGN.md allows one readback per image.

use crate::error::{Error, Result};
use crate::gpu::Context;

/// Copy `size` bytes at `offset` of `buffer` to the host.
pub fn read_bytes(ctx: &Context, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
    ctx.count_readback();
    copy_to_host(ctx, buffer, offset, size)
}

/// [`read_bytes`] left out of the count: for a start-up self-test of a kernel
/// (`ops::matmul::coop_ready`), which reads no image.
pub(crate) fn read_bytes_uncounted(
    ctx: &Context,
    buffer: &wgpu::Buffer,
    offset: u64,
    size: u64,
) -> Result<Vec<u8>> {
    copy_to_host(ctx, buffer, offset, size)
}

fn copy_to_host(ctx: &Context, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("easel readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
    ctx.queue.submit([encoder.finish()]);

    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |result| {
        let _ = tx.send(result);
    });
    ctx.wait()?;
    rx.recv()
        .map_err(|_| Error::Gpu("readback: map callback never ran".into()))?
        .map_err(|e| Error::Gpu(format!("readback: {e}")))?;
    let bytes = staging
        .get_mapped_range(..)
        .map_err(|e| Error::Gpu(format!("readback: {e}")))?
        .to_vec();
    staging.unmap();
    Ok(bytes)
}
