//! `imclust embed`: any dataset through one or more bundles' image towers, shard by shard,
//! with the embedding cache and the bad-record policy.

use anyhow::{Result, bail};
use imclust_core::fusion::{self, Part};
use imclust_embed::bundle::Bundle;
use crate::dataset::DatasetArgs;
use crate::models::RuntimeArgs;
use imclust_data::bad::{self, OnBadRecord};
use imclust_data::cache::EmbeddingCache;
use imclust_data::npy;
use imclust_data::shard::{DEFAULT_SHARD_SIZE, ShardPlan};
use imclust_data::storage::Storage;
use imclust_worker::embed::{Model, align, embed_shard};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The models of a run: one bundle, or several fused into one space.
#[derive(clap::Args)]
pub struct FusionArgs {
    /// A model bundle (a directory with bundle.toml). Repeat to fuse several models: each
    /// model's rows (embeddings or text seeds) are L2-normalised, multiplied by its --weight
    /// and concatenated, so `embed` and `seeds` with the same bundles and weights agree.
    #[arg(long = "bundle", required = true)]
    pub bundles: Vec<PathBuf>,
    /// Weight of each bundle, in --bundle order (default 1 each).
    #[arg(long = "weight")]
    pub weights: Vec<f32>,
}

impl FusionArgs {
    /// The weight of each bundle: as given (one per bundle, positive), or 1 each.
    pub fn weights(&self) -> Result<Vec<f32>> {
        let bundles = self.bundles.len();
        if self.weights.is_empty() {
            return Ok(vec![1.0; bundles]);
        }
        if self.weights.len() != bundles {
            bail!("{} --weight values for {bundles} --bundle values: give one weight per bundle, or none", self.weights.len());
        }
        if let Some(w) = self.weights.iter().find(|w| !w.is_finite() || **w <= 0.0) {
            bail!("--weight {w}: weights must be positive numbers");
        }
        Ok(self.weights.clone())
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    models: FusionArgs,
    #[command(flatten)]
    dataset: DatasetArgs,
    /// A folder of images: the same as --dataset folder:DIR (DIR/<class>/<image>, or a flat
    /// folder of unlabelled images).
    #[arg(long, conflicts_with_all = ["npy_pixels", "spec"])]
    images: Option<PathBuf>,
    /// Raw uint8 pixels, (N, H, W) or (N, H, W, C) with C = 1 or 3: the same as --dataset npy:X.npy.
    #[arg(long, conflicts_with = "spec")]
    npy_pixels: Option<PathBuf>,
    /// Output embeddings, N x dim float32 .npy (a path or an object-store URL), rows in
    /// dataset order.
    #[arg(long)]
    out: String,
    /// Also write each row's class (int32 .npy, -1 where a record has no label) and the
    /// class names next to it (<file>.classes.txt).
    #[arg(long)]
    labels_out: Option<PathBuf>,
    /// Embedding cache (a path or an object-store URL): shards already embedded with the
    /// same model and preprocessing are read from it, new ones are added.
    #[arg(long)]
    cache: Option<String>,
    /// fail: stop at the first unreadable or corrupt record, naming it. skip: leave bad
    /// records out, list them in <out>.errors.jsonl and write the dataset index of every
    /// row to <out>.index.npy. Either way <out>.metrics.json counts records, bad records,
    /// cache hits and model invocations.
    #[arg(long, default_value = "fail", value_name = "fail|skip")]
    on_bad_record: String,
    /// Records per shard (the unit of caching and of work).
    #[arg(long, default_value_t = DEFAULT_SHARD_SIZE)]
    shard_size: u64,
    /// Images per inference call.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// `x.npy` -> `x.<suffix>` (`x.errors.jsonl`, `x.index.npy`).
fn companion(out: &str, suffix: &str) -> String {
    format!("{}.{suffix}", out.strip_suffix(".npy").unwrap_or(out))
}

pub fn run(a: Args) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let policy: OnBadRecord = a.on_bad_record.parse()?;
    let spec = match (&a.images, &a.npy_pixels, &a.dataset.spec) {
        (Some(dir), _, _) => a.dataset.parse(&format!("folder:{}", dir.display()))?,
        (_, Some(p), _) => a.dataset.parse(&format!("npy:{}", p.display()))?,
        (_, _, Some(s)) => a.dataset.parse(s)?,
        _ => bail!("name the images: --dataset KIND:URL (or --images DIR, --npy-pixels X.npy)"),
    };
    let rt = a.runtime.config();
    imclust_embed::runtime::init(&rt)?;
    let weights = a.models.weights()?;
    let aio = imclust_data::storage::runtime()?;
    let storage = Storage::default();
    let out = storage.locate(&a.out)?;
    out.check_writable()?;
    let cache = match a.cache.as_deref() {
        Some(c) => {
            let loc = storage.locate(c)?;
            loc.check_writable()?;
            Some(EmbeddingCache::new(loc))
        }
        None => None,
    };
    let t = Instant::now();
    let ds = crate::dataset::open(&aio, &spec, &storage)?;
    for n in ds.notes() {
        eprintln!("note: {n}");
    }
    if ds.is_empty() {
        bail!("{spec} has no records");
    }
    let plan = ShardPlan::for_dataset(ds.as_ref(), a.shard_size)?;
    let mut models = a
        .models
        .bundles
        .iter()
        .map(|b| Ok(Model::new(Bundle::load_with(b, &rt)?, &rt, a.batch_size)?))
        .collect::<Result<Vec<_>>>()?;
    let parts: Vec<Part> = models.iter().zip(&weights).map(|(m, &weight)| Part { dim: m.dim(), weight }).collect();
    let dim: usize = parts.iter().map(|p| p.dim).sum();
    let n = ds.len() as usize;
    let mut rows: Vec<f32> = Vec::with_capacity(n * dim);
    let mut indices: Vec<i64> = Vec::with_capacity(n);
    let mut labels: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut bad = Vec::new();
    let (mut hits, mut misses) = (0usize, 0usize);
    for shard in &plan.shards {
        let embedded = embed_shard(aio.handle(), ds.as_ref(), shard, &mut models, cache.as_ref(), policy)?;
        for e in &embedded {
            if e.cached { hits += 1 } else { misses += 1 }
        }
        let aligned = align(embedded.into_iter().map(|e| e.rows).collect());
        if aligned.rows.len() == 1 {
            rows.extend_from_slice(&aligned.rows[0]);
        } else {
            let refs: Vec<(&[f32], Part)> = aligned.rows.iter().map(|r| r.as_slice()).zip(parts.iter().copied()).collect();
            rows.extend(fusion::fuse_rows(&refs, aligned.indices.len()));
        }
        indices.extend(aligned.indices.iter().map(|&i| i as i64));
        labels.extend(aligned.labels);
        bad.extend(aligned.bad);
    }
    let secs = t.elapsed().as_secs_f64();
    let kept = indices.len();
    if kept == 0 {
        bail!("every record of {spec} is bad ({} listed in the errors); nothing to write", bad.len());
    }
    let bytes = npy::encode_f32(&[kept, dim], &rows).map_err(|r| anyhow::anyhow!("{r}"))?;
    if policy == OnBadRecord::Skip {
        let errors = storage.locate(&companion(&a.out, "errors.jsonl"))?;
        aio.block_on(errors.put(bad::to_jsonl(&bad).into()))?;
        let index = storage.locate(&companion(&a.out, "index.npy"))?;
        let ib = npy::encode_i64(&[kept], &indices).map_err(|r| anyhow::anyhow!("{r}"))?;
        aio.block_on(index.put(ib.into()))?;
        if !bad.is_empty() {
            eprintln!("skipped {} bad record(s), listed in {} (first: record {} {}: {})", bad.len(), errors.url(), bad[0].index, bad[0].id, bad[0].reason);
        }
    }
    if let Some(path) = &a.labels_out {
        let Some(classes) = ds.class_names() else {
            bail!("--labels-out: {spec} has no labels");
        };
        let ids: Vec<i32> = labels.iter().map(|l| l.map_or(-1, |v| v as i32)).collect();
        npy::write_i32(path, &[ids.len()], &ids)?;
        let mut list = path.as_os_str().to_owned();
        list.push(".classes.txt");
        imclust_data::fsutil::write_atomic(Path::new(&list), (classes.join("\n") + "\n").as_bytes())?;
        eprintln!("labels: {} classes -> {}", classes.len(), path.display());
    }
    let invocations: u64 = models.iter().map(|m| m.encoder.invocations).sum();
    let metrics = serde_json::json!({
        "dataset": spec,
        "dataset_fingerprint": ds.fingerprint(),
        "records": n,
        "embedded": kept,
        "bad_records": bad.len(),
        "on_bad_record": policy,
        "dim": dim,
        "models": models.iter().map(|m| serde_json::json!({"name": m.name(), "digest": m.digest(), "dim": m.dim()})).collect::<Vec<_>>(),
        "shards": plan.shards.len(),
        "shard_size": a.shard_size,
        "cache": a.cache,
        "cache_hits": hits,
        "cache_misses": misses,
        "model_invocations": invocations,
        "seconds": secs,
    });
    let metrics_loc = storage.locate(&companion(&a.out, "metrics.json"))?;
    aio.block_on(metrics_loc.put(serde_json::to_vec_pretty(&metrics)?.into()))?;
    // The embeddings last: a reader that sees them sees their companions too.
    aio.block_on(out.put(bytes.into()))?;
    println!(
        "embedded {kept} of {n} records of {spec} with {} model(s) -> {} ({kept} x {dim}, float32) in {secs:.2}s ({:.1} records/s); \
         {} shard(s), cache hits {hits}, misses {misses}, model invocations {invocations}, bad records {}",
        models.len(),
        out.url(),
        n as f64 / secs,
        plan.shards.len(),
        bad.len()
    );
    Ok(())
}
