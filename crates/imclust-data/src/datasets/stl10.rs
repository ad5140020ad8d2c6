//! STL-10, binary version (the unpacked `stl10_binary.tar.gz`).
//!
//! Files: `train_X.bin` / `train_y.bin`, `test_X.bin` / `test_y.bin`, `unlabeled_X.bin`,
//! optional `class_names.txt` (10 names; the standard names otherwise) and, for the
//! `train-fold-K` splits, `fold_indices.txt` (10 lines of 0-based indices into train).
//! An image is 3 channel planes of 96x96 bytes, each plane stored column-major (the files
//! were written from MATLAB); records are returned row-major HWC. Labels are bytes 1..10,
//! returned 0-based; any other byte makes that record [`Payload::Bad`].
//!
//! Splits: `train`, `test`, `unlabeled`, `all` (train then test: the labelled images) and
//! `train-fold-0` .. `train-fold-9`. The `unlabeled` split keeps the class names (the
//! images are of the same classes and a model may name its clusters with them) but its
//! records have no label and [`Dataset::labels`] returns `None`.
//!
//! The URL is the folder holding the files, or a folder holding `stl10_binary/`. The label
//! files (at most 8 KB) are read at open; images are read with range reads.

use crate::dataset::{check_label, clamp, local_span, read_names, Dataset, DatasetSpec, Fingerprint, Payload, Record};
use crate::error::{DataError, Result};
use crate::storage::Location;
use bytes::Bytes;
use std::ops::Range;

/// Side of an STL-10 image, in pixels.
pub const SIDE: usize = 96;
/// Bytes of one image (3 planes of 96x96).
pub const IMAGE_BYTES: usize = SIDE * SIDE * 3;

/// The STL-10 class names, in label order (as in `class_names.txt`).
pub const STL10_NAMES: [&str; 10] = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"];

/// Images per range request: about 7 MiB.
const CHUNK_RECORDS: u64 = 256;

const SUB: &str = "stl10_binary";
const LAYOUT: &str = "an STL-10 binary folder holds train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin \
    and optionally class_names.txt and fold_indices.txt; point the URL at it or at the folder containing stl10_binary/ \
    (where stl10_binary.tar.gz unpacks to)";

/// One images file of the split, or the part of it a fold selects.
struct Part {
    x: Location,
    /// File name of the images, for record ids.
    name: String,
    /// File name of the labels, for bad-record reasons.
    y_name: String,
    /// Index of its first record in the dataset.
    start: u64,
    /// The images of the file this split uses, in order; `None`: all of them.
    picks: Option<Vec<u64>>,
    count: u64,
    /// The label file's bytes (1-based labels), one per image of the file.
    labels: Option<Bytes>,
}

impl Part {
    /// Index in the images file of the part's `pos`-th record.
    fn file_index(&self, pos: u64) -> u64 {
        self.picks.as_ref().map_or(pos, |p| p[pos as usize])
    }
}

/// An STL-10 split.
pub struct Stl10 {
    spec: DatasetSpec,
    parts: Vec<Part>,
    len: u64,
    names: Vec<String>,
    fingerprint: String,
}

