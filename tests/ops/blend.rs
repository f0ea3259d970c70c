//! wgsl/blend.wgsl against tests/reference/blend.rs.

use crate::common::{assert_close, ctx, random, zeros, Rng};
use crate::reference::blend::{self as reference, Tile};
use easel::gpu::dispatch;
use easel::ops::blend::{self, Placement};

/// A 2x3 grid of tiles over a [2, 3, 13, 17] image, overlapping by 3-5 pixels
/// (ramps as long as each overlap), the order a tiled decode adds them in.
#[test]
fn overlapping_tiles_cross_fade() {
    let mut rng = Rng::new(30);
    let shape = [2, 3, 13, 17];
    let rows = [(0, 8, [0, 3]), (5, 8, [3, 0])];
    let cols = [(0, 7, [0, 4]), (3, 9, [4, 5]), (7, 10, [5, 0])];
    let (image, weight) = (zeros(&shape), zeros(&shape[2..]));
    let mut ds = vec![blend::clear(ctx(), &image, &weight).unwrap()];
    let mut kept = Vec::new();
    for &(y0, th, [top, bottom]) in &rows {
        for &(x0, tw, [left, right]) in &cols {
            let (tile, data) = random(&mut rng, &[2, 3, th, tw]);
            let place = Placement {
                at: [y0, x0],
                ramps: [top, bottom, left, right],
            };
            ds.push(blend::accumulate(ctx(), &tile, &image, &weight, place).unwrap());
            kept.push((tile, data, [2, 3, th, tw], place));
        }
    }
    ds.push(blend::normalize(ctx(), &image, &weight).unwrap());
    dispatch::run(ctx(), &ds).unwrap();
    let tiles: Vec<Tile> = (kept.iter())
        .map(|(_, data, shape, p)| Tile {
            data,
            shape: *shape,
            at: p.at,
            ramps: p.ramps,
        })
        .collect();
    // At most 4 f32 products summed, then one division: a few ulps of values
    // in [-1, 1].
    assert_close(
        "blend",
        &image.to_vec(ctx()).unwrap(),
        &reference::blend(&tiles, shape),
        1e-6,
        1e-5,
    );
}

#[test]
fn a_tile_that_does_not_fit_is_refused() {
    let (image, weight) = (zeros(&[1, 3, 8, 8]), zeros(&[8, 8]));
    let place = Placement {
        at: [4, 0],
        ramps: [0; 4],
    };
    let e = blend::accumulate(ctx(), &zeros(&[1, 3, 5, 8]), &image, &weight, place).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    let e = blend::clear(ctx(), &image, &zeros(&[8, 9])).unwrap_err();
    assert!(e.to_string().contains("weight has shape"), "{e}");
}
