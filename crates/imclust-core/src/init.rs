//! Initial centroids: given seeds, random rows, k-means++ (greedy, as scikit-learn) and
//! k-means|| (Bahmani et al. 2012).
//!
//! All take the prepared rows (already normalised for the cosine metric, so that squared
//! Euclidean distance orders points like cosine distance) and a seed, and are deterministic.

use crate::error::{CoreError, Result};
use crate::fixed::FixedScale;
use crate::kernel::{self, Centroids, Metric, RowIds, Rows};
use crate::linalg;
use crate::rng::{self, Rng};

/// How to choose the initial centroids.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// Given vectors, `k x d` row-major (e.g. text-prompt seeds).
    Seeds(Vec<f32>),
    /// `k` distinct rows chosen uniformly.
    Random,
    /// Greedy k-means++ with `2 + ln k` local trials per centre.
    KMeansPlusPlus,
    /// k-means||: `rounds` rounds sampling each row with probability
    /// `min(1, oversampling * d^2 / cost)`, then weighted k-means++ over the candidates.
    /// `oversampling` is a multiple of k (Bahmani et al. suggest l = 2k: 2.0).
    KMeansParallel { oversampling: f64, rounds: usize },
}

impl Init {
    pub fn name(&self) -> &'static str {
        match self {
            Init::Seeds(_) => "seeds",
            Init::Random => "random",
            Init::KMeansPlusPlus => "kmeans++",
            Init::KMeansParallel { .. } => "kmeans-parallel",
        }
    }

    /// Whether different seeds can give different centroids (n_redo is pointless otherwise).
    pub fn is_random(&self) -> bool {
        !matches!(self, Init::Seeds(_))
    }
}

/// Computes the initial `k x d` centroids.
pub fn initial_centroids(
    init: &Init,
    rows: &Rows<'_>,
    k: usize,
    metric: Metric,
    scale: FixedScale,
    seed: u64,
) -> Result<Vec<f32>> {
    let n = rows.n();
    let d = rows.d;
    if k == 0 {
        return Err(CoreError::Param("k must be at least 1".into()));
    }
    if k > n && !matches!(init, Init::Seeds(_)) {
        return Err(CoreError::Param(format!("k = {k} is larger than the number of rows ({n})")));
    }
    match init {
        Init::Seeds(s) => {
            if s.len() != k * d {
                return Err(CoreError::Shape(format!(
                    "seed centroids have {} values, expected k x d = {k} x {d}",
                    s.len()
                )));
            }
            let mut s = s.clone();
            if metric == Metric::Cosine {
                linalg::normalize_rows(&mut s, d);
            }
            Ok(s)
        }
        Init::Random => {
            let mut r = Rng::new(seed);
            Ok(gather(rows, &r.distinct(n, k)))
        }
        Init::KMeansPlusPlus => {
            let mut r = Rng::new(seed);
            let idx = kmeans_plusplus(rows.data, rows.sq_norms, d, None, k, &mut r);
            Ok(gather(rows, &idx))
        }
        Init::KMeansParallel { oversampling, rounds } => {
            kmeans_parallel(rows, k, *oversampling, *rounds, scale, seed)
        }
    }
}

fn gather(rows: &Rows<'_>, idx: &[usize]) -> Vec<f32> {
    let d = rows.d;
    idx.iter().flat_map(|&i| rows.data[i * d..(i + 1) * d].iter().copied()).collect()
}

