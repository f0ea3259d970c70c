//! The models, mirroring diffusers / transformers file by file, built from
//! config.json and the exact checkpoint tensor names.

pub mod arena;
pub mod attention;
pub mod checks;
pub mod clip;
pub mod graph;
pub mod layers;
pub mod nchw;
pub mod pipeline;
pub mod resnet;
pub mod scorer;
pub mod single_file;
pub mod stacked;
pub mod time_projections;
pub mod unet_2d_condition;
pub mod unet_blocks;
pub mod unet_config;
pub mod upscaler;
pub mod vae;
pub mod vae_tiles;

pub use graph::Graph;
