//! Every GPU op against its CPU reference (tests/reference/) on seeded random
//! inputs, including sizes that are not multiples of the tile sizes and batch > 1.
//! One file per op family, named like its wgsl/ file.

#[path = "../common/mod.rs"]
mod common;
#[path = "../reference/mod.rs"]
mod reference;

mod act_f16;
mod attention;
mod blend;
mod conv2d;
mod coop;
mod elementwise;
mod embedding;
mod epilogue;
mod finite;
mod image;
mod image_texture;
mod layout;
mod lora;
mod matmul;
mod noise;
mod norm;
mod peak;
mod resample;
mod sampler;
mod score;
mod texture;
mod weight_f16;
