//! A worker's job context and resident shards: the models, the dataset, the cache, and the
//! prepared rows of every shard this worker holds (kept in memory between iterations,
//! reloaded from the embedding cache when a shard moves here). Each stage's computation on
//! a group of shards lives here too.

use crate::embed::{Model, align, embed_shard};
use crate::error::{Result, WorkerError};
use imclust_core::fixed::FixedScale;
use imclust_core::fusion::{self, Part};
use imclust_core::kernel::{self, Centroids, Metric, PartialSums, RowIds, Rows};
use imclust_core::{linalg, rng};
use imclust_data::bad::{BadRecord, OnBadRecord};
use imclust_data::cache::EmbeddingCache;
use imclust_data::dataset::{self, Dataset, DatasetSpec};
use imclust_data::npy;
use imclust_data::output::{FileEntry, sha256_hex};
use imclust_data::shard::ShardPlan;
use imclust_data::storage::{Location, Storage, StorageOptions};
use imclust_embed::bundle::Bundle;
use imclust_embed::runtime::{self, RuntimeConfig};
use imclust_proto::v1::{self, JobSpec, Task};
use imclust_proto::{Matrix, Sums};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::runtime::Handle;

/// One shard's rows as the kernel wants them.
pub struct ShardRows {
    pub indices: Vec<u64>,
    pub ids: Vec<String>,
    pub labels: Vec<i64>,
    /// `n x d`: fused (several models) and unit-normalised (cosine metric).
    pub rows: Vec<f32>,
    pub sq_norms: Vec<f32>,
    pub bad: Vec<BadRecord>,
    pub files: Option<Vec<FileEntry>>,
    pub model_dims: Vec<usize>,
    pub cache_hits: u32,
    pub cache_misses: u32,
    pub invocations: u64,
}

impl ShardRows {
    fn view(&self, d: usize) -> Rows<'_> {
        Rows { data: &self.rows, sq_norms: &self.sq_norms, d, ids: RowIds::List(&self.indices) }
    }
}

/// Everything a worker needs for one job.
pub struct JobContext {
    pub spec: JobSpec,
    handle: Handle,
    dataset: Arc<dyn Dataset>,
    plan: ShardPlan,
    models: Vec<Model>,
    cache: Option<EmbeddingCache>,
    output: Location,
    policy: OnBadRecord,
    metric: Metric,
    pub resident: HashMap<u32, ShardRows>,
    d: usize,
}

impl JobContext {
    /// Opens the dataset and loads the models of `spec`; refuses bundles whose digest
    /// differs from the coordinator's (every process must embed with the same weights).
    pub fn new(spec: JobSpec, handle: Handle, onnxruntime: Option<PathBuf>) -> Result<Self> {
        let rt = RuntimeConfig {
            onnxruntime_path: onnxruntime,
            device: spec.device.parse().map_err(|e| WorkerError::Input(format!("job device: {e}")))?,
            intra_threads: spec.intra_threads as usize,
        };
        runtime::init(&rt)?;
        let s = spec.storage.clone().unwrap_or_default();
        let storage = Storage::new(StorageOptions {
            endpoint: (!s.endpoint.is_empty()).then(|| s.endpoint.clone()),
            region: (!s.region.is_empty()).then(|| s.region.clone()),
            allow_http: s.allow_http,
            virtual_hosted_style: s.virtual_hosted_style,
            max_retries: s.max_retries.map(|r| r as usize),
            timeout_seconds: s.timeout_seconds,
            ..Default::default()
        });
        let mut dspec = DatasetSpec::parse(&spec.dataset, (!spec.split.is_empty()).then_some(spec.split.as_str()))?;
        dspec.labels = (!spec.label_set.is_empty()).then(|| spec.label_set.clone());
        let dataset = handle.block_on(dataset::open(&dspec, &storage))?;
        let plan = ShardPlan::for_dataset(dataset.as_ref(), spec.shard_size)?;
        let mut models = Vec::new();
        for m in &spec.models {
            let model = Model::new(Bundle::load_with(&m.bundle, &rt)?, &rt, m.batch_size as usize)?;
            if model.digest() != m.digest {
                return Err(WorkerError::Input(format!(
                    "bundle {} on this worker differs from the coordinator's (digest {} vs {}): deploy the same bundle everywhere",
                    m.bundle,
                    &model.digest()[..12.min(model.digest().len())],
                    &m.digest[..12.min(m.digest.len())]
                )));
            }
            models.push(model);
        }
        let cache = (!spec.cache_url.is_empty()).then(|| storage.locate(&spec.cache_url)).transpose()?.map(EmbeddingCache::new);
        let output = storage.locate(&spec.output_url)?;
        let policy = spec.on_bad_record.parse()?;
        let metric = spec.metric.parse().map_err(|e| WorkerError::Input(format!("job metric: {e}")))?;
        Ok(JobContext { spec, handle, dataset, plan, models, cache, output, policy, metric, resident: HashMap::new(), d: 0 })
    }

