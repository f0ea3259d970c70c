//! References for wgsl/noise.wgsl: Philox 4x32-10 (Salmon et al., SC'11, as in
//! Random123) and Box-Muller in f64.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

fn unit(x: u32) -> f64 {
    ((x >> 8) as f64 + 0.5) / 16_777_216.0
}

fn box_muller(a: u32, b: u32) -> [f64; 2] {
    let r = (-2.0 * unit(a).ln()).sqrt();
    let theta = 2.0 * std::f64::consts::PI * unit(b);
    [r * theta.cos(), r * theta.sin()]
}

/// `count` candidates of `n` values, as the kernel lays them out.
pub fn gaussian(
    seed: u64,
    candidate: u32,
    step: u32,
    stream: u32,
    count: usize,
    n: usize,
) -> Vec<f64> {
    let key = [seed as u32, (seed >> 32) as u32];
    let mut out = Vec::with_capacity(count * n);
    for k in 0..count {
        for i in 0..n {
            let block = (i / 4) as u32;
            let bits = philox4x32_10([block, candidate + k as u32, step, stream], key);
            let pair = i % 4 / 2;
            let z = box_muller(bits[2 * pair], bits[2 * pair + 1]);
            out.push(z[i % 2]);
        }
    }
    out
}
