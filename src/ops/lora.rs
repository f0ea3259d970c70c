//! LoRA merge (wgsl/lora.wgsl): `W += scale · up @ down` in place, on a layer
//! weight in its own precision (f32, or packed f16 that stays f16).

use crate::error::{Error, Result};
use crate::gpu::{Access, Context, DType, Dispatch, Launch, Tensor};
use crate::ops::{expect_dtype, grid_1d, groups, LORA};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    words: u32,
    numel: u32,
    k: u32,
    rank: u32,
    row0: u32,
    scale: f32,
    _pad: [u32; 2],
}

const WORKGROUP: usize = 256;

/// The dispatches that add `scale · up @ down` to `weight` (`[out, ...]`, seen
/// as `[out, K]`), one per row block the adapter can bind ([`Tensor::row_blocks`]).
/// `up` is f32 `[out, r]`, `down` f32 `[r, K]`.
pub fn merge(
    ctx: &Context,
    weight: &Tensor,
    up: &Tensor,
    down: &Tensor,
    scale: f32,
) -> Result<Vec<Dispatch>> {
    expect_dtype("lora merge", "up", up, DType::F32)?;
    expect_dtype("lora merge", "down", down, DType::F32)?;
    let out = weight.shape.first().copied().unwrap_or(0);
    let k = weight.numel() / out.max(1);
    let rank = up.shape.get(1).copied().unwrap_or(0);
    if up.shape != [out, rank] || down.shape != [rank, k] || rank == 0 {
        return Err(Error::BadInput(format!(
            "lora merge: up {:?} @ down {:?} does not make a weight of shape {:?} ([{out}, {k}])",
            up.shape, down.shape, weight.shape
        )));
    }
    let entry = match weight.dtype {
        DType::F32 => "merge_f32",
        DType::F16 => "merge_f16",
        DType::U32 => {
            return Err(Error::BadInput(
                "lora merge: the weight is u32, not a float weight".into(),
            ))
        }
    };
    weight
        .row_blocks(ctx, "lora merge")?
        .into_iter()
        .map(|(row0, block)| {
            let numel = block.numel();
            let words = (block.bytes() / 4) as usize;
            let params = Params {
                words: words as u32,
                numel: numel as u32,
                k: k as u32,
                rank: rank as u32,
                row0: row0 as u32,
                scale,
                _pad: [0; 2],
            };
            Launch {
                shader: &LORA,
                entry,
                constants: &[],
                tensors: &[
                    (up, Access::Read),
                    (down, Access::Read),
                    (&block, Access::ReadWrite),
                ],
                workgroups: grid_1d(groups(words, WORKGROUP)),
                flops: 2 * (numel * rank) as u64,
                bytes: 2 * block.bytes() + 4 * (up.numel() + down.numel()) as u64,
            }
            .build(ctx, &params)
        })
        .collect()
}
