//! `imclust cluster`: k-means on an embeddings matrix; the output is committed under
//! `<output>/<job-id>/` (see `imclust_data::output`).

use anyhow::{Context, Result, bail};
use imclust_core::init::Init;
use imclust_core::kernel::Metric;
use imclust_core::kmeans::{self, Algorithm, Config};
use imclust_data::npy;
use imclust_data::output::{self, Assignments, ManifestInfo, OutputWriter};
use imclust_data::storage::{self, Storage};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Embeddings, N x D, float32 or float16 .npy in C order.
    #[arg(long)]
    embeddings: PathBuf,
    /// Optional true classes (integer .npy, one per row) to score the clustering.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Number of clusters.
    #[arg(long)]
    k: usize,
    /// kmeans++ | kmeans-parallel | random | seeds:PATH.npy (K x D initial centroids).
    #[arg(long, default_value = "kmeans++")]
    init: String,
    /// lloyd | minibatch.
    #[arg(long, default_value = "lloyd")]
    algorithm: String,
    /// euclidean | cosine (spherical k-means on unit-normalised rows).
    #[arg(long, default_value = "euclidean")]
    metric: String,
    /// Iterations (mini-batch: steps).
    #[arg(long, default_value_t = 300)]
    max_iter: usize,
    /// Stop when sum ||dc||^2 / sum ||c||^2 <= tol; 0 runs exactly max-iter iterations.
    #[arg(long, default_value_t = 1e-4)]
    tol: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Independent restarts; the lowest inertia wins.
    #[arg(long, default_value_t = 1)]
    n_redo: usize,
    /// Mini-batch size (expected rows per step).
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    /// k-means|| oversampling factor, as a multiple of k.
    #[arg(long, default_value_t = 2.0)]
    oversampling: f64,
    /// k-means|| rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where outputs go: a local directory or an object-store URL (s3://, gs://, az://). The
    /// job's files land under OUTPUT/JOB-ID/, manifest.json last.
    #[arg(long)]
    output: String,
    /// The job's name under --output (default: cluster-<UTC YYYYmmdd-HHMMSS>). A job id whose
    /// output is already committed is refused.
    #[arg(long)]
    job_id: Option<String>,
    /// Print every iteration to stderr.
    #[arg(long)]
    verbose: bool,
}

pub fn parse_init(s: &str, oversampling: f64, rounds: usize) -> Result<Init> {
    Ok(match s {
        "kmeans++" => Init::KMeansPlusPlus,
        "kmeans-parallel" | "kmeans||" => Init::KMeansParallel { oversampling, rounds },
        "random" => Init::Random,
        _ => match s.strip_prefix("seeds:") {
            Some(path) => {
                let m = npy::read_matrix_f32(path.as_ref()).context("reading the seed centroids")?;
                Init::Seeds(m.data)
            }
            None => bail!("unknown --init '{s}': use kmeans++, kmeans-parallel, random or seeds:PATH.npy"),
        },
    })
}

