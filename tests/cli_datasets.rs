//! Datasets end to end through the real binary: `imclust dataset info` on the real
//! Fashion-MNIST IDX files; `imclust embed --dataset` with the real open_nsfw model giving the
//! same embeddings for the same real images (textile JPEGs) stored as CIFAR-10, CIFAR-100,
//! STL-10-free RGB folders, MIT Indoor-67 and manifests; the embedding cache (a second run
//! embeds nothing); bad records (fail / skip with errors.jsonl); and a run whose dataset,
//! output and cache are on an S3 server.

#[path = "common.rs"]
mod common;
use common::*;
use imclust_data::datasets::cifar;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fashion_mnist() -> PathBuf {
    fixture("IMCLUST_FASHION_MNIST", ".cache/data/fashion-mnist", "scripts/fetch-fashion-mnist.sh")
}

fn textiles() -> PathBuf {
    fixture("IMCLUST_TEXTILES", ".cache/data/textiles", "scripts/fetch-textiles.sh")
}

/// open_nsfw prepared as a bundle under `dir`.
fn open_nsfw_bundle(dir: &Path) -> PathBuf {
    let bundle = dir.join("open-nsfw");
    ok(&["models", "prepare", "open-nsfw", "--model", s(&open_nsfw()), "--out", s(&bundle)]);
    bundle
}


/// `per` real textile JPEGs of each class, resized to 32 x 32 RGB: (class, pixels), classes in
/// sorted order.
fn textile_pixels(per: usize) -> (Vec<String>, Vec<(u8, Vec<u8>)>) {
    let root = textiles();
    let mut classes: Vec<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    classes.sort();
    let mut out = Vec::new();
    for (c, name) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(name)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.iter().take(per) {
            let img = image::open(f).unwrap().to_rgb8();
            let small = image::imageops::resize(&img, 32, 32, image::imageops::FilterType::Triangle);
            out.push((c as u8, small.into_raw()));
        }
    }
    (classes, out)
}

/// [`textile_pixels`] written as a PNG class folder `dir/<class>/<index>.png`.
fn textile_folder(dir: &Path, per: usize) -> (Vec<String>, Vec<(u8, Vec<u8>)>) {
    let (classes, imgs) = textile_pixels(per);
    for (i, (l, p)) in imgs.iter().enumerate() {
        png(&dir.join(format!("{}/{i:03}.png", classes[*l as usize])), p);
    }
    (classes, imgs)
}

fn png(path: &Path, pixels: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::save_buffer(path, pixels, 32, 32, image::ExtendedColorType::Rgb8).unwrap();
}

fn read_f32(p: &Path) -> imclust_data::npy::Matrix {
    imclust_data::npy::read_matrix_f32(p).unwrap()
}

