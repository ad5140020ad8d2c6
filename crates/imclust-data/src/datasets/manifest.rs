//! Manifests: a table of image objects, as JSON lines (`.jsonl`, `.ndjson`), CSV with a
//! header (`.csv`) or Parquet (`.parquet`), with the columns
//!
//! - `uri` (required): any supported URL or path; relative paths are resolved against the
//!   manifest's own folder or prefix;
//! - `label` (optional): a class name (string) or a class index (integer); class names are
//!   the sorted distinct strings, or "0".."max" for integers; an empty cell means unlabelled;
//! - `id` (optional): the record's identifier (default: the URI).
//!
//! The fingerprint is the manifest's own URL, size, version and content: the objects it
//! names are taken to be immutable (write new objects under new names, as object stores
//! are used in practice), so opening a manifest of a million objects costs one read.

use crate::dataset::{Dataset, DatasetSpec, Fingerprint, Payload, Record, numbered_classes, fetch_encoded, read_concurrently};
use crate::error::{DataError, Result};
use crate::storage::{Location, Storage};
use std::collections::BTreeSet;
use std::ops::Range;

/// One manifest row.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    uri: String,
    id: Option<String>,
    label: RawLabel,
}

#[derive(Clone, Debug, PartialEq)]
enum RawLabel {
    None,
    Name(String),
    Index(i64),
}

pub struct Manifest {
    spec: DatasetSpec,
    storage: Storage,
    /// Resolved URLs, ids and labels, in manifest order.
    uris: Vec<String>,
    ids: Vec<Option<String>>,
    labels: Vec<Option<i64>>,
    classes: Option<Vec<String>>,
    fingerprint: String,
}

impl Manifest {
    pub async fn open(spec: DatasetSpec, loc: Location, storage: Storage) -> Result<Self> {
        let (bytes, meta) = loc.get_with_meta().await?;
        let url = loc.url();
        let lower = url.to_ascii_lowercase();
        let rows = if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") || lower.ends_with(".json") {
            parse_jsonl(url, &bytes)?
        } else if lower.ends_with(".csv") {
            parse_csv(url, &bytes)?
        } else if lower.ends_with(".parquet") {
            parse_parquet(url, bytes.clone())?
        } else {
            return Err(DataError::invalid(url, "unknown manifest format: name it *.jsonl, *.csv or *.parquet"));
        };
        if rows.is_empty() {
            return Err(DataError::invalid(url, "the manifest has no rows"));
        }
        let mut fp = Fingerprint::new(&spec);
        fp.add(url, &meta).add_bytes(&bytes);

        let names = rows.iter().any(|r| matches!(r.label, RawLabel::Name(_)));
        let indices = rows.iter().any(|r| matches!(r.label, RawLabel::Index(_)));
        if names && indices {
            return Err(DataError::invalid(url, "the label column mixes class names and integers: use one or the other"));
        }
        let classes: Option<Vec<String>> = if names {
            let set: BTreeSet<&str> = rows.iter().filter_map(|r| if let RawLabel::Name(n) = &r.label { Some(n.as_str()) } else { None }).collect();
            Some(set.into_iter().map(str::to_string).collect())
        } else if indices {
            let (line, min) = rows.iter().enumerate().filter_map(|(i, r)| if let RawLabel::Index(l) = r.label { Some((i, l)) } else { None }).min_by_key(|x| x.1).expect("some");
            if min < 0 {
                return Err(DataError::invalid(url, format!("row {} has the negative label {min}: labels must be class names or indices >= 0", line + 1)));
            }
            let max = rows.iter().filter_map(|r| if let RawLabel::Index(l) = r.label { Some(l) } else { None }).max().expect("some");
            Some(numbered_classes(max as usize + 1))
        } else {
            None
        };
        let base = manifest_dir(url);
        let mut uris = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        let mut labels = Vec::with_capacity(rows.len());
        for r in rows {
            uris.push(resolve(&base, &r.uri));
            ids.push(r.id);
            labels.push(match (&r.label, &classes) {
                (RawLabel::Name(n), Some(c)) => Some(c.binary_search(n).expect("listed") as i64),
                (RawLabel::Index(i), _) => Some(*i),
                _ => None,
            });
        }
        Ok(Manifest { spec, storage, uris, ids, labels, classes, fingerprint: fp.finish() })
    }
}

