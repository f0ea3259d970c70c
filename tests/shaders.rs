//! Every file in wgsl/ parses and validates with naga (the same release wgpu
//! uses), and every file is embedded by the library. A new file is picked up
//! without editing this test.

use std::path::Path;

fn wgsl_files() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("wgsl");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no shaders in {}", dir.display());
    files
}

#[test]
fn every_shader_validates() {
    for path in wgsl_files() {
        let source = std::fs::read_to_string(&path).unwrap();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&source)));
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        );
        validator
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&source)));
    }
}

#[test]
fn every_shader_is_embedded() {
    let embedded: Vec<&str> = easel::ops::ALL_SHADERS.iter().map(|s| s.name).collect();
    for path in wgsl_files() {
        let name = path.file_stem().unwrap().to_str().unwrap();
        assert!(
            embedded.contains(&name),
            "wgsl/{name}.wgsl is not in ops::ALL_SHADERS"
        );
        let on_disk = std::fs::read_to_string(&path).unwrap();
        let shader = easel::ops::ALL_SHADERS
            .iter()
            .find(|s| s.name == name)
            .unwrap();
        assert_eq!(shader.source, on_disk, "{name}: embedded source is stale");
    }
}
