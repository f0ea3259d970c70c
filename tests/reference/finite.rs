//! Reference for wgsl/finite.wgsl: the lowest code of the checks that saw a
//! value that is not finite (`torch.isfinite(x).all()` per check), or `u32::MAX`.

pub fn first_non_finite(checks: &[(&[f32], u32)]) -> u32 {
    checks
        .iter()
        .filter(|(x, _)| x.iter().any(|v| !v.is_finite()))
        .map(|&(_, code)| code)
        .min()
        .unwrap_or(u32::MAX)
}
