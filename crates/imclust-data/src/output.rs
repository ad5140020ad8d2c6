//! The output of a job under `<output>/<job-id>/`, on a local disk or in an object store.
//!
//! An [`OutputWriter`] writes one file at a time (each appears whole or not at all, see
//! [`Location::put`]) and records its path, size and SHA-256; [`OutputWriter::commit`]
//! then writes `manifest.json`, listing them, last. A reader trusts only a prefix with a
//! manifest, and only the files the manifest lists: [`OutputReader::open`] refuses a prefix
//! without one (the job failed or is still being written) and checks that every listed file
//! is there with its listed size; [`OutputReader::verify`] also checks the checksums.
//!
//! Files written here:
//! - `assignments.parquet`: one row per item, columns `index` (UInt64), `id` (Utf8), `uri`
//!   (Utf8, when known), `label` (Int64, nullable, when known), `cluster` (UInt32),
//!   `distance` and `margin` (Float32); Snappy, row groups of [`ROW_GROUP_ROWS`] rows.
//! - `centroids.npy` (float32, K x D) and `centroids.json` (k, d, and per cluster its index,
//!   size and name when known).
//! - `embeddings/<model>/<shard>.npy` (float32 or float16), any JSON (`metrics.json`) and
//!   any other bytes.
//! - `manifest.json`, see [`Manifest`].

use crate::error::{DataError, Result};
use crate::npy;
use crate::storage::Location;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The name of the manifest, written last.
pub const MANIFEST: &str = "manifest.json";
/// The version of the layout written here; readers refuse newer ones.
pub const FORMAT_VERSION: u32 = 1;
/// Rows per Parquet row group of `assignments.parquet`.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

const ASSIGNMENTS: &str = "assignments.parquet";
const CENTROIDS_NPY: &str = "centroids.npy";
const CENTROIDS_JSON: &str = "centroids.json";
const METRICS: &str = "metrics.json";
/// Files checked or read at once.
const PARALLEL: usize = 16;

/// One file of a committed output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the job's prefix, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// `manifest.json`: what the job was, and every file of its output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub job_id: String,
    /// When the output was committed, RFC 3339 UTC (`2026-12-31T23:59:59Z`).
    pub created: String,
    /// The imclust version that wrote it.
    pub imclust_version: String,
    /// SHA-256 of the resolved configuration text ([`ManifestInfo::config_text`]).
    pub config_sha256: String,
    /// Seconds per stage, as the job reports them.
    pub timings: BTreeMap<String, f64>,
    /// Sorted by path.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// The entry of `path`, if the manifest lists it.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.binary_search_by(|f| f.path.as_str().cmp(path)).ok().map(|i| &self.files[i])
    }
}

/// What the job tells [`OutputWriter::commit`] besides the files.
#[derive(Clone, Debug, Default)]
pub struct ManifestInfo {
    /// The resolved configuration (TOML, or the command line); only its digest is recorded.
    pub config_text: String,
    /// Seconds per stage (`load`, `fit`, ...); finite values only.
    pub timings: BTreeMap<String, f64>,
}

/// The rows of `assignments.parquet`; every vector has one entry per row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assignments {
    /// Row index in the dataset.
    pub index: Vec<u64>,
    /// Record id (a file path, a key, or the index as text).
    pub ids: Vec<String>,
    /// Where the item came from, when known.
    pub uris: Option<Vec<String>>,
    /// The true class, when known (`None` for a row without one).
    pub labels: Option<Vec<Option<i64>>>,
    pub clusters: Vec<u32>,
    /// Distance to the nearest centroid.
    pub distances: Vec<f32>,
    /// Distance to the second-nearest centroid minus `distance`.
    pub margins: Vec<f32>,
}

impl Assignments {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn check(&self) -> Result<()> {
        let n = self.index.len();
        let lens = [
            ("ids", Some(self.ids.len())),
            ("uris", self.uris.as_ref().map(Vec::len)),
            ("labels", self.labels.as_ref().map(Vec::len)),
            ("clusters", Some(self.clusters.len())),
            ("distances", Some(self.distances.len())),
            ("margins", Some(self.margins.len())),
        ];
        for (name, len) in lens {
            if let Some(len) = len.filter(|&l| l != n) {
                return Err(DataError::invalid(
                    "assignments",
                    format!("{n} rows in index but {len} in {name}: every column needs one value per row"),
                ));
            }
        }
        Ok(())
    }
}

