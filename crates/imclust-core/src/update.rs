//! Centroid updates from reduced partial sums: Lloyd (full batch) and mini-batch (Sculley
//! 2010), Euclidean and spherical.

use crate::kernel::{Centroids, Metric, PartialSums};
use crate::linalg;

/// Re-seeds empty clusters from the farthest rows kept in `ps`, deterministically.
///
/// Empty clusters are taken in increasing index; each gets the next farthest row (by distance
/// to its centroid, ties by lower row index) whose cluster still has more than one row. The row
/// is moved exactly: subtracted from its cluster's sums and count and added to the empty one.
/// This is scikit-learn's relocation rule. Returns the number of clusters re-seeded; a cluster
/// left empty (no candidate) keeps its previous centroid.
pub fn relocate_empty(ps: &mut PartialSums) -> usize {
    let empties: Vec<usize> = (0..ps.k).filter(|&j| ps.counts[j] == 0).collect();
    if empties.is_empty() {
        return 0;
    }
    let candidates = std::mem::take(&mut ps.farthest);
    let mut next = candidates.iter();
    let d = ps.d;
    let mut moved = 0;
    'empty: for j in empties {
        for cand in next.by_ref() {
            let from = cand.cluster as usize;
            if ps.counts[from] <= 1 {
                continue;
            }
            crate::fixed::subtract(&mut ps.sums[from * d..(from + 1) * d], &cand.vector, ps.scale);
            ps.counts[from] -= 1;
            crate::fixed::accumulate(&mut ps.sums[j * d..(j + 1) * d], &cand.vector, ps.scale);
            ps.counts[j] = 1;
            moved += 1;
            continue 'empty;
        }
        break;
    }
    ps.farthest = candidates;
    moved
}

/// Total squared centroid shift `sum_k ||new_k - old_k||^2`.
pub fn squared_shift(old: &[f32], new: &[f32]) -> f64 {
    linalg::sq_dist(old, new)
}

fn finish(v: &[f64], metric: Metric, out: &mut [f32]) -> bool {
    match metric {
        Metric::Euclidean => {
            for (o, &x) in out.iter_mut().zip(v) {
                *o = x as f32;
            }
            true
        }
        Metric::Cosine => {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n == 0.0 {
                return false; // keep the previous direction
            }
            for (o, &x) in out.iter_mut().zip(v) {
                *o = (x / n) as f32;
            }
            true
        }
    }
}

/// Lloyd step: each non-empty cluster's centroid becomes the mean of its rows (Euclidean) or
/// the normalised sum (spherical). Empty clusters keep their centroid (call
/// [`relocate_empty`] first). Returns the new centroids and the squared shift ([`squared_shift`]).
pub fn lloyd(ps: &PartialSums, old: &Centroids, metric: Metric) -> (Vec<f32>, f64) {
    let d = old.d;
    let mut new = old.data.clone();
    for j in 0..old.k {
        if ps.counts[j] == 0 {
            continue;
        }
        let v = match metric {
            Metric::Euclidean => ps.mean(j),
            Metric::Cosine => ps.sum(j),
        };
        finish(&v, metric, &mut new[j * d..(j + 1) * d]);
    }
    let shift = squared_shift(&old.data, &new);
    (new, shift)
}

