// Row reductions: group_norm, layer_norm, l2_normalize and softmax.
//
// Each op reduces a contiguous *segment* of the input and rewrites it:
// - group_norm on [N, C, *spatial]: segment (n, g) is channels g*C/G .. (g+1)*C/G at
//   every spatial position, contiguous in NC* order, len = (C/G) * spatial;
// - layer_norm, l2_normalize, softmax on [*, D]: segment = row, len = D.
//
// Two ways to spread segments over invocations, fixed per pipeline by SERIAL:
// - SERIAL (lavapipe): invocation = segment, sequential loops, no barriers. A CPU
//   driver runs a workgroup's invocations as SIMD lanes of one core, so barriers
//   cost coroutine switches and its caches stand in for workgroup memory.
// - otherwise (GPUs): workgroup = segment, WG invocations stride through it
//   (contiguous loads across lanes) and combine partial results with a tree
//   reduction in workgroup memory.
// Barriers sit only in `reduce`, which every invocation of a workgroup reaches
// (inactive lanes clamp their reads and skip their writes instead of returning).

override SERIAL: bool = false;
// Invocations per workgroup: a power of two, at most 256 (the size of `partial`).
override WG: u32 = 256u;
// group_norm: apply SiLU after the affine (diffusers' ResnetBlock2D: norm, then act).
override SILU: bool = false;

const SUM: u32 = 0u;
const MAX: u32 = 1u;
// Below any f32 score, but finite so `x - LOWEST` cannot make a NaN.
const LOWEST: f32 = -3.0e38;

