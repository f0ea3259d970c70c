// LoRA merge: a layer weight W [out, K] (nn.Linear [out, in]; nn.Conv2d
// [out, in, kh, kw] seen as K = in·kh·kw) gains a low-rank change in place,
//     W[o, k] += scale · Σ_r up[o, r] · down[r, k]
// which is what peft's `merge` / diffusers' `fuse_lora` do, and A1111's
// `W + up @ down · multiplier · alpha / rank`. Runs once per LoRA module at
// load, so it is a plain loop over the rank (r ≤ a few hundred), not a tiled
// GEMM: one thread per stored u32 word, no barriers, one variant for every adapter.
//
// merge_f32: W is f32, one element per word. merge_f16: W is packed f16
// (DType::F16: element i in word i / 2, low half first), two elements per word,
// each widened to f32, summed in f32 and rounded back to f16 by pack2x16float,
// so an f16 model stays f16. W may be a block of rows ([block_rows, K] from row
// `row0`, when the whole weight is above the binding limit); up and down are
// f32 and whole. 256 threads per workgroup (the WebGPU baseline); launches wider
// than 65,535 workgroups fold into y (ops::grid_1d).

struct Params {
    words: u32,     // u32 words of W bound here (threads that do work)
    numel: u32,     // elements of W bound here (block_rows · K)
    k: u32,         // K: elements per output row
    rank: u32,      // r
    row0: u32,      // first row of W bound here
    scale: f32,     // weight · alpha / rank
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> up: array<f32>;    // [out, r]
@group(0) @binding(2) var<storage, read> down: array<f32>;  // [r, K]
// Binding 3 is W, typed per entry point (only the one an entry uses counts).
@group(0) @binding(3) var<storage, read_write> weight_f32: array<f32>;  // [block_rows, K]
@group(0) @binding(3) var<storage, read_write> weight_f16: array<u32>;  // [block_rows, K] packed

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * 256u + gid.x;
}

// scale · (up @ down)[row0 + e / K, e % K] for element e of the bound block.
fn delta(e: u32) -> f32 {
    let o = p.row0 + e / p.k;
    let k = e % p.k;
    var acc = 0.0;
    for (var r = 0u; r < loop_bound(p.rank, e); r++) {
        acc += up[o * p.rank + r] * down[r * p.k + k];
    }
    return p.scale * acc;
}

@compute @workgroup_size(256)
fn merge_f32(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.words) {
        return;
    }
    weight_f32[i] += delta(i);
}

@compute @workgroup_size(256)
fn merge_f16(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.words) {
        return;
    }
    var pair = unpack2x16float(weight_f16[i]);
    pair.x += delta(2u * i);
    // A lone last element leaves the padding half as it was.
    if (2u * i + 1u < p.numel) {
        pair.y += delta(2u * i + 1u);
    }
    weight_f16[i] = pack2x16float(pair);
}
