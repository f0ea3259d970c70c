//! wgsl/peak.wgsl against tests/reference/peak.rs.

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::peak as reference;
use easel::gpu::dispatch;
use easel::ops::peak;

#[test]
fn fma_chains_result_depends_on_every_fma() {
    let mut rng = Rng::new(11);
    // 3 seeds cycled over 133 invocations: not a multiple of the workgroup.
    let (seeds, seeds_h) = random(&mut rng, &[3, 4]);
    let n = 133;
    let (a, b) = (0.75, 0.125);
    for iterations in [0, 1, 7] {
        let out = zeros(&[n, 4]);
        let d = peak::fma_chains(ctx(), &seeds, &out, iterations, a, b).unwrap();
        assert_eq!(d.flops, 2 * 4 * 8 * n as u64 * iterations as u64);
        dispatch::run(ctx(), &[d]).unwrap();
        let want = reference::fma_chains(&seeds_h, n, iterations, a, b);
        // A few f32 roundings per step of a contraction (|a| < 1): errors stay ~1e-6.
        assert_close(
            &format!("fma_chains x{iterations}"),
            &out.to_vec(ctx()).unwrap(),
            &want,
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn copy_is_exact() {
    let mut rng = Rng::new(12);
    let (src, src_h) = random(&mut rng, &[1001, 4]);
    let dst = zeros(&[1001, 4]);
    let d = peak::copy(ctx(), &src, &dst).unwrap();
    assert_eq!(d.bytes, 2 * 1001 * 16);
    dispatch::run(ctx(), &[d]).unwrap();
    assert_eq!(dst.to_vec(ctx()).unwrap(), src_h);
}

#[test]
fn shapes_are_checked() {
    let bad = zeros(&[5, 3]);
    let ok = zeros(&[5, 4]);
    let other = zeros(&[6, 4]);
    assert!(peak::copy(ctx(), &bad, &bad).is_err());
    assert!(peak::copy(ctx(), &ok, &other).is_err());
    assert!(peak::fma_chains(ctx(), &bad, &ok, 1, 0.5, 0.5).is_err());
}