/// Mini-batch step (Sculley 2010, per-centre learning rate 1/count): for each cluster with
/// `m` batch rows summing to `s`, `c <- (c * n + s) / (n + m)` and `n <- n + m`, where `n`
/// counts all rows the centre has absorbed so far (`seen`). Spherical centres are then
/// normalised. Clusters without batch rows do not move.
pub fn minibatch(ps: &PartialSums, old: &Centroids, seen: &mut [u64], metric: Metric) -> (Vec<f32>, f64) {
    let d = old.d;
    let mut new = old.data.clone();
    for j in 0..old.k {
        let m = ps.counts[j];
        if m == 0 {
            continue;
        }
        let n = seen[j];
        let total = (n + m) as f64;
        let s = ps.sum(j);
        let c = old.row(j);
        let v: Vec<f64> = c.iter().zip(&s).map(|(&cv, &sv)| (cv as f64 * n as f64 + sv) / total).collect();
        finish(&v, metric, &mut new[j * d..(j + 1) * d]);
        seen[j] = n + m;
    }
    let shift = squared_shift(&old.data, &new);
    (new, shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::FixedScale;
    use crate::kernel::{RowIds, Rows, partial_sums};

    fn sums_of(x: &[f32], d: usize, c: &Centroids, metric: Metric, cap: usize) -> PartialSums {
        let xn = linalg::row_sq_norms(x, d);
        let rows = Rows { data: x, sq_norms: &xn, d, ids: RowIds::From(0) };
        partial_sums(&rows, c, metric, FixedScale::for_data(100.0, 1000).unwrap(), cap).unwrap()
    }

    #[test]
    fn lloyd_moves_to_means() {
        let x = [0.0f32, 0.0, 2.0, 0.0, 10.0, 1.0, 12.0, 3.0];
        let c = Centroids::new(vec![1.0, 0.0, 9.0, 0.0], 2, 2).unwrap();
        let ps = sums_of(&x, 2, &c, Metric::Euclidean, 0);
        let (new, shift) = lloyd(&ps, &c, Metric::Euclidean);
        assert_eq!(new, vec![1.0, 0.0, 11.0, 2.0]);
        // ||(0,0)||^2 + ||(2,2)||^2.
        assert_eq!(shift, 8.0);
    }

    #[test]
    fn spherical_lloyd_normalises_sums() {
        let x = [1.0f32, 0.0, 0.0, 1.0];
        let c = Centroids::new(vec![1.0, 1.0], 1, 2).unwrap();
        let ps = sums_of(&x, 2, &c, Metric::Cosine, 0);
        let (new, _) = lloyd(&ps, &c, Metric::Cosine);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((new[0] - h).abs() < 1e-7 && (new[1] - h).abs() < 1e-7);
    }

    #[test]
    fn empty_cluster_gets_the_farthest_row() {
        // Centroid 1 is far away: nobody picks it; the farthest row (x=10) moves to it.
        let x = [0.0f32, 1.0, 2.0, 10.0];
        let c = Centroids::new(vec![1.0, 100.0], 2, 1).unwrap();
        let mut ps = sums_of(&x, 1, &c, Metric::Euclidean, 2);
        assert_eq!(ps.counts, vec![4, 0]);
        assert_eq!(relocate_empty(&mut ps), 1);
        assert_eq!(ps.counts, vec![3, 1]);
        let (new, _) = lloyd(&ps, &c, Metric::Euclidean);
        assert_eq!(new, vec![1.0, 10.0]);
    }

    #[test]
    fn minibatch_uses_per_centre_learning_rate() {
        let c = Centroids::new(vec![0.0, 0.0], 1, 2).unwrap();
        let mut seen = vec![0u64];
        // First batch: the centre jumps to the batch mean.
        let ps = sums_of(&[2.0, 2.0, 4.0, 4.0], 2, &c, Metric::Euclidean, 0);
        let (new, _) = minibatch(&ps, &c, &mut seen, Metric::Euclidean);
        assert_eq!(new, vec![3.0, 3.0]);
        assert_eq!(seen, vec![2]);
        // Second batch of one row at (6, 0): c = (3*2 + 6)/3, (3*2 + 0)/3.
        let c2 = Centroids::new(new, 1, 2).unwrap();
        let ps = sums_of(&[6.0, 0.0], 2, &c2, Metric::Euclidean, 0);
        let (new, _) = minibatch(&ps, &c2, &mut seen, Metric::Euclidean);
        assert_eq!(new, vec![4.0, 2.0]);
        assert_eq!(seen, vec![3]);
    }

    #[test]
    fn shift_is_squared_distance() {
        assert_eq!(squared_shift(&[1.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(squared_shift(&[2.0, 0.0, 1.0, 1.0], &[0.0, 0.0, 0.0, 0.0]), 6.0);
    }
}
