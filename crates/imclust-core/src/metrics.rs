//! External clustering metrics: contingency table, ACC (Hungarian), NMI, ARI, zero-shot accuracy.
//!
//! Every clustering metric here is a function of the contingency table alone, so the labels are
//! read exactly once (to build a [`Contingency`]) and all further work is on the table, whose size
//! is `clusters x classes` rather than `N`. This keeps evaluation of millions of points cheap and
//! lets [`scores`] compute all three metrics from a single table.
//!
//! NMI and ARI reproduce scikit-learn's `normalized_mutual_info_score` (arithmetic mean, natural
//! log) and `adjusted_rand_score`, edge cases included, so numbers are comparable with published
//! results computed in Python.

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

use crate::error::{CoreError, Result};

/// Largest dense table we agree to allocate (cells). Ids are used directly as indices, so a stray
/// huge id would otherwise try to allocate an absurd table; beyond this, compact the ids first.
const MAX_CELLS: usize = 1 << 30;

/// Co-occurrence counts of cluster ids (rows) and class labels (columns).
///
/// Ids index the table directly (`clusters = max id + 1`), so ids that never occur give empty rows
/// or columns; the metrics ignore those, matching scikit-learn, which only sees the ids present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contingency {
    /// Number of rows: largest cluster id + 1.
    pub clusters: usize,
    /// Number of columns: largest class label + 1.
    pub classes: usize,
    /// `clusters x classes` counts, row-major: `counts[cluster * classes + class]`.
    pub counts: Vec<u64>,
}

impl Contingency {
    /// Builds the table in one pass over the pairs (plus one pass to find the id ranges).
    ///
    /// Errors if the slices differ in length or are empty (no metric is defined on zero points),
    /// or if the ids are so large that the dense table would be unreasonably big.
    pub fn new(assignments: &[u32], labels: &[u32]) -> Result<Contingency> {
        check_pair(assignments, labels)?;
        let clusters = assignments.iter().copied().max().unwrap_or(0) as usize + 1;
        let classes = labels.iter().copied().max().unwrap_or(0) as usize + 1;
        let cells = clusters
            .checked_mul(classes)
            .filter(|&c| c <= MAX_CELLS)
            .ok_or_else(|| {
                CoreError::Data(format!(
                    "contingency table of {clusters} clusters x {classes} classes is too large; \
                     remap cluster ids and labels to a dense range 0..n first"
                ))
            })?;
        let mut counts = vec![0u64; cells];
        for (&a, &l) in assignments.iter().zip(labels) {
            counts[a as usize * classes + l as usize] += 1;
        }
        Ok(Contingency {
            clusters,
            classes,
            counts,
        })
    }

    /// Count of points in `cluster` carrying label `class`.
    ///
    /// # Panics
    /// If `cluster >= self.clusters` or `class >= self.classes`.
    pub fn count(&self, cluster: usize, class: usize) -> u64 {
        assert!(
            cluster < self.clusters && class < self.classes,
            "index out of table"
        );
        self.counts[cluster * self.classes + class]
    }

    /// The row of one cluster: its count per class.
    pub fn row(&self, cluster: usize) -> &[u64] {
        &self.counts[cluster * self.classes..(cluster + 1) * self.classes]
    }

    /// Total number of points `N`.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Points per cluster (row sums), including empty ids.
    pub fn cluster_sizes(&self) -> Vec<u64> {
        self.counts
            .chunks_exact(self.classes)
            .map(|r| r.iter().sum())
            .collect()
    }

    /// Points per class (column sums), including empty labels.
    pub fn class_sizes(&self) -> Vec<u64> {
        let mut sizes = vec![0u64; self.classes];
        for row in self.counts.chunks_exact(self.classes) {
            for (s, &c) in sizes.iter_mut().zip(row) {
                *s += c;
            }
        }
        sizes
    }

