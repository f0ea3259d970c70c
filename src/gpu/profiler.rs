//! Per-dispatch GPU timing for benchmarks and `easel bench`.
//!
//! With `TIMESTAMP_QUERY` each dispatch gets its own compute pass whose
//! `timestamp_writes` bracket it; all timestamps are resolved into one buffer
//! and read back once, after a single submit. Without the feature the
//! profiler falls back to wall-clock time around a submit-and-wait per
//! dispatch, which includes ~0.1 ms of submission overhead on lavapipe, and
//! says so in [`Clock`].

use std::time::Instant;

use crate::error::Result;
use crate::gpu::{dispatch::record, readback, Context, Dispatch};

/// Where the times come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// GPU timestamp queries around each dispatch: kernel time only.
    GpuTimestamps,
    /// Host wall clock around submit + wait per dispatch: includes submission overhead.
    WallClock,
}

impl Clock {
    /// A short name for tables and JSON (`gpu-timestamps`, `wall-clock`).
    pub fn name(self) -> &'static str {
        match self {
            Clock::GpuTimestamps => "gpu-timestamps",
            Clock::WallClock => "wall-clock",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Clock::GpuTimestamps => "gpu-timestamps",
            Clock::WallClock => "wall-clock (no TIMESTAMP_QUERY; includes submit overhead)",
        }
    }
}

pub struct Profiler {
    clock: Clock,
}

impl Profiler {
    pub fn new(ctx: &Context) -> Self {
        let clock = if ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            Clock::GpuTimestamps
        } else {
            Clock::WallClock
        };
        Self { clock }
    }

    /// The wall-clock fallback even where timestamps exist (to compare the two).
    pub fn wall_clock() -> Self {
        Self {
            clock: Clock::WallClock,
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Run `dispatches` in order and return each one's duration in milliseconds.
    pub fn time(&self, ctx: &Context, dispatches: &[&Dispatch]) -> Result<Vec<f64>> {
        match self.clock {
            Clock::GpuTimestamps => time_with_queries(ctx, dispatches),
            Clock::WallClock => dispatches
                .iter()
                .map(|d| {
                    let start = Instant::now();
                    crate::gpu::dispatch::run(ctx, std::slice::from_ref(*d))?;
                    Ok(start.elapsed().as_secs_f64() * 1e3)
                })
                .collect(),
        }
    }
}

/// One pass per dispatch with begin/end timestamps, one submit, one readback.
fn time_with_queries(ctx: &Context, dispatches: &[&Dispatch]) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(dispatches.len());
    // A query set holds at most 4,096 timestamps: 2 per dispatch.
    for chunk in dispatches.chunks((wgpu::QUERY_SET_MAX_QUERIES / 2) as usize) {
        let count = 2 * chunk.len() as u32;
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("easel profiler"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let bytes = 8 * count as u64;
        let resolved = ctx.create_buffer(
            "easel profiler",
            bytes,
            wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        );
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        for (i, d) in chunk.iter().enumerate() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&d.kernel.label),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &queries,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                }),
            });
            record(&mut pass, d);
        }
        encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
        ctx.queue.submit([encoder.finish()]);
        let raw = readback::read_bytes(ctx, &resolved, 0, bytes)?;
        let ticks: Vec<u64> = raw
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        // Period: nanoseconds per tick.
        let period = ctx.queue.get_timestamp_period() as f64;
        times.extend(
            ticks
                .chunks(2)
                .map(|t| t[1].wrapping_sub(t[0]) as f64 * period * 1e-6),
        );
    }
    Ok(times)
}