pub fn run(a: Args) -> Result<()> {
    let t0 = Instant::now();
    let rt = storage::runtime()?;
    let prefix = Storage::default().locate(&a.output)?;
    let job_id = a.job_id.clone().unwrap_or_else(|| output::default_job_id("cluster"));
    // Refuse a committed job before the work; nothing is written until the fit is done.
    let mut out = rt.block_on(OutputWriter::create(prefix, &job_id))?;
    let x = npy::read_matrix_f32(&a.embeddings)?;
    let labels = match &a.labels {
        Some(p) => {
            let l = crate::eval::read_ids(p, "labels")?;
            if l.len() != x.rows {
                bail!("{} has {} labels but {} has {} rows", p.display(), l.len(), a.embeddings.display(), x.rows);
            }
            Some(l)
        }
        None => None,
    };
    let metric: Metric = a.metric.parse()?;
    let algorithm = match a.algorithm.as_str() {
        "lloyd" => Algorithm::Lloyd,
        "minibatch" | "mini-batch" => Algorithm::MiniBatch { batch_size: a.batch_size },
        other => bail!("unknown --algorithm '{other}': use lloyd or minibatch"),
    };
    let init = parse_init(&a.init, a.oversampling, a.rounds)?;
    if let Init::Seeds(s) = &init
        && s.len() != a.k * x.cols
    {
        bail!("{}: the seed centroids must be k x d = {} x {}", a.init, a.k, x.cols);
    }
    let cfg = Config {
        k: a.k,
        metric,
        algorithm,
        init,
        max_iter: a.max_iter,
        tol: a.tol,
        seed: a.seed,
        n_redo: a.n_redo,
    };
    let load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let verbose = a.verbose;
    let r = kmeans::fit(&x.data, x.cols, &cfg, |s| {
        if verbose {
            eprintln!(
                "redo {} iter {:>4}  inertia {:.6e}  shift {:.3e}  relocated {}  {:.3}s",
                s.redo, s.iteration, s.inertia, s.shift, s.relocated, s.seconds
            );
        }
    })?;
    let fit_s = t1.elapsed().as_secs_f64();

    let mut m = serde_json::json!({
        "n": x.rows,
        "d": x.cols,
        "k": r.k,
        "algorithm": a.algorithm,
        "metric": a.metric,
        "init": cfg.init.name(),
        "seed": a.seed,
        "n_redo": a.n_redo,
        "max_iter": a.max_iter,
        "tol": a.tol,
        "inertia": r.inertia,
        "iterations": r.iterations,
        "converged": r.converged,
        "best_redo": r.best_redo,
        "inertia_per_redo": r.inertia_per_redo,
        "cluster_sizes": r.cluster_sizes,
        "seconds": fit_s,
        "seconds_load": load_s,
    });
    if let Some(l) = &labels {
        let s = imclust_core::metrics::scores(&r.assignment.clusters, l)?;
        m["acc"] = s.acc.into();
        m["nmi"] = s.nmi.into();
        m["ari"] = s.ari.into();
    }

    let t2 = Instant::now();
    let n = x.rows;
    let assignments = Assignments {
        index: (0..n as u64).collect(),
        ids: (0..n).map(|i| i.to_string()).collect(),
        uris: None,
        labels: labels.map(|l| l.into_iter().map(|v| Some(i64::from(v))).collect()),
        clusters: r.assignment.clusters,
        distances: r.assignment.distances,
        margins: r.assignment.margins,
    };
    let root = out.location().url().to_string();
    let config_text = config_text(&a);
    let manifest = rt
        .block_on(async {
            out.put_assignments(&assignments).await?;
            out.put_centroids(r.k, r.d, &r.centroids, &r.cluster_sizes, None).await?;
            out.put_json("metrics.json", &m).await?;
            let timings = [("load", load_s), ("fit", fit_s), ("write", t2.elapsed().as_secs_f64())];
            let timings = timings.into_iter().map(|(stage, s)| (stage.to_string(), s)).collect();
            out.commit(ManifestInfo { config_text, timings }).await
        })
        .with_context(|| format!("writing the output of job '{job_id}' to {root}"))?;
    println!("{}", serde_json::to_string_pretty(&m)?);
    eprintln!("output committed: {root} ({} files and manifest.json)", manifest.files.len());
    Ok(())
}

/// The resolved arguments that determine the result (not where it goes), as the
/// configuration text whose digest the manifest records.
fn config_text(a: &Args) -> String {
    let v = serde_json::json!({
        "command": "cluster",
        "embeddings": a.embeddings,
        "labels": a.labels,
        "k": a.k,
        "init": a.init,
        "algorithm": a.algorithm,
        "metric": a.metric,
        "max_iter": a.max_iter,
        "tol": a.tol,
        "seed": a.seed,
        "n_redo": a.n_redo,
        "batch_size": a.batch_size,
        "oversampling": a.oversampling,
        "rounds": a.rounds,
    });
    serde_json::to_string_pretty(&v).expect("plain JSON")
}
