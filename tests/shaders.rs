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

/// Whether a shader is built on cooperative matrices (it starts with their prefix,
/// its f16-activation twin included).
fn cooperative(shader: &easel::gpu::Shader) -> bool {
    shader.parts[0].starts_with("coop")
}

/// Vulkan's path: wgpu hands the module, overrides resolved, to naga's SPIR-V
/// writer, which panics on some modules the validator accepts (a pointer to a
/// member of a pointed-to struct passed as an argument: "Expression [N] is not
/// cached"), and only when a pipeline is first made. Every shader is written
/// here, so such a shader fails the suite, not a run.
#[test]
fn every_shader_writes_spirv() {
    let options = naga::back::spv::Options {
        lang_version: (1, 3), // subgroup operations
        ..Default::default()
    };
    for shader in easel::ops::ALL_SHADERS {
        let (module, info) = resolved(shader.name, shader.source);
        naga::back::spv::write_vec(&module, &info, &options, None)
            .unwrap_or_else(|e| panic!("{}: SPIR-V: {e}", shader.name));
    }
}

/// Metal and DX12 users get the same kernels through naga's MSL and HLSL writers at run
/// time; a shader that only Vulkan (SPIR-V) accepts would fail there at pipeline
/// creation. Versions: MSL 2.4 (macOS 12 / iOS 15, what wgpu's Metal back end reports on
/// Apple-silicon Macs) and HLSL shader model 6.0 (the lowest with wave intrinsics, which
/// the subgroup variants need; wgpu compiles with DXC at the device's highest model).
///
/// The cooperative-matrix shaders (`*_coop8`, `*_coop16`) have no HLSL form: naga
/// cannot write cooperative matrices to HLSL and wgpu offers them on Vulkan and
/// Metal only, so no DX12 adapter advertises the feature and easel never chooses
/// them there (`gpu::coop`). They must translate to MSL (simdgroup matrices;
/// Apple advertises 8x8 only, so only `_coop8` is ever chosen on Metal).
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
        if cooperative(shader) {
            continue;
        }
        // f16 activations need 16-bit types: shader model 6.2, which DX12 adapters
        // with SHADER_F16 have (wgpu offers the feature only there).
        let shader_model = match shader.parts.contains(&"act_f16") {
            true => naga::back::hlsl::ShaderModel::V6_2,
            false => naga::back::hlsl::ShaderModel::V6_0,
        };
        let hlsl = naga::back::hlsl::Options {
            shader_model,
            ..Default::default()
        };
        let mut out = String::new();
        naga::back::hlsl::Writer::new(&mut out, &hlsl, &Default::default())
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{}: HLSL: {e:?}", shader.name));
    }
}

/// The cooperative-matrix shaders need the capabilities easel requests with them
/// (cooperative matrices and f16; f16-in-f32 unpacking every kernel that reads an
/// f16 weight uses): naga refuses them without cooperative matrices, as wgpu
/// does on a device without the feature. With them they become SPIR-V, which is
/// where naga's writer is strictest about them (a stride or pointer index that
/// is not a named `let` panics there).
#[test]
fn cooperative_shaders_need_the_capability_and_write_spirv() {
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    let coop: Vec<_> = easel::ops::ALL_SHADERS
        .iter()
        .filter(|s| cooperative(s))
        .collect();
    assert_eq!(
        coop.len(),
        20,
        "matmul and conv2d (f32 and f16 weights) and attention, 8x8 and 16x16, \
         f32 and f16 activations"
    );
    let base = Capabilities::SHADER_FLOAT16 | Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    let needed = base | Capabilities::COOPERATIVE_MATRIX;
    for shader in coop {
        let module = naga::front::wgsl::parse_str(shader.source).unwrap();
        let without = Validator::new(ValidationFlags::all(), base).validate(&module);
        assert!(
            without.is_err(),
            "{}: valid without cooperative matrices",
            shader.name
        );
        let info = Validator::new(ValidationFlags::all(), needed)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(shader.source)));
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            None,
            &Default::default(),
        )
        .unwrap();
        naga::back::spv::write_vec(&module, &info, &Default::default(), None)
            .unwrap_or_else(|e| panic!("{}: SPIR-V: {e}", shader.name));
    }
}