    /// Clustering accuracy: the best one-to-one cluster/class matching (Hungarian), matched
    /// points over `N`. Clusters or classes left unmatched (when their numbers differ) count as
    /// wrong, so splitting a class into several clusters is not rewarded.
    pub fn accuracy(&self) -> f64 {
        // Drop empty rows/columns: they cannot add to the matching and the Hungarian cost is
        // cubic in the table side.
        let rows: Vec<usize> = (0..self.clusters)
            .filter(|&r| self.row(r).iter().any(|&c| c > 0))
            .collect();
        let cols: Vec<usize> = self
            .class_sizes()
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s > 0)
            .map(|(c, _)| c)
            .collect();
        // Counts fit in i64 (N < 2^63); pathfinding needs a signed weight type.
        let w = |r: usize, c: usize| self.count(rows[r], cols[c]) as i64;
        // kuhn_munkres requires rows <= columns; matching is symmetric, so transpose if needed.
        let matched = if rows.len() <= cols.len() {
            kuhn_munkres(&Matrix::from_fn(rows.len(), cols.len(), |(r, c)| w(r, c))).0
        } else {
            kuhn_munkres(&Matrix::from_fn(cols.len(), rows.len(), |(c, r)| w(r, c))).0
        };
        matched as f64 / self.total() as f64
    }

    /// Normalized mutual information, arithmetic-mean normalisation, natural log; the same
    /// arithmetic and special cases as scikit-learn's `normalized_mutual_info_score`.
    pub fn nmi(&self) -> f64 {
        let row_sizes: Vec<u64> = self.cluster_sizes();
        let col_sizes: Vec<u64> = self.class_sizes();
        let nonempty_rows = row_sizes.iter().filter(|&&s| s > 0).count();
        let nonempty_cols = col_sizes.iter().filter(|&&s| s > 0).count();
        // Neither labelling splits the data: both have zero entropy, a perfect match.
        if nonempty_rows == 1 && nonempty_cols == 1 {
            return 1.0;
        }
        let mi = self.mutual_info(&row_sizes, &col_sizes, nonempty_rows, nonempty_cols);
        // With the single-cluster case handled, MI = 0 cannot be a perfect match.
        if mi == 0.0 {
            return 0.0;
        }
        let n = self.total() as f64;
        let normalizer = (entropy(&row_sizes, n) + entropy(&col_sizes, n)) / 2.0;
        // Older scikit-learn guarded the division with eps; keep it (no effect when MI > 0).
        mi / normalizer.max(f64::EPSILON)
    }

    /// Mutual information in nats, term by term as scikit-learn computes it (each term below
    /// eps zeroed, total clipped at 0), so rounding matches closely.
    fn mutual_info(
        &self,
        rows: &[u64],
        cols: &[u64],
        nonempty_rows: usize,
        nonempty_cols: usize,
    ) -> f64 {
        // A single-cluster labelling has zero entropy, hence zero MI.
        if nonempty_rows == 1 || nonempty_cols == 1 {
            return 0.0;
        }
        let n = self.total() as f64;
        let log_n = n.ln();
        let mut mi = 0.0f64;
        for (r, row) in self.counts.chunks_exact(self.classes).enumerate() {
            for (c, &nij) in row.iter().enumerate() {
                if nij == 0 {
                    continue;
                }
                let nij_f = nij as f64;
                let p = nij_f / n;
                // u128 product: pi * pj can exceed u64 for very large N.
                let outer = (u128::from(rows[r]) * u128::from(cols[c])) as f64;
                let log_outer = -outer.ln() + log_n + log_n;
                let term = p * (nij_f.ln() - log_n) + p * log_outer;
                if term.abs() >= f64::EPSILON {
                    mi += term;
                }
            }
        }
        mi.max(0.0)
    }

    /// Adjusted Rand index from the pair-confusion matrix, exactly as scikit-learn's
    /// `adjusted_rand_score`; integer parts in `i128` so `N^4`-sized products cannot overflow.
    pub fn ari(&self) -> f64 {
        let n = i128::from(self.total());
        let sq = |v: u64| i128::from(v) * i128::from(v);
        let sum_squares: i128 = self.counts.iter().map(|&c| sq(c)).sum();
        let row_sq: i128 = self.cluster_sizes().into_iter().map(sq).sum();
        let col_sq: i128 = self.class_sizes().into_iter().map(sq).sum();
        // Ordered pairs: same in both (tp), same class only (fn), same cluster only (fp).
        let tp = sum_squares - n;
        let fp = row_sq - sum_squares;
        let fn_ = col_sq - sum_squares;
        let tn = n * n - fp - fn_ - sum_squares;
        // Full agreement (also every degenerate single-cluster/singleton pairing of both sides).
        if fn_ == 0 && fp == 0 {
            return 1.0;
        }
        let num = tp * tn - fn_ * fp;
        let den = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
        2.0 * num as f64 / den as f64
    }
}

