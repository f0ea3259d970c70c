//! What one invocation's load costs on the adapter easel picks, from a storage
//! buffer and from a texture, and what that does to a GEMM: `cargo run
//! --release --example bench_loads [SIZE]`.
//!
//! Each kernel sums K loads of a vec4 per invocation inside a loop, every lane
//! at its own address, as a GEMM's inner loop reads its operands (the last three
//! one value per load, as a convolution's image gather, from a buffer, from
//! workgroup memory and from a texture); `none` runs the same
//! loop without a load. Prints milliseconds per dispatch and nanoseconds per
//! invocation's load (the adapter's whole time divided by
//! the loads: on a CPU driver, what one lane's load costs all cores together).
//! Then, where subgroups are 8 lanes (lavapipe), one GEMM of SIZE³ (512) with
//! easel's `CpuSubgroup` tiling (8×8 outputs per lane, the lanes' rows of `a`
//! shared by subgroupBroadcast) reading `b` once from a storage buffer and
//! once from an rgba32float texture, checked against an f64 reference.
//!
//! Why: Mesa 22's lavapipe runs each storage-buffer load in a loop as a loop
//! over the SIMD lanes, with a bounds check and a branch per lane and
//! component, while a texel fetch is straight-line code; later Mesa unrolls
//! the lanes (docs/benchmarks.md, "What a load costs").

use std::time::Instant;

use easel::gpu::{AdapterOptions, Context};
use wgpu::util::DeviceExt;

/// Columns (vec4s per row, one per invocation) and rows (the loop's trips).
const COLS: u32 = 256;
const ROWS: u32 = 1024;
/// Workgroups along y: each reads the same COLS x ROWS operand.
const GROUPS_Y: u32 = 8;
const REPEATS: usize = 5;

const SHADER: &str = r#"
struct Params { cols: u32, rows: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> f32s: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> f16s: array<vec2<u32>>;
@group(0) @binding(4) var texture: texture_2d<f32>;

// The trip count read in a form no driver inlines (wgsl/bound.wgsl).
fn rows(id: u32) -> u32 {
    return min(p.rows, p.rows | id);
}

fn done(gid: vec3<u32>, acc: vec4<f32>) {
    out[gid.y * p.cols + gid.x] = acc;
}

@compute @workgroup_size(64)
fn none(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>();
    for (var k = 0u; k < rows(gid.x); k++) { acc += vec4(f32(k)); }
    done(gid, acc);
}

@compute @workgroup_size(64)
fn buffer_f32(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>();
    for (var k = 0u; k < rows(gid.x); k++) { acc += f32s[k * p.cols + gid.x]; }
    done(gid, acc);
}

@compute @workgroup_size(64)
fn buffer_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>();
    for (var k = 0u; k < rows(gid.x); k++) {
        let w = f16s[k * p.cols + gid.x];
        acc += vec4(unpack2x16float(w.x), unpack2x16float(w.y));
    }
    done(gid, acc);
}

@compute @workgroup_size(64)
fn texture_rgba(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>();
    for (var k = 0u; k < rows(gid.x); k++) { acc += textureLoad(texture, vec2(gid.x, k), 0); }
    done(gid, acc);
}

// One value per load, as a convolution's image gather reads (wgsl/conv2d.wgsl).
@compute @workgroup_size(64)
fn buffer_scalar(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>();
    for (var k = 0u; k < rows(gid.x); k++) { acc.x += f32s[k * p.cols + gid.x][k & 3u]; }
    done(gid, acc);
}

// One value per load from workgroup memory, as a kernel reads a tile its
// workgroup staged (filled once, before the loop).
var<workgroup> tile: array<f32, 4096>;

@compute @workgroup_size(64)
fn workgroup_scalar(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    for (var i = lid; i < 4096u; i += 64u) { tile[i] = f32(i % 7u); }
    workgroupBarrier();
    var acc = vec4<f32>();
    for (var k = 0u; k < rows(gid.x); k++) { acc.x += tile[(k * 64u + lid * 5u) & 4095u]; }
    done(gid, acc);
}