/// What expression `e` of `f` is computed from: `None` if anything varies per
/// invocation (ids, local variables, call results), else whether it reads the uniform
/// buffer (`Some(true)`: what Mesa 22's lavapipe inlines into a loop bound at dispatch,
/// wgsl/bound.wgsl) or only constants and overrides (`Some(false)`).
fn uniform_read(
    module: &naga::Module,
    f: &naga::Function,
    e: naga::Handle<naga::Expression>,
) -> Option<bool> {
    use naga::Expression as E;
    let all = |es: &[naga::Handle<naga::Expression>]| {
        es.iter()
            .try_fold(false, |reads, &e| Some(reads | uniform_read(module, f, e)?))
    };
    match f.expressions[e] {
        E::Literal(_) | E::Constant(_) | E::Override(_) | E::ZeroValue(_) => Some(false),
        E::GlobalVariable(g) => {
            (module.global_variables[g].space == naga::AddressSpace::Uniform).then_some(true)
        }
        E::Load { pointer: x } | E::AccessIndex { base: x, .. } => all(&[x]),
        E::Unary { expr, .. } | E::As { expr, .. } => all(&[expr]),
        E::Access { base, index } => all(&[base, index]),
        E::Binary { left, right, .. } => all(&[left, right]),
        E::Select {
            condition,
            accept,
            reject,
        } => all(&[condition, accept, reject]),
        E::Math {
            arg, arg1, arg2, ..
        } => all(&[Some(arg), arg1, arg2]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()),
        _ => None,
    }
}

/// The loops of `block` (nested ones too) whose exit condition compares against a
/// value read from the uniform buffer.
fn uniform_loop_bounds(module: &naga::Module, f: &naga::Function, block: &naga::Block) -> usize {
    use naga::Statement as S;
    block
        .iter()
        .map(|s| match s {
            S::Loop {
                body, continuing, ..
            } => {
                // naga writes `for (..; cond; ..)` as a loop whose body opens
                // (after the Emit of cond's expressions) with `if (cond) {} else { break; }`.
                // Mesa inlines the side that is not the induction variable.
                let bound = match body.iter().find(|s| !matches!(s, S::Emit(_))) {
                    Some(S::If { condition, .. }) => match f.expressions[*condition] {
                        naga::Expression::Binary { left, right, .. } => [left, right]
                            .iter()
                            .any(|&e| uniform_read(module, f, e) == Some(true))
                            as usize,
                        _ => (uniform_read(module, f, *condition) == Some(true)) as usize,
                    },
                    _ => 0,
                };
                bound
                    + uniform_loop_bounds(module, f, body)
                    + uniform_loop_bounds(module, f, continuing)
            }
            S::Block(b) => uniform_loop_bounds(module, f, b),
            S::If { accept, reject, .. } => {
                uniform_loop_bounds(module, f, accept) + uniform_loop_bounds(module, f, reject)
            }
            _ => 0,
        })
        .sum()
}

/// Mesa 22's lavapipe compiled a GEMM again at every dispatch when a loop was
/// bounded by a uniform (`k < p.k`; docs/benchmarks.md), so every kernel bounds
/// its loops with `loop_bound`: no loop in any shader exits on a uniform.
#[test]
fn no_loop_is_bounded_by_a_uniform() {
    let mut checked = 0;
    for shader in easel::ops::ALL_SHADERS {
        let module = naga::front::wgsl::parse_str(shader.source).unwrap();
        let functions = module.functions.iter().map(|(_, f)| f);
        for f in functions.chain(module.entry_points.iter().map(|e| &e.function)) {
            let found = uniform_loop_bounds(&module, f, &f.body);
            let name = f.name.as_deref().unwrap_or("?");
            assert_eq!(
                found, 0,
                "{}: {name} has a loop bounded by a uniform: use loop_bound (wgsl/bound.wgsl)",
                shader.name
            );
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} shaders");
}
