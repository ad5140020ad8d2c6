//! The job's stages, run by the coordinator: plan -> embed -> seed (sample or zero-shot
//! rounds where needed) -> iterate (checkpoint after each) -> assign -> commit.
//!
//! Every round hands all shards out through the [`Board`] and reduces the accepted results
//! in shard order (partial sums are fixed point, so the grouping does not matter either):
//! the outputs are byte-identical for any number of workers and any failures.

use crate::board::{Accepted, Board, Payload, RoundKey};
use crate::checkpoint::{self, Best, Checkpoint, IterRecord};
use crate::error::{CoordinatorError, Result};
use crate::metrics::Metrics;
use crate::service::Shared;
use crate::spec::{AlgorithmName, InitMethod, LoadedJob, MetricName};
use imclust_core::fixed::FixedScale;
use imclust_core::init::{self, Init};
use imclust_core::kernel::{Centroids, Metric, PartialSums, RowIds, Rows};
use imclust_core::{fusion, linalg, rng, update};
use imclust_data::bad::{self, BadRecord};
use imclust_data::dataset::{self, Dataset};
use imclust_data::output::{Assignments, FileEntry, ManifestInfo, OutputWriter};
use imclust_data::shard::ShardPlan;
use imclust_data::storage::{Location, Storage};
use imclust_embed::bundle::Bundle;
use imclust_embed::runtime::RuntimeConfig;
use imclust_proto::v1::{self, Stage, Task};
use imclust_proto::{Matrix, Sums};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The coin stream of the init sample (mini-batch steps use `MINIBATCH_STREAM + iteration`,
/// as `imclust_core::kmeans` does, so a job equals the single-process fit on the same rows).
pub const SAMPLE_STREAM: u64 = 0x5A3F_0000;
pub const MINIBATCH_STREAM: u64 = 0xBA7C_0000;

/// What the CLI shows while the job runs.
#[derive(Clone, Debug)]
pub enum Event {
    Stage { name: &'static str, shards: usize },
    Progress { name: &'static str, done: usize, total: usize, workers: usize },
    Iteration { redo: u32, iteration: u32, inertia: f64, shift: f64 },
    StageDone { name: &'static str, seconds: f64 },
    Resumed { redo: u32, iteration: u32 },
}

pub type Progress = Arc<dyn Fn(&Event) + Send + Sync>;

/// A model as the coordinator sees it.
pub struct ModelInfo {
    pub name: String,
    pub bundle: Bundle,
    pub digest: String,
    pub weight: f32,
    pub dual: bool,
}

/// Everything decided before the first round.
pub struct Plan {
    pub job: LoadedJob,
    pub storage: Storage,
    pub dataset: Arc<dyn Dataset>,
    pub shards: ShardPlan,
    pub models: Vec<ModelInfo>,
    pub runtime: RuntimeConfig,
    pub digest: String,
    pub output_root: Location,
}

impl Plan {
    /// Opens the dataset, plans shards, loads the bundles (digests, text towers).
    pub async fn new(job: LoadedJob, storage: Storage, runtime: RuntimeConfig) -> Result<Plan> {
        let c = &job.config;
        let spec = c.dataset_spec()?;
        let dataset = dataset::open(&spec, &storage).await?;
        if dataset.is_empty() {
            return Err(CoordinatorError::JobFailed(format!("{spec} has no records")));
        }
        let shards = ShardPlan::for_dataset(dataset.as_ref(), c.cluster.shard_size)?;
        let mut models = Vec::new();
        for m in &c.models {
            let rt = runtime.clone();
            let path = m.bundle.clone();
            let (bundle, digest) = tokio::task::spawn_blocking(move || -> Result<(Bundle, String)> {
                let b = Bundle::load_with(&path, &rt)?;
                let d = b.digest()?;
                b.release_sessions();
                Ok((b, d))
            })
            .await
            .map_err(|e| CoordinatorError::Server(format!("loading a bundle panicked: {e}")))??;
            let name = m.name.clone().unwrap_or_else(|| bundle.name().to_string());
            let dual = bundle.config().text.is_some();
            models.push(ModelInfo { name, bundle, digest, weight: m.weight, dual });
        }
        for (i, m) in models.iter().enumerate() {
            if let Some(j) = models[..i].iter().position(|o| o.name == m.name) {
                return Err(CoordinatorError::Config {
                    source_name: job.source.clone(),
                    reason: format!(
                        "models[{j}] and models[{i}] are both named '{}' (their outputs would collide under embeddings/{}/): give one a `name`",
                        m.name, m.name
                    ),
                });
            }
            if m.name.is_empty() || !m.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                return Err(CoordinatorError::Config {
                    source_name: job.source.clone(),
                    reason: format!("model name '{}': use letters, digits, '.', '_' and '-' (it names a folder of outputs)", m.name),
                });
            }
        }
        let digests: Vec<String> = models.iter().map(|m| m.digest.clone()).collect();
        let digest = c.result_digest(&digests);
        let output_root = storage.locate(&c.output.url)?.join(&job.job_id);
        output_root.check_writable()?;
        Ok(Plan { job, storage, dataset, shards, models, runtime, digest, output_root })
    }

    /// The job as workers get it.
    pub fn worker_spec(&self) -> v1::JobSpec {
        let c = &self.job.config;
        let o = self.storage.options();
        v1::JobSpec {
            job_id: self.job.job_id.clone(),
            digest: self.digest.clone(),
            dataset: c.dataset.url.clone(),
            split: c.dataset.split.clone().unwrap_or_default(),
            label_set: c.dataset.label_set.clone().unwrap_or_default(),
            models: self
                .models
                .iter()
                .zip(&c.models)
                .map(|(m, s)| v1::ModelSpec {
                    name: m.name.clone(),
                    bundle: s.bundle.display().to_string(),
                    weight: m.weight,
                    batch_size: s.batch_size as u32,
                    dual: m.dual,
                    digest: m.digest.clone(),
                })
                .collect(),
            cache_url: c.cache_url(),
            on_bad_record: match c.dataset.on_bad_record {
                bad::OnBadRecord::Fail => "fail".into(),
                bad::OnBadRecord::Skip => "skip".into(),
            },
            metric: metric_name(c.kmeans.metric).into(),
            shard_size: c.cluster.shard_size,
            output_url: self.output_root.url().to_string(),
            embeddings_dtype: c.output.embeddings.name().into(),
            storage: Some(v1::StorageSpec {
                endpoint: o.endpoint.clone().unwrap_or_default(),
                region: o.region.clone().unwrap_or_default(),
                allow_http: o.allow_http,
                virtual_hosted_style: o.virtual_hosted_style,
                max_retries: o.max_retries.map(|r| r as u32),
                timeout_seconds: o.timeout_seconds,
            }),
            device: c.runtime.device.clone(),
            intra_threads: c.runtime.threads as u32,
        }
    }
}

fn metric_name(m: MetricName) -> &'static str {
    match m {
        MetricName::Euclidean => "euclidean",
        MetricName::Cosine => "cosine",
    }
}

/// The job's result, for the summary table.
#[derive(Clone, Debug)]
pub struct Summary {
    pub output: String,
    pub metrics: serde_json::Value,
    pub timings: BTreeMap<String, f64>,
    pub cluster_sizes: Vec<u64>,
    pub resumed: bool,
}

/// How a run ended without a result.
pub enum Outcome {
    Done(Box<Summary>),
    /// The output was committed by an earlier run.
    AlreadyCommitted(String),
}

/// Statistics of the embedded rows (reduced in shard order).
struct EmbedStats {
    n: u64,
    d: usize,
    model_dims: Vec<usize>,
    scale: FixedScale,
    max_abs: f32,
    mean_variance: f64,
    bad: Vec<BadRecord>,
    files: Vec<FileEntry>,
    cache_hits: u64,
    cache_misses: u64,
    invocations: u64,
}

pub struct Driver {
    pub shared: Arc<Shared>,
    pub plan: Plan,
    pub progress: Progress,
    /// Set by the embedding process (e.g. every local worker died) to stop the job.
    pub abort: Arc<Mutex<Option<String>>>,
}

impl Driver {
    pub fn new(plan: Plan, metrics: Metrics, progress: Progress) -> Driver {
        let c = &plan.job.config.cluster;
        let board = Board::new(plan.shards.shards.len(), Duration::from_secs_f64(c.lease_seconds), c.max_attempts);
        let shared = Shared::new(board, plan.worker_spec(), Duration::from_secs_f64(c.heartbeat_seconds), metrics);
        Driver { shared, plan, progress, abort: Arc::new(Mutex::new(None)) }
    }

    /// Runs the job to its commit; on failure, workers are told the job failed and why.
    pub async fn run(&self) -> Result<Outcome> {
        let r = self.run_inner().await;
        let mut b = self.shared.board();
        match &r {
            Ok(_) => b.finish(false, String::new()),
            Err(e) => {
                self.shared.metrics.job_failed.set(1);
                b.finish(true, e.to_string());
            }
        }
        drop(b);
        self.shared.bump();
        r
    }

    async fn run_inner(&self) -> Result<Outcome> {
        let c = &self.plan.job.config;
        let job_id = &self.plan.job.job_id;
        let prefix = self.plan.storage.locate(&c.output.url)?;
        let mut writer = match OutputWriter::create(prefix, job_id).await {
            Ok(w) => w,
            Err(e) if self.plan.output_root.join(imclust_data::output::MANIFEST).head_opt().await?.is_some() => {
                tracing::info!("{e}");
                return Ok(Outcome::AlreadyCommitted(self.plan.output_root.url().to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let ck_loc = self.plan.output_root.join(checkpoint::PATH);
        let resume = match ck_loc.get_opt().await? {
            Some(bytes) => {
                let ck: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| {
                    CoordinatorError::JobFailed(format!("{}: not a checkpoint ({e}): delete it to start the job over", ck_loc.url()))
                })?;
                if ck.digest != self.plan.digest || ck.version != checkpoint::VERSION {
                    return Err(CoordinatorError::JobFailed(format!(
                        "{} was written under other settings (dataset, models, init or kmeans changed): \
                         delete {} to start over, or give the job another job.id",
                        ck_loc.url(),
                        self.plan.output_root.url()
                    )));
                }
                Some(ck)
            }
            None => None,
        };
        let mut timings = BTreeMap::new();

        // Embed.
        let t = Instant::now();
        let embedded = self.round(RoundKey { stage: Stage::Embed, redo: 0, iteration: 0 }, Task::default(), true).await?;
        let stats = self.embed_stats(&embedded)?;
        let moved = self.shared.board().rebalance(Instant::now());
        if moved > 0 {
            tracing::info!(moved, "shards moved to balance the workers");
        }
        self.stage_done("embed", t, &mut timings);
        for f in &stats.files {
            writer.record(f.clone());
        }
        if !stats.bad.is_empty() {
            tracing::warn!(count = stats.bad.len(), first = %format!("record {} ({}): {}", stats.bad[0].index, stats.bad[0].id, stats.bad[0].reason), "bad records skipped");
        }

        // Seed and iterate, or resume.
        let km = &c.kmeans;
        let metric = match km.metric {
            MetricName::Euclidean => Metric::Euclidean,
            MetricName::Cosine => Metric::Cosine,
        };
        let redos = if c.init.method.uses_text() { 1 } else { km.n_redo as u32 };
        let max_iter = if c.init.method == InitMethod::ZeroShot { 0 } else { km.max_iter as u32 };
        let tol_unit = if stats.mean_variance > 0.0 { stats.mean_variance } else { 1.0 };
        let mut state = match resume {
            Some(ck) => {
                (self.progress)(&Event::Resumed { redo: ck.redo, iteration: ck.next_iteration });
                tracing::info!(redo = ck.redo, iteration = ck.next_iteration, "resuming from {}", ck_loc.url());
                ck
            }
            None => Checkpoint {
                version: checkpoint::VERSION,
                job_id: job_id.clone(),
                digest: self.plan.digest.clone(),
                k: 0,
                d: stats.d,
                redo: 0,
                next_iteration: 0,
                converged: false,
                centroid_bits: Vec::new(),
                seen: Vec::new(),
                history: Vec::new(),
                best: None,
                inertia_per_redo: Vec::new(),
                names: None,
            },
        };
        let resumed = !state.centroid_bits.is_empty();
        let mut t_seed = 0.0;
        let mut iteration_seconds: Vec<f64> = Vec::new();
        let mut round_seconds: Vec<f64> = Vec::new();
        let mut pending_save: Option<tokio::task::JoinHandle<Result<()>>> = None;
        let t_iter = Instant::now();
        while state.redo < redos {
            if state.centroid_bits.is_empty() {
                let t = Instant::now();
                let seed = redo_seed(km.seed, state.redo);
                let (c0, names) = self.seed(&stats, metric, seed).await?;
                state.k = c0.len() / stats.d;
                state.centroid_bits = checkpoint::to_bits(&c0);
                state.names = names;
                state.seen = vec![0; state.k];
                state.next_iteration = 0;
                state.converged = false;
                t_seed += t.elapsed().as_secs_f64();
                if state.k > stats.n as usize {
                    return Err(CoordinatorError::JobFailed(format!("k = {} is larger than the {} embedded rows", state.k, stats.n)));
                }
            }
            let (k, d) = (state.k, stats.d);
            while !state.converged && state.next_iteration < max_iter {
                let it = state.next_iteration;
                let t_it = Instant::now();
                let c_now = Centroids::new(checkpoint::from_bits(&state.centroid_bits), k, d)?;
                let (probability, stream, cap) = match km.algorithm {
                    AlgorithmName::Lloyd => (1.0, 0, k as u32),
                    AlgorithmName::Minibatch => {
                        ((km.batch_size as f64 / stats.n as f64).min(1.0), MINIBATCH_STREAM + u64::from(it), 0)
                    }
                };
                let template = Task {
                    stage: Stage::Iterate as i32,
                    redo: state.redo,
                    iteration: it,
                    centroids: Some(Matrix::new(k, d, c_now.data.clone())),
                    scale_exponent: stats.scale.exponent,
                    probability,
                    seed: redo_seed(km.seed, state.redo),
                    stream,
                    farthest_cap: cap,
                    ..Task::default()
                };
                let results = self.round(RoundKey { stage: Stage::Iterate, redo: state.redo, iteration: it }, template, false).await?;
                round_seconds.push(t_it.elapsed().as_secs_f64());
                let mut ps = merge_sums(&results, k, d, stats.scale)?;
                let inertia = ps.inertia_value();
                let (new, shift, relocated) = match km.algorithm {
                    AlgorithmName::Lloyd => {
                        let relocated = update::relocate_empty(&mut ps);
                        let (new, shift) = update::lloyd(&ps, &c_now, metric);
                        (new, shift, relocated)
                    }
                    AlgorithmName::Minibatch => {
                        let (new, shift) = update::minibatch(&ps, &c_now, &mut state.seen, metric);
                        (new, shift, 0)
                    }
                };
                let shift = shift / tol_unit;
                Centroids::new(new.clone(), k, d)?;
                state.centroid_bits = checkpoint::to_bits(&new);
                state.history.push(IterRecord { redo: state.redo, iteration: it, inertia, shift, relocated: relocated as u64 });
                state.next_iteration = it + 1;
                state.converged = km.tol > 0.0 && shift <= km.tol;
                self.shared.metrics.iteration.set(i64::from(it));
                self.shared.metrics.inertia.set(inertia);
                (self.progress)(&Event::Iteration { redo: state.redo, iteration: it, inertia, shift });
                // The checkpoint is written while the next round runs (a restart resumes from
                // the last one that landed; writes stay in order, each awaits the previous).
                if let Some(prev) = pending_save.take() {
                    finish_save(prev).await?;
                }
                pending_save = Some(tokio::spawn(save(ck_loc.clone(), state.clone())));
                iteration_seconds.push(t_it.elapsed().as_secs_f64());
            }
            if let Some(prev) = pending_save.take() {
                finish_save(prev).await?;
            }
            if redos > 1 {
                // The redo's final inertia decides the winner.
                let c_end = checkpoint::from_bits(&state.centroid_bits);
                let template = Task {
                    stage: Stage::Iterate as i32,
                    redo: state.redo,
                    iteration: max_iter,
                    centroids: Some(Matrix::new(k, d, c_end.clone())),
                    scale_exponent: stats.scale.exponent,
                    probability: 1.0,
                    ..Task::default()
                };
                let results = self.round(RoundKey { stage: Stage::Iterate, redo: state.redo, iteration: max_iter }, template, false).await?;
                let inertia = merge_sums(&results, k, d, stats.scale)?.inertia_value();
                state.inertia_per_redo.push(inertia);
                if state.best.as_ref().is_none_or(|b| inertia < b.inertia) {
                    state.best = Some(Best {
                        redo: state.redo,
                        inertia,
                        centroid_bits: state.centroid_bits.clone(),
                        iterations: state.next_iteration,
                        converged: state.converged,
                    });
                }
            } else {
                state.best = Some(Best {
                    redo: state.redo,
                    inertia: f64::NAN,
                    centroid_bits: state.centroid_bits.clone(),
                    iterations: state.next_iteration,
                    converged: state.converged,
                });
            }
            state.redo += 1;
            if state.redo < redos {
                state.centroid_bits.clear();
            }
            save(ck_loc.clone(), state.clone()).await?;
        }
        timings.insert("seed".into(), t_seed);
        timings.insert("iterate".into(), t_iter.elapsed().as_secs_f64() - t_seed);
        self.shared.metrics.stage_seconds("iterate", timings["iterate"]);

        // Assign.
        let t = Instant::now();
        let best = state.best.clone().expect("every redo records its centroids");
        let (k, d) = (state.k, stats.d);
        let centroids = checkpoint::from_bits(&best.centroid_bits);
        let template = Task {
            stage: Stage::Assign as i32,
            centroids: Some(Matrix::new(k, d, centroids.clone())),
            scale_exponent: stats.scale.exponent,
            ..Task::default()
        };
        let results = self.round(RoundKey { stage: Stage::Assign, redo: 0, iteration: 0 }, template, false).await?;
        let (assignments, sums) = collect_assignments(&results, k, d, stats.scale)?;
        self.stage_done("assign", t, &mut timings);
        if assignments.len() as u64 != stats.n {
            return Err(CoordinatorError::JobFailed(format!(
                "the assign stage returned {} rows but {} were embedded",
                assignments.len(),
                stats.n
            )));
        }

        // Commit.
        let t = Instant::now();
        let cluster_sizes = sums.counts.clone();
        let inertia = sums.inertia_value();
        let mut m = serde_json::json!({
            "dataset": self.plan.dataset.spec().to_string(),
            "dataset_fingerprint": self.plan.dataset.fingerprint(),
            "records": self.plan.dataset.len(),
            "n": stats.n,
            "bad_records": stats.bad.len(),
            "d": d,
            "k": k,
            "models": self.plan.models.iter().zip(&stats.model_dims).map(|(m, dim)| serde_json::json!({
                "name": m.name, "digest": m.digest, "dim": dim, "weight": m.weight, "dual_encoder": m.dual,
            })).collect::<Vec<_>>(),
            "init": c.init.method.name(),
            "algorithm": match km.algorithm { AlgorithmName::Lloyd => "lloyd", AlgorithmName::Minibatch => "minibatch" },
            "metric": metric_name(km.metric),
            "seed": km.seed,
            "n_redo": redos,
            "max_iter": max_iter,
            "tol": km.tol,
            "iterations": best.iterations,
            "converged": best.converged,
            "best_redo": best.redo,
            "inertia": inertia,
            "inertia_per_redo": state.inertia_per_redo,
            "cluster_sizes": cluster_sizes,
            "shards": self.plan.shards.shards.len(),
            "shard_size": c.cluster.shard_size,
            "history": state.history,
        });
        if let Some(names) = &state.names {
            m["cluster_names"] = names.clone().into();
        }
        if let Some(labels) = &assignments.labels {
            let (clusters, classes): (Vec<u32>, Vec<u32>) = assignments
                .clusters
                .iter()
                .zip(labels)
                .filter_map(|(&c, l)| l.map(|l| (c, l as u32)))
                .unzip();
            if !classes.is_empty() {
                let s = imclust_core::metrics::scores(&clusters, &classes)?;
                m["labelled"] = classes.len().into();
                m["acc"] = s.acc.into();
                m["nmi"] = s.nmi.into();
                m["ari"] = s.ari.into();
            }
        }
        writer.put_assignments(&assignments).await?;
        writer.put_centroids(k, d, &centroids, &cluster_sizes, state.names.as_deref()).await?;
        writer.put_json("metrics.json", &m).await?;
        if !stats.bad.is_empty() {
            writer.put_bytes("errors.jsonl", bad::to_jsonl(&stats.bad)).await?;
        }
        let config_text = c.resolved_toml(job_id);
        writer.put_bytes("config.resolved.toml", config_text.clone()).await?;
        let run = serde_json::json!({
            "workers_registered": self.shared.board().workers_seen(),
            "cache_hits": stats.cache_hits,
            "cache_misses": stats.cache_misses,
            "model_invocations": stats.invocations,
            "resumed": resumed,
            "max_abs": stats.max_abs,
            // Broadcast, partial sums on the workers, reduce, update and checkpoint.
            "iteration_seconds": iteration_seconds,
            // Of which: from broadcasting the centroids to the last partial sums arriving.
            "round_seconds": round_seconds,
        });
        writer.put_json("run.json", &run).await?;
        timings.insert("commit".into(), t.elapsed().as_secs_f64());
        writer.commit(ManifestInfo { config_text, timings: timings.clone() }).await?;
        self.shared.metrics.job_committed.set(1);
        Ok(Outcome::Done(Box::new(Summary {
            output: self.plan.output_root.url().to_string(),
            metrics: m,
            timings,
            cluster_sizes: sums.counts,
            resumed,
        })))
    }

    fn stage_done(&self, name: &'static str, t: Instant, timings: &mut BTreeMap<String, f64>) {
        let s = t.elapsed().as_secs_f64();
        timings.insert(name.to_string(), s);
        self.shared.metrics.stage_seconds(name, s);
        (self.progress)(&Event::StageDone { name, seconds: s });
    }


    /// Runs one round to completion and returns its accepted results in shard order.
    async fn round(&self, key: RoundKey, template: Task, one_per_lease: bool) -> Result<Vec<Accepted>> {
        let name = key.stage.name();
        let total = self.plan.shards.shards.len();
        let mut template = template;
        template.stage = key.stage as i32;
        template.redo = key.redo;
        template.iteration = key.iteration;
        if key.stage != Stage::Iterate {
            (self.progress)(&Event::Stage { name, shards: total });
        }
        let mut changed = self.shared.changed.subscribe();
        self.shared.board().start_round(key, template, one_per_lease);
        self.shared.metrics.shards_total.set(total as i64);
        self.shared.bump();
        let mut last_done = usize::MAX;
        loop {
            changed.borrow_and_update();
            if let Some(why) = self.abort.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return Err(CoordinatorError::JobFailed(why));
            }
            let now = Instant::now();
            let (outcome, progress, alive) = {
                let mut b = self.shared.board();
                for (worker, shards) in b.tick(now) {
                    tracing::warn!(worker = %worker, shards = ?shards, stage = name, "lease expired; shards go to another worker");
                }
                (b.round_outcome(), b.progress(), b.workers_alive(now))
            };
            self.shared.metrics.workers_alive.set(alive as i64);
            if let Some((_, done, total)) = progress
                && done != last_done
            {
                last_done = done;
                self.shared.metrics.shards_done.set(done as i64);
                if key.stage != Stage::Iterate {
                    (self.progress)(&Event::Progress { name, done, total, workers: alive });
                }
            }
            match outcome {
                Some(Ok(results)) => {
                    if key.stage != Stage::Iterate {
                        (self.progress)(&Event::Progress { name, done: total, total, workers: alive });
                    }
                    return Ok(results);
                }
                Some(Err(why)) => return Err(CoordinatorError::JobFailed(why)),
                None => {}
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), changed.changed()).await;
        }
    }

    fn embed_stats(&self, results: &[Accepted]) -> Result<EmbedStats> {
        let mut summaries: Vec<&v1::ShardSummary> = Vec::new();
        for a in results {
            let Payload::Embed(e) = &a.payload else { unreachable!("the board checks the kind") };
            summaries.extend(e.shards.iter());
        }
        summaries.sort_by_key(|s| s.shard);
        if summaries.iter().map(|s| s.shard as usize).ne(0..self.plan.shards.shards.len()) {
            return Err(CoordinatorError::JobFailed("the embed stage returned summaries for the wrong shards".into()));
        }
        let d = summaries.iter().map(|s| s.dim as usize).max().unwrap_or(0);
        let model_dims: Vec<usize> = summaries.iter().find(|s| s.rows > 0).map(|s| s.model_dims.iter().map(|&x| x as usize).collect()).unwrap_or_default();
        let (mut n, mut max_abs) = (0u64, 0f32);
        let mut sums = vec![0f64; d];
        let mut sq = vec![0f64; d];
        let mut bad = Vec::new();
        let mut files = Vec::new();
        let (mut hits, mut misses, mut invocations) = (0, 0, 0);
        for s in &summaries {
            if s.rows > 0 && (s.dim as usize != d || s.column_sums.len() != d || s.column_sq_sums.len() != d) {
                return Err(CoordinatorError::JobFailed(format!(
                    "shard {} came back with {} dimensions, others with {d}: do all workers have the same bundles?",
                    s.shard, s.dim
                )));
            }
            n += s.rows;
            max_abs = max_abs.max(s.max_abs);
            for j in 0..s.column_sums.len() {
                sums[j] += s.column_sums[j];
                sq[j] += s.column_sq_sums[j];
            }
            bad.extend(s.bad.iter().map(|b| BadRecord { index: b.index, id: b.id.clone(), reason: b.reason.clone() }));
            files.extend(s.files.iter().map(|f| FileEntry { path: f.path.clone(), size: f.size, sha256: f.sha256.clone() }));
            hits += u64::from(s.cache_hits);
            misses += u64::from(s.cache_misses);
            invocations += s.invocations;
        }
        if n == 0 {
            return Err(CoordinatorError::JobFailed(format!(
                "every record of {} is bad ({} listed; first: record {} {}: {})",
                self.plan.dataset.spec(),
                bad.len(),
                bad.first().map_or(0, |b| b.index),
                bad.first().map_or("", |b| b.id.as_str()),
                bad.first().map_or("", |b| b.reason.as_str())
            )));
        }
        let nf = n as f64;
        let mean_variance = (0..d).map(|j| (sq[j] / nf - (sums[j] / nf).powi(2)).max(0.0)).sum::<f64>() / d as f64;
        let scale = FixedScale::for_data(max_abs, n)?;
        Ok(EmbedStats {
            n,
            d,
            model_dims,
            scale,
            max_abs,
            mean_variance,
            bad,
            files,
            cache_hits: hits,
            cache_misses: misses,
            invocations,
        })
    }

    /// Initial centroids (k x d) and, for text inits, the cluster names.
    async fn seed(&self, stats: &EmbedStats, metric: Metric, seed: u64) -> Result<(Vec<f32>, Option<Vec<String>>)> {
        let c = &self.plan.job.config;
        let d = stats.d;
        if c.init.method.uses_text() {
            let classes: Vec<String> = match &c.init.classes {
                Some(list) => list.clone(),
                None => self.plan.dataset.class_names().map(<[String]>::to_vec).ok_or_else(|| {
                    CoordinatorError::JobFailed(format!(
                        "init.method = \"{}\" needs class names, and {} has none: list them in init.classes",
                        c.init.method.name(),
                        self.plan.dataset.spec()
                    ))
                })?,
            };
            if let Some(k) = c.kmeans.k
                && k != classes.len()
            {
                return Err(CoordinatorError::JobFailed(format!(
                    "kmeans.k = {k} but there are {} classes: a text init makes one cluster per class (drop kmeans.k)",
                    classes.len()
                )));
            }
            let seeds = self.text_seeds(&classes, stats).await?;
            let seeds = if self.plan.models.iter().all(|m| m.dual) { seeds } else { self.zero_shot(seeds, stats, classes.len()).await? };
            let mut seeds = seeds;
            if metric == Metric::Cosine {
                linalg::normalize_rows(&mut seeds, d);
            }
            return Ok((seeds, Some(classes)));
        }
        let k = c.kmeans.k.expect("validated: sampled inits name k");
        let target = (c.init.sample_per_cluster as f64) * k as f64;
        let probability = (target / stats.n as f64).min(1.0);
        let template = Task { probability, seed, stream: SAMPLE_STREAM, ..Task::default() };
        let results = self.round(RoundKey { stage: Stage::Sample, redo: 0, iteration: 0 }, template, false).await?;
        let mut rows: Vec<(u64, &[f32])> = Vec::new();
        for a in &results {
            let Payload::Sample(s) = &a.payload else { unreachable!("checked by the board") };
            let m = s.rows.as_ref().ok_or_else(|| CoordinatorError::JobFailed("a sample without rows".into()))?;
            m.check("sample").map_err(CoordinatorError::JobFailed)?;
            if m.cols as usize != d || m.rows as usize != s.indices.len() {
                return Err(CoordinatorError::JobFailed(format!("a sample of {} x {} for {} indices and d = {d}", m.rows, m.cols, s.indices.len())));
            }
            rows.extend(s.indices.iter().copied().zip(m.data.chunks(d)));
        }
        rows.sort_by_key(|r| r.0);
        if rows.len() < k {
            return Err(CoordinatorError::JobFailed(format!(
                "the init sample holds {} rows, fewer than k = {k}: raise init.sample_per_cluster",
                rows.len()
            )));
        }
        let data: Vec<f32> = rows.iter().flat_map(|r| r.1.iter().copied()).collect();
        let ids: Vec<u64> = rows.iter().map(|r| r.0).collect();
        let xn = linalg::row_sq_norms(&data, d);
        let sample = Rows { data: &data, sq_norms: &xn, d, ids: RowIds::List(&ids) };
        let init = match c.init.method {
            InitMethod::KMeansPlusPlus => Init::KMeansPlusPlus,
            InitMethod::KmeansParallel => Init::KMeansParallel { oversampling: c.init.oversampling, rounds: c.init.rounds },
            InitMethod::Random => Init::Random,
            InitMethod::Text | InitMethod::ZeroShot => unreachable!("handled above"),
        };
        let scale = FixedScale::for_data(stats.max_abs, rows.len() as u64)?;
        let c0 = tokio::task::block_in_place(|| init::initial_centroids(&init, &sample, k, metric, scale, seed))?;
        Ok((c0, None))
    }

    /// Text seeds in the fused layout: each dual model's part from its text tower (weighted
    /// like the image rows), image-only parts zero (filled by the zero-shot pass).
    async fn text_seeds(&self, classes: &[String], stats: &EmbedStats) -> Result<Vec<f32>> {
        let c = &self.plan.job.config;
        let templates: Vec<String> = match &c.init.templates {
            Some(t) => t.clone(),
            None => imclust_embed::text::CLIP_IMAGENET_TEMPLATES_SHORT.iter().map(|t| t.to_string()).collect(),
        };
        if !self.plan.models.iter().any(|m| m.dual) {
            return Err(CoordinatorError::JobFailed(format!(
                "init.method = \"{}\" needs a dual-encoder model (CLIP, SigLIP, LiT) with a text tower; the models ({}) are image-only: \
                 use kmeans++, kmeans-parallel or random",
                c.init.method.name(),
                self.plan.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let k = classes.len();
        let fused = self.plan.models.len() > 1;
        let mut parts: Vec<(Vec<f32>, fusion::Part)> = Vec::new();
        for (m, &dim) in self.plan.models.iter().zip(&stats.model_dims) {
            let part = fusion::Part { dim, weight: m.weight };
            if !m.dual {
                parts.push((vec![0.0; k * dim], part));
                continue;
            }
            let seeds = tokio::task::block_in_place(|| {
                imclust_embed::engine::text_seeds(&m.bundle, &self.plan.runtime, classes, &templates)
            })?;
            m.bundle.release_sessions();
            if seeds.len() != k * dim {
                return Err(CoordinatorError::JobFailed(format!(
                    "model '{}': its text tower gives {} values per class, its image tower {dim}: the towers must share one space",
                    m.name,
                    seeds.len() / k.max(1)
                )));
            }
            parts.push((seeds, part));
        }
        if !fused {
            return Ok(parts.pop().expect("one model").0);
        }
        let refs: Vec<(&[f32], fusion::Part)> = parts.iter().map(|(s, p)| (s.as_slice(), *p)).collect();
        Ok(fusion::fuse_rows(&refs, k))
    }

    /// The zero-shot pass: workers assign their rows to the nearest text seed on the
    /// dual-encoder parts and return per-class sums; each image-only part of seed c becomes
    /// weight * normalize(mean of its class's image-only parts).
    async fn zero_shot(&self, mut seeds: Vec<f32>, stats: &EmbedStats, k: usize) -> Result<Vec<f32>> {
        let d = stats.d;
        let template = Task {
            centroids: Some(Matrix::new(k, d, seeds.clone())),
            scale_exponent: stats.scale.exponent,
            ..Task::default()
        };
        let results = self.round(RoundKey { stage: Stage::ZeroShot, redo: 0, iteration: 0 }, template, false).await?;
        let ps = merge_sums(&results, k, d, stats.scale)?;
        let mut offset = 0;
        for (m, &dim) in self.plan.models.iter().zip(&stats.model_dims) {
            if !m.dual {
                for c in 0..k {
                    let sum = ps.sum(c);
                    let part = &sum[offset..offset + dim];
                    let norm = part.iter().map(|v| v * v).sum::<f64>().sqrt();
                    for (j, v) in part.iter().enumerate() {
                        seeds[c * d + offset + j] = if norm > 0.0 { (v / norm * f64::from(m.weight)) as f32 } else { 0.0 };
                    }
                }
            }
            offset += dim;
        }
        Ok(seeds)
    }
}

async fn save(loc: Location, ck: Checkpoint) -> Result<()> {
    let bytes = serde_json::to_vec(&ck).expect("plain data");
    loc.put(bytes.into()).await?;
    Ok(())
}

async fn finish_save(h: tokio::task::JoinHandle<Result<()>>) -> Result<()> {
    h.await.map_err(|e| CoordinatorError::Server(format!("writing the checkpoint panicked: {e}")))?
}

fn redo_seed(seed: u64, redo: u32) -> u64 {
    if redo == 0 { seed } else { rng::derive_seed(seed, u64::from(redo)) }
}

fn merge_sums(results: &[Accepted], k: usize, d: usize, scale: FixedScale) -> Result<PartialSums> {
    let mut total: Option<PartialSums> = None;
    for a in results {
        let s: &Sums = match &a.payload {
            Payload::Sums(s) => s,
            _ => unreachable!("checked by the board"),
        };
        let p = s.to_partial().map_err(|e| CoordinatorError::JobFailed(format!("worker {}: {e}", a.worker)))?;
        if (p.k, p.d, p.scale) != (k, d, scale) {
            return Err(CoordinatorError::JobFailed(format!("worker {} returned {} x {} partial sums for {k} x {d}", a.worker, p.k, p.d)));
        }
        match &mut total {
            None => total = Some(p),
            Some(t) => t.merge(&p)?,
        }
    }
    Ok(total.unwrap_or_else(|| PartialSums::new(k, d, scale, 0)))
}

fn collect_assignments(results: &[Accepted], k: usize, d: usize, scale: FixedScale) -> Result<(Assignments, PartialSums)> {
    let mut rows: Vec<(u64, String, i64, u32, f32, f32)> = Vec::new();
    let mut total = PartialSums::new(k, d, scale, 0);
    for a in results {
        let Payload::Assign(r) = &a.payload else { unreachable!("checked by the board") };
        let n = r.index.len();
        if [r.ids.len(), r.labels.len(), r.clusters.len(), r.distances.len(), r.margins.len()].iter().any(|&l| l != n) {
            return Err(CoordinatorError::JobFailed(format!("worker {}: an assign result with columns of different lengths", a.worker)));
        }
        if let Some(s) = &r.sums {
            let p = s.to_partial().map_err(|e| CoordinatorError::JobFailed(format!("worker {}: {e}", a.worker)))?;
            total.merge(&p)?;
        }
        for i in 0..n {
            rows.push((r.index[i], r.ids[i].clone(), r.labels[i], r.clusters[i], r.distances[i], r.margins[i]));
        }
    }
    rows.sort_by_key(|r| r.0);
    let labelled = rows.iter().any(|r| r.2 >= 0);
    let a = Assignments {
        index: rows.iter().map(|r| r.0).collect(),
        ids: rows.iter().map(|r| r.1.clone()).collect(),
        uris: None,
        labels: labelled.then(|| rows.iter().map(|r| (r.2 >= 0).then_some(r.2)).collect()),
        clusters: rows.iter().map(|r| r.3).collect(),
        distances: rows.iter().map(|r| r.4).collect(),
        margins: rows.iter().map(|r| r.5).collect(),
    };
    Ok((a, total))
}