struct Params {
    segments: u32,
    len: u32,      // elements per segment
    spatial: u32,  // group_norm: elements per channel (H*W)
    groups: u32,   // group_norm: segments per batch item (G)
    scalar: f32,   // eps for the norms, the scale on x for softmax
    chunk_len: u32, // split group norm: elements per chunk of a segment
    chunks: u32,    // split group norm: chunks per segment
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;        // [segments, len]
@group(0) @binding(2) var<storage, read_write> out: array<act>; // [segments, len]
// Only bound by group_norm and layer_norm.
@group(0) @binding(3) var<storage, read> weight: array<f32>;   // [C] or [D]
@group(0) @binding(4) var<storage, read> bias: array<f32>;     // [C] or [D]
// The same buffers 4 elements per entry (group_norm4, layer_norm4 only).
@group(0) @binding(1) var<storage, read> x4: array<vec4<act>>;
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<act>>;
@group(0) @binding(3) var<storage, read> weight4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias4: array<vec4<f32>>;

// Only bound by the split group norm: each chunk's mean and variance, written
// by group_norm_moments (binding 2) and read by group_norm_apply (binding 5).
@group(0) @binding(2) var<storage, read_write> chunk_moments_out: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read> chunk_moments: array<vec2<f32>>;

var<workgroup> partial: array<f32, 256>;

// x widened to f32, out rounded to `act` (wgsl/act_f32.wgsl): statistics and
// the normalised value are computed in f32 whatever the activations' precision.
fn x_at(i: u32) -> f32 { return f32(x[i]); }
fn out_set(i: u32, y: f32) { out[i] = act(y); }
fn x4_at(q: u32) -> vec4<f32> { return vec4<f32>(x4[q]); }

// s + v.x + v.y + v.z + v.w, in that order: a scalar loop's sum.
fn add4(s: f32, v: vec4<f32>) -> f32 { return s + v.x + v.y + v.z + v.w; }

// Which segment this invocation works on and which of its elements it visits.
struct Lane {
    segment: u32,
    start: u32,   // where in the segment its range begins (a chunk's; else 0)
    count: u32,   // elements in its range
    base: u32,    // flat index of the range's first element
    first: u32,
    step: u32,
    live: bool,   // false for the padding invocations of the last workgroup
}

fn lane(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Lane {
    // 1-D launches wider than 65,535 workgroups are folded into y (ops::grid_1d).
    let w = wid.y * nwg.x + wid.x;
    var s = w;
    var first = lid;
    var step = WG;
    if (SERIAL) {
        s = w * WG + lid;
        first = 0u;
        step = 1u;
    }
    let segment = min(s, p.segments - 1u);
    return Lane(segment, 0u, p.len, segment * p.len, first, step, s < p.segments);
}

// The split group norm's lanes: workgroup = one chunk of one segment.
fn chunk_lane(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Lane {
    let w = wid.y * nwg.x + wid.x;
    let segment = min(w / p.chunks, p.segments - 1u);
    let start = (w % p.chunks) * p.chunk_len;
    let count = min(p.chunk_len, p.len - start);
    return Lane(segment, start, count, segment * p.len + start, lid, WG, w < p.segments * p.chunks);
}

fn combine(a: f32, b: f32, op: u32) -> f32 {
    if (op == MAX) { return max(a, b); }
    return a + b;
}

// Combine `v` over the workgroup (SERIAL: nothing to combine); all lanes get the result.
fn reduce(v: f32, lid: u32, op: u32) -> f32 {
    if (SERIAL) { return v; }
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { partial[lid] = combine(partial[lid], partial[lid + s], op); }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier(); // everyone has read partial[0] before it is reused
    return total;
}

// Mean and variance (biased, like PyTorch's norms) of a segment. Two passes: the
// second sums deviations from the first mean as well as their squares, which
// corrects the first mean's rounding error (the "corrected two-pass" algorithm).
// E[x^2] - E[x]^2 in f32 would lose every digit for inputs like 100 ± 1.
fn moments(l: Lane, lid: u32) -> vec2<f32> {
    let n = f32(l.count);
    var sum = 0.0;
    for (var i = l.first; i < l.count; i += l.step) { sum += x_at(l.base + i); }
    let mean0 = reduce(sum, lid, SUM) / n;
    var dev = 0.0;
    var sq = 0.0;
    for (var i = l.first; i < l.count; i += l.step) {
        let d = x_at(l.base + i) - mean0;
        dev += d;
        sq += d * d;
    }
    return corrected(mean0, reduce(dev, lid, SUM), reduce(sq, lid, SUM), n);
}

// The two-pass result: the first mean shifted by the deviations' mean, and
// the variance about the corrected mean.
fn corrected(mean0: f32, dev: f32, sq: f32, n: f32) -> vec2<f32> {
    let shift = dev / n;
    let variance = max(sq / n - shift * shift, 0.0);
    return vec2(mean0 + shift, variance);
}

// `moments` of a SERIAL lane's segment, 4 elements per load: the same sums
// in the same order, so the same bits.
fn moments4(l: Lane) -> vec2<f32> {
    let n = f32(p.len);
    let first = l.base / 4u;
    let end = first + p.len / 4u;
    var sum = 0.0;
    for (var q = first; q < end; q++) { sum = add4(sum, x4_at(q)); }
    let mean0 = sum / n;
    var dev = 0.0;
    var sq = 0.0;
    for (var q = first; q < end; q++) {
        let d = x4_at(q) - mean0;
        dev = add4(dev, d);
        sq = add4(sq, d * d);
    }
    return corrected(mean0, dev, sq, n);
}

// What both norms apply: y = (x - mean) * rstd, rstd = 1 / sqrt(variance + eps).
struct Stats {
    mean: f32,
    rstd: f32,
}

// Mean and variance -> Stats.
fn of_moments(m: vec2<f32>) -> Stats { return Stats(m.x, inverseSqrt(m.y + p.scalar)); }

fn stats(l: Lane, lid: u32) -> Stats { return of_moments(moments(l, lid)); }

// torch.nn.GroupNorm (+ optional SiLU): y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c].
@compute @workgroup_size(WG)
fn group_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let l = lane(wid, nwg, lid);
    group_norm_write(l, stats(l, lid));
}

// group_norm's output over a lane's range.
fn group_norm_write(l: Lane, st: Stats) {
    // Element i is in channel c at position r of its spatial plane. Track both
    // incrementally: a vector integer division per element is slow on a CPU driver.
    // (A `while (r >= spatial)` form gave wrong channels on lavapipe 22.3.6.)
    let channels = p.len / p.spatial;
    var c = (l.segment % p.groups) * channels + (l.start + l.first) / p.spatial;
    var r = (l.start + l.first) % p.spatial;
    let dc = l.step / p.spatial;
    let dr = l.step % p.spatial;
    for (var i = l.first; i < l.count; i += l.step) {
        var y = (x_at(l.base + i) - st.mean) * st.rstd * weight[c] + bias[c];
        if (SILU) { y = y / (1.0 + exp(-y)); }
        if (l.live) { out_set(l.base + i, y); }
        c += dc;
        r += dr;
        if (r >= p.spatial) {
            c += 1u;
            r -= p.spatial;
        }
    }
}

// group_norm on GPUs for few, long segments (a VAE decoder at 512x512: 32
// segments of a million elements, which one workgroup each would leave most of
// a GPU idle): each of a segment's chunks is a workgroup, first for its own
// moments, then, in a second launch, to normalise with the segment's.
@compute @workgroup_size(WG)
fn group_norm_moments(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let l = chunk_lane(wid, nwg, lid);
    let m = moments(l, lid);
    if (lid == 0u && l.live) {
        chunk_moments_out[l.segment * p.chunks + l.start / p.chunk_len] = m;
    }
}

@compute @workgroup_size(WG)
fn group_norm_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let l = chunk_lane(wid, nwg, lid);
    group_norm_write(l, combined_stats(l.segment));
}

// A segment's statistics from its chunks' (Chan et al.'s pairwise update):
// the mean of their means, and the mean of their variances plus their means'
// spread, each weighted by its chunk's size.
fn combined_stats(segment: u32) -> Stats {
    let n = f32(p.len);
    let first = segment * p.chunks;
    var mean = 0.0;
    for (var c = 0u; c < loop_bound(p.chunks, segment); c++) {
        mean += chunk_size(c) * chunk_moments[first + c].x;
    }
    mean /= n;
    var m2 = 0.0;
    for (var c = 0u; c < loop_bound(p.chunks, segment); c++) {
        let m = chunk_moments[first + c];
        let d = m.x - mean;
        m2 += chunk_size(c) * (m.y + d * d);
    }
    return of_moments(vec2(mean, m2 / n));
}

fn chunk_size(c: u32) -> f32 {
    return f32(min(p.chunk_len, p.len - c * p.chunk_len));
}

// SERIAL group_norm and layer_norm with 4 elements per access, where segments
// (and group_norm's planes: each vec4 in one channel) are whole vec4s. A CPU
// driver runs each storage access as a loop over the SIMD lanes, so a quarter
// of the accesses is most of the kernel's time. Entry points of their own: one
// entry point may not use both views of a binding.
@compute @workgroup_size(WG)
fn group_norm4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let l = lane(wid, nwg, lid);
    let st = of_moments(moments4(l));
    let plane = p.spatial / 4u;
    var c = (l.segment % p.groups) * (p.len / p.spatial);
    var r = 0u;
    let first = l.base / 4u;
    for (var q = first; q < first + p.len / 4u; q++) {
        var y = (x4_at(q) - st.mean) * st.rstd * weight[c] + bias[c];
        if (SILU) { y = y / (1.0 + exp(-y)); }
        if (l.live) { out4[q] = vec4<act>(y); }
        r += 1u;
        if (r >= plane) {
            c += 1u;
            r = 0u;
        }
    }
}