#[test]
fn dataset_info_on_the_real_fashion_mnist() {
    let fm = fashion_mnist();
    let out = ok(&["dataset", "info", &format!("idx:{}", fm.display()), "--split", "test", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["records"], 10_000);
    assert_eq!(j["classes"][0], "T-shirt/top");
    assert_eq!(j["label_counts"], serde_json::json!(vec![1000; 10]));
    assert_eq!(j["shards"], 3); // 4096-record shards
    assert_eq!(j["fingerprint"].as_str().unwrap().len(), 64);
    let text = ok(&["dataset", "info", &format!("idx:{}", fm.display()), "--split", "train"]);
    assert!(text.contains("records      60000") && text.contains("Ankle boot") && text.contains("6000"), "{text}");
    let err = fails(&["dataset", "info", &format!("idx:{}", fm.display()), "--split", "validation"]);
    assert!(err.contains("train, test, all"), "{err}");
    let err = fails(&["dataset", "info", "imagenet:/data"]);
    assert!(err.contains("unknown") && err.contains("cifar10"), "{err}");
}

#[test]
fn the_same_real_images_embed_identically_from_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let bundle = open_nsfw_bundle(t);
    let (classes, imgs) = textile_pixels(4);
    let n = imgs.len();
    // CIFAR-10 (five train batches and a test batch; split all), CIFAR-100, a PNG class
    // folder, MIT Indoor-67, JSONL / CSV manifests, npy pixels.
    let recs: Vec<(u8, &[u8])> = imgs.iter().map(|(l, p)| (*l, p.as_slice())).collect();
    std::fs::create_dir_all(t.join("cifar10")).unwrap();
    for b in 0..5 {
        std::fs::write(t.join(format!("cifar10/data_batch_{}.bin", b + 1)), cifar::encode_cifar10(&recs[b * 2..b * 2 + 2]).unwrap()).unwrap();
    }
    std::fs::write(t.join("cifar10/test_batch.bin"), cifar::encode_cifar10(&recs[10..]).unwrap()).unwrap();
    // CIFAR-10 has ten classes; the textiles use the first three.
    let names: Vec<String> = classes.iter().cloned().chain((3..10).map(|i| format!("unused-{i}"))).collect();
    std::fs::write(t.join("cifar10/batches.meta.txt"), format!("{}\n", names.join("\n"))).unwrap();
    std::fs::create_dir_all(t.join("cifar100")).unwrap();
    let r100: Vec<(u8, u8, &[u8])> = imgs.iter().map(|(l, p)| (0, *l, p.as_slice())).collect();
    std::fs::write(t.join("cifar100/train.bin"), cifar::encode_cifar100(&r100[..7]).unwrap()).unwrap();
    std::fs::write(t.join("cifar100/test.bin"), cifar::encode_cifar100(&r100[7..]).unwrap()).unwrap();
    let mut jsonl = String::new();
    let mut csv = String::from("uri,label\n");
    for (i, (l, p)) in imgs.iter().enumerate() {
        let rel = format!("{}/{i:03}.png", classes[*l as usize]);
        png(&t.join("folder").join(&rel), p);
        png(&t.join("mit67/Images").join(&rel), p);
        jsonl.push_str(&format!("{{\"uri\": \"folder/{rel}\", \"label\": \"{}\"}}\n", classes[*l as usize]));
        csv.push_str(&format!("folder/{rel},{}\n", classes[*l as usize]));
    }
    std::fs::write(t.join("m.jsonl"), jsonl).unwrap();
    std::fs::write(t.join("m.csv"), csv).unwrap();
    let flat: Vec<u8> = imgs.iter().flat_map(|(_, p)| p.clone()).collect();
    std::fs::write(t.join("px.npy"), [imclust_data::npy::encode_header(&[n, 32, 32, 3], "|u1"), flat].concat()).unwrap();

    let specs = [
        ("cifar10", format!("cifar10:{}", t.join("cifar10").display()), Some("all")),
        ("cifar100", format!("cifar100:{}", t.join("cifar100").display()), Some("all")),
        ("folder", format!("folder:{}", t.join("folder").display()), None),
        ("mit67", format!("mit67:{}", t.join("mit67").display()), None),
        ("jsonl", format!("manifest:{}", t.join("m.jsonl").display()), None),
        ("csv", format!("manifest:{}", t.join("m.csv").display()), None),
        ("npy", format!("npy:{}", t.join("px.npy").display()), None),
    ];
    let mut reference: Option<imclust_data::npy::Matrix> = None;
    for (name, spec, split) in &specs {
        let e = t.join(format!("{name}.npy"));
        let y = t.join(format!("{name}.y.npy"));
        let mut args = vec!["embed", "--bundle", s(&bundle), "--dataset", spec.as_str(), "--out", s(&e), "--batch-size", "5"];
        if let Some(sp) = split {
            args.extend(["--split", sp]);
        }
        if *name != "npy" {
            args.extend(["--labels-out", s(&y)]);
        }
        let out = ok(&args);
        assert!(out.contains(&format!("embedded {n} of {n} records")), "{name}: {out}");
        let m = read_f32(&e);
        assert_eq!((m.rows, m.cols), (n, 1024), "{name}");
        if *name != "npy" {
            let want: Vec<i64> = imgs.iter().map(|(l, _)| *l as i64).collect();
            assert_eq!(imclust_data::npy::read_labels(&y).unwrap(), want, "{name}");
        }
        match &reference {
            None => reference = Some(m),
            // The images were written in class order, so every format lists them alike.
            Some(r) => assert!(r.data == m.data, "{name}: embeddings differ from cifar10's"),
        }
    }
    assert!(reference.unwrap().data.iter().any(|&v| v > 0.1), "real features, not zeros");
}