    fn shard(&self, id: u32) -> Result<&imclust_data::shard::Shard> {
        self.plan.shards.get(id as usize).ok_or_else(|| {
            WorkerError::Input(format!(
                "shard {id} is not in this worker's plan of {} shards: does the worker see the same dataset as the coordinator?",
                self.plan.shards.len()
            ))
        })
    }

    /// Makes `id` resident: from memory, else from the cache, else by embedding it.
    /// `with_files` also writes (or re-lists) the job's embedding files of the shard.
    fn ensure(&mut self, id: u32, with_files: bool) -> Result<()> {
        let want_files = with_files && self.spec.embeddings_dtype != "none";
        if self.resident.get(&id).is_some_and(|r| !want_files || r.files.is_some()) {
            return Ok(());
        }
        let shard = self.shard(id)?.clone();
        if self.models.is_empty() {
            return self.load_vectors(id, &shard);
        }
        let invocations_before: u64 = self.models.iter().map(|m| m.encoder.invocations).sum();
        let embedded = embed_shard(&self.handle, self.dataset.as_ref(), &shard, &mut self.models, self.cache.as_ref(), self.policy)?;
        let (mut hits, mut misses) = (0, 0);
        for e in &embedded {
            if e.cached { hits += 1 } else { misses += 1 }
        }
        let aligned = align(embedded.into_iter().map(|e| e.rows).collect());
        let model_dims: Vec<usize> = self.models.iter().map(Model::dim).collect();
        let n = aligned.indices.len();
        let files = if want_files {
            let mut files = Vec::new();
            for ((m, rows), &dim) in self.spec.models.iter().zip(&aligned.rows).zip(&model_dims) {
                let rel = format!("embeddings/{}/{}.npy", m.name, shard.name());
                let shape = [n, dim];
                let bytes = if self.spec.embeddings_dtype == "f32" { npy::encode_f32(&shape, rows) } else { npy::encode_f16(&shape, rows) }
                    .map_err(|r| WorkerError::Input(format!("{rel}: {r}")))?;
                let entry = FileEntry { path: rel.clone(), size: bytes.len() as u64, sha256: sha256_hex(&bytes) };
                self.handle.block_on(self.output.join(&rel).put(bytes.into()))?;
                files.push(entry);
            }
            Some(files)
        } else {
            None
        };
        let mut rows = if aligned.rows.len() == 1 {
            aligned.rows.into_iter().next().expect("one model")
        } else {
            let parts: Vec<(&[f32], Part)> = aligned
                .rows
                .iter()
                .zip(&self.spec.models)
                .zip(&model_dims)
                .map(|((r, m), &dim)| (r.as_slice(), Part { dim, weight: m.weight }))
                .collect();
            fusion::fuse_rows(&parts, n)
        };
        let d: usize = if self.models.len() == 1 { model_dims[0] } else { model_dims.iter().sum() };
        let sq_norms = prepare(&mut rows, d, self.metric, &aligned.indices)
            .map_err(|index| WorkerError::Input(format!(
                "record {index} of shard {id} has a non-finite embedding value: the model produced NaN or infinity"
            )))?;
        self.d = d;
        let invocations = self.models.iter().map(|m| m.encoder.invocations).sum::<u64>() - invocations_before;
        self.resident.insert(
            id,
            ShardRows {
                labels: aligned.labels.iter().map(|l| l.unwrap_or(-1)).collect(),
                indices: aligned.indices,
                ids: aligned.ids,
                rows,
                sq_norms,
                bad: aligned.bad,
                files,
                model_dims,
                cache_hits: hits,
                cache_misses: misses,
                invocations,
            },
        );
        Ok(())
    }

