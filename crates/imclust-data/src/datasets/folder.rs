//! Image folders: `root/<class>/<image>` (labelled, classes in sorted order), a flat folder
//! of images (unlabelled), and the MIT Indoor-67 layout (`Images/<class>/<image>` with the
//! `TrainImages.txt` / `TestImages.txt` list files).
//!
//! Images are found by extension (case-insensitive); other files are reported by
//! [`Folder::other_files`], never silently ignored; hidden files (`.DS_Store`) are skipped.
//! Records are the encoded files, fetched concurrently; decoding happens later, where a
//! corrupt image becomes a bad record.

use crate::dataset::{Dataset, DatasetSpec, Fingerprint, Kind, Payload, Record, clamp, fetch_encoded, read_concurrently};
use crate::error::{DataError, Result};
use crate::storage::{Location, ObjectMeta};
use std::ops::Range;

/// File extensions read as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif"];

pub fn is_image(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(_, ext)| IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// The class folders of image paths `<class>/...`, sorted: the class names.
fn class_folders(images: &[String]) -> Vec<String> {
    let mut classes: Vec<String> = images.iter().filter_map(|r| r.split_once('/')).map(|(c, _)| c.to_string()).collect();
    classes.sort();
    classes.dedup();
    classes
}

/// The label of the image path `<class>/...`: its class's index in `classes`.
fn class_index(classes: &[String], rel: &str) -> Option<i64> {
    let (class, _) = rel.split_once('/')?;
    classes.binary_search_by(|c| c.as_str().cmp(class)).ok().map(|i| i as i64)
}

fn is_hidden(rel: &str) -> bool {
    rel.split('/').any(|p| p.starts_with('.'))
}

/// One image of a folder dataset: its path under the root, its class, or why it is bad.
#[derive(Clone, Debug)]
struct Entry {
    rel: String,
    meta: Option<ObjectMeta>,
    label: Option<i64>,
    bad: Option<String>,
}

pub struct Folder {
    spec: DatasetSpec,
    root: Location,
    entries: Vec<Entry>,
    classes: Option<Vec<String>>,
    other: Vec<String>,
    fingerprint: String,
}

impl Folder {
    pub async fn open(spec: DatasetSpec, root: Location) -> Result<Self> {
        let listing = root.list().await?;
        if listing.is_empty() {
            return Err(DataError::storage(root.url(), "no files under this prefix: check the path (an empty or missing folder)"));
        }
        match spec.kind {
            Kind::Folder => Self::open_folder(spec, root, listing),
            Kind::Mit67 => Self::open_mit67(spec, root, listing).await,
            k => unreachable!("Folder::open called for {}", k.name()),
        }
    }

    fn open_folder(spec: DatasetSpec, root: Location, listing: Vec<(String, ObjectMeta)>) -> Result<Self> {
        let mut fp = Fingerprint::new(&spec);
        let (mut images, mut other) = (Vec::new(), Vec::new());
        let mut metas = std::collections::HashMap::new();
        for (rel, meta) in &listing {
            if is_hidden(rel) {
                continue;
            }
            if is_image(rel) {
                fp.add(rel, meta);
                images.push(rel.clone());
                metas.insert(rel.clone(), meta.clone());
            } else {
                other.push(rel.clone());
            }
        }
        if images.is_empty() {
            return Err(DataError::invalid(
                root.url(),
                format!("no images ({}) in this folder", IMAGE_EXTENSIONS.join(", ")),
            ));
        }
        let flat: Vec<&String> = images.iter().filter(|r| !r.contains('/')).collect();
        let (entries, classes) = if flat.len() == images.len() {
            // A flat folder: unlabelled.
            (images.into_iter().map(|rel| Entry { meta: metas.remove(&rel), rel, label: None, bad: None }).collect(), None)
        } else if !flat.is_empty() {
            return Err(DataError::invalid(
                root.url(),
                format!(
                    "images both directly in the folder (e.g. {}) and in class sub-folders (e.g. {}): put every image in a class \
                     sub-folder (root/<class>/<image>) or none (a flat, unlabelled folder)",
                    flat[0],
                    images.iter().find(|r| r.contains('/')).expect("not flat")
                ),
            ));
        } else {
            let classes = class_folders(&images);
            let entries = images
                .into_iter()
                .map(|rel| Entry { meta: metas.remove(&rel), label: class_index(&classes, &rel), rel, bad: None })
                .collect();
            (entries, Some(classes))
        };
        Ok(Folder { spec, root, entries, classes, other, fingerprint: fp.finish() })
    }

    async fn open_mit67(spec: DatasetSpec, root: Location, listing: Vec<(String, ObjectMeta)>) -> Result<Self> {
        let mut fp = Fingerprint::new(&spec);
        let mut images = Vec::new();
        let mut other = Vec::new();
        let mut metas = std::collections::HashMap::new();
        for (rel, meta) in &listing {
            match rel.strip_prefix("Images/") {
                Some(r) if is_image(r) && r.contains('/') && !is_hidden(r) => {
                    fp.add(rel, meta);
                    images.push(r.to_string());
                    metas.insert(r.to_string(), meta.clone());
                }
                _ if rel == "TrainImages.txt" || rel == "TestImages.txt" || is_hidden(rel) => {}
                _ => other.push(rel.clone()),
            }
        }
        if images.is_empty() {
            return Err(DataError::invalid(
                root.url(),
                "no images under Images/<class>/: an MIT Indoor-67 root holds Images/, TrainImages.txt and TestImages.txt",
            ));
        }
        let classes = class_folders(&images);
        let split = spec.split()?.unwrap_or("all");
        let entries: Vec<Entry> = if split == "all" {
            images.iter().map(|rel| Entry { rel: rel.clone(), meta: metas.get(rel).cloned(), label: class_index(&classes, rel), bad: None }).collect()
        } else {
            let list_name = if split == "train" { "TrainImages.txt" } else { "TestImages.txt" };
            let list = root.join(list_name);
            let Some(text) = list.get_opt().await? else {
                return Err(DataError::invalid(
                    list.url(),
                    format!("missing: split '{split}' of an MIT Indoor-67 dataset needs {list_name} next to Images/ (or use --split all)"),
                ));
            };
            fp.add_bytes(&text);
            let text = std::str::from_utf8(&text).map_err(|_| DataError::format(list.url(), "not UTF-8 text"))?;
            let present: std::collections::HashSet<&str> = images.iter().map(String::as_str).collect();
            text.lines()
                .map(|l| l.trim().trim_start_matches("Images/").to_string())
                .filter(|l| !l.is_empty())
                .map(|rel| {
                    let label = class_index(&classes, &rel);
                    let bad = if !present.contains(rel.as_str()) {
                        Some(format!("listed in {list_name} but there is no Images/{rel}"))
                    } else {
                        None
                    };
                    Entry { label, bad, meta: metas.get(&rel).cloned(), rel }
                })
                .collect()
        };
        let root = root.join("Images");
        Ok(Folder { spec, root, entries, classes: Some(classes), other, fingerprint: fp.finish() })
    }

    /// Files under the root that are not images (and so are not records).
    pub fn other_files(&self) -> &[String] {
        &self.other
    }
}

#[async_trait::async_trait]
impl Dataset for Folder {
    fn spec(&self) -> &DatasetSpec {
        &self.spec
    }

    fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    fn class_names(&self) -> Option<&[String]> {
        self.classes.as_deref()
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The shard's own files (path, size, version, class, list-file verdict) and the class
    /// list: adding or changing one image re-embeds only the shards whose records changed.
    fn shard_fingerprint(&self, range: Range<u64>) -> String {
        let mut fp = Fingerprint::new(&self.spec);
        fp.add_bytes(self.classes.as_ref().map(|c| c.join("\n")).unwrap_or_default().as_bytes());
        let range = clamp(range, self.len());
        for e in &self.entries[range.start as usize..range.end as usize] {
            match &e.meta {
                Some(m) => fp.add(&e.rel, m),
                None => fp.add_bytes(e.rel.as_bytes()),
            };
            fp.add_bytes(format!("{:?} {:?}", e.label, e.bad).as_bytes());
        }
        fp.finish()
    }

    fn notes(&self) -> Vec<String> {
        if self.other.is_empty() {
            return vec![];
        }
        vec![format!(
            "{} file(s) are not images ({}) and are not records, e.g. {}",
            self.other.len(),
            IMAGE_EXTENSIONS.join(", "),
            self.other[0]
        )]
    }

    async fn read(&self, range: Range<u64>) -> Result<Vec<Record>> {
        read_concurrently(range, self.len(), |i| async move {
            let e = &self.entries[i as usize];
            let loc = self.root.join(&e.rel);
            let payload = match &e.bad {
                Some(reason) => Payload::Bad(reason.clone()),
                None => fetch_encoded(&loc, || "the file disappeared after the folder was listed".into()).await?,
            };
            Ok(Record { index: i, id: loc.url().to_string(), label: e.label, payload })
        })
        .await
    }

    async fn labels(&self) -> Result<Option<Vec<Option<i64>>>> {
        Ok(self.classes.as_ref().map(|_| self.entries.iter().map(|e| e.label).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::open;
    use crate::storage::Storage;

    fn write(root: &std::path::Path, rel: &str, bytes: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    async fn open_spec(kind: &str, root: &std::path::Path, split: Option<&str>) -> Result<std::sync::Arc<dyn Dataset>> {
        let spec = DatasetSpec::parse(&format!("{kind}:{}", root.display()), split).unwrap();
        open(&spec, &Storage::default()).await
    }

    #[tokio::test]
    async fn class_folders_are_sorted_labels_and_records_in_path_order() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "zebra/1.png", b"z1");
        write(d.path(), "apple/b.JPG", b"ab");
        write(d.path(), "apple/a.jpg", b"aa");
        write(d.path(), "apple/notes.txt", b"not an image");
        write(d.path(), ".DS_Store", b"hidden");
        let ds = open_spec("folder", d.path(), None).await.unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.class_names().unwrap(), ["apple", "zebra"]);
        let recs = ds.read(0..10).await.unwrap();
        let got: Vec<(u64, Option<i64>, Payload)> = recs.iter().map(|r| (r.index, r.label, r.payload.clone())).collect();
        assert_eq!(
            got,
            vec![
                (0, Some(0), Payload::Encoded("aa".into())),
                (1, Some(0), Payload::Encoded("ab".into())),
                (2, Some(1), Payload::Encoded("z1".into())),
            ]
        );
        assert!(recs[2].id.ends_with("zebra/1.png"), "{}", recs[2].id);
        assert_eq!(ds.read(1..2).await.unwrap()[0].index, 1);
        assert_eq!(ds.labels().await.unwrap().unwrap(), vec![Some(0), Some(0), Some(1)]);
        let notes = ds.notes().join("\n");
        assert!(notes.contains("apple/notes.txt") && !notes.contains("DS_Store"), "{notes}");
        // The fingerprint follows the files.
        let fp = ds.fingerprint().to_string();
        assert_eq!(fp, open_spec("folder", d.path(), None).await.unwrap().fingerprint());
        write(d.path(), "apple/a.jpg", b"aaa");
        assert_ne!(fp, open_spec("folder", d.path(), None).await.unwrap().fingerprint());
    }

    #[tokio::test]
    async fn flat_folders_are_unlabelled_and_mixed_ones_refused() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.png", b"1");
        write(d.path(), "b.webp", b"2");
        let ds = open_spec("folder", d.path(), None).await.unwrap();
        assert_eq!((ds.len(), ds.class_names()), (2, None));
        assert_eq!(ds.read(0..2).await.unwrap()[1].label, None);
        write(d.path(), "cls/c.png", b"3");
        let e = open_spec("folder", d.path(), None).await.err().unwrap().to_string();
        assert!(e.contains("a.png") && e.contains("cls/c.png") && e.contains("class sub-folder"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = open_spec("folder", empty.path(), None).await.err().unwrap().to_string();
        assert!(e.contains("no files"), "{e}");
    }

    #[tokio::test]
    async fn mit67_splits_follow_the_list_files_and_missing_images_are_bad_records() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Images/kitchen/k1.jpg", b"k1");
        write(d.path(), "Images/kitchen/k2.jpg", b"k2");
        write(d.path(), "Images/bar/b1.jpg", b"b1");
        write(d.path(), "TrainImages.txt", b"kitchen/k2.jpg\nbar/b1.jpg\n");
        write(d.path(), "TestImages.txt", b"kitchen/k1.jpg\nkitchen/gone.jpg\n");
        let all = open_spec("mit67", d.path(), None).await.unwrap();
        assert_eq!((all.len(), all.class_names().unwrap().to_vec()), (3, vec!["bar".to_string(), "kitchen".to_string()]));
        let train = open_spec("mit67", d.path(), Some("train")).await.unwrap();
        let r = train.read(0..2).await.unwrap();
        assert_eq!((r[0].label, &r[0].payload), (Some(1), &Payload::Encoded("k2".into())));
        assert_eq!((r[1].label, &r[1].payload), (Some(0), &Payload::Encoded("b1".into())));
        let test = open_spec("mit67", d.path(), Some("test")).await.unwrap();
        let r = test.read(0..2).await.unwrap();
        assert_eq!(r[0].payload, Payload::Encoded("k1".into()));
        match &r[1].payload {
            Payload::Bad(why) => assert!(why.contains("TestImages.txt") && why.contains("kitchen/gone.jpg"), "{why}"),
            p => panic!("expected a bad record, got {p:?}"),
        }
        assert_ne!(train.fingerprint(), test.fingerprint());
        std::fs::remove_file(d.path().join("TestImages.txt")).unwrap();
        let e = open_spec("mit67", d.path(), Some("test")).await.err().unwrap().to_string();
        assert!(e.contains("TestImages.txt") && e.contains("--split all"), "{e}");
    }
}
