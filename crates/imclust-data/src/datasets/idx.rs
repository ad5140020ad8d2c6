//! IDX files: MNIST, Fashion-MNIST, EMNIST and the like.
//!
//! The URL is either
//! - a folder holding `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//!   `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each optionally gzipped
//!   (`.gz`): splits `train`, `test` (the `t10k` files) and `all` (train then test); every
//!   split needs its labels file; or
//! - one images file (`...-images-idx3-ubyte[.gz]`): the dataset is that file (give no split
//!   but `train`, the default). Its labels file is the one named with `labels-idx1` instead
//!   of `images-idx3` (gzipped or not) next to it, and is optional: without it the records
//!   have no labels.
//!
//! Images are unsigned bytes, `N x H x W` (magic `0x00000803`, grey) or `N x H x W x C`
//! (magic `0x00000804`, C 1 or 3), row-major, so a record is a plain slice of the file.
//! Labels are unsigned bytes (magic `0x00000801`).
//!
//! Class names come from `class_names.txt` next to the images (one per line); a label
//! beyond them makes that record [`Payload::Bad`]. Without the file the classes are named
//! by their numbers, `"0"` .. `"9"`, or up to the largest label when that is above 9, so
//! that labels are usable (the trait gives labels only with class names); [`Dataset::notes`]
//! says so (Fashion-MNIST users: add a `class_names.txt`).
//!
//! Raw files are read with range reads; gzipped files cannot be, so they are read whole and
//! decompressed once, at open.

use crate::dataset::{check_label, clamp, local_span, numbered_classes, read_maybe_gz, read_names, Dataset, DatasetSpec, Fingerprint, Payload, Record};
use crate::error::{DataError, Result};
use crate::storage::{Location, ObjectMeta};
use bytes::Bytes;
use std::ops::Range;

/// Bytes per range request (at least one record).
const CHUNK_BYTES: u64 = 4 << 20;

const MAGIC_IMAGES: u32 = 0x0000_0803;
const MAGIC_IMAGES_CHANNELS: u32 = 0x0000_0804;
const MAGIC_LABELS: u32 = 0x0000_0801;
/// IDX data type code of unsigned bytes, the only one images and labels use.
const UBYTE: u8 = 0x08;

const LAYOUT: &str = "an IDX folder holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and \
    t10k-labels-idx1-ubyte, each optionally gzipped (.gz); or give the URL of one ...-images-idx3-ubyte[.gz] file";

/// Where the image bytes are.
enum Source {
    /// A raw file, read by range.
    Ranges(Location),
    /// A gzipped file, decompressed at open (header included).
    Memory(Bytes),
}

/// One images file and its labels.
struct Part {
    /// File name of the images, for record ids.
    name: String,
    source: Source,
    /// Bytes before the first image.
    header: u64,
    /// Index of its first record in the dataset.
    start: u64,
    count: u64,
    height: u32,
    width: u32,
    channels: u8,
    /// One label per image (header stripped).
    labels: Option<Bytes>,
}

impl Part {
    fn record_size(&self) -> u64 {
        self.height as u64 * self.width as u64 * self.channels as u64
    }
}

/// An IDX dataset (one split, or one images file).
pub struct Idx {
    spec: DatasetSpec,
    parts: Vec<Part>,
    len: u64,
    /// `None` when there are no labels.
    names: Option<Vec<String>>,
    notes: Vec<String>,
    fingerprint: String,
}

