//! `.npy` datasets: precomputed embeddings (float32 or float16, N x D) or raw pixels
//! (uint8, N x H x W or N x H x W x C).
//!
//! Labels, when present, are in a sibling `<stem>.labels.npy` (integers, one per row) and
//! class names in `<stem>.classes.txt` (one per line; without it, "0".."max label").
//! The array is read whole at open: an embedding matrix is what k-means holds in memory
//! anyway.

use crate::dataset::{Dataset, DatasetSpec, Fingerprint, Payload, Record, check_label, clamp, numbered_classes, read_names};
use crate::error::{DataError, Result};
use crate::npy;
use crate::storage::Location;
use std::ops::Range;
use std::path::Path;

enum Rows {
    Embeddings(npy::Matrix),
    Pixels(npy::Pixels),
}

pub struct NpyDataset {
    spec: DatasetSpec,
    rows: Rows,
    labels: Option<Vec<i64>>,
    classes: Option<Vec<String>>,
    notes: Vec<String>,
    fingerprint: String,
}

/// `x.npy` -> `x.<suffix>`, next to it.
fn sibling(loc: &Location, suffix: &str) -> Result<Location> {
    let name = loc.file_name();
    let Some(stem) = name.strip_suffix(".npy") else {
        return Err(DataError::invalid(loc.url(), "an npy dataset is a .npy file"));
    };
    Ok(loc.sibling(&format!("{stem}.{suffix}")))
}

impl NpyDataset {
    pub async fn open(spec: DatasetSpec, loc: Location) -> Result<Self> {
        let (bytes, meta) = loc.get_with_meta().await?;
        let name = Path::new(loc.url());
        let header = npy::parse_header(&bytes).map_err(|r| DataError::npy(name, r))?;
        let rows = if matches!(header.descr.as_str(), "|u1" | "<u1") {
            Rows::Pixels(npy::read_pixels_bytes(name, &bytes)?)
        } else {
            Rows::Embeddings(npy::read_matrix_f32_bytes(loc.url(), &bytes)?)
        };
        let n = match &rows {
            Rows::Embeddings(m) => m.rows,
            Rows::Pixels(p) => p.count,
        };
        let mut fp = Fingerprint::new(&spec);
        fp.add(loc.url(), &meta);
        let mut notes = Vec::new();
        let labels_loc = sibling(&loc, "labels.npy")?;
        let labels = match labels_loc.get_opt().await? {
            None => None,
            Some(b) => {
                fp.add_bytes(&b);
                let l = npy::read_labels_bytes(labels_loc.url(), &b)?;
                if l.len() != n {
                    return Err(DataError::format(
                        labels_loc.url(),
                        format!("{} labels for the {n} rows of {}: one label per row", l.len(), loc.url()),
                    ));
                }
                Some(l)
            }
        };
        let names_loc = sibling(&loc, "classes.txt")?;
        let names = read_names(&names_loc).await?;
        if let Some(names) = &names {
            fp.add_bytes(names.join("\n").as_bytes());
        }
        let classes = match (&labels, names) {
            (Some(_), Some(names)) => Some(names),
            (Some(l), None) => {
                let max = l.iter().copied().max().unwrap_or(0).max(0);
                notes.push(format!("no {}: classes are named 0..{max}", names_loc.url()));
                Some(numbered_classes(max as usize + 1))
            }
            (None, Some(_)) => {
                notes.push(format!("{} names classes but there is no {}: the rows are unlabelled", names_loc.url(), labels_loc.url()));
                None
            }
            (None, None) => None,
        };
        Ok(NpyDataset { spec, rows, labels, classes, notes, fingerprint: fp.finish() })
    }
}

#[async_trait::async_trait]
impl Dataset for NpyDataset {
    fn spec(&self) -> &DatasetSpec {
        &self.spec
    }

    fn len(&self) -> u64 {
        match &self.rows {
            Rows::Embeddings(m) => m.rows as u64,
            Rows::Pixels(p) => p.count as u64,
        }
    }

