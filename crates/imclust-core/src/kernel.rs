//! The assignment kernel fused with the accumulation of partial sums.
//!
//! For a block of rows, the dot products with all K centroids come from one GEMM call
//! ([`crate::linalg::dot_block`], `BLOCK_ROWS x K`, so the `N x K` matrix never exists whole);
//! then, row by row, the nearest and second-nearest centroids are found and the row is added to
//! its cluster's [`PartialSums`]. Blocks run in parallel (rayon); each worker thread keeps its
//! own partial sums, merged at the end. The merge is exact (fixed point, see [`crate::fixed`]),
//! so the result is bit-identical however the rows were split and in whatever order partials
//! are merged.

use crate::error::{CoreError, Result};
use crate::fixed::{self, FixedScale};
use crate::{linalg, smallk};
use rayon::prelude::*;

/// How distances are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Squared Euclidean distance for inertia; Euclidean distance in outputs.
    Euclidean,
    /// Cosine distance `1 - cos(x, c)`; rows and centroids are unit-normalised first
    /// (spherical k-means).
    Cosine,
}

impl std::str::FromStr for Metric {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "euclidean" => Ok(Metric::Euclidean),
            "cosine" => Ok(Metric::Cosine),
            _ => Err(CoreError::Param(format!("unknown metric '{s}': use 'euclidean' or 'cosine'"))),
        }
    }
}

/// Centroids prepared for the kernel: the matrix and its squared norms.
#[derive(Debug, Clone)]
pub struct Centroids {
    pub k: usize,
    pub d: usize,
    pub data: Vec<f32>,
    pub sq_norms: Vec<f32>,
}