/// Entropy in nats of the distribution given by `sizes` (zeros skipped), `n = sum(sizes)`.
fn entropy(sizes: &[u64], n: f64) -> f64 {
    if sizes.iter().filter(|&&s| s > 0).count() <= 1 {
        return 0.0;
    }
    let log_n = n.ln();
    -sizes
        .iter()
        .filter(|&&s| s > 0)
        .map(|&s| {
            let s = s as f64;
            (s / n) * (s.ln() - log_n)
        })
        .sum::<f64>()
}

fn check_pair(assignments: &[u32], labels: &[u32]) -> Result<()> {
    if assignments.len() != labels.len() {
        return Err(CoreError::Shape(format!(
            "{} cluster assignments but {} labels; pass one of each per point",
            assignments.len(),
            labels.len()
        )));
    }
    if assignments.is_empty() {
        return Err(CoreError::Data(
            "no points to evaluate; metrics need at least one assignment/label pair".into(),
        ));
    }
    Ok(())
}

/// Clustering accuracy under the optimal one-to-one cluster/class matching; see
/// [`Contingency::accuracy`]. Works for any number of clusters vs classes.
pub fn accuracy(assignments: &[u32], labels: &[u32]) -> Result<f64> {
    Ok(Contingency::new(assignments, labels)?.accuracy())
}

/// Normalized mutual information as scikit-learn's default `normalized_mutual_info_score`;
/// see [`Contingency::nmi`].
pub fn nmi(assignments: &[u32], labels: &[u32]) -> Result<f64> {
    Ok(Contingency::new(assignments, labels)?.nmi())
}

/// Adjusted Rand index as scikit-learn's `adjusted_rand_score`; see [`Contingency::ari`].
pub fn ari(assignments: &[u32], labels: &[u32]) -> Result<f64> {
    Ok(Contingency::new(assignments, labels)?.ari())
}

/// Fraction of images whose most similar class seed is their label.
///
/// `similarities` is `n x k` row-major (images x class seeds). The prediction is the first
/// maximum of a row, so ties resolve like `numpy.argmax`. NaN similarities and labels `>= k`
/// are errors: both mean the inputs do not describe the same `k` classes.
pub fn zero_shot_accuracy(similarities: &[f32], n: usize, k: usize, labels: &[u32]) -> Result<f64> {
    if n == 0 || k == 0 {
        return Err(CoreError::Shape(format!(
            "zero-shot needs n > 0 images and k > 0 classes, got n = {n}, k = {k}"
        )));
    }
    if n.checked_mul(k) != Some(similarities.len()) {
        return Err(CoreError::Shape(format!(
            "similarities has {} values, expected n x k = {n} x {k}",
            similarities.len()
        )));
    }
    if labels.len() != n {
        return Err(CoreError::Shape(format!(
            "{} labels for {n} images",
            labels.len()
        )));
    }
    let mut correct = 0usize;
    for (i, (row, &label)) in similarities.chunks_exact(k).zip(labels).enumerate() {
        if label as usize >= k {
            return Err(CoreError::Data(format!(
                "label {label} of image {i} is not one of the {k} class seeds"
            )));
        }
        let mut best = 0usize;
        for (j, &s) in row.iter().enumerate() {
            if s.is_nan() {
                return Err(CoreError::Data(format!("similarity [{i}, {j}] is NaN")));
            }
            if s > row[best] {
                best = j;
            }
        }
        correct += usize::from(best == label as usize);
    }
    Ok(correct as f64 / n as f64)
}

/// The three clustering scores reported together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Hungarian-matched accuracy, see [`accuracy`].
    pub acc: f64,
    /// Normalized mutual information, see [`nmi`].
    pub nmi: f64,
    /// Adjusted Rand index, see [`ari`].
    pub ari: f64,
}

