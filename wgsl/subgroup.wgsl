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