impl Centroids {
    pub fn new(data: Vec<f32>, k: usize, d: usize) -> Result<Self> {
        if data.len() != k * d || k == 0 {
            return Err(CoreError::Shape(format!(
                "centroids: {} values is not {k} x {d} (k must be >= 1)",
                data.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(CoreError::Data(format!(
                "centroid {} has a non-finite value at dimension {}",
                i / d.max(1),
                i % d.max(1)
            )));
        }
        let sq_norms = data.chunks(d.max(1)).map(|r| linalg::sq_norm(r) as f32).collect();
        Ok(Centroids { k, d, data, sq_norms })
    }

    pub fn row(&self, j: usize) -> &[f32] {
        &self.data[j * self.d..(j + 1) * self.d]
    }
}

/// A point far from its centroid, kept so that empty clusters can be re-seeded without
/// another pass over the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Squared distance (Euclidean) or cosine distance to its nearest centroid.
    pub distance: f64,
    /// Global row index.
    pub row: u64,
    /// Its current cluster.
    pub cluster: u32,
    pub vector: Vec<f32>,
}

impl Candidate {
    /// Farther first; ties by row index, so the order is total and split-independent.
    fn before(&self, other: &Candidate) -> bool {
        self.distance > other.distance || (self.distance == other.distance && self.row < other.row)
    }
}

/// Per-cluster sums of rows (fixed point), counts, inertia, and the farthest rows.
/// Merging is associative and commutative and exact.
#[derive(Debug, Clone, PartialEq)]
pub struct PartialSums {
    pub k: usize,
    pub d: usize,
    pub scale: FixedScale,
    /// `k x d` sums in units of `2^-scale.exponent`.
    pub sums: Vec<i64>,
    pub counts: Vec<u64>,
    /// Sum of squared distances (Euclidean) or cosine distances, in units of
    /// `1 / scale.inertia_factor()`.
    pub inertia: u128,
    /// Up to `farthest_cap` rows farthest from their centroid, in [`Candidate::before`] order.
    pub farthest: Vec<Candidate>,
    pub farthest_cap: usize,
}

impl PartialSums {
    pub fn new(k: usize, d: usize, scale: FixedScale, farthest_cap: usize) -> Self {
        PartialSums {
            k,
            d,
            scale,
            sums: vec![0; k * d],
            counts: vec![0; k],
            inertia: 0,
            farthest: Vec::new(),
            farthest_cap,
        }
    }

    /// Adds `other` into `self`. Both must have the same shape and scale.
    pub fn merge(&mut self, other: &PartialSums) -> Result<()> {
        if (self.k, self.d, self.scale) != (other.k, other.d, other.scale) {
            return Err(CoreError::Shape(format!(
                "cannot merge partial sums of {}x{} (scale 2^-{}) with {}x{} (scale 2^-{})",
                self.k, self.d, self.scale.exponent, other.k, other.d, other.scale.exponent
            )));
        }
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a = a.wrapping_add(*b);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.inertia += other.inertia;
        self.farthest_cap = self.farthest_cap.max(other.farthest_cap);
        for c in &other.farthest {
            self.offer(c.distance, c.row, c.cluster, || c.vector.clone());
        }
        Ok(())
    }

    /// Total rows counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Inertia as a number.
    pub fn inertia_value(&self) -> f64 {
        self.inertia as f64 / self.scale.inertia_factor()
    }

    /// The mean of cluster `j` (undefined when empty: zeros).
    pub fn mean(&self, j: usize) -> Vec<f64> {
        let c = self.counts[j].max(1) as f64;
        let inv = self.scale.inverse();
        self.sums[j * self.d..(j + 1) * self.d].iter().map(|&q| q as f64 * inv / c).collect()
    }

    /// The sum of cluster `j` as numbers.
    pub fn sum(&self, j: usize) -> Vec<f64> {
        let inv = self.scale.inverse();
        self.sums[j * self.d..(j + 1) * self.d].iter().map(|&q| q as f64 * inv).collect()
    }

    fn would_take(&self, distance: f64, row: u64) -> bool {
        if self.farthest_cap == 0 {
            return false;
        }
        if self.farthest.len() < self.farthest_cap {
            return true;
        }
        let last = self.farthest.last().expect("cap > 0 and full");
        distance > last.distance || (distance == last.distance && row < last.row)
    }

    fn offer(&mut self, distance: f64, row: u64, cluster: u32, vector: impl FnOnce() -> Vec<f32>) {
        if !self.would_take(distance, row) {
            return;
        }
        let cand = Candidate { distance, row, cluster, vector: vector() };
        let pos = self.farthest.partition_point(|c| c.before(&cand));
        self.farthest.insert(pos, cand);
        self.farthest.truncate(self.farthest_cap);
    }

    fn add_row(&mut self, j: usize, x: &[f32], sq_dist: f64, row: u64) {
        fixed::accumulate(&mut self.sums[j * self.d..(j + 1) * self.d], x, self.scale);
        self.counts[j] += 1;
        self.inertia += fixed::quantize_inertia(sq_dist, self.scale.inertia_factor());
        self.offer(sq_dist, row, j as u32, || x.to_vec());
    }
}

/// Which global row each local row is.
#[derive(Debug, Clone, Copy)]
pub enum RowIds<'a> {
    /// Rows are consecutive from this global index.
    From(u64),
    /// Explicit global indices (a gathered mini-batch).
    List(&'a [u64]),
}

impl RowIds<'_> {
    #[inline]
    fn get(&self, local: usize) -> u64 {
        match self {
            RowIds::From(start) => start + local as u64,
            RowIds::List(ids) => ids[local],
        }
    }
}

/// The input of a kernel pass: rows, their squared norms, and which rows they are.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    /// Squared norms of the rows (ignored for the cosine metric).
    pub sq_norms: &'a [f32],
    pub d: usize,
    pub ids: RowIds<'a>,
}

impl<'a> Rows<'a> {
    pub fn n(&self) -> usize {
        self.sq_norms.len()
    }

    fn check(&self, c: &Centroids) -> Result<()> {
        if self.data.len() != self.n() * self.d {
            return Err(CoreError::Shape(format!(
                "rows: {} values for {} rows of dimension {}",
                self.data.len(),
                self.n(),
                self.d
            )));
        }
        if c.d != self.d {
            return Err(CoreError::Shape(format!(
                "centroids have dimension {} but the rows have {}",
                c.d, self.d
            )));
        }
        if let RowIds::List(ids) = self.ids
            && ids.len() != self.n()
        {
            return Err(CoreError::Shape(format!("{} row ids for {} rows", ids.len(), self.n())));
        }
        Ok(())
    }
}

