//! A request's memory plan: before any GPU work, the largest activations its
//! passes will make, estimated from the model's configs, and the choices they
//! drive.
//!
//! Activations are reused by liveness within a pass (`models::arena`), and
//! attention holds no `[Lq, Lk]` scores (`ops::attention`), so what grows with
//! the image is the VAE decoder: its last blocks run at full resolution with
//! 128-256 channels (Stable Diffusion at 512x512: `[1, 256, 512, 512]`, 268 MB,
//! more than lavapipe's 134 MB binding limit). `--vae-tiles auto` decodes in
//! tiles when the whole decode's largest activation would not fit one storage
//! binding, or the few of that size alive at once ([`LIVE_AT_PEAK`]: a resnet's
//! input, its normalised copy, a convolution's output) would pass
//! [`DECODE_BUDGET`]. A decode that cannot fit (with `--vae-tiles off`, or in
//! tiles too large, or in the smallest tiles) is an error naming the
//! activation, its bytes, the limit and the flag that would help.

use crate::error::{Error, Result};
use crate::gpu::memory::{self, Limit};
use crate::gpu::{AdapterClass, Context, DType};
use crate::models::pipeline::PipelineConfig;
use crate::models::vae::AutoencoderKLConfig;
use crate::models::vae_tiles::{Tiling, VaeTiles, MIN_TILE};
use crate::ops::attention;

/// Bytes the VAE decoder's activations may take before `--vae-tiles auto`
/// decodes in tiles (10^6-byte MB: 512 MB). Stable Diffusion's decode at
/// 512x512 would hold ~0.8 GB; in 256-pixel tiles ~0.2 GB.
pub const DECODE_BUDGET: u64 = 512_000_000;

/// Activations of the largest size alive at once in the decoder (see the module docs).
pub const LIVE_AT_PEAK: u64 = 3;

/// What the plan must fit: the adapter's binding limit and the decode budget.
#[derive(Clone, Debug)]
pub struct Limits {
    pub adapter: String,
    pub binding: u64,
    pub budget: u64,
    /// A CPU driver, whose invocations may loop only so far
    /// ([`attention::cpu_key_limit`]).
    pub cpu_driver: bool,
    /// The decoder's activations' dtype ([`Precision`]): what an element takes.
    pub activations: DType,
}

impl Limits {
    /// `ctx`'s limits for a decode whose activations are `activations`.
    pub fn of(ctx: &Context, activations: DType) -> Self {
        Self {
            adapter: ctx.info.name.clone(),
            binding: ctx.max_binding_size(),
            budget: DECODE_BUDGET,
            cpu_driver: ctx.class == AdapterClass::Cpu,
            activations,
        }
    }
}

/// The precision of the UNet's and the VAE's activations (`--precision`);
/// weights keep theirs (`--weights`) and the sampler, text
/// encoders, scorer and images stay f32. f16 halves every activation and
/// keeps norm statistics, softmax and sums in f32 (wgsl/act_f16.wgsl).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f16 on a GPU that stores f16 (SHADER_F16) when the model's weights are
    /// f16 there (a half-precision checkpoint, or `--weights f16`), as
    /// diffusers runs a `torch_dtype=float16` pipeline; f32 otherwise, and on
    /// CPU drivers, where f16 storage costs conversions and saves no time
    /// (lavapipe: the default model 5-10 % slower in f16).
    #[default]
    Auto,
    F32,
    F16,
}

impl Precision {
    /// The activations' dtype on `ctx` for a model whose UNet weights are
    /// `weights`; `--precision f16` where the adapter cannot store f16 is an
    /// error.
    pub fn resolve(self, ctx: &Context, weights: DType) -> Result<DType> {
        let f16 = ctx.has_f16_activations();
        match self {
            Precision::F32 => Ok(DType::F32),
            Precision::F16 => ctx.check_f16_activations().map(|()| DType::F16),
            Precision::Auto if f16 && weights == DType::F16 && ctx.class != AdapterClass::Cpu => {
                Ok(DType::F16)
            }
            Precision::Auto => Ok(DType::F32),
        }
    }
}

/// What an activation that does not fit could also use: `--precision f16`,
/// where the run's activations are f32 and the adapter stores f16.
pub fn f16_hint(ctx: &Context, activations: DType) -> &'static str {
    match activations == DType::F32 && ctx.has_f16_activations() {
        true => "; --precision f16 halves every activation",
        false => "",
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Precision::Auto),
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            _ => Err(Error::BadInput(format!(
                "--precision {s}: expected auto, f32 or f16"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        })
    }
}

/// One activation of a pass: what it is, its shape and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activation {
    pub what: String,
    pub shape: [usize; 4],
    pub bytes: u64,
}