impl Idx {
    pub async fn open(spec: DatasetSpec, root: Location) -> Result<Self> {
        let file_name = root.file_name();
        let mut fp = Fingerprint::new(&spec);
        let mut notes = Vec::new();
        // (images, labels) per part, in dataset order.
        let mut files: Vec<(Location, Option<Location>)> = Vec::new();
        let names_loc;
        if file_name.contains("labels-idx1") {
            return Err(DataError::invalid(
                format!("idx dataset {}", root.url()),
                "this is a labels file: give the images file (...-images-idx3-ubyte) or the folder holding both",
            ));
        } else if file_name.contains("images-idx3") || file_name.contains("images-idx4") {
            if let Some(s) = spec.split.as_deref().filter(|s| *s != "train") {
                return Err(DataError::invalid(
                    format!("split '{s}'"),
                    format!("{} is one images file, so it has no splits: drop the split, or give the folder holding the train and t10k files", root.url()),
                ));
            }
            let label_name = file_name.replacen("images-idx3", "labels-idx1", 1).replacen("images-idx4", "labels-idx1", 1);
            let other = match label_name.strip_suffix(".gz") {
                Some(raw) => raw.to_string(),
                None => format!("{label_name}.gz"),
            };
            let mut labels = None;
            for name in [label_name, other] {
                let loc = root.sibling(&name);
                if loc.head_opt().await?.is_some() {
                    labels = Some(loc);
                    break;
                }
            }
            if labels.is_none() {
                let expected = root.sibling(&file_name.replacen("images-idx3", "labels-idx1", 1));
                notes.push(format!("{}: no labels file next to it ({}), so the records have no labels", root.url(), expected.url()));
            }
            names_loc = root.sibling("class_names.txt");
            files.push((root, labels));
        } else {
            let prefixes: &[&str] = match spec.split()? {
                Some("train") | None => &["train"],
                Some("test") => &["t10k"],
                Some("all") => &["train", "t10k"],
                Some(s) => return Err(DataError::invalid(format!("split '{s}'"), "IDX datasets have the splits train, test, all")),
            };
            for p in prefixes {
                let images = find_file(&root, &[&format!("{p}-images-idx3-ubyte"), &format!("{p}-images-idx4-ubyte")]).await?;
                let labels = find_file(&root, &[&format!("{p}-labels-idx1-ubyte")]).await?;
                files.push((images, Some(labels)));
            }
            names_loc = root.join("class_names.txt");
        }

        let mut parts = Vec::with_capacity(files.len());
        let mut len = 0;
        for (images, labels) in files {
            let mut part = open_images(&images, &mut fp).await?;
            if let Some(loc) = labels {
                let l = open_labels(&loc, &mut fp).await?;
                if l.len() as u64 != part.count {
                    return Err(DataError::format(
                        loc.url(),
                        format!(
                            "holds {} labels but {} holds {} images; they must match (the wrong labels file, or a truncated \
                             download: re-download both)",
                            l.len(),
                            images.url(),
                            part.count
                        ),
                    ));
                }
                part.labels = Some(l);
            }
            part.start = len;
            len += part.count;
            parts.push(part);
        }

        let max_label = parts.iter().filter_map(|p| p.labels.as_ref()).flat_map(|l| l.iter().copied()).max();
        let names = match (names_loc.head_opt().await?, parts.iter().any(|p| p.labels.is_some())) {
            (_, false) => None,
            (Some(meta), true) => {
                let names = read_names(&names_loc).await?.unwrap_or_default();
                if names.is_empty() {
                    return Err(DataError::format(names_loc.url(), "holds no class names: write one per line, in label order, or remove the file"));
                }
                fp.add(names_loc.url(), &meta);
                Some(names)
            }
            (None, true) => {
                let classes = (max_label.unwrap_or(0) as usize + 1).max(10);
                notes.push(format!(
                    "{} not found: classes are named by their label numbers, 0 .. {}",
                    names_loc.url(),
                    classes - 1
                ));
                Some(numbered_classes(classes))
            }
        };
        Ok(Idx { spec, parts, len, names, notes, fingerprint: fp.finish() })
    }

    /// The label of image `i` of `part`, or why it is bad; `None` when unlabelled.
    fn label(&self, part: &Part, i: u64) -> Option<std::result::Result<i64, String>> {
        let l = *part.labels.as_ref()?.get(i as usize)?;
        let classes = self.names.as_ref().map_or(0, Vec::len);
        Some(check_label(l as i64, classes).map_err(|why| format!("{why}; add the missing names to class_names.txt")))
    }

    fn decode(&self, part: &Part, i: u64, raw: &[u8]) -> Record {
        let (index, id) = (part.start + i, format!("{}[{i}]", part.name));
        let label = match self.label(part, i) {
            Some(Err(reason)) => return Record { index, id, label: None, payload: Payload::Bad(reason) },
            Some(Ok(l)) => Some(l),
            None => None,
        };
        let payload = Payload::Pixels { width: part.width, height: part.height, channels: part.channels, data: raw.to_vec() };
        Record { index, id, label, payload }
    }
}