    fn class_names(&self) -> Option<&[String]> {
        self.classes.as_deref()
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    async fn read(&self, range: Range<u64>) -> Result<Vec<Record>> {
        let classes = self.classes.as_ref().map_or(0, Vec::len);
        Ok(clamp(range, self.len())
            .map(|i| {
                let label = self.labels.as_ref().map(|l| check_label(l[i as usize], classes));
                let payload = match (&label, &self.rows) {
                    (Some(Err(why)), _) => Payload::Bad(why.clone()),
                    (_, Rows::Embeddings(m)) => Payload::Embedding(m.row(i as usize).to_vec()),
                    (_, Rows::Pixels(p)) => Payload::Pixels {
                        width: p.width as u32,
                        height: p.height as u32,
                        channels: p.channels as u8,
                        data: p.image(i as usize).to_vec(),
                    },
                };
                Record { index: i, id: format!("{}[{i}]", self.spec.url), label: label.and_then(|l| l.ok()), payload }
            })
            .collect())
    }

    async fn labels(&self) -> Result<Option<Vec<Option<i64>>>> {
        let classes = self.classes.as_ref().map_or(0, Vec::len);
        Ok(self.labels.as_ref().map(|l| l.iter().map(|&x| check_label(x, classes).ok()).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::open;
    use crate::storage::Storage;

    async fn open_npy(p: &Path) -> Result<std::sync::Arc<dyn Dataset>> {
        open(&DatasetSpec::parse(&format!("npy:{}", p.display()), None).unwrap(), &Storage::default()).await
    }

    #[tokio::test]
    async fn embeddings_with_labels_and_names() {
        let d = tempfile::tempdir().unwrap();
        let x = d.path().join("emb.npy");
        npy::write_f32(&x, &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let ds = open_npy(&x).await.unwrap();
        assert_eq!((ds.len(), ds.class_names()), (3, None));
        assert_eq!(ds.read(1..2).await.unwrap()[0].payload, Payload::Embedding(vec![3.0, 4.0]));
        npy::write_i64(&d.path().join("emb.labels.npy"), &[3], &[1, 0, 7]).unwrap();
        let ds = open_npy(&x).await.unwrap();
        assert_eq!(ds.class_names().unwrap(), ["0", "1"].map(String::from).iter().chain(&["2", "3", "4", "5", "6", "7"].map(String::from)).cloned().collect::<Vec<_>>());
        assert!(ds.notes()[0].contains("emb.classes.txt"));
        std::fs::write(d.path().join("emb.classes.txt"), "cat\ndog\n").unwrap();
        let ds = open_npy(&x).await.unwrap();
        assert_eq!(ds.class_names().unwrap(), ["cat", "dog"]);
        let r = ds.read(0..3).await.unwrap();
        assert_eq!((r[0].label, r[1].label), (Some(1), Some(0)));
        match &r[2].payload {
            Payload::Bad(why) => assert!(why.contains("label 7 is out of range"), "{why}"),
            p => panic!("{p:?}"),
        }
        npy::write_i64(&d.path().join("emb.labels.npy"), &[2], &[1, 0]).unwrap();
        let e = open_npy(&x).await.err().unwrap().to_string();
        assert!(e.contains("emb.labels.npy") && e.contains("2 labels for the 3 rows"), "{e}");
    }

    #[tokio::test]
    async fn uint8_arrays_are_pixels() {
        let d = tempfile::tempdir().unwrap();
        let x = d.path().join("px.npy");
        let data: Vec<u8> = (0..2 * 2 * 3 * 3).map(|v| v as u8).collect();
        std::fs::write(&x, [npy::encode_header(&[2, 2, 3, 3], "|u1"), data.clone()].concat()).unwrap();
        let ds = open_npy(&x).await.unwrap();
        assert_eq!(
            ds.read(1..2).await.unwrap()[0].payload,
            Payload::Pixels { width: 3, height: 2, channels: 3, data: data[18..].to_vec() }
        );
    }
}