/// The plan of a request (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The VAE decoder's largest activation as planned (per tile when tiled);
    /// `None` for a pixel-space model.
    pub decode: Option<Activation>,
    /// The tiles the VAE decodes in; `None`: the whole image at once.
    pub vae_tiling: Option<Tiling>,
    /// The UNet's and the decoder's activations ([`Precision::resolve`]).
    pub precision: DType,
}

impl MemoryPlan {
    /// The plan for decoding `images` latents of `[h, w]` with `tiles` by a
    /// model's `vae` (none: a pixel-space model) within `limits`.
    pub fn new(
        vae: Option<&AutoencoderKLConfig>,
        images: usize,
        [h, w]: [usize; 2],
        tiles: VaeTiles,
        limits: &Limits,
    ) -> Result<Self> {
        let Some(vae) = vae else {
            return Ok(Self {
                decode: None,
                vae_tiling: None,
                precision: limits.activations,
            });
        };
        // The latents one decode sees: the whole `[h, w]`, or a tile of them.
        let latents = |t: Option<Tiling>| t.map_or([h, w], |t| [t.tile.min(h), t.tile.min(w)]);
        let largest = |t: Option<Tiling>| {
            largest_decode_activation(vae, images, latents(t), limits.activations)
        };
        let fits = |a: &Activation| a.bytes <= limits.binding;
        // The mid block attends over every latent of a tile, in one head as wide
        // as the deepest block.
        let head = vae.block_out_channels.last().copied().unwrap_or(0);
        let max_keys = attention::cpu_key_limit(head).filter(|_| limits.cpu_driver);
        let keys_fit = |t: Option<Tiling>| {
            let [th, tw] = latents(t);
            max_keys.is_none_or(|max| th * tw <= max)
        };
        let vae_tiling = match tiles {
            VaeTiles::Off => None,
            VaeTiles::Pixels(p) => Some(Tiling::new(p / vae.upscale_factor())),
            VaeTiles::Auto => auto_tiling(h.max(w), |t| {
                let a = largest(t);
                fits(&a) && LIVE_AT_PEAK * a.bytes <= limits.budget && keys_fit(t)
            }),
        };
        let decode = largest(vae_tiling);
        if !fits(&decode) {
            let help = match tiles {
                VaeTiles::Off => "`--vae-tiles auto` decodes in tiles that fit",
                _ => "smaller `--vae-tiles` or a smaller --size needs less",
            };
            let what = format!("{} {:?}", decode.what, decode.shape);
            let e = memory::too_large(
                &what,
                decode.bytes,
                &limits.adapter,
                Limit::Binding,
                limits.binding,
            );
            return Err(e.advise(help));
        }
        Ok(Self {
            decode: Some(decode),
            vae_tiling,
            precision: limits.activations,
        })
    }
}

/// The whole decode (`None`) when `fits(None)`, else the largest power-of-two
/// tile below `side` that fits, else the smallest tile (which the caller
/// then finds too large and reports).
fn auto_tiling(side: usize, fits: impl Fn(Option<Tiling>) -> bool) -> Option<Tiling> {
    if fits(None) {
        return None;
    }
    let mut tile = side.next_power_of_two() / 2;
    while tile > MIN_TILE && !fits(Some(Tiling::new(tile))) {
        tile /= 2;
    }
    Some(Tiling::new(tile))
}

/// The decoder's largest activation for `n` latents of `[h, w]` in `dtype`:
/// at each resolution, the most channels any tensor there has (a block's
/// resnets at its own width, and the upsampled output of the block before it).
pub fn largest_decode_activation(
    vae: &AutoencoderKLConfig,
    n: usize,
    [h, w]: [usize; 2],
    dtype: DType,
) -> Activation {
    let widths: Vec<usize> = vae.block_out_channels.iter().rev().copied().collect();
    (0..widths.len())
        .map(|k| {
            let channels = widths[k].max(k.checked_sub(1).map_or(0, |p| widths[p]));
            let shape = [n, channels, h << k, w << k];
            Activation {
                what: format!("the VAE decoder's activation at up_blocks.{k}"),
                shape,
                bytes: dtype.bytes(shape.iter().product::<usize>()),
            }
        })
        .max_by_key(|a| a.bytes)
        .expect("a VAE has blocks")
}

/// `--vae-tiles N`'s own check against the model: whole latents, at least
/// [`MIN_TILE`] of them (a pixel-space model has no VAE and ignores it).
pub fn check_vae_tiles(tiles: VaeTiles, config: &PipelineConfig) -> Result<()> {
    let (VaeTiles::Pixels(p), Some(vae)) = (tiles, &config.vae) else {
        return Ok(());
    };
    let f = vae.upscale_factor();
    if p % f != 0 || p / f < MIN_TILE {
        return Err(Error::BadInput(format!(
            "--vae-tiles {p}: a tile's side must be a multiple of the VAE's {f} pixels per \
             latent and at least {} pixels",
            MIN_TILE * f
        )));
    }
    Ok(())
}
