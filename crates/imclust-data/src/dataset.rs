//! Datasets behind one trait: a length, random access by index range, labels and class
//! names where the format has them, and a stable fingerprint.
//!
//! A dataset is named `KIND:URL` (see [`DatasetSpec`]); [`open`] reads its index (headers,
//! listings, list files) and returns a [`Dataset`] whose records are read on demand, by
//! range reads where the format has fixed-size records.

use crate::error::{DataError, Result};
use crate::storage::{Location, ObjectMeta, Storage};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::sync::Arc;

/// What one record holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Raw pixels, row-major, interleaved channels (HWC), `channels` 1 (grey) or 3 (RGB).
    Pixels { width: u32, height: u32, channels: u8, data: Vec<u8> },
    /// An encoded image file (JPEG, PNG, WebP, ...), decoded later.
    Encoded(Bytes),
    /// A precomputed embedding.
    Embedding(Vec<f32>),
    /// The record cannot be used: why (missing file, label out of range, unreadable object).
    Bad(String),
}

/// One record of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Position in the dataset (0-based, in dataset order).
    pub index: u64,
    /// A stable identifier: the object URL, the manifest's `id`, or `split[i]`.
    pub id: String,
    /// Class index into the dataset's class names, when the format has labels.
    pub label: Option<i64>,
    pub payload: Payload,
}

/// The formats, as named in a dataset spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cifar10,
    Cifar100,
    Stl10,
    Idx,
    Folder,
    Mit67,
    Manifest,
    Npy,
}

impl Kind {
    pub const ALL: [Kind; 8] =
        [Kind::Cifar10, Kind::Cifar100, Kind::Stl10, Kind::Idx, Kind::Folder, Kind::Mit67, Kind::Manifest, Kind::Npy];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Cifar10 => "cifar10",
            Kind::Cifar100 => "cifar100",
            Kind::Stl10 => "stl10",
            Kind::Idx => "idx",
            Kind::Folder => "folder",
            Kind::Mit67 => "mit67",
            Kind::Manifest => "manifest",
            Kind::Npy => "npy",
        }
    }

    /// The splits the format has (the first is the default); empty when it has none.
    pub fn splits(self) -> &'static [&'static str] {
        match self {
            Kind::Cifar10 | Kind::Cifar100 | Kind::Idx => &["train", "test", "all"],
            Kind::Stl10 => &[
                "train", "test", "unlabeled", "all", "train-fold-0", "train-fold-1", "train-fold-2", "train-fold-3",
                "train-fold-4", "train-fold-5", "train-fold-6", "train-fold-7", "train-fold-8", "train-fold-9",
            ],
            Kind::Mit67 => &["all", "train", "test"],
            Kind::Folder | Kind::Manifest | Kind::Npy => &[],
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            DataError::invalid(
                format!("dataset kind '{s}'"),
                format!("unknown; use one of {}", Kind::ALL.map(Kind::name).join(", ")),
            )
        })
    }
}

/// A dataset as named on the command line or in a job spec: `KIND:URL`, a split where the
/// format has splits, and for CIFAR-100 which labels (`fine`, the default, or `coarse`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub kind: Kind,
    pub url: String,
    #[serde(default)]
    pub split: Option<String>,
    #[serde(default)]
    pub labels: Option<String>,
}

impl DatasetSpec {
    /// Parses `KIND:URL` (the URL may itself contain `:`, as in `cifar10:s3://bucket/cifar`).
    pub fn parse(spec: &str, split: Option<&str>) -> Result<DatasetSpec> {
        let Some((kind, url)) = spec.split_once(':') else {
            return Err(DataError::invalid(
                format!("dataset '{spec}'"),
                format!("write KIND:URL with KIND one of {}, e.g. cifar10:/data/cifar-10-batches-bin", Kind::ALL.map(Kind::name).join(", ")),
            ));
        };
        if url.is_empty() {
            return Err(DataError::invalid(format!("dataset '{spec}'"), "no URL after the kind"));
        }
        let s = DatasetSpec { kind: kind.parse()?, url: url.to_string(), split: split.map(str::to_string), labels: None };
        s.split()?;
        Ok(s)
    }

    /// The split to read: as given (checked against the format's splits), or the default.
    pub fn split(&self) -> Result<Option<&str>> {
        let splits = self.kind.splits();
        match &self.split {
            None => Ok(splits.first().copied()),
            Some(s) if splits.contains(&s.as_str()) => Ok(Some(s.as_str())),
            Some(s) if splits.is_empty() => Err(DataError::invalid(
                format!("split '{s}'"),
                format!("{} datasets have no splits; drop --split", self.kind.name()),
            )),
            Some(s) => Err(DataError::invalid(
                format!("split '{s}'"),
                format!("{} datasets have the splits {}", self.kind.name(), splits.join(", ")),
            )),
        }
    }
}

impl std::fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.url)?;
        if let Ok(Some(s)) = self.split() {
            write!(f, " (split {s})")?;
        }
        Ok(())
    }
}

