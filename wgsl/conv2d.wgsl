// 2-D convolution, NCHW, groups = 1, as an implicit GEMM per image:
//   out[n][co, pix] = sum_kk weight[co, kk] · cols[n][kk, pix] + bias[co]
// with kk = (ci, ky, kx) flattened like PyTorch's weight [Cout, Cin, kh, kw]
// (so weight is already a row-major [Cout, K] matrix) and cols the im2col
// matrix [K, Hout·Wout], gathered on the fly with zero padding, never stored.
//
// The kernel shapes mirror wgsl/matmul.wgsl (read its header): `conv2d_gpu`
// stages 64×64 tiles through workgroup memory (wgsl/gemm_tile.wgsl, shared
// with matmul_gpu; `conv2d_gpu_wide` 128×128 ones); `conv2d_cpu` and
// `conv2d_cpu_vec4` keep an 8×4 register block per thread (8 output channels × 4 pixels), since the gathered input is
// the expensive operand and each gathered value then feeds 8 FMAs. `_vec4`
// reads the weight 4 values at a time and needs K % 4 == 0.
//
// The weight (binding 2) is read through weight_at / weight4_at from
// wgsl/weight_f32.wgsl or wgsl/weight_f16.wgsl (f16 weights widened on load).
// `co0` and `cout_total` place the output channels in a wider tensor: a weight
// above the binding limit runs as one dispatch per block of output channels.

override HAS_BIAS: bool = false;
// The epilogue adds a residual of out's layout and scales the sum (ResnetBlock2D's
// `(shortcut + conv2(h)) / output_scale_factor`), saving the add's launch; or,
// RESIDUAL_PER_CHANNEL, one value per (image, channel) [N, cout_total, 1, 1]
// (ResnetBlock2D's time embedding added after conv1).
override HAS_RESIDUAL: bool = false;
override RESIDUAL_PER_CHANNEL: bool = false;
// The input is read as if nearest-upsampled by this factor (p.h and p.w are
// the upsampled size): diffusers' Upsample2D, `F.interpolate(x, scale_factor=2,
// mode="nearest")` then a 3x3 conv, without the upsampled tensor (4x the input)
// or its launch. A constant, so the divisions below fold into shifts.
override UPSAMPLE: u32 = 1u;

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
    // GEMM view: K = cin·kh·kw, P = hout·wout.
    k: u32,
    p: u32,
    // Output channel of this weight's channel 0, and the output's channel count
    // (cout unless the weight is split into blocks of output channels).
    co0: u32,
    cout_total: u32,
    // (conv + bias + residual) · residual_scale when HAS_RESIDUAL.
    residual_scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// binding 1, x: [N, Cin, H, W] (image_at: wgsl/image_buffer.wgsl, or image_texture.wgsl)
// binding 2, weight: [Cout, Cin, kh, kw] = [Cout, K] (weight_at, weight4_at)
@group(0) @binding(3) var<storage, read> bias: array<f32>;   // [cout_total]; any buffer when !HAS_BIAS
@group(0) @binding(4) var<storage, read_write> out: array<act>; // [N, cout_total, Hout, Wout]
@group(0) @binding(5) var<storage, read> residual: array<act>;   // as out, or [N, cout_total]; any buffer when !HAS_RESIDUAL

// Where the taps of column kk sit relative to an output pixel's window corner.
// Column kk = (ci, ky, kx) of the im2col matrix; `off` is the tap's element
// relative to the corner's in the image's channel 0, ci·H·W + ky·W + kx (for
// UPSAMPLE = 1; u32 arithmetic wraps, so the sums below hold for any H, W).
struct Tap {
    ci: u32,
    ky: u32,
    kx: u32,
    off: u32,
}

fn tap(kk: u32) -> Tap {
    let area = p.kh * p.kw;
    let ci = kk / area;
    let ky = kk % area / p.kw;
    let kx = kk % p.kw;
    return Tap(ci, ky, kx, (ci * p.h + ky) * p.w + kx);
}

// The tap of column kk + 1. The CPU kernels walk k with this instead of
// calling tap(): vector integer division has no CPU instruction, so the
// divides would run lane by lane on every step. `off` moves one element, and
// a wrap to the next row (channel) skips the rest of the window's row (rows).
fn next_tap(t: Tap) -> Tap {
    let kx = t.kx + 1u;
    let wrap_x = kx == p.kw;
    let ky = select(t.ky, t.ky + 1u, wrap_x);
    let wrap_y = ky == p.kh;
    let off = t.off + 1u + select(0u, p.w - p.kw, wrap_x) + select(0u, (p.h - p.kh) * p.w, wrap_y);
    return Tap(select(t.ci, t.ci + 1u, wrap_y), select(ky, 0u, wrap_y), select(kx, 0u, wrap_x), off);
}

