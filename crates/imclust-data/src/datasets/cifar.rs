//! CIFAR-10 and CIFAR-100, binary versions (the unpacked `cifar-10-binary.tar.gz` and
//! `cifar-100-binary.tar.gz`).
//!
//! CIFAR-10: `data_batch_1.bin` .. `data_batch_5.bin` (split `train`) and `test_batch.bin`
//! (split `test`); a record is 1 label byte and 3072 pixel bytes. Class names come from
//! `batches.meta.txt` (one per line), or are the 10 standard names when it is absent.
//!
//! CIFAR-100: `train.bin` and `test.bin`; a record is a coarse label byte, a fine label byte
//! and 3072 pixel bytes. `labels = "fine"` (the default) uses the fine labels and
//! `fine_label_names.txt`; `labels = "coarse"` the coarse ones and `coarse_label_names.txt`.
//! The names files are optional: without one the classes are named `class_00` .. `class_99`
//! (or `class_19`), and [`Dataset::notes`] says so.
//!
//! Pixels are stored as three planes (R, G, B), each 32x32 row-major; records are returned
//! row-major HWC. Split `all` is train then test. The URL is the folder holding the files,
//! or a folder holding `cifar-10-batches-bin/` or `cifar-100-binary/` (where the tarballs
//! unpack to). Records have a fixed size, so they are read with range reads: opening a
//! dataset reads only object sizes and the names file.

use crate::dataset::{check_label, clamp, local_span, read_names, Dataset, DatasetSpec, Fingerprint, Kind, Payload, Record};
use crate::error::{DataError, Result};
use crate::storage::Location;
use bytes::Bytes;
use std::ops::Range;

/// Side of a CIFAR image, in pixels.
pub const SIDE: usize = 32;
/// Pixel bytes of one record (3 planes of 32x32).
pub const PIXEL_BYTES: usize = SIDE * SIDE * 3;

/// The CIFAR-10 class names, in label order (as in `batches.meta.txt`).
pub const CIFAR10_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Records per range request: about 3 MiB, so a large read becomes a few concurrent requests.
const CHUNK_RECORDS: u64 = 1024;

/// The files of one CIFAR variant.
struct Layout {
    /// The folder the tarball unpacks to.
    sub: &'static str,
    tarball: &'static str,
    train: &'static [&'static str],
    test: &'static [&'static str],
    /// Label bytes before the pixels of each record.
    label_bytes: usize,
}

const CIFAR10: Layout = Layout {
    sub: "cifar-10-batches-bin",
    tarball: "cifar-10-binary.tar.gz",
    train: &["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"],
    test: &["test_batch.bin"],
    label_bytes: 1,
};

const CIFAR100: Layout = Layout {
    sub: "cifar-100-binary",
    tarball: "cifar-100-binary.tar.gz",
    train: &["train.bin"],
    test: &["test.bin"],
    label_bytes: 2,
};

impl Layout {
    fn record_size(&self) -> u64 {
        (self.label_bytes + PIXEL_BYTES) as u64
    }

    fn describe(&self) -> String {
        format!(
            "expected the files {} (train) and {} (test) in the URL's folder or in its sub-folder {}/ (where {} unpacks to)",
            self.train.join(", "),
            self.test.join(", "),
            self.sub,
            self.tarball
        )
    }
}

/// One `.bin` file of the split.
struct Part {
    loc: Location,
    name: String,
    /// Index of its first record in the dataset.
    start: u64,
    count: u64,
}

/// A CIFAR-10 or CIFAR-100 split.
pub struct Cifar {
    spec: DatasetSpec,
    parts: Vec<Part>,
    len: u64,
    record_size: u64,
    label_bytes: usize,
    /// Which label byte is used (CIFAR-100: 0 coarse, 1 fine).
    label_byte: usize,
    names: Vec<String>,
    notes: Vec<String>,
    fingerprint: String,
}