#[test]
fn a_second_run_with_the_cache_embeds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let bundle = toy_bundle(t);
    let (classes, imgs) = textile_folder(&t.join("images"), 5);
    let spec = format!("folder:{}", t.join("images").display());
    let cache = t.join("cache");
    let run = |out: &str| {
        ok(&["embed", "--bundle", s(&bundle), "--dataset", &spec, "--out", s(&t.join(out)), "--cache", s(&cache), "--shard-size", "4", "--batch-size", "3"])
    };
    let first = run("a.npy");
    assert!(first.contains("4 shard(s), cache hits 0, misses 4, model invocations 7"), "{first}");
    let second = run("b.npy");
    assert!(second.contains("cache hits 4, misses 0, model invocations 0"), "{second}");
    assert_eq!(std::fs::read(t.join("a.npy")).unwrap(), std::fs::read(t.join("b.npy")).unwrap());
    // A changed image re-embeds only its shard (folders fingerprint each shard by its files).
    png(&t.join(format!("images/{}/000.png", classes[0])), &imgs[1].1);
    let third = run("c.npy");
    assert!(third.contains("cache hits 3, misses 1"), "{third}");
    // Cached and fresh shards together equal an uncached run.
    ok(&["embed", "--bundle", s(&bundle), "--dataset", &spec, "--out", s(&t.join("fresh.npy"))]);
    assert_eq!(std::fs::read(t.join("c.npy")).unwrap(), std::fs::read(t.join("fresh.npy")).unwrap());
    // Another model is another key, the same shards; fusing two models caches each.
    let fused = ok(&["embed", "--bundle", s(&bundle), "--bundle", s(&bundle), "--dataset", &spec, "--out", s(&t.join("d.npy")), "--cache", s(&cache), "--shard-size", "4"]);
    assert!(fused.contains("cache hits 8, misses 0, model invocations 0"), "{fused}");
}

