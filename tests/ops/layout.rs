//! wgsl/layout.wgsl against tests/reference/layout.rs. Pure data movement:
//! every comparison is exact (tolerance 0).

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::layout as reference;
use easel::gpu::dispatch;
use easel::gpu::Tensor;
use easel::ops::{layout, layout::PermuteVariant};

const VARIANTS: [PermuteVariant; 2] = [PermuteVariant::Direct, PermuteVariant::Tiled];

fn exact(what: &str, got: &Tensor, want: &[f32]) {
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert_close(what, &got.to_vec(ctx()).unwrap(), &want, 0.0, 0.0);
}

fn check_permute(rng: &mut Rng, shape: &[usize], dims: &[usize], variant: PermuteVariant) {
    let (x, xh) = random(rng, shape);
    let out_shape: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
    let out = zeros(&out_shape);
    let d = layout::permute_with(ctx(), &x, dims, &out, variant).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    exact(
        &format!("permute {shape:?} {dims:?} {variant:?}"),
        &out,
        &reference::permute(&xh, shape, dims),
    );
}

/// Every permutation of `0..n`, in lexicographic order.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut all = Vec::new();
    for first in 0..n {
        for rest in permutations(n - 1) {
            let mut p = vec![first];
            p.extend(rest.iter().map(|&r| if r >= first { r + 1 } else { r }));
            all.push(p);
        }
    }
    all
}

#[test]
fn permute_all_24_of_a_4d_tensor_both_variants() {
    let mut rng = Rng::new(30);
    let perms = permutations(4);
    assert_eq!(perms.len(), 24);
    for variant in VARIANTS {
        for dims in &perms {
            check_permute(&mut rng, &[2, 3, 4, 5], dims, variant);
        }
    }
}

#[test]
fn permute_edges_of_the_tiles_both_variants() {
    let mut rng = Rng::new(31);
    let cases: [(&[usize], &[usize]); 6] = [
        // Sizes that are not multiples of 32 on both tile axes, several tiles.
        (&[3, 37, 5, 41], &[0, 3, 1, 2]),
        (&[2, 45, 70], &[0, 2, 1]),
        (&[67, 33], &[1, 0]),
        // Size-1 axes (dropped before choosing the kernel).
        (&[1, 7, 1, 9], &[3, 2, 1, 0]),
        // Transformer2DModel: [N, C, H, W] -> [N, H, W, C] and back, tiny UNet.
        (&[2, 64, 16, 16], &[0, 2, 3, 1]),
        (&[2, 16, 16, 64], &[0, 3, 1, 2]),
    ];
    for variant in VARIANTS {
        for (shape, dims) in cases {
            check_permute(&mut rng, shape, dims, variant);
        }
    }
}

#[test]
fn permute_rejects_bad_dims() {
    let x = zeros(&[2, 3, 4]);
    let err = layout::permute(ctx(), &x, &[0, 0, 1], &zeros(&[2, 2, 3])).unwrap_err();
    assert!(err.to_string().contains("not a permutation"), "{err}");
    let err = layout::permute(ctx(), &x, &[2, 1, 0], &zeros(&[2, 3, 4])).unwrap_err();
    assert!(
        err.to_string()
            .contains("permute: out has shape [2, 3, 4], expected [4, 3, 2]"),
        "{err}"
    );
}

#[test]
fn concat_two_and_three_tensors_along_each_dim() {
    let mut rng = Rng::new(32);
    let base = [2, 3, 4, 5];
    // Two inputs are one launch (rows of 60, 20 and 5 words: vec4 and scalar
    // kernels), three a copy each.
    for (dim, sizes) in (0..3).flat_map(|d| [(d, &[1, 3, 2][..]), (d, &[3, 2][..])]) {
        let shapes: Vec<Vec<usize>> = sizes
            .iter()
            .map(|&s| {
                let mut shape = base.to_vec();
                shape[dim] = s;
                shape
            })
            .collect();
        let inputs: Vec<(Tensor, Vec<f32>)> = shapes.iter().map(|s| random(&mut rng, s)).collect();
        let mut out_shape = base.to_vec();
        out_shape[dim] = sizes.iter().sum();
        let out = zeros(&out_shape);
        let xs: Vec<&Tensor> = inputs.iter().map(|(t, _)| t).collect();
        let dispatches = layout::concat(ctx(), &xs, dim, &out).unwrap();
        assert_eq!(dispatches.len(), if xs.len() == 2 { 1 } else { 3 });
        dispatch::run(ctx(), &dispatches).unwrap();
        let host: Vec<(&[f32], &[usize])> = inputs
            .iter()
            .zip(&shapes)
            .map(|((_, h), s)| (h.as_slice(), s.as_slice()))
            .collect();
        exact(
            &format!("concat {} inputs dim={dim}", xs.len()),
            &out,
            &reference::concat(&host, dim),
        );
    }
}

#[test]
fn concat_unet_skip_connection() {
    // torch.cat([h, skip], dim=1) in a tiny UNet's up block.
    let mut rng = Rng::new(33);
    let (h, hh) = random(&mut rng, &[2, 64, 16, 16]);
    let (skip, skiph) = random(&mut rng, &[2, 32, 16, 16]);
    let out = zeros(&[2, 96, 16, 16]);
    let dispatches = layout::concat(ctx(), &[&h, &skip], 1, &out).unwrap();
    dispatch::run(ctx(), &dispatches).unwrap();
    let want = reference::concat(&[(&hh, &[2, 64, 16, 16]), (&skiph, &[2, 32, 16, 16])], 1);
    exact("concat skip", &out, &want);
}