    /// A job without models clusters a dataset of vectors (npy embeddings) as they are.
    fn load_vectors(&mut self, id: u32, shard: &imclust_data::shard::Shard) -> Result<()> {
        use imclust_data::dataset::Payload;
        let records = self.handle.block_on(self.dataset.read(shard.range()))?;
        let (mut indices, mut ids, mut labels, mut rows, mut bad) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut d = 0;
        for r in records {
            match r.payload {
                Payload::Embedding(v) => {
                    if d == 0 {
                        d = v.len();
                    }
                    indices.push(r.index);
                    ids.push(r.id);
                    labels.push(r.label.unwrap_or(-1));
                    rows.extend_from_slice(&v);
                }
                Payload::Bad(reason) => {
                    let b = BadRecord { index: r.index, id: r.id, reason };
                    if self.policy == OnBadRecord::Fail {
                        return Err(b.into_error(&self.dataset.spec().to_string()).into());
                    }
                    bad.push(b);
                }
                _ => {
                    return Err(WorkerError::Input(format!(
                        "{}: a job without [[models]] needs a dataset of embeddings (npy vectors); these records are images: add a model bundle",
                        self.dataset.spec()
                    )));
                }
            }
        }
        let sq_norms = prepare(&mut rows, d, self.metric, &indices)
            .map_err(|index| WorkerError::Input(format!("record {index} of {} has a non-finite value", self.dataset.spec())))?;
        self.d = self.d.max(d);
        self.resident.insert(
            id,
            ShardRows { indices, ids, labels, rows, sq_norms, bad, files: Some(Vec::new()), model_dims: vec![d], cache_hits: 0, cache_misses: 0, invocations: 0 },
        );
        Ok(())
    }

    /// Runs a task on its shards and returns the result to report.
    pub fn run(&mut self, task: &Task) -> Result<v1::report_result_request::Result> {
        use v1::report_result_request::Result as R;
        use v1::Stage;
        let stage = task.stage();
        for &s in &task.shards {
            self.ensure(s, stage == Stage::Embed)?;
        }
        let shards: Vec<&ShardRows> = task.shards.iter().map(|s| &self.resident[s]).collect();
        let d = self.d;
        Ok(match stage {
            Stage::Embed => R::Embed(v1::EmbedResult {
                shards: task.shards.iter().zip(&shards).map(|(&id, r)| summary(id, r, d)).collect(),
            }),
            Stage::Sample => {
                let (mut indices, mut data) = (Vec::new(), Vec::new());
                for r in &shards {
                    for (i, &index) in r.indices.iter().enumerate() {
                        if rng::uniform_at(task.seed, task.stream, index) < task.probability {
                            indices.push(index);
                            data.extend_from_slice(&r.rows[i * d..(i + 1) * d]);
                        }
                    }
                }
                R::Sample(v1::SampleResult { rows: Some(Matrix::new(indices.len(), d, data)), indices })
            }
            Stage::ZeroShot => {
                // Nearest unit seed by dot product on the dual-encoder parts (the image-only
                // parts of the seeds are zero): argmin ||x - s||^2 = argmax x.s for unit s.
                let (c, scale) = centroids(task, d)?;
                let mut unit = c.data.clone();
                linalg::normalize_rows(&mut unit, d);
                let unit = Centroids::new(unit, c.k, d)?;
                let parts: Vec<Rows<'_>> = shards.iter().map(|r| r.view(d)).collect();
                R::Sums(Sums::from(&kernel::partial_sums_of_parts(&parts, &unit, Metric::Euclidean, scale, 0)?))
            }
            Stage::Iterate => {
                let (c, scale) = centroids(task, d)?;
                let metric = self.metric;
                let cap = task.farthest_cap as usize;
                let ps = if task.probability >= 1.0 {
                    let parts: Vec<Rows<'_>> = shards.iter().map(|r| r.view(d)).collect();
                    kernel::partial_sums_of_parts(&parts, &c, metric, scale, cap)?
                } else {
                    let mut total = PartialSums::new(c.k, d, scale, cap);
                    for r in &shards {
                        let pick: Vec<usize> = (0..r.indices.len())
                            .filter(|&i| rng::uniform_at(task.seed, task.stream, r.indices[i]) < task.probability)
                            .collect();
                        let ids: Vec<u64> = pick.iter().map(|&i| r.indices[i]).collect();
                        let data: Vec<f32> = pick.iter().flat_map(|&i| r.rows[i * d..(i + 1) * d].iter().copied()).collect();
                        let xn: Vec<f32> = pick.iter().map(|&i| r.sq_norms[i]).collect();
                        let rows = Rows { data: &data, sq_norms: &xn, d, ids: RowIds::List(&ids) };
                        total.merge(&kernel::partial_sums(&rows, &c, metric, scale, cap)?)?;
                    }
                    total
                };
                R::Sums(Sums::from(&ps))
            }
            Stage::Assign => {
                let (c, scale) = centroids(task, d)?;
                let mut out = v1::AssignResult::default();
                let mut total = PartialSums::new(c.k, d, scale, 0);
                for r in &shards {
                    if r.indices.is_empty() {
                        continue;
                    }
                    let (a, ps) = kernel::assign(&r.view(d), &c, self.metric, scale)?;
                    total.merge(&ps)?;
                    out.index.extend_from_slice(&r.indices);
                    out.ids.extend(r.ids.iter().cloned());
                    out.labels.extend_from_slice(&r.labels);
                    out.clusters.extend(a.clusters);
                    out.distances.extend(a.distances);
                    out.margins.extend(a.margins);
                }
                out.sums = Some(Sums::from(&total));
                R::Assign(out)
            }
            Stage::Unspecified => return Err(WorkerError::Input("a task without a stage: is the worker older than the coordinator?".into())),
        })
    }

