//! The single-process k-means driver: prepare, init, iterate (Lloyd or mini-batch), assign,
//! with `n_redo` restarts keeping the lowest inertia.

use crate::error::{CoreError, Result};
use crate::fixed::FixedScale;
use crate::init::{self, Init};
use crate::kernel::{self, Assignment, Centroids, Metric, RowIds, Rows};
use crate::linalg;
use crate::rng;
use crate::update;
use rayon::prelude::*;
use std::borrow::Cow;

/// How centroids are refined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Full-batch Lloyd iterations.
    Lloyd,
    /// Mini-batch k-means (Sculley 2010): each step uses a Bernoulli sample of about
    /// `batch_size` rows (each row drawn independently, so the sample does not depend on how
    /// rows are sharded). `max_iter` counts steps.
    MiniBatch { batch_size: usize },
}

/// Everything that defines a k-means run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub k: usize,
    pub metric: Metric,
    pub algorithm: Algorithm,
    pub init: Init,
    pub max_iter: usize,
    /// Stop when the relative centroid shift `sum_k ||dc_k||^2 / mean_j Var(x_j)` is `<= tol`
    /// (scikit-learn's tolerance: relative to the data's mean per-dimension variance);
    /// `tol = 0` runs exactly `max_iter` iterations.
    pub tol: f64,
    pub seed: u64,
    /// Independent runs (different init seeds); the lowest final inertia wins.
    pub n_redo: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            k: 8,
            metric: Metric::Euclidean,
            algorithm: Algorithm::Lloyd,
            init: Init::KMeansPlusPlus,
            max_iter: 300,
            tol: 1e-4,
            seed: 0,
            n_redo: 1,
        }
    }
}

/// One iteration's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct IterStat {
    pub redo: usize,
    pub iteration: usize,
    /// Inertia of the rows used in this iteration against the centroids before the update.
    pub inertia: f64,
    /// Relative centroid shift (see [`Config::tol`]).
    pub shift: f64,
    pub relocated: usize,
    pub seconds: f64,
}

/// The result of [`fit`].
#[derive(Debug, Clone)]
pub struct FitResult {
    pub centroids: Vec<f32>,
    pub k: usize,
    pub d: usize,
    pub assignment: Assignment,
    pub cluster_sizes: Vec<u64>,
    /// Final inertia: sum of squared Euclidean distances (or cosine distances) of all rows to
    /// their final centroids.
    pub inertia: f64,
    pub iterations: usize,
    pub converged: bool,
    /// Which of the `n_redo` runs won.
    pub best_redo: usize,
    pub inertia_per_redo: Vec<f64>,
    pub history: Vec<IterStat>,
}

/// Rows made ready for the kernel: normalised for cosine, with squared norms and a scale.
#[derive(Debug)]
pub struct Prepared<'a> {
    pub data: Cow<'a, [f32]>,
    pub sq_norms: Vec<f32>,
    pub d: usize,
    pub scale: FixedScale,
    /// Mean over dimensions of the per-dimension variance: the unit of [`Config::tol`].
    pub mean_variance: f64,
}

impl<'a> Prepared<'a> {
    pub fn new(data: &'a [f32], d: usize, metric: Metric) -> Result<Self> {
        if d == 0 || data.is_empty() || !data.len().is_multiple_of(d) {
            return Err(CoreError::Shape(format!(
                "data has {} values, not a non-empty multiple of dimension {d}",
                data.len()
            )));
        }
        if let Some(i) = data.par_iter().position_first(|v| !v.is_finite()) {
            return Err(CoreError::Data(format!(
                "row {} has a non-finite value ({}) at dimension {}: clean the embeddings first",
                i / d,
                data[i],
                i % d
            )));
        }
        let data: Cow<'a, [f32]> = match metric {
            Metric::Euclidean => Cow::Borrowed(data),
            Metric::Cosine => {
                let mut owned = data.to_vec();
                linalg::normalize_rows(&mut owned, d);
                Cow::Owned(owned)
            }
        };
        let sq_norms = linalg::row_sq_norms(&data, d);
        let max_abs = data.par_iter().map(|v| v.abs()).reduce(|| 0.0, f32::max);
        let n = data.len() / d;
        let scale = FixedScale::for_data(max_abs, n as u64)?;
        let mean_variance = mean_variance(&data, d);
        Ok(Prepared { data, sq_norms, d, scale, mean_variance })
    }

    pub fn n(&self) -> usize {
        self.sq_norms.len()
    }

    pub fn rows(&self) -> Rows<'_> {
        Rows { data: &self.data, sq_norms: &self.sq_norms, d: self.d, ids: RowIds::From(0) }
    }
}

