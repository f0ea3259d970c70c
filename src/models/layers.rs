//! The layers every model is built from (`nn.Conv2d`, `nn.Linear`, norms),
//! loaded by exact checkpoint names through [`Vars`].

use crate::error::{Error, Result};
use crate::gpu::{texture, Context, Tensor};
use std::path::Path;

use crate::weights::{Config, HostWeight, RowOrder, WeightPrecision, Weights};

/// A path into a checkpoint's names, diffusers-style: `vb.pp("down_blocks").pp(0)`.
#[derive(Clone)]
pub struct Vars<'a> {
    pub ctx: &'a Context,
    pub weights: &'a Weights,
    prefix: String,
}

impl<'a> Vars<'a> {
    pub fn new(ctx: &'a Context, weights: &'a Weights) -> Self {
        Self {
            ctx,
            weights,
            prefix: String::new(),
        }
    }

    /// The same store one path segment deeper.
    pub fn pp(&self, segment: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            segment.to_string()
        } else {
            format!("{}.{segment}", self.prefix)
        };
        Self {
            prefix,
            ..self.clone()
        }
    }

    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    /// The tensor `prefix.leaf`, which must have exactly `shape`.
    pub fn get(&self, leaf: &str, shape: &[usize]) -> Result<Tensor> {
        self.weights.get(self.ctx, &self.name(leaf), shape)
    }

    /// The layer weight `prefix.leaf` (nn.Linear, nn.Conv2d, an embedding
    /// table), which must have exactly `shape`, in the precision the weights were
    /// opened with ([`Weights::get_weight`]). Biases and norm weights use
    /// [`Vars::get`]: they stay f32 because they are tiny (one value per output
    /// channel) and read once per output, so f16 would save nothing worth a
    /// second code path in the norm and elementwise kernels.
    pub fn get_weight(&self, leaf: &str, shape: &[usize]) -> Result<Tensor> {
        self.weights.get_weight(self.ctx, &self.name(leaf), shape)
    }

    /// [`Vars::get`] and [`Vars::get_weight`] with the rows in `order`.
    pub fn get_in(&self, leaf: &str, shape: &[usize], order: RowOrder) -> Result<Tensor> {
        self.weights
            .get_in(self.ctx, &self.name(leaf), shape, order)
    }

    pub fn get_weight_in(&self, leaf: &str, shape: &[usize], order: RowOrder) -> Result<Tensor> {
        self.weights
            .get_weight_in(self.ctx, &self.name(leaf), shape, order)
    }

    /// [`Vars::get_weight_in`] for a layer the GEMM kernels read (nn.Linear,
    /// nn.Conv2d): held in its texture copy alone where they read it through
    /// one (`gpu::texture::hold`).
    pub fn layer_weight(&self, leaf: &str, shape: &[usize], order: RowOrder) -> Result<Tensor> {
        let weight = self.get_weight_in(leaf, shape, order)?;
        Ok(texture::hold(self.ctx, &self.name(leaf), weight))
    }

    /// [`Vars::get_weight`] kept in host memory ([`Weights::get_host_weight`]).
    pub fn get_host_weight(&self, leaf: &str, shape: &[usize]) -> Result<HostWeight> {
        self.weights.get_host_weight(&self.name(leaf), shape)
    }

    pub fn contains(&self, leaf: &str) -> bool {
        self.weights.contains(&self.name(leaf))
    }
}

/// A component's config.json with its checks (in `models/checks.rs`: every field
/// that sizes or divides something); the reader puts the file's path before the
/// message, which names the field.
pub trait CheckedConfig: serde::de::DeserializeOwned {
    fn check(&self) -> std::result::Result<(), String>;
}

/// A model component folder (`unet/`, `text_encoder/`, ...): its weights and
/// its typed config.json.
pub fn open_component<C: CheckedConfig>(dir: &Path) -> Result<(Weights, C)> {
    let config = component_config(dir)?;
    Ok((Weights::open_dir(dir)?, config))
}

/// A component folder's typed `config.json`, its sizes checked
/// ([`CheckedConfig`]): errors name the file and the field.
pub fn component_config<C: CheckedConfig>(dir: &Path) -> Result<C> {
    let path = dir.join("config.json");
    let config: C = Config::read(&path)?.parse()?;
    config
        .check()
        .map_err(|message| Error::model(&path, message))?;
    Ok(config)
}

/// After a model is built: every tensor in its files must have been read,
/// except those under `ignored` prefixes (buffers such as `position_ids`, or the
/// VAE's encoder half), or the checkpoint does not match its config.
pub fn check_all_used(weights: &Weights, ignored: &[&str]) -> Result<()> {
    let unused: Vec<String> = weights
        .unused()
        .into_iter()
        .filter(|n| !ignored.iter().any(|p| n.starts_with(p) || n.ends_with(p)))
        .collect();
    match unused.first() {
        None => Ok(()),
        Some(first) => Err(Error::model(
            weights.files()[0].path.clone(),
            format!(
                "{} tensor(s) not used by the model built from its config, e.g. `{}{first}`: the checkpoint and its config disagree",
                unused.len(),
                weights.prefix()
            ),
        )),
    }
}

