//! `storage::{Storage, Location}` against a real S3 protocol server (s3s-fs, in-process).

use bytes::Bytes;
use imclust_data::storage::{MULTIPART_THRESHOLD, PART_SIZE, Storage, StorageOptions};
use imclust_testkit::S3Server;
use std::time::{Duration, Instant};

fn pattern(len: usize) -> Vec<u8> {
    // Not periodic with any part size, so a misplaced or repeated part shows.
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i / 7919) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_range_head_list() {
    let s3 = S3Server::start();
    s3.create_bucket("data");
    let storage = Storage::new(s3.storage_options());
    let root = storage.locate("s3://data/prefix/").unwrap();

    let a = root.join("a.bin");
    assert_eq!(a.url(), "s3://data/prefix/a.bin");
    a.put(Bytes::from_static(b"0123456789")).await.unwrap();
    root.join("sub/b.bin").put(Bytes::from_static(b"xy")).await.unwrap();
    storage.locate("s3://data/other/c.bin").unwrap().put(Bytes::from_static(b"zzz")).await.unwrap();
    // The objects are files under the server's root.
    assert_eq!(std::fs::read(s3.object_path("data", "prefix/a.bin")).unwrap(), b"0123456789");

    assert_eq!(&a.get().await.unwrap()[..], b"0123456789");
    assert_eq!(&a.get_range(2..5).await.unwrap()[..], b"234");
    assert_eq!(&a.get_range(9..10).await.unwrap()[..], b"9");
    assert!(a.get_range(3..3).await.unwrap().is_empty());
    let parts = a.get_ranges(&[0..2, 8..10, 4..6]).await.unwrap();
    assert_eq!(parts.iter().map(|b| &b[..]).collect::<Vec<_>>(), vec![&b"01"[..], b"89", b"45"]);

    let meta = a.head().await.unwrap();
    assert_eq!(meta.size, 10);
    assert!(!meta.version.is_empty());
    assert_eq!(a.head_opt().await.unwrap(), Some(meta.clone()));
    assert_eq!(root.join("missing.bin").head_opt().await.unwrap(), None);

    // Rewriting changes the version (the ETag is the content's MD5).
    a.put(Bytes::from_static(b"9876543210")).await.unwrap();
    let meta2 = a.head().await.unwrap();
    assert_eq!(meta2.size, 10);
    assert_ne!(meta2.version, meta.version);

    let listed: Vec<(String, u64)> = root.list().await.unwrap().into_iter().map(|(p, m)| (p, m.size)).collect();
    assert_eq!(listed, vec![("a.bin".to_string(), 10), ("sub/b.bin".to_string(), 2)]);
    // A prefix written without the trailing slash lists the same.
    let listed2: Vec<String> =
        storage.locate("s3://data/prefix").unwrap().list().await.unwrap().into_iter().map(|(p, _)| p).collect();
    assert_eq!(listed2, vec!["a.bin", "sub/b.bin"]);
    // The bucket root lists everything, with full keys.
    let all: Vec<String> =
        storage.locate("s3://data").unwrap().list().await.unwrap().into_iter().map(|(p, _)| p).collect();
    assert_eq!(all, vec!["other/c.bin", "prefix/a.bin", "prefix/sub/b.bin"]);
    // An empty prefix lists nothing (not an error).
    assert!(root.join("empty/").list().await.unwrap().is_empty());

    // A range past the end is an error naming the URL.
    let e = a.get_range(5..20).await.unwrap_err().to_string();
    eprintln!("range past the end: {e}");
    assert!(e.contains("s3://data/prefix/a.bin"), "{e}");

    // Delete, and deleting again is fine.
    a.delete().await.unwrap();
    a.delete().await.unwrap();
    assert_eq!(a.head_opt().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_reads_back_exactly() {
    let s3 = S3Server::start();
    s3.create_bucket("big");
    let storage = Storage::new(s3.storage_options());
    let len = MULTIPART_THRESHOLD + 3 * (1 << 20) + 123;
    let data = pattern(len);
    let loc = storage.locate("s3://big/objects/large.bin").unwrap();
    loc.put(Bytes::from(data.clone())).await.unwrap();

    let meta = loc.head().await.unwrap();
    assert_eq!(meta.size, len as u64);
    // s3s-fs gives a multipart object the ETag "MD5OFPARTMD5S-PARTS": it did go up in parts.
    let parts = len.div_ceil(PART_SIZE);
    assert!(meta.version.trim_matches('"').ends_with(&format!("-{parts}")), "{meta:?}");

    let back = loc.get().await.unwrap();
    assert_eq!(back.len(), len);
    assert!(back[..] == data[..], "multipart object differs from what was written");
    // A range across the first part boundary, and the tail.
    let r = (PART_SIZE as u64 - 1000)..(PART_SIZE as u64 + 1000);
    assert_eq!(&loc.get_range(r.clone()).await.unwrap()[..], &data[r.start as usize..r.end as usize]);
    let tail = (len as u64 - 10)..len as u64;
    assert_eq!(&loc.get_range(tail).await.unwrap()[..], &data[len - 10..]);
    assert_eq!(std::fs::read(s3.object_path("big", "objects/large.bin")).unwrap(), data);

    // Just under the threshold goes up in one request (a plain MD5 ETag, no part count).
    let small = storage.locate("s3://big/objects/small.bin").unwrap();
    let data = pattern(MULTIPART_THRESHOLD - 1);
    small.put(Bytes::from(data.clone())).await.unwrap();
    let meta = small.head().await.unwrap();
    assert!(!meta.version.contains('-'), "{meta:?}");
    assert!(small.get().await.unwrap()[..] == data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_is_not_found() {
    let s3 = S3Server::start();
    s3.create_bucket("data");
    let storage = Storage::new(s3.storage_options());
    let loc = storage.locate("s3://data/no/such.bin").unwrap();
    for (what, e) in [
        ("get", loc.get().await.unwrap_err().to_string()),
        ("get_range", loc.get_range(0..4).await.unwrap_err().to_string()),
        ("head", loc.head().await.unwrap_err().to_string()),
    ] {
        eprintln!("missing key, {what}: {e}");
        assert!(e.contains("s3://data/no/such.bin") && e.contains("not found"), "{what}: {e}");
    }
}

/// Every operation on a bucket that does not exist, with its message.
async fn missing_bucket_errors(s3: &S3Server) -> Vec<(&'static str, String)> {
    let storage = Storage::new(s3.storage_options());
    let loc = storage.locate("s3://nobucket/x.bin").unwrap();
    let prefix = storage.locate("s3://nobucket/some/prefix/").unwrap();
    vec![
        ("list", prefix.list().await.unwrap_err().to_string()),
        ("get", loc.get().await.unwrap_err().to_string()),
        ("get_range", loc.get_range(0..4).await.unwrap_err().to_string()),
        ("head", loc.head().await.unwrap_err().to_string()),
        ("put", loc.put(Bytes::from_static(b"x")).await.unwrap_err().to_string()),
        ("put multipart", loc.put(Bytes::from(vec![0u8; MULTIPART_THRESHOLD])).await.unwrap_err().to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_named() {
    let s3 = S3Server::start();
    for (what, e) in &missing_bucket_errors(&s3).await {
        eprintln!("missing bucket, {what}: {e}");
        assert!(e.contains("s3://nobucket/"), "{what}: {e}");
        assert!(e.contains("bucket does not exist") || e.contains("not found"), "{what}: {e}");
    }
    // Writing did not create the bucket (S3 never does; the test server must not either).
    assert!(!s3.root.path().join("nobucket").exists());
}

/// What the messages should say; HEAD responses have no body, so `head` cannot tell a
/// missing bucket from a missing key without a HeadBucket request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn missing_bucket_says_so() {
    let s3 = S3Server::start();
    for (what, e) in missing_bucket_errors(&s3).await.iter().filter(|(what, _)| *what != "head") {
        assert!(e.contains("s3://nobucket/") && e.contains("bucket does not exist"), "{what}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_access_denied_without_the_secret() {
    let s3 = S3Server::start();
    s3.create_bucket("data");
    // The object exists: a refusal is about the credentials, not the key.
    Storage::new(s3.storage_options()).locate("s3://data/x.bin").unwrap().put(Bytes::from_static(b"x")).await.unwrap();

    let wrong = "wrong-secret-ZXCVBNM1234567890";
    let options = StorageOptions { secret_access_key: Some(wrong.into()), ..s3.storage_options() };
    let storage = Storage::new(options);
    let loc = storage.locate("s3://data/x.bin").unwrap();
    let msgs = [
        ("get", loc.get().await.unwrap_err().to_string()),
        ("head", loc.head().await.unwrap_err().to_string()),
        ("put", loc.put(Bytes::from_static(b"y")).await.unwrap_err().to_string()),
        ("put multipart", loc.put(Bytes::from(vec![0u8; MULTIPART_THRESHOLD])).await.unwrap_err().to_string()),
    ];
    for (what, e) in &msgs {
        eprintln!("wrong secret, {what}: {e}");
        assert!(e.contains("s3://data/"), "{what}: {e}");
        assert!(e.contains("access denied"), "{what}: {e}");
        assert!(!e.contains(wrong) && !e.contains(&s3.secret_key), "{what} leaks a secret: {e}");
    }
    // An unknown access key is refused too.
    let options = StorageOptions { access_key_id: Some("NOSUCHKEY".into()), ..s3.storage_options() };
    let e = Storage::new(options).locate("s3://data/x.bin").unwrap().get().await.unwrap_err().to_string();
    eprintln!("unknown access key, get: {e}");
    assert!(e.contains("s3://data/x.bin") && e.contains("access denied"), "{e}");
    assert!(!e.contains(&s3.secret_key), "{e}");
    // The object is unchanged.
    assert_eq!(std::fs::read(s3.object_path("data", "x.bin")).unwrap(), b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn wrong_secret_list_is_access_denied() {
    let s3 = S3Server::start();
    s3.create_bucket("data");
    let options = StorageOptions { secret_access_key: Some("wrong-secret".into()), ..s3.storage_options() };
    let e = Storage::new(options).locate("s3://data/").unwrap().list().await.unwrap_err().to_string();
    assert!(e.contains("s3://data/") && e.contains("access denied") && !e.contains("wrong-secret"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_fails_quickly() {
    let endpoint = imclust_testkit::closed_endpoint();
    let options = StorageOptions {
        endpoint: Some(endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("unreachable-secret".into()),
        allow_http: Some(true),
        ..Default::default()
    };
    let storage = Storage::new(options);
    let loc = storage.locate("s3://data/x.bin").unwrap();
    let t = Instant::now();
    let e = loc.get().await.unwrap_err().to_string();
    let took = t.elapsed();
    eprintln!("unreachable endpoint ({took:.2?}), get: {e}");
    assert!(took < Duration::from_secs(30), "took {took:?}: {e}");
    assert!(e.contains("s3://data/x.bin") && e.contains("unreachable"), "{e}");
    assert!(!e.contains("unreachable-secret"), "{e}");
    let t = Instant::now();
    let e = loc.head().await.unwrap_err().to_string();
    eprintln!("unreachable endpoint ({:.2?}), head: {e}", t.elapsed());
    assert!(e.contains("s3://data/x.bin") && e.contains("unreachable"), "{e}");
}

#[test]
fn server_works_from_sync_code_and_stops_on_drop() {
    let s3 = S3Server::start();
    s3.create_bucket("data");
    let env = s3.env();
    for k in ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ALLOW_HTTP"] {
        assert!(env.iter().any(|(name, _)| name == k), "{k} missing from {env:?}");
    }
    let rt = imclust_data::storage::runtime().unwrap();
    let storage = Storage::new(s3.storage_options());
    let loc = storage.locate("s3://data/k").unwrap();
    rt.block_on(loc.put(Bytes::from_static(b"hello"))).unwrap();
    assert_eq!(&rt.block_on(loc.get()).unwrap()[..], b"hello");
    let root = s3.root.path().to_path_buf();
    let endpoint = s3.endpoint.clone();
    drop(s3);
    assert!(!root.exists(), "the server's directory outlived it");
    let addr = endpoint.trim_start_matches("http://");
    assert!(std::net::TcpStream::connect(addr).is_err(), "{endpoint} still accepts connections");
}

/// A job output on S3 with an embedding shard above the multipart threshold: uploaded in
/// parts, invisible to readers until the manifest is committed, then verified byte-exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_job_output_goes_up_in_parts_and_commits_last() {
    use imclust_data::output::{Assignments, ManifestInfo, OutputReader, OutputWriter};
    let s3 = S3Server::start();
    s3.create_bucket("out");
    let storage = Storage::new(s3.storage_options());
    let prefix = storage.locate("s3://out/jobs").unwrap();
    let mut w = OutputWriter::create(prefix.clone(), "big").await.unwrap();
    let (rows, dim) = (4500usize, 1024usize);
    let data: Vec<f32> = (0..rows * dim).map(|i| ((i * 7919) % 10007) as f32 / 10007.0).collect();
    assert!(rows * dim * 4 > MULTIPART_THRESHOLD);
    w.put_embedding_shard("open-nsfw", "shard-00000", &data, dim, false).await.unwrap();
    let a = Assignments {
        index: (0..rows as u64).collect(),
        ids: (0..rows).map(|i| format!("s3://data/img/{i}.jpg")).collect(),
        uris: None,
        labels: None,
        clusters: (0..rows as u32).map(|i| i % 7).collect(),
        distances: vec![0.5; rows],
        margins: vec![0.25; rows],
    };
    w.put_assignments(&a).await.unwrap();
    let job = w.location().clone();
    // Not committed yet: a reader refuses the prefix.
    let e = OutputReader::open(job.clone()).await.err().unwrap().to_string();
    assert!(e.contains("manifest.json"), "{e}");
    w.commit(ManifestInfo::default()).await.unwrap();
    let r = OutputReader::open(job.clone()).await.unwrap();
    r.verify().await.unwrap();
    let shard = r.file("embeddings/open-nsfw/shard-00000.npy").await.unwrap();
    let m = imclust_data::npy::read_matrix_f32_bytes("shard", &shard).unwrap();
    assert_eq!((m.rows, m.cols), (rows, dim));
    assert!(m.data == data);
    assert_eq!(r.assignments().await.unwrap().clusters, a.clusters);
    // The server holds the shard as a multipart object (its ETag counts the parts).
    let etag = job.join("embeddings/open-nsfw/shard-00000.npy").head().await.unwrap().version;
    assert!(etag.trim_matches('"').ends_with(&format!("-{}", (rows * dim * 4 + 128).div_ceil(PART_SIZE))), "{etag}");
    // A committed job is never overwritten.
    let e = OutputWriter::create(prefix, "big").await.err().unwrap().to_string();
    assert!(e.contains("big") && e.contains("manifest.json"), "{e}");
}