/// The nearest centroid of one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearest {
    pub cluster: u32,
    /// Squared Euclidean distance, or cosine distance.
    pub distance: f64,
    /// The same for the second-nearest centroid (`inf` when K = 1).
    pub second: f64,
}

/// Per-row outputs of the final pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assignment {
    pub clusters: Vec<u32>,
    /// Euclidean distance (not squared) or cosine distance to the nearest centroid.
    pub distances: Vec<f32>,
    /// Distance to the second-nearest centroid minus `distances` (`inf` when K = 1).
    pub margins: Vec<f32>,
}

/// Lanes of the vectorised scan: one AVX-512 register of f32.
const LANES: usize = 16;

/// For each row `r` of a block of row-major dot products (`dots[r * k + j]`), the lowest and
/// second-lowest score `bias[j] + slope * dot` and the index of the lowest (ties to the lower
/// index). Each row is scanned in `LANES` lanes without branches, so that it vectorises, and
/// the lanes are combined at the end.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512dq+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
#[allow(clippy::needless_range_loop)] // lane-parallel arrays, indexed alike so the loop vectorises
fn scan_block(dots: &[f32], bias: &[f32], slope: f32, best_j: &mut [u32], best: &mut [f32], second: &mut [f32]) {
    let k = bias.len();
    let full = k / LANES * LANES;
    for (r, row) in dots.chunks_exact(k).enumerate() {
        let mut b = [f32::INFINITY; LANES];
        let mut s2 = [f32::INFINITY; LANES];
        let mut bj = [0u32; LANES];
        for j0 in (0..full).step_by(LANES) {
            let d = &row[j0..j0 + LANES];
            let bb = &bias[j0..j0 + LANES];
            for t in 0..LANES {
                let s = bb[t] + slope * d[t];
                let lt = s < b[t];
                s2[t] = if lt { b[t] } else if s < s2[t] { s } else { s2[t] };
                bj[t] = if lt { (j0 + t) as u32 } else { bj[t] };
                b[t] = if lt { s } else { b[t] };
            }
        }
        // Combine lanes: the lowest score, ties to the lower index.
        let (mut bs, mut bi, mut lane) = (f32::INFINITY, u32::MAX, usize::MAX);
        for t in 0..LANES {
            if b[t] < bs || (b[t] == bs && bj[t] < bi) {
                (bs, bi, lane) = (b[t], bj[t], t);
            }
        }
        // Second: the other lanes' bests and the winning lane's second.
        let mut ss = if lane < LANES { s2[lane] } else { f32::INFINITY };
        for t in 0..LANES {
            if t != lane && b[t] < ss {
                ss = b[t];
            }
        }
        for (j, (&bj_, &dj)) in bias[full..].iter().zip(&row[full..]).enumerate() {
            let s = bj_ + slope * dj;
            let j = (full + j) as u32;
            if s < bs || (s == bs && j < bi) {
                ss = bs;
                (bs, bi) = (s, j);
            } else if s < ss {
                ss = s;
            }
        }
        best_j[r] = bi;
        best[r] = bs;
        second[r] = ss;
    }
}

/// Scratch space of one thread: the block's dot products and scan results.
struct Scratch {
    dots: Vec<f32>,
    best_j: Vec<u32>,
    best: Vec<f32>,
    second: Vec<f32>,
}

impl Scratch {
    fn new(k: usize, rows: usize) -> Self {
        Scratch {
            dots: vec![0.0; rows * k],
            best_j: vec![0; rows],
            best: vec![0.0; rows],
            second: vec![0.0; rows],
        }
    }

