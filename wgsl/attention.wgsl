// Multi-head scaled dot-product attention, fused (flash-attention style):
// softmax(q k^T * scale [+ causal mask]) v without materialising the [Lq, Lk]
// scores. Each invocation owns one query row of one head and keeps a running max
// `m`, a running sum `l` of exp(s - m) and an accumulator of exp(s - m) * v,
// rescaling both whenever the max grows (Milakov & Gimelshein 2018; FlashAttention).
//
// Layout as diffusers/transformers produce it after the q/k/v projections, heads
// interleaved in the last dim so no permute is needed:
//   q, out [B, Lq, H*Dh]; k, v [B, Lk, H*Dh]; head h is columns h*Dh .. (h+1)*Dh.
//
// Launch: workgroup (x, y) = (block of WG query rows, batch*H + head). The rows of a
// workgroup share their keys and values, so:
// - TILED (GPUs): the workgroup stages BK keys and values at a time in workgroup
//   memory, loaded cooperatively, with a barrier either side;
// - otherwise (CPU drivers): every lane reads k and v straight from the buffer and
//   the caches do what the tile would; no barriers. lavapipe still issues one load
//   per lane for the shared address, so where subgroups are 8 lanes
//   wgsl/attention_subgroup.wgsl reads each row once per subgroup instead (5-8x faster).

// Head dim; a multiple of 4 (rows are read as vec4), at most 4 * DH4_MAX but in
// attention_wide (a multiple of its DV there).
override DH: u32 = 64u;
// Query rows per workgroup, one per invocation.
override WG: u32 = 64u;
override TILED: bool = false;
// Keys per tile (TILED): a multiple of 4 with BK * DH <= 4 * TILE4.
override BK: u32 = 32u;
// Query i attends keys j <= i only (torch's is_causal: top-left aligned), as in
// CLIP's text encoder.
override CAUSAL: bool = false;

const DH4_MAX: u32 = 40u; // Dh up to 160, SD 1.x's deepest attention
const TILE4: u32 = 512u;  // vec4s per K or V tile: 2 x 8 KiB, the WebGPU baseline
// Masked scores: below any real score but finite, so `s - m` never makes a NaN.
const LOWEST: f32 = -3.0e38;

