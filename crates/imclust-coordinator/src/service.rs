//! The gRPC face of the board: the `imclust.v1.Coordinator` service, bearer-token checks on
//! every call, optional TLS / mutual TLS, and long polling (an idle `LeaseTask` waits for the
//! next round instead of making workers spin).

use crate::board::{Board, Verdict};
use crate::metrics::Metrics;
use imclust_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use imclust_proto::v1::{self, lease_task_response::Reply};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// State shared by the service and the driver.
pub struct Shared {
    pub board: Mutex<Board>,
    /// Bumped on every change that may give an idle worker work or finish a round.
    pub changed: watch::Sender<u64>,
    pub job: v1::JobSpec,
    pub heartbeat: Duration,
    pub metrics: Metrics,
}

impl Shared {
    pub fn new(board: Board, job: v1::JobSpec, heartbeat: Duration, metrics: Metrics) -> Arc<Self> {
        Arc::new(Shared { board: Mutex::new(board), changed: watch::channel(0).0, job, heartbeat, metrics })
    }

    pub fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        // A panic while holding the lock is a bug; the board itself stays consistent because
        // every method mutates after its checks.
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn bump(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }
}

pub struct Service {
    shared: Arc<Shared>,
}

/// How long one `LeaseTask` call waits for work before answering `Wait`.
const LONG_POLL: Duration = Duration::from_secs(2);

#[tonic::async_trait]
impl Coordinator for Service {
    async fn register(&self, req: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterResponse>, Status> {
        let r = req.into_inner();
        let id = self.shared.board().register(&r.name, Instant::now());
        tracing::info!(worker = %id, name = %r.name, host = %r.hostname, pid = r.pid, version = %r.version, "worker registered");
        self.shared.metrics.workers_registered.inc();
        self.shared.bump();
        Ok(Response::new(v1::RegisterResponse {
            worker_id: id,
            job: Some(self.shared.job.clone()),
            heartbeat_ms: self.shared.heartbeat.as_millis() as u32,
        }))
    }

    async fn heartbeat(&self, req: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.shared.board().heartbeat(&r.worker_id, &r.lease_ids, Instant::now())))
    }

    async fn lease_task(&self, req: Request<v1::LeaseTaskRequest>) -> Result<Response<v1::LeaseTaskResponse>, Status> {
        let worker = req.into_inner().worker_id;
        if !self.shared.board().is_known(&worker) && self.shared.board().finished().is_none() {
            return Err(Status::failed_precondition(format!("worker {worker} is not registered with this coordinator: register again")));
        }
        let until = Instant::now() + LONG_POLL;
        let mut changed = self.shared.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let reply = self.shared.board().lease(&worker, Instant::now());
            match &reply.reply {
                Some(Reply::Wait(_)) if Instant::now() < until => {
                    let left = until.saturating_duration_since(Instant::now());
                    let _ = tokio::time::timeout(left, changed.changed()).await;
                }
                Some(Reply::Task(t)) => {
                    let stage = t.stage().name();
                    tracing::debug!(worker = %worker, lease = t.lease_id, stage, shards = ?t.shards, "leased");
                    self.shared.metrics.leases(stage).inc();
                    return Ok(Response::new(reply));
                }
                _ => return Ok(Response::new(reply)),
            }
        }
    }

    async fn report_result(&self, req: Request<v1::ReportResultRequest>) -> Result<Response<v1::ReportResultResponse>, Status> {
        let r = req.into_inner();
        let Some(payload) = r.result else {
            return Err(Status::invalid_argument("a result without a payload"));
        };
        let verdict = self.shared.board().report(&r.worker_id, r.lease_id, payload);
        let out = match verdict {
            Verdict::Accepted => {
                self.shared.metrics.results("accepted").inc();
                self.shared.bump();
                v1::ReportResultResponse { accepted: true, reason: String::new() }
            }
            Verdict::Refused(reason) => {
                tracing::info!(worker = %r.worker_id, lease = r.lease_id, %reason, "result refused");
                self.shared.metrics.results("refused").inc();
                v1::ReportResultResponse { accepted: false, reason }
            }
        };
        Ok(Response::new(out))
    }

    async fn report_failure(&self, req: Request<v1::ReportFailureRequest>) -> Result<Response<v1::ReportFailureResponse>, Status> {
        let r = req.into_inner();
        tracing::warn!(worker = %r.worker_id, lease = r.lease_id, retryable = r.retryable, error = %r.message, "task failed");
        self.shared.metrics.results(if r.retryable { "failed" } else { "failed_fatal" }).inc();
        self.shared.board().failure(&r.worker_id, r.lease_id, &r.message, r.retryable);
        self.shared.bump();
        Ok(Response::new(v1::ReportFailureResponse {}))
    }

    async fn leave(&self, req: Request<v1::LeaveRequest>) -> Result<Response<v1::LeaveResponse>, Status> {
        let r = req.into_inner();
        tracing::info!(worker = %r.worker_id, "worker left");
        self.shared.board().leave(&r.worker_id);
        self.shared.bump();
        Ok(Response::new(v1::LeaveResponse {}))
    }
}

