// matmul_cpu_vec4 (wgsl/matmul.wgsl) with the shared operand read once per
// SIMD group instead of once per lane. Compiled after wgsl/matmul.wgsl and
// wgsl/subgroup.wgsl, whose Params, bindings and helpers it uses. A separate
// file because a module that calls subgroup builtins fails to compile on
// adapters without the feature; the op only picks it where SUBGROUP exists and
// subgroups are exactly 8 lanes (lavapipe on AVX2/AVX-512 hosts).
//
// Why: lavapipe turns every storage-buffer load into a loop over the 8 lanes
// with a bounds check and branch per lane, even when all lanes read the same
// address. In matmul_cpu_vec4 the 8 lanes of a group share their rows of
// op(a), so each A word was fetched 8 times. Here lane l fetches row i + l
// and subgroupBroadcast hands it to the others (an extract and a splat).
//
// With TRANSPOSE_A (a stored [K, M]: a Transformer2DModel's proj_in reading
// NCHW activations), rows i..i+7 of op(a) over k..k+3 are two vec4s of each of
// a's rows k..k+3: lane l fetches a[k + l / 2, i + 4 (l % 2) ..], and the
// broadcasts of the even and odd lanes are the blocks matmul_cpu_vec4's
// a_block4 loads, so both kernels compute the same bits.
// Workgroup 8×8: one subgroup per y.

// This lane's share of op(a)'s rows i..i+7 over k..k+3: row i + lane, or with
// TRANSPOSE_A half a row of a: a[k + lane / 2, i + 4 (lane % 2)..] (see the
// header).
fn a_share(batch: u32, i: u32, k: u32, lane: u32) -> vec4<f32> {
    if (TRANSPOSE_A) {
        return a4_at((batch * p.stride_a + (k + lane / 2u) * p.m + clamp_m(i + 4u * (lane % 2u))) / 4u);
    }
    return a4_at((clamp_m(i + lane) * p.k + batch * p.stride_a + k) / 4u);
}

// op(a)'s rows i..i+3 (a_lo) and i+4..i+7 (a_hi) over k..k+3, each as m[row]
// (a_block4's layout), from the lanes' shares.
fn a_lo(mine: vec4<f32>) -> mat4x4<f32> {
    if (TRANSPOSE_A) {
        return transpose(even_lanes(mine));
    }
    return rows_lo(mine);
}

fn a_hi(mine: vec4<f32>) -> mat4x4<f32> {
    if (TRANSPOSE_A) {
        return transpose(odd_lanes(mine));
    }
    return rows_hi(mine);
}

@compute @workgroup_size(8, 8)
fn matmul_cpu_subgroup(
    @builtin(global_invocation_id) gid: vec3<u32>,
    // With 8-lane subgroups and 8 threads along x, a thread's lane is its x.
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let batch = gid.z;
    let i = gid.y * 8u;
    // Uniform across the subgroup (one y per subgroup), so no lane is left
    // out of the broadcasts below; lanes past N compute clamped columns and
    // drop them at the store.
    if (i >= p.m) {
        return;
    }
    let j = gid.x * 8u;
    var acc = Acc8x8();
    for (var k = 0u; k < loop_bound(p.k, lid.x); k += 4u) {
        let mine = a_share(batch, i, k, lid.x);
        accumulate_8x8(&acc, a_lo(mine), a_hi(mine), batch, k, j);
    }
    store_8x8(batch, i, j, acc);
}

// ---------------------------------------------------------------------------
// The tall tile (wgsl/tall.wgsl): a subgroup owns TALL_BLOCK rows and 32
// columns, lane l columns j + 4l..j + 4l + 3. Same bits as matmul_cpu_vec4.

// Rows `row`..+7 of the block times the lane's columns `b`, from the lanes' shares.
fn add_share(group: Rows8, row: u32, k: u32, b: mat4x4<f32>) -> Rows8 {
    var acc = group;
    let mine = a_share(tall_at.item, tall_at.row + row, k, tall_at.lane);
    add_rows8(&acc, a_lo(mine), a_hi(mine), b);
    return acc;
}

fn store_rows(row: u32, acc: Rows8) {
    let i = tall_at.row + row;
    store_block(tall_at.item, i, tall_at.col, transpose(acc.lo));
    store_block(tall_at.item, i + 4u, tall_at.col, transpose(acc.hi));
}

@compute @workgroup_size(8, 8)
fn matmul_cpu_tall(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let batch = gid.z;
    let i = gid.y * TALL_BLOCK;
    // Uniform across the subgroup, as in matmul_cpu_subgroup.
    if (i >= p.m) {
        return;
    }
    let j = gid.x * 4u;
    tall_at = TallAt(batch, i, j, lid.x);
    var acc = Tall();
    for (var k = 0u; k < loop_bound(p.k, lid.x); k += 4u) {
        add_tall(&acc, k, b_block4(batch, k, j));
    }
    store_tall(acc);
}
