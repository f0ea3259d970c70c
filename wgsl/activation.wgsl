// The activations (ops::elementwise::Activation) and GEGLU's combination of a
// hidden value with its gate: shared by wgsl/elementwise.wgsl (their own
// launches) and wgsl/matmul.wgsl (in a layer's store), so both compute the
// same bits.

// erf with |error| < 1.5e-7 (Abramowitz & Stegun 7.1.26); WGSL has no erf.
// Per component: scalar callers pass vec4(x) and keep .x.
fn erf(x: vec4<f32>) -> vec4<f32> {
    let s = sign(x);
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return s * (1.0 - poly * exp(-z * z));
}

// Activation `op` (Activation's discriminant; 0 is the identity) per component.
fn activation(op: u32, x: vec4<f32>) -> vec4<f32> {
    switch op {
        case 1u: { return x / (1.0 + exp(-x)); }
        case 2u: { return 0.5 * x * (1.0 + erf(x * 0.70710678118654752)); }
        case 3u: {
            let inner = 0.79788456080286536 * (x + 0.044715 * x * x * x);
            return 0.5 * x * (1.0 + tanh(inner));
        }
        case 4u: { return x / (1.0 + exp(-1.702 * x)); }
        default: { return x; }
    }
}

// diffusers' GEGLU: hidden * gelu(gate), gelu in PyTorch's default erf form.
fn gated_gelu(hidden: f32, gate: f32) -> f32 {
    return hidden * 0.5 * gate * (1.0 + erf(vec4(gate * 0.70710678118654752)).x);
}
