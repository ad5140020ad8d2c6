//! One URL type over `object_store`: local paths and `file://`, `s3://`, `gs://`, `az://`
//! (also `abfs://`, `azure://`) and read-only `http(s)://`.
//!
//! A [`Storage`] holds the options (endpoint, region, credentials) and one client per
//! bucket, shared by every [`Location`] in it, so a manifest naming a million objects in one
//! bucket uses one connection pool. Errors name the URL (never a credential) and say what to
//! check.

use crate::error::{DataError, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};
use serde::Deserialize;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

/// Objects at least this large are uploaded in parts (S3 multipart, in order, with up to
/// [`PUT_PARALLEL_PARTS`] parts in flight).
pub const MULTIPART_THRESHOLD: usize = 16 << 20;
/// Part size of multipart uploads (S3 requires at least 5 MiB per part but the last).
pub const PART_SIZE: usize = 8 << 20;
const PUT_PARALLEL_PARTS: usize = 4;

/// Options of object stores. Every field may also come from the environment
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...); a field
/// set here wins over the environment.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageOptions {
    /// S3 endpoint for S3-compatible servers (MinIO, Ceph, moto), e.g. `http://minio:9000`.
    /// Requests are then path-style (`endpoint/bucket/key`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Allow plain `http://` endpoints (default: only when the endpoint itself is http://).
    pub allow_http: Option<bool>,
    /// Virtual-hosted-style S3 requests (`bucket.endpoint/key`); default path-style when an
    /// endpoint is set.
    pub virtual_hosted_style: Option<bool>,
    /// Retries of a failed request (default 3); an unreachable endpoint fails after them.
    pub max_retries: Option<usize>,
    /// Seconds before one request times out (default 60).
    pub timeout_seconds: Option<u64>,
}

impl std::fmt::Debug for StorageOptions {
    /// Never prints a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StorageOptions({self})")
    }
}

impl std::fmt::Display for StorageOptions {
    /// The options without their secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "endpoint={} region={} credentials={}",
            self.endpoint.as_deref().unwrap_or("(default)"),
            self.region.as_deref().unwrap_or("(default)"),
            if self.access_key_id.is_some() { "(set)" } else { "(from environment)" }
        )
    }
}

/// Size and version of an object: what a fingerprint is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    /// ETag, or for local files the modification time in nanoseconds.
    pub version: String,
}

/// Object stores by bucket, with their options. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    options: StorageOptions,
    stores: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
}

/// One object or prefix: a store and a path in it, and the URL as the user wrote it.
#[derive(Clone, Debug)]
pub struct Location {
    url: String,
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    local: Option<std::path::PathBuf>,
    /// http(s):// locations are read-only.
    read_only: bool,
}

fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    // The TLS stack is built without a default provider (ring instead of aws-lc: no C
    // toolchain needed); install ring once. An error means one is already installed.
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Storage {
    pub fn new(options: StorageOptions) -> Self {
        Storage { options, stores: Default::default() }
    }

    pub fn options(&self) -> &StorageOptions {
        &self.options
    }

    /// The location of `url`: a local path (absolute or relative to the working directory),
    /// `file://`, `s3://bucket/key`, `gs://bucket/key`, `az://container/key`, or
    /// `http(s)://host/path` (read-only).
    pub fn locate(&self, url: &str) -> Result<Location> {
        let err = |reason: String| DataError::storage(url, reason);
        let Some((scheme, rest)) = url.split_once("://").filter(|(s, _)| !s.contains('/') && s.len() > 1) else {
            return self.local(url, std::path::PathBuf::from(url));
        };
        match scheme {
            "file" => {
                let p = url::Url::parse(url).map_err(|e| err(format!("not a valid file:// URL ({e})")))?;
                let p = p.to_file_path().map_err(|()| err("not a local file URL: use file:///absolute/path".into()))?;
                self.local(url, p)
            }
            "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "azure" | "http" | "https" => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(err(format!("no bucket in the URL: write {scheme}://BUCKET/KEY")));
                }
                let store = self.store(scheme, bucket, url)?;
                let path = ObjectPath::parse(key.trim_end_matches('/'))
                    .map_err(|e| err(format!("invalid object key '{key}' ({e})")))?;
                Ok(Location { url: url.to_string(), store, path, local: None, read_only: scheme.starts_with("http") })
            }
            other => Err(err(format!(
                "unknown URL scheme '{other}': use a local path, file://, s3://, gs://, az:// or http(s)://"
            ))),
        }
    }

    fn local(&self, url: &str, path: std::path::PathBuf) -> Result<Location> {
        let abs = std::path::absolute(&path).map_err(|e| DataError::io(&path, e))?;
        // Object paths have no `.` or `..` segments: resolve them lexically (the path may
        // not exist yet, e.g. an output prefix).
        let mut clean = std::path::PathBuf::new();
        for c in abs.components() {
            match c {
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                std::path::Component::CurDir => {}
                c => clean.push(c),
            }
        }
        let abs = clean;
        let op = ObjectPath::from_absolute_path(&abs)
            .map_err(|e| DataError::storage(url, format!("not a usable local path ({e})")))?;
        let store = self.cached("file://", || Ok(Arc::new(object_store::local::LocalFileSystem::new()) as _))?;
        Ok(Location { url: url.to_string(), store, path: op, local: Some(abs), read_only: false })
    }

    fn cached(&self, key: &str, make: impl FnOnce() -> Result<Arc<dyn ObjectStore>>) -> Result<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.lock().expect("store cache lock");
        if let Some(s) = stores.get(key) {
            return Ok(s.clone());
        }
        let s = make()?;
        stores.insert(key.to_string(), s.clone());
        Ok(s)
    }

    fn client_options(&self, http: bool) -> ClientOptions {
        let o = &self.options;
        ClientOptions::new()
            .with_allow_http(o.allow_http.unwrap_or(http))
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(o.timeout_seconds.unwrap_or(60)))
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.options.max_retries.unwrap_or(3),
            retry_timeout: Duration::from_secs(60),
            ..Default::default()
        }
    }

    fn store(&self, scheme: &str, bucket: &str, url: &str) -> Result<Arc<dyn ObjectStore>> {
        install_crypto_provider();
        let o = &self.options;
        let err = |e: object_store::Error| DataError::storage(url, format!("cannot configure the object store client: {e}"));
        self.cached(&format!("{scheme}://{bucket}"), || {
            let store: Arc<dyn ObjectStore> = match scheme {
                "s3" | "s3a" => {
                    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as K};
                    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                    let endpoint = o.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
                    let http = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
                    if let Some(e) = &endpoint {
                        b = b.with_endpoint(e);
                    }
                    for (key, value) in [
                        (K::Region, &o.region),
                        (K::AccessKeyId, &o.access_key_id),
                        (K::SecretAccessKey, &o.secret_access_key),
                        (K::Token, &o.session_token),
                    ] {
                        if let Some(v) = value {
                            b = b.with_config(key, v);
                        }
                    }
                    if let Some(region) = o.region.clone().or_else(|| std::env::var("AWS_REGION").ok()) {
                        b = b.with_region(region);
                    } else if endpoint.is_some() {
                        // S3-compatible servers ignore the region but the signature needs one.
                        b = b.with_region("us-east-1");
                    }
                    b = b
                        .with_virtual_hosted_style_request(o.virtual_hosted_style.unwrap_or(false))
                        .with_client_options(self.client_options(http))
                        .with_retry(self.retry());
                    Arc::new(b.build().map_err(err)?)
                }
                "gs" => {
                    let b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(bucket)
                        .with_client_options(self.client_options(false))
                        .with_retry(self.retry());
                    Arc::new(b.build().map_err(err)?)
                }
                "az" | "abfs" | "abfss" | "azure" => {
                    let b = object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_container_name(bucket)
                        .with_client_options(self.client_options(false))
                        .with_retry(self.retry());
                    Arc::new(b.build().map_err(err)?)
                }
                "http" | "https" => {
                    let b = object_store::http::HttpBuilder::new()
                        .with_url(format!("{scheme}://{bucket}"))
                        .with_client_options(self.client_options(scheme == "http"))
                        .with_retry(self.retry());
                    Arc::new(b.build().map_err(err)?)
                }
                _ => unreachable!("scheme checked by locate"),
            };
            Ok(store)
        })
    }
}

impl Location {
    /// The URL as given (no credentials are ever part of it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The local file behind this location, if it is one.
    pub fn local_path(&self) -> Option<&std::path::Path> {
        self.local.as_deref()
    }

    /// `rel` (a relative path with `/` separators) under this location.
    pub fn join(&self, rel: &str) -> Location {
        let mut path = self.path.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        let sep = if self.url.ends_with('/') { "" } else { "/" };
        Location {
            url: format!("{}{sep}{}", self.url, rel.trim_start_matches('/')),
            store: self.store.clone(),
            path,
            local: self.local.as_ref().map(|p| p.join(rel)),
            read_only: self.read_only,
        }
    }

    /// The object named `name` in the same folder (prefix) as this one.
    pub fn sibling(&self, name: &str) -> Location {
        let file = self.file_name();
        let path = match self.path.parts().count() {
            0 | 1 => ObjectPath::from(name),
            _ => ObjectPath::from_iter(self.path.parts().take(self.path.parts().count() - 1)).join(name),
        };
        let url = match self.url.strip_suffix(file.as_str()) {
            Some(dir) if !file.is_empty() => format!("{dir}{name}"),
            _ => format!("{}/{name}", self.url.trim_end_matches('/')),
        };
        Location {
            url,
            store: self.store.clone(),
            path,
            local: self.local.as_ref().map(|p| p.with_file_name(name)),
            read_only: self.read_only,
        }
    }

