// The loop's guard against NaN and infinity: one thread per value of `x`; a
// thread that finds a value whose exponent bits are all ones (Inf or NaN)
// lowers `status[0]` to this check's code with atomicMin, so after a whole run
// `status[0]` holds the earliest failing check (codes grow with the step) or
// u32::MAX when every value was finite. The bits are tested instead of
// `x != x`, which a compiler that assumes finite math may fold away.
//
// 256 threads per workgroup, spread over x and y for large tensors (grid_1d).

// Padded to 16 bytes, the size every backend accepts for a uniform block.
struct Params {
    n: u32,
    code: u32,
    _pad: vec2<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> status: array<atomic<u32>>;

const EXPONENT: u32 = 0x7f800000u;

@compute @workgroup_size(256)
fn check_finite(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= p.n) { return; }
    if ((bitcast<u32>(x[i]) & EXPONENT) == EXPONENT) {
        atomicMin(&status[0], p.code);
    }
}