#[test]
fn bad_records_fail_or_are_skipped_and_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let bundle = toy_bundle(t);
    let (classes, imgs) = textile_folder(&t.join("images"), 3);
    let good = std::fs::read(t.join(format!("images/{}/003.png", classes[1]))).unwrap();
    std::fs::write(t.join(format!("images/{}/100.png", classes[1])), &good[..good.len() / 2]).unwrap();
    std::fs::write(t.join(format!("images/{}/101.jpg", classes[2])), b"this is not a JPEG").unwrap();
    let spec = format!("folder:{}", t.join("images").display());
    let out = t.join("e.npy");

    let err = fails(&["embed", "--bundle", s(&bundle), "--dataset", &spec, "--out", s(&out)]);
    assert!(err.contains("100.png") && err.contains("truncated") && err.contains("--on-bad-record skip"), "{err}");
    assert!(!out.exists(), "nothing is written on failure");

    let o = ok(&["embed", "--bundle", s(&bundle), "--dataset", &spec, "--out", s(&out), "--on-bad-record", "skip", "--labels-out", s(&t.join("y.npy"))]);
    assert!(o.contains("embedded 9 of 11 records") && o.contains("bad records 2"), "{o}");
    let errors = std::fs::read_to_string(t.join("e.errors.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = errors.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{errors}");
    assert_eq!(lines[0]["index"], 6);
    assert!(lines[0]["id"].as_str().unwrap().ends_with("100.png") && lines[0]["reason"].as_str().unwrap().contains("truncated"), "{errors}");
    assert!(lines[1]["id"].as_str().unwrap().ends_with("101.jpg"), "{errors}");
    let m = json(&t.join("e.metrics.json"));
    assert_eq!((m["records"].as_u64(), m["embedded"].as_u64(), m["bad_records"].as_u64()), (Some(11), Some(9), Some(2)));
    assert_eq!(m["on_bad_record"], "skip");
    let index = imclust_data::npy::read_labels(&t.join("e.index.npy")).unwrap();
    assert_eq!(index, vec![0, 1, 2, 3, 4, 5, 7, 8, 9]);
    assert_eq!(read_f32(&out).rows, 9);
    assert_eq!(imclust_data::npy::read_labels(&t.join("y.npy")).unwrap(), vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);

    // A truncated CIFAR file is a broken dataset, not a bad record: refused under any policy.
    std::fs::create_dir_all(t.join("cifar")).unwrap();
    let recs: Vec<(u8, &[u8])> = imgs.iter().map(|(l, p)| (*l, p.as_slice())).collect();
    for b in 1..=5 {
        std::fs::write(t.join(format!("cifar/data_batch_{b}.bin")), cifar::encode_cifar10(&recs[..1]).unwrap()).unwrap();
    }
    let bytes = cifar::encode_cifar10(&recs[..2]).unwrap();
    std::fs::write(t.join("cifar/test_batch.bin"), &bytes[..bytes.len() - 100]).unwrap();
    let err = fails(&["embed", "--bundle", s(&bundle), "--dataset", &format!("cifar10:{}", t.join("cifar").display()), "--split", "test", "--out", s(&out), "--on-bad-record", "skip"]);
    assert!(err.contains("test_batch.bin") && err.contains("3073"), "{err}");
    // A list file naming a missing image: a bad record, listed.
    png(&t.join("mit/Images/a/1.png"), &imgs[0].1);
    std::fs::write(t.join("mit/TrainImages.txt"), "a/1.png\na/2.png\n").unwrap();
    std::fs::write(t.join("mit/TestImages.txt"), "").unwrap();
    let spec = format!("mit67:{}", t.join("mit").display());
    let err = fails(&["embed", "--bundle", s(&bundle), "--dataset", &spec, "--split", "train", "--out", s(&t.join("m.npy"))]);
    assert!(err.contains("a/2.png") && err.contains("TrainImages.txt"), "{err}");
    ok(&["embed", "--bundle", s(&bundle), "--dataset", &spec, "--split", "train", "--out", s(&t.join("m.npy")), "--on-bad-record", "skip"]);
    assert!(std::fs::read_to_string(t.join("m.errors.jsonl")).unwrap().contains("a/2.png"));
}

