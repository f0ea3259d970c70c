// conv2d_cpu_vec4 (wgsl/conv2d.wgsl) with the weight read once per SIMD group
// instead of once per lane, as wgsl/matmul_subgroup.wgsl does for matmul (read
// its header for why, and why this is a separate file). The helpers below
// repeat conv2d.wgsl's; keep the two in step.
//
// Thread (x, y) owns output channels 16y..16y+15 and pixels 4x..4x+3; the 8
// lanes of a subgroup (one y) share the channels: lane l loads weight rows
// co + l and co + 8 + l, 4 floats of k at a time, and subgroupBroadcast hands
// them round. Each gathered input value then feeds 16 FMAs. Needs K % 4 == 0
// and 8-lane subgroups (the op checks both).

override HAS_BIAS: bool = false;

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

fn tap(kk: u32) -> Tap {
    let area = p.kh * p.kw;
    let r = kk % area;
    return Tap(kk / area, r / p.kw, r % p.kw);
}

// The tap of column kk + 1. The CPU kernels walk k with this instead of
// calling tap(): vector integer division has no CPU instruction, so the
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
    // ci is clamped too: the k tail of conv2d_cpu walks one tap past the end.
    let idx = ((n * p.cin + min(t.ci, p.cin - 1u)) * p.h + u32(clamp(iy, 0, i32(p.h) - 1))) * p.w
        + u32(clamp(ix, 0, i32(p.w) - 1));
    return select(0.0, x[idx], inside);
}

fn corners(pix: u32) -> array<vec2<i32>, 4> {
    let last = p.p - 1u;
    return array(corner(min(pix, last)), corner(min(pix + 1u, last)),
                 corner(min(pix + 2u, last)), corner(min(pix + 3u, last)));
}

// cols[k..k+3, pixels of `origins`] with m[c] running over k (K % 4 == 0);
// `t` is column k's tap on entry and column k + 4's on return.
fn cols_block(n: u32, t: ptr<function, Tap>, origins: array<vec2<i32>, 4>) -> mat4x4<f32> {
    var m: mat4x4<f32>;
    for (var kk = 0u; kk < 4u; kk++) {
        m[kk] = vec4(gather(n, *t, origins[0]), gather(n, *t, origins[1]),
                     gather(n, *t, origins[2]), gather(n, *t, origins[3]));
        *t = next_tap(*t);
    }
    return transpose(m);
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

// acc[c][r] = output (channel co + r, pixel pix + c).
fn store_block(n: u32, co: u32, pix: u32, acc: mat4x4<f32>) {
    for (var c = 0u; c < 4u; c++) {
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
    let co = gid.y * 16u;
    // Uniform across the subgroup (one y per subgroup): every lane stays for
    // the broadcasts; lanes past the last pixel compute clamped ones and drop them.
    if (co >= p.cout) {
        return;
    }
    let pix = gid.x * 4u;
    let origins = corners(pix);
    let row = p.k / 4u;
    let mine0 = min(co + lid.x, p.cout - 1u) * row;
    let mine1 = min(co + 8u + lid.x, p.cout - 1u) * row;
    var t = Tap(0u, 0u, 0u);
    var acc0 = mat4x4<f32>(); // channels co..co+3
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>(); // channels co+12..co+15
    for (var k = 0u; k < p.k; k += 4u) {
        let xb = cols_block(n, &t, origins);
        let w0 = weight4[mine0 + k / 4u];
        let w1 = weight4[mine1 + k / 4u];
        acc0 += transpose(rows_lo(w0)) * xb;
        acc1 += transpose(rows_hi(w0)) * xb;
        acc2 += transpose(rows_lo(w1)) * xb;
        acc3 += transpose(rows_hi(w1)) * xb;
    }
    store_block(n, co, pix, acc0);
    store_block(n, co + 4u, pix, acc1);
    store_block(n, co + 8u, pix, acc2);
    store_block(n, co + 12u, pix, acc3);
}