// The top-left tap of an output pixel's window: input coordinates (y, x),
// negative inside the padding, and `at`, the element of (y, x) in channel 0 of
// image n (wrapped to u32 where negative; used only when UPSAMPLE = 1).
struct Origin {
    y: i32,
    x: i32,
    at: u32,
}

fn corner(n: u32, pix: u32) -> Origin {
    let y = i32((pix / p.wout) * p.stride_y) - i32(p.pad_y);
    let x = i32((pix % p.wout) * p.stride_x) - i32(p.pad_x);
    return Origin(y, x, n * p.cin * p.h * p.w + bitcast<u32>(y * i32(p.w) + x));
}

// cols[n][kk, pix]: the input under tap `t` of the window at `origin`, 0 in the
// padding. The CPU kernels spend a third of their time here (scalar gathers),
// so the common case is six operations and a load: one unsigned compare per
// axis (a negative coordinate wraps to a large one) and the element at the
// corner's index plus the tap's offset.
fn gather(n: u32, t: Tap, origin: Origin) -> f32 {
    let iy = origin.y + i32(t.ky);
    let ix = origin.x + i32(t.kx);
    let inside = bitcast<u32>(iy) < p.h && bitcast<u32>(ix) < p.w;
    if (UPSAMPLE == 1u) {
        // Element 0 outside, so the load stays in bounds; its value is dropped.
        return select(0.0, image_at(select(0u, origin.at + t.off, inside)), inside);
    }
    // Clamped so the load is always in bounds; the value is discarded when outside.
    // ci is clamped too: the k tail of conv2d_cpu walks one tap past the end.
    let sy = u32(clamp(iy, 0, i32(p.h) - 1)) / UPSAMPLE;
    let sx = u32(clamp(ix, 0, i32(p.w) - 1)) / UPSAMPLE;
    let idx = ((n * p.cin + min(t.ci, p.cin - 1u)) * (p.h / UPSAMPLE) + sy) * (p.w / UPSAMPLE) + sx;
    return select(0.0, image_at(idx), inside);
}

fn store(n: u32, co: u32, pix: u32, acc: f32) {
    if (co >= p.cout || pix >= p.p) {
        return;
    }
    var y = acc;
    if (HAS_BIAS) {
        y += bias[p.co0 + co];
    }
    let at = (n * p.cout_total + p.co0 + co) * p.p + pix;
    if (HAS_RESIDUAL) {
        var r = at;
        if (RESIDUAL_PER_CHANNEL) { r = n * p.cout_total + p.co0 + co; }
        y = (y + f32(residual[r])) * p.residual_scale;
    }
    out[at] = act(y);
}

// The GEMM tiles' pair of outputs (wgsl/gemm_tile.wgsl): two stores, since no
// convolution combines them (GEGLU is matmul's).
const GEGLU: bool = false;
fn store_pair(n: u32, co: u32, pix: u32, acc0: f32, acc1: f32) {
    store(n, co, pix, acc0);
    store(n, co, pix + 1u, acc1);
}

// ---------------------------------------------------------------------------
// GPU: the 64×64 tile of wgsl/gemm_tile.wgsl (64 output channels × 64 pixels)
// with A = weight [Cout, K] and B = cols [K, P]; same thread layout as matmul_gpu.

// The output runs along pixels (the tiles' j), never along channels.
const TRANSPOSE_C: bool = false;

// weight[co, kk], 0 outside the matrix.
fn load_a(n: u32, co: u32, kk: u32) -> f32 {
    if (co < p.cout && kk < p.k) {
        return weight_at(co * p.k + kk);
    }
    return 0.0;
}

// cols[n][kk, pix], 0 outside the matrix.
fn load_b(n: u32, kk: u32, pix: u32) -> f32 {
    if (pix < p.p && kk < p.k) {
        return gather(n, tap(kk), corner(n, pix));
    }
    return 0.0;
}

// 16×16 threads: wgsl/gemm_tile.wgsl says why.
@compute @workgroup_size(16, 16)
fn conv2d_gpu(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // The weight is contiguous along k; for cols, neighbouring threads take
    // neighbouring pixels.
    gemm_tile(wg, lid, t, true, false);
}

// The same with the 128×128 tile (the `GpuWide` variant).
@compute @workgroup_size(16, 16)
fn conv2d_gpu_wide(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    gemm_tile_wide(wg, lid, t, true, false);
}

