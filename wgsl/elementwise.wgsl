// Elementwise kernels: activations, scaling, and binary ops with broadcast.
//
// One thread per element; 256 threads per workgroup is the WebGPU baseline
// limit, so it runs everywhere. 1-D launches wider than 65,535 workgroups are
// folded into y (see ops::grid_1d), hence the `gid.y * nwg.x` in the index.

// Which function to apply; fixed per pipeline so the branch compiles away.
override OP: u32 = 0u;

const OP_IDENTITY: u32 = 0u;
const OP_SILU: u32 = 1u;
const OP_GELU: u32 = 2u;       // erf form, PyTorch's default `gelu`
const OP_GELU_TANH: u32 = 3u;  // tanh approximation, `gelu(approximate="tanh")`
const OP_QUICK_GELU: u32 = 4u; // CLIP's x * sigmoid(1.702 x)
const OP_ADD: u32 = 10u;
const OP_MUL: u32 = 11u;
const OP_PRELU: u32 = 12u;    // a if a >= 0 else b * a (nn.PReLU, b = per-channel slope)

struct Params {
    n: u32,
    // Output viewed as [d0, d1, d2, d3]; b is read with strides sb (0 = broadcast).
    d1: u32,
    d2: u32,
    d3: u32,
    sb0: u32,
    sb1: u32,
    sb2: u32,
    sb3: u32,
    // y = act(x) * scale + bias, or y = (a op b) * scale.
    scale: f32,
    bias: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<act>;
@group(0) @binding(2) var<storage, read_write> out: array<act>;
// Only bound by the binary kernels.
@group(0) @binding(3) var<storage, read> b: array<act>;
// The same buffers 4 elements per item (unary4, binary_rows4, binary_same4).
@group(0) @binding(1) var<storage, read> a4: array<vec4<act>>;
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<act>>;
@group(0) @binding(3) var<storage, read> b4: array<vec4<act>>;

// Loads widen to f32 and stores round to `act` (wgsl/act_f32.wgsl).
fn a_at(i: u32) -> f32 { return f32(a[i]); }
fn b_at(i: u32) -> f32 { return f32(b[i]); }
fn a4_at(i: u32) -> vec4<f32> { return vec4<f32>(a4[i]); }
fn out_set(i: u32, y: f32) { out[i] = act(y); }
fn out4_set(i: u32, y: vec4<f32>) { out4[i] = vec4<act>(y); }

// wgsl/activation.wgsl, compiled before this file, has the functions.
fn activate(x: vec4<f32>) -> vec4<f32> {
    return activation(OP, x);
}

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * 256u + gid.x;
}

@compute @workgroup_size(256)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    out_set(i, activate(vec4(a_at(i))).x * p.scale + p.bias);
}

// `unary` for n % 4 == 0, 4 elements per thread; p.n counts vec4s.
@compute @workgroup_size(256)
fn unary4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    out4_set(i, activate(a4_at(i)) * p.scale + p.bias);
}

// (a op b) * scale, per component.
fn combine(av: vec4<f32>, bv: vec4<f32>) -> vec4<f32> {
    var y: vec4<f32>;
    switch OP {
        case 11u: { y = av * bv; }
        case 12u: { y = select(bv * av, av, av >= vec4(0.0)); }
        default: { y = av + bv; }
    }
    return y * p.scale;
}

// b broadcast along the dimensions where its stride is 0. Three divisions per
// element (they run lane by lane on a CPU driver; binary_same4 has none).
@compute @workgroup_size(256)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let r3 = i / p.d3;
    let r2 = r3 / p.d2;
    let i0 = r2 / p.d1;
    let i1 = r2 - i0 * p.d1;
    let i2 = r3 - r2 * p.d2;
    let i3 = i - r3 * p.d3;
    let bv = b_at(i0 * p.sb0 + i1 * p.sb1 + i2 * p.sb2 + i3 * p.sb3);
    out_set(i, combine(vec4(a_at(i)), vec4(bv)).x);
}

// b constant along the last two dimensions (a time embedding [N, C, 1, 1], a
// PReLU slope [C, 1, 1]) and d2·d3 % 4 == 0: 4 elements per thread share one b,
// two divisions per 4 elements; p.n counts vec4s.
@compute @workgroup_size(256)
fn binary_rows4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let r = (i * 4u) / (p.d2 * p.d3);
    let i0 = r / p.d1;
    let bv = b_at(i0 * p.sb0 + (r - i0 * p.d1) * p.sb1);
    out4_set(i, combine(a4_at(i), vec4(bv)));
}

// a and b of one shape (residual adds), n % 4 == 0: 4 elements per thread, no
// index arithmetic; p.n counts vec4s.
@compute @workgroup_size(256)
fn binary_same4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    out4_set(i, combine(a4_at(i), vec4<f32>(b4[i])));
}
