// wgsl/attention.wgsl's attention on cooperative matrices (tensor cores): q k^T
// and p v as FRAG×FRAG fragments, f16 operands, f32 accumulation. Compiled after
// wgsl/coop8.wgsl or wgsl/coop16.wgsl (CoopA/B/C, FRAG) and wgsl/attention.wgsl,
// whose Params, bindings, DH, CAUSAL, LOWEST, kv_base and row_stride it uses.
//
// A fragment's elements are opaque to the lanes, so the output cannot be
// rescaled in place as the online softmax of attention.wgsl does whenever the
// running max grows. Instead two passes over the keys: the first finds each
// row's max m and sum l of exp(s - m) (scores through workgroup memory, one
// row per lane), the second computes p = exp(s - m) / l, final, and adds p v
// into the output fragments, which never need rescaling. q k^T is paid twice
// (3 GEMMs instead of 2); the [Lq, Lk] scores still never exist in memory.
//
// Per workgroup: BQ = 64 query rows of one head, 64 / FRAG subgroups of FRAG
// rows each (COOP_THREADS = subgroups × SUBGROUP_SIZE lanes, set by the op).
// Keys come BKC at a time, staged as f16 [BKC, DHP] (keys, then values in the
// same tile); the head dim is zero-padded to DHP, a multiple of FRAG (SD's 40 ->
// 48 on 16×16 fragments). 32,256 bytes of workgroup memory at DH <= 160.
// Subgroup s is invocations s·SUBGROUP_SIZE.. (as wgsl/gemm_coop.wgsl assumes);
// pointer indices and strides of coopLoad/coopStore are named `let`s (naga).

override SUBGROUP_SIZE: u32 = 32u;
override COOP_THREADS: u32 = 128u;

const BQ: u32 = 64u;
const BKC: u32 = 16u;
const DHP_MAX: u32 = 160u;

var<workgroup> q_s: array<f16, 10240>;  // [BQ, DHP] q * scale, row-major
var<workgroup> kv_s: array<f16, 2560>;  // [BKC, DHP] keys, then values, row-major
var<workgroup> s_s: array<f32, 1024>;   // [BQ, BKC] scores; at the end, output fragments
var<workgroup> p_s: array<f16, 1024>;   // [BQ, BKC] exp(s - m) / l
var<workgroup> m_s: array<f32, 64>;     // per row: max score
var<workgroup> l_s: array<f32, 64>;     // per row: sum of exp(s - m)

fn head_dim_padded() -> u32 {
    return (DH + FRAG - 1u) / FRAG * FRAG;
}

// Stage `rows` rows of q (times scale) or of k/v, starting at vec4 `base` with
// `count` valid rows, as f16 [rows, DHP] in q_s (to_q) or kv_s; zeros past
// `count` and past DH.
fn coop_stage_rows(to_q: bool, src: u32, base: u32, rows: u32, count: u32, lid: u32) {
    let dhp4 = head_dim_padded() / 4u;
    for (var e = lid; e < rows * dhp4; e += COOP_THREADS) {
        let r = e / dhp4;
        let d4 = e % dhp4;
        var x = vec4(0.0);
        if (r < count && d4 < DH / 4u) {
            let at = base + r * row_stride() + d4;
            if (src == 0u) { x = q_at(at) * p.scale; }
            else if (src == 1u) { x = k_at(at); }
            else { x = v_at(at); }
        }
        let h = vec4<f16>(clamp(x, vec4(-65504.0), vec4(65504.0)));
        let o = e * 4u;
        if (to_q) {
            q_s[o] = h.x; q_s[o + 1u] = h.y; q_s[o + 2u] = h.z; q_s[o + 3u] = h.w;
        } else {
            kv_s[o] = h.x; kv_s[o + 1u] = h.y; kv_s[o + 2u] = h.z; kv_s[o + 3u] = h.w;
        }
    }
}

// Keys or values t0 .. t0 + BKC of this head into kv_s (src 1: k, 2: v).
fn coop_stage_keys(src: u32, t0: u32, lid: u32) {
    let count = min(BKC, p.lk - t0);
    coop_stage_rows(false, src, kv_base + t0 * row_stride(), BKC, count, lid);
}

// Subgroup sg's scores against the staged keys: its FRAG rows × BKC keys into s_s.
fn coop_scores(sg: u32) {
    let dhp = head_dim_padded();
    for (var kf = 0u; kf < BKC / FRAG; kf++) {
        var acc = CoopC();
        for (var d0 = 0u; d0 < dhp; d0 += FRAG) {
            let q_at = sg * FRAG * dhp + d0;
            let k_at = kf * FRAG * dhp + d0;
            let stride = dhp;
            // k^T's column j is key j's row: column-major with leading dim DHP.
            let a = coopLoadT<CoopA>(&q_s[q_at], stride);
            let b = coopLoad<CoopB>(&kv_s[k_at], stride);
            acc = coopMultiplyAdd(a, b, acc);
        }
        let s_at = sg * FRAG * BKC + kf * FRAG;
        let s_stride = BKC;
        coopStoreT(acc, &s_s[s_at], s_stride);
    }
}