/// A dataset: random access to its records by index range.
#[async_trait::async_trait]
pub trait Dataset: Send + Sync {
    /// The spec it was opened from.
    fn spec(&self) -> &DatasetSpec;
    /// Number of records.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class names, indexed by label, when the format has them.
    fn class_names(&self) -> Option<&[String]>;
    /// A digest of everything the records depend on: the URLs, sizes and versions (ETag or
    /// modification time) of the files read, the kind and the split.
    fn fingerprint(&self) -> &str;
    /// The fingerprint of records `range`: what a cache entry of those records is keyed by.
    /// The default derives it from the whole dataset's fingerprint; formats that know each
    /// record's source (folders) override it so that changing one file invalidates only the
    /// shards that hold it.
    fn shard_fingerprint(&self, range: Range<u64>) -> String {
        let mut h = Sha256::new();
        h.update(self.fingerprint().as_bytes());
        h.update(range.start.to_le_bytes());
        h.update(range.end.to_le_bytes());
        hex::encode(h.finalize())
    }
    /// Things a user should know about the dataset that are not errors (files that are not
    /// records, fallbacks taken), one line each.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Records `range` (clamped to the dataset), in order, one per index. A record that
    /// cannot be used is returned with a [`Payload::Bad`] reason; an error is returned only
    /// when the dataset itself cannot be read (unreachable store, corrupt container file).
    async fn read(&self, range: Range<u64>) -> Result<Vec<Record>>;
    /// Every record's label (None when the format has no labels). The default reads every
    /// record; formats that keep labels apart override it.
    async fn labels(&self) -> Result<Option<Vec<Option<i64>>>> {
        if self.class_names().is_none() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(self.len() as usize);
        let step = 4096;
        let mut start = 0;
        while start < self.len() {
            out.extend(self.read(start..(start + step).min(self.len())).await?.into_iter().map(|r| r.label));
            start += step;
        }
        Ok(Some(out))
    }
}

/// Opens a dataset: reads its headers, listings and list files (not its records).
pub async fn open(spec: &DatasetSpec, storage: &Storage) -> Result<Arc<dyn Dataset>> {
    let root = storage.locate(&spec.url)?;
    if spec.labels.is_some() && spec.kind != Kind::Cifar100 {
        return Err(DataError::invalid(
            format!("labels = '{}'", spec.labels.as_deref().unwrap_or_default()),
            "only cifar100 datasets have a choice of labels (fine or coarse)",
        ));
    }
    Ok(match spec.kind {
        Kind::Cifar10 | Kind::Cifar100 => Arc::new(crate::datasets::cifar::Cifar::open(spec.clone(), root).await?),
        Kind::Stl10 => Arc::new(crate::datasets::stl10::Stl10::open(spec.clone(), root).await?),
        Kind::Idx => Arc::new(crate::datasets::idx::Idx::open(spec.clone(), root).await?),
        Kind::Folder | Kind::Mit67 => Arc::new(crate::datasets::folder::Folder::open(spec.clone(), root).await?),
        Kind::Manifest => Arc::new(crate::datasets::manifest::Manifest::open(spec.clone(), root, storage.clone()).await?),
        Kind::Npy => Arc::new(crate::datasets::array::NpyDataset::open(spec.clone(), root).await?),
    })
}

/// Builds a dataset fingerprint: sha256 over the kind, the split and each file's URL, size
/// and version, hex encoded.
pub struct Fingerprint(Sha256);