/// Writes the files of one job's output, then commits them with a manifest.
pub struct OutputWriter {
    root: Location,
    job_id: String,
    files: BTreeMap<String, FileEntry>,
}

impl OutputWriter {
    /// A writer for `<prefix>/<job_id>/`. Refuses a job whose output is already committed
    /// (has a `manifest.json`). Files left there by an attempt that never committed are
    /// overwritten when written again; others stay but are not part of the output.
    pub async fn create(prefix: Location, job_id: &str) -> Result<Self> {
        check_job_id(job_id)?;
        let root = prefix.join(job_id);
        let manifest = root.join(MANIFEST);
        if manifest.head_opt().await?.is_some() {
            return Err(DataError::storage(
                manifest.url(),
                format!(
                    "job '{job_id}' already has a committed output here: pick another job id (--job-id) \
                     or delete {} first",
                    root.url()
                ),
            ));
        }
        Ok(OutputWriter { root, job_id: job_id.to_string(), files: BTreeMap::new() })
    }

    /// The job's prefix, `<prefix>/<job_id>`.
    pub fn location(&self) -> &Location {
        &self.root
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The files written so far, by path.
    pub fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.files.values()
    }

    /// Writes `bytes` to `rel` (a relative `/`-separated path; not `manifest.json`) and
    /// records it. Writing the same path again replaces it.
    /// Lists a file that another process wrote under this job's root (a worker's embedding
    /// shard), with the size and digest it reported; `commit` puts it in the manifest.
    pub fn record(&mut self, entry: FileEntry) {
        self.files.insert(entry.path.clone(), entry);
    }

    pub async fn put_bytes(&mut self, rel: &str, bytes: impl Into<Bytes>) -> Result<FileEntry> {
        check_rel(rel)?;
        let bytes: Bytes = bytes.into();
        let entry = FileEntry { path: rel.to_string(), size: bytes.len() as u64, sha256: sha256_hex(&bytes) };
        self.root.join(rel).put(bytes).await?;
        self.files.insert(rel.to_string(), entry.clone());
        Ok(entry)
    }

    /// Writes `value` as pretty-printed JSON with a final newline.
    pub async fn put_json(&mut self, rel: &str, value: &serde_json::Value) -> Result<FileEntry> {
        let mut text = serde_json::to_vec_pretty(value)
            .map_err(|e| DataError::invalid(self.root.join(rel).url(), format!("cannot encode JSON: {e}")))?;
        text.push(b'\n');
        self.put_bytes(rel, text).await
    }

    /// Writes a `<f4` `.npy` array of `shape` (row-major `data`).
    pub async fn put_npy_f32(&mut self, rel: &str, shape: &[usize], data: &[f32]) -> Result<FileEntry> {
        let bytes = npy::encode_f32(shape, data).map_err(|r| self.npy_error(rel, r))?;
        self.put_bytes(rel, bytes).await
    }

    /// Writes `data` converted to float16 (round to nearest even) as a `<f2` `.npy` array.
    pub async fn put_npy_f16(&mut self, rel: &str, shape: &[usize], data: &[f32]) -> Result<FileEntry> {
        let bytes = npy::encode_f16(shape, data).map_err(|r| self.npy_error(rel, r))?;
        self.put_bytes(rel, bytes).await
    }

    /// Writes a `<i4` `.npy` array.
    pub async fn put_npy_i32(&mut self, rel: &str, shape: &[usize], data: &[i32]) -> Result<FileEntry> {
        let bytes = npy::encode_i32(shape, data).map_err(|r| self.npy_error(rel, r))?;
        self.put_bytes(rel, bytes).await
    }

    /// Writes a `<i8` `.npy` array.
    pub async fn put_npy_i64(&mut self, rel: &str, shape: &[usize], data: &[i64]) -> Result<FileEntry> {
        let bytes = npy::encode_i64(shape, data).map_err(|r| self.npy_error(rel, r))?;
        self.put_bytes(rel, bytes).await
    }

