//! Every embedded shader (its wgsl/ files concatenated) parses and validates
//! with naga (the same release wgpu uses), matches the files on disk, and every
//! file in wgsl/ is part of one. A new file is picked up without editing this test.

use std::path::Path;

fn wgsl_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wgsl")
}

fn wgsl_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(wgsl_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no shaders in wgsl/");
    files
}

#[test]
fn every_shader_validates() {
    for shader in easel::ops::ALL_SHADERS {
        let (name, source) = (shader.name, shader.source);
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        );
        validator
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    }
}

#[test]
fn every_shader_is_embedded() {
    let shaders = easel::ops::ALL_SHADERS;
    for path in wgsl_files() {
        let name = path.file_stem().unwrap().to_str().unwrap();
        assert!(
            shaders.iter().any(|s| s.parts.contains(&name)),
            "wgsl/{name}.wgsl is not part of any shader in ops::ALL_SHADERS"
        );
    }
    for shader in shaders {
        let on_disk: String = shader
            .parts
            .iter()
            .map(|part| std::fs::read_to_string(wgsl_dir().join(format!("{part}.wgsl"))).unwrap())
            .collect();
        assert_eq!(
            shader.source, on_disk,
            "{}: embedded source is stale",
            shader.name
        );
    }
}

/// Parses and validates one embedded shader, then resolves its `override` constants to
/// their defaults, as wgpu does before handing a module to a platform back end.
fn resolved(name: &str, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        None,
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: overrides: {e}"));
    (module.into_owned(), info.into_owned())
}

/// Metal and DX12 users get the same kernels through naga's MSL and HLSL writers at run
/// time; a shader that only Vulkan (SPIR-V) accepts would fail there at pipeline
/// creation. Versions: MSL 2.4 (macOS 12 / iOS 15, what wgpu's Metal back end reports on
/// Apple-silicon Macs) and HLSL shader model 6.0 (the lowest with wave intrinsics, which
/// the subgroup variants need; wgpu compiles with DXC at the device's highest model).
#[test]
fn every_shader_translates_to_metal_and_hlsl() {
    for shader in easel::ops::ALL_SHADERS {
        let (module, info) = resolved(shader.name, shader.source);
        let msl = naga::back::msl::Options {
            lang_version: (2, 4),
            ..Default::default()
        };
        naga::back::msl::write_string(&module, &info, &msl, &Default::default())
            .unwrap_or_else(|e| panic!("{}: MSL: {e:?}", shader.name));
        let hlsl = naga::back::hlsl::Options {
            shader_model: naga::back::hlsl::ShaderModel::V6_0,
            ..Default::default()
        };
        let mut out = String::new();
        naga::back::hlsl::Writer::new(&mut out, &hlsl, &Default::default())
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{}: HLSL: {e:?}", shader.name));
    }
}
