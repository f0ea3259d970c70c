// The CPU-driver attention (wgsl/attention.wgsl, TILED = false) with each key and
// value row read once per 8-lane subgroup instead of once per lane. Compiled after
// wgsl/attention.wgsl and wgsl/subgroup.wgsl, whose Params, bindings, state and
// helpers it uses; a separate file for the reason wgsl/matmul_subgroup.wgsl gives.
//
// The 8 lanes of a workgroup (WG = 8, one subgroup) are 8 query rows of one head and
// attend the same keys. lavapipe turns each lane's load into its own load even when
// the addresses match, so here lane t loads row j0 + t of k (then of v), 4 floats at a
// time, and subgroupBroadcast hands the 8 rows round: 8 keys per step, each load
// feeding 8 lanes. Needs 8-lane subgroups (the op checks).

// Fold keys j0 .. j0+7 into the running softmax of query row i; `lane` is this
// invocation's lane, so it fetches row j0 + lane (clamped; keys past Lk are masked).
fn attend8(j0: u32, i: u32, lane: u32) {
    let mine = kv_base + min(j0 + lane, p.lk - 1u) * row_stride();
    var s_lo = vec4(0.0); // scores of keys j0 .. j0+3
    var s_hi = vec4(0.0); // and j0+4 .. j0+7
    for (var d = 0u; d < DH / 4u; d++) {
        let kd = k_at(mine + d);
        // v * M: component c is dot(v, column c), column c = key j0 + c's d-th vec4.
        s_lo += q_row[d] * rows_lo(kd);
        s_hi += q_row[d] * rows_hi(kd);
    }
    let j_lo = vec4(j0) + vec4(0u, 1u, 2u, 3u);
    let j_hi = j_lo + vec4(4u);
    var valid_lo = j_lo < vec4(p.lk);
    var valid_hi = j_hi < vec4(p.lk);
    if (CAUSAL) {
        valid_lo = valid_lo & (j_lo <= vec4(i));
        valid_hi = valid_hi & (j_hi <= vec4(i));
    }
    s_lo = select(vec4(LOWEST), s_lo, valid_lo);
    s_hi = select(vec4(LOWEST), s_hi, valid_hi);
    let s_max = max(s_lo, s_hi);
    let m_new = max(m, max(max(s_max.x, s_max.y), max(s_max.z, s_max.w)));
    let correction = exp(m - m_new);
    let e_lo = select(vec4(0.0), exp(s_lo - m_new), valid_lo);
    let e_hi = select(vec4(0.0), exp(s_hi - m_new), valid_hi);
    l = l * correction + dot(e_lo + e_hi, vec4(1.0));
    for (var d = 0u; d < DH / 4u; d++) {
        let vd = v_at(mine + d);
        // M * e: the value rows (columns) weighted by their probabilities.
        acc[d] = acc[d] * correction + rows_lo(vd) * e_lo + rows_hi(vd) * e_hi;
    }
    m = m_new;
}

@compute @workgroup_size(WG)
fn attention_cpu_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // Padding rows stay too (start_row): every lane takes part in the broadcasts.
    let query = start_row(wid, lid);
    // The same bound for every lane (the broadcasts need them all); the causal
    // mask does the rest.
    let k_end = workgroup_keys(wid);
    for (var j = 0u; j < k_end; j += 8u) { attend8(j, query.row, lid); }
    write_row(query);
}
