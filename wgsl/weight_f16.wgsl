// wgsl/weight_f32.wgsl's functions for a weight stored as f16 (DType::F16):
// two halves per u32, element i in word i / 2 (low half for even i), widened
// to f32 on load, so kernels accumulate in f32 and the weight takes half the
// memory and bandwidth. Packed u32 rather than WGSL's `f16` type: it needs no
// SHADER_F16, so every adapter (lavapipe included) gets the same kernels and
// bits. A native `enable f16;` variant would only change how the halves are
// loaded, not the f32 arithmetic, and is not built.

@group(0) @binding(2) var<storage, read> weight: array<u32>;
@group(0) @binding(2) var<storage, read> weight4: array<vec2<u32>>;

fn weight_at(i: u32) -> f32 {
    let pair = unpack2x16float(weight[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

fn weight4_at(q: u32) -> vec4<f32> {
    let w = weight4[q];
    return vec4(unpack2x16float(w.x), unpack2x16float(w.y));
}