    /// The last segment of the path ("" at a bucket root).
    pub fn file_name(&self) -> String {
        self.path.filename().unwrap_or_default().to_string()
    }

    fn error(&self, e: object_store::Error, what: &str) -> DataError {
        use object_store::Error as E;
        // object_store reports some failures (a failed list, a failed multipart start) as
        // generic errors, so the server's own words decide as well as the variant.
        let cause = root_cause(&e);
        let has = |words: &[&str]| words.iter().any(|w| cause.contains(w));
        let reason = if has(&["NoSuchBucket", "ContainerNotFound", "bucket does not exist"]) {
            format!("{what}: the bucket does not exist: create it first (imclust never creates buckets) ({cause})")
        } else if matches!(e, E::NotFound { .. }) {
            format!("{what}: not found. Check the path, the bucket or container name, and that the object exists ({cause})")
        } else if matches!(e, E::PermissionDenied { .. } | E::Unauthenticated { .. })
            || has(&["403 Forbidden", "401 Unauthorized", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "NotSignedUp"])
        {
            format!(
                "{what}: access denied. Check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, \
                 GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_*) and the bucket policy ({cause})"
            )
        } else if matches!(e, E::NotSupported { .. } | E::NotImplemented { .. }) {
            format!("{what}: not supported by this store (http(s):// is read-only) ({cause})")
        } else if has(&["connect", "dns", "timed out", "Connection refused"]) {
            format!("{what}: the endpoint is unreachable: check the endpoint URL, the network and proxies ({cause})")
        } else {
            format!("{what}: {cause}")
        };
        DataError::storage(&self.url, reason)
    }

    /// An error unless this location can be written (http(s):// is read-only).
    pub fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(DataError::storage(&self.url, "http(s):// URLs are read-only: write outputs and caches to a path or an s3://, gs:// or az:// URL"));
        }
        Ok(())
    }

    /// The whole object.
    pub async fn get(&self) -> Result<Bytes> {
        Ok(self.get_with_meta().await?.0)
    }

    /// The whole object and its size and version, from one request.
    pub async fn get_with_meta(&self) -> Result<(Bytes, ObjectMeta)> {
        let r = self.store.get(&self.path).await.map_err(|e| self.error(e, "reading"))?;
        let m = meta(&r.meta);
        Ok((r.bytes().await.map_err(|e| self.error(e, "reading"))?, m))
    }

    /// The whole object, or `None` if there is no such object (other failures are errors).
    pub async fn get_opt(&self) -> Result<Option<Bytes>> {
        let r = match self.store.get(&self.path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(e, "reading")),
        };
        r.bytes().await.map(Some).map_err(|e| self.error(e, "reading"))
    }

    /// Bytes `range` of the object; an error if the object is shorter.
    pub async fn get_range(&self, range: Range<u64>) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let want = range.end - range.start;
        let b = self
            .store
            .get_range(&self.path, range.clone())
            .await
            .map_err(|e| self.error(e, &format!("reading bytes {}..{}", range.start, range.end)))?;
        if b.len() as u64 != want {
            return Err(DataError::storage(
                &self.url,
                format!("bytes {}..{}: got {} bytes; the object is shorter than expected (truncated?)", range.start, range.end, b.len()),
            ));
        }
        Ok(b)
    }

    /// Size and version, or `None` if there is no such object.
    pub async fn head_opt(&self) -> Result<Option<ObjectMeta>> {
        match self.store.head(&self.path).await {
            Ok(m) => Ok(Some(meta(&m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(e, "looking up")),
        }
    }

    /// Size and version; an error naming the URL if there is no such object.
    pub async fn head(&self) -> Result<ObjectMeta> {
        self.store.head(&self.path).await.map(|m| meta(&m)).map_err(|e| self.error(e, "looking up"))
    }

    /// Every object under this prefix, recursively: (path relative to the prefix, meta),
    /// sorted by path.
    pub async fn list(&self) -> Result<Vec<(String, ObjectMeta)>> {
        let prefix = if self.path.as_ref().is_empty() { None } else { Some(&self.path) };
        let items: Vec<object_store::ObjectMeta> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| self.error(e, "listing"))?;
        let base = self.path.as_ref().len();
        let mut out: Vec<(String, ObjectMeta)> = items
            .iter()
            .map(|m| {
                let full = m.location.as_ref();
                let rel = if base == 0 { full } else { full.get(base..).unwrap_or("").trim_start_matches('/') };
                (rel.to_string(), meta(m))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Writes the whole object. Large objects go up in parts; either way the object appears
    /// whole or not at all (S3 completes a multipart upload atomically, local files are
    /// written under a temporary name and renamed).
    pub async fn put(&self, bytes: Bytes) -> Result<()> {
        self.check_writable()?;
        if bytes.len() < MULTIPART_THRESHOLD {
            self.store
                .put(&self.path, PutPayload::from(bytes))
                .await
                .map_err(|e| self.error(e, "writing"))?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&self.path).await.map_err(|e| self.error(e, "starting a multipart upload to"))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        for chunk in bytes.chunks(PART_SIZE) {
            w.wait_for_capacity(PUT_PARALLEL_PARTS).await.map_err(|e| self.error(e, "uploading a part of"))?;
            w.write(chunk);
        }
        w.finish().await.map_err(|e| self.error(e, "completing the multipart upload of"))?;
        Ok(())
    }

    pub async fn delete(&self) -> Result<()> {
        self.check_writable()?;
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(e, "deleting")),
        }
    }

    /// Reads many ranges of this object concurrently, in order.
    pub async fn get_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        futures::stream::iter(ranges.iter().cloned().map(|r| self.get_range(r))).buffered(16).try_collect().await
    }
}