/// The first of `names` (each raw, then gzipped) that exists under `root`.
async fn find_file(root: &Location, names: &[&str]) -> Result<Location> {
    for name in names {
        for candidate in [name.to_string(), format!("{name}.gz")] {
            let loc = root.join(&candidate);
            if loc.head_opt().await?.is_some() {
                return Ok(loc);
            }
        }
    }
    Err(DataError::format(root.join(names[0]).url(), format!("missing (nor {}.gz): {LAYOUT}", names[0])))
}

/// Checks an IDX header and returns its dimensions. `head` holds at least the first 4
/// bytes or the whole file when shorter.
fn parse_header(url: &str, head: &[u8], magic: &[u32], what: &str) -> Result<Vec<u64>> {
    let expected = magic.iter().map(|m| format!("0x{m:08x}")).collect::<Vec<_>>().join(" or ");
    if head.len() < 4 {
        return Err(DataError::format(url, format!("is {} bytes long, too short for an IDX header: re-download it", head.len())));
    }
    let found = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if head[0] != 0 || head[1] != 0 {
        let hint = if head[..2] == [0x1f, 0x8b] {
            "it is gzipped: name it ...-ubyte.gz"
        } else {
            "not an IDX file; check the URL or re-download it"
        };
        return Err(DataError::format(url, format!("magic number 0x{found:08x}, expected {expected} ({what}): {hint}")));
    }
    if head[2] != UBYTE {
        return Err(DataError::format(
            url,
            format!(
                "magic number 0x{found:08x}: data type code 0x{:02x}, expected 0x08 (unsigned bytes) for {what}; only u8 IDX files are supported",
                head[2]
            ),
        ));
    }
    if !magic.contains(&found) {
        return Err(DataError::format(
            url,
            format!("magic number 0x{found:08x} ({} dimensions), expected {expected} ({what}); is it the right file?", head[3]),
        ));
    }
    let ndim = head[3] as usize;
    if head.len() < 4 + 4 * ndim {
        return Err(DataError::format(url, format!("is {} bytes long, too short for its {ndim} dimensions: re-download it", head.len())));
    }
    Ok((0..ndim).map(|d| u32::from_be_bytes(head[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as u64).collect())
}

/// Checks that a file of `size` bytes holds exactly its header and `dims` bytes of data.
fn check_size(url: &str, size: u64, header: u64, dims: &[u64]) -> Result<()> {
    let data = dims.iter().try_fold(1u64, |a, d| a.checked_mul(*d));
    let shape = dims.iter().map(u64::to_string).collect::<Vec<_>>().join(" x ");
    match data.and_then(|d| d.checked_add(header)) {
        Some(want) if want == size => Ok(()),
        Some(want) => Err(DataError::format(
            url,
            format!(
                "holds {size} bytes (uncompressed) but its header says {shape} bytes plus a {header}-byte header = {want} bytes: \
                 the file is {}; re-download it",
                if size < want { "truncated" } else { "corrupt (extra bytes)" }
            ),
        )),
        None => Err(DataError::format(url, format!("header dimensions {shape} are impossibly large: the file is corrupt; re-download it"))),
    }
}

/// Reads an images file's header (and, gzipped, the whole file) and checks its size.
async fn open_images(loc: &Location, fp: &mut Fingerprint) -> Result<Part> {
    let meta: ObjectMeta = loc.head().await?;
    fp.add(loc.url(), &meta);
    let what = "u8 images, N x H x W or N x H x W x C";
    let magic = [MAGIC_IMAGES, MAGIC_IMAGES_CHANNELS];
    let (source, size, dims) = if loc.url().ends_with(".gz") {
        let bytes = read_maybe_gz(loc).await?;
        let dims = parse_header(loc.url(), &bytes, &magic, what)?;
        (Source::Memory(bytes.clone()), bytes.len() as u64, dims)
    } else {
        let head = loc.get_range(0..meta.size.min(20)).await?;
        let dims = parse_header(loc.url(), &head, &magic, what)?;
        (Source::Ranges(loc.clone()), meta.size, dims)
    };
    let header = 4 + 4 * dims.len() as u64;
    check_size(loc.url(), size, header, &dims)?;
    let channels = dims.get(3).copied().unwrap_or(1);
    if channels != 1 && channels != 3 {
        return Err(DataError::format(loc.url(), format!("images have {channels} channels; only 1 (grey) or 3 (RGB) are supported")));
    }
    Ok(Part {
        name: loc.file_name(),
        source,
        header,
        start: 0,
        count: dims[0],
        height: dims[1] as u32,
        width: dims[2] as u32,
        channels: channels as u8,
        labels: None,
    })
}

/// Reads a labels file whole (it is one byte per image) and returns the labels.
async fn open_labels(loc: &Location, fp: &mut Fingerprint) -> Result<Bytes> {
    let meta = loc.head().await?;
    fp.add(loc.url(), &meta);
    let bytes = read_maybe_gz(loc).await?;
    let dims = parse_header(loc.url(), &bytes, &[MAGIC_LABELS], "u8 labels, N")?;
    check_size(loc.url(), bytes.len() as u64, 8, &dims)?;
    Ok(bytes.slice(8..))
}

#[async_trait::async_trait]
impl Dataset for Idx {
    fn spec(&self) -> &DatasetSpec {
        &self.spec
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn class_names(&self) -> Option<&[String]> {
        self.names.as_deref()
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    async fn read(&self, range: Range<u64>) -> Result<Vec<Record>> {
        let range = clamp(range, self.len);
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for part in &self.parts {
            let Some(Range { start: s, end: e }) = local_span(&range, part.start, part.count) else { continue };
            let rs = part.record_size();
            let at = |i: u64| part.header + i * rs;
            match &part.source {
                Source::Memory(bytes) => {
                    for i in s..e {
                        out.push(self.decode(part, i, &bytes[at(i) as usize..at(i + 1) as usize]));
                    }
                }
                Source::Ranges(loc) => {
                    let per_chunk = (CHUNK_BYTES / rs.max(1)).max(1);
                    let ranges: Vec<Range<u64>> = (s..e).step_by(per_chunk as usize).map(|c| at(c)..at((c + per_chunk).min(e))).collect();
                    let mut i = s;
                    for chunk in loc.get_ranges(&ranges).await? {
                        for raw in chunk.chunks_exact(rs as usize) {
                            out.push(self.decode(part, i, raw));
                            i += 1;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// From the labels files read at open.
    async fn labels(&self) -> Result<Option<Vec<Option<i64>>>> {
        if self.names.is_none() {
            return Ok(None);
        }
        let labels =
            self.parts.iter().flat_map(|p| (0..p.count).map(move |i| self.label(p, i).and_then(|l| l.ok()))).collect();
        Ok(Some(labels))
    }
}

fn dim(what: &str, v: usize) -> Result<[u8; 4]> {
    u32::try_from(v)
        .map(u32::to_be_bytes)
        .map_err(|_| DataError::invalid(format!("IDX {what} {v}"), "does not fit the 32-bit dimensions of an IDX header"))
}

/// The bytes of an images IDX file (`...-images-idx3-ubyte`): `n` grey `h x w` images,
/// row-major, one after the other.
pub fn encode_images(n: usize, h: usize, w: usize, pixels: &[u8]) -> Result<Vec<u8>> {
    encode(MAGIC_IMAGES, &[n, h, w], pixels)
}

/// The bytes of a 4-dimensional images IDX file: `n` images `h x w` with `c` interleaved
/// channels (1 or 3), row-major HWC, one after the other.
pub fn encode_images_hwc(n: usize, h: usize, w: usize, c: usize, pixels: &[u8]) -> Result<Vec<u8>> {
    encode(MAGIC_IMAGES_CHANNELS, &[n, h, w, c], pixels)
}

/// The bytes of a labels IDX file (`...-labels-idx1-ubyte`).
pub fn encode_labels(labels: &[u8]) -> Result<Vec<u8>> {
    encode(MAGIC_LABELS, &[labels.len()], labels)
}

fn encode(magic: u32, dims: &[usize], data: &[u8]) -> Result<Vec<u8>> {
    let want: usize = dims.iter().product();
    if data.len() != want {
        return Err(DataError::invalid(
            format!("IDX data of shape {dims:?}"),
            format!("has {} bytes, expected {want} (the product of the dimensions)", data.len()),
        ));
    }
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend(magic.to_be_bytes());
    for (k, d) in dims.iter().enumerate() {
        out.extend(dim(&format!("dimension {k}"), *d)?);
    }
    out.extend_from_slice(data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::open;
    use crate::storage::Storage;
    use std::io::Write;
    use std::path::Path;
    use std::sync::Arc;

    /// `n` row-major `h x w x c` images that differ from their transposes and each other.
    fn images(n: usize, h: usize, w: usize, c: usize, seed: usize) -> Vec<u8> {
        (0..n * h * w * c).map(|i| (i * 7 + i / (w * c) * 3 + seed * 101) as u8).collect()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    /// train: 5 raw 28x28 images, labels 0..5; t10k: 3 gzipped images, labels 7, 8, 9.
    fn mnist(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        let (train, test) = (images(5, 28, 28, 1, 0), images(3, 28, 28, 1, 1));
        write(dir, "train-images-idx3-ubyte", &encode_images(5, 28, 28, &train).unwrap());
        write(dir, "train-labels-idx1-ubyte", &encode_labels(&[0, 1, 2, 3, 4]).unwrap());
        write(dir, "t10k-images-idx3-ubyte.gz", &gzip(&encode_images(3, 28, 28, &test).unwrap()));
        write(dir, "t10k-labels-idx1-ubyte.gz", &gzip(&encode_labels(&[7, 8, 9]).unwrap()));
        (train, test)
    }

    async fn open_idx(url: &Path, split: Option<&str>) -> Result<Arc<dyn Dataset>> {
        open(&DatasetSpec::parse(&format!("idx:{}", url.display()), split)?, &Storage::default()).await
    }

    fn pixels(r: &Record) -> (u32, u32, u8, &[u8]) {
        match &r.payload {
            Payload::Pixels { width, height, channels, data } => (*width, *height, *channels, data),
            other => panic!("{}: not pixels: {other:?}", r.id),
        }
    }

    #[tokio::test]
    async fn idx_folder_round_trips_every_split() {
        let dir = tempfile::tempdir().unwrap();
        let (train_px, test_px) = mnist(dir.path());
        let train = open_idx(dir.path(), None).await.unwrap();
        assert_eq!(train.len(), 5);
        assert_eq!(train.class_names().unwrap(), (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(train.notes()[0].contains("class_names.txt not found"), "{:?}", train.notes());
        let recs = train.read(0..9).await.unwrap();
        for (k, r) in recs.iter().enumerate() {
            assert_eq!((r.index, r.id.clone(), r.label), (k as u64, format!("train-images-idx3-ubyte[{k}]"), Some(k as i64)));
            assert_eq!(pixels(r), (28, 28, 1, &train_px[k * 784..(k + 1) * 784]));
        }
        assert_eq!(train.read(1..4).await.unwrap(), recs[1..4].to_vec());

        let test = open_idx(dir.path(), Some("test")).await.unwrap();
        let t = test.read(0..3).await.unwrap();
        assert_eq!((t[2].id.as_str(), t[2].label), ("t10k-images-idx3-ubyte.gz[2]", Some(9)));
        assert_eq!(pixels(&t[2]).3, &test_px[2 * 784..]);

        let all = open_idx(dir.path(), Some("all")).await.unwrap();
        let a = all.read(0..8).await.unwrap();
        assert_eq!(a[..5], recs[..]);
        assert_eq!((a[5].index, a[5].id.as_str()), (5, "t10k-images-idx3-ubyte.gz[0]"));
        assert_eq!(all.read(4..7).await.unwrap(), a[4..7].to_vec());
        assert_eq!(all.labels().await.unwrap().unwrap(), [0, 1, 2, 3, 4, 7, 8, 9].map(Some));
        assert_ne!(all.fingerprint(), train.fingerprint());
    }

    #[tokio::test]
    async fn idx_one_file_with_or_without_labels() {
        let dir = tempfile::tempdir().unwrap();
        let px = images(3, 4, 6, 1, 2);
        let file = dir.path().join("fashion-images-idx3-ubyte.gz");
        std::fs::write(&file, gzip(&encode_images(3, 4, 6, &px).unwrap())).unwrap();

        // No labels file: no labels, no class names.
        let ds = open_idx(&file, None).await.unwrap();
        assert_eq!((ds.class_names(), ds.labels().await.unwrap()), (None, None));
        assert!(ds.notes()[0].contains("fashion-labels-idx1-ubyte"), "{:?}", ds.notes());
        let recs = ds.read(0..3).await.unwrap();
        assert_eq!((recs[1].id.as_str(), recs[1].label), ("fashion-images-idx3-ubyte.gz[1]", None));
        assert_eq!(pixels(&recs[1]), (6, 4, 1, &px[24..48]));

        // A raw labels file next to the gzipped images, and names: a label beyond them is bad.
        write(dir.path(), "fashion-labels-idx1-ubyte", &encode_labels(&[1, 3, 0]).unwrap());
        write(dir.path(), "class_names.txt", b"top\ntrouser\npullover\n");
        let ds = open_idx(&file, Some("train")).await.unwrap();
        assert_eq!(ds.class_names().unwrap(), ["top", "trouser", "pullover"]);
        assert!(ds.notes().is_empty(), "{:?}", ds.notes());
        let recs = ds.read(0..3).await.unwrap();
        assert_eq!(recs.iter().map(|r| r.label).collect::<Vec<_>>(), [Some(1), None, Some(0)]);
        assert!(matches!(&recs[1].payload, Payload::Bad(w) if w.contains("label 3 is out of range") && w.contains("class_names.txt")));
        assert_eq!(ds.labels().await.unwrap().unwrap(), [Some(1), None, Some(0)]);

        let e = open_idx(&file, Some("test")).await.err().unwrap().to_string();
        assert!(e.contains("one images file") && e.contains("drop the split"), "{e}");
        let e = open_idx(&dir.path().join("fashion-labels-idx1-ubyte"), None).await.err().unwrap().to_string();
        assert!(e.contains("labels file"), "{e}");
    }

    #[tokio::test]
    async fn idx_labels_above_nine_name_more_classes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("letters-images-idx3-ubyte");
        std::fs::write(&file, encode_images(2, 2, 2, &images(2, 2, 2, 1, 0)).unwrap()).unwrap();
        write(dir.path(), "letters-labels-idx1-ubyte.gz", &gzip(&encode_labels(&[12, 3]).unwrap()));
        let ds = open_idx(&file, None).await.unwrap();
        assert_eq!(ds.class_names().unwrap().len(), 13);
        assert_eq!(ds.class_names().unwrap()[12], "12");
        assert!(ds.notes()[0].contains("0 .. 12"), "{:?}", ds.notes());
        assert_eq!(ds.labels().await.unwrap().unwrap(), [Some(12), Some(3)]);
    }

    #[tokio::test]
    async fn idx_rgb_images_and_range_reads_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        // 1.5 MB images: a 4 MiB request holds 2, so 5 images take 3 requests.
        let (n, h, w) = (5, 500, 1000);
        let px = images(n, h, w, 3, 3);
        let file = dir.path().join("big-images-idx4-ubyte");
        std::fs::write(&file, encode_images_hwc(n, h, w, 3, &px).unwrap()).unwrap();
        let ds = open_idx(&file, None).await.unwrap();
        let recs = ds.read(0..5).await.unwrap();
        let size = h * w * 3;
        for (k, r) in recs.iter().enumerate() {
            assert_eq!(pixels(r), (w as u32, h as u32, 3, &px[k * size..(k + 1) * size]), "record {k}");
        }
        assert_eq!(ds.read(1..4).await.unwrap(), recs[1..4].to_vec());

        write(dir.path(), "two-images-idx4-ubyte", &encode_images_hwc(1, 2, 2, 2, &[0; 8]).unwrap());
        let e = open_idx(&dir.path().join("two-images-idx4-ubyte"), None).await.err().unwrap().to_string();
        assert!(e.contains("two-images-idx4-ubyte") && e.contains("2 channels"), "{e}");
        assert!(encode_images(2, 2, 2, &[0; 7]).unwrap_err().to_string().contains("expected 8"));
    }

    #[tokio::test]
    async fn idx_bad_files_are_named_with_what_was_expected() {
        let dir = tempfile::tempdir().unwrap();
        mnist(dir.path());
        let d = dir.path();
        let err = |split: &'static str| async move { open_idx(d, Some(split)).await.err().unwrap().to_string() };

        // A labels file where images belong: the magic number says so.
        write(d, "train-images-idx3-ubyte", &encode_labels(&[1, 2]).unwrap());
        let e = err("train").await;
        assert!(e.contains("train-images-idx3-ubyte") && e.contains("magic number 0x00000801") && e.contains("expected 0x00000803 or 0x00000804"), "{e}");
        // Floats.
        let mut floats = encode_images(1, 1, 1, &[0]).unwrap();
        floats[2] = 0x0d;
        write(d, "train-images-idx3-ubyte", &floats);
        let e = err("train").await;
        assert!(e.contains("data type code 0x0d") && e.contains("unsigned bytes"), "{e}");
        // Not IDX at all; gzipped but not named .gz.
        write(d, "train-images-idx3-ubyte", b"<html>not found</html>");
        assert!(err("train").await.contains("not an IDX file"));
        write(d, "train-images-idx3-ubyte", &gzip(&encode_images(1, 1, 1, &[0]).unwrap()));
        assert!(err("train").await.contains("name it ...-ubyte.gz"));
        // Truncated, raw and gzipped.
        let full = encode_images(5, 28, 28, &images(5, 28, 28, 1, 0)).unwrap();
        write(d, "train-images-idx3-ubyte", &full[..full.len() - 10]);
        let e = err("train").await;
        assert!(e.contains("train-images-idx3-ubyte") && e.contains("5 x 28 x 28") && e.contains("truncated") && e.contains("re-download"), "{e}");
        write(d, "train-images-idx3-ubyte", &full);
        let t10k = encode_images(3, 28, 28, &images(3, 28, 28, 1, 1)).unwrap();
        write(d, "t10k-images-idx3-ubyte.gz", &gzip(&t10k[..t10k.len() - 1]));
        let e = err("test").await;
        assert!(e.contains("t10k-images-idx3-ubyte.gz") && e.contains("truncated"), "{e}");
        write(d, "t10k-images-idx3-ubyte.gz", b"\x1f\x8bjunk");
        assert!(err("test").await.contains("not a valid gzip file"));
        write(d, "t10k-images-idx3-ubyte.gz", &gzip(&t10k));
        // Label count.
        write(d, "train-labels-idx1-ubyte", &encode_labels(&[0, 1, 2, 3]).unwrap());
        let e = err("all").await;
        assert!(e.contains("train-labels-idx1-ubyte") && e.contains("holds 4 labels") && e.contains("holds 5 images"), "{e}");
        // Missing files.
        std::fs::remove_file(d.join("train-labels-idx1-ubyte")).unwrap();
        let e = err("train").await;
        assert!(e.contains("train-labels-idx1-ubyte: missing") && e.contains("t10k-images-idx3-ubyte"), "{e}");
        assert!(open_idx(d, Some("test")).await.is_ok());
    }

    #[tokio::test]
    async fn idx_fingerprint_follows_the_files() {
        let dir = tempfile::tempdir().unwrap();
        mnist(dir.path());
        let fp = open_idx(dir.path(), None).await.unwrap().fingerprint().to_string();
        assert_eq!(open_idx(dir.path(), None).await.unwrap().fingerprint(), fp);
        write(dir.path(), "train-labels-idx1-ubyte", &encode_labels(&[0, 1, 2, 3, 5]).unwrap());
        // Same size: the modification time tells them apart; give it a tick.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(dir.path(), "train-labels-idx1-ubyte", &encode_labels(&[0, 1, 2, 3, 6]).unwrap());
        let fp2 = open_idx(dir.path(), None).await.unwrap().fingerprint().to_string();
        assert_ne!(fp2, fp);
        write(dir.path(), "class_names.txt", b"a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n");
        assert_ne!(open_idx(dir.path(), None).await.unwrap().fingerprint(), fp2);
    }
}
