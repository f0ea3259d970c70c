//! Compute pipelines, cached per (shader, entry point, override constants), with
//! bind group layouts created explicitly once per binding signature.
//!
//! Every easel kernel binds the same way: binding 0 is a uniform block of
//! parameters, bindings 1.. are storage buffers (or a weight's texture copy)
//! in the order the op lists them.
//! So a whole model needs a handful of layouts, not one per layer (tfjs#5001),
//! and nothing calls `get_bind_group_layout` per dispatch (wgpu#5196).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A WGSL source embedded in the binary: the files `parts` of wgsl/, concatenated,
/// named like the last of them.
#[derive(Debug)]
pub struct Shader {
    pub name: &'static str,
    pub parts: &'static [&'static str],
    pub source: &'static str,
    /// The same kernels for f16 activations (wgsl/act_f16.wgsl), where this
    /// shader's are f32 (wgsl/act_f32.wgsl); `None` for shaders with one form.
    pub half: Option<&'static Shader>,
}

impl Shader {
    /// This shader's kernels for activations of `dtype`: itself for f32, its
    /// f16 twin for f16 (or itself where it has none: its operands are not
    /// activations). [`crate::gpu::Launch`] applies it to the dtype of binding
    /// 1, which is an activation in every twinned shader.
    pub fn for_activations(&'static self, dtype: crate::gpu::DType) -> &'static Shader {
        match (dtype, self.half) {
            (crate::gpu::DType::F16, Some(half)) => half,
            _ => self,
        }
    }
}

/// How a kernel sees one of its tensors' buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    ReadWrite,
    /// Read through the buffer's texture copy (`gpu::texture`): a weight the
    /// kernel reads with wgsl/weight_texture.wgsl, or a convolution's staged
    /// image (wgsl/image_texture.wgsl).
    Texture,
    /// Written as the buffer's r32float storage texture: the staging of a
    /// convolution's image (wgsl/stage_image.wgsl).
    StorageTexture,
}

/// What to compile: a shader, one of its entry points, and override constants.
pub struct KernelSpec<'a> {
    pub shader: &'static Shader,
    pub entry: &'a str,
    pub constants: &'a [(&'a str, f64)],
    /// Bindings after the uniform at binding 0: storage buffers, or a
    /// weight's texture copy (`Access::Texture`).
    pub storage: &'a [Access],
}

/// A compiled pipeline and the layout its bind groups must use.
#[derive(Debug)]
pub struct Kernel {
    pub label: String,
    /// The override constants set to anything but 0 (`TRANSPOSE_B=1 HAS_BIAS=1`):
    /// what tells apart two kernels of one label.
    pub constants: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    shader: &'static str,
    entry: String,
    /// f64 bit patterns, so the key is hashable and exact.
    constants: Vec<(String, u64)>,
}

pub struct PipelineCache {
    device: wgpu::Device,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<Vec<Access>, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    kernels: Mutex<HashMap<Key, Arc<Kernel>>>,
    created: AtomicU64,
}

impl PipelineCache {
    pub fn new(device: wgpu::Device) -> Self {
        Self {
            device,
            modules: Mutex::default(),
            layouts: Mutex::default(),
            kernels: Mutex::default(),
            created: AtomicU64::new(0),
        }
    }

    /// Pipelines compiled so far (tests assert none are made per step).
    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    pub fn get(&self, spec: &KernelSpec) -> Arc<Kernel> {
        let mut constants: Vec<(String, u64)> = spec
            .constants
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_bits()))
            .collect();
        constants.sort();
        let key = Key {
            shader: spec.shader.name,
            entry: spec.entry.to_string(),
            constants,
        };
        if let Some(kernel) = self.kernels.lock().unwrap().get(&key) {
            return kernel.clone();
        }
        let kernel = Arc::new(self.compile(spec));
        self.created.fetch_add(1, Ordering::Relaxed);
        self.kernels.lock().unwrap().insert(key, kernel.clone());
        kernel
    }

    fn compile(&self, spec: &KernelSpec) -> Kernel {
        let module = self
            .modules
            .lock()
            .unwrap()
            .entry(spec.shader.name)
            .or_insert_with(|| {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(spec.shader.name),
                        source: wgpu::ShaderSource::Wgsl(spec.shader.source.into()),
                    })
            })
            .clone();
        let (layout, pipeline_layout) = self.layout(spec.storage);
        let label = format!("{}::{}", spec.shader.name, spec.entry);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: spec.constants,
                    // Kernels initialise the workgroup memory they read.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        let set = spec.constants.iter().filter(|(_, v)| *v != 0.0);
        Kernel {
            label,
            constants: set
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            pipeline,
            layout,
        }
    }

    fn layout(&self, storage: &[Access]) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        let mut layouts = self.layouts.lock().unwrap();
        layouts
            .entry(storage.to_vec())
            .or_insert_with(|| {
                let uniform = wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                };
                let entries: Vec<_> = std::iter::once(uniform)
                    .chain(storage.iter().enumerate().map(|(i, access)| {
                        wgpu::BindGroupLayoutEntry {
                            binding: i as u32 + 1,
                            visibility: wgpu::ShaderStages::COMPUTE,
                            ty: binding_type(*access),
                            count: None,
                        }
                    }))
                    .collect();
                let bgl = self
                    .device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some("easel"),
                        entries: &entries,
                    });
                let pl = self
                    .device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some("easel"),
                        bind_group_layouts: &[Some(&bgl)],
                        immediate_size: 0,
                    });
                (bgl, pl)
            })
            .clone()
    }
}

fn binding_type(access: Access) -> wgpu::BindingType {
    match access {
        Access::Texture => wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Float { filterable: false },
            view_dimension: wgpu::TextureViewDimension::D2,
            multisampled: false,
        },
        Access::StorageTexture => wgpu::BindingType::StorageTexture {
            access: wgpu::StorageTextureAccess::WriteOnly,
            format: wgpu::TextureFormat::R32Float,
            view_dimension: wgpu::TextureViewDimension::D2,
        },
        _ => wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage {
                read_only: access == Access::Read,
            },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
    }
}