// ---------------------------------------------------------------------------
// CPU: thread (x, y) owns channels 8y..8y+7 and pixels 4x..4x+3; consecutive
// lanes take neighbouring pixels of the same channels. 4×4 blocks as mat4x4,
// as in matmul_cpu: W[r] = weight[co + r, k..k+3], X[c] = cols[k..k+3, pix + c].

// weight[co, kk], or 0 past the end of k; co clamped (its outputs are dropped).
fn weight_or_zero(co: u32, kk: u32) -> f32 {
    return select(0.0, weight_at(min(co, p.cout - 1u) * p.k + min(kk, p.k - 1u)), kk < p.k);
}

fn weight_block(co: u32, k: u32) -> mat4x4<f32> {
    var m: mat4x4<f32>;
    for (var r = 0u; r < 4u; r++) {
        m[r] = vec4(weight_or_zero(co + r, k), weight_or_zero(co + r, k + 1u),
                    weight_or_zero(co + r, k + 2u), weight_or_zero(co + r, k + 3u));
    }
    return m;
}

// Needs K % 4 == 0.
fn weight_block4(co: u32, k: u32) -> mat4x4<f32> {
    let s = k / 4u;
    let row = p.k / 4u;
    let last = p.cout - 1u;
    return mat4x4(weight4_at(min(co, last) * row + s), weight4_at(min(co + 1u, last) * row + s),
                  weight4_at(min(co + 2u, last) * row + s), weight4_at(min(co + 3u, last) * row + s));
}

// cols[k..k+3, pixels of `origins`], 0 past the end of k; `t` is column k's
// tap on entry and column k + 4's on return.
fn cols_block(n: u32, k: u32, t: ptr<function, Tap>, origins: array<Origin, 4>) -> mat4x4<f32> {
    var m: mat4x4<f32>;
    for (var kk = 0u; kk < 4u; kk++) {
        let v = vec4(gather(n, *t, origins[0]), gather(n, *t, origins[1]),
                     gather(n, *t, origins[2]), gather(n, *t, origins[3]));
        m[kk] = select(vec4(0.0), v, k + kk < p.k);
        *t = next_tap(*t);
    }
    // m[kk][c] = cols[k + kk, pix + c]; transposed so m[c] runs over k like the weight block.
    return transpose(m);
}

// Window corners of pixels pix..pix+3 (clamped to the last pixel; extras are dropped).
fn corners(n: u32, pix: u32) -> array<Origin, 4> {
    let last = p.p - 1u;
    return array(corner(n, min(pix, last)), corner(n, min(pix + 1u, last)),
                 corner(n, min(pix + 2u, last)), corner(n, min(pix + 3u, last)));
}

// acc[c][r] = output (channel co + r, pixel pix + c).
fn store_block(n: u32, co: u32, pix: u32, acc: mat4x4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        for (var r = 0u; r < 4u; r++) {
            store(n, co + r, pix + c, acc[c][r]);
        }
    }
}

@compute @workgroup_size(8, 8)
fn conv2d_cpu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.z;
    let co = gid.y * 8u;
    let pix = gid.x * 4u;
    if (co >= p.cout || pix >= p.p) {
        return;
    }
    let origins = corners(n, pix);
    var t = Tap(0u, 0u, 0u, 0u);
    var acc0 = mat4x4<f32>(); // channels co..co+3
    var acc1 = mat4x4<f32>(); // channels co+4..co+7
    for (var k = 0u; k < loop_bound(p.k, gid.x); k += 4u) {
        let xb = cols_block(n, k, &t, origins);
        acc0 += transpose(weight_block(co, k)) * xb;
        acc1 += transpose(weight_block(co + 4u, k)) * xb;
    }
    store_block(n, co, pix, acc0);
    store_block(n, co + 4u, pix, acc1);
}

@compute @workgroup_size(8, 8)
fn conv2d_cpu_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.z;
    let co = gid.y * 8u;
    let pix = gid.x * 4u;
    if (co >= p.cout || pix >= p.p) {
        return;
    }
    let origins = corners(n, pix);
    var t = Tap(0u, 0u, 0u, 0u);
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    for (var k = 0u; k < loop_bound(p.k, gid.x); k += 4u) {
        let xb = cols_block(n, k, &t, origins);
        acc0 += transpose(weight_block4(co, k)) * xb;
        acc1 += transpose(weight_block4(co + 4u, k)) * xb;
    }
    store_block(n, co, pix, acc0);
    store_block(n, co + 4u, pix, acc1);
}
