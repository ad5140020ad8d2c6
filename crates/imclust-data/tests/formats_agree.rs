//! The same real images written in every supported format read back as the same pixels and
//! labels: Fashion-MNIST test images (the real IDX files of the Debian package, fetched by
//! scripts/fetch-fashion-mnist.sh) as IDX (raw and gzipped, 3-d grey and 4-d RGB), CIFAR-10,
//! CIFAR-100, STL-10, PNG class folders, MIT Indoor-67, manifests (JSONL, CSV, Parquet) and
//! npy pixels.

use imclust_data::dataset::{self, Dataset, DatasetSpec, Payload};
use imclust_data::datasets::{cifar, idx, stl10};
use imclust_data::storage::Storage;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const N: usize = 40;

fn fashion_mnist() -> PathBuf {
    let p = std::env::var_os("IMCLUST_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/data/fashion-mnist"));
    assert!(p.join("t10k-images-idx3-ubyte.gz").exists(), "missing {}: run scripts/fetch-fashion-mnist.sh (scripts/test.sh does it)", p.display());
    p
}

fn gunzip(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The first N Fashion-MNIST test images (28 x 28 grey) and labels, parsed here independently
/// of the crate's IDX reader.
fn source() -> (Vec<Vec<u8>>, Vec<u8>) {
    let dir = fashion_mnist();
    let images = gunzip(&dir.join("t10k-images-idx3-ubyte.gz"));
    let labels = gunzip(&dir.join("t10k-labels-idx1-ubyte.gz"));
    assert_eq!(&images[..4], &[0, 0, 8, 3]);
    (
        (0..N).map(|i| images[16 + i * 784..16 + (i + 1) * 784].to_vec()).collect(),
        labels[8..8 + N].to_vec(),
    )
}

/// Grey 28 x 28 -> RGB `side` x `side`: the image at (2, 3), grey levels tinted per channel so
/// that a channel mix-up shows, zero elsewhere.
fn rgb(grey: &[u8], side: usize) -> Vec<u8> {
    let mut out = vec![0u8; side * side * 3];
    for y in 0..28 {
        for x in 0..28 {
            let v = grey[y * 28 + x];
            let o = ((y + 2) * side + x + 3) * 3;
            out[o..o + 3].copy_from_slice(&[v, v / 2, 255 - v]);
        }
    }
    out
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn png(p: &Path, side: usize, channels: usize, pixels: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let ct = if channels == 3 { image::ExtendedColorType::Rgb8 } else { image::ExtendedColorType::L8 };
    image::save_buffer(p, pixels, side as u32, side as u32, ct).unwrap();
}

async fn open(spec: &str, split: Option<&str>) -> Arc<dyn Dataset> {
    let spec = DatasetSpec::parse(spec, split).unwrap();
    dataset::open(&spec, &Storage::default()).await.unwrap_or_else(|e| panic!("{spec}: {e}"))
}

/// Every record's pixels as (width, height, channels, HWC bytes), decoding encoded images.
async fn pixels(ds: &dyn Dataset) -> Vec<(u32, u32, u8, Vec<u8>)> {
    let mut out = Vec::new();
    // Read in two uneven ranges: range reads must agree with one another.
    for r in [0..7, 7..ds.len()] {
        for rec in ds.read(r).await.unwrap() {
            out.push(match rec.payload {
                Payload::Pixels { width, height, channels, data } => (width, height, channels, data),
                Payload::Encoded(b) => {
                    let img = image::load_from_memory(&b).unwrap();
                    match img {
                        image::DynamicImage::ImageLuma8(g) => (g.width(), g.height(), 1, g.into_raw()),
                        other => {
                            let c = other.to_rgb8();
                            (c.width(), c.height(), 3, c.into_raw())
                        }
                    }
                }
                p => panic!("{}: unexpected payload {p:?}", rec.id),
            });
        }
    }
    out
}

async fn labels(ds: &dyn Dataset) -> Vec<Option<i64>> {
    ds.labels().await.unwrap().expect("labelled")
}

#[tokio::test]
async fn every_format_reads_the_same_pixels_and_labels() {
    let (grey, y) = source();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let names = std::fs::read_to_string(fashion_mnist().join("class_names.txt")).unwrap();
    let names: Vec<&str> = names.lines().collect();
    let want_labels: Vec<Option<i64>> = y.iter().map(|&l| Some(l as i64)).collect();
    // Folder order is sorted by class then file name: the same images in that order.
    let mut by_class: Vec<usize> = (0..N).collect();
    by_class.sort_by_key(|&i| (names[y[i] as usize], i));

    // Grey 28 x 28: IDX raw and gzipped, PNG folder, npy pixels, manifests.
    let grey_want: Vec<(u32, u32, u8, Vec<u8>)> = grey.iter().map(|g| (28, 28, 1, g.clone())).collect();
    let flat: Vec<u8> = grey.concat();
    write(&t.join("idx/t10k-images-idx3-ubyte"), &idx::encode_images(N, 28, 28, &flat).unwrap());
    write(&t.join("idx/t10k-labels-idx1-ubyte"), &idx::encode_labels(&y).unwrap());
    write(&t.join("idx/class_names.txt"), names.join("\n").as_bytes());
    write(&t.join("idxgz/t10k-images-idx3-ubyte.gz"), &gzip(&idx::encode_images(N, 28, 28, &flat).unwrap()));
    write(&t.join("idxgz/t10k-labels-idx1-ubyte.gz"), &gzip(&idx::encode_labels(&y).unwrap()));
    for spec in [format!("idx:{}", t.join("idx").display()), format!("idx:{}", t.join("idxgz").display())] {
        let ds = open(&spec, Some("test")).await;
        assert_eq!(pixels(ds.as_ref()).await, grey_want, "{spec}");
        assert_eq!(labels(ds.as_ref()).await, want_labels, "{spec}");
    }
    let ds = open(&format!("idx:{}", t.join("idx").display()), Some("test")).await;
    assert_eq!(ds.class_names().unwrap(), names);

    let mut jsonl = String::new();
    let mut csv = String::from("uri,label,id\n");
    for (i, g) in grey.iter().enumerate() {
        let class = names[y[i] as usize].replace('/', "-");
        let rel = format!("grey/{class}/{i:03}.png");
        png(&t.join(&rel), 28, 1, g);
        jsonl.push_str(&format!("{{\"uri\": \"{rel}\", \"label\": \"{class}\", \"id\": \"fm-{i}\"}}\n"));
        csv.push_str(&format!("{rel},{class},fm-{i}\n"));
    }
    write(&t.join("m.jsonl"), jsonl.as_bytes());
    write(&t.join("m.csv"), csv.as_bytes());
    for m in ["m.jsonl", "m.csv"] {
        let ds = open(&format!("manifest:{}", t.join(m).display()), None).await;
        assert_eq!(pixels(ds.as_ref()).await, grey_want, "{m}");
        let classes = ds.class_names().unwrap().to_vec();
        let got: Vec<String> = labels(ds.as_ref()).await.iter().map(|l| classes[l.unwrap() as usize].clone()).collect();
        let want: Vec<String> = y.iter().map(|&l| names[l as usize].replace('/', "-")).collect();
        assert_eq!(got, want, "{m}");
        assert_eq!(ds.read(3..4).await.unwrap()[0].id, "fm-3");
    }
    let folder = open(&format!("folder:{}", t.join("grey").display()), None).await;
    let folder_want: Vec<_> = by_class.iter().map(|&i| grey_want[i].clone()).collect();
    assert_eq!(pixels(folder.as_ref()).await, folder_want);

    let npy_path = t.join("px.npy");
    write(&npy_path, &[imclust_data::npy::encode_header(&[N, 28, 28], "|u1"), flat.clone()].concat());
    imclust_data::npy::write_i64(&t.join("px.labels.npy"), &[N], &y.iter().map(|&l| l as i64).collect::<Vec<_>>()).unwrap();
    let ds = open(&format!("npy:{}", npy_path.display()), None).await;
    assert_eq!(pixels(ds.as_ref()).await, grey_want);
    assert_eq!(labels(ds.as_ref()).await, want_labels);

    // RGB 32 x 32: CIFAR-10 (train batches, test batch, split all), CIFAR-100, IDX 4-d,
    // PNG folder, MIT Indoor-67.
    let c32: Vec<Vec<u8>> = grey.iter().map(|g| rgb(g, 32)).collect();
    let c32_want: Vec<(u32, u32, u8, Vec<u8>)> = c32.iter().map(|p| (32, 32, 3, p.clone())).collect();
    let recs: Vec<(u8, &[u8])> = y.iter().zip(&c32).map(|(&l, p)| (l, p.as_slice())).collect();
    for b in 0..5 {
        write(&t.join(format!("cifar10/data_batch_{}.bin", b + 1)), &cifar::encode_cifar10(&recs[b * 6..(b + 1) * 6]).unwrap());
    }
    write(&t.join("cifar10/test_batch.bin"), &cifar::encode_cifar10(&recs[30..]).unwrap());
    let ds = open(&format!("cifar10:{}", t.join("cifar10").display()), Some("all")).await;
    assert_eq!(pixels(ds.as_ref()).await, c32_want);
    assert_eq!(labels(ds.as_ref()).await, want_labels);
    let test = open(&format!("cifar10:{}", t.join("cifar10").display()), Some("test")).await;
    assert_eq!(pixels(test.as_ref()).await, c32_want[30..].to_vec());

    let recs100: Vec<(u8, u8, &[u8])> = y.iter().zip(&c32).map(|(&l, p)| (l / 5, l, p.as_slice())).collect();
    write(&t.join("cifar100/train.bin"), &cifar::encode_cifar100(&recs100[..25]).unwrap());
    write(&t.join("cifar100/test.bin"), &cifar::encode_cifar100(&recs100[25..]).unwrap());
    let ds = open(&format!("cifar100:{}", t.join("cifar100").display()), Some("all")).await;
    assert_eq!(pixels(ds.as_ref()).await, c32_want);
    assert_eq!(labels(ds.as_ref()).await, want_labels);

    write(&t.join("idx4/t10k-images-idx3-ubyte"), &idx::encode_images_hwc(N, 32, 32, 3, &c32.concat()).unwrap());
    let ds = open(&format!("idx:{}", t.join("idx4/t10k-images-idx3-ubyte").display()), None).await;
    assert_eq!(pixels(ds.as_ref()).await, c32_want);

    let mut train_list = String::new();
    for (i, p) in c32.iter().enumerate() {
        let class = names[y[i] as usize].replace('/', "-");
        png(&t.join(format!("rgb/{class}/{i:03}.png")), 32, 3, p);
        png(&t.join(format!("mit67/Images/{class}/{i:03}.png")), 32, 3, p);
        train_list.push_str(&format!("{class}/{i:03}.png\n"));
    }
    write(&t.join("mit67/TrainImages.txt"), train_list.as_bytes());
    write(&t.join("mit67/TestImages.txt"), b"");
    let rgb_folder_want: Vec<_> = by_class.iter().map(|&i| c32_want[i].clone()).collect();
    let ds = open(&format!("folder:{}", t.join("rgb").display()), None).await;
    assert_eq!(pixels(ds.as_ref()).await, rgb_folder_want);
    let ds = open(&format!("mit67:{}", t.join("mit67").display()), Some("all")).await;
    assert_eq!(pixels(ds.as_ref()).await, rgb_folder_want);
    // The train list keeps its own (index) order.
    let ds = open(&format!("mit67:{}", t.join("mit67").display()), Some("train")).await;
    assert_eq!(pixels(ds.as_ref()).await, c32_want);

    // RGB 96 x 96: STL-10 (column-major planes on disk) against PNGs.
    let c96: Vec<Vec<u8>> = grey.iter().map(|g| rgb(g, 96)).collect();
    let refs: Vec<&[u8]> = c96.iter().map(Vec::as_slice).collect();
    write(&t.join("stl10/test_X.bin"), &stl10::encode_images(&refs).unwrap());
    write(&t.join("stl10/test_y.bin"), &stl10::encode_labels(&y).unwrap());
    write(&t.join("stl10/train_X.bin"), &stl10::encode_images(&refs[..3]).unwrap());
    write(&t.join("stl10/train_y.bin"), &stl10::encode_labels(&y[..3]).unwrap());
    let ds = open(&format!("stl10:{}", t.join("stl10").display()), Some("test")).await;
    let c96_want: Vec<_> = c96.iter().map(|p| (96u32, 96u32, 3u8, p.clone())).collect();
    assert_eq!(pixels(ds.as_ref()).await, c96_want);
    assert_eq!(labels(ds.as_ref()).await, want_labels);
    png(&t.join("p96.png"), 96, 3, &c96[5]);
    let back = image::open(t.join("p96.png")).unwrap().to_rgb8().into_raw();
    assert_eq!(back, c96[5]);
}

#[tokio::test]
async fn the_real_fashion_mnist_idx_files() {
    let dir = fashion_mnist();
    let ds = open(&format!("idx:{}", dir.display()), Some("test")).await;
    assert_eq!(ds.len(), 10_000);
    assert_eq!(ds.class_names().unwrap()[9], "Ankle boot");
    let l = labels(ds.as_ref()).await;
    for c in 0..10 {
        assert_eq!(l.iter().filter(|&&x| x == Some(c)).count(), 1000, "class {c}");
    }
    let (grey, y) = source();
    let r = ds.read(9_990..10_000).await.unwrap();
    assert_eq!(r.len(), 10);
    let first = ds.read(0..2).await.unwrap();
    assert_eq!(first[1].payload, Payload::Pixels { width: 28, height: 28, channels: 1, data: grey[1].clone() });
    assert_eq!(first[1].label, Some(y[1] as i64));
    let all = open(&format!("idx:{}", dir.display()), Some("all")).await;
    assert_eq!(all.len(), 70_000);
    assert_ne!(all.fingerprint(), ds.fingerprint());
}

/// scikit-learn's digits (8 x 8, 16 grey levels; fetched by scripts/fetch-digits.sh) as IDX,
/// npy pixels and a PNG class folder: the same pixels and labels.
#[tokio::test]
async fn the_digits_read_alike_in_idx_npy_and_png_folders() {
    let dir = std::env::var_os("IMCLUST_DIGITS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/data/digits"));
    assert!(dir.join("x.npy").exists(), "missing {}: run scripts/fetch-digits.sh (scripts/test.sh does it)", dir.display());
    let x = imclust_data::npy::read_matrix_f32(&dir.join("x.npy")).unwrap();
    let y = imclust_data::npy::read_labels(&dir.join("y.npy")).unwrap();
    let n = 200;
    let px: Vec<Vec<u8>> = (0..n).map(|i| x.row(i).iter().map(|&v| (v * 15.0) as u8).collect()).collect();
    let y8: Vec<u8> = y[..n].iter().map(|&l| l as u8).collect();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    write(&t.join("idx/train-images-idx3-ubyte"), &idx::encode_images(n, 8, 8, &px.concat()).unwrap());
    write(&t.join("idx/train-labels-idx1-ubyte.gz"), &gzip(&idx::encode_labels(&y8).unwrap()));
    write(&t.join("idx/t10k-images-idx3-ubyte"), &idx::encode_images(0, 8, 8, &[]).unwrap());
    write(&t.join("idx/t10k-labels-idx1-ubyte"), &idx::encode_labels(&[]).unwrap());
    write(&t.join("px.npy"), &[imclust_data::npy::encode_header(&[n, 8, 8, 1], "|u1"), px.concat()].concat());
    for (i, p) in px.iter().enumerate() {
        let p8 = image::GrayImage::from_raw(8, 8, p.clone()).unwrap();
        std::fs::create_dir_all(t.join(format!("png/{}", y8[i]))).unwrap();
        p8.save(t.join(format!("png/{}/{i:04}.png", y8[i]))).unwrap();
    }
    let want: Vec<(u32, u32, u8, Vec<u8>)> = px.iter().map(|p| (8, 8, 1, p.clone())).collect();
    let ds = open(&format!("idx:{}", t.join("idx").display()), Some("train")).await;
    assert_eq!(pixels(ds.as_ref()).await, want);
    assert_eq!(labels(ds.as_ref()).await, y8.iter().map(|&l| Some(l as i64)).collect::<Vec<_>>());
    assert_eq!(ds.class_names().unwrap().len(), 10);
    let ds = open(&format!("npy:{}", t.join("px.npy").display()), None).await;
    assert_eq!(pixels(ds.as_ref()).await, want);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (y8[i], i));
    let ds = open(&format!("folder:{}", t.join("png").display()), None).await;
    assert_eq!(pixels(ds.as_ref()).await, order.iter().map(|&i| want[i].clone()).collect::<Vec<_>>());
    assert_eq!(labels(ds.as_ref()).await, order.iter().map(|&i| Some(y8[i] as i64)).collect::<Vec<_>>());
}
