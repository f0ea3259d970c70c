// Broadcasts shared by the kernels for 8-lane subgroups (wgsl/matmul_subgroup.wgsl,
// wgsl/conv2d_subgroup.wgsl). Not a shader of its own: the ops compile it after
// the base kernel file and before the subgroup kernel (src/ops/mod.rs).
//
// Each lane of a group loads one row (4 floats along k) of the operand the 8 lanes
// share; these hand every lane all 8 rows, 0..3 and 4..7, as the columns of a
// mat4x4 (subgroupBroadcast needs constant lane ids, hence two functions).

fn rows_lo(mine: vec4<f32>) -> mat4x4<f32> {
    return mat4x4(subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u),
                  subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u));
}

fn rows_hi(mine: vec4<f32>) -> mat4x4<f32> {
    return mat4x4(subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u),
                  subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u));
}

// The even and the odd lanes' values, for operands whose lanes 2r and 2r + 1
// load the two halves of one row.
fn even_lanes(mine: vec4<f32>) -> mat4x4<f32> {
    return mat4x4(subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 2u),
                  subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 6u));
}

fn odd_lanes(mine: vec4<f32>) -> mat4x4<f32> {
    return mat4x4(subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 3u),
                  subgroupBroadcast(mine, 5u), subgroupBroadcast(mine, 7u));
}

// The tall kernels (matmul_cpu_tall, conv2d_cpu_tall): a subgroup owns up to 64
// rows of the output, in groups of 8, and each lane 4 of its columns, so every
// lane needs every row of the shared operand (8 loads of the subgroup's per
// group, broadcast) but only its own 4 columns of the other. Per 4-deep k step a
// lane then loads 12 vec4s for 1,024 FMAs, where the 8×8-per-lane kernels load
// 9 for 256: on a driver whose every storage load is a loop over the lanes
// (llvmpipe before Mesa 23), loads are what the time goes to.

// A lane's accumulators for one group of 8 rows and its 4 columns, each as
// acc[column][row]: `lo` rows 0..3, `hi` rows 4..7 of the group.
struct Rows8 {
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
}

// Add rows 0..3 (`lo`) and 4..7 (`hi`) of the shared operand over k..k+3, each
// as m[row] (rows_lo's layout), times the lane's columns `b` (m[column] over k).
// transpose(x) * y in sight of the product, as the 8×8 kernels write it, so the
// same bits.
fn add_rows8(acc: ptr<function, Rows8>, lo: mat4x4<f32>, hi: mat4x4<f32>, b: mat4x4<f32>) {
    (*acc).lo += transpose(lo) * b;
    (*acc).hi += transpose(hi) * b;
}
