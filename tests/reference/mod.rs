//! CPU reference kernels, accumulating in f64 so the ground truth is trustworthy.
//! One file per op family, named like its wgsl/ file; each function mirrors the
//! PyTorch op named in its doc comment.
#![allow(dead_code)]

pub mod attention;
pub mod blend;
pub mod conv2d;
pub mod elementwise;
pub mod embedding;
pub mod finite;
pub mod image;
pub mod layout;
pub mod lora;
pub mod matmul;
pub mod noise;
pub mod norm;
pub mod peak;
pub mod resample;
pub mod sampler;
pub mod score;