@compute @workgroup_size(64)
fn texture_scalar(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>();
    for (var k = 0u; k < rows(gid.x); k++) { acc.x += textureLoad(texture, vec2(gid.x, k), 0).x; }
    done(gid, acc);
}
"#;

/// The loads' source: what each kernel binds at 2..4.
struct Operands {
    f32s: wgpu::Buffer,
    f16s: wgpu::Buffer,
    rgba32: wgpu::TextureView,
    rgba16: wgpu::TextureView,
}

fn texture(
    ctx: &Context,
    format: wgpu::TextureFormat,
    bytes: &[u8],
    width: u32,
    height: u32,
) -> wgpu::TextureView {
    let label = format!("bench_loads {format:?}");
    let desc = wgpu::TextureDescriptor {
        label: Some(&label),
        size: wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING,
        view_formats: &[],
    };
    let order = wgpu::util::TextureDataOrder::LayerMajor;
    (ctx.device
        .create_texture_with_data(&ctx.queue, &desc, order, bytes))
    .create_view(&Default::default())
}

fn buffer(ctx: &Context, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("bench_loads"),
            contents: bytes,
            usage,
        })
}

fn operands(ctx: &Context) -> Operands {
    let values: Vec<f32> = (0..COLS * ROWS * 4).map(|i| (i % 7) as f32).collect();
    let halves: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
    let (f32s, f16s) = (bytemuck::cast_slice(&values), bytemuck::cast_slice(&halves));
    Operands {
        f32s: buffer(ctx, f32s, wgpu::BufferUsages::STORAGE),
        f16s: buffer(ctx, f16s, wgpu::BufferUsages::STORAGE),
        rgba32: texture(ctx, wgpu::TextureFormat::Rgba32Float, f32s, COLS, ROWS),
        rgba16: texture(ctx, wgpu::TextureFormat::Rgba16Float, f16s, COLS, ROWS),
    }
}

/// Milliseconds per dispatch of `entry` with `bind` bound (best of REPEATS,
/// after a warm-up).
fn time(
    ctx: &Context,
    module: &wgpu::ShaderModule,
    entry: &str,
    bind: &[wgpu::BindGroupEntry],
    constants: &[(&str, f64)],
    groups: [u32; 3],
) -> f64 {
    let pipeline = ctx
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                ..Default::default()
            },
            cache: None,
        });
    let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(entry),
        layout: &pipeline.get_bind_group_layout(0),
        entries: bind,
    });
    let run = || {
        let start = Instant::now();
        easel::gpu::dispatch::submit(ctx, |pass| {
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        })
        .expect("dispatch");
        start.elapsed().as_secs_f64() * 1e3
    };
    run();
    (0..REPEATS).map(|_| run()).fold(f64::INFINITY, f64::min)
}