impl Cifar {
    pub async fn open(spec: DatasetSpec, root: Location) -> Result<Self> {
        let (layout, label_byte, names_file, classes) = match (spec.kind, spec.labels.as_deref()) {
            (Kind::Cifar10, None) => (&CIFAR10, 0, "batches.meta.txt", 10),
            (Kind::Cifar100, None | Some("fine")) => (&CIFAR100, 1, "fine_label_names.txt", 100),
            (Kind::Cifar100, Some("coarse")) => (&CIFAR100, 0, "coarse_label_names.txt", 20),
            (Kind::Cifar100, Some(other)) => {
                return Err(DataError::invalid(
                    format!("labels = '{other}'"),
                    "cifar100 labels are 'fine' (100 classes, the default) or 'coarse' (20 superclasses)",
                ))
            }
            (kind, _) => {
                return Err(DataError::invalid(
                    spec.to_string(),
                    format!("a {} dataset cannot be opened as CIFAR (only cifar10 and cifar100 without a labels choice for cifar10)", kind.name()),
                ))
            }
        };
        let files: Vec<&str> = match spec.split()? {
            Some("train") => layout.train.to_vec(),
            Some("test") => layout.test.to_vec(),
            Some("all") => layout.train.iter().chain(layout.test).copied().collect(),
            other => {
                return Err(DataError::invalid(
                    format!("split '{}'", other.unwrap_or("")),
                    "CIFAR datasets have the splits train, test, all",
                ))
            }
        };
        let base = find_base(&root, layout.sub, files[0]).await?;
        let record_size = layout.record_size();
        let mut fp = Fingerprint::new(&spec);
        let mut parts = Vec::with_capacity(files.len());
        let mut len = 0;
        for name in files {
            let loc = base.join(name);
            let Some(meta) = loc.head_opt().await? else {
                return Err(DataError::format(loc.url(), format!("missing: {}", layout.describe())));
            };
            if meta.size % record_size != 0 {
                return Err(DataError::format(
                    loc.url(),
                    format!(
                        "size {} bytes is not a multiple of the record size {record_size} bytes: the file is truncated or \
                         not a {} binary batch; re-download it",
                        meta.size,
                        spec.kind.name()
                    ),
                ));
            }
            fp.add(loc.url(), &meta);
            let count = meta.size / record_size;
            parts.push(Part { loc, name: name.to_string(), start: len, count });
            len += count;
        }
        let names_loc = base.join(names_file);
        let mut notes = Vec::new();
        let names = match names_loc.head_opt().await? {
            Some(meta) => {
                let names = read_names(&names_loc).await?.unwrap_or_default();
                if names.len() != classes {
                    return Err(DataError::format(
                        names_loc.url(),
                        format!("has {} names, expected {classes} (one class name per line); fix or remove the file", names.len()),
                    ));
                }
                fp.add(names_loc.url(), &meta);
                names
            }
            None if spec.kind == Kind::Cifar10 => CIFAR10_NAMES.map(str::to_string).to_vec(),
            None => {
                notes.push(format!("{} not found: classes are named class_00 .. class_{:02}", names_loc.url(), classes - 1));
                (0..classes).map(|i| format!("class_{i:02}")).collect()
            }
        };
        Ok(Cifar {
            spec,
            parts,
            len,
            record_size,
            label_bytes: layout.label_bytes,
            label_byte,
            names,
            notes,
            fingerprint: fp.finish(),
        })
    }

    /// The label of a raw record, or why it is bad.
    fn label(&self, raw: &[u8]) -> std::result::Result<i64, String> {
        check_label(raw[self.label_byte] as i64, self.names.len())
    }

    fn decode(&self, part: &Part, local: u64, raw: &[u8]) -> Record {
        let id = format!("{}[{local}]", part.name);
        let index = part.start + local;
        match self.label(raw) {
            Ok(label) => Record {
                index,
                id,
                label: Some(label),
                payload: Payload::Pixels {
                    width: SIDE as u32,
                    height: SIDE as u32,
                    channels: 3,
                    data: planar_to_hwc(&raw[self.label_bytes..]),
                },
            },
            Err(reason) => Record { index, id, label: None, payload: Payload::Bad(reason) },
        }
    }

    /// The parts overlapping `range` (clamped), each with its local record range.
    fn spans(&self, range: Range<u64>) -> impl Iterator<Item = (&Part, Range<u64>)> {
        let range = clamp(range, self.len);
        self.parts.iter().filter_map(move |p| local_span(&range, p.start, p.count).map(|local| (p, local)))
    }
}