/// Greedy k-means++ over `points` (`n x d`, squared norms `sq_norms`), optionally weighted.
/// Returns the indices of the chosen points. Follows scikit-learn's `_kmeans_plusplus`: the
/// first centre is drawn with probability proportional to weight, each next one is the best of
/// `2 + floor(ln k)` candidates drawn proportional to `weight * D(x)^2`, where best means the
/// lowest resulting potential.
pub fn kmeans_plusplus(
    points: &[f32],
    sq_norms: &[f32],
    d: usize,
    weights: Option<&[f64]>,
    k: usize,
    rng: &mut Rng,
) -> Vec<usize> {
    let n = sq_norms.len();
    assert!(k >= 1 && k <= n, "kmeans_plusplus: k = {k}, n = {n}");
    let w = |i: usize| weights.map_or(1.0, |w| w[i]);
    let trials = 2 + (k as f64).ln().floor() as usize;
    let pick = |cum: &[f64], u: f64| -> usize {
        let total = *cum.last().expect("n >= 1");
        cum.partition_point(|&c| c < u * total).min(n - 1)
    };

    let cum_w: Vec<f64> = (0..n).scan(0.0, |s, i| { *s += w(i); Some(*s) }).collect();
    let first = pick(&cum_w, rng.uniform());
    let mut chosen = vec![first];
    let mut closest: Vec<f64> = linalg::sq_distances(points, sq_norms, d, &points[first * d..(first + 1) * d])
        .into_iter()
        .map(f64::from)
        .collect();
    while chosen.len() < k {
        let cum: Vec<f64> = closest.iter().enumerate().scan(0.0, |s, (i, &c)| { *s += w(i) * c; Some(*s) }).collect();
        let cands: Vec<usize> = if *cum.last().unwrap() > 0.0 {
            (0..trials).map(|_| pick(&cum, rng.uniform())).collect()
        } else {
            // Every point coincides with a centre: fall back to weight-proportional draws.
            (0..trials).map(|_| pick(&cum_w, rng.uniform())).collect()
        };
        let cvecs: Vec<f32> = cands.iter().flat_map(|&i| points[i * d..(i + 1) * d].iter().copied()).collect();
        let dist = linalg::sq_distances(points, sq_norms, d, &cvecs);
        let m = cands.len();
        let mut best = (f64::INFINITY, 0usize);
        for t in 0..m {
            let pot: f64 = (0..n).map(|i| w(i) * closest[i].min(dist[i * m + t] as f64)).sum();
            if pot < best.0 {
                best = (pot, t);
            }
        }
        let t = best.1;
        for i in 0..n {
            closest[i] = closest[i].min(dist[i * m + t] as f64);
        }
        chosen.push(cands[t]);
    }
    chosen
}

/// k-means|| (Bahmani et al. 2012). Each round samples every row independently with
/// probability `min(1, l * d^2(x) / cost)`, `l = oversampling * k`, using a counter-based draw
/// per (seed, round, row), so the sample does not depend on how rows are split. Candidates are
/// weighted by the number of rows nearest to them and reduced to `k` by weighted k-means++.
pub fn kmeans_parallel(
    rows: &Rows<'_>,
    k: usize,
    oversampling: f64,
    rounds: usize,
    scale: FixedScale,
    seed: u64,
) -> Result<Vec<f32>> {
    if oversampling.is_nan() || oversampling <= 0.0 {
        return Err(CoreError::Param(format!("k-means|| oversampling must be > 0, got {oversampling}")));
    }
    let n = rows.n();
    let d = rows.d;
    let l = oversampling * k as f64;
    let mut r = Rng::new(seed);
    let first = r.below(n as u64) as usize;
    let mut cand_idx = vec![first];
    let mut closest: Vec<f64> = linalg::sq_distances(rows.data, rows.sq_norms, d, &rows.data[first * d..(first + 1) * d])
        .into_iter()
        .map(f64::from)
        .collect();
    let mut in_set = vec![false; n];
    in_set[first] = true;
    for round in 0..rounds {
        let cost: f64 = closest.iter().sum();
        if cost <= 0.0 {
            break;
        }
        let new: Vec<usize> = (0..n)
            .filter(|&i| !in_set[i] && rng::uniform_at(seed, 1 + round as u64, i as u64) < l * closest[i] / cost)
            .collect();
        if new.is_empty() {
            continue;
        }
        for &i in &new {
            in_set[i] = true;
        }
        let c = Centroids::new(gather(rows, &new), new.len(), d)?;
        let (a, _) = kernel::assign(rows, &c, Metric::Euclidean, scale)?;
        for (cl, &dist) in closest.iter_mut().zip(&a.distances) {
            *cl = cl.min(dist as f64 * dist as f64);
        }
        cand_idx.extend(new);
    }
    if cand_idx.len() <= k {
        // Too few candidates (tiny or degenerate data): top up with random distinct rows.
        let mut extra = r.distinct(n, n.min(k + cand_idx.len()));
        extra.retain(|&i| !in_set[i]);
        cand_idx.extend(extra.into_iter().take(k - cand_idx.len()));
        return Ok(gather(rows, &cand_idx));
    }
    let cands = gather(rows, &cand_idx);
    let c = Centroids::new(cands.clone(), cand_idx.len(), d)?;
    let (_, ps) = kernel::assign(rows, &c, Metric::Euclidean, scale)?;
    let weights: Vec<f64> = ps.counts.iter().map(|&c| c as f64).collect();
    let cn = linalg::row_sq_norms(&cands, d);
    let picked = kmeans_plusplus(&cands, &cn, d, Some(&weights), k, &mut r);
    Ok(picked.iter().flat_map(|&j| cands[j * d..(j + 1) * d].iter().copied()).collect())
}