impl Stl10 {
    pub async fn open(spec: DatasetSpec, root: Location) -> Result<Self> {
        let split = spec.split()?.unwrap_or("train").to_string();
        // (file prefix, labelled, fold)
        let files: Vec<(&str, bool, Option<usize>)> = match split.as_str() {
            "train" => vec![("train", true, None)],
            "test" => vec![("test", true, None)],
            "unlabeled" => vec![("unlabeled", false, None)],
            "all" => vec![("train", true, None), ("test", true, None)],
            s => match s.strip_prefix("train-fold-").and_then(|k| k.parse::<usize>().ok()).filter(|k| *k < 10) {
                Some(k) => vec![("train", true, Some(k))],
                None => {
                    return Err(DataError::invalid(
                        format!("split '{s}'"),
                        "STL-10 splits are train, test, unlabeled, all and train-fold-0 .. train-fold-9",
                    ))
                }
            },
        };
        let first = format!("{}_X.bin", files[0].0);
        let base = if root.join(&first).head_opt().await?.is_none() && root.join(SUB).join(&first).head_opt().await?.is_some() {
            root.join(SUB)
        } else {
            root
        };
        let mut fp = Fingerprint::new(&spec);
        let mut parts = Vec::new();
        let mut len = 0;
        for (prefix, labelled, fold) in files {
            let name = format!("{prefix}_X.bin");
            let x = base.join(&name);
            let meta = head_required(&x).await?;
            if meta.size % IMAGE_BYTES as u64 != 0 {
                return Err(DataError::format(
                    x.url(),
                    format!(
                        "size {} bytes is not a multiple of the image size {IMAGE_BYTES} bytes (3x96x96): the file is \
                         truncated; re-download it",
                        meta.size
                    ),
                ));
            }
            fp.add(x.url(), &meta);
            let images = meta.size / IMAGE_BYTES as u64;
            let y_name = format!("{prefix}_y.bin");
            let labels = if labelled {
                let y = base.join(&y_name);
                let meta = head_required(&y).await?;
                let bytes = y.get().await?;
                if bytes.len() as u64 != images {
                    return Err(DataError::format(
                        y.url(),
                        format!(
                            "holds {} labels but {name} holds {images} images ({} bytes / {IMAGE_BYTES} bytes per image): \
                             one of them is truncated; re-download them",
                            bytes.len(),
                            meta.size
                        ),
                    ));
                }
                fp.add(y.url(), &meta);
                Some(bytes)
            } else {
                None
            };
            let picks = match fold {
                Some(k) => {
                    let folds = base.join("fold_indices.txt");
                    let meta = head_required(&folds).await?;
                    fp.add(folds.url(), &meta);
                    Some(fold_indices(&folds, &folds.get().await?, k, images)?)
                }
                None => None,
            };
            let count = picks.as_ref().map_or(images, |p| p.len() as u64);
            parts.push(Part { x, name, y_name, start: len, picks, count, labels });
            len += count;
        }
        let names_loc = base.join("class_names.txt");
        let names = match names_loc.head_opt().await? {
            Some(meta) => {
                let names = read_names(&names_loc).await?.unwrap_or_default();
                if names.len() != STL10_NAMES.len() {
                    return Err(DataError::format(
                        names_loc.url(),
                        format!("has {} names, expected 10 (one class name per line); fix or remove the file", names.len()),
                    ));
                }
                fp.add(names_loc.url(), &meta);
                names
            }
            None => STL10_NAMES.map(str::to_string).to_vec(),
        };
        Ok(Stl10 { spec, parts, len, names, fingerprint: fp.finish() })
    }

    /// The 0-based label of image `i` of `part`, or why it is bad; `None` when unlabelled.
    fn label(&self, part: &Part, i: u64) -> Option<std::result::Result<i64, String>> {
        let stored = *part.labels.as_ref()?.get(i as usize)?;
        Some(check_label(stored as i64 - 1, self.names.len()).map_err(|why| {
            format!("{why} ({} stores {stored}; STL-10 labels are stored 1..10)", part.y_name)
        }))
    }

    fn decode(&self, part: &Part, pos: u64, i: u64, raw: &[u8]) -> Record {
        let (index, id) = (part.start + pos, format!("{}[{i}]", part.name));
        let label = match self.label(part, i) {
            Some(Err(reason)) => return Record { index, id, label: None, payload: Payload::Bad(reason) },
            Some(Ok(l)) => Some(l),
            None => None,
        };
        let payload = Payload::Pixels { width: SIDE as u32, height: SIDE as u32, channels: 3, data: column_major_to_hwc(raw) };
        Record { index, id, label, payload }
    }
}

async fn head_required(loc: &Location) -> Result<crate::storage::ObjectMeta> {
    loc.head_opt().await?.ok_or_else(|| DataError::format(loc.url(), format!("missing: {LAYOUT}")))
}