fn main() -> easel::Result<()> {
    let ctx = Context::new(&AdapterOptions::default())?;
    println!(
        "{} ({:?}, {})",
        ctx.info.name, ctx.info.backend, ctx.info.driver_info
    );
    let module = ctx
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("bench_loads"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
    let params = buffer(
        &ctx,
        bytemuck::cast_slice(&[COLS, ROWS, 0, 0]),
        wgpu::BufferUsages::UNIFORM,
    );
    let out = buffer(
        &ctx,
        &vec![0; (COLS * GROUPS_Y * 16) as usize],
        wgpu::BufferUsages::STORAGE,
    );
    let ops = operands(&ctx);
    // Entry point, what it loads, and the binding it loads from.
    let rows = [
        ("none", "nothing (the loop alone)", None),
        (
            "buffer_f32",
            "storage buffer, vec4<f32>",
            Some((2, ops.f32s.as_entire_binding())),
        ),
        (
            "buffer_f16",
            "storage buffer, f16 pairs in vec2<u32>",
            Some((3, ops.f16s.as_entire_binding())),
        ),
        (
            "texture_rgba",
            "texture rgba32float",
            Some((4, wgpu::BindingResource::TextureView(&ops.rgba32))),
        ),
        (
            "texture_rgba",
            "texture rgba16float",
            Some((4, wgpu::BindingResource::TextureView(&ops.rgba16))),
        ),
        (
            "buffer_scalar",
            "storage buffer, one f32 (a gather)",
            Some((2, ops.f32s.as_entire_binding())),
        ),
        ("workgroup_scalar", "workgroup memory, one f32", None),
        (
            "texture_scalar",
            "texture rgba32float, one component",
            Some((4, wgpu::BindingResource::TextureView(&ops.rgba32))),
        ),
    ];
    let loads = f64::from(COLS * GROUPS_Y * ROWS);
    println!("{:<42} {:>9} {:>16}", "load", "ms", "ns per load");
    for (entry, what, source) in rows {
        let mut bind = vec![
            wgpu::BindGroupEntry {
                binding: 0,
                resource: params.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: out.as_entire_binding(),
            },
        ];
        bind.extend(source.map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource }));
        let ms = time(&ctx, &module, entry, &bind, &[], [COLS / 64, GROUPS_Y, 1]);
        println!("{what:<42} {ms:>9.2} {:>16.2}", ms * 1e6 / loads);
    }
    let size = match std::env::args().nth(1).map(|s| s.parse::<u32>()) {
        None => 512,
        Some(Ok(size)) if size >= 64 && size % 64 == 0 => size,
        Some(_) => {
            return Err(easel::Error::BadInput(
                "SIZE must be a positive multiple of 64".into(),
            ))
        }
    };
    if ctx.features().contains(wgpu::Features::SUBGROUP)
        && (ctx.info.subgroup_min_size, ctx.info.subgroup_max_size) == (8, 8)
    {
        gemm(&ctx, size);
    } else {
        println!("\nno GEMM: its tiling needs 8-lane subgroups");
    }
    Ok(())
}

/// c = a·b, all f32 row-major, `a` [M, K] and `b` [K, N] (M, N multiples of
/// 64, K of 4), with `matmul_cpu_subgroup`'s tiling: a subgroup of 8 lanes
/// owns 8 rows, each lane 8 columns; lane l loads row i + l of `a` and the
/// broadcasts hand it round; every lane loads its own 8 columns of `b`.
const GEMM: &str = r#"
struct Params { m: u32, n: u32, k: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> c4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(4) var b_texture: texture_2d<f32>; // texel (j / 4, k) = b[k, j..j+3]

// rows_lo, rows_hi: wgsl/subgroup.wgsl, compiled before this.

// Whether b is read from the texture (else from the buffer).
override TEXTURE: bool;

// b[k..k+3, 4 q..4 q+3] as m[column] over k, from the buffer or the texture.
fn b_buffer(k: u32, q: u32) -> mat4x4<f32> {
    let s = p.n / 4u;
    let base = k * s + q;
    return transpose(mat4x4(b4[base], b4[base + s], b4[base + 2u * s], b4[base + 3u * s]));
}

fn b_texel(k: u32, q: u32) -> mat4x4<f32> {
    return transpose(mat4x4(textureLoad(b_texture, vec2(q, k), 0), textureLoad(b_texture, vec2(q, k + 1u), 0),
                            textureLoad(b_texture, vec2(q, k + 2u), 0), textureLoad(b_texture, vec2(q, k + 3u), 0)));
}

struct Acc { q00: mat4x4<f32>, q01: mat4x4<f32>, q10: mat4x4<f32>, q11: mat4x4<f32> }

fn accumulate(acc: ptr<function, Acc>, mine: vec4<f32>, b0: mat4x4<f32>, b1: mat4x4<f32>) {
    let a0 = transpose(rows_lo(mine));
    let a1 = transpose(rows_hi(mine));
    (*acc).q00 += a0 * b0;
    (*acc).q01 += a0 * b1;
    (*acc).q10 += a1 * b0;
    (*acc).q11 += a1 * b1;
}

fn store(i: u32, j: u32, acc: Acc) {
    let s = p.n / 4u;
    for (var r = 0u; r < 4u; r++) {
        let lo = (i + r) * s + j / 4u;
        let hi = lo + 4u * s;
        c4[lo] = vec4(acc.q00[0][r], acc.q00[1][r], acc.q00[2][r], acc.q00[3][r]);
        c4[lo + 1u] = vec4(acc.q01[0][r], acc.q01[1][r], acc.q01[2][r], acc.q01[3][r]);
        c4[hi] = vec4(acc.q10[0][r], acc.q10[1][r], acc.q10[2][r], acc.q10[3][r]);
        c4[hi + 1u] = vec4(acc.q11[0][r], acc.q11[1][r], acc.q11[2][r], acc.q11[3][r]);
    }
}

fn b_block(k: u32, q: u32) -> mat4x4<f32> {
    if (TEXTURE) {
        return b_texel(k, q);
    }
    return b_buffer(k, q);
}

@compute @workgroup_size(8, 8)
fn gemm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = gid.y * 8u;
    let q = gid.x * 2u;
    var acc = Acc();
    for (var k = 0u; k < min(p.k, p.k | lid.x); k += 4u) {
        accumulate(&acc, a4[((i + lid.x) * p.k + k) / 4u], b_block(k, q), b_block(k, q + 1u));
    }
    store(i, gid.x * 8u, acc);
}
"#;