/// Convenience for tests and callers holding plain data.
pub fn rows_of<'a>(data: &'a [f32], sq_norms: &'a [f32], d: usize) -> Rows<'a> {
    Rows { data, sq_norms, d, ids: RowIds::From(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three tight, well separated groups of 50 points on a line.
    fn three_groups() -> (Vec<f32>, Vec<f32>) {
        let x: Vec<f32> = (0..150).map(|i| (i / 50) as f32 * 100.0 + (i % 50) as f32 * 0.01).collect();
        let xn = linalg::row_sq_norms(&x, 1);
        (x, xn)
    }

    fn groups_hit(c: &[f32]) -> Vec<i32> {
        let mut g: Vec<i32> = c.iter().map(|v| (v / 100.0).round() as i32).collect();
        g.sort();
        g
    }

    #[test]
    fn kmeanspp_picks_one_point_per_group() {
        let (x, xn) = three_groups();
        for seed in 0..10 {
            let c = initial_centroids(&Init::KMeansPlusPlus, &rows_of(&x, &xn, 1), 3, Metric::Euclidean,
                FixedScale::for_data(201.0, 150).unwrap(), seed).unwrap();
            assert_eq!(groups_hit(&c), vec![0, 1, 2], "seed {seed}");
        }
    }

    #[test]
    fn kmeans_parallel_picks_one_point_per_group() {
        let (x, xn) = three_groups();
        for seed in 0..10 {
            let c = initial_centroids(&Init::KMeansParallel { oversampling: 2.0, rounds: 5 }, &rows_of(&x, &xn, 1), 3,
                Metric::Euclidean, FixedScale::for_data(201.0, 150).unwrap(), seed).unwrap();
            assert_eq!(groups_hit(&c), vec![0, 1, 2], "seed {seed}");
        }
    }

    #[test]
    fn random_init_picks_distinct_rows_and_is_seeded() {
        let x: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let xn = linalg::row_sq_norms(&x, 1);
        let s = FixedScale::for_data(19.0, 20).unwrap();
        let a = initial_centroids(&Init::Random, &rows_of(&x, &xn, 1), 20, Metric::Euclidean, s, 4).unwrap();
        let mut sorted = a.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, x);
        let b = initial_centroids(&Init::Random, &rows_of(&x, &xn, 1), 5, Metric::Euclidean, s, 4).unwrap();
        let b2 = initial_centroids(&Init::Random, &rows_of(&x, &xn, 1), 5, Metric::Euclidean, s, 4).unwrap();
        assert_eq!(b, b2);
    }

    #[test]
    fn seeds_are_checked_and_normalised_for_cosine() {
        let x = [1.0f32, 0.0];
        let xn = [1.0f32];
        let s = FixedScale::for_data(1.0, 1).unwrap();
        let c = initial_centroids(&Init::Seeds(vec![3.0, 4.0]), &rows_of(&x, &xn, 2), 1, Metric::Cosine, s, 0).unwrap();
        assert_eq!(c, vec![0.6, 0.8]);
        let err = initial_centroids(&Init::Seeds(vec![1.0]), &rows_of(&x, &xn, 2), 1, Metric::Cosine, s, 0).unwrap_err();
        assert!(err.to_string().contains("expected k x d = 1 x 2"), "{err}");
        let err = initial_centroids(&Init::Random, &rows_of(&x, &xn, 2), 2, Metric::Euclidean, s, 0).unwrap_err();
        assert!(err.to_string().contains("larger than the number of rows"), "{err}");
    }

    #[test]
    fn weighted_kmeanspp_prefers_heavy_points() {
        // Two coincident-free points; weight zero on one means it is never the first pick.
        let x = [0.0f32, 10.0];
        let xn = linalg::row_sq_norms(&x, 1);
        let mut r = Rng::new(1);
        for _ in 0..20 {
            let idx = kmeans_plusplus(&x, &xn, 1, Some(&[0.0, 1.0]), 1, &mut r);
            assert_eq!(idx, vec![1]);
        }
    }
}
