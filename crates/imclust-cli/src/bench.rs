//! `imclust bench`: speed figures measured the same way every time.

use anyhow::{Context, Result, bail};
use imclust_core::fixed::FixedScale;
use imclust_core::kernel::{self, Centroids, Metric};
use imclust_core::kmeans::Prepared;
use imclust_core::rng::{self, Rng};
use imclust_core::update;
use imclust_data::bad::OnBadRecord;
use imclust_data::dataset::DatasetSpec;
use imclust_data::npy;
use imclust_data::shard::ShardPlan;
use imclust_embed::bundle::Bundle;
use imclust_embed::preprocess;
use imclust_embed::runtime::{self, Device, RuntimeConfig};
use imclust_worker::embed::{Model, embed_shard, to_embed_record};
use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// Seconds per Lloyd iteration and GFLOP/s of the assignment kernel on synthetic data.
    Kmeans(KmeansArgs),
    /// Images/s of a bundle's image tower: the raw session on ready tensors vs the whole
    /// decode + preprocess + inference pipeline (`imclust embed`'s), in one process.
    Embed(EmbedArgs),
    /// Seconds per Lloyd iteration of a real job (`imclust run`: gRPC broadcast, partial sums
    /// on worker processes, reduce, update, checkpoint) against the core kernel alone in one
    /// process, on the same synthetic embeddings.
    ClusterRpc(ClusterRpcArgs),
}

#[derive(clap::Args)]
pub struct ClusterRpcArgs {
    #[arg(long, default_value_t = 200_000)]
    n: usize,
    #[arg(long, default_value_t = 512)]
    d: usize,
    #[arg(long, default_value_t = 100)]
    k: usize,
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Local worker processes of the job.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the data and the job's output go.
    #[arg(long, default_value = ".cache/bench/cluster-rpc")]
    dir: PathBuf,
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
        Bench::Embed(a) => embed(a),
        Bench::ClusterRpc(a) => cluster_rpc(a),
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

fn cluster_rpc(a: ClusterRpcArgs) -> Result<()> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let dir = a.dir.canonicalize()?;
    let data = dir.join(format!("x_{}x{}_s{}.npy", a.n, a.d, a.seed));
    eprintln!("generating {} x {} synthetic rows (seed {})...", a.n, a.d, a.seed);
    let x = synthetic(a.n, a.d, a.seed);
    if !data.exists() {
        npy::write_f32(&data, &[a.n, a.d], &x)?;
    }
    // Baseline: the core kernel alone, in this process, on every core.
    let prep = Prepared::new(&x, a.d, Metric::Euclidean)?;
    let mut r = Rng::new(rng::hash3(a.seed, 2, a.k as u64));
    let init: Vec<f32> = r.distinct(a.n, a.k).iter().flat_map(|&i| x[i * a.d..(i + 1) * a.d].iter().copied()).collect();
    let (times, _) = lloyd_iterations(&prep.rows(), init, a.k, a.d, a.iters, prep.scale)?;
    let core = median(&times);
    drop(prep);
    drop(x);
    // The job: the same rows as an npy dataset, clustered by `imclust run`.
    let job_id = format!("bench-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs());
    let out = dir.join("out");
    let config = dir.join("job.toml");
    let toml = format!(
        "[job]\nid = \"{job_id}\"\n[dataset]\nurl = \"npy:{}\"\n[init]\nmethod = \"random\"\n\
         [kmeans]\nk = {}\nalgorithm = \"lloyd\"\nmetric = \"euclidean\"\nmax_iter = {}\ntol = 0.0\nseed = {}\n\
         [output]\nurl = \"{}\"\nembeddings = \"none\"\n",
        data.display(),
        a.k,
        a.iters,
        a.seed,
        out.display()
    );
    std::fs::write(&config, toml)?;
    let t = Instant::now();
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["run", "--quiet", "--workers", &a.workers.to_string(), "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running the job")?;
    if !status.success() {
        bail!("the benchmark job failed ({status})");
    }
    let wall = t.elapsed().as_secs_f64();
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join(&job_id).join("run.json"))?)?;
    let its: Vec<f64> = run["iteration_seconds"].as_array().context("run.json lists iteration_seconds")?.iter().filter_map(|v| v.as_f64()).collect();
    if its.is_empty() {
        bail!("the job ran no iterations");
    }
    let job = median(&its);
    let ratio = job / core;
    println!("imclust bench cluster-rpc: N={} D={} K={} iters={} workers={} cores={}", a.n, a.d, a.k, a.iters, a.workers, rayon::current_num_threads());
    println!("{:<44} {:>10}", "measure", "s/iter");
    println!("{:<44} {:>10.4}", "core kernel alone (1 process, all cores)", core);
    println!("{:<44} {:>10.4}", format!("imclust run, {} worker processes over gRPC", a.workers), job);
    println!(
        "ratio job / core: {ratio:.3}x (overhead {:+.1}%; target <= 10%: {}); whole job {wall:.1}s",
        (ratio - 1.0) * 100.0,
        if ratio <= 1.10 { "PASS" } else { "MISS" }
    );
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

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// The model bundle (a directory with bundle.toml).
    #[arg(long)]
    bundle: PathBuf,
    /// A folder of images, read as `--dataset folder:DIR` (class folders or a flat folder; the
    /// first --limit records in dataset order are used).
    #[arg(long, default_value = ".cache/data/textiles")]
    images: PathBuf,
    /// Images to embed (0: all).
    #[arg(long, default_value_t = 256)]
    limit: usize,
    /// Images per inference call.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// ONNX Runtime intra-op threads (0: one per core).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// cpu, cuda, tensorrt or auto.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// The libonnxruntime file (default: ORT_DYLIB_PATH, then .cache/onnxruntime/).
    #[arg(long, value_name = "PATH")]
    onnxruntime: Option<PathBuf>,
    /// Timed rounds; each runs the raw session then the pipeline (interleaved), the best
    /// round of each is reported.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Write imclust_embed.json (figures and the image list) and embeddings.npy (the pipeline's
    /// result) here, for bench/compare_embed.sh.
    #[arg(long)]
    save: Option<PathBuf>,
}

fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs
}

/// CPU ticks (Linux `/proc`): all CPUs busy, all CPUs total, and this process's own.
#[derive(Clone, Copy)]
struct CpuTicks {
    busy: u64,
    total: u64,
    own: u64,
}

impl CpuTicks {
    fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let f: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        let total: u64 = f.iter().take(8).sum();
        let idle = f.get(3)? + f.get(4)?; // idle + iowait
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the ")" closing the command name: state is field 3, utime 14, stime 15.
        let rest: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
        let own = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
        Some(CpuTicks { busy: total - idle, total, own })
    }

    /// The share of the machine's CPU time (0..1) that other processes used since `self`.
    fn others_since(self) -> Option<f64> {
        let now = CpuTicks::now()?;
        let total = now.total.checked_sub(self.total)?;
        let others = (now.busy - self.busy).saturating_sub(now.own - self.own);
        (total > 0).then(|| others as f64 / total as f64)
    }
}

fn others_pct(share: Option<f64>) -> String {
    share.map(|s| format!("{:.0}%", 100.0 * s)).unwrap_or_else(|| "n/a".into())
}

fn embed(a: EmbedArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let rt = RuntimeConfig { onnxruntime_path: a.onnxruntime.clone(), device: a.device, intra_threads: a.threads };
    runtime::init(&rt)?;
    let bundle = Bundle::load_with(&a.bundle, &rt)?;
    let spec = bundle.image_spec();
    // The images as `imclust embed --images` reads them: a folder dataset, the first --limit
    // records, embedded as one shard through the worker's shard step (no cache).
    let aio = imclust_data::storage::runtime()?;
    let dataset = DatasetSpec::parse(&format!("folder:{}", a.images.display()), None)?;
    let ds = crate::dataset::open(&aio, &dataset, &imclust_data::storage::Storage::default())
        .with_context(|| format!("opening {} (fetch the textiles with `bash scripts/fetch-textiles.sh`)", a.images.display()))?;
    let n = if a.limit > 0 { ds.len().min(a.limit as u64) } else { ds.len() };
    let shard = ShardPlan::new(n, n.max(1), ds.fingerprint())?.shards.remove(0);
    let n = n as usize;
    let mut models = [Model::new(bundle, &rt, a.batch_size)?];
    let digest = models[0].digest().to_string();
    let (name, normalize, bundle_dir) = {
        let b = &models[0].bundle;
        (b.name().to_string(), b.config().image.normalize, b.dir().display().to_string())
    };
    let rayon_threads = rayon::current_num_threads();
    let dim = models[0].dim();
    println!(
        "imclust bench embed: bundle {} (digest {}), {n} images from {}, batch {}, ORT intra threads {}, device {}, \
         decode threads (rayon) {rayon_threads}, {} cores",
        name,
        &digest[..12],
        a.images.display(),
        a.batch_size,
        a.threads,
        a.device,
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(0)
    );

    // Ready tensors: read + decode + preprocess every image (the pipeline's producer, with no
    // inference behind it), timed on its own.
    let t = Instant::now();
    let records = aio.block_on(ds.read(shard.range()))?;
    let files: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let inputs = records.iter().map(to_embed_record).collect::<Result<Vec<_>, _>>()?;
    let mut ready = Vec::new();
    preprocess::pipeline(inputs, spec, a.batch_size, 2, |b| {
        if let Some((_, e)) = b.errors.into_iter().next() {
            return Err(e);
        }
        ready.push(b.pixels);
        Ok(())
    })?;
    let pre_s = t.elapsed().as_secs_f64();
    println!("preprocess only (read+decode+resize+normalise on {rayon_threads} rayon threads): {:.1} images/s ({pre_s:.2}s)", rate(n, pre_s));

    // Rounds, interleaved: warm-up batch + raw session on the ready tensors, then warm-up
    // batch + the whole pipeline.
    let mut raw_rates = Vec::new();
    let mut pipe_rates = Vec::new();
    let mut raw_rows = vec![0f32; n * dim];
    let mut pipe_rows = Vec::new();
    let mut raw_others = Vec::new();
    let mut pipe_others = Vec::new();
    for round in 1..=a.rounds {
        let enc = &mut models[0].encoder;
        enc.run(ready[0].view())?; // warm-up
        let cpu = CpuTicks::now();
        let t = Instant::now();
        let mut at = 0;
        for b in &ready {
            let rows = enc.run(b.view())?;
            let k = rows.nrows() * dim;
            raw_rows[at..at + k].copy_from_slice(rows.as_slice().expect("standard layout"));
            at += k;
        }
        let raw_s = t.elapsed().as_secs_f64();
        let raw_busy = cpu.and_then(CpuTicks::others_since);
        raw_rates.push(rate(n, raw_s));
        raw_others.push(raw_busy);

        enc.run(ready[0].view())?; // warm-up
        let cpu = CpuTicks::now();
        let t = Instant::now();
        let embedded = embed_shard(aio.handle(), ds.as_ref(), &shard, &mut models, None, OnBadRecord::Fail)?;
        pipe_rows = embedded.into_iter().next().expect("one model").rows.rows;
        let pipe_s = t.elapsed().as_secs_f64();
        let pipe_busy = cpu.and_then(CpuTicks::others_since);
        pipe_rates.push(rate(n, pipe_s));
        pipe_others.push(pipe_busy);
        println!(
            "round {round}: raw session {:.2} images/s ({raw_s:.2}s), pipeline {:.2} images/s ({pipe_s:.2}s), ratio {:.3} \
             [other processes' CPU share: {} / {}]",
            rate(n, raw_s),
            rate(n, pipe_s),
            raw_s / pipe_s,
            others_pct(raw_busy),
            others_pct(pipe_busy)
        );
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let (raw, pipe) = (best(&raw_rates), best(&pipe_rates));
    let max_diff = raw_rows.iter().zip(&pipe_rows).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    println!("best of {} rounds each:", a.rounds);
    println!("  {:<58} {:>9.2} images/s", "raw session (ImageEncoder::run on ready batches)", raw);
    println!("  {:<58} {:>9.2} images/s", "pipeline (embed_shard: read+decode+preprocess || infer)", pipe);
    println!("  {:<58} {:>9.2} images/s", "preprocess only (read+decode+preprocess, no inference)", rate(n, pre_s));
    println!(
        "  pipeline / raw = {:.3}x (target >= 0.9x: {})",
        pipe / raw,
        if pipe / raw >= 0.9 { "PASS" } else { "MISS" }
    );
    println!("  raw vs pipeline embeddings: max abs diff {max_diff:.3e}");
    println!(
        "  (raw session = ort Session::run on the ready NHWC/NCHW batch plus ImageEncoder's shape check, output copy{})",
        if normalize { " and L2 normalisation" } else { "" }
    );

    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        npy::write_f32(&dir.join("embeddings.npy"), &[n, dim], &pipe_rows)?;
        let j = serde_json::json!({
            "bundle": bundle_dir,
            "bundle_name": name,
            "digest": digest,
            "images": n,
            "images_dir": a.images.display().to_string(),
            "batch": a.batch_size,
            "threads": a.threads,
            "decode_threads": rayon_threads,
            "device": a.device.to_string(),
            "rounds": a.rounds,
            "reported": "best",
            "raw_images_per_s": raw,
            "pipeline_images_per_s": pipe,
            "preprocess_images_per_s": rate(n, pre_s),
            "raw_images_per_s_rounds": raw_rates,
            "pipeline_images_per_s_rounds": pipe_rates,
            "raw_other_processes_cpu_share_rounds": raw_others,
            "pipeline_other_processes_cpu_share_rounds": pipe_others,
            "raw_vs_pipeline_max_abs_diff": max_diff,
            "dim": dim,
            "files": files,
        });
        imclust_data::fsutil::write_atomic(&dir.join("imclust_embed.json"), serde_json::to_string_pretty(&j)?.as_bytes())?;
        println!("wrote {} and {}", dir.join("imclust_embed.json").display(), dir.join("embeddings.npy").display());
    }
    Ok(())
}
