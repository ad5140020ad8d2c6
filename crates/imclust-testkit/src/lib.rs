//! Test helpers for imclust (dev-only, never published).
//!
//! [`S3Server`] is a real S3 protocol server (s3s + s3s-fs) running in-process on
//! `127.0.0.1` with an ephemeral port, over a temporary directory, with one access key and
//! secret (requests signed with other credentials are refused). It runs its own tokio
//! runtime on a background thread, so it works from plain `#[test]`s and from
//! `#[tokio::test]`s alike, and stops when dropped.
//!
//! ```no_run
//! let s3 = imclust_testkit::S3Server::start();
//! s3.create_bucket("data");
//! let storage = imclust_data::storage::Storage::new(s3.storage_options());
//! let loc = storage.locate("s3://data/some/key.bin").unwrap();
//! ```

use imclust_data::storage::StorageOptions;
use std::path::PathBuf;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Region the server is addressed with (s3s-fs ignores it; the signature needs one).
pub const REGION: &str = "us-east-1";

/// An in-process S3 server over a temporary directory. Stops on drop (and the directory
/// is then removed).
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    /// The directory behind the server: bucket `b`, key `k` is the file `root/b/k`.
    pub root: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Server({}, root {})", self.endpoint, self.root.path().display())
    }
}

impl S3Server {
    /// Starts a server with a fresh key pair over a fresh temporary directory. Panics if it
    /// cannot (a test helper). The port is bound before this returns, so clients may connect
    /// at once.
    pub fn start() -> S3Server {
        let root = tempfile::Builder::new().prefix("imclust-s3-").tempdir().expect("temporary directory for the S3 server");
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let access_key = format!("IMCLUSTTEST{}", std::process::id());
        let secret_key = format!("imclust-test-secret-{unique:x}");

        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0 for the S3 server");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address of the S3 server");

        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs over the temporary directory");
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(fs);
            b.set_auth(s3s::auth::SimpleAuth::from_single(access_key.clone(), secret_key.clone()));
            b.set_access(BucketsMustExist { root: root.path().to_path_buf() });
            b.build()
        };

        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("s3-server-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("s3-server")
                    .enable_all()
                    .build()
                    .expect("tokio runtime for the S3 server");
                rt.block_on(serve(listener, service, rx));
                // Dropping the runtime cancels connections still open.
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
            })
            .expect("S3 server thread");

        S3Server {
            endpoint: format!("http://{addr}"),
            access_key,
            secret_key,
            root,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Creates bucket `name` (s3s-fs buckets are directories under [`S3Server::root`]).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.path().join(name)).unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
    }

    /// The file behind `s3://bucket/key`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    /// Options of an `imclust_data::storage::Storage` that reaches this server: endpoint,
    /// region `us-east-1`, the keys, plain http allowed.
    pub fn storage_options(&self) -> StorageOptions {
        StorageOptions {
            endpoint: Some(self.endpoint.clone()),
            region: Some(REGION.to_string()),
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            allow_http: Some(true),
            ..Default::default()
        }
    }

    /// Environment variables that point an `imclust` process at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", &self.access_key),
            ("AWS_SECRET_ACCESS_KEY", &self.secret_key),
            ("AWS_REGION", REGION),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Signed requests only (s3s's default check), and no implicit buckets: s3s-fs would
/// create a missing bucket's directory on PutObject / CreateMultipartUpload, where S3
/// answers NoSuchBucket (imclust never creates buckets, and tests must see that error).
struct BucketsMustExist {
    root: PathBuf,
}

#[async_trait::async_trait]
impl s3s::access::S3Access for BucketsMustExist {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3s::s3_error!(AccessDenied, "Signature is required"));
        }
        let bucket = match cx.s3_path() {
            s3s::path::S3Path::Root => return Ok(()),
            s3s::path::S3Path::Bucket { bucket } | s3s::path::S3Path::Object { bucket, .. } => bucket,
        };
        if cx.s3_op().name() != "CreateBucket" && !self.root.join(&**bucket).is_dir() {
            return Err(s3s::s3_error!(NoSuchBucket, "The specified bucket does not exist"));
        }
        Ok(())
    }
}

/// An `http://127.0.0.1:PORT` endpoint where nothing listens (the port was bound, then
/// released): connecting to it is refused at once.
pub fn closed_endpoint() -> String {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    let addr = l.local_addr().expect("local address");
    drop(l);
    format!("http://{addr}")
}

async fn serve(listener: std::net::TcpListener, service: s3s::service::S3Service, mut stop: oneshot::Receiver<()>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            res = listener.accept() => match res {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stop => break,
        };
        let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