/// Line `k` of `fold_indices.txt`: 0-based indices into the `images` train images.
fn fold_indices(loc: &Location, text: &[u8], k: usize, images: u64) -> Result<Vec<u64>> {
    let text = std::str::from_utf8(text).map_err(|_| DataError::format(loc.url(), "not UTF-8 text"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let Some(line) = lines.get(k) else {
        return Err(DataError::format(
            loc.url(),
            format!("has {} lines, expected 10 (one line of train indices per fold); re-download it", lines.len()),
        ));
    };
    line.split_whitespace()
        .map(|tok| match tok.parse::<u64>() {
            Ok(i) if i < images => Ok(i),
            Ok(i) => Err(DataError::format(
                loc.url(),
                format!("fold {k} (line {}): index {i} is out of range: train_X.bin has {images} images (indices are 0-based)", k + 1),
            )),
            Err(_) => Err(DataError::format(loc.url(), format!("fold {k} (line {}): '{tok}' is not an image index", k + 1))),
        })
        .collect()
}

/// Runs of consecutive file indices of `positions` of `part`, each at most
/// [`CHUNK_RECORDS`] long, as (first file index, length).
fn runs(part: &Part, positions: Range<u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for pos in positions {
        let i = part.file_index(pos);
        match out.last_mut() {
            Some((s, n)) if *s + *n == i && *n < CHUNK_RECORDS => *n += 1,
            _ => out.push((i, 1)),
        }
    }
    out
}

#[async_trait::async_trait]
impl Dataset for Stl10 {
    fn spec(&self) -> &DatasetSpec {
        &self.spec
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn class_names(&self) -> Option<&[String]> {
        Some(&self.names)
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    async fn read(&self, range: Range<u64>) -> Result<Vec<Record>> {
        let range = clamp(range, self.len);
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for part in &self.parts {
            let Some(positions) = local_span(&range, part.start, part.count) else { continue };
            let runs = runs(part, positions.clone());
            let ranges: Vec<Range<u64>> = runs.iter().map(|&(i, n)| i * IMAGE_BYTES as u64..(i + n) * IMAGE_BYTES as u64).collect();
            let mut pos = positions.start;
            for ((first, _), bytes) in runs.iter().zip(part.x.get_ranges(&ranges).await?) {
                for (j, raw) in bytes.chunks_exact(IMAGE_BYTES).enumerate() {
                    out.push(self.decode(part, pos, first + j as u64, raw));
                    pos += 1;
                }
            }
        }
        Ok(out)
    }

    /// From the label files read at open; `None` for the unlabeled split.
    async fn labels(&self) -> Result<Option<Vec<Option<i64>>>> {
        if self.parts.iter().all(|p| p.labels.is_none()) {
            return Ok(None);
        }
        let labels = self
            .parts
            .iter()
            .flat_map(|p| (0..p.count).map(move |pos| self.label(p, p.file_index(pos)).and_then(|l| l.ok())))
            .collect();
        Ok(Some(labels))
    }
}

/// Three 96x96 column-major planes to row-major interleaved RGB.
fn column_major_to_hwc(planes: &[u8]) -> Vec<u8> {
    let plane = SIDE * SIDE;
    let mut out = vec![0; IMAGE_BYTES];
    for r in 0..SIDE {
        for c in 0..SIDE {
            for ch in 0..3 {
                out[(r * SIDE + c) * 3 + ch] = planes[ch * plane + c * SIDE + r];
            }
        }
    }
    out
}

/// The bytes of an STL-10 `*_X.bin`: one 96x96x3 row-major HWC image per entry.
pub fn encode_images(images: &[&[u8]]) -> Result<Vec<u8>> {
    let plane = SIDE * SIDE;
    let mut out = vec![0; images.len() * IMAGE_BYTES];
    for (k, (hwc, dst)) in images.iter().zip(out.chunks_exact_mut(IMAGE_BYTES)).enumerate() {
        if hwc.len() != IMAGE_BYTES {
            return Err(DataError::invalid(
                format!("STL-10 image {k}"),
                format!("has {} bytes; an STL-10 image is 96x96 RGB, row-major HWC ({IMAGE_BYTES} bytes)", hwc.len()),
            ));
        }
        for r in 0..SIDE {
            for c in 0..SIDE {
                for ch in 0..3 {
                    dst[ch * plane + c * SIDE + r] = hwc[(r * SIDE + c) * 3 + ch];
                }
            }
        }
    }
    Ok(out)
}

/// The bytes of an STL-10 `*_y.bin` from 0-based labels (stored 1-based).
pub fn encode_labels(labels: &[u8]) -> Result<Vec<u8>> {
    labels
        .iter()
        .enumerate()
        .map(|(k, &l)| {
            l.checked_add(1).ok_or_else(|| {
                DataError::invalid(format!("STL-10 label {k}"), format!("{l} cannot be stored 1-based in a byte"))
            })
        })
        .collect()
}

/// The text of `fold_indices.txt`: one line of 0-based train indices per fold.
pub fn encode_fold_indices(folds: &[&[u64]]) -> String {
    folds
        .iter()
        .map(|f| f.iter().map(u64::to_string).collect::<Vec<_>>().join(" ") + "\n")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::open;
    use crate::storage::Storage;
    use std::path::Path;
    use std::sync::Arc;

    /// A 96x96 RGB image that differs from its transpose: (r, c) != (c, r) when r != c.
    fn image(seed: u8) -> Vec<u8> {
        let mut v = vec![0; IMAGE_BYTES];
        for r in 0..SIDE {
            for c in 0..SIDE {
                for ch in 0..3 {
                    v[(r * SIDE + c) * 3 + ch] = (r * 3 + c * 5 + ch * 11 + seed as usize * 17) as u8;
                }
            }
        }
        v
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn write_images(dir: &Path, name: &str, seeds: Range<u8>) {
        let imgs: Vec<Vec<u8>> = seeds.map(image).collect();
        write(dir, name, &encode_images(&imgs.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap());
    }

    /// train: images 0..4 labels 0, 9, 4, 1; test: images 4..6 labels 2, 3; unlabeled: 6..8.
    fn fixture(dir: &Path, sub: &str) {
        write_images(dir, &format!("{sub}train_X.bin"), 0..4);
        write(dir, &format!("{sub}train_y.bin"), &encode_labels(&[0, 9, 4, 1]).unwrap());
        write_images(dir, &format!("{sub}test_X.bin"), 4..6);
        write(dir, &format!("{sub}test_y.bin"), &encode_labels(&[2, 3]).unwrap());
        write_images(dir, &format!("{sub}unlabeled_X.bin"), 6..8);
    }

    async fn open_stl(dir: &Path, split: &str) -> Result<Arc<dyn Dataset>> {
        open(&DatasetSpec::parse(&format!("stl10:{}", dir.display()), Some(split))?, &Storage::default()).await
    }

    fn pixels(r: &Record) -> &[u8] {
        match &r.payload {
            Payload::Pixels { width: 96, height: 96, channels: 3, data } => data,
            other => panic!("{}: not 96x96x3 pixels: {other:?}", r.id),
        }
    }

    #[tokio::test]
    async fn stl10_round_trips_every_split() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), "");
        let train = open_stl(dir.path(), "train").await.unwrap();
        assert_eq!(train.class_names().unwrap(), STL10_NAMES.map(str::to_string));
        let recs = train.read(0..10).await.unwrap();
        assert_eq!(recs.iter().map(|r| r.label).collect::<Vec<_>>(), [Some(0), Some(9), Some(4), Some(1)]);
        for (k, r) in recs.iter().enumerate() {
            assert_eq!((r.index, r.id.clone()), (k as u64, format!("train_X.bin[{k}]")));
            assert_eq!(pixels(r), &image(k as u8)[..], "record {k}");
        }
        assert_eq!(train.read(1..3).await.unwrap(), recs[1..3].to_vec());
        assert_eq!(train.labels().await.unwrap().unwrap(), [Some(0), Some(9), Some(4), Some(1)]);

        // all = train then test; unlabeled images are not part of it.
        let all = open_stl(dir.path(), "all").await.unwrap();
        assert_eq!(all.len(), 6);
        let all_recs = all.read(0..6).await.unwrap();
        assert_eq!(all_recs[..4], recs[..]);
        assert_eq!((all_recs[4].index, all_recs[4].id.as_str(), all_recs[4].label), (4, "test_X.bin[0]", Some(2)));
        assert_eq!(pixels(&all_recs[5]), &image(5)[..]);
        assert_eq!(all.read(3..5).await.unwrap(), all_recs[3..5].to_vec());
        assert_eq!(all.labels().await.unwrap().unwrap(), [Some(0), Some(9), Some(4), Some(1), Some(2), Some(3)]);

        // unlabeled: class names kept, no labels.
        let un = open_stl(dir.path(), "unlabeled").await.unwrap();
        assert!(un.class_names().is_some());
        assert_eq!(un.labels().await.unwrap(), None);
        let un_recs = un.read(0..2).await.unwrap();
        assert_eq!((un_recs[1].id.as_str(), un_recs[1].label), ("unlabeled_X.bin[1]", None));
        assert_eq!(pixels(&un_recs[1]), &image(7)[..]);
    }

    #[test]
    fn stl10_planes_are_column_major() {
        // Built by hand: channel 0 at (row 0, col 1), channel 2 at (row 5, col 0).
        let mut raw = vec![0u8; IMAGE_BYTES];
        raw[96] = 10;
        raw[2 * 9216 + 5] = 30;
        let hwc = column_major_to_hwc(&raw);
        assert_eq!((hwc[3], hwc[(5 * 96) * 3 + 2]), (10, 30));
        assert_eq!(hwc.iter().filter(|v| **v != 0).count(), 2);
        assert_eq!(encode_images(&[&hwc]).unwrap(), raw);
        let e = encode_images(&[&hwc[1..]]).unwrap_err().to_string();
        assert!(e.contains("27647 bytes"), "{e}");
        assert!(encode_labels(&[255]).is_err());
    }

    #[tokio::test]
    async fn stl10_bad_labels_are_bad_records() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), "stl10_binary/");
        write_images(dir.path(), "stl10_binary/test_X.bin", 0..3);
        write(dir.path(), "stl10_binary/test_y.bin", &[0, 11, 10]);
        let test = open_stl(dir.path(), "test").await.unwrap();
        let recs = test.read(0..3).await.unwrap();
        assert_eq!(recs.iter().map(|r| r.label).collect::<Vec<_>>(), [None, None, Some(9)]);
        for (r, stored) in recs.iter().zip(["stores 0", "stores 11"]) {
            match &r.payload {
                Payload::Bad(why) => assert!(why.contains("out of range") && why.contains(stored) && why.contains("test_y.bin"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(test.labels().await.unwrap().unwrap(), [None, None, Some(9)]);
    }

    #[tokio::test]
    async fn stl10_folds_pick_train_images() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), "");
        let folds: Vec<Vec<u64>> = (0..10).map(|k| vec![(k % 4) as u64, 3, 0, 1]).collect();
        let mut lines: Vec<&[u64]> = folds.iter().map(Vec::as_slice).collect();
        lines[2] = &[2, 0, 1, 3];
        write(dir.path(), "fold_indices.txt", encode_fold_indices(&lines).as_bytes());
        let train = open_stl(dir.path(), "train").await.unwrap().read(0..4).await.unwrap();
        let fold = open_stl(dir.path(), "train-fold-2").await.unwrap();
        assert_eq!(fold.len(), 4);
        let recs = fold.read(0..4).await.unwrap();
        for (pos, (r, i)) in recs.iter().zip([2, 0, 1, 3]).enumerate() {
            assert_eq!((r.index, &r.id, &r.payload, r.label), (pos as u64, &train[i].id, &train[i].payload, train[i].label));
        }
        assert_eq!(fold.read(1..3).await.unwrap(), recs[1..3].to_vec());
        assert_eq!(fold.labels().await.unwrap().unwrap(), [Some(4), Some(0), Some(9), Some(1)]);
        let other = open_stl(dir.path(), "train-fold-3").await.unwrap();
        assert_ne!(other.fingerprint(), fold.fingerprint());

        write(dir.path(), "fold_indices.txt", b"0 1\n0 4\n");
        let e = open_stl(dir.path(), "train-fold-1").await.err().unwrap().to_string();
        assert!(e.contains("fold_indices.txt") && e.contains("index 4 is out of range") && e.contains("4 images"), "{e}");
        let e = open_stl(dir.path(), "train-fold-5").await.err().unwrap().to_string();
        assert!(e.contains("fold_indices.txt") && e.contains("has 2 lines, expected 10"), "{e}");
        std::fs::remove_file(dir.path().join("fold_indices.txt")).unwrap();
        let e = open_stl(dir.path(), "train-fold-0").await.err().unwrap().to_string();
        assert!(e.contains("fold_indices.txt: missing"), "{e}");
        let e = open_stl(dir.path(), "train-fold-10").await.err().unwrap().to_string();
        assert!(e.contains("train-fold-9"), "{e}");
    }

    #[tokio::test]
    async fn stl10_class_names_and_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), "");
        let fp = open_stl(dir.path(), "test").await.unwrap().fingerprint().to_string();
        assert_eq!(open_stl(dir.path(), "test").await.unwrap().fingerprint(), fp);
        let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        write(dir.path(), "class_names.txt", names.join("\n").as_bytes());
        let ds = open_stl(dir.path(), "test").await.unwrap();
        assert_eq!(ds.class_names().unwrap(), names);
        assert_ne!(ds.fingerprint(), fp);
        let fp = ds.fingerprint().to_string();
        // Same size, new content: the version (modification time) changes the fingerprint.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(dir.path(), "test_y.bin", &encode_labels(&[2, 5]).unwrap());
        assert_ne!(open_stl(dir.path(), "test").await.unwrap().fingerprint(), fp);
        write(dir.path(), "class_names.txt", b"one\ntwo\n");
        let e = open_stl(dir.path(), "test").await.err().unwrap().to_string();
        assert!(e.contains("class_names.txt") && e.contains("has 2 names, expected 10"), "{e}");
    }

    #[tokio::test]
    async fn stl10_truncated_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), "");
        let x = std::fs::read(dir.path().join("train_X.bin")).unwrap();
        write(dir.path(), "train_X.bin", &x[..x.len() - 1]);
        let e = open_stl(dir.path(), "train").await.err().unwrap().to_string();
        assert!(e.contains("train_X.bin") && e.contains(&format!("size {} bytes", x.len() - 1)) && e.contains("27648") && e.contains("re-download"), "{e}");
        write(dir.path(), "train_X.bin", &x[..IMAGE_BYTES * 3]);
        let e = open_stl(dir.path(), "train").await.err().unwrap().to_string();
        assert!(e.contains("train_y.bin") && e.contains("holds 4 labels but train_X.bin holds 3 images") && e.contains("truncated"), "{e}");
        write(dir.path(), "train_X.bin", &x);
        std::fs::remove_file(dir.path().join("test_X.bin")).unwrap();
        let e = open_stl(dir.path(), "all").await.err().unwrap().to_string();
        assert!(e.contains("test_X.bin: missing") && e.contains("stl10_binary/"), "{e}");
        // The unlabeled split needs no label file.
        open_stl(dir.path(), "unlabeled").await.unwrap();
    }
}