    /// Writes `assignments.parquet`.
    pub async fn put_assignments(&mut self, a: &Assignments) -> Result<FileEntry> {
        let bytes = encode_assignments(a)?;
        self.put_bytes(ASSIGNMENTS, bytes).await
    }

    /// Writes `centroids.npy` (float32, `k x d`) and `centroids.json`: k, d and per cluster
    /// its index, size (`sizes[c]`) and name (`names[c]`, when given).
    pub async fn put_centroids(
        &mut self,
        k: usize,
        d: usize,
        data: &[f32],
        sizes: &[u64],
        names: Option<&[String]>,
    ) -> Result<()> {
        let wrong = |what: &str, len: usize, want: usize| {
            Err(DataError::invalid(
                "centroids",
                format!("{len} {what} for k = {k} clusters of d = {d}: expected {want}"),
            ))
        };
        if sizes.len() != k {
            return wrong("sizes", sizes.len(), k);
        }
        if let Some(n) = names.filter(|n| n.len() != k) {
            return wrong("names", n.len(), k);
        }
        self.put_npy_f32(CENTROIDS_NPY, &[k, d], data).await?;
        let clusters: Vec<serde_json::Value> = (0..k)
            .map(|c| {
                let mut v = serde_json::json!({"index": c, "size": sizes[c]});
                if let Some(names) = names {
                    v["name"] = names[c].clone().into();
                }
                v
            })
            .collect();
        let info = serde_json::json!({"k": k, "d": d, "dtype": "float32", "clusters": clusters});
        self.put_json(CENTROIDS_JSON, &info).await?;
        Ok(())
    }

    /// Writes `embeddings/<model>/<shard>.npy`: `rows` (row-major, `dim` columns) as float32,
    /// or converted to float16 when `f16`.
    pub async fn put_embedding_shard(
        &mut self,
        model: &str,
        shard: &str,
        rows: &[f32],
        dim: usize,
        f16: bool,
    ) -> Result<FileEntry> {
        for (what, name) in [("model name", model), ("shard name", shard)] {
            if !is_plain_name(name) {
                return Err(DataError::invalid(
                    format!("{what} '{name}'"),
                    "use letters, digits, '.', '_' and '-' only (it becomes one segment of a path)",
                ));
            }
        }
        let rel = format!("embeddings/{model}/{shard}.npy");
        if dim == 0 || !rows.len().is_multiple_of(dim) {
            return Err(self.npy_error(&rel, format!("{} values do not make rows of {dim}", rows.len())));
        }
        let shape = [rows.len() / dim, dim];
        if f16 { self.put_npy_f16(&rel, &shape, rows).await } else { self.put_npy_f32(&rel, &shape, rows).await }
    }

    /// Writes `manifest.json`, listing every file written, and so commits the output. Call
    /// it only once every file is written: readers trust whatever it lists.
    pub async fn commit(self, info: ManifestInfo) -> Result<Manifest> {
        if let Some((stage, s)) = info.timings.iter().find(|(_, s)| !s.is_finite()) {
            return Err(DataError::invalid(format!("timing '{stage}'"), format!("{s} is not a finite number of seconds")));
        }
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            job_id: self.job_id,
            created: rfc3339_utc(SystemTime::now()),
            imclust_version: env!("CARGO_PKG_VERSION").to_string(),
            config_sha256: sha256_hex(info.config_text.as_bytes()),
            timings: info.timings,
            files: self.files.into_values().collect(),
        };
        let mut text = serde_json::to_vec_pretty(&manifest).expect("a manifest is plain JSON");
        text.push(b'\n');
        self.root.join(MANIFEST).put(text.into()).await?;
        Ok(manifest)
    }

    fn npy_error(&self, rel: &str, reason: String) -> DataError {
        DataError::npy(self.root.join(rel).url(), reason)
    }
}

/// A committed output, opened for reading.
pub struct OutputReader {
    root: Location,
    manifest: Manifest,
}