/// The folder (or prefix) holding the manifest, with a trailing separator.
fn manifest_dir(url: &str) -> String {
    match url.rfind('/') {
        Some(i) => url[..=i].to_string(),
        None => String::new(),
    }
}

/// A row's URI as a URL: URLs and absolute paths as they are, relative paths under `base`.
fn resolve(base: &str, uri: &str) -> String {
    if uri.contains("://") || uri.starts_with('/') {
        uri.to_string()
    } else {
        format!("{base}{uri}")
    }
}

fn row_error(url: &str, line: usize, reason: impl std::fmt::Display) -> DataError {
    DataError::format(url, format!("row {line}: {reason}"))
}

fn parse_jsonl(url: &str, bytes: &[u8]) -> Result<Vec<Row>> {
    let text = std::str::from_utf8(bytes).map_err(|_| DataError::format(url, "not UTF-8 text"))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| row_error(url, i + 1, format!("not a JSON object ({e})")))?;
        let obj = v.as_object().ok_or_else(|| row_error(url, i + 1, "not a JSON object"))?;
        if let Some(k) = obj.keys().find(|k| !["uri", "label", "id"].contains(&k.as_str())) {
            return Err(row_error(url, i + 1, format!("unknown field '{k}': a manifest row has uri, and optionally label and id")));
        }
        let uri = match obj.get("uri") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(row_error(url, i + 1, "no \"uri\" string")),
        };
        let label = match obj.get("label") {
            None | Some(serde_json::Value::Null) => RawLabel::None,
            Some(serde_json::Value::String(s)) => RawLabel::Name(s.clone()),
            Some(serde_json::Value::Number(n)) if n.is_i64() => RawLabel::Index(n.as_i64().expect("i64")),
            Some(other) => return Err(row_error(url, i + 1, format!("label {other} is neither a class name nor an integer"))),
        };
        let id = match obj.get("id") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(other) => return Err(row_error(url, i + 1, format!("id {other} is neither a string nor a number"))),
        };
        rows.push(Row { uri, id, label });
    }
    Ok(rows)
}

fn parse_csv(url: &str, bytes: &[u8]) -> Result<Vec<Row>> {
    let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let headers = r.headers().map_err(|e| DataError::format(url, format!("cannot read the CSV header ({e})")))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let Some(uri_col) = col("uri") else {
        return Err(DataError::format(url, format!("no 'uri' column in the header ({}): the first line names the columns uri[,label][,id]", headers.iter().collect::<Vec<_>>().join(","))));
    };
    if let Some(h) = headers.iter().find(|h| !["uri", "label", "id"].contains(&h.trim())) {
        return Err(DataError::format(url, format!("unknown column '{h}': a manifest has uri, and optionally label and id")));
    }
    let (label_col, id_col) = (col("label"), col("id"));
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| row_error(url, i + 2, e))?;
        let uri = rec.get(uri_col).unwrap_or("").trim().to_string();
        if uri.is_empty() {
            return Err(row_error(url, i + 2, "empty uri"));
        }
        // A column of integers is indices; anything else is class names.
        let label = match label_col.and_then(|c| rec.get(c)).map(str::trim) {
            None | Some("") => RawLabel::None,
            Some(s) => s.parse::<i64>().map(RawLabel::Index).unwrap_or_else(|_| RawLabel::Name(s.to_string())),
        };
        let id = id_col.and_then(|c| rec.get(c)).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        rows.push(Row { uri, id, label });
    }
    // A label column mixing numbers and names is names ("1st", "2", ...): keep them as names.
    if rows.iter().any(|r| matches!(r.label, RawLabel::Name(_))) {
        for r in &mut rows {
            if let RawLabel::Index(i) = r.label {
                r.label = RawLabel::Name(i.to_string());
            }
        }
    }
    Ok(rows)
}