/// ACC, NMI and ARI from one contingency table, so the labels are read once.
pub fn scores(assignments: &[u32], labels: &[u32]) -> Result<Scores> {
    let t = Contingency::new(assignments, labels)?;
    Ok(Scores {
        acc: t.accuracy(),
        nmi: t.nmi(),
        ari: t.ari(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from scikit-learn 1.9.1 (`normalized_mutual_info_score(labels, assign)`,
    /// `adjusted_rand_score(labels, assign)`) and scipy `linear_sum_assignment` for ACC.
    fn check(a: &[u32], l: &[u32], acc: f64, nmi_: f64, ari_: f64) {
        let s = scores(a, l).unwrap();
        assert!((s.acc - acc).abs() < 1e-12, "acc {} vs {acc}", s.acc);
        assert!((s.nmi - nmi_).abs() < 1e-12, "nmi {} vs {nmi_}", s.nmi);
        assert!((s.ari - ari_).abs() < 1e-12, "ari {} vs {ari_}", s.ari);
        assert_eq!(accuracy(a, l).unwrap(), s.acc);
        assert_eq!(nmi(a, l).unwrap(), s.nmi);
        assert_eq!(ari(a, l).unwrap(), s.ari);
    }

    #[test]
    fn perfect_match_with_permuted_ids() {
        check(
            &[2, 2, 0, 0, 1, 1, 1],
            &[0, 0, 1, 1, 2, 2, 2],
            1.0,
            1.0,
            1.0,
        );
    }

    #[test]
    fn more_clusters_than_classes() {
        check(
            &[0, 0, 1, 2, 2, 3],
            &[0, 0, 0, 1, 1, 1],
            0.6666666666666666,
            0.6853314789615865,
            0.375,
        );
    }

    #[test]
    fn fewer_clusters_than_classes() {
        check(
            &[0, 0, 0, 1, 1, 1, 1, 0],
            &[0, 0, 1, 1, 2, 2, 3, 3],
            0.5,
            0.3333333333333335,
            0.045454545454545456,
        );
    }

    #[test]
    fn all_in_one_cluster() {
        check(&[0, 0, 0, 0, 0, 0], &[0, 1, 1, 2, 2, 2], 0.5, 0.0, 0.0);
    }

    #[test]
    fn both_single_cluster_is_perfect() {
        check(&[3, 3, 3, 3], &[1, 1, 1, 1], 1.0, 1.0, 1.0);
    }

    #[test]
    fn negative_ari() {
        check(&[0, 1, 0, 1], &[0, 0, 1, 1], 0.5, 0.0, -0.5);
    }

    #[test]
    fn all_singletons_vs_one_class() {
        check(&[0, 1, 2, 3], &[0, 0, 0, 0], 0.25, 0.0, 0.0);
    }

    #[test]
    fn sparse_ids_ignore_empty_rows_and_columns() {
        check(
            &[7, 7, 2, 2, 9, 0],
            &[5, 5, 5, 1, 1, 1],
            0.5,
            0.45688765264105763,
            0.0625,
        );
    }

    #[test]
    fn random_50() {
        let a = [
            2, 0, 3, 1, 0, 3, 2, 2, 3, 1, 3, 1, 2, 2, 0, 0, 0, 2, 2, 3, 2, 0, 3, 3, 2, 2, 0, 0, 1,
            1, 0, 3, 1, 2, 0, 1, 0, 2, 3, 0, 2, 0, 1, 0, 2, 1, 1, 1, 1, 1,
        ];
        let l = [
            1, 2, 1, 0, 0, 0, 0, 0, 0, 1, 2, 2, 1, 1, 0, 2, 1, 2, 2, 2, 2, 2, 1, 1, 0, 2, 1, 1, 0,
            0, 1, 1, 1, 1, 2, 0, 2, 2, 1, 0, 0, 1, 1, 0, 2, 1, 0, 0, 0, 1,
        ];
        check(&a, &l, 0.36, 0.056868642898257785, -0.000676935694363534);
    }

    #[test]
    fn correlated_60() {
        let a = [
            2, 2, 3, 1, 3, 4, 1, 1, 2, 2, 4, 2, 2, 3, 4, 1, 4, 0, 2, 2, 3, 2, 1, 2, 4, 2, 3, 2, 4,
            2, 3, 1, 3, 0, 3, 0, 3, 1, 3, 1, 1, 4, 3, 1, 2, 4, 2, 3, 4, 1, 2, 0, 1, 1, 2, 1, 3, 3,
            4, 4,
        ];
        let l = [
            1, 1, 2, 0, 2, 2, 0, 0, 1, 1, 3, 1, 2, 0, 3, 0, 3, 1, 1, 1, 2, 1, 0, 1, 3, 1, 2, 1, 3,
            1, 2, 0, 2, 1, 2, 0, 2, 3, 1, 0, 0, 3, 2, 0, 1, 3, 1, 2, 3, 0, 3, 3, 1, 0, 1, 0, 1, 2,
            3, 2,
        ];
        check(
            &a,
            &l,
            0.7833333333333333,
            0.5618854231643057,
            0.5440298145744583,
        );
    }

    #[test]
    fn two_million_points() {
        // Large N: pair counts reach ~4e12 and their products ~1e25, beyond u64.
        let n = 2_000_000u64;
        let a: Vec<u32> = (0..n).map(|i| ((i * 7919) % 1009 % 13) as u32).collect();
        let l: Vec<u32> = (0..n)
            .zip(&a)
            .map(|(i, &c)| {
                if i % 10 < 7 {
                    c % 10
                } else {
                    ((i / 3) % 10) as u32
                }
            })
            .collect();
        check(&a, &l, 0.562832, 0.5234688487301845, 0.38293192789921154);
    }

    #[test]
    fn contingency_layout_and_accessors() {
        let t = Contingency::new(&[0, 0, 2, 2, 2], &[1, 0, 1, 1, 0]).unwrap();
        assert_eq!((t.clusters, t.classes), (3, 2));
        assert_eq!(t.counts, vec![1, 1, 0, 0, 1, 2]);
        assert_eq!(t.count(2, 1), 2);
        assert_eq!(t.row(1), &[0, 0]);
        assert_eq!(t.total(), 5);
        assert_eq!(t.cluster_sizes(), vec![2, 0, 3]);
        assert_eq!(t.class_sizes(), vec![2, 3]);
    }

    #[test]
    fn errors_on_length_mismatch_and_empty() {
        assert!(matches!(
            Contingency::new(&[0, 1], &[0]),
            Err(CoreError::Shape(_))
        ));
        assert!(matches!(
            Contingency::new(&[], &[]),
            Err(CoreError::Data(_))
        ));
        assert!(accuracy(&[0], &[]).is_err());
        assert!(nmi(&[], &[]).is_err());
        assert!(ari(&[1, 2, 3], &[1, 2]).is_err());
        assert!(scores(&[], &[]).is_err());
    }

    #[test]
    fn error_on_huge_ids() {
        assert!(matches!(
            Contingency::new(&[u32::MAX], &[u32::MAX]),
            Err(CoreError::Data(_))
        ));
    }

    #[test]
    fn zero_shot_argmax_first_on_ties() {
        #[rustfmt::skip]
        let sims = [
            0.9, 0.1, 0.0,  // -> 0
            0.2, 0.3, 0.8,  // -> 2
            0.5, 0.5, 0.1,  // tie -> 0
            0.1, 0.7, 0.7,  // tie -> 1
        ];
        assert_eq!(zero_shot_accuracy(&sims, 4, 3, &[0, 2, 0, 1]).unwrap(), 1.0);
        assert_eq!(
            zero_shot_accuracy(&sims, 4, 3, &[0, 1, 1, 2]).unwrap(),
            0.25
        );
    }

    #[test]
    fn zero_shot_errors() {
        let sims = [0.1f32, 0.2, 0.3, 0.4];
        assert!(matches!(
            zero_shot_accuracy(&sims, 2, 3, &[0, 1]),
            Err(CoreError::Shape(_))
        ));
        assert!(matches!(
            zero_shot_accuracy(&sims, 2, 2, &[0]),
            Err(CoreError::Shape(_))
        ));
        assert!(matches!(
            zero_shot_accuracy(&[], 0, 2, &[]),
            Err(CoreError::Shape(_))
        ));
        assert!(matches!(
            zero_shot_accuracy(&sims, 2, 2, &[0, 2]),
            Err(CoreError::Data(_))
        ));
        let nan = [0.1f32, f32::NAN, 0.3, 0.4];
        assert!(matches!(
            zero_shot_accuracy(&nan, 2, 2, &[0, 1]),
            Err(CoreError::Data(_))
        ));
    }
}