/// `root` itself when it holds `first`, else its sub-folder `sub` when that does; `root`
/// when neither does (the caller then reports the missing file).
async fn find_base(root: &Location, sub: &str, first: &str) -> Result<Location> {
    if root.join(first).head_opt().await?.is_some() {
        return Ok(root.clone());
    }
    let nested = root.join(sub);
    if nested.join(first).head_opt().await?.is_some() {
        return Ok(nested);
    }
    Ok(root.clone())
}

/// Records `records` of a file of fixed-size records, in chunks read concurrently.
async fn read_records(loc: &Location, records: Range<u64>, record_size: u64) -> Result<Vec<Bytes>> {
    let ranges: Vec<Range<u64>> = (records.start..records.end)
        .step_by(CHUNK_RECORDS as usize)
        .map(|s| s * record_size..(s + CHUNK_RECORDS).min(records.end) * record_size)
        .collect();
    loc.get_ranges(&ranges).await
}

#[async_trait::async_trait]
impl Dataset for Cifar {
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

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    async fn read(&self, range: Range<u64>) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(clamp(range.clone(), self.len).count());
        for (part, local) in self.spans(range) {
            let mut i = local.start;
            for chunk in read_records(&part.loc, local, self.record_size).await? {
                for raw in chunk.chunks_exact(self.record_size as usize) {
                    out.push(self.decode(part, i, raw));
                    i += 1;
                }
            }
        }
        Ok(out)
    }

    /// Labels are interleaved with the pixels, so every byte is still read, but in large
    /// windows and without decoding any image.
    async fn labels(&self) -> Result<Option<Vec<Option<i64>>>> {
        let window = CHUNK_RECORDS * 16;
        let mut out = Vec::with_capacity(self.len as usize);
        for part in &self.parts {
            for s in (0..part.count).step_by(window as usize) {
                for chunk in read_records(&part.loc, s..(s + window).min(part.count), self.record_size).await? {
                    out.extend(chunk.chunks_exact(self.record_size as usize).map(|raw| self.label(raw).ok()));
                }
            }
        }
        Ok(Some(out))
    }
}

/// Three 32x32 row-major planes (R, G, B) to row-major interleaved RGB.
fn planar_to_hwc(planes: &[u8]) -> Vec<u8> {
    let plane = SIDE * SIDE;
    let mut out = vec![0; PIXEL_BYTES];
    for (p, px) in out.chunks_exact_mut(3).enumerate() {
        for (c, v) in px.iter_mut().enumerate() {
            *v = planes[c * plane + p];
        }
    }
    out
}

/// Row-major interleaved RGB to three planes, appended to `out`.
fn hwc_to_planar(hwc: &[u8], out: &mut Vec<u8>) {
    for c in 0..3 {
        out.extend(hwc.iter().skip(c).step_by(3));
    }
}

fn check_pixels(i: usize, hwc: &[u8]) -> Result<()> {
    if hwc.len() != PIXEL_BYTES {
        return Err(DataError::invalid(
            format!("CIFAR record {i}"),
            format!("has {} pixel bytes; a CIFAR image is 32x32 RGB, row-major HWC ({PIXEL_BYTES} bytes)", hwc.len()),
        ));
    }
    Ok(())
}

/// The bytes of a CIFAR-10 batch file: `(label, 32x32x3 row-major HWC pixels)` per record.
pub fn encode_cifar10(records: &[(u8, &[u8])]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(records.len() * (1 + PIXEL_BYTES));
    for (i, (label, hwc)) in records.iter().enumerate() {
        check_pixels(i, hwc)?;
        out.push(*label);
        hwc_to_planar(hwc, &mut out);
    }
    Ok(out)
}