/// Times the GEMM both ways at `size`³ and checks a few outputs of each.
fn gemm(ctx: &Context, size: u32) {
    let (m, n, k) = (size as usize, size as usize, size as usize);
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
        .collect();
    let module = ctx
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("bench_loads gemm"),
            source: wgpu::ShaderSource::Wgsl(
                [include_str!("../wgsl/subgroup.wgsl"), GEMM]
                    .concat()
                    .into(),
            ),
        });
    let params = buffer(
        ctx,
        bytemuck::cast_slice(&[size, size, size, 0]),
        wgpu::BufferUsages::UNIFORM,
    );
    let c = buffer(
        ctx,
        &vec![0; m * n * 4],
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    );
    let a_buffer = buffer(ctx, bytemuck::cast_slice(&a), wgpu::BufferUsages::STORAGE);
    let b_buffer = buffer(ctx, bytemuck::cast_slice(&b), wgpu::BufferUsages::STORAGE);
    let b_texture = texture(
        ctx,
        wgpu::TextureFormat::Rgba32Float,
        bytemuck::cast_slice(&b),
        size / 4,
        size,
    );
    let reference = |i: usize, j: usize| {
        (0..k)
            .map(|kk| f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]))
            .sum::<f64>()
    };
    let samples = [(0, 0), (5, 77 % n), (m - 1, n - 3), (m / 2, n / 3)];
    println!(
        "\n{:<28} {:>9} {:>9} {:>12}",
        format!("gemm {size}^3, CpuSubgroup tiling"),
        "ms",
        "GFLOP/s",
        "max error"
    );
    let bind = [
        (0, params.as_entire_binding()),
        (1, c.as_entire_binding()),
        (2, a_buffer.as_entire_binding()),
        (3, b_buffer.as_entire_binding()),
        (4, wgpu::BindingResource::TextureView(&b_texture)),
    ]
    .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource });
    for (texture, what) in [
        (false, "b from a storage buffer"),
        (true, "b from a texture"),
    ] {
        let constants = [("TEXTURE", f64::from(u8::from(texture)))];
        let ms = time(
            ctx,
            &module,
            "gemm",
            &bind,
            &constants,
            [size / 64, size / 64, 1],
        );
        let bytes =
            easel::gpu::readback::read_bytes(ctx, &c, 0, (m * n * 4) as u64).expect("readback");
        let out: &[f32] = bytemuck::cast_slice(&bytes);
        let error = samples
            .iter()
            .map(|&(i, j)| (f64::from(out[i * n + j]) - reference(i, j)).abs())
            .fold(0.0, f64::max);
        let gflops = 2.0 * (m * n * k) as f64 / ms / 1e6;
        println!("{what:<28} {ms:>9.2} {gflops:>9.2} {error:>12.2e}");
    }
}