/// `mean_j Var(x_j)` (population variance), in f64 with a two-pass formula. Sums run over fixed
/// chunks of rows combined in chunk order, so the result does not depend on the thread count.
pub fn mean_variance(data: &[f32], d: usize) -> f64 {
    const CHUNK_ROWS: usize = 4096;
    let n = (data.len() / d) as f64;
    let column_sums = |f: &(dyn Fn(usize, f32) -> f64 + Sync)| -> Vec<f64> {
        let parts: Vec<Vec<f64>> = data
            .par_chunks(CHUNK_ROWS * d)
            .map(|chunk| {
                let mut acc = vec![0.0; d];
                for row in chunk.chunks_exact(d) {
                    for (j, &v) in row.iter().enumerate() {
                        acc[j] += f(j, v);
                    }
                }
                acc
            })
            .collect();
        parts.iter().fold(vec![0.0; d], |mut a, b| {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            a
        })
    };
    let means: Vec<f64> = column_sums(&|_, v| v as f64).into_iter().map(|s| s / n).collect();
    let vars = column_sums(&|j, v| (v as f64 - means[j]).powi(2));
    vars.iter().sum::<f64>() / n / d as f64
}

/// Validates a config against the data size.
pub fn check_config(cfg: &Config, n: usize) -> Result<()> {
    if cfg.k == 0 {
        return Err(CoreError::Param("k must be at least 1".into()));
    }
    if cfg.k > n {
        return Err(CoreError::Param(format!("k = {} is larger than the number of rows ({n})", cfg.k)));
    }
    if cfg.n_redo == 0 {
        return Err(CoreError::Param("n_redo must be at least 1".into()));
    }
    if cfg.tol.is_nan() || cfg.tol < 0.0 {
        return Err(CoreError::Param(format!("tol must be >= 0, got {}", cfg.tol)));
    }
    if let Algorithm::MiniBatch { batch_size } = cfg.algorithm
        && batch_size == 0
    {
        return Err(CoreError::Param("batch size must be at least 1".into()));
    }
    Ok(())
}

/// Runs k-means on `data` (`n x d`, row-major). `on_iter` sees every iteration.
pub fn fit(data: &[f32], d: usize, cfg: &Config, mut on_iter: impl FnMut(&IterStat)) -> Result<FitResult> {
    let prep = Prepared::new(data, d, cfg.metric)?;
    check_config(cfg, prep.n())?;
    let redos = if cfg.init.is_random() { cfg.n_redo } else { 1 };
    let mut best: Option<FitResult> = None;
    let mut inertias = Vec::with_capacity(redos);
    let mut history = Vec::new();
    for redo in 0..redos {
        let seed = if redo == 0 { cfg.seed } else { rng::derive_seed(cfg.seed, redo as u64) };
        let r = fit_once(&prep, cfg, seed, redo, &mut |s: &IterStat| {
            history.push(s.clone());
            on_iter(s)
        })?;
        inertias.push(r.inertia);
        if best.as_ref().is_none_or(|b| r.inertia < b.inertia) {
            best = Some(FitResult { best_redo: redo, ..r });
        }
    }
    let mut best = best.expect("at least one redo");
    best.inertia_per_redo = inertias;
    best.history = history;
    Ok(best)
}

