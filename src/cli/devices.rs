//! `easel devices`: every adapter wgpu finds, its features and limits, and the
//! one easel would pick.

use easel::gpu::coop::{Coop, COLS};
use easel::gpu::{context, texture, AdapterOptions, Policy};
use easel::ops::tuning;
use easel::Result;

pub fn run(opts: &AdapterOptions) -> Result<()> {
    let adapters = context::enumerate(opts)?;
    let picked = context::pick(&adapters, opts)?;
    let textures = Policy::from_env("EASEL_WEIGHT_TEXTURES")?;
    let images = Policy::from_env("EASEL_IMAGE_TEXTURES")?;
    for (i, adapter) in adapters.iter().enumerate() {
        let info = adapter.get_info();
        let features = adapter.features();
        let limits = adapter.limits();
        let mark = if i == picked { "*" } else { " " };
        println!(
            "{mark} [{i}] {} ({:?}, {:?})",
            info.name, info.backend, info.device_type
        );
        println!("      driver: {} {}", info.driver, info.driver_info);
        let has = |f: wgpu::Features| if features.contains(f) { "yes" } else { "no" };
        println!(
            "      shader-f16: {}  timestamp-query: {} (inside passes: {})  subgroups: {} (size {}..{})",
            has(wgpu::Features::SHADER_F16),
            has(wgpu::Features::TIMESTAMP_QUERY),
            has(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            has(wgpu::Features::SUBGROUP),
            info.subgroup_min_size,
            info.subgroup_max_size,
        );
        println!(
            "      max storage binding: {} MiB  max buffer: {} MiB  workgroup storage: {} KiB  invocations/workgroup: {}",
            limits.max_storage_buffer_binding_size >> 20,
            limits.max_buffer_size >> 20,
            limits.max_compute_workgroup_storage_size >> 10,
            limits.max_compute_invocations_per_workgroup,
        );
        println!("      cooperative matrix: {}", cooperative(adapter));
        println!(
            "      cooperative GEMM tile: {}",
            coop_tile(adapter, &limits)
        );
        let reads_textures = texture::wanted(textures, &info.driver);
        println!(
            "      measured GEMM kernels: {}",
            tuning::describe(&info, reads_textures)?
        );
        println!(
            "      weight textures: {}",
            setting("EASEL_WEIGHT_TEXTURES", textures, reads_textures)
        );
        let stages = reads_textures && texture::images_wanted(images, &info);
        println!(
            "      image textures: {}",
            setting("EASEL_IMAGE_TEXTURES", images, stages)
        );
    }
    let info = adapters[picked].get_info();
    println!("easel uses [{picked}] {} via {:?}", info.name, info.backend);
    Ok(())
}

/// The adapter's cooperative-matrix (tensor core) shapes, `MxNxK A->C` each.
fn cooperative(adapter: &wgpu::Adapter) -> String {
    if !adapter
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    {
        return "no".into();
    }
    let shapes: Vec<String> = adapter
        .cooperative_matrix_properties()
        .iter()
        .map(|p| {
            format!(
                "{}x{}x{} {:?}->{:?}",
                p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type
            )
        })
        .collect();
    shapes.join(", ")
}

/// What wgsl/gemm_coop.wgsl would run with on this adapter, or why it cannot:
/// easel chooses it on GPUs once its start-up self-test passes.
fn coop_tile(adapter: &wgpu::Adapter, limits: &wgpu::Limits) -> String {
    match Coop::for_adapter(adapter, limits) {
        Ok(coop) => format!(
            "{0}x{0} f16->f32 fragments, {1}-lane subgroups, {2}x{COLS} output tiles{3}",
            coop.frag,
            coop.subgroup,
            coop.rows(1).unwrap_or(0),
            coop.rows(2)
                .map(|r| format!(" ({r}x{COLS} where the output has the rows)"))
                .unwrap_or_default()
        ),
        Err(why) => format!("not used ({why})"),
    }
}

/// Whether the subgroup kernels read layer weights through texture copies
/// (`gpu::texture`), or their convolutions gather from images staged in
/// textures, on this adapter (`yes`), and the setting `name` that says so.
fn setting(name: &str, policy: Policy, yes: bool) -> String {
    let setting = format!("{policy:?}").to_lowercase();
    format!("{} ({name}={setting})", if yes { "yes" } else { "no" })
}