// torch.nn.LayerNorm over the last dim: y = (x - mean) / sqrt(var + eps) * weight + bias.
@compute @workgroup_size(WG)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let l = lane(wid, nwg, lid);
    let st = stats(l, lid);
    for (var i = l.first; i < loop_bound(p.len, lid); i += l.step) {
        let y = (x_at(l.base + i) - st.mean) * st.rstd * weight[i] + bias[i];
        if (l.live) { out_set(l.base + i, y); }
    }
}

@compute @workgroup_size(WG)
fn layer_norm4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let l = lane(wid, nwg, lid);
    let st = of_moments(moments4(l));
    let first = l.base / 4u;
    for (var q = 0u; q < loop_bound(p.len / 4u, lid); q++) {
        let y = (x4_at(first + q) - st.mean) * st.rstd * weight4[q] + bias4[q];
        if (l.live) { out4[first + q] = vec4<act>(y); }
    }
}

// F.normalize(x, dim=-1): y = x / max(||x||_2, eps).
@compute @workgroup_size(WG)
fn l2_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let l = lane(wid, nwg, lid);
    var sq = 0.0;
    for (var i = l.first; i < loop_bound(p.len, lid); i += l.step) {
        let v = x_at(l.base + i);
        sq += v * v;
    }
    let inv = 1.0 / max(sqrt(reduce(sq, lid, SUM)), p.scalar);
    for (var i = l.first; i < loop_bound(p.len, lid); i += l.step) {
        if (l.live) { out_set(l.base + i, x_at(l.base + i) * inv); }
    }
}

// softmax(x * scale, dim=-1), shifted by the row max so exp never overflows.
@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let l = lane(wid, nwg, lid);
    let scale = p.scalar;
    var top = LOWEST;
    for (var i = l.first; i < loop_bound(p.len, lid); i += l.step) { top = max(top, x_at(l.base + i) * scale); }
    top = reduce(top, lid, MAX);
    var sum = 0.0;
    for (var i = l.first; i < loop_bound(p.len, lid); i += l.step) { sum += exp(x_at(l.base + i) * scale - top); }
    let inv = 1.0 / reduce(sum, lid, SUM);
    for (var i = l.first; i < loop_bound(p.len, lid); i += l.step) {
        if (l.live) { out_set(l.base + i, exp(x_at(l.base + i) * scale - top) * inv); }
    }
}