#[test]
fn dataset_output_and_cache_on_s3() {
    let server = imclust_testkit::S3Server::start();
    for b in ["data", "out", "cache"] {
        server.create_bucket(b);
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let bundle = toy_bundle(t);
    let (classes, imgs) = textile_pixels(4);
    let mut manifest = String::new();
    for (i, (l, p)) in imgs.iter().enumerate() {
        let rel = format!("{}/{i:03}.png", classes[*l as usize]);
        png(&t.join("images").join(&rel), p);
        png(&server.object_path("data", &format!("textiles/{rel}")), p);
        manifest.push_str(&format!("{{\"uri\": \"s3://data/textiles/{rel}\", \"label\": \"{}\"}}\n", classes[*l as usize]));
    }
    std::fs::write(server.object_path("data", "m.jsonl"), manifest).unwrap();
    let env = server.env();
    let run = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args).current_dir(std::env::temp_dir());
        for (k, v) in &env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let local = t.join("local.npy");
    ok(&["embed", "--bundle", s(&bundle), "--dataset", &format!("folder:{}", t.join("images").display()), "--out", s(&local)]);
    for (spec, out) in [("folder:s3://data/textiles", "s3://out/folder/e.npy"), ("manifest:s3://data/m.jsonl", "s3://out/manifest/e.npy")] {
        let args = ["embed", "--bundle", s(&bundle), "--dataset", spec, "--out", out, "--cache", "s3://cache/emb", "--shard-size", "5"];
        let o = run(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let key = out.strip_prefix("s3://out/").unwrap();
        assert_eq!(std::fs::read(server.object_path("out", key)).unwrap(), std::fs::read(&local).unwrap(), "{spec}");
        let again = run(&args);
        let stdout = String::from_utf8_lossy(&again.stdout);
        assert!(stdout.contains("cache hits 3, misses 0, model invocations 0"), "{spec}: {stdout}");
    }
    // k-means with its committed output on S3.
    let y = t.join("y.npy");
    imclust_data::npy::write_i32(&y, &[imgs.len()], &imgs.iter().map(|(l, _)| *l as i32).collect::<Vec<_>>()).unwrap();
    let o = run(&["cluster", "--embeddings", s(&local), "--labels", s(&y), "--k", "3", "--output", "s3://out/jobs", "--job-id", "textiles"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(server.object_path("out", "jobs/textiles/manifest.json").exists());
    assert!(server.object_path("out", "jobs/textiles/assignments.parquet").exists());
    // A missing bucket and wrong credentials are named, without the secret.
    let o = run(&["embed", "--bundle", s(&bundle), "--dataset", "folder:s3://nope/x", "--out", s(&t.join("z.npy"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("s3://nope/x") && err.contains("bucket does not exist"), "{err}");
    let mut c = Command::new(BIN);
    c.args(["dataset", "info", "folder:s3://data/textiles"]);
    for (k, v) in &env {
        c.env(k, if k == "AWS_SECRET_ACCESS_KEY" { "wrong-secret-123" } else { v });
    }
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("access denied") && !err.contains("wrong-secret-123") && !err.contains(&server.secret_key), "{err}");
}

/// A manifest served over plain HTTP (read-only storage), its images too.
#[test]
fn a_manifest_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let bundle = toy_bundle(t);
    let (classes, imgs) = textile_pixels(2);
    let mut manifest = String::new();
    for (i, (l, p)) in imgs.iter().enumerate() {
        let rel = format!("img/{}/{i}.png", classes[*l as usize]);
        png(&t.join("www").join(&rel), p);
        manifest.push_str(&format!("{{\"uri\": \"{rel}\", \"label\": \"{}\"}}\n", classes[*l as usize]));
    }
    std::fs::write(t.join("www/m.jsonl"), manifest).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(python())
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory", s(&t.join("www"))])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the HTTP server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}/m.jsonl");
    let info = run(&["dataset", "info", &format!("manifest:{url}"), "--json"]);
    let remote = t.join("remote.npy");
    let embedded = run(&["embed", "--bundle", s(&bundle), "--dataset", &format!("manifest:{url}"), "--out", s(&remote)]);
    let refused = run(&["embed", "--bundle", s(&bundle), "--dataset", &format!("manifest:{url}"), "--out", &format!("http://127.0.0.1:{port}/e.npy")]);
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    let j: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!((j["records"].as_u64(), j["label_counts"].clone()), (Some(6), serde_json::json!([2, 2, 2])));
    assert!(embedded.status.success(), "{}", String::from_utf8_lossy(&embedded.stderr));
    let local = t.join("local.npy");
    ok(&["embed", "--bundle", s(&bundle), "--dataset", &format!("manifest:{}", t.join("www/m.jsonl").display()), "--out", s(&local)]);
    assert_eq!(std::fs::read(&remote).unwrap(), std::fs::read(&local).unwrap());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("read-only"), "{err}");
}
