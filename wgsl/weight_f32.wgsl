// How a kernel reads its weight operand when the weight is f32 (and whenever the
// operand is an activation: matmul's b is also attention's K and V). Not a
// shader of its own: the ops compile it with the kernel file (src/ops/mod.rs),
// and wgsl/weight_f16.wgsl supplies the same two functions for packed f16, so
// one kernel body serves both precisions. The operand is binding 2 of every
// kernel that takes a weight (matmul's b, conv2d's weight, CLIP's token table).
//   fn weight_at(i: u32) -> f32         element i
//   fn weight4_at(q: u32) -> vec4<f32>  elements 4q..4q+3

@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> weight4: array<vec4<f32>>;

fn weight_at(i: u32) -> f32 {
    return weight[i];
}

fn weight4_at(q: u32) -> vec4<f32> {
    return weight4[q];
}