    /// Nearest and second-nearest of the first `rows` rows (squared norms `xn`), after
    /// [`scan_block`] has run.
    #[inline]
    fn nearest(&self, r: usize, xn: &[f32], metric: Metric) -> Nearest {
        let (best_s, second_s) = (self.best[r] as f64, self.second[r] as f64);
        let (distance, second) = match metric {
            Metric::Euclidean => {
                let x = xn[r] as f64;
                ((x + best_s).max(0.0), (x + second_s).max(0.0))
            }
            Metric::Cosine => ((1.0 + best_s).max(0.0), (1.0 + second_s).max(0.0)),
        };
        Nearest { cluster: self.best_j[r], distance, second }
    }
}

/// Runs the GEMM and the scan over all blocks of all `parts` in parallel (one pool of blocks,
/// so many small parts balance like one large one), then `f(state, part, first_row,
/// block_rows, each_nearest)` with per-thread state `S` (created by `init`); returns the states.
fn for_blocks<S: Send>(
    parts: &[Rows<'_>],
    c: &Centroids,
    metric: Metric,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, usize, usize, &dyn Fn(usize) -> Nearest) + Sync + Send,
) -> Vec<S> {
    let (bias, slope): (Vec<f32>, f32) = match metric {
        // ||x - c||^2 - ||x||^2 = ||c||^2 - 2 x.c
        Metric::Euclidean => (c.sq_norms.clone(), -2.0),
        // 1 - cos - 1 = -x.c on unit vectors
        Metric::Cosine => (vec![0.0; c.k], -1.0),
    };
    let d = c.d;
    let small = (c.k <= smallk::MAX_K).then(|| smallk::Packed::new(&c.data, c.k, d, &bias));
    let block = linalg::block_rows(c.k);
    let blocks: Vec<(usize, usize)> =
        parts.iter().enumerate().flat_map(|(p, r)| (0..r.n().div_ceil(block)).map(move |b| (p, b * block))).collect();
    let threads = rayon::current_num_threads().max(1);
    // A few blocks per task: enough tasks to balance, few enough states to merge.
    let min_len = (blocks.len() / (threads * 4)).max(1);
    blocks
        .into_par_iter()
        .with_min_len(min_len)
        .fold(
            || (init(), Scratch::new(if small.is_some() { 0 } else { c.k }, block)),
            |(mut state, mut s), (p, lo)| {
                let rows = &parts[p];
                let hi = (lo + block).min(rows.n());
                linalg::with_padded(&rows.data[lo * d..hi * d], hi - lo, block, d, |xp| match &small {
                    Some(p) => smallk::scan_tiles(xp, block, p, slope, &mut s.best_j, &mut s.best, &mut s.second),
                    None => {
                        linalg::dot_block(xp, block, d, &c.data, c.k, &mut s.dots);
                        scan_block(&s.dots, &bias, slope, &mut s.best_j, &mut s.best, &mut s.second);
                    }
                });
                let xn = &rows.sq_norms[lo..hi];
                f(&mut state, p, lo, hi - lo, &|r| s.nearest(r, xn, metric));
                (state, s)
            },
        )
        .map(|(s, _)| s)
        .collect()
}

/// One pass: the partial sums of `rows` against `c`. `farthest_cap` rows farthest from their
/// centroids are kept for re-seeding empty clusters (0 to keep none).
pub fn partial_sums(
    rows: &Rows<'_>,
    c: &Centroids,
    metric: Metric,
    scale: FixedScale,
    farthest_cap: usize,
) -> Result<PartialSums> {
    partial_sums_of_parts(std::slice::from_ref(rows), c, metric, scale, farthest_cap)
}