/// Where the service listens and how it authenticates.
#[derive(Clone, Default)]
pub struct Security {
    /// Every call must carry `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// PEM certificate chain and key: TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// PEM CA that client certificates must chain to: mutual TLS.
    pub client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the token.
        write!(f, "Security(token: {}, tls: {}, mutual: {})", self.token.is_some(), self.tls.is_some(), self.client_ca.is_some())
    }
}

/// Constant-time comparison of the presented and expected tokens.
fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = presented.len() ^ expected.len();
    for (i, &b) in expected.iter().enumerate() {
        diff |= usize::from(b ^ presented.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Refuses calls without the right bearer token (the token is never logged or echoed).
pub fn check_token(expected: Option<Arc<str>>) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(expected) = expected.as_deref() else { return Ok(req) };
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if token_matches(presented.as_bytes(), expected.as_bytes()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong bearer token: give the worker the coordinator's token (IMCLUST_TOKEN or auth.token_file)",
            ))
        }
    }
}

/// Serves the coordinator on `listener` until `shutdown` resolves.
pub async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    security: Security,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), crate::error::CoordinatorError> {
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    let svc = CoordinatorServer::new(Service { shared })
        .max_decoding_message_size(imclust_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(imclust_proto::MAX_MESSAGE_BYTES);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, check_token(security.token.map(Arc::from)));
    let mut builder = Server::builder().http2_keepalive_interval(Some(Duration::from_secs(10)));
    if let Some((cert, key)) = &security.tls {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &security.client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder
            .tls_config(tls)
            .map_err(|e| crate::error::CoordinatorError::Server(format!("TLS configuration refused: {e}: check auth.tls.cert/key/client_ca")))?;
    }
    // Replies are small messages in a request/response rhythm: without TCP_NODELAY, Nagle's
    // algorithm and delayed ACKs add about 40 ms to a round (measured by bench cluster-rpc).
    use tokio_stream::StreamExt;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok::<_, std::io::Error>(s)
    });
    builder
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| crate::error::CoordinatorError::Server(format!("the gRPC server stopped: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check_is_exact() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        assert!(!token_matches(b"s3cre", b"s3cret"));
        assert!(!token_matches(b"s3cretx", b"s3cret"));
        assert!(!token_matches(b"", b"s3cret"));
        let check = check_token(Some(Arc::from("s3cret")));
        let mut req = Request::new(());
        req.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(check(req).is_ok());
        let mut req = Request::new(());
        req.metadata_mut().insert("authorization", "Bearer wrong".parse().unwrap());
        let e = check(req).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(!e.message().contains("s3cret"));
        assert!(check_token(None)(Request::new(())).is_ok());
        assert!(format!("{:?}", Security { token: Some("s3cret".into()), ..Default::default() }).contains("token: true"));
    }
}
