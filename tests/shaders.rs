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