impl OutputReader {
    /// Opens the output of one job, `<output>/<job-id>` (what [`OutputWriter::location`]
    /// returns). Refuses a prefix without `manifest.json`, and one where a listed file is
    /// missing or has another size than listed.
    pub async fn open(root: Location) -> Result<Self> {
        let manifest_loc = root.join(MANIFEST);
        if manifest_loc.head_opt().await?.is_none() {
            return Err(DataError::storage(
                root.url(),
                "no manifest.json: the output is incomplete or still being written (or this is not a job's \
                 output prefix, <output>/<job-id>)",
            ));
        }
        let text = manifest_loc.get().await?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| DataError::format(manifest_loc.url(), format!("not a valid manifest ({e})")))?;
        if manifest.format_version > FORMAT_VERSION {
            return Err(DataError::format(
                manifest_loc.url(),
                format!(
                    "format version {} is newer than this imclust ({}) reads (version {FORMAT_VERSION}): upgrade imclust",
                    manifest.format_version,
                    env!("CARGO_PKG_VERSION")
                ),
            ));
        }
        if !manifest.files.is_sorted_by(|a, b| a.path < b.path) {
            return Err(DataError::format(manifest_loc.url(), "the files are not sorted by path: the manifest was edited"));
        }
        futures::stream::iter(manifest.files.iter().map(|f| {
            let loc = root.join(&f.path);
            async move {
                match loc.head_opt().await? {
                    None => Err(DataError::storage(
                        loc.url(),
                        "listed in manifest.json but missing: the output was damaged after it was committed",
                    )),
                    Some(m) if m.size != f.size => Err(DataError::storage(
                        loc.url(),
                        format!(
                            "{} bytes, but manifest.json lists {}: the file was changed after the output was committed",
                            m.size, f.size
                        ),
                    )),
                    Some(_) => Ok(()),
                }
            }
        }))
        .buffered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(OutputReader { root, manifest })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn location(&self) -> &Location {
        &self.root
    }

    /// Reads every listed file and checks its SHA-256; the error names the first file
    /// that does not match.
    pub async fn verify(&self) -> Result<()> {
        futures::stream::iter(self.manifest.files.iter().map(|f| self.read_entry(f)))
            .buffered(PARALLEL)
            .try_collect::<Vec<Bytes>>()
            .await?;
        Ok(())
    }

    /// The bytes of a listed file, checked against its size and SHA-256.
    pub async fn file(&self, rel: &str) -> Result<Bytes> {
        let entry = self.manifest.file(rel).ok_or_else(|| {
            DataError::storage(self.root.join(rel).url(), "not listed in manifest.json: this output has no such file")
        })?;
        self.read_entry(entry).await
    }

    /// A listed JSON file.
    pub async fn json(&self, rel: &str) -> Result<serde_json::Value> {
        let bytes = self.file(rel).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| DataError::format(self.root.join(rel).url(), format!("not valid JSON ({e})")))
    }

    /// `centroids.npy`, K x D.
    pub async fn centroids(&self) -> Result<npy::Matrix> {
        let bytes = self.file(CENTROIDS_NPY).await?;
        npy::read_matrix_f32_bytes(self.root.join(CENTROIDS_NPY).url(), &bytes)
    }

    /// `centroids.json`: k, d, and per cluster index, size and name.
    pub async fn centroids_info(&self) -> Result<serde_json::Value> {
        self.json(CENTROIDS_JSON).await
    }

    /// `assignments.parquet`.
    pub async fn assignments(&self) -> Result<Assignments> {
        let bytes = self.file(ASSIGNMENTS).await?;
        decode_assignments(self.root.join(ASSIGNMENTS).url(), bytes)
    }

    /// `metrics.json`.
    pub async fn metrics(&self) -> Result<serde_json::Value> {
        self.json(METRICS).await
    }

    async fn read_entry(&self, f: &FileEntry) -> Result<Bytes> {
        let loc = self.root.join(&f.path);
        let bytes = loc.get().await?;
        let sha = sha256_hex(&bytes);
        if bytes.len() as u64 != f.size || sha != f.sha256 {
            return Err(DataError::storage(
                loc.url(),
                format!(
                    "checksum mismatch: {} bytes with sha256 {sha}, but manifest.json lists {} bytes with sha256 {}: \
                     the file was changed after the output was committed",
                    bytes.len(),
                    f.size,
                    f.sha256
                ),
            ));
        }
        Ok(bytes)
    }
}

// ---------------------------------------------------------------------------------------
// Parquet
// ---------------------------------------------------------------------------------------