fn parse_parquet(url: &str, bytes: bytes::Bytes) -> Result<Vec<Row>> {
    use arrow_array::{Array, cast::AsArray, types::*};
    use arrow_schema::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let err = |e: &dyn std::fmt::Display| DataError::format(url, format!("not a readable Parquet file ({e})"));
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| err(&e))?.build().map_err(|e| err(&e))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| err(&e))?;
        let schema = batch.schema();
        if let Some(f) = schema.fields().iter().find(|f| !["uri", "label", "id"].contains(&f.name().as_str())) {
            return Err(DataError::format(url, format!("unknown column '{}': a manifest has uri, and optionally label and id", f.name())));
        }
        let strings = |name: &str| -> Result<Option<Vec<Option<String>>>> {
            let Some(col) = batch.column_by_name(name) else { return Ok(None) };
            let col = arrow_cast_to_strings(col.as_ref()).ok_or_else(|| {
                DataError::format(url, format!("column '{name}' has type {}: use a string (or integer) column", col.data_type()))
            })?;
            Ok(Some(col))
        };
        let uris = strings("uri")?.ok_or_else(|| DataError::format(url, "no 'uri' column"))?;
        let ids = strings("id")?;
        let labels: Option<Vec<RawLabel>> = match batch.column_by_name("label") {
            None => None,
            Some(col) => Some(match col.data_type() {
                DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => {
                    let c = arrow_cast::cast(col, &DataType::Int64).map_err(|e| err(&e))?;
                    let c = c.as_primitive::<Int64Type>();
                    (0..c.len()).map(|i| if c.is_null(i) { RawLabel::None } else { RawLabel::Index(c.value(i)) }).collect()
                }
                _ => arrow_cast_to_strings(col.as_ref())
                    .ok_or_else(|| DataError::format(url, format!("column 'label' has type {}: use strings or integers", col.data_type())))?
                    .into_iter()
                    .map(|s| s.map(RawLabel::Name).unwrap_or(RawLabel::None))
                    .collect(),
            }),
        };
        for (i, uri) in uris.into_iter().enumerate() {
            let Some(uri) = uri.filter(|u| !u.is_empty()) else {
                return Err(row_error(url, rows.len() + 1, "empty uri"));
            };
            rows.push(Row {
                uri,
                id: ids.as_ref().and_then(|v| v[i].clone()),
                label: labels.as_ref().map(|v| v[i].clone()).unwrap_or(RawLabel::None),
            });
        }
    }
    Ok(rows)
}

/// A string or integer column as optional strings.
fn arrow_cast_to_strings(col: &dyn arrow_array::Array) -> Option<Vec<Option<String>>> {
    use arrow_array::Array;
    use arrow_schema::DataType;
    let c = match col.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64 => {
            arrow_cast::cast(col, &DataType::Utf8).ok()?
        }
        _ => return None,
    };
    let s = c.as_any().downcast_ref::<arrow_array::StringArray>()?;
    Some((0..s.len()).map(|i| (!s.is_null(i)).then(|| s.value(i).to_string())).collect())
}

#[async_trait::async_trait]
impl Dataset for Manifest {
    fn spec(&self) -> &DatasetSpec {
        &self.spec
    }

    fn len(&self) -> u64 {
        self.uris.len() as u64
    }