// Keys t0 .. t0 + BKC staged and every subgroup's scores against them in s_s,
// with the barriers either side (called by every invocation).
fn coop_block_scores(t0: u32, lid: u32, sg: u32) {
    coop_stage_keys(1u, t0, lid);
    workgroupBarrier();
    coop_scores(sg);
    workgroupBarrier();
}

// Whether query i0 + r attends key j (in range, and causal order if asked).
fn coop_valid(i: u32, j: u32) -> bool {
    return j < p.lk && (!CAUSAL || j <= i);
}

@compute @workgroup_size(COOP_THREADS)
fn attention_coop(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let b = wid.y / p.heads;
    let head = wid.y % p.heads;
    let i0 = wid.x * BQ;
    let sg = lid / SUBGROUP_SIZE;
    kv_base = b * p.lk * row_stride() + head * (DH / 4u);
    let q_base = (b * p.lq + i0) * row_stride() + head * (DH / 4u);
    coop_stage_rows(true, 0u, q_base, BQ, min(BQ, p.lq - i0), lid);
    if (lid < BQ) {
        m_s[lid] = LOWEST;
        l_s[lid] = 0.0;
    }
    var k_end = loop_bound(p.lk, wid.x);
    if (CAUSAL) { k_end = min(p.lk, i0 + BQ); }

    // Pass 1: each row's max and sum of exp(s - max), online over the blocks.
    for (var t0 = 0u; t0 < k_end; t0 += BKC) {
        coop_block_scores(t0, lid, sg);
        if (lid < BQ) {
            var m = m_s[lid];
            var l = l_s[lid];
            for (var j = 0u; j < BKC; j++) {
                if (coop_valid(i0 + lid, t0 + j)) {
                    let s = s_s[lid * BKC + j];
                    let m_new = max(m, s);
                    l = l * exp(m - m_new) + exp(s - m_new);
                    m = m_new;
                }
            }
            m_s[lid] = m;
            l_s[lid] = l;
        }
        workgroupBarrier();
    }

    // Pass 2: the final weights times the values, accumulated in fragments.
    let dhp = head_dim_padded();
    var o: array<CoopC, DHP_MAX / FRAG>;
    for (var c = 0u; c < dhp / FRAG; c++) { o[c] = CoopC(); }
    for (var t0 = 0u; t0 < k_end; t0 += BKC) {
        coop_block_scores(t0, lid, sg);
        if (lid < BQ) {
            let m = m_s[lid];
            let inv = 1.0 / l_s[lid];
            for (var j = 0u; j < BKC; j++) {
                let w = exp(s_s[lid * BKC + j] - m) * inv;
                p_s[lid * BKC + j] = select(0.0h, f16(w), coop_valid(i0 + lid, t0 + j));
            }
        }
        coop_stage_keys(2u, t0, lid); // the keys' last reader was coop_scores
        workgroupBarrier();
        for (var kk = 0u; kk < BKC; kk += FRAG) {
            let p_at = sg * FRAG * BKC + kk;
            let p_stride = BKC;
            let a = coopLoadT<CoopA>(&p_s[p_at], p_stride);
            for (var c = 0u; c < dhp / FRAG; c++) {
                let v_at = kk * dhp + c * FRAG;
                let v_stride = dhp;
                let bm = coopLoadT<CoopB>(&kv_s[v_at], v_stride);
                o[c] = coopMultiplyAdd(a, bm, o[c]);
            }
        }
        workgroupBarrier();
    }

    // Out through this subgroup's FRAG×BKC slice of s_s, a vec4 per lane at a time.
    let lane = lid % SUBGROUP_SIZE;
    for (var c = 0u; c < dhp / FRAG; c++) {
        let at = sg * FRAG * BKC;
        let stride = FRAG;
        coopStoreT(o[c], &s_s[at], stride);
        workgroupBarrier();
        for (var e = lane; e < FRAG * FRAG / 4u; e += SUBGROUP_SIZE) {
            let r = e / (FRAG / 4u);
            let d = c * FRAG + (e % (FRAG / 4u)) * 4u;
            let i = i0 + sg * FRAG + r;
            if (i < p.lq && d < DH) {
                let x = at + r * FRAG + d - c * FRAG;
                out_set(q_base + (sg * FRAG + r) * row_stride() + d / 4u,
                        vec4(s_s[x], s_s[x + 1u], s_s[x + 2u], s_s[x + 3u]));
            }
        }
        workgroupBarrier();
    }
}