#[test]
fn concat_rejects_mismatched_shapes() {
    let err = layout::concat(
        ctx(),
        &[&zeros(&[2, 3]), &zeros(&[3, 3])],
        1,
        &zeros(&[2, 6]),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("must match except along dim 1"),
        "{err}"
    );
    let err = layout::concat(
        ctx(),
        &[&zeros(&[2, 3]), &zeros(&[2, 3])],
        1,
        &zeros(&[2, 5]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("add up to 6"), "{err}");
}

#[test]
fn narrow_takes_a_chunk() {
    // GEGLU's `hidden_states.chunk(2, dim=-1)`: the second half of the last dim.
    let mut rng = Rng::new(34);
    let (x, xh) = random(&mut rng, &[2, 7, 10]);
    let out = zeros(&[2, 7, 5]);
    let d = layout::narrow(ctx(), &x, 2, 5, &out).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    let want: Vec<f32> = xh.chunks(10).flat_map(|row| row[5..].to_vec()).collect();
    exact("narrow", &out, &want);
    let err = layout::narrow(ctx(), &x, 2, 6, &out).unwrap_err();
    assert!(err.to_string().contains("run past the end"), "{err}");
    // Rows of 8 at offset 8: the kernel that moves 4 words per thread.
    let (x, xh) = random(&mut rng, &[2, 3, 16]);
    let out = zeros(&[2, 3, 8]);
    let d = layout::narrow(ctx(), &x, 2, 8, &out).unwrap();
    dispatch::run(ctx(), &[d]).unwrap();
    let want: Vec<f32> = xh.chunks(16).flat_map(|row| row[8..].to_vec()).collect();
    exact("narrow by vec4s", &out, &want);
}

#[test]
fn select_rows_picks_each_items_eos_token() {
    let mut rng = Rng::new(35);
    // [B, L, D] hidden states; per-item EOS positions (one past the end clamps).
    for ([b, l, d], index) in [([3, 7, 5], vec![6u32, 0, 3]), ([2, 77, 64], vec![12, 76])] {
        let (x, xh) = random(&mut rng, &[b, l, d]);
        let idx = Tensor::from_u32(ctx(), "eos", &[b], &index).unwrap();
        let out = zeros(&[b, d]);
        let dispatch = layout::select_rows(ctx(), &x, &idx, &out).unwrap();
        dispatch::run(ctx(), &[dispatch]).unwrap();
        exact(
            &format!("select_rows {b}x{l}x{d}"),
            &out,
            &reference::select_rows(&xh, l, d, &index),
        );
    }
}

#[test]
fn select_rows_clamps_out_of_range_indices() {
    let mut rng = Rng::new(36);
    let (x, xh) = random(&mut rng, &[2, 4, 3]);
    let idx = Tensor::from_u32(ctx(), "eos", &[2], &[9, u32::MAX]).unwrap();
    let out = zeros(&[2, 3]);
    dispatch::run(
        ctx(),
        &[layout::select_rows(ctx(), &x, &idx, &out).unwrap()],
    )
    .unwrap();
    exact(
        "select_rows clamped",
        &out,
        &reference::select_rows(&xh, 4, 3, &[3, 3]),
    );
}

#[test]
fn broadcast_row_with_an_index_written_on_the_gpu() {
    // The scorer's winner: an index produced by a kernel earlier in the same
    // submission (here a narrow of a u32 tensor), then one candidate [C, H, W]
    // copied into every slot. The index never visits the host.
    let mut rng = Rng::new(37);
    let (k, m) = (5, 6); // the schedule may change the candidate count
    let row_shape = [3, 9, 7];
    let (x, xh) = random(&mut rng, &[k, 3, 9, 7]);
    let scores_argmax = Tensor::from_u32(ctx(), "argmax", &[4], &[1, 3, 0, 2]).unwrap();
    let winner = Tensor::from_u32(ctx(), "winner", &[1], &[0]).unwrap();
    let out = zeros(&[m, 3, 9, 7]);
    let dispatches = [
        layout::narrow(ctx(), &scores_argmax, 0, 1, &winner).unwrap(), // winner = 3
        layout::broadcast_row(ctx(), &x, &winner, &out).unwrap(),
    ];
    dispatch::run(ctx(), &dispatches).unwrap();
    let row: usize = row_shape.iter().product();
    exact(
        "broadcast_row",
        &out,
        &reference::broadcast_row(&xh, row, 3, m),
    );
}

#[test]
fn broadcast_row_in_place_copies_the_winner_into_every_slot() {
    let mut rng = Rng::new(38);
    // Candidates [K, C, H, W]: a tiny pixel model's 4 × 3 × 32 × 32 latents.
    for (shape, w) in [
        ([5usize, 2, 3, 7], 2u32),
        ([4, 3, 32, 32], 0),
        ([4, 3, 32, 32], 3),
    ] {
        let (x, xh) = random(&mut rng, &shape);
        let winner = Tensor::from_u32(ctx(), "winner", &[1], &[w]).unwrap();
        let d = layout::broadcast_row_in_place(ctx(), &x, &winner).unwrap();
        dispatch::run(ctx(), &[d]).unwrap();
        let row: usize = shape[1..].iter().product();
        exact(
            &format!("broadcast_row_in_place {shape:?} winner={w}"),
            &x,
            &reference::broadcast_row(&xh, row, w as usize, shape[0]),
        );
    }
}

#[test]
fn layout_ops_check_index_dtype() {
    let x = zeros(&[2, 3]);
    let float_index = zeros(&[1]);
    let err = layout::broadcast_row_in_place(ctx(), &x, &float_index).unwrap_err();
    assert!(
        err.to_string().contains("index is F32, expected U32"),
        "{err}"
    );
}
