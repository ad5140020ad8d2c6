//! `imclust bench`: speed figures measured the same way every time.

use anyhow::{Context, Result};
use imclust_core::fixed::FixedScale;
use imclust_core::kernel::{self, Centroids, Metric};
use imclust_core::kmeans::Prepared;
use imclust_core::rng::{self, Rng};
use imclust_core::update;
use imclust_data::npy;
use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// Seconds per Lloyd iteration and GFLOP/s of the assignment kernel on synthetic data.
    Kmeans(KmeansArgs),
}

#[derive(clap::Args)]
pub struct KmeansArgs {
    #[arg(long, default_value_t = 200_000)]
    n: usize,
    #[arg(long, default_value_t = 512)]
    d: usize,
    /// Comma-separated cluster counts.
    #[arg(long, default_value = "10,100,1000", value_delimiter = ',')]
    k: Vec<usize>,
    /// Lloyd iterations per K.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the data (x.npy), the initial centroids (init_k{K}.npy) and the results
    /// (imclust.json) here, for the baselines in bench/compare_kmeans.sh.
    #[arg(long)]
    save: Option<PathBuf>,
}

pub fn run(b: Bench) -> Result<()> {
    match b {
        Bench::Kmeans(a) => kmeans(a),
    }
}

/// Gaussian mixture: 256 centres with unit-normal coordinates, rows = centre + 2 * noise (noise
/// dominates, so Lloyd keeps moving for many iterations, as on real embeddings).
/// Each row has its own RNG stream, so generation is parallel and reproducible.
pub fn synthetic(n: usize, d: usize, seed: u64) -> Vec<f32> {
    const CENTRES: usize = 256;
    let mut r = Rng::new(seed);
    let centres: Vec<f32> = (0..CENTRES * d).map(|_| r.normal() as f32).collect();
    let mut x = vec![0.0f32; n * d];
    x.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
        let mut rr = Rng::new(rng::hash3(seed, 1, i as u64));
        let c = &centres[(rr.below(CENTRES as u64) as usize) * d..][..d];
        for (v, &m) in row.iter_mut().zip(c) {
            *v = m + 2.0 * rr.normal() as f32;
        }
    });
    x
}

fn kmeans(a: KmeansArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    eprintln!("generating {} x {} synthetic rows (seed {})...", a.n, a.d, a.seed);
    let x = synthetic(a.n, a.d, a.seed);
    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        npy::write_f32(&dir.join("x.npy"), &[a.n, a.d], &x)?;
    }
    let t = Instant::now();
    let prep = Prepared::new(&x, a.d, Metric::Euclidean)?;
    let prep_s = t.elapsed().as_secs_f64();
    let rows = prep.rows();
    println!(
        "imclust bench kmeans: N={} D={} iters={} threads={} (prepare: {:.3}s, scale 2^-{})",
        a.n, a.d, a.iters, threads, prep_s, prep.scale.exponent
    );
    println!("{:>6} {:>12} {:>10} {:>16}", "K", "s/iter(med)", "GFLOP/s", "inertia");
    let mut results = Vec::new();
    for &k in &a.k {
        let mut r = Rng::new(rng::hash3(a.seed, 2, k as u64));
        let idx = r.distinct(a.n, k);
        let init: Vec<f32> = idx.iter().flat_map(|&i| x[i * a.d..(i + 1) * a.d].iter().copied()).collect();
        if let Some(dir) = &a.save {
            npy::write_f32(&dir.join(format!("init_k{k}.npy")), &[k, a.d], &init)?;
        }
        let (times, inertia) = lloyd_iterations(&rows, init, k, a.d, a.iters, prep.scale)?;
        let per = median(&times);
        let gflops = 2.0 * a.n as f64 * k as f64 * a.d as f64 / per / 1e9;
        println!("{k:>6} {per:>12.4} {gflops:>10.1} {inertia:>16.6e}");
        results.push(serde_json::json!({"k": k, "seconds_per_iter": per, "gflops": gflops, "inertia": inertia}));
    }
    if let Some(dir) = &a.save {
        let j = serde_json::json!({"n": a.n, "d": a.d, "iters": a.iters, "threads": threads, "results": results});
        imclust_data::fsutil::write_atomic(&dir.join("imclust.json"), serde_json::to_string_pretty(&j)?.as_bytes())?;
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 { s[m] } else { (s[m - 1] + s[m]) / 2.0 }
}

/// Runs exactly `iters` Lloyd iterations; returns the seconds of each and the inertia of the
/// final centroids (one more assignment pass, not timed).
fn lloyd_iterations(
    rows: &kernel::Rows<'_>,
    init: Vec<f32>,
    k: usize,
    d: usize,
    iters: usize,
    scale: FixedScale,
) -> Result<(Vec<f64>, f64)> {
    let mut c = Centroids::new(init, k, d)?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let mut ps = kernel::partial_sums(rows, &c, Metric::Euclidean, scale, k)?;
        update::relocate_empty(&mut ps);
        let (new, _) = update::lloyd(&ps, &c, Metric::Euclidean);
        c = Centroids::new(new, k, d)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let ps = kernel::partial_sums(rows, &c, Metric::Euclidean, scale, 0)?;
    Ok((times, ps.inertia_value()))
}