fn fit_once(
    prep: &Prepared<'_>,
    cfg: &Config,
    seed: u64,
    redo: usize,
    on_iter: &mut dyn FnMut(&IterStat),
) -> Result<FitResult> {
    let (d, k, n) = (prep.d, cfg.k, prep.n());
    let rows = prep.rows();
    let init = init::initial_centroids(&cfg.init, &rows, k, cfg.metric, prep.scale, seed)?;
    let mut c = Centroids::new(init, k, d)?;
    let mut converged = false;
    let mut iterations = 0;
    let mut seen = vec![0u64; k];
    let tol_unit = if prep.mean_variance > 0.0 { prep.mean_variance } else { 1.0 };
    for it in 0..cfg.max_iter {
        let t0 = std::time::Instant::now();
        let (new, shift, inertia, relocated) = match cfg.algorithm {
            Algorithm::Lloyd => {
                let mut ps = kernel::partial_sums(&rows, &c, cfg.metric, prep.scale, k)?;
                let inertia = ps.inertia_value();
                let relocated = update::relocate_empty(&mut ps);
                let (new, shift) = update::lloyd(&ps, &c, cfg.metric);
                (new, shift, inertia, relocated)
            }
            Algorithm::MiniBatch { batch_size } => {
                let p = batch_size as f64 / n as f64;
                let ids: Vec<u64> = (0..n as u64)
                    .filter(|&i| rng::uniform_at(seed, 0xBA7C_0000 + it as u64, i) < p)
                    .collect();
                let data: Vec<f32> = ids.iter().flat_map(|&i| rows.data[i as usize * d..(i as usize + 1) * d].iter().copied()).collect();
                let xn: Vec<f32> = ids.iter().map(|&i| rows.sq_norms[i as usize]).collect();
                let batch = Rows { data: &data, sq_norms: &xn, d, ids: RowIds::List(&ids) };
                let ps = kernel::partial_sums(&batch, &c, cfg.metric, prep.scale, 0)?;
                let inertia = ps.inertia_value();
                let (new, shift) = update::minibatch(&ps, &c, &mut seen, cfg.metric);
                (new, shift, inertia, 0)
            }
        };
        let shift = shift / tol_unit;
        c = Centroids::new(new, k, d)?;
        iterations = it + 1;
        on_iter(&IterStat { redo, iteration: it, inertia, shift, relocated, seconds: t0.elapsed().as_secs_f64() });
        if cfg.tol > 0.0 && shift <= cfg.tol {
            converged = true;
            break;
        }
    }
    let (assignment, ps) = kernel::assign(&rows, &c, cfg.metric, prep.scale)?;
    Ok(FitResult {
        centroids: c.data,
        k,
        d,
        assignment,
        cluster_sizes: ps.counts.clone(),
        inertia: ps.inertia_value(),
        iterations,
        converged,
        best_redo: redo,
        inertia_per_redo: Vec::new(),
        history: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// `per` points around each of `centres`, Gaussian noise `sigma`.
    fn blobs(centres: &[[f32; 2]], per: usize, sigma: f64, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut r = Rng::new(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for (j, c) in centres.iter().enumerate() {
            for _ in 0..per {
                x.push(c[0] + (r.normal() * sigma) as f32);
                x.push(c[1] + (r.normal() * sigma) as f32);
                y.push(j as u32);
            }
        }
        (x, y)
    }

    const CENTRES: [[f32; 2]; 4] = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]];

    #[test]
    fn lloyd_recovers_blobs_with_every_init() {
        let (x, y) = blobs(&CENTRES, 100, 0.5, 1);
        for init in [
            Init::KMeansPlusPlus,
            Init::KMeansParallel { oversampling: 2.0, rounds: 5 },
            Init::Random,
            Init::Seeds(vec![1.0, 1.0, 9.0, 1.0, 1.0, 9.0, 9.0, 9.0]),
        ] {
            let cfg = Config { k: 4, init: init.clone(), n_redo: 5, ..Config::default() };
            let r = fit(&x, 2, &cfg, |_| {}).unwrap();
            let acc = crate::metrics::accuracy(&r.assignment.clusters, &y).unwrap();
            assert_eq!(acc, 1.0, "{init:?}");
            assert_eq!(r.cluster_sizes, vec![100; 4]);
            assert!(r.converged);
            // Inertia ~ 400 points * 2 dims * 0.25 variance.
            assert!((r.inertia - 200.0).abs() < 40.0, "{}", r.inertia);
        }
    }

    #[test]
    fn minibatch_and_cosine_recover_blobs() {
        let (x, y) = blobs(&CENTRES, 500, 0.5, 2);
        let cfg = Config {
            k: 4,
            algorithm: Algorithm::MiniBatch { batch_size: 256 },
            max_iter: 100,
            tol: 0.0,
            n_redo: 3,
            ..Config::default()
        };
        let r = fit(&x, 2, &cfg, |_| {}).unwrap();
        assert_eq!(r.iterations, 100);
        assert_eq!(crate::metrics::accuracy(&r.assignment.clusters, &y).unwrap(), 1.0);

        // Directions: three groups of angles.
        let mut rr = Rng::new(3);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for j in 0..3u32 {
            for _ in 0..100 {
                let a = j as f64 * 2.0 + rr.normal() * 0.05;
                let radius = 1.0 + rr.uniform() * 5.0;
                xs.extend([(a.cos() * radius) as f32, (a.sin() * radius) as f32]);
                ys.push(j);
            }
        }
        let cfg = Config { k: 3, metric: Metric::Cosine, n_redo: 3, ..Config::default() };
        let r = fit(&xs, 2, &cfg, |_| {}).unwrap();
        assert_eq!(crate::metrics::accuracy(&r.assignment.clusters, &ys).unwrap(), 1.0);
        for c in r.centroids.chunks(2) {
            assert!((linalg::sq_norm(c) - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn tol_zero_runs_exactly_max_iter_and_results_are_deterministic() {
        let (x, _) = blobs(&CENTRES, 50, 2.0, 4);
        let cfg = Config { k: 4, max_iter: 7, tol: 0.0, ..Config::default() };
        let a = fit(&x, 2, &cfg, |_| {}).unwrap();
        let b = fit(&x, 2, &cfg, |_| {}).unwrap();
        assert_eq!(a.iterations, 7);
        assert_eq!(a.history.len(), 7);
        assert_eq!(a.centroids, b.centroids);
        assert_eq!(a.assignment, b.assignment);
    }

    #[test]
    fn n_redo_keeps_the_lowest_inertia() {
        let (x, _) = blobs(&CENTRES, 30, 3.0, 5);
        let cfg = Config { k: 6, init: Init::Random, n_redo: 6, ..Config::default() };
        let r = fit(&x, 2, &cfg, |_| {}).unwrap();
        assert_eq!(r.inertia_per_redo.len(), 6);
        let min = r.inertia_per_redo.iter().cloned().fold(f64::INFINITY, f64::min);
        assert_eq!(r.inertia, min);
        assert_eq!(r.inertia_per_redo[r.best_redo], min);
    }

    #[test]
    fn mean_variance_is_per_dimension_population_variance() {
        // Column 0: 1, 3 (var 1); column 1: 0, 4 (var 4).
        assert_eq!(mean_variance(&[1.0, 0.0, 3.0, 4.0], 2), 2.5);
    }

    #[test]
    fn bad_input_is_refused_clearly() {
        let cfg = Config { k: 2, ..Config::default() };
        let err = fit(&[1.0, f32::NAN, 0.0, 0.0], 2, &cfg, |_| {}).unwrap_err();
        assert!(err.to_string().contains("row 0 has a non-finite value"), "{err}");
        let err = fit(&[1.0, 2.0], 2, &cfg, |_| {}).unwrap_err();
        assert!(err.to_string().contains("larger than the number of rows"), "{err}");
        let err = fit(&[1.0, 2.0, 3.0], 2, &cfg, |_| {}).unwrap_err();
        assert!(err.to_string().contains("not a non-empty multiple"), "{err}");
    }
}
