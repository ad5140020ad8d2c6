//! Dense helpers on row-major `f32` matrices: the GEMM wrapper and row norms.

use rayon::prelude::*;

/// Rows per block of the assignment kernel, for `k` centroids. Small `k` (the direct kernel of
/// [`crate::smallk`]) is memory-bound: 256 rows (512 KiB at d = 512) stay in L2 until the
/// partial sums re-read them. Larger `k` goes through the GEMM, where larger blocks amortise its
/// packing of the centroids (medians of interleaved runs here: 512 rows best at k = 100, 1024 at
/// k = 1000, by about 10% over the next size; run-to-run noise on this VM is +-20%). Every block of a
/// pass has exactly this many rows (the last one is zero-padded) and the number depends only on
/// `k`, so the GEMM's internal blocking, and with it the rounding of each dot product, is the
/// same for a row wherever it sits: results do not depend on how rows were split into shards.
pub fn block_rows(k: usize) -> usize {
    if k <= crate::smallk::MAX_K {
        256
    } else if k <= 256 {
        512
    } else {
        1024
    }
}

/// Block size of the helpers in this module ([`sq_distances`]), where `k` is small.
pub const BLOCK_ROWS: usize = 256;

/// `out[r * k + j] = dot(x[r], c[j])` for a block of `rows` rows of `x` (`rows x d`) against
/// `k` vectors `c` (`k x d`), single-threaded (callers parallelise over blocks). With this
/// row-major output the GEMM runs as `C X^T`, its micro-kernel spanning centroids; measured
/// here, that is faster than the column-major alternative for k <= 100 and equal above.
pub fn dot_block(x: &[f32], rows: usize, d: usize, c: &[f32], k: usize, out: &mut [f32]) {
    assert_eq!(x.len(), rows * d, "dot_block: x has {} values, expected {rows} x {d}", x.len());
    assert_eq!(c.len(), k * d, "dot_block: c has {} values, expected {k} x {d}", c.len());
    assert_eq!(out.len(), rows * k, "dot_block: out has {} values, expected {rows} x {k}", out.len());
    if rows == 0 || k == 0 {
        return;
    }
    if d == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: `gemm` reads an m x k matrix at `lhs` with strides (cs = 1, rs = d): the last
    // element read is x[(rows-1)*d + d-1], inside `x` (len rows*d, asserted above). It reads the
    // k x n right-hand side at `rhs` with strides (cs = d, rs = 1), i.e. element (i, j) at
    // c[j*d + i], the last at c[(k-1)*d + d-1], inside `c` (len k*d). It writes m x n values at
    // `dst` with strides (cs = 1, rs = k), element (r, j) at out[r*k + j], the last at
    // out[(rows-1)*k + k-1], inside `out` (len rows*k). `read_dst = false` means `out` is not read, so its prior contents do not
    // matter. The three slices are distinct borrows (`out` is `&mut`), so nothing aliases, and
    // all are valid for the whole call since we hold the borrows.
    unsafe {
        gemm::gemm(
            rows,
            k,
            d,
            out.as_mut_ptr(),
            1,
            k as isize,
            false,
            x.as_ptr(),
            1,
            d as isize,
            c.as_ptr(),
            d as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Squared L2 norm of each row, accumulated in f64 and rounded once.
pub fn row_sq_norms(x: &[f32], d: usize) -> Vec<f32> {
    if d == 0 {
        return vec![0.0; x.len()];
    }
    x.par_chunks(d).map(|r| sq_norm(r) as f32).collect()
}

/// Squared L2 norm in f64.
#[inline]
pub fn sq_norm(v: &[f32]) -> f64 {
    v.iter().map(|&a| (a as f64) * (a as f64)).sum()
}

/// Squared Euclidean distance in f64.
#[inline]
pub fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| {
        let t = x as f64 - y as f64;
        t * t
    }).sum()
}

/// Scales each row to unit L2 norm; all-zero rows stay zero.
pub fn normalize_rows(x: &mut [f32], d: usize) {
    if d == 0 {
        return;
    }
    x.par_chunks_mut(d).for_each(|r| {
        let n = sq_norm(r).sqrt();
        if n > 0.0 {
            let inv = 1.0 / n;
            r.iter_mut().for_each(|v| *v = (*v as f64 * inv) as f32);
        }
    });
}

/// Squared Euclidean distances of every row of `x` (`n x d`, with squared norms `xn`) to
/// each of the `m` rows of `c`: an `n x m` row-major matrix, computed blockwise through GEMM.
/// Used by the inits, where `m` is small (candidates of one k-means++ step).
pub fn sq_distances(x: &[f32], xn: &[f32], d: usize, c: &[f32]) -> Vec<f32> {
    let n = xn.len();
    let m = c.len().checked_div(d).unwrap_or(0);
    let cn: Vec<f32> = c.chunks(d.max(1)).map(|r| sq_norm(r) as f32).collect();
    let mut out = vec![0.0f32; n * m];
    out.par_chunks_mut(BLOCK_ROWS * m.max(1))
        .zip(x.par_chunks(BLOCK_ROWS * d.max(1)))
        .zip(xn.par_chunks(BLOCK_ROWS))
        .for_each(|((o, xb), xnb)| {
            let rows = xnb.len();
            with_padded_block(xb, rows, d, |xp| {
                let mut full = vec![0.0f32; BLOCK_ROWS * m];
                dot_block(xp, BLOCK_ROWS, d, c, m, &mut full);
                for r in 0..rows {
                    for j in 0..m {
                        o[r * m + j] = (xnb[r] - 2.0 * full[r * m + j] + cn[j]).max(0.0);
                    }
                }
            });
        });
    out
}

/// Calls `f` with a `BLOCK_ROWS x d` block: `x` itself when it is full, else a zero-padded copy.
pub fn with_padded_block<R>(x: &[f32], rows: usize, d: usize, f: impl FnOnce(&[f32]) -> R) -> R {
    with_padded(x, rows, BLOCK_ROWS, d, f)
}

/// Calls `f` with a `block x d` block: `x` itself when it has `block` rows, else a zero-padded copy.
pub fn with_padded<R>(x: &[f32], rows: usize, block: usize, d: usize, f: impl FnOnce(&[f32]) -> R) -> R {
    if rows == block {
        f(x)
    } else {
        let mut padded = vec![0.0f32; block * d];
        padded[..rows * d].copy_from_slice(&x[..rows * d]);
        f(&padded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.normal() as f32).collect()
    }

    #[test]
    fn dot_block_matches_naive() {
        let (rows, d, k) = (37, 29, 11);
        let x = random(rows * d, 1);
        let c = random(k * d, 2);
        let mut out = vec![0.0; rows * k];
        dot_block(&x, rows, d, &c, k, &mut out);
        for r in 0..rows {
            for j in 0..k {
                let want: f64 = (0..d).map(|i| x[r * d + i] as f64 * c[j * d + i] as f64).sum();
                assert!((out[r * k + j] as f64 - want).abs() < 1e-4, "{r} {j}");
            }
        }
    }

    #[test]
    fn padded_block_rows_do_not_depend_on_position() {
        // The same row placed at different positions of a padded block gives bit-identical dots.
        let d = 512;
        let k = 100;
        let x = random(BLOCK_ROWS * d, 3);
        let c = random(k * d, 4);
        let mut full = vec![0.0; BLOCK_ROWS * k];
        dot_block(&x, BLOCK_ROWS, d, &c, k, &mut full);
        for start in [1usize, 17, 100, 255] {
            let rows = BLOCK_ROWS - start;
            let part = &x[start * d..];
            let got = with_padded_block(part, rows, d, |p| {
                let mut o = vec![0.0; BLOCK_ROWS * k];
                dot_block(p, BLOCK_ROWS, d, &c, k, &mut o);
                o
            });
            for r in 0..rows {
                for j in 0..k {
                    let (g, f) = (got[r * k + j], full[(r + start) * k + j]);
                    assert_eq!(g.to_bits(), f.to_bits());
                }
            }
        }
    }

    #[test]
    fn sq_distances_match_naive() {
        let (n, d, m) = (300, 7, 3);
        let x = random(n * d, 5);
        let c = random(m * d, 6);
        let xn = row_sq_norms(&x, d);
        let got = sq_distances(&x, &xn, d, &c);
        for i in 0..n {
            for j in 0..m {
                let want = sq_dist(&x[i * d..(i + 1) * d], &c[j * d..(j + 1) * d]);
                assert!((got[i * m + j] as f64 - want).abs() < 1e-4 * (1.0 + want));
            }
        }
    }

    #[test]
    fn normalize_rows_gives_unit_norms() {
        let mut x = vec![3.0, 4.0, 0.0, 0.0, 1.0, 1.0];
        normalize_rows(&mut x, 2);
        assert_eq!(x[..2], [0.6, 0.8]);
        assert_eq!(x[2..4], [0.0, 0.0]);
        assert!((x[4] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
    }
}
