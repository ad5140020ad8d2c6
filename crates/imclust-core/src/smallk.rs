//! The direct kernel for few centroids (k <= [`MAX_K`]): dot products and the nearest /
//! second-nearest scan in one register-tiled loop, without a GEMM call.
//!
//! For small k a GEMM spends most of its time packing rows it uses once, and the products
//! matrix is a detour. Here the centroids are packed once per pass into panels of [`LANES`]
//! (dimension-major, zero-padded), and each tile of [`TILE_ROWS`] rows is multiplied against a
//! panel with one fused multiply-add per row, lane and dimension, in a fixed order: a row's
//! dot products do not depend on which other rows share its tile.

/// Centroid lanes per panel.
pub const LANES: usize = 16;
/// Rows per tile: enough independent accumulators to hide the FMA latency.
pub const TILE_ROWS: usize = 8;
/// Largest k handled here (two panels).
pub const MAX_K: usize = 2 * LANES;

/// Centroids packed for [`scan_tiles`]: `panels x d x LANES`, zero-padded, with the score bias
/// per lane (`+inf` on padding lanes, so they never win).
#[derive(Debug, Clone)]
pub struct Packed {
    pub panels: usize,
    pub d: usize,
    pub data: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Packed {
    /// Packs `k x d` centroids `c` with score bias `bias[j]`.
    pub fn new(c: &[f32], k: usize, d: usize, bias: &[f32]) -> Self {
        let panels = k.div_ceil(LANES);
        let mut data = vec![0.0f32; panels * d * LANES];
        let mut b = vec![f32::INFINITY; panels * LANES];
        for j in 0..k {
            let (p, q) = (j / LANES, j % LANES);
            for t in 0..d {
                data[(p * d + t) * LANES + q] = c[j * d + t];
            }
            b[j] = bias[j];
        }
        Packed { panels, d, data, bias: b }
    }
}

/// For each of the `rows` rows of `x` (`rows x d`, `rows` a multiple of [`TILE_ROWS`]): the
/// lowest and second-lowest score `bias[j] + slope * x.c_j` and the index of the lowest (ties to
/// the lower index). Runs with the widest SIMD the CPU has (through `pulp`'s safe dispatch);
/// every dot product is the same chain of fused multiply-adds over the dimensions whatever the
/// vector width, so results do not depend on the instruction set either.
pub fn scan_tiles(
    x: &[f32],
    rows: usize,
    c: &Packed,
    slope: f32,
    best_j: &mut [u32],
    best: &mut [f32],
    second: &mut [f32],
) {
    assert!(rows.is_multiple_of(TILE_ROWS) && x.len() == rows * c.d && best_j.len() >= rows);
    pulp::Arch::new().dispatch(ScanTiles { x, rows, c, slope, best_j, best, second });
}

struct ScanTiles<'a> {
    x: &'a [f32],
    rows: usize,
    c: &'a Packed,
    slope: f32,
    best_j: &'a mut [u32],
    best: &'a mut [f32],
    second: &'a mut [f32],
}

impl pulp::WithSimd for ScanTiles<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        match S::F32_LANES {
            16 => self.run::<S, 1>(simd),
            8 => self.run::<S, 2>(simd),
            4 => self.run::<S, 4>(simd),
            2 => self.run::<S, 8>(simd),
            _ => self.run::<S, 16>(simd),
        }
    }
}

impl ScanTiles<'_> {
    /// `NV` vectors of `S::F32_LANES` make one panel row of [`LANES`].
    #[inline(always)]
    fn run<S: pulp::Simd, const NV: usize>(self, simd: S) {
        assert_eq!(NV * S::F32_LANES, LANES, "panel width");
        let ScanTiles { x, rows, c, slope, best_j, best, second } = self;
        let d = c.d;
        best[..rows].fill(f32::INFINITY);
        second[..rows].fill(f32::INFINITY);
        best_j[..rows].fill(0);
        let zero = simd.splat_f32s(0.0);
        for r0 in (0..rows).step_by(TILE_ROWS) {
            let tile: [&[f32]; TILE_ROWS] = std::array::from_fn(|r| &x[(r0 + r) * d..(r0 + r + 1) * d]);
            for p in 0..c.panels {
                let panel = &c.data[p * d * LANES..(p + 1) * d * LANES];
                let mut acc = [[zero; NV]; TILE_ROWS];
                for (t, cv) in panel.chunks_exact(LANES).enumerate() {
                    let (cv, _) = S::as_simd_f32s(cv);
                    for r in 0..TILE_ROWS {
                        let xv = simd.splat_f32s(tile[r][t]);
                        for v in 0..NV {
                            acc[r][v] = simd.mul_add_f32s(xv, cv[v], acc[r][v]);
                        }
                    }
                }
                let bias = &c.bias[p * LANES..(p + 1) * LANES];
                for (r, a) in acc.iter().enumerate() {
                    let mut lanes = [0.0f32; LANES];
                    S::as_mut_simd_f32s(&mut lanes).0.copy_from_slice(a);
                    let i = r0 + r;
                    let (mut b, mut s2, mut bj) = (best[i], second[i], best_j[i]);
                    for q in 0..LANES {
                        let s = bias[q] + slope * lanes[q];
                        if s < b {
                            s2 = b;
                            b = s;
                            bj = (p * LANES + q) as u32;
                        } else if s < s2 {
                            s2 = s;
                        }
                    }
                    (best[i], second[i], best_j[i]) = (b, s2, bj);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn matches_naive_scan() {
        let mut r = Rng::new(8);
        for &(rows, d, k) in &[(8usize, 5usize, 1usize), (16, 33, 10), (24, 64, 16), (32, 7, 17), (8, 512, 32)] {
            let x: Vec<f32> = (0..rows * d).map(|_| r.normal() as f32).collect();
            let c: Vec<f32> = (0..k * d).map(|_| r.normal() as f32).collect();
            let bias: Vec<f32> = (0..k).map(|j| crate::linalg::sq_norm(&c[j * d..(j + 1) * d]) as f32).collect();
            let p = Packed::new(&c, k, d, &bias);
            let (mut bj, mut b, mut s2) = (vec![0; rows], vec![0.0; rows], vec![0.0; rows]);
            scan_tiles(&x, rows, &p, -2.0, &mut bj, &mut b, &mut s2);
            for i in 0..rows {
                let mut scores: Vec<(f64, usize)> = (0..k)
                    .map(|j| {
                        let dot: f64 = (0..d).map(|t| x[i * d + t] as f64 * c[j * d + t] as f64).sum();
                        (bias[j] as f64 - 2.0 * dot, j)
                    })
                    .collect();
                scores.sort_by(|a, b| a.0.total_cmp(&b.0));
                assert_eq!(bj[i] as usize, scores[0].1, "rows {rows} k {k} row {i}");
                assert!((b[i] as f64 - scores[0].0).abs() < 1e-3 * (1.0 + scores[0].0.abs()));
                if k > 1 {
                    assert!((s2[i] as f64 - scores[1].0).abs() < 1e-3 * (1.0 + scores[1].0.abs()));
                } else {
                    assert_eq!(s2[i], f32::INFINITY);
                }
            }
        }
    }
}