/// `assignments.parquet` as bytes (see the module documentation for the columns).
pub fn encode_assignments(a: &Assignments) -> Result<Vec<u8>> {
    a.check()?;
    let err = |e: &dyn std::fmt::Display| DataError::format(ASSIGNMENTS, format!("cannot encode Parquet: {e}"));
    let mut fields = vec![Field::new("index", DataType::UInt64, false), Field::new("id", DataType::Utf8, false)];
    if a.uris.is_some() {
        fields.push(Field::new("uri", DataType::Utf8, false));
    }
    if a.labels.is_some() {
        fields.push(Field::new("label", DataType::Int64, true));
    }
    fields.extend([
        Field::new("cluster", DataType::UInt32, false),
        Field::new("distance", DataType::Float32, false),
        Field::new("margin", DataType::Float32, false),
    ]);
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .set_created_by(format!("imclust {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut w = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(|e| err(&e))?;
    let n = a.len();
    for start in (0..n).step_by(ROW_GROUP_ROWS) {
        let r = start..(start + ROW_GROUP_ROWS).min(n);
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(a.index[r.clone()].to_vec())),
            Arc::new(StringArray::from_iter_values(&a.ids[r.clone()])),
        ];
        if let Some(uris) = &a.uris {
            cols.push(Arc::new(StringArray::from_iter_values(&uris[r.clone()])));
        }
        if let Some(labels) = &a.labels {
            cols.push(Arc::new(Int64Array::from(labels[r.clone()].to_vec())));
        }
        cols.push(Arc::new(UInt32Array::from(a.clusters[r.clone()].to_vec())));
        cols.push(Arc::new(Float32Array::from(a.distances[r.clone()].to_vec())));
        cols.push(Arc::new(Float32Array::from(a.margins[r].to_vec())));
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| err(&e))?;
        w.write(&batch).map_err(|e| err(&e))?;
    }
    w.into_inner().map_err(|e| err(&e))
}

/// Reads `assignments.parquet` from its bytes.
pub fn read_assignments(bytes: Bytes) -> Result<Assignments> {
    decode_assignments(ASSIGNMENTS, bytes)
}