impl Fingerprint {
    pub fn new(spec: &DatasetSpec) -> Self {
        let mut h = Sha256::new();
        h.update(spec.kind.name().as_bytes());
        h.update([0]);
        h.update(spec.split().ok().flatten().unwrap_or("").as_bytes());
        h.update([0]);
        h.update(spec.labels.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        Fingerprint(h)
    }

    pub fn add(&mut self, url: &str, meta: &ObjectMeta) -> &mut Self {
        for part in [url.as_bytes(), meta.size.to_string().as_bytes(), meta.version.as_bytes()] {
            self.0.update(part);
            self.0.update([0]);
        }
        self
    }

    /// Anything else the records depend on (a list file's content, a manifest row).
    pub fn add_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// `range` clamped to a dataset of `len` records.
pub fn clamp(range: Range<u64>, len: u64) -> Range<u64> {
    let end = range.end.min(len);
    range.start.min(end)..end
}

/// The records of `range` (dataset indices) that a file holding records
/// `start..start + count` of the dataset has, as positions within that file; `None` when
/// none. Multi-file formats (batch files, splits) read each file's span.
pub fn local_span(range: &Range<u64>, start: u64, count: u64) -> Option<Range<u64>> {
    let (s, e) = (range.start.max(start), range.end.min(start + count));
    (s < e).then(|| s - start..e - start)
}

/// Objects fetched at once while reading a range of an object-per-record dataset.
pub const CONCURRENT_READS: usize = 16;

/// Records `range` (clamped to `len`) of an object-per-record dataset (folders, manifests),
/// made by `record(i)` with up to [`CONCURRENT_READS`] in flight, in index order.
pub async fn read_concurrently<F, Fut>(range: Range<u64>, len: u64, record: F) -> Result<Vec<Record>>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Record>>,
{
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(clamp(range, len)).map(record).buffered(CONCURRENT_READS).try_collect().await
}

/// An object as an encoded-image payload; a missing object is a bad record (`missing` says
/// why), any other failure an error.
pub async fn fetch_encoded(loc: &Location, missing: impl FnOnce() -> String) -> Result<Payload> {
    Ok(match loc.get_opt().await? {
        Some(bytes) => Payload::Encoded(bytes),
        None => Payload::Bad(missing()),
    })
}

/// Reads a whole object, gunzipping it when its name ends in `.gz`.
pub async fn read_maybe_gz(loc: &Location) -> Result<Bytes> {
    let raw = loc.get().await?;
    if !loc.url().ends_with(".gz") {
        return Ok(raw);
    }
    let mut out = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .map_err(|e| DataError::format(loc.url(), format!("not a valid gzip file ({e}); re-download it")))?;
    Ok(Bytes::from(out))
}

/// Reads an optional text file of names, one per line (blank lines ignored).
pub async fn read_names(loc: &Location) -> Result<Option<Vec<String>>> {
    if loc.head_opt().await?.is_none() {
        return Ok(None);
    }
    let b = loc.get().await?;
    let text = std::str::from_utf8(&b).map_err(|_| DataError::format(loc.url(), "not UTF-8 text"))?;
    Ok(Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()))
}

/// Class names for labels without names: "0", "1", .. up to `count - 1`.
pub fn numbered_classes(count: usize) -> Vec<String> {
    (0..count).map(|i| i.to_string()).collect()
}

/// Checks a label against the number of classes: the label, or the reason it is bad.
pub fn check_label(label: i64, classes: usize) -> std::result::Result<i64, String> {
    if (0..classes as i64).contains(&label) {
        Ok(label)
    } else {
        Err(format!("label {label} is out of range: the dataset has {classes} classes (0..{})", classes.saturating_sub(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_name_their_errors() {
        let s = DatasetSpec::parse("cifar10:s3://bucket/cifar", Some("test")).unwrap();
        assert_eq!((s.kind, s.url.as_str(), s.split().unwrap()), (Kind::Cifar10, "s3://bucket/cifar", Some("test")));
        assert_eq!(DatasetSpec::parse("idx:/d", None).unwrap().split().unwrap(), Some("train"));
        assert_eq!(DatasetSpec::parse("folder:/d", None).unwrap().split().unwrap(), None);
        let e = DatasetSpec::parse("imagenet:/d", None).unwrap_err().to_string();
        assert!(e.contains("imagenet") && e.contains("cifar10, cifar100"), "{e}");
        let e = DatasetSpec::parse("/just/a/path", None).unwrap_err().to_string();
        assert!(e.contains("KIND:URL"), "{e}");
        let e = DatasetSpec::parse("stl10:/d", Some("validation")).unwrap_err().to_string();
        assert!(e.contains("train, test, unlabeled, all"), "{e}");
        let e = DatasetSpec::parse("folder:/d", Some("train")).unwrap_err().to_string();
        assert!(e.contains("no splits"), "{e}");
    }

    #[test]
    fn fingerprints_change_with_any_input() {
        let spec = DatasetSpec::parse("folder:/d", None).unwrap();
        let m = ObjectMeta { size: 10, version: "1".into() };
        let fp = |url: &str, m: &ObjectMeta| {
            let mut f = Fingerprint::new(&spec);
            f.add(url, m);
            f.finish()
        };
        let base = fp("/d/a.png", &m);
        assert_eq!(base, fp("/d/a.png", &m));
        assert_ne!(base, fp("/d/b.png", &m));
        assert_ne!(base, fp("/d/a.png", &ObjectMeta { size: 11, version: "1".into() }));
        assert_ne!(base, fp("/d/a.png", &ObjectMeta { size: 10, version: "2".into() }));
    }

    #[test]
    fn ranges_clamp_and_split_over_files() {
        assert_eq!(clamp(5..20, 10), 5..10);
        assert_eq!(clamp(12..20, 10), 10..10);
        // A file holding dataset records 10..15.
        assert_eq!(local_span(&(8..12), 10, 5), Some(0..2));
        assert_eq!(local_span(&(11..30), 10, 5), Some(1..5));
        assert_eq!(local_span(&(0..10), 10, 5), None);
        assert_eq!(local_span(&(15..20), 10, 5), None);
    }

    #[test]
    fn labels_are_checked() {
        assert_eq!(check_label(9, 10), Ok(9));
        assert!(check_label(10, 10).unwrap_err().contains("out of range"));
        assert!(check_label(-1, 10).is_err());
    }
}