struct Params {
    heads: u32,
    lq: u32,
    lk: u32,
    scale: f32, // usually 1/sqrt(Dh)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<act>>;         // [B, Lq, H*Dh/4]
@group(0) @binding(2) var<storage, read> k: array<vec4<act>>;         // [B, Lk, H*Dh/4]
@group(0) @binding(3) var<storage, read> v: array<vec4<act>>;         // [B, Lk, H*Dh/4]
@group(0) @binding(4) var<storage, read_write> out: array<vec4<act>>; // [B, Lq, H*Dh/4]

// The operands' vec4s widened to f32, and the output's rounded to `act`
// (wgsl/act_f32.wgsl): scores, softmax and sums stay in f32.
fn q_at(i: u32) -> vec4<f32> { return vec4<f32>(q[i]); }
fn k_at(i: u32) -> vec4<f32> { return vec4<f32>(k[i]); }
fn v_at(i: u32) -> vec4<f32> { return vec4<f32>(v[i]); }
fn out_set(i: u32, y: vec4<f32>) { out[i] = vec4<act>(y); }

var<workgroup> k_tile: array<vec4<f32>, TILE4>; // [BK, Dh/4]
var<workgroup> v_tile: array<vec4<f32>, TILE4>; // [BK, Dh/4]

// This invocation's state.
var<private> q_row: array<vec4<f32>, DH4_MAX>; // its query row, times scale
var<private> acc: array<vec4<f32>, DH4_MAX>;   // sum_j exp(s_j - m) v_j
var<private> m: f32;                           // max score so far
var<private> l: f32;                           // sum_j exp(s_j - m)
var<private> kv_base: u32;                     // vec4 index of key 0 of this head

fn row_stride() -> u32 {
    return p.heads * DH / 4u;
}

// Key j's d-th vec4: from the current tile (whose start is a multiple of BK),
// or from the buffer, clamped to the last key (keys past Lk are masked anyway).
fn key(j: u32, d: u32) -> vec4<f32> {
    if (TILED) { return k_tile[(j % BK) * (DH / 4u) + d]; }
    return k_at(kv_base + min(j, p.lk - 1u) * row_stride() + d);
}

fn value(j: u32, d: u32) -> vec4<f32> {
    if (TILED) { return v_tile[(j % BK) * (DH / 4u) + d]; }
    return v_at(kv_base + min(j, p.lk - 1u) * row_stride() + d);
}

// Fold keys j0 .. j0+3 into the running softmax of query row i. Four at a time
// so the rescale of `acc` (one exp, Dh multiplies) is paid once per four keys.
fn attend4(j0: u32, i: u32) {
    var s = vec4(0.0);
    for (var d = 0u; d < DH / 4u; d++) {
        let qd = q_row[d];
        s += vec4(dot(qd, key(j0, d)), dot(qd, key(j0 + 1u, d)),
                  dot(qd, key(j0 + 2u, d)), dot(qd, key(j0 + 3u, d)));
    }
    let f = fold4(s, j0, i);
    let e = f.e;
    for (var d = 0u; d < DH / 4u; d++) {
        acc[d] = acc[d] * f.correction + e.x * value(j0, d) + e.y * value(j0 + 1u, d)
               + e.z * value(j0 + 2u, d) + e.w * value(j0 + 3u, d);
    }
}

// Weights exp(s - m) of four keys, and the factor that rescales what came before.
struct Fold {
    e: vec4<f32>,
    correction: f32,
}

// Fold the scores `s` of keys j0 .. j0+3 into query row i's running max `m` and
// sum `l` (keys past Lk, or after i when causal, weigh 0).
fn fold4(scores: vec4<f32>, j0: u32, i: u32) -> Fold {
    let j = vec4(j0) + vec4(0u, 1u, 2u, 3u);
    var valid = j < vec4(p.lk);
    if (CAUSAL) { valid = valid & (j <= vec4(i)); }
    let s = select(vec4(LOWEST), scores, valid);
    let m_new = max(m, max(max(s.x, s.y), max(s.z, s.w)));
    let correction = exp(m - m_new);
    let e = select(vec4(0.0), exp(s - m_new), valid);
    l = l * correction + (e.x + e.y + e.z + e.w);
    m = m_new;
    return Fold(e, correction);
}

// Copy keys and values t0 .. t0+BK of this head into the tiles (zeros past Lk).
fn load_tile(t0: u32, lid: u32) {
    for (var idx = lid; idx < BK * (DH / 4u); idx += WG) {
        let j = t0 + idx / (DH / 4u);
        let src = kv_base + min(j, p.lk - 1u) * row_stride() + idx % (DH / 4u);
        k_tile[idx] = select(vec4(0.0), k_at(src), j < p.lk);
        v_tile[idx] = select(vec4(0.0), v_at(src), j < p.lk);
    }
}

// The query row an invocation owns: `i` = wid.x * WG + lid, which may be a
// padding row past Lq; `row`, the row it computes on (Lq-1 for padding rows);
// `base`, that row's vec4 index in q and out.
struct QueryRow {
    i: u32,
    row: u32,
    base: u32,
}

// Clear this invocation's state and load its query row (times scale) for the
// head of workgroup row `wid.y`. Padding rows past Lq compute on row Lq-1 and
// skip the write (write_row); they do not return early, since TILED workgroups
// must all reach every barrier and subgroup lanes every broadcast.
fn start_row(wid: vec3<u32>, lid: u32) -> QueryRow {
    let i = wid.x * WG + lid;
    let row = min(i, p.lq - 1u);
    let b = wid.y / p.heads;
    let h = wid.y % p.heads;
    let q_base = (b * p.lq + row) * row_stride() + h * (DH / 4u);
    kv_base = b * p.lk * row_stride() + h * (DH / 4u);
    for (var d = 0u; d < DH / 4u; d++) {
        q_row[d] = q_at(q_base + d) * p.scale;
        acc[d] = vec4(0.0);
    }
    m = LOWEST;
    l = 0.0;
    return QueryRow(i, row, q_base);
}

// Keys any row of workgroup `wid` attends: with a causal mask, none past its last row.
fn workgroup_keys(wid: vec3<u32>) -> u32 {
    if (CAUSAL) {
        return min(p.lk, (wid.x + 1u) * WG);
    }
    return loop_bound(p.lk, wid.x);
}

// out = acc / l for the query, unless it is a padding row past Lq.
fn write_row(query: QueryRow) {
    if (query.i < p.lq) {
        let inv = 1.0 / l;
        for (var d = 0u; d < DH / 4u; d++) { out_set(query.base + d, acc[d] * inv); }
    }
}

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // Padding rows stay too (start_row): TILED workgroups must all reach every barrier.
    let query = start_row(wid, lid);
    var k_end = workgroup_keys(wid);
    if (TILED) {
        for (var t0 = 0u; t0 < k_end; t0 += BK) {
            load_tile(t0, lid);
            workgroupBarrier();
            for (var j = t0; j < min(t0 + BK, k_end); j += 4u) { attend4(j, query.row); }
            workgroupBarrier(); // everyone is done with the tile before it is overwritten
        }
    } else {
        if (CAUSAL) { k_end = min(p.lk, query.row + 1u); }
        for (var j = 0u; j < k_end; j += 4u) { attend4(j, query.row); }
    }
    write_row(query);
}