fn decode_assignments(name: &str, bytes: Bytes) -> Result<Assignments> {
    let err = |reason: String| DataError::format(name, reason);
    let not_parquet = |e: parquet::errors::ParquetError| err(format!("not a readable Parquet file ({e})"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(not_parquet)?;
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(not_parquet)?;
    let has = |c: &str| schema.column_with_name(c).is_some();
    let mut a = Assignments {
        uris: has("uri").then(Vec::new),
        labels: has("label").then(Vec::new),
        ..Default::default()
    };
    for batch in reader {
        let batch = batch.map_err(|e| err(format!("cannot decode ({e})")))?;
        let column = |c: &str| -> Result<&ArrayRef> {
            batch.column_by_name(c).ok_or_else(|| err(format!("no column '{c}': not an imclust assignments file")))
        };
        let typed = |c: &str, want: DataType| -> Result<&ArrayRef> {
            let col = column(c)?;
            if col.data_type() != &want {
                return Err(err(format!("column '{c}' is {}, expected {want}", col.data_type())));
            }
            if c != "label" && col.null_count() > 0 {
                return Err(err(format!("column '{c}' has {} null values; only 'label' may", col.null_count())));
            }
            Ok(col)
        };
        a.index.extend(typed("index", DataType::UInt64)?.as_primitive::<UInt64Type>().values());
        a.ids.extend(typed("id", DataType::Utf8)?.as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string()));
        if let Some(uris) = &mut a.uris {
            uris.extend(typed("uri", DataType::Utf8)?.as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string()));
        }
        if let Some(labels) = &mut a.labels {
            labels.extend(typed("label", DataType::Int64)?.as_primitive::<Int64Type>().iter());
        }
        a.clusters.extend(typed("cluster", DataType::UInt32)?.as_primitive::<UInt32Type>().values());
        a.distances.extend(typed("distance", DataType::Float32)?.as_primitive::<Float32Type>().values());
        a.margins.extend(typed("margin", DataType::Float32)?.as_primitive::<Float32Type>().values());
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------
// Names, digests, times
// ---------------------------------------------------------------------------------------

/// `kind-YYYYmmdd-HHMMSS` in UTC, e.g. `cluster-20261231-235959`: the default job id.
pub fn default_job_id(kind: &str) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(SystemTime::now());
    format!("{kind}-{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// `t` as RFC 3339 in UTC to the second, e.g. `2026-12-31T23:59:59Z`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// (year, month, day, hour, minute, second) of `t` in UTC; times before 1970 clamp to it.
fn utc_parts(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    // Days to the civil date (proleptic Gregorian), Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60)
}

/// Letters, digits, `.`, `_`, `-`; not empty, not starting with `.`.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_job_id(job_id: &str) -> Result<()> {
    if is_plain_name(job_id) {
        return Ok(());
    }
    Err(DataError::invalid(
        format!("job id '{job_id}'"),
        "use 1 to 200 letters, digits, '.', '_' and '-', not starting with '.'",
    ))
}

fn check_rel(rel: &str) -> Result<()> {
    let ok = !rel.is_empty()
        && rel != MANIFEST
        && !rel.contains('\\')
        && rel.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    if ok {
        return Ok(());
    }
    Err(DataError::invalid(
        format!("output file '{rel}'"),
        "use a relative path with '/' separators, without '.', '..' or empty segments; manifest.json is written by commit",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    fn prefix(dir: &tempfile::TempDir) -> Location {
        Storage::default().locate(dir.path().to_str().unwrap()).unwrap()
    }

    fn sample(n: usize, labels: bool) -> Assignments {
        Assignments {
            index: (0..n as u64).collect(),
            ids: (0..n).map(|i| format!("img/{i:06}.jpg")).collect(),
            uris: None,
            labels: labels.then(|| (0..n).map(|i| (i % 7 != 3).then_some(i as i64 % 5 - 1)).collect()),
            clusters: (0..n).map(|i| (i * 31 % 10) as u32).collect(),
            distances: (0..n).map(|i| i as f32 * 0.25).collect(),
            margins: (0..n).map(|i| if i == 0 { f32::INFINITY } else { 1.0 / i as f32 }).collect(),
        }
    }

    fn info() -> ManifestInfo {
        ManifestInfo { config_text: "k = 3\n".into(), timings: [("fit".to_string(), 1.5)].into() }
    }

    #[tokio::test]
    async fn round_trip_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = OutputWriter::create(prefix(&dir), "job-1").await.unwrap();
        let a = sample(10, true);
        w.put_assignments(&a).await.unwrap();
        let names = vec!["cat".to_string(), "dog".to_string()];
        w.put_centroids(2, 3, &[1.0, 2.0, 3.0, -1.0, 0.5, 0.25], &[6, 4], Some(&names)).await.unwrap();
        w.put_json("metrics.json", &serde_json::json!({"acc": 0.5})).await.unwrap();
        w.put_npy_i32("extra/ids.npy", &[3], &[1, 2, 3]).await.unwrap();
        w.put_npy_i64("extra/ids64.npy", &[2], &[-1, 1 << 40]).await.unwrap();
        w.put_embedding_shard("clip-b32", "shard-00000", &[0.5, 1.0, 2.0, 4.0], 2, true).await.unwrap();
        w.put_embedding_shard("clip-b32", "shard-00001", &[0.1, 0.2], 2, false).await.unwrap();
        w.put_bytes("report/index.html", "<html></html>").await.unwrap();
        let m = w.commit(info()).await.unwrap();

        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "assignments.parquet",
                "centroids.json",
                "centroids.npy",
                "embeddings/clip-b32/shard-00000.npy",
                "embeddings/clip-b32/shard-00001.npy",
                "extra/ids.npy",
                "extra/ids64.npy",
                "metrics.json",
                "report/index.html",
            ]
        );
        assert_eq!(m.config_sha256, sha256_hex(b"k = 3\n"));
        assert_eq!(m.job_id, "job-1");
        assert_eq!(m.imclust_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(m.created.len(), 20, "{}", m.created);

        let job = dir.path().join("job-1");
        let html = std::fs::read(job.join("report/index.html")).unwrap();
        let entry = m.file("report/index.html").unwrap();
        assert_eq!((entry.size, entry.sha256.as_str()), (13, sha256_hex(&html).as_str()));
        // The manifest on disk is the one returned, and lists itself nowhere.
        let on_disk: Manifest = serde_json::from_slice(&std::fs::read(job.join(MANIFEST)).unwrap()).unwrap();
        assert_eq!(on_disk, m);

        let r = OutputReader::open(prefix(&dir).join("job-1")).await.unwrap();
        r.verify().await.unwrap();
        assert_eq!(r.manifest(), &m);
        assert_eq!(r.assignments().await.unwrap(), a);
        let c = r.centroids().await.unwrap();
        assert_eq!((c.rows, c.cols, c.data.as_slice()), (2, 3, &[1.0, 2.0, 3.0, -1.0, 0.5, 0.25][..]));
        let ci = r.centroids_info().await.unwrap();
        assert_eq!(
            ci,
            serde_json::json!({"k": 2, "d": 3, "dtype": "float32", "clusters": [
                {"index": 0, "size": 6, "name": "cat"}, {"index": 1, "size": 4, "name": "dog"}]})
        );
        assert_eq!(r.metrics().await.unwrap()["acc"], 0.5);
        let e16 = npy::read_matrix_f32_bytes("e", &r.file("embeddings/clip-b32/shard-00000.npy").await.unwrap()).unwrap();
        assert_eq!((e16.rows, e16.cols, e16.data.as_slice()), (2, 2, &[0.5, 1.0, 2.0, 4.0][..]));
        let h = npy::parse_header(&r.file("embeddings/clip-b32/shard-00000.npy").await.unwrap()).unwrap();
        assert_eq!(h.descr, "<f2");
        let ids = npy::read_labels_bytes("i", &r.file("extra/ids64.npy").await.unwrap()).unwrap();
        assert_eq!(ids, [-1, 1 << 40]);
        let e = r.file("nope.bin").await.unwrap_err().to_string();
        assert!(e.contains("nope.bin") && e.contains("not listed"), "{e}");
    }

    #[tokio::test]
    async fn reader_trusts_only_a_committed_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = OutputWriter::create(prefix(&dir), "j").await.unwrap();
        w.put_json("metrics.json", &serde_json::json!({})).await.unwrap();
        let e = OutputReader::open(w.location().clone()).await.err().unwrap().to_string();
        assert!(e.contains("no manifest.json: the output is incomplete or still being written"), "{e}");
        let root = w.location().clone();
        w.commit(ManifestInfo::default()).await.unwrap();
        let r = OutputReader::open(root).await.unwrap();
        assert_eq!(r.manifest().files.len(), 1);
        assert!(r.manifest().timings.is_empty());
    }

    #[tokio::test]
    async fn a_committed_job_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let w = OutputWriter::create(prefix(&dir), "j").await.unwrap();
        // An attempt that never committed can be redone under the same id.
        drop(OutputWriter::create(prefix(&dir), "j").await.unwrap());
        w.commit(info()).await.unwrap();
        let e = OutputWriter::create(prefix(&dir), "j").await.err().unwrap().to_string();
        assert!(e.contains("already has a committed output") && e.contains("--job-id") && e.contains("delete"), "{e}");
        // Another id is fine; bad ids and paths are refused.
        OutputWriter::create(prefix(&dir), "j2").await.unwrap();
        for bad in ["", "a/b", "..", ".hidden", "a b"] {
            assert!(OutputWriter::create(prefix(&dir), bad).await.is_err(), "{bad:?}");
        }
        let mut w = OutputWriter::create(prefix(&dir), "j3").await.unwrap();
        for bad in ["manifest.json", "../x", "a//b", "/abs", "a/./b", ""] {
            let e = w.put_bytes(bad, "x").await.unwrap_err().to_string();
            assert!(e.contains("output file"), "{bad:?}: {e}");
        }
        assert!(w.put_embedding_shard("m/x", "s", &[1.0], 1, false).await.is_err());
        assert!(w.put_embedding_shard("m", "s", &[1.0, 2.0, 3.0], 2, false).await.is_err());
        assert!(w.put_centroids(2, 1, &[1.0, 2.0], &[1], None).await.is_err());
        assert!(w.put_npy_f32("x.npy", &[3], &[1.0]).await.is_err());
        assert_eq!(w.files().count(), 0);
    }

    #[tokio::test]
    async fn tampering_is_detected_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = OutputWriter::create(prefix(&dir), "j").await.unwrap();
        w.put_json("metrics.json", &serde_json::json!({"acc": 0.5})).await.unwrap();
        w.put_npy_f32("centroids.npy", &[1, 2], &[1.0, 2.0]).await.unwrap();
        let root = w.location().clone();
        w.commit(info()).await.unwrap();
        let job = dir.path().join("j");

        // Same size, other bytes: open succeeds, verify and reads fail naming the file.
        let text = std::fs::read_to_string(job.join("metrics.json")).unwrap();
        std::fs::write(job.join("metrics.json"), text.replace("0.5", "0.9")).unwrap();
        let r = OutputReader::open(root.clone()).await.unwrap();
        let e = r.verify().await.unwrap_err().to_string();
        assert!(e.contains("metrics.json") && e.contains("checksum mismatch"), "{e}");
        assert!(r.metrics().await.unwrap_err().to_string().contains("metrics.json"));
        r.centroids().await.unwrap();

        // Another size: open already refuses; so does a missing file.
        std::fs::write(job.join("metrics.json"), "{}").unwrap();
        let e = OutputReader::open(root.clone()).await.err().unwrap().to_string();
        assert!(e.contains("metrics.json") && e.contains("changed after"), "{e}");
        std::fs::remove_file(job.join("metrics.json")).unwrap();
        let e = OutputReader::open(root).await.err().unwrap().to_string();
        assert!(e.contains("metrics.json") && e.contains("missing"), "{e}");
    }

    #[test]
    fn parquet_columns_and_values_read_back_exactly() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        // Three row groups, labels with nulls, uris, infinities.
        let n = 2 * ROW_GROUP_ROWS + 5;
        let mut a = sample(n, true);
        a.uris = Some((0..n).map(|i| format!("s3://b/img/{i}.jpg")).collect());
        let bytes = Bytes::from(encode_assignments(&a).unwrap());
        let file = SerializedFileReader::new(bytes.clone()).unwrap();
        let meta = file.metadata();
        assert_eq!(meta.num_row_groups(), 3);
        assert_eq!(meta.file_metadata().num_rows(), n as i64);
        let cols: Vec<&str> = meta.file_metadata().schema_descr().columns().iter().map(|c| c.name()).collect();
        assert_eq!(cols, ["index", "id", "uri", "label", "cluster", "distance", "margin"]);
        assert_eq!(meta.row_group(0).column(0).compression(), Compression::SNAPPY);
        let back = read_assignments(bytes).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.labels.as_ref().unwrap()[3], None);
        assert_eq!(back.margins[0], f32::INFINITY);

        // Without labels or uris those columns are absent.
        let a = sample(4, false);
        let bytes = Bytes::from(encode_assignments(&a).unwrap());
        let file = SerializedFileReader::new(bytes.clone()).unwrap();
        let cols: Vec<String> =
            file.metadata().file_metadata().schema_descr().columns().iter().map(|c| c.name().to_string()).collect();
        assert_eq!(cols, ["index", "id", "cluster", "distance", "margin"]);
        assert_eq!(read_assignments(bytes).unwrap(), a);

        // Empty, mismatched lengths, and not Parquet at all.
        assert_eq!(read_assignments(encode_assignments(&sample(0, true)).unwrap().into()).unwrap(), sample(0, true));
        let mut bad = sample(3, false);
        bad.margins.pop();
        let e = encode_assignments(&bad).unwrap_err().to_string();
        assert!(e.contains("margins"), "{e}");
        let e = read_assignments(Bytes::from_static(b"not parquet")).unwrap_err().to_string();
        assert!(e.contains("assignments.parquet") && e.contains("Parquet"), "{e}");
    }

    #[test]
    fn times_and_ids() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_798_761_599); // 2026-12-31T23:59:59Z
        assert_eq!(rfc3339_utc(t), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH + std::time::Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let id = default_job_id("cluster");
        assert!(id.starts_with("cluster-") && id.len() == "cluster-20261231-235959".len(), "{id}");
        check_job_id(&id).unwrap();
    }
}
