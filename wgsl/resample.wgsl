// Resampling of NCHW tensors: nearest upsampling by an integer factor, pixel
// shuffle, bilinear resize to any size, and 2x2 average pooling.
//
// Every kernel is a gather with one thread per output element: consecutive
// invocations write consecutive addresses (what lavapipe's SIMD lanes and a GPU's
// coalescer both want) and no thread needs another's data, so there is no
// workgroup memory and no barrier, and one variant serves every adapter.
// 256 threads per workgroup is the WebGPU baseline limit; 1-D launches wider
// than 65,535 workgroups fold into y (ops::grid_1d).
//
// The output is viewed as [N*C, Ho, Wo]: batch and channel never mix here.

struct Params {
    n: u32,        // output elements
    h: u32,        // input height
    w: u32,        // input width
    ho: u32,       // output height
    wo: u32,       // output width
    factor: u32,   // upsample_nearest2d / pixel_shuffle factor
    // upsample_bilinear2d: input/output size ratio, as PyTorch computes it in f32.
    scale_h: f32,
    scale_w: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;          // [N, C_in, H, W]
@group(0) @binding(2) var<storage, read_write> out: array<act>;  // [N, C, Ho, Wo]

// The interpolating kernels widen to f32 and round once on store
// (wgsl/act_f32.wgsl); the copying ones move `act` values as they are.
fn x_at(i: u32) -> f32 { return f32(x[i]); }
fn out_set(i: u32, y: f32) { out[i] = act(y); }

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * 256u + gid.x;
}

// F.interpolate(x, scale_factor=f, mode="nearest"): out[y, x] = in[y / f, x / f].
// PyTorch computes floor(dst * (1/f)) in f32, equal to integer division for every
// size this engine meets (exact for f = 2 and 4).
@compute @workgroup_size(256)
fn upsample_nearest2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let plane = i / (p.wo * p.ho);
    out[i] = x[(plane * p.h + oy / p.factor) * p.w + ox / p.factor];
}

// torch.nn.PixelShuffle(r): [N, C*r*r, H, W] -> [N, C, H*r, W*r],
// out[n, c, y, x] = in[n, c*r*r + (y % r)*r + x % r, y / r, x / r].
// With plane = n*C + c, the input channel n*C*r*r + c*r*r + ... is plane*r*r + ...
@compute @workgroup_size(256)
fn pixel_shuffle(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let r = p.factor;
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let plane = i / (p.wo * p.ho);
    let channel = plane * r * r + (oy % r) * r + ox % r;
    out[i] = x[(channel * p.h + oy / r) * p.w + ox / r];
}

// One axis of PyTorch's `compute_source_index_and_lambda` (align_corners=False):
// the half-pixel source coordinate (dst + 0.5) * in/out - 0.5, clamped at 0; the
// right neighbour clamped at the edge; its weight clamped to [0, 1].
struct Taps {
    i0: u32,
    i1: u32,
    lambda1: f32,
}

fn source_taps(scale: f32, dst: u32, size: u32) -> Taps {
    let real = max(scale * (f32(dst) + 0.5) - 0.5, 0.0);
    let i0 = min(u32(real), size - 1u);
    let i1 = select(i0, i0 + 1u, i0 < size - 1u);
    return Taps(i0, i1, clamp(real - f32(i0), 0.0, 1.0));
}

// F.interpolate(x, size=(Ho, Wo), mode="bilinear", align_corners=False,
// antialias=False). Downscaling reads only the 2x2 nearest taps, so it aliases
// (skips input pixels) exactly like PyTorch's default; nothing here low-passes.
@compute @workgroup_size(256)
fn upsample_bilinear2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let plane = i / (p.wo * p.ho);
    let ty = source_taps(p.scale_h, oy, p.h);
    let tx = source_taps(p.scale_w, ox, p.w);
    let row0 = (plane * p.h + ty.i0) * p.w;
    let row1 = (plane * p.h + ty.i1) * p.w;
    let w1 = tx.lambda1;
    let w0 = 1.0 - w1;
    // PyTorch's order: h0 * (w0 * x00 + w1 * x01) + h1 * (w0 * x10 + w1 * x11).
    let top = w0 * x_at(row0 + tx.i0) + w1 * x_at(row0 + tx.i1);
    let bottom = w0 * x_at(row1 + tx.i0) + w1 * x_at(row1 + tx.i1);
    out_set(i, (1.0 - ty.lambda1) * top + ty.lambda1 * bottom);
}

// F.avg_pool2d(x, 2): kernel 2, stride 2, floor mode (an odd last row or column
// is dropped), divisor 4. PyTorch sums rows then columns, then divides.
@compute @workgroup_size(256)
fn avg_pool2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let plane = i / (p.wo * p.ho);
    let top = (plane * p.h + 2u * oy) * p.w + 2u * ox;
    let bottom = top + p.w;
    let sum = x_at(top) + x_at(top + 1u) + x_at(bottom) + x_at(bottom + 1u);
    out_set(i, sum / 4.0);
}
