// Attainable-peak probes for `easel bench peak`: how fast this adapter does f32
// FMAs, and how fast it streams memory, so every kernel's figure can be read as
// a fraction of what this adapter allows (a roofline), on a GPU or on lavapipe.
//
// 64 invocations per workgroup: a multiple of every common SIMD width (8 lanes
// on lavapipe, 32 on NVIDIA, 64 on AMD), and the host launches enough
// workgroups to fill the device. 1-D launches wider than 65,535 workgroups are
// folded into y (see ops::grid_1d), hence the `gid.y * nwg.x` in the index.

struct Params {
    // fma_chains: invocations that write a result; copy: vec4s to copy.
    n: u32,
    // fma_chains: loop trips (each one FMA per chain).
    iterations: u32,
    // fma_chains: every step is x <- x * a + b; |a| < 1 keeps x finite.
    a: f32,
    b: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

const WG: u32 = 64u;

// 8 independent vec4 FMA chains per invocation: enough independent work to hide
// FMA latency on a GPU and to keep a CPU's SIMD units busy (lavapipe measured
// 28 GFLOP/s with 8). Separate variables, not an array, so nothing spills to
// memory. `a` and `b` come from the uniform block, so the loop cannot be folded,
// and the sum of every chain is written, so no FMA is dead code. Each chain
// starts from `src` (read once, cycled), offset by its index.
@compute @workgroup_size(64)
fn fma_chains(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * WG + gid.x;
    if (i >= p.n) { return; }
    let x = src[i % arrayLength(&src)];
    let a = vec4<f32>(p.a);
    let b = vec4<f32>(p.b);
    var c0 = x;
    var c1 = x + 1.0;
    var c2 = x + 2.0;
    var c3 = x + 3.0;
    var c4 = x + 4.0;
    var c5 = x + 5.0;
    var c6 = x + 6.0;
    var c7 = x + 7.0;
    for (var t = 0u; t < loop_bound(p.iterations, i); t++) {
        c0 = fma(c0, a, b);
        c1 = fma(c1, a, b);
        c2 = fma(c2, a, b);
        c3 = fma(c3, a, b);
        c4 = fma(c4, a, b);
        c5 = fma(c5, a, b);
        c6 = fma(c6, a, b);
        c7 = fma(c7, a, b);
    }
    dst[i] = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7));
}

// dst = src: each workgroup copies a contiguous run of WG * COPY_PER vec4s, in
// COPY_PER sweeps whose loads and stores are contiguous across lanes (the best
// pattern any adapter has). Several vec4s per invocation keep lavapipe, where
// every invocation has a fixed cost, measuring memory rather than launches.
const COPY_PER: u32 = 8u;

@compute @workgroup_size(64)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    let base = (wid.y * nwg.x + wid.x) * WG * COPY_PER + lid;
    for (var j = 0u; j < COPY_PER; j++) {
        let i = base + j * WG;
        if (i < p.n) {
            dst[i] = src[i];
        }
    }
}