/// Build a model with `new` from weights already opened (and perhaps renamed),
/// layer weights in `precision`, and refuse tensors it never read (but those
/// under `ignored`): a checkpoint that does not match its config is an error.
pub fn build_with<M>(
    ctx: &Context,
    mut weights: Weights,
    precision: WeightPrecision,
    ignored: &[&str],
    new: impl FnOnce(&Vars) -> Result<M>,
) -> Result<M> {
    weights.set_precision(precision);
    // A weight that cannot exist on the adapter: the flag that stores it smaller.
    let model = new(&Vars::new(ctx, &weights)).map_err(|e| {
        let path = weights.files()[0].path.display();
        e.advise(&format!(
            "a weight of {path}: `--weights f16` stores f32 weights in half the bytes"
        ))
    })?;
    check_all_used(&weights, ignored)?;
    Ok(model)
}

/// `nn.Conv2d` (groups = 1): weight `[out, in, kh, kw]`, optional bias `[out]`.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    pub fn new(
        vb: &Vars,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.layer_weight("weight", &[cout, cin, kernel, kernel], RowOrder::Stored)?,
            bias: Some(vb.get("bias", &[cout])?),
            stride,
            padding,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.weight.shape[0]
    }
}

/// `nn.Linear`: weight `[out, in]` as PyTorch stores it, optional bias `[out]`.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// How the output features are laid out: `HalvesInterleaved` for a
    /// projection whose store applies GEGLU (`Graph::linear_geglu`), which
    /// is then the only way to run it.
    pub rows: RowOrder,
}

impl Linear {
    pub fn new(vb: &Vars, din: usize, dout: usize, bias: bool) -> Result<Self> {
        Self::with_rows(vb, din, dout, bias, RowOrder::Stored)
    }

    /// The layer with its output features (weight and bias rows) in `order`.
    pub fn with_rows(
        vb: &Vars,
        din: usize,
        dout: usize,
        bias: bool,
        order: RowOrder,
    ) -> Result<Self> {
        let layer = Self::in_buffer(vb, din, dout, bias, order)?;
        let weight = texture::hold(vb.ctx, &vb.name("weight"), layer.weight);
        Ok(Self { weight, ..layer })
    }

    /// [`Linear::with_rows`] with the weight in its buffer (never held in a
    /// texture copy: [`Linear::stack`] copies it into the stack's).
    fn in_buffer(vb: &Vars, din: usize, dout: usize, bias: bool, order: RowOrder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_weight_in("weight", &[dout, din], order)?,
            bias: if bias {
                Some(vb.get_in("bias", &[dout], order)?)
            } else {
                None
            },
            rows: order,
        })
    }

    /// The layers `leaves` of `vb` (one input size, `dout` outputs each)
    /// stacked along their outputs, biases alike, for one GEMM that writes
    /// each layer's output apart (`Graph::linear_parts`). Each is loaded as
    /// itself first, so its LoRA patches merge as they would unstacked.
    pub fn stack(vb: &Vars, leaves: &[&str], din: usize, dout: usize, bias: bool) -> Result<Self> {
        let layers = leaves
            .iter()
            .map(|leaf| Self::in_buffer(&vb.pp(leaf), din, dout, bias, RowOrder::Stored))
            .collect::<Result<Vec<_>>>()?;
        Self::stack_layers(vb.ctx, &vb.name(&leaves.join("+")), &layers)
    }

    /// Loaded layers of one shape, as rows stored, stacked like [`Linear::stack`]'s
    /// and held as a layer is. A part held in its texture copy makes its
    /// buffer again for the copy (the resnets' time projections, once, at load).
    pub fn stack_layers(ctx: &Context, label: &str, layers: &[Linear]) -> Result<Self> {
        for layer in layers {
            layer.expect_rows(false)?;
        }
        let weights: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
        let biases: Option<Vec<&Tensor>> = layers.iter().map(|l| l.bias.as_ref()).collect();
        Ok(Self {
            weight: texture::hold(ctx, label, Tensor::stack_rows(ctx, label, &weights)?),
            bias: match biases {
                Some(biases) => Some(Tensor::stack_rows(ctx, label, &biases)?),
                None => None,
            },
            rows: RowOrder::Stored,
        })
    }

    pub fn out_features(&self) -> usize {
        self.weight.shape[0]
    }

    /// Refuses a layer whose rows do not suit the store asked of it: GEGLU
    /// needs them interleaved, anything else as stored.
    pub fn expect_rows(&self, geglu: bool) -> Result<()> {
        let interleaved = self.rows == RowOrder::HalvesInterleaved;
        if geglu == interleaved {
            return Ok(());
        }
        let needs = ["cannot run", "runs only"][interleaved as usize];
        Err(Error::BadInput(format!(
            "linear: a weight of shape {:?} with rows {:?} {needs} with GEGLU in its store",
            self.weight.shape, self.rows,
        )))
    }
}

/// `nn.GroupNorm(groups, channels, eps)` with affine weight and bias.
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNorm {
    pub fn new(vb: &Vars, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::BadInput(format!(
                "{}: {channels} channels do not split into {groups} groups",
                vb.name("weight")
            )));
        }
        Ok(Self {
            weight: vb.get("weight", &[channels])?,
            bias: vb.get("bias", &[channels])?,
            groups,
            eps: eps as f32,
        })
    }
}

/// `nn.LayerNorm(dim, eps)` over the last dimension.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    pub fn new(vb: &Vars, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get("weight", &[dim])?,
            bias: vb.get("bias", &[dim])?,
            eps: eps as f32,
        })
    }
}
