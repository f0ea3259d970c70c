// Counter-based Gaussian noise: Philox 4x32-10 + Box-Muller.
//
// Every value is a pure function of (seed, candidate, step, element), so the
// same seed gives the same start image on every run and every adapter, and a
// candidate's noise does not depend on how many candidates run beside it.
// Integer math is exact everywhere; only the Box-Muller log/cos/sin may differ
// in the last ulp between adapters.
//
// One thread per 4 consecutive elements (one Philox block = 4 u32 = 2 Box-Muller
// pairs); 64 threads per workgroup.

struct Params {
    seed_lo: u32,
    seed_hi: u32,
    // Candidate index of out[0] (so a slice of candidates can be regenerated).
    candidate_base: u32,
    step: u32,
    // Elements per candidate, and candidates in `out`.
    n: u32,
    count: u32,
    // Distinguishes independent streams that share (seed, candidate, step).
    stream: u32,
    // out = noise * scale
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // [count, n]

const M0: u32 = 0xD2511F53u;
const M1: u32 = 0xCD9E8D57u;
const W0: u32 = 0x9E3779B9u;
const W1: u32 = 0xBB67AE85u;

// High and low 32 bits of a 32x32-bit product; WGSL has no mulhi.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = k + vec2<u32>(W0, W1);
        }
        let p0 = mulhilo(M0, c.x);
        let p1 = mulhilo(M1, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// u32 -> uniform in (0, 1): 24 random bits, centred in their interval, so log() is finite.
fn unit(x: u32) -> f32 {
    return (f32(x >> 8u) + 0.5) * (1.0 / 16777216.0);
}

fn box_muller(a: u32, b: u32) -> vec2<f32> {
    let r = sqrt(-2.0 * log(unit(a)));
    let theta = 6.283185307179586 * unit(b);
    return vec2<f32>(r * cos(theta), r * sin(theta));
}

@compute @workgroup_size(64)
fn gaussian(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let block = gid.y * nwg.x * 64u + gid.x;
    let blocks_per_candidate = (p.n + 3u) / 4u;
    let candidate = block / blocks_per_candidate;
    if (candidate >= p.count) { return; }
    let first = (block % blocks_per_candidate) * 4u;
    let counter = vec4<u32>(first / 4u, p.candidate_base + candidate, p.step, p.stream);
    let bits = philox4x32_10(counter, vec2<u32>(p.seed_lo, p.seed_hi));
    let z = vec4<f32>(box_muller(bits.x, bits.y), box_muller(bits.z, bits.w)) * p.scale;
    let base = candidate * p.n + first;
    for (var i = 0u; i < 4u; i++) {
        if (first + i < p.n) {
            out[base + i] = z[i];
        }
    }
}
