//! The job spec: a TOML file, layered as defaults < file < environment
//! (`IMCLUST__SECTION__KEY=value`) < `--set section.key=value` flags. Unknown keys are
//! refused wherever they appear; every key is documented in `docs/job-config.md`.

use crate::error::{CoordinatorError, Result};
use imclust_data::bad::OnBadRecord;
use imclust_data::dataset::DatasetSpec;
use imclust_data::storage::StorageOptions;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The whole job.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    #[serde(default)]
    pub job: JobSection,
    pub dataset: DatasetSection,
    /// The models whose (fused) embeddings are clustered; none for a dataset of vectors
    /// (`npy:` embeddings).
    #[serde(default)]
    pub models: Vec<ModelSection>,
    #[serde(default)]
    pub init: InitSection,
    #[serde(default)]
    pub kmeans: KMeansSection,
    pub output: OutputSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// Object-store options (endpoint, region, ...); credentials are better left to the
    /// environment (AWS_ACCESS_KEY_ID, ...), which every process reads itself.
    #[serde(default, skip_serializing)]
    pub storage: StorageOptions,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    /// The job's name under the output URL; default `<config file stem>-<UTC timestamp>`.
    /// A restarted coordinator resumes a job with the same id from its checkpoint.
    pub id: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetSection {
    /// `KIND:URL`, e.g. `idx:/data/fashion-mnist`, `cifar10:s3://bucket/cifar-10-batches-bin`.
    pub url: String,
    pub split: Option<String>,
    /// CIFAR-100: `fine` (default) or `coarse`.
    pub label_set: Option<String>,
    #[serde(default)]
    pub on_bad_record: OnBadRecord,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A model bundle directory (bundle.toml + ONNX files), reachable from every worker.
    pub bundle: PathBuf,
    /// Name in outputs (`embeddings/<name>/`); default: the bundle's name.
    pub name: Option<String>,
    /// Weight of this model's part of the fused embedding (each part is L2-normalised).
    #[serde(default = "one")]
    pub weight: f32,
    /// Images per inference call.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn one() -> f32 {
    1.0
}
fn default_batch() -> usize {
    32
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InitMethod {
    /// Seeds from text prompts through the dual-encoder models' text towers (carried into
    /// the fused space by a zero-shot pass when image-only models take part).
    Text,
    /// Greedy k-means++ on a uniform sample.
    #[serde(rename = "kmeans++")]
    #[default]
    KMeansPlusPlus,
    /// k-means|| on a uniform sample.
    KmeansParallel,
    /// k distinct rows of a uniform sample.
    Random,
    /// The text seeds themselves, no iterations: every image goes to its nearest prompt.
    ZeroShot,
}

impl InitMethod {
    pub fn uses_text(self) -> bool {
        matches!(self, InitMethod::Text | InitMethod::ZeroShot)
    }
    pub fn name(self) -> &'static str {
        match self {
            InitMethod::Text => "text",
            InitMethod::KMeansPlusPlus => "kmeans++",
            InitMethod::KmeansParallel => "kmeans-parallel",
            InitMethod::Random => "random",
            InitMethod::ZeroShot => "zero-shot",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InitSection {
    #[serde(default)]
    pub method: InitMethod,
    /// Text inits: the class names, in cluster order; default: the dataset's class names.
    pub classes: Option<Vec<String>>,
    /// Text inits: prompt templates with one `{}`; default: 8 of OpenAI's ImageNet templates.
    pub templates: Option<Vec<String>>,
    /// Sampled inits draw about `sample_per_cluster * k` rows (FAISS uses 256).
    #[serde(default = "default_sample_per_cluster")]
    pub sample_per_cluster: usize,
    /// k-means||: oversampling factor (a multiple of k) and rounds.
    #[serde(default = "default_oversampling")]
    pub oversampling: f64,
    #[serde(default = "default_rounds")]
    pub rounds: usize,
}

fn default_sample_per_cluster() -> usize {
    256
}
fn default_oversampling() -> f64 {
    2.0
}
fn default_rounds() -> usize {
    5
}

impl Default for InitSection {
    fn default() -> Self {
        InitSection {
            method: InitMethod::default(),
            classes: None,
            templates: None,
            sample_per_cluster: default_sample_per_cluster(),
            oversampling: default_oversampling(),
            rounds: default_rounds(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AlgorithmName {
    #[default]
    Lloyd,
    Minibatch,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricName {
    Euclidean,
    #[default]
    Cosine,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KMeansSection {
    /// Clusters; text inits default to the number of classes.
    pub k: Option<usize>,
    #[serde(default)]
    pub algorithm: AlgorithmName,
    #[serde(default)]
    pub metric: MetricName,
    #[serde(default = "default_max_iter")]
    pub max_iter: usize,
    /// Stop when the relative centroid shift is <= tol (0: run max_iter iterations).
    #[serde(default = "default_tol")]
    pub tol: f64,
    /// Mini-batch: expected rows per step.
    #[serde(default = "default_kmeans_batch")]
    pub batch_size: usize,
    /// Restarts with derived seeds (sampled inits only); the lowest inertia wins.
    #[serde(default = "default_n_redo")]
    pub n_redo: usize,
    #[serde(default)]
    pub seed: u64,
}

fn default_max_iter() -> usize {
    100
}
fn default_tol() -> f64 {
    1e-4
}
fn default_kmeans_batch() -> usize {
    4096
}
fn default_n_redo() -> usize {
    1
}

impl Default for KMeansSection {
    fn default() -> Self {
        KMeansSection {
            k: None,
            algorithm: AlgorithmName::default(),
            metric: MetricName::default(),
            max_iter: default_max_iter(),
            tol: default_tol(),
            batch_size: default_kmeans_batch(),
            n_redo: default_n_redo(),
            seed: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingsDtype {
    None,
    #[default]
    F16,
    F32,
}

impl EmbeddingsDtype {
    pub fn name(self) -> &'static str {
        match self {
            EmbeddingsDtype::None => "none",
            EmbeddingsDtype::F16 => "f16",
            EmbeddingsDtype::F32 => "f32",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Where the job's files go: `<url>/<job-id>/`, manifest.json last.
    pub url: String,
    /// Per-model embeddings under `embeddings/<model>/<shard>.npy`: none, f16 or f32.
    #[serde(default)]
    pub embeddings: EmbeddingsDtype,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// The embedding cache; default `<output url>/_cache`. Workers reload moved shards
    /// from it and reruns skip the models.
    pub url: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Records per shard: the unit of work, caching and retry.
    #[serde(default = "default_shard_size")]
    pub shard_size: u64,
    /// A lease not renewed by a heartbeat for this long is given to another worker.
    #[serde(default = "default_lease")]
    pub lease_seconds: f64,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: f64,
    /// Attempts per shard and stage before the job fails, naming the shard and error.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Where the coordinator listens (gRPC).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Prometheus `/metrics` of the coordinator ("" = off).
    #[serde(default)]
    pub metrics_listen: String,
}

fn default_shard_size() -> u64 {
    imclust_data::shard::DEFAULT_SHARD_SIZE
}
fn default_lease() -> f64 {
    60.0
}
fn default_heartbeat() -> f64 {
    5.0
}
fn default_attempts() -> u32 {
    3
}
fn default_listen() -> String {
    "0.0.0.0:50051".into()
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            shard_size: default_shard_size(),
            lease_seconds: default_lease(),
            heartbeat_seconds: default_heartbeat(),
            max_attempts: default_attempts(),
            listen: default_listen(),
            metrics_listen: String::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// The environment variable holding the bearer token (checked first).
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// A file holding the token (e.g. a mounted Kubernetes Secret).
    pub token_file: Option<PathBuf>,
    /// Refuse to start without a token.
    #[serde(default)]
    pub require_token: bool,
    #[serde(default)]
    pub tls: TlsSection,
}

fn default_token_env() -> String {
    "IMCLUST_TOKEN".into()
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection { token_env: default_token_env(), token_file: None, require_token: false, tls: TlsSection::default() }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Coordinator certificate and key (PEM): TLS on the gRPC port.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: mutual TLS.
    pub client_ca: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// cpu, cuda, tensorrt or auto.
    #[serde(default = "default_device")]
    pub device: String,
    /// ONNX Runtime intra-op threads per worker (0: one per core).
    #[serde(default)]
    pub threads: usize,
}

fn default_device() -> String {
    "cpu".into()
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection { device: default_device(), threads: 0 }
    }
}

/// A loaded spec and where it came from.
#[derive(Clone, Debug)]
pub struct LoadedJob {
    pub config: JobConfig,
    pub source: String,
    pub job_id: String,
}

/// Loads `path` with the environment layer and `overrides` (`section.key=value`).
pub fn load(path: &Path, overrides: &[String]) -> Result<LoadedJob> {
    let text = std::fs::read_to_string(path).map_err(|e| CoordinatorError::Config {
        source_name: path.display().to_string(),
        reason: format!("cannot read it ({e})"),
    })?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "job".into());
    from_text(&text, &path.display().to_string(), &stem, overrides, std::env::vars())
}

/// The layering without touching the process: `env` stands for the environment.
pub fn from_text(
    text: &str,
    source_name: &str,
    stem: &str,
    overrides: &[String],
    env: impl Iterator<Item = (String, String)>,
) -> Result<LoadedJob> {
    let err = |reason: String| CoordinatorError::Config { source_name: source_name.to_string(), reason };
    let env: std::collections::HashMap<String, String> =
        env.filter(|(k, _)| k.starts_with("IMCLUST__")).collect();
    let mut b = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("IMCLUST")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
    for o in overrides {
        let (key, value) = o
            .split_once('=')
            .ok_or_else(|| err(format!("--set '{o}': write section.key=value")))?;
        b = b.set_override(key.trim(), parse_override(value.trim())).map_err(|e| err(e.to_string()))?;
    }
    let c = b.build().map_err(|e| err(e.to_string()))?;
    let config: JobConfig = c.try_deserialize().map_err(|e| err(format!("{e}: fix or remove that key (see docs/job-config.md)")))?;
    validate(&config).map_err(err)?;
    let job_id = match &config.job.id {
        Some(id) => id.clone(),
        None => imclust_data::output::default_job_id(stem),
    };
    Ok(LoadedJob { config, source: source_name.to_string(), job_id })
}

/// A `--set` value: a number, a boolean or a string.
fn parse_override(v: &str) -> config::Value {
    if let Ok(i) = v.parse::<i64>() {
        return i.into();
    }
    if let Ok(f) = v.parse::<f64>() {
        return f.into();
    }
    match v {
        "true" => true.into(),
        "false" => false.into(),
        _ => v.trim_matches('"').to_string().into(),
    }
}

/// Checks what serde cannot: values, ranges and combinations.
pub fn validate(c: &JobConfig) -> std::result::Result<(), String> {
    DatasetSpec::parse(&c.dataset.url, c.dataset.split.as_deref()).map_err(|e| format!("dataset.url: {e}"))?;
    let mut names = std::collections::BTreeSet::new();
    for (i, m) in c.models.iter().enumerate() {
        if !(m.weight.is_finite() && m.weight > 0.0) {
            return Err(format!("models[{i}].weight = {}: weights must be positive", m.weight));
        }
        if m.batch_size == 0 {
            return Err(format!("models[{i}].batch_size must be at least 1"));
        }
        if let Some(n) = &m.name
            && !names.insert(n.clone())
        {
            return Err(format!("models[{i}].name = '{n}' is used twice"));
        }
    }
    let km = &c.kmeans;
    if km.k == Some(0) {
        return Err("kmeans.k must be at least 1".into());
    }
    if km.k.is_none() && !c.init.method.uses_text() {
        return Err(format!("kmeans.k is required with init.method = \"{}\"", c.init.method.name()));
    }
    if let (Some(k), Some(classes)) = (km.k, &c.init.classes)
        && c.init.method.uses_text()
        && k != classes.len()
    {
        return Err(format!("kmeans.k = {k} but init.classes names {} classes: a text init makes one cluster per class", classes.len()));
    }
    if km.tol.is_nan() || km.tol < 0.0 {
        return Err(format!("kmeans.tol = {}: must be >= 0", km.tol));
    }
    if km.n_redo == 0 || km.batch_size == 0 {
        return Err("kmeans.n_redo and kmeans.batch_size must be at least 1".into());
    }
    if let Some(t) = c.init.templates.as_ref().and_then(|t| t.iter().find(|t| t.matches("{}").count() != 1)) {
        return Err(format!("init.templates: '{t}' must hold exactly one {{}} for the class name"));
    }
    if c.init.sample_per_cluster == 0 || c.init.rounds == 0 || c.init.oversampling.is_nan() || c.init.oversampling <= 0.0 {
        return Err("init.sample_per_cluster, init.rounds and init.oversampling must be positive".into());
    }
    let cl = &c.cluster;
    if cl.shard_size == 0 {
        return Err("cluster.shard_size must be at least 1".into());
    }
    if !(cl.heartbeat_seconds > 0.0 && cl.lease_seconds > cl.heartbeat_seconds) {
        return Err(format!(
            "cluster.lease_seconds ({}) must be larger than cluster.heartbeat_seconds ({}) > 0, or every lease expires",
            cl.lease_seconds, cl.heartbeat_seconds
        ));
    }
    if cl.max_attempts == 0 {
        return Err("cluster.max_attempts must be at least 1".into());
    }
    let tls = &c.auth.tls;
    if tls.cert.is_some() != tls.key.is_some() {
        return Err("auth.tls: give both cert and key".into());
    }
    if tls.client_ca.is_some() && tls.cert.is_none() {
        return Err("auth.tls.client_ca (mutual TLS) needs auth.tls.cert and key".into());
    }
    c.runtime.device.parse::<imclust_embed::runtime::Device>().map_err(|e| format!("runtime.device: {e}"))?;
    if let Some(id) = &c.job.id
        && (id.is_empty() || !id.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)))
    {
        return Err(format!("job.id = '{id}': use letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

impl JobConfig {
    /// The settings that determine results (not where they go or how the work is spread).
    /// A checkpoint is resumed only under the same digest.
    pub fn result_digest(&self, bundle_digests: &[String]) -> String {
        let v = serde_json::json!({
            "dataset": self.dataset,
            "models": self.models.iter().map(|m| serde_json::json!({"weight": m.weight})).collect::<Vec<_>>(),
            "bundles": bundle_digests,
            "init": self.init,
            "kmeans": self.kmeans,
        });
        let mut h = Sha256::new();
        h.update(v.to_string().as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The resolved spec as TOML (what `config.resolved.toml` holds); storage options are
    /// left out (they may hold credentials).
    pub fn resolved_toml(&self, job_id: &str) -> String {
        let mut c = self.clone();
        c.job.id = Some(job_id.to_string());
        toml::to_string_pretty(&c).expect("the spec serialises")
    }

    pub fn dataset_spec(&self) -> Result<DatasetSpec> {
        let mut s = DatasetSpec::parse(&self.dataset.url, self.dataset.split.as_deref())?;
        s.labels = self.dataset.label_set.clone();
        Ok(s)
    }

    pub fn cache_url(&self) -> String {
        match &self.cache.url {
            Some(u) => u.clone(),
            None => format!("{}/_cache", self.output.url.trim_end_matches('/')),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[dataset]
url = "idx:/data/fashion-mnist"
split = "test"

[[models]]
bundle = "bundles/open-nsfw"

[kmeans]
k = 10

[output]
url = "out"
"#;

    fn load_text(text: &str, overrides: &[&str], env: &[(&str, &str)]) -> Result<LoadedJob> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        from_text(text, "job.toml", "job", &o, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn spec_minimal_file_gets_documented_defaults() {
        let j = load_text(MINIMAL, &[], &[]).unwrap();
        let c = &j.config;
        assert_eq!(c.kmeans.k, Some(10));
        assert_eq!(c.kmeans.metric, MetricName::Cosine);
        assert_eq!(c.kmeans.max_iter, 100);
        assert_eq!(c.init.method, InitMethod::KMeansPlusPlus);
        assert_eq!(c.models[0].weight, 1.0);
        assert_eq!(c.models[0].batch_size, 32);
        assert_eq!(c.cluster.shard_size, 4096);
        assert_eq!(c.cluster.max_attempts, 3);
        assert_eq!(c.output.embeddings, EmbeddingsDtype::F16);
        assert_eq!(c.cache_url(), "out/_cache");
        assert!(j.job_id.starts_with("job-"), "{}", j.job_id);
    }

    #[test]
    fn spec_layers_env_over_file_and_flags_over_env() {
        let env = [("IMCLUST__KMEANS__MAX_ITER", "7"), ("IMCLUST__CLUSTER__SHARD_SIZE", "512"), ("IMCLUST_TOKEN", "x")];
        let j = load_text(MINIMAL, &[], &env).unwrap();
        assert_eq!(j.config.kmeans.max_iter, 7);
        assert_eq!(j.config.cluster.shard_size, 512);
        let j = load_text(MINIMAL, &["kmeans.max_iter=9", "kmeans.metric=euclidean", "job.id=nightly"], &env).unwrap();
        assert_eq!(j.config.kmeans.max_iter, 9);
        assert_eq!(j.config.kmeans.metric, MetricName::Euclidean);
        assert_eq!(j.job_id, "nightly");
    }

    #[test]
    fn spec_unknown_keys_are_refused_everywhere() {
        let e = load_text(&MINIMAL.replace("k = 10", "k = 10\nmax_iters = 5"), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("max_iters") && e.contains("job.toml"), "{e}");
        let e = load_text(&format!("{MINIMAL}\n[clutser]\nshard_size = 3\n"), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("clutser"), "{e}");
        let e = load_text(MINIMAL, &[], &[("IMCLUST__KMEANS__KK", "3")]).unwrap_err().to_string();
        assert!(e.contains("kk"), "{e}");
        let e = load_text(MINIMAL, &["kmeans.algorithm=elkan"], &[]).unwrap_err().to_string();
        assert!(e.contains("elkan"), "{e}");
    }

    #[test]
    fn spec_values_and_combinations_are_checked() {
        let cases: &[(&str, &str)] = &[
            ("kmeans.k=0", "at least 1"),
            ("cluster.lease_seconds=1", "lease_seconds"),
            ("models[0].weight=-1", "positive"),
            ("runtime.device=tpu", "runtime.device"),
            ("job.id=a/b", "job.id"),
        ];
        for (o, want) in cases {
            let e = load_text(MINIMAL, &[o], &[]).unwrap_err().to_string();
            assert!(e.contains(want), "{o}: {e}");
        }
        let no_k = MINIMAL.replace("[kmeans]\nk = 10\n", "");
        assert!(load_text(&no_k, &[], &[]).unwrap_err().to_string().contains("kmeans.k is required"));
        let text = format!("{no_k}\n[init]\nmethod = \"text\"\nclasses = [\"a\", \"b\"]\ntemplates = [\"a {{}} photo\"]\n");
        let j = load_text(&text, &[], &[]).unwrap();
        assert_eq!(j.config.kmeans.k, None);
        let e = load_text(&text.replace("a {} photo", "a photo"), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("exactly one {}"), "{e}");
    }

    #[test]
    fn spec_digest_ignores_placement_and_resolved_toml_round_trips() {
        let a = load_text(MINIMAL, &[], &[]).unwrap().config;
        let b = load_text(MINIMAL, &["cluster.shard_size=100", "output.url=elsewhere"], &[]).unwrap().config;
        let c = load_text(MINIMAL, &["kmeans.seed=1"], &[]).unwrap().config;
        let d = vec!["abc".to_string()];
        assert_eq!(a.result_digest(&d), b.result_digest(&d));
        assert_ne!(a.result_digest(&d), c.result_digest(&d));
        assert_ne!(a.result_digest(&d), a.result_digest(&["abd".to_string()]));
        let text = a.resolved_toml("j1");
        let again = load_text(&text, &[], &[]).unwrap();
        assert_eq!(again.job_id, "j1");
        assert_eq!(again.config.kmeans, a.kmeans);
    }
}