/// The bytes of a CIFAR-100 `train.bin` / `test.bin`: `(coarse label, fine label, 32x32x3
/// row-major HWC pixels)` per record.
pub fn encode_cifar100(records: &[(u8, u8, &[u8])]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(records.len() * (2 + PIXEL_BYTES));
    for (i, (coarse, fine, hwc)) in records.iter().enumerate() {
        check_pixels(i, hwc)?;
        out.extend([*coarse, *fine]);
        hwc_to_planar(hwc, &mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::open;
    use crate::storage::Storage;
    use std::path::Path;
    use std::sync::Arc;

    /// A 32x32 RGB image with no symmetry: every pixel and channel differ, per `seed`.
    fn image(seed: u8) -> Vec<u8> {
        (0..PIXEL_BYTES).map(|i| ((i * 7 + i / 96 * 3) as u8).wrapping_add(seed.wrapping_mul(31))).collect()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    /// Record counts of the CIFAR-10 fixture: five train batches, then the test batch.
    const COUNTS: [usize; 6] = [3, 2, 4, 1, 2, 3];

    /// A CIFAR-10 fixture in `dir/sub`: record k (in `all` order) has label k % 10 and
    /// pixels `image(k)`.
    fn cifar10_fixture(dir: &Path, sub: &str) {
        let mut k = 0u8;
        for (f, n) in CIFAR10.train.iter().chain(CIFAR10.test).zip(COUNTS) {
            let imgs: Vec<Vec<u8>> = (k..k + n as u8).map(image).collect();
            let recs: Vec<(u8, &[u8])> = imgs.iter().enumerate().map(|(j, im)| ((k + j as u8) % 10, &im[..])).collect();
            write(dir, &format!("{sub}{f}"), &encode_cifar10(&recs).unwrap());
            k += n as u8;
        }
    }

    async fn open_cifar(kind: &str, dir: &Path, split: &str, labels: Option<&str>) -> Result<Arc<dyn Dataset>> {
        let mut spec = DatasetSpec::parse(&format!("{kind}:{}", dir.display()), Some(split))?;
        spec.labels = labels.map(str::to_string);
        open(&spec, &Storage::default()).await
    }

    fn pixels(r: &Record) -> &[u8] {
        match &r.payload {
            Payload::Pixels { width: 32, height: 32, channels: 3, data } => data,
            other => panic!("{}: not 32x32x3 pixels: {other:?}", r.id),
        }
    }

    #[tokio::test]
    async fn cifar10_round_trips_every_split() {
        let dir = tempfile::tempdir().unwrap();
        cifar10_fixture(dir.path(), "");
        let train = open_cifar("cifar10", dir.path(), "train", None).await.unwrap();
        assert_eq!(train.len(), 12);
        assert_eq!(train.class_names().unwrap(), CIFAR10_NAMES.map(str::to_string));
        assert!(train.notes().is_empty());
        let recs = train.read(0..100).await.unwrap();
        assert_eq!(recs.len(), 12);
        for (k, r) in recs.iter().enumerate() {
            assert_eq!((r.index, r.label), (k as u64, Some(k as i64 % 10)));
            assert_eq!(pixels(r), &image(k as u8)[..], "record {k}");
        }
        let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(&ids[..6], ["data_batch_1.bin[0]", "data_batch_1.bin[1]", "data_batch_1.bin[2]", "data_batch_2.bin[0]", "data_batch_2.bin[1]", "data_batch_3.bin[0]"]);
        // A read in the middle, across batch files, equals the same slice of a full read.
        assert_eq!(train.read(2..9).await.unwrap(), recs[2..9].to_vec());
        assert_eq!(train.read(11..20).await.unwrap(), recs[11..].to_vec());
        assert!(train.read(12..20).await.unwrap().is_empty());
        assert_eq!(train.labels().await.unwrap().unwrap(), recs.iter().map(|r| r.label).collect::<Vec<_>>());

        let test = open_cifar("cifar10", dir.path(), "test", None).await.unwrap();
        let test_recs = test.read(0..3).await.unwrap();
        assert_eq!(test_recs[1].id, "test_batch.bin[1]");
        assert_eq!(pixels(&test_recs[1]), &image(13)[..]);

        // all = train then test, indices renumbered.
        let all = open_cifar("cifar10", dir.path(), "all", None).await.unwrap();
        let all_recs = all.read(0..all.len()).await.unwrap();
        assert_eq!(all_recs.len(), 15);
        assert_eq!(all_recs[..12].iter().map(|r| (&r.id, &r.payload)).collect::<Vec<_>>(), recs.iter().map(|r| (&r.id, &r.payload)).collect::<Vec<_>>());
        assert_eq!((all_recs[12].index, all_recs[12].id.as_str()), (12, "test_batch.bin[0]"));
        assert_eq!(all.read(10..14).await.unwrap(), all_recs[10..14].to_vec());
        assert!([train.fingerprint(), test.fingerprint()].iter().all(|f| *f != all.fingerprint()));
    }

    #[tokio::test]
    async fn cifar_planes_become_interleaved_pixels() {
        // Built by hand, not by the encoder: R at (row 0, col 1), G at (1, 0), B at (31, 31).
        let mut raw = vec![0u8; 1 + PIXEL_BYTES];
        raw[1 + 1] = 10;
        raw[1 + 1024 + 32] = 20;
        raw[1 + 2048 + 31 * 32 + 31] = 30;
        let mut want = vec![0u8; PIXEL_BYTES];
        want[3] = 10; // pixel 1, channel 0
        want[32 * 3 + 1] = 20; // pixel 32, channel 1
        want[(31 * 32 + 31) * 3 + 2] = 30;
        assert_eq!(planar_to_hwc(&raw[1..]), want);
        assert_eq!(encode_cifar10(&[(0, &want)]).unwrap(), raw);
        let e = encode_cifar10(&[(0, &want[1..])]).unwrap_err().to_string();
        assert!(e.contains("3071 pixel bytes"), "{e}");
    }

    #[tokio::test]
    async fn cifar10_finds_the_tarball_folder_and_reads_class_names() {
        let dir = tempfile::tempdir().unwrap();
        cifar10_fixture(dir.path(), "cifar-10-batches-bin/");
        let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        write(dir.path(), "cifar-10-batches-bin/batches.meta.txt", format!("{}\n\n", names.join("\n")).as_bytes());
        let ds = open_cifar("cifar10", dir.path(), "test", None).await.unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.class_names().unwrap(), names);
        let fp = ds.fingerprint().to_string();
        // The names file is part of the fingerprint; a wrong number of names is an error.
        write(dir.path(), "cifar-10-batches-bin/batches.meta.txt", b"a\nb\n");
        let e = open_cifar("cifar10", dir.path(), "test", None).await.err().unwrap().to_string();
        assert!(e.contains("batches.meta.txt") && e.contains("has 2 names, expected 10"), "{e}");
        std::fs::remove_file(dir.path().join("cifar-10-batches-bin/batches.meta.txt")).unwrap();
        let ds = open_cifar("cifar10", dir.path(), "test", None).await.unwrap();
        assert_ne!(ds.fingerprint(), fp);
        assert_eq!(ds.class_names().unwrap()[0], "airplane");
    }

    #[tokio::test]
    async fn cifar10_out_of_range_labels_are_bad_records() {
        let dir = tempfile::tempdir().unwrap();
        cifar10_fixture(dir.path(), "");
        let (a, b) = (image(1), image(2));
        write(dir.path(), "test_batch.bin", &encode_cifar10(&[(3, &a), (10, &b), (9, &a)]).unwrap());
        let ds = open_cifar("cifar10", dir.path(), "test", None).await.unwrap();
        let recs = ds.read(0..3).await.unwrap();
        assert_eq!(recs.iter().map(|r| r.label).collect::<Vec<_>>(), [Some(3), None, Some(9)]);
        match &recs[1].payload {
            Payload::Bad(why) => assert!(why.contains("label 10 is out of range"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(ds.labels().await.unwrap().unwrap(), [Some(3), None, Some(9)]);
    }

    #[tokio::test]
    async fn cifar10_fingerprint_follows_the_files() {
        let dir = tempfile::tempdir().unwrap();
        cifar10_fixture(dir.path(), "");
        let fp = open_cifar("cifar10", dir.path(), "test", None).await.unwrap().fingerprint().to_string();
        assert_eq!(open_cifar("cifar10", dir.path(), "test", None).await.unwrap().fingerprint(), fp);
        let a = image(0);
        write(dir.path(), "test_batch.bin", &encode_cifar10(&[(1, &a)]).unwrap());
        assert_ne!(open_cifar("cifar10", dir.path(), "test", None).await.unwrap().fingerprint(), fp);
    }

    #[tokio::test]
    async fn cifar10_missing_and_truncated_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        cifar10_fixture(dir.path(), "");
        std::fs::remove_file(dir.path().join("data_batch_3.bin")).unwrap();
        // The test split does not need the train batches.
        open_cifar("cifar10", dir.path(), "test", None).await.unwrap();
        for split in ["train", "all"] {
            let e = open_cifar("cifar10", dir.path(), split, None).await.err().unwrap().to_string();
            assert!(e.contains("data_batch_3.bin: missing") && e.contains("cifar-10-batches-bin/"), "{e}");
        }
        let e = open_cifar("cifar10", &dir.path().join("nowhere"), "test", None).await.err().unwrap().to_string();
        assert!(e.contains("nowhere/test_batch.bin: missing") && e.contains("data_batch_1.bin"), "{e}");
        let bytes = std::fs::read(dir.path().join("test_batch.bin")).unwrap();
        write(dir.path(), "test_batch.bin", &bytes[..bytes.len() - 100]);
        let e = open_cifar("cifar10", dir.path(), "test", None).await.err().unwrap().to_string();
        assert!(e.contains("test_batch.bin") && e.contains("not a multiple of the record size 3073") && e.contains("re-download"), "{e}");
    }

    #[tokio::test]
    async fn cifar100_fine_and_coarse_labels() {
        let dir = tempfile::tempdir().unwrap();
        let imgs: Vec<Vec<u8>> = (0..4).map(image).collect();
        let train: Vec<(u8, u8, &[u8])> = vec![(0, 99, &imgs[0]), (19, 5, &imgs[1]), (20, 7, &imgs[2])];
        write(dir.path(), "cifar-100-binary/train.bin", &encode_cifar100(&train).unwrap());
        write(dir.path(), "cifar-100-binary/test.bin", &encode_cifar100(&[(4, 100, &imgs[3])]).unwrap());
        let coarse: Vec<String> = (0..20).map(|i| format!("super{i}")).collect();
        write(dir.path(), "cifar-100-binary/coarse_label_names.txt", coarse.join("\n").as_bytes());

        // Fine labels without fine_label_names.txt: placeholder names, and a note.
        let fine = open_cifar("cifar100", dir.path(), "all", None).await.unwrap();
        assert_eq!(fine.class_names().unwrap().len(), 100);
        assert_eq!(fine.class_names().unwrap()[7], "class_07");
        assert!(fine.notes()[0].contains("fine_label_names.txt not found"), "{:?}", fine.notes());
        let recs = fine.read(0..4).await.unwrap();
        assert_eq!(recs.iter().map(|r| r.label).collect::<Vec<_>>(), [Some(99), Some(5), Some(7), None]);
        assert_eq!(recs[3].id, "test.bin[0]");
        assert!(matches!(&recs[3].payload, Payload::Bad(w) if w.contains("label 100")));
        for (r, im) in recs[..3].iter().zip(&imgs) {
            assert_eq!(pixels(r), &im[..]);
        }
        assert_eq!(fine.read(1..3).await.unwrap(), recs[1..3].to_vec());

        let coarse_ds = open_cifar("cifar100", dir.path(), "train", Some("coarse")).await.unwrap();
        assert_eq!(coarse_ds.class_names().unwrap(), coarse);
        assert!(coarse_ds.notes().is_empty());
        assert_eq!(coarse_ds.labels().await.unwrap().unwrap(), [Some(0), Some(19), None]);
        let same = open_cifar("cifar100", dir.path(), "train", Some("fine")).await.unwrap();
        assert_ne!(same.fingerprint(), coarse_ds.fingerprint());

        let e = open_cifar("cifar100", dir.path(), "train", Some("medium")).await.err().unwrap().to_string();
        assert!(e.contains("medium") && e.contains("'fine'") && e.contains("'coarse'"), "{e}");
        std::fs::remove_file(dir.path().join("cifar-100-binary/test.bin")).unwrap();
        let e = open_cifar("cifar100", dir.path(), "test", None).await.err().unwrap().to_string();
        assert!(e.contains("test.bin: missing") && e.contains("cifar-100-binary/"), "{e}");
    }
}