    fn class_names(&self) -> Option<&[String]> {
        self.classes.as_deref()
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    async fn read(&self, range: Range<u64>) -> Result<Vec<Record>> {
        read_concurrently(range, self.len(), |i| async move {
            let uri = &self.uris[i as usize];
            let payload = match self.storage.locate(uri) {
                Err(e) => Payload::Bad(e.to_string()),
                Ok(loc) => fetch_encoded(&loc, || format!("{uri}: no such object (named in the manifest)")).await?,
            };
            let id = self.ids[i as usize].clone().unwrap_or_else(|| uri.clone());
            Ok(Record { index: i, id, label: self.labels[i as usize], payload })
        })
        .await
    }

    async fn labels(&self) -> Result<Option<Vec<Option<i64>>>> {
        Ok(self.classes.as_ref().map(|_| self.labels.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::open;
    use std::sync::Arc;

    async fn open_manifest(path: &std::path::Path) -> Result<Arc<dyn Dataset>> {
        let spec = DatasetSpec::parse(&format!("manifest:{}", path.display()), None).unwrap();
        open(&spec, &Storage::default()).await
    }

    fn setup() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("img")).unwrap();
        std::fs::write(d.path().join("img/a.png"), b"A").unwrap();
        std::fs::write(d.path().join("img/b.png"), b"B").unwrap();
        d
    }

    async fn check(ds: Arc<dyn Dataset>, abs_b: &str) {
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.class_names().unwrap(), ["cat", "dog"]);
        let r = ds.read(0..3).await.unwrap();
        assert_eq!((r[0].label, &r[0].payload, r[0].id.as_str()), (Some(1), &Payload::Encoded("A".into()), "first"));
        assert_eq!((r[1].label, &r[1].payload), (Some(0), &Payload::Encoded("B".into())));
        assert_eq!(r[1].id, abs_b);
        match &r[2].payload {
            Payload::Bad(why) => assert!(why.contains("missing.png") && why.contains("no such object"), "{why}"),
            p => panic!("{p:?}"),
        }
        assert_eq!(r[2].label, None);
    }

    #[tokio::test]
    async fn jsonl_csv_and_parquet_manifests_agree() {
        let d = setup();
        let abs_b = d.path().join("img/b.png").display().to_string();
        let jsonl = format!(
            "{{\"uri\": \"img/a.png\", \"label\": \"dog\", \"id\": \"first\"}}\n{{\"uri\": \"{abs_b}\", \"label\": \"cat\"}}\n\n{{\"uri\": \"img/missing.png\"}}\n"
        );
        std::fs::write(d.path().join("m.jsonl"), &jsonl).unwrap();
        check(open_manifest(&d.path().join("m.jsonl")).await.unwrap(), &abs_b).await;

        let csv = format!("uri,label,id\nimg/a.png,dog,first\n{abs_b},cat,\nimg/missing.png,,\n");
        std::fs::write(d.path().join("m.csv"), &csv).unwrap();
        check(open_manifest(&d.path().join("m.csv")).await.unwrap(), &abs_b).await;

        use arrow_array::{RecordBatch, StringArray};
        let batch = RecordBatch::try_from_iter([
            ("uri", Arc::new(StringArray::from(vec!["img/a.png", abs_b.as_str(), "img/missing.png"])) as arrow_array::ArrayRef),
            ("label", Arc::new(StringArray::from(vec![Some("dog"), Some("cat"), None])) as _),
            ("id", Arc::new(StringArray::from(vec![Some("first"), None, None])) as _),
        ])
        .unwrap();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        std::fs::write(d.path().join("m.parquet"), &buf).unwrap();
        check(open_manifest(&d.path().join("m.parquet")).await.unwrap(), &abs_b).await;
    }

    #[tokio::test]
    async fn integer_labels_and_bad_manifests() {
        let d = setup();
        std::fs::write(d.path().join("m.csv"), "uri,label\nimg/a.png,2\nimg/b.png,0\n").unwrap();
        let ds = open_manifest(&d.path().join("m.csv")).await.unwrap();
        assert_eq!(ds.class_names().unwrap(), ["0", "1", "2"]);
        assert_eq!(ds.labels().await.unwrap().unwrap(), vec![Some(2), Some(0)]);

        for (name, text, want) in [
            ("a.csv", "path,label\nimg/a.png,x\n", "no 'uri' column"),
            ("b.csv", "uri,labels\nimg/a.png,x\n", "unknown column 'labels'"),
            ("c.jsonl", "{\"uri\": \"img/a.png\"}\nnot json\n", "row 2"),
            ("d.jsonl", "{\"url\": \"img/a.png\"}\n", "unknown field 'url'"),
            ("e.jsonl", "{\"uri\": \"a\", \"label\": \"x\"}\n{\"uri\": \"b\", \"label\": 1}\n", "mixes class names and integers"),
            ("f.txt", "img/a.png\n", "*.jsonl, *.csv or *.parquet"),
            ("g.jsonl", "\n", "no rows"),
            ("h.parquet", "PAR1 not really", "not a readable Parquet file"),
        ] {
            std::fs::write(d.path().join(name), text).unwrap();
            let e = open_manifest(&d.path().join(name)).await.err().unwrap().to_string();
            assert!(e.contains(name) && e.contains(want), "{name}: {e}");
        }
    }
}
