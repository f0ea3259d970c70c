// conv2d_cpu_vec4 (wgsl/conv2d.wgsl) with the weight read once per SIMD group
// instead of once per lane, as wgsl/matmul_subgroup.wgsl does for matmul (read
// its header for why, and why this is a separate file). Compiled after
// wgsl/conv2d.wgsl and wgsl/subgroup.wgsl, whose Params, bindings and helpers
// it uses.
//
// Thread (x, y) owns output channels CO_BLOCK·y.. (CO_BLOCK of them) and pixels
// 2x, 2x+1; the 8 lanes of a subgroup (one y) share the channels: lane l loads
// CO_BLOCK / 8 of the weight rows, 4 floats of k at a time, and
// subgroupBroadcast hands them round. Each gathered input value (a scalar load,
// the costly part) then feeds CO_BLOCK FMAs; 32×2 measured faster than 16×4 and
// 8×4 on lavapipe. Needs K % 4 == 0 and 8-lane subgroups (the op checks both).

// Output channels per thread: 32, or 16 / 8 for narrow layers (e.g. 16 channels
// at full resolution, 3 at conv_out), where a 32-channel block would spend half
// or more of its FMAs on clamped duplicate rows (conv2d_cpu_tall below takes
// TALL_BLOCK). The unused accumulators and loads fold away at pipeline creation.
override CO_BLOCK: u32 = 32u;

// cols[k..k+3, the pixels at o0 and o1] as m[c] over k (K % 4 == 0); `t` is
// column k's tap on entry and column k + 4's on return.
fn cols_pair(n: u32, t: ptr<function, Tap>, o0: Origin, o1: Origin) -> mat2x4<f32> {
    var m: mat4x2<f32>;
    for (var kk = 0u; kk < 4u; kk++) {
        m[kk] = vec2(gather(n, *t, o0), gather(n, *t, o1));
        *t = next_tap(*t);
    }
    return transpose(m);
}

// acc[c][r] = output (channel co + r, pixel pix + c).
fn store_2x4(n: u32, co: u32, pix: u32, acc: mat2x4<f32>) {
    for (var c = 0u; c < 2u; c++) {
        for (var r = 0u; r < 4u; r++) {
            store(n, co + r, pix + c, acc[c][r]);
        }
    }
}

@compute @workgroup_size(8, 8)
fn conv2d_cpu_subgroup(
    @builtin(global_invocation_id) gid: vec3<u32>,
    // With 8-lane subgroups and 8 threads along x, a thread's lane is its x.
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let n = gid.z;
    let co = gid.y * CO_BLOCK;
    // Uniform across the subgroup (one y per subgroup): every lane stays for
    // the broadcasts; lanes past the last pixel compute clamped ones and drop them.
    if (co >= p.cout) {
        return;
    }
    let pix = gid.x * 2u;
    let o0 = corner(n, min(pix, p.p - 1u));
    let o1 = corner(n, min(pix + 1u, p.p - 1u));
    // Lane l fetches weight rows co + l, co + 8 + l, co + 16 + l, co + 24 + l
    // (the first CO_BLOCK / 8 of them).
    let row = p.k / 4u;
    let m0 = min(co + lid.x, p.cout - 1u) * row;
    let m1 = min(co + 8u + lid.x, p.cout - 1u) * row;
    let m2 = min(co + 16u + lid.x, p.cout - 1u) * row;
    let m3 = min(co + 24u + lid.x, p.cout - 1u) * row;
    var t = Tap(0u, 0u, 0u, 0u);
    var a0 = mat2x4<f32>(); // channels co..co+3, as acc[pixel][channel]
    var a1 = mat2x4<f32>();
    var a2 = mat2x4<f32>();
    var a3 = mat2x4<f32>();
    var a4 = mat2x4<f32>();
    var a5 = mat2x4<f32>();
    var a6 = mat2x4<f32>();
    var a7 = mat2x4<f32>();
    for (var k = 0u; k < loop_bound(p.k, lid.x); k += 4u) {
        let xb = cols_pair(n, &t, o0, o1);
        let w0 = weight4_at(m0 + k / 4u);
        a0 += transpose(rows_lo(w0)) * xb;
        a1 += transpose(rows_hi(w0)) * xb;
        if (CO_BLOCK >= 16u) {
            let w1 = weight4_at(m1 + k / 4u);
            a2 += transpose(rows_lo(w1)) * xb;
            a3 += transpose(rows_hi(w1)) * xb;
        }
        if (CO_BLOCK >= 32u) {
            let w2 = weight4_at(m2 + k / 4u);
            let w3 = weight4_at(m3 + k / 4u);
            a4 += transpose(rows_lo(w2)) * xb;
            a5 += transpose(rows_hi(w2)) * xb;
            a6 += transpose(rows_lo(w3)) * xb;
            a7 += transpose(rows_hi(w3)) * xb;
        }
    }
    store_2x4(n, co, pix, a0);
    store_2x4(n, co + 4u, pix, a1);
    if (CO_BLOCK >= 16u) {
        store_2x4(n, co + 8u, pix, a2);
        store_2x4(n, co + 12u, pix, a3);
    }
    if (CO_BLOCK >= 32u) {
        store_2x4(n, co + 16u, pix, a4);
        store_2x4(n, co + 20u, pix, a5);
        store_2x4(n, co + 24u, pix, a6);
        store_2x4(n, co + 28u, pix, a7);
    }
}

// ---------------------------------------------------------------------------
// The tall tile (wgsl/tall.wgsl): a subgroup owns TALL_BLOCK output channels
// and 32 pixels, lane l pixels pix + 4l..pix + 4l + 3 (its own gathers,
// cols_block); lane l loads weight row co + 8g + l of each group g and the
// broadcasts hand every lane all of them. Same bits as conv2d_cpu_vec4.

// Channels `row`..+7 of the block over k..k+3 times the lane's pixels `xb`.
fn add_share(group: Rows8, row: u32, k: u32, xb: mat4x4<f32>) -> Rows8 {
    var acc = group;
    let co = min(tall_at.row + row + tall_at.lane, p.cout - 1u);
    let w = weight4_at(co * (p.k / 4u) + k / 4u);
    add_rows8(&acc, rows_lo(w), rows_hi(w), xb);
    return acc;
}

// acc is [pixel][channel] already (see add_rows8), as store_block wants.
fn store_rows(row: u32, acc: Rows8) {
    let co = tall_at.row + row;
    store_block(tall_at.item, co, tall_at.col, acc.lo);
    store_block(tall_at.item, co + 4u, tall_at.col, acc.hi);
}

@compute @workgroup_size(8, 8)
fn conv2d_cpu_tall(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let n = gid.z;
    let co = gid.y * TALL_BLOCK;
    // Uniform across the subgroup, as in conv2d_cpu_subgroup.
    if (co >= p.cout) {
        return;
    }
    let pix = gid.x * 4u;
    tall_at = TallAt(n, co, pix, lid.x);
    let origins = corners(n, pix);
    var t = Tap(0u, 0u, 0u, 0u);
    var acc = Tall();
    for (var k = 0u; k < loop_bound(p.k, lid.x); k += 4u) {
        add_tall(&acc, k, cols_block(n, k, &t, origins));
    }
    store_tall(acc);
}