fn meta(m: &object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        size: m.size,
        version: m
            .e_tag
            .clone()
            .or_else(|| m.version.clone())
            .unwrap_or_else(|| m.last_modified.timestamp_nanos_opt().unwrap_or_default().to_string()),
    }
}

/// The innermost message of an error chain, which is where the server's or the operating
/// system's words are.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msgs = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        msgs.push(s.to_string());
        cur = s.source();
    }
    msgs.pop().unwrap_or_default()
}

/// A runtime for synchronous callers (the CLI); async callers use their own.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DataError::io("tokio runtime", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_put_get_range_list_head() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::default();
        let root = s.locate(dir.path().to_str().unwrap()).unwrap();
        root.join("a/x.bin").put(Bytes::from_static(b"0123456789")).await.unwrap();
        root.join("b.bin").put(Bytes::from_static(b"xy")).await.unwrap();
        assert_eq!(&root.join("a/x.bin").get_range(2..5).await.unwrap()[..], b"234");
        assert_eq!(&root.join("a/x.bin").get().await.unwrap()[..], b"0123456789");
        let listed: Vec<(String, u64)> = root.list().await.unwrap().into_iter().map(|(p, m)| (p, m.size)).collect();
        assert_eq!(listed, vec![("a/x.bin".to_string(), 10), ("b.bin".to_string(), 2)]);
        assert_eq!(root.join("b.bin").head().await.unwrap().size, 2);
        assert!(root.join("missing").head_opt().await.unwrap().is_none());
        let e = root.join("a/x.bin").get_range(5..20).await.unwrap_err().to_string();
        assert!(e.contains("x.bin"), "{e}");
        let e = root.join("nope.bin").get().await.unwrap_err().to_string();
        assert!(e.contains("nope.bin") && e.contains("not found"), "{e}");
        // file:// URLs reach the same files.
        let dotted = format!("{}/a/../a/./x.bin", dir.path().display());
        assert_eq!(&s.locate(&dotted).unwrap().get().await.unwrap()[..], b"0123456789");
        let url = format!("file://{}/a/x.bin", dir.path().display());
        assert_eq!(&s.locate(&url).unwrap().get().await.unwrap()[..], b"0123456789");
    }

    #[test]
    fn bad_urls_are_named() {
        let s = Storage::default();
        let e = s.locate("ftp://host/x").unwrap_err().to_string();
        assert!(e.contains("ftp://host/x") && e.contains("unknown URL scheme"), "{e}");
        let e = s.locate("s3:///key").unwrap_err().to_string();
        assert!(e.contains("no bucket"), "{e}");
    }

    #[tokio::test]
    async fn http_locations_are_read_only() {
        let s = Storage::default();
        let loc = s.locate("https://example.invalid/data/x.bin").unwrap();
        assert_eq!(loc.join("y").url(), "https://example.invalid/data/x.bin/y");
        let e = loc.put(Bytes::from_static(b"x")).await.unwrap_err().to_string();
        assert!(e.contains("https://example.invalid/data/x.bin") && e.contains("read-only"), "{e}");
    }

    #[test]
    fn options_display_hides_secrets() {
        let o = StorageOptions {
            access_key_id: Some("AKIA".into()),
            secret_access_key: Some("very-secret".into()),
            ..Default::default()
        };
        let shown = format!("{o} {o:?} {:?}", Storage::new(o.clone()));
        assert!(!shown.contains("very-secret") && !shown.contains("AKIA"), "{shown}");
    }
}
