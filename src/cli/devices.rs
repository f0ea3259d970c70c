//! `easel devices`: every adapter wgpu finds, its features and limits, and the
//! one easel would pick.

use easel::gpu::{context, AdapterOptions};
use easel::Result;

pub fn run(opts: &AdapterOptions) -> Result<()> {
    let adapters = context::enumerate(opts)?;
    let picked = context::pick(&adapters, opts)?;
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