// Heads wider than the registers hold (DH > 4 * DH4_MAX: the VAE mid block's one
// head of 512 channels): the same online softmax, but an invocation owns DV of its
// query row's DH output columns (workgroup z picks which), so `acc` fits. It reads
// its query row from the buffer, and each of the DH / DV column slices recomputes
// the row's scores (q k^T paid DH / DV times); memory stays O(Lq * DH), the
// [Lq, Lk] scores never exist. Keys and values come straight from the buffer: a
// tile of DH-wide rows would hold too few keys to pay for its barriers.
override DV: u32 = 128u;

// Fold keys j0 .. j0+3 into query row i, whose q starts at vec4 `q_base`, for
// output columns v0 .. v0 + DV/4 (vec4s).
fn attend4_wide(j0: u32, i: u32, q_base: u32, v0: u32) {
    let last = p.lk - 1u;
    let r = kv_base + min(vec4(j0) + vec4(0u, 1u, 2u, 3u), vec4(last)) * row_stride();
    var s = vec4(0.0);
    for (var d = 0u; d < DH / 4u; d++) {
        let qd = q_at(q_base + d) * p.scale;
        s += vec4(dot(qd, k_at(r.x + d)), dot(qd, k_at(r.y + d)), dot(qd, k_at(r.z + d)), dot(qd, k_at(r.w + d)));
    }
    let f = fold4(s, j0, i);
    let e = f.e;
    for (var d = v0; d < v0 + DV / 4u; d++) {
        acc[d - v0] = acc[d - v0] * f.correction + e.x * v_at(r.x + d) + e.y * v_at(r.y + d)
                    + e.z * v_at(r.z + d) + e.w * v_at(r.w + d);
    }
}

@compute @workgroup_size(WG)
fn attention_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x * WG + lid;
    if (i >= p.lq) { return; } // no barriers below
    let b = wid.y / p.heads;
    let h = wid.y % p.heads;
    let q_base = (b * p.lq + i) * row_stride() + h * (DH / 4u);
    kv_base = b * p.lk * row_stride() + h * (DH / 4u);
    let v0 = wid.z * (DV / 4u);
    for (var d = 0u; d < DV / 4u; d++) { acc[d] = vec4(0.0); }
    m = LOWEST;
    l = 0.0;
    var k_end = loop_bound(p.lk, i);
    if (CAUSAL) { k_end = min(p.lk, i + 1u); }
    for (var j = 0u; j < k_end; j += 4u) { attend4_wide(j, i, q_base, v0); }
    let inv = 1.0 / l;
    for (var d = 0u; d < DV / 4u; d++) { out_set(q_base + v0 + d, acc[d] * inv); }
}