/// [`partial_sums`] of several row sets at once (a worker's shards): equal to the merge of
/// each part's sums (exact), but with one pool of blocks and few states to merge.
pub fn partial_sums_of_parts(
    parts: &[Rows<'_>],
    c: &Centroids,
    metric: Metric,
    scale: FixedScale,
    farthest_cap: usize,
) -> Result<PartialSums> {
    for rows in parts {
        rows.check(c)?;
    }
    let d = c.d;
    let states = for_blocks(
        parts,
        c,
        metric,
        || PartialSums::new(c.k, d, scale, farthest_cap),
        |ps, p, lo, n, nearest| {
            let rows = &parts[p];
            for r in 0..n {
                let near = nearest(r);
                let i = lo + r;
                ps.add_row(near.cluster as usize, &rows.data[i * d..(i + 1) * d], near.distance, rows.ids.get(i));
            }
        },
    );
    let mut total = PartialSums::new(c.k, d, scale, farthest_cap);
    for s in &states {
        total.merge(s)?;
    }
    Ok(total)
}

/// The final pass: nearest cluster, distance and margin of every row, plus the partial sums
/// (for the final inertia and cluster sizes).
pub fn assign(
    rows: &Rows<'_>,
    c: &Centroids,
    metric: Metric,
    scale: FixedScale,
) -> Result<(Assignment, PartialSums)> {
    rows.check(c)?;
    let d = rows.d;
    let n = rows.n();
    let states = for_blocks(
        std::slice::from_ref(rows),
        c,
        metric,
        || (PartialSums::new(c.k, d, scale, 0), Vec::<(usize, Nearest)>::new()),
        |(ps, out), _, lo, nb, nearest| {
            for r in 0..nb {
                let near = nearest(r);
                let i = lo + r;
                ps.add_row(near.cluster as usize, &rows.data[i * d..(i + 1) * d], near.distance, rows.ids.get(i));
                out.push((i, near));
            }
        },
    );
    let mut a = Assignment {
        clusters: vec![0; n],
        distances: vec![0.0; n],
        margins: vec![0.0; n],
    };
    let mut total = PartialSums::new(c.k, d, scale, 0);
    for (ps, out) in &states {
        total.merge(ps)?;
        for &(i, near) in out {
            let (dist, second) = match metric {
                Metric::Euclidean => (near.distance.sqrt(), near.second.sqrt()),
                Metric::Cosine => (near.distance, near.second),
            };
            a.clusters[i] = near.cluster;
            a.distances[i] = dist as f32;
            a.margins[i] = (second - dist) as f32;
        }
    }
    Ok((a, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.normal() as f32).collect()
    }

    fn brute_force(x: &[f32], d: usize, c: &Centroids) -> Vec<(u32, f64)> {
        x.chunks(d)
            .map(|row| {
                let mut best = (0u32, f64::INFINITY);
                for j in 0..c.k {
                    let dist = linalg::sq_dist(row, c.row(j));
                    if dist < best.1 {
                        best = (j as u32, dist);
                    }
                }
                best
            })
            .collect()
    }

    #[test]
    fn blocked_kernel_matches_brute_force() {
        for &(n, d, k) in &[(1usize, 3usize, 1usize), (700, 17, 5), (1000, 64, 40), (257, 8, 300)] {
            let x = random(n * d, n as u64);
            let c = Centroids::new(random(k * d, 99), k, d).unwrap();
            let xn = linalg::row_sq_norms(&x, d);
            let rows = Rows { data: &x, sq_norms: &xn, d, ids: RowIds::From(0) };
            let scale = FixedScale::for_data(10.0, n as u64).unwrap();
            let (a, ps) = assign(&rows, &c, Metric::Euclidean, scale).unwrap();
            let want = brute_force(&x, d, &c);
            let mut inertia = 0.0;
            for (i, &(j, dist)) in want.iter().enumerate() {
                // Near-ties may differ by rounding; the chosen distance must be as good.
                let got = linalg::sq_dist(&x[i * d..(i + 1) * d], c.row(a.clusters[i] as usize));
                assert!(got <= dist * (1.0 + 1e-5) + 1e-5, "row {i}: {got} vs {dist} (cluster {j})");
                assert!((a.distances[i] as f64 - dist.sqrt()).abs() < 1e-3 * (1.0 + dist.sqrt()));
                assert!(a.margins[i] >= 0.0 || k == 1);
                inertia += dist;
            }
            assert!((ps.inertia_value() - inertia).abs() < 1e-4 * inertia.max(1.0));
            assert_eq!(ps.total(), n as u64);
            // The sums are the sums of the assigned rows.
            for j in 0..k {
                let mut s = vec![0.0f64; d];
                for i in 0..n {
                    if a.clusters[i] as usize == j {
                        for t in 0..d {
                            s[t] += x[i * d + t] as f64;
                        }
                    }
                }
                for (got, want) in ps.sum(j).iter().zip(&s) {
                    assert!((got - want).abs() < 1e-6, "{got} {want}");
                }
            }
        }
    }

    #[test]
    fn scan_finds_best_and_second_with_ties_to_lower_index() {
        // 40 centroids: full lanes and a tail; planted minima in various places.
        let k = 40;
        let rows = 4;
        let mut dots = vec![0.0f32; rows * k];
        let bias: Vec<f32> = (0..k).map(|j| 100.0 + j as f32).collect();
        // slope -1: score = bias - dot.
        dots[3] = 100.0; // row 0: best j=3 (score 3), second j=0 (100)
        dots[k + 37] = 200.0; // row 1: best in the tail, j=37 (score -63)
        dots[k + 20] = 150.0; // second j=20 (score -30)
        dots[2 * k + 5] = 105.0; // row 2: tie between j=5 and j=21 at score 0
        dots[2 * k + 21] = 121.0;
        let (mut bj, mut b, mut s2) = (vec![0; rows], vec![0.0; rows], vec![0.0; rows]);
        scan_block(&dots, &bias, -1.0, &mut bj, &mut b, &mut s2);
        assert_eq!((bj[0], b[0], s2[0]), (3, 3.0, 100.0));
        assert_eq!((bj[1], b[1], s2[1]), (37, -63.0, -30.0));
        assert_eq!((bj[2], b[2], s2[2]), (5, 0.0, 0.0));
        assert_eq!((bj[3], b[3], s2[3]), (0, 100.0, 101.0));
    }

    #[test]
    fn hand_computed_case() {
        // Two obvious clusters on a line.
        let x = [0.0f32, 0.0, 1.0, 0.0, 10.0, 0.0, 11.0, 0.0];
        let c = Centroids::new(vec![0.0, 0.0, 10.0, 0.0], 2, 2).unwrap();
        let xn = linalg::row_sq_norms(&x, 2);
        let rows = Rows { data: &x, sq_norms: &xn, d: 2, ids: RowIds::From(0) };
        let scale = FixedScale::for_data(11.0, 4).unwrap();
        let (a, ps) = assign(&rows, &c, Metric::Euclidean, scale).unwrap();
        assert_eq!(a.clusters, vec![0, 0, 1, 1]);
        assert_eq!(a.distances, vec![0.0, 1.0, 0.0, 1.0]);
        assert_eq!(a.margins, vec![10.0, 8.0, 10.0, 10.0]);
        assert_eq!(ps.counts, vec![2, 2]);
        assert_eq!(ps.inertia_value(), 2.0);
        assert_eq!(ps.mean(0), vec![0.5, 0.0]);
        assert_eq!(ps.mean(1), vec![10.5, 0.0]);
    }

    #[test]
    fn cosine_metric_uses_angles() {
        let x = [1.0f32, 0.0, 0.0, 1.0, 0.6, 0.8];
        let c = Centroids::new(vec![1.0, 0.0, 0.0, 1.0], 2, 2).unwrap();
        let xn = linalg::row_sq_norms(&x, 2);
        let rows = Rows { data: &x, sq_norms: &xn, d: 2, ids: RowIds::From(0) };
        let (a, _) = assign(&rows, &c, Metric::Cosine, FixedScale::for_data(1.0, 3).unwrap()).unwrap();
        assert_eq!(a.clusters, vec![0, 1, 1]);
        assert!((a.distances[2] - 0.2).abs() < 1e-6);
        assert!((a.margins[2] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn partial_sums_are_split_and_order_invariant() {
        let (n, d, k) = (3000, 24, 13);
        let x = random(n * d, 5);
        let c = Centroids::new(random(k * d, 6), k, d).unwrap();
        let xn = linalg::row_sq_norms(&x, d);
        let scale = FixedScale::for_data(6.0, n as u64).unwrap();
        let whole = partial_sums(
            &Rows { data: &x, sq_norms: &xn, d, ids: RowIds::From(0) },
            &c,
            Metric::Euclidean,
            scale,
            k,
        )
        .unwrap();
        let mut rng = Rng::new(1);
        for _ in 0..5 {
            // Random cut points, partials merged in random order.
            let mut cuts: Vec<usize> = (0..4).map(|_| rng.below(n as u64) as usize).collect();
            cuts.push(0);
            cuts.push(n);
            cuts.sort();
            let mut parts: Vec<PartialSums> = cuts
                .windows(2)
                .map(|w| {
                    let (lo, hi) = (w[0], w[1]);
                    partial_sums(
                        &Rows { data: &x[lo * d..hi * d], sq_norms: &xn[lo..hi], d, ids: RowIds::From(lo as u64) },
                        &c,
                        Metric::Euclidean,
                        scale,
                        k,
                    )
                    .unwrap()
                })
                .collect();
            let order = rng.distinct(parts.len(), parts.len());
            let mut merged = PartialSums::new(k, d, scale, k);
            for i in order {
                merged.merge(&parts[i]).unwrap();
            }
            assert_eq!(merged, whole);
            parts.clear();
        }
    }

    #[test]
    fn partial_sums_of_parts_equal_the_whole() {
        let (n, d, k) = (2000, 16, 7);
        let x = random(n * d, 8);
        let c = Centroids::new(random(k * d, 9), k, d).unwrap();
        let xn = linalg::row_sq_norms(&x, d);
        let scale = FixedScale::for_data(6.0, n as u64).unwrap();
        let whole = partial_sums(&Rows { data: &x, sq_norms: &xn, d, ids: RowIds::From(0) }, &c, Metric::Euclidean, scale, k).unwrap();
        let cuts = [0usize, 3, 700, 701, 1500, 2000];
        let parts: Vec<Rows<'_>> = cuts
            .windows(2)
            .map(|w| Rows { data: &x[w[0] * d..w[1] * d], sq_norms: &xn[w[0]..w[1]], d, ids: RowIds::From(w[0] as u64) })
            .collect();
        assert_eq!(partial_sums_of_parts(&parts, &c, Metric::Euclidean, scale, k).unwrap(), whole);
    }

    #[test]
    fn farthest_keeps_the_top_rows_in_order() {
        let x: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let c = Centroids::new(vec![0.0], 1, 1).unwrap();
        let xn = linalg::row_sq_norms(&x, 1);
        let rows = Rows { data: &x, sq_norms: &xn, d: 1, ids: RowIds::From(100) };
        let ps = partial_sums(&rows, &c, Metric::Euclidean, FixedScale::for_data(9.0, 10).unwrap(), 3).unwrap();
        let rows_kept: Vec<u64> = ps.farthest.iter().map(|c| c.row).collect();
        assert_eq!(rows_kept, vec![109, 108, 107]);
        assert_eq!(ps.farthest[0].vector, vec![9.0]);
        assert_eq!(ps.farthest[0].distance, 81.0);
    }

    #[test]
    fn shape_errors_are_clear() {
        let c = Centroids::new(vec![0.0; 6], 2, 3).unwrap();
        let x = [0.0f32; 4];
        let xn = [0.0f32; 2];
        let rows = Rows { data: &x, sq_norms: &xn, d: 2, ids: RowIds::From(0) };
        let err = partial_sums(&rows, &c, Metric::Euclidean, FixedScale { exponent: 0 }, 0).unwrap_err();
        assert!(err.to_string().contains("dimension 3 but the rows have 2"), "{err}");
        assert!(Centroids::new(vec![0.0; 5], 2, 3).is_err());
        assert!(Centroids::new(vec![f32::NAN; 6], 2, 3).is_err());
    }
}
