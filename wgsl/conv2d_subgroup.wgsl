// conv2d_cpu_vec4 (wgsl/conv2d.wgsl) with the weight read once per SIMD group
// instead of once per lane, as wgsl/matmul_subgroup.wgsl does for matmul (read
// its header for why, and why this is a separate file). The helpers below
// repeat conv2d.wgsl's; keep the two in step.
//
// Thread (x, y) owns output channels CO_BLOCK·y.. (CO_BLOCK of them) and pixels
// 2x, 2x+1; the 8 lanes of a subgroup (one y) share the channels: lane l loads
// CO_BLOCK / 8 of the weight rows, 4 floats of k at a time, and
// subgroupBroadcast hands them round. Each gathered input value (a scalar load, the costly part) then
// feeds 32 FMAs; 32×2 measured faster than 16×4 and 8×4 on lavapipe. Needs
// K % 4 == 0 and 8-lane subgroups (the op checks both).

override HAS_BIAS: bool = false;
// Output channels per thread: 32, or 16 / 8 for narrow layers (e.g. 16 channels
// at full resolution, 3 at conv_out), where a 32-channel block would spend half
// or more of its FMAs on clamped duplicate rows. The unused accumulators and
// loads fold away at pipeline creation.
override CO_BLOCK: u32 = 32u;

struct Params {
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    hout: u32,
    wout: u32,
    kh: u32,
    kw: u32,
    stride_y: u32,
    stride_x: u32,
    pad_y: u32,
    pad_x: u32,
    k: u32,
    p: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;              // [N, Cin, H, W]
@group(0) @binding(2) var<storage, read> weight4: array<vec4<f32>>;  // [Cout, K / 4]
@group(0) @binding(3) var<storage, read> bias: array<f32>;           // [Cout]; any buffer when !HAS_BIAS
@group(0) @binding(4) var<storage, read_write> out: array<f32>;      // [N, Cout, Hout, Wout]

// Column kk = (ci, ky, kx) of the im2col matrix.
struct Tap {
    ci: u32,
    ky: u32,
    kx: u32,
}

// The tap of column kk + 1. The kernel walks k with this rather than dividing
// kk by kh·kw and kw: vector integer division has no CPU instruction, so the
// divides would run lane by lane on every step.
fn next_tap(t: Tap) -> Tap {
    let kx = t.kx + 1u;
    let wrap_x = kx == p.kw;
    let ky = select(t.ky, t.ky + 1u, wrap_x);
    let wrap_y = ky == p.kh;
    return Tap(select(t.ci, t.ci + 1u, wrap_y), select(ky, 0u, wrap_y), select(kx, 0u, wrap_x));
}

fn corner(pix: u32) -> vec2<i32> {
    return vec2(i32((pix / p.wout) * p.stride_y) - i32(p.pad_y),
                i32((pix % p.wout) * p.stride_x) - i32(p.pad_x));
}

fn gather(n: u32, t: Tap, origin: vec2<i32>) -> f32 {
    let iy = origin.x + i32(t.ky);
    let ix = origin.y + i32(t.kx);
    let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
    let idx = ((n * p.cin + t.ci) * p.h + u32(clamp(iy, 0, i32(p.h) - 1))) * p.w
        + u32(clamp(ix, 0, i32(p.w) - 1));
    return select(0.0, x[idx], inside);
}

// Weight rows 0..3 and 4..7 of the group's 8, each broadcast from its lane
// (lane ids must be constants); m[r] = weight[co + r, k..k+3].
fn rows_lo(mine: vec4<f32>) -> mat4x4<f32> {
    return mat4x4(subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u),
                  subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u));
}

fn rows_hi(mine: vec4<f32>) -> mat4x4<f32> {
    return mat4x4(subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u),
                  subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u));
}

// cols[k..k+3, the pixels at o0 and o1] as m[c] over k (K % 4 == 0); `t` is
// column k's tap on entry and column k + 4's on return.
fn cols_block(n: u32, t: ptr<function, Tap>, o0: vec2<i32>, o1: vec2<i32>) -> mat2x4<f32> {
    var m: mat4x2<f32>;
    for (var kk = 0u; kk < 4u; kk++) {
        m[kk] = vec2(gather(n, *t, o0), gather(n, *t, o1));
        *t = next_tap(*t);
    }
    return transpose(m);
}

// acc[c][r] = output (channel co + r, pixel pix + c).
fn store_block(n: u32, co: u32, pix: u32, acc: mat2x4<f32>) {
    for (var c = 0u; c < 2u; c++) {
        for (var r = 0u; r < 4u; r++) {
            let ch = co + r;
            let px = pix + c;
            if (ch < p.cout && px < p.p) {
                var y = acc[c][r];
                if (HAS_BIAS) {
                    y += bias[ch];
                }
                out[(n * p.cout + ch) * p.p + px] = y;
            }
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
    let o0 = corner(min(pix, p.p - 1u));
    let o1 = corner(min(pix + 1u, p.p - 1u));
    // Lane l fetches weight rows co + l, co + 8 + l, co + 16 + l, co + 24 + l
    // (the first CO_BLOCK / 8 of them).
    let row = p.k / 4u;
    let m0 = min(co + lid.x, p.cout - 1u) * row;
    let m1 = min(co + 8u + lid.x, p.cout - 1u) * row;
    let m2 = min(co + 16u + lid.x, p.cout - 1u) * row;
    let m3 = min(co + 24u + lid.x, p.cout - 1u) * row;
    var t = Tap(0u, 0u, 0u);
    var a0 = mat2x4<f32>(); // channels co..co+3, as acc[pixel][channel]
    var a1 = mat2x4<f32>();
    var a2 = mat2x4<f32>();
    var a3 = mat2x4<f32>();
    var a4 = mat2x4<f32>();
    var a5 = mat2x4<f32>();
    var a6 = mat2x4<f32>();
    var a7 = mat2x4<f32>();
    for (var k = 0u; k < p.k; k += 4u) {
        let xb = cols_block(n, &t, o0, o1);
        let w0 = weight4[m0 + k / 4u];
        a0 += transpose(rows_lo(w0)) * xb;
        a1 += transpose(rows_hi(w0)) * xb;
        if (CO_BLOCK >= 16u) {
            let w1 = weight4[m1 + k / 4u];
            a2 += transpose(rows_lo(w1)) * xb;
            a3 += transpose(rows_hi(w1)) * xb;
        }
        if (CO_BLOCK >= 32u) {
            let w2 = weight4[m2 + k / 4u];
            let w3 = weight4[m3 + k / 4u];
            a4 += transpose(rows_lo(w2)) * xb;
            a5 += transpose(rows_hi(w2)) * xb;
            a6 += transpose(rows_lo(w3)) * xb;
            a7 += transpose(rows_hi(w3)) * xb;
        }
    }
    store_block(n, co, pix, a0);
    store_block(n, co + 4u, pix, a1);
    if (CO_BLOCK >= 16u) {
        store_block(n, co + 8u, pix, a2);
        store_block(n, co + 12u, pix, a3);
    }
    if (CO_BLOCK >= 32u) {
        store_block(n, co + 16u, pix, a4);
        store_block(n, co + 20u, pix, a5);
        store_block(n, co + 24u, pix, a6);
        store_block(n, co + 28u, pix, a7);
    }
}