    /// Drops shards (after the coordinator says the job is over, or on a new job).
    pub fn clear(&mut self) {
        self.resident.clear();
    }
}

/// Rows as the kernel wants them: unit-normalised for the cosine metric, all finite (else
/// the dataset index of the first bad row), with their squared norms.
fn prepare(rows: &mut [f32], d: usize, metric: Metric, indices: &[u64]) -> std::result::Result<Vec<f32>, u64> {
    if d == 0 {
        return Ok(Vec::new());
    }
    if metric == Metric::Cosine {
        linalg::normalize_rows(rows, d);
    }
    if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
        return Err(indices[i / d]);
    }
    Ok(linalg::row_sq_norms(rows, d))
}

fn centroids(task: &Task, d: usize) -> Result<(Centroids, FixedScale)> {
    let m = task.centroids.as_ref().ok_or_else(|| WorkerError::Input("a task without centroids".into()))?;
    m.check("centroids").map_err(WorkerError::Input)?;
    if m.cols as usize != d {
        return Err(WorkerError::Input(format!("centroids of dimension {} for rows of dimension {d}", m.cols)));
    }
    Ok((Centroids::new(m.data.clone(), m.rows as usize, d)?, FixedScale { exponent: task.scale_exponent }))
}

fn summary(id: u32, r: &ShardRows, d: usize) -> v1::ShardSummary {
    let mut sums = vec![0f64; d];
    let mut sq = vec![0f64; d];
    let mut max_abs = 0f32;
    for row in r.rows.chunks_exact(d.max(1)) {
        for (j, &v) in row.iter().enumerate() {
            sums[j] += f64::from(v);
            sq[j] += f64::from(v) * f64::from(v);
            max_abs = max_abs.max(v.abs());
        }
    }
    v1::ShardSummary {
        shard: id,
        rows: r.indices.len() as u64,
        dim: d as u32,
        max_abs,
        column_sums: sums,
        column_sq_sums: sq,
        bad: r.bad.iter().map(|b| v1::BadRecord { index: b.index, id: b.id.clone(), reason: b.reason.clone() }).collect(),
        files: r.files.iter().flatten().map(|f| v1::FileEntry { path: f.path.clone(), size: f.size, sha256: f.sha256.clone() }).collect(),
        cache_hits: r.cache_hits,
        cache_misses: r.cache_misses,
        invocations: r.invocations,
        model_dims: r.model_dims.iter().map(|&x| x as u32).collect(),
    }
}

/// Whether another attempt (here or on another worker) could succeed.
pub fn retryable(e: &WorkerError) -> bool {
    use imclust_data::DataError;
    match e {
        WorkerError::Data(DataError::Io { .. } | DataError::Storage { .. }) => true,
        WorkerError::Data(_) | WorkerError::Input(_) => false,
        WorkerError::Embed(_) => false,
        WorkerError::Core(_) => false,
        WorkerError::Rpc(_) => true,
    }
}
