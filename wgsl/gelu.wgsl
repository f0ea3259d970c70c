// GELU's erf, and GEGLU's combination of a hidden value with its gate: shared
// by wgsl/elementwise.wgsl (the activations) and wgsl/matmul.wgsl (GEGLU in the
// store of a feed-forward's projection), so both compute the same bits.

// erf with |error| < 1.5e-7 (Abramowitz & Stegun 7.1.26); WGSL has no erf.
// Per component: scalar callers pass vec4(x) and keep .x.
fn erf(x: vec4<f32>) -> vec4<f32> {
    let s = sign(x);
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return s * (1.0 - poly * exp(-z * z));
}

// diffusers' GEGLU: hidden * gelu(gate), gelu in PyTorch's default erf form.
fn gated_gelu(hidden: f32, gate: f32) -> f32 {
    return hidden * 0.5 * gate * (1.0 + erf(vec4(gate * 0.70710678118654752)).x);
}
