//! The worker's task loop: dial the coordinator, register, heartbeat in the background,
//! lease a task, run it (blocking work on a blocking thread), report the result or the
//! failure; repeat until the coordinator says the job is over. A coordinator that goes away
//! is dialled again (its restart resumes the job; resident shards are kept when the job is
//! the same). A stop request (SIGTERM) finishes the current task, then leaves.

use crate::error::{Result, WorkerError};
use crate::metrics::WorkerMetrics;
use crate::shards::{JobContext, retryable};
use imclust_proto::v1::coordinator_client::CoordinatorClient;
use imclust_proto::v1::{self, lease_task_response::Reply};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// How a worker reaches and proves itself to the coordinator.
#[derive(Clone, Default)]
pub struct Options {
    /// `http://host:port`, or `https://host:port` with `ca`.
    pub coordinator: String,
    pub token: Option<String>,
    /// PEM CA that the coordinator's certificate chains to.
    pub ca: Option<Vec<u8>>,
    /// PEM client certificate and key (mutual TLS).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to expect in the coordinator's certificate (default: the URL's host).
    pub domain: Option<String>,
    /// Shown in the coordinator's logs (e.g. the Kubernetes completion index).
    pub name: String,
    pub onnxruntime: Option<PathBuf>,
    /// How long to keep dialling a coordinator that cannot be reached.
    pub reconnect: Duration,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the token or keys.
        write!(f, "Options(coordinator: {}, token: {}, tls: {})", self.coordinator, self.token.is_some(), self.ca.is_some())
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Client = CoordinatorClient<InterceptedService<Channel, Bearer>>;

/// Dials the coordinator once.
pub async fn connect(o: &Options) -> Result<Client> {
    let bad = |what: String| WorkerError::Rpc(format!("coordinator {}: {what}", o.coordinator));
    let mut ep = Endpoint::from_shared(o.coordinator.clone())
        .map_err(|e| bad(format!("not a valid URL ({e}): use http://host:port or https://host:port")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if o.coordinator.starts_with("https://") || o.ca.is_some() {
        let mut tls = ClientTlsConfig::new();
        match &o.ca {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(ca)),
            None => return Err(bad("https needs the CA of the coordinator's certificate (--tls-ca)".into())),
        }
        if let Some((cert, key)) = &o.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(d) = &o.domain {
            tls = tls.domain_name(d.clone());
        }
        ep = ep.tls_config(tls).map_err(|e| bad(format!("TLS configuration refused: {e}")))?;
    }
    let channel = ep.connect().await.map_err(|e| bad(format!("cannot connect ({e}); is it running and reachable?")))?;
    let token = match &o.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| bad("the token holds characters not allowed in a header".into()))?,
        ),
        None => None,
    };
    Ok(CoordinatorClient::with_interceptor(channel, Bearer(token))
        .max_decoding_message_size(imclust_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(imclust_proto::MAX_MESSAGE_BYTES))
}

/// How the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The job finished (or failed: `failed` with the coordinator's reason).
    JobOver { failed: bool, message: String },
    /// Asked to stop: the current task was finished and the worker left.
    Stopped,
}

fn rpc_error(o: &Options, what: &str, s: &Status) -> WorkerError {
    match s.code() {
        Code::Unauthenticated => WorkerError::Rpc(format!(
            "coordinator {} refused the worker ({}): {}",
            o.coordinator,
            what,
            s.message()
        )),
        _ => WorkerError::Rpc(format!("coordinator {} ({what}): {}", o.coordinator, s.message())),
    }
}

/// Whether the coordinator may come back (restart, network blip) rather than refusing us.
fn transient(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::FailedPrecondition | Code::Internal)
}

/// Runs tasks until the job is over or `stop` turns true.
pub async fn run(o: Options, mut stop: watch::Receiver<bool>, metrics: WorkerMetrics) -> Result<Exit> {
    let ctx: Arc<Mutex<Option<JobContext>>> = Arc::new(Mutex::new(None));
    let mut unreachable_since: Option<Instant> = None;
    loop {
        // Dial and register (again, after a coordinator restart).
        let (mut client, reg) = match dial(&o).await {
            Ok(x) => {
                unreachable_since = None;
                x
            }
            Err(Dial::Fatal(e)) => return Err(e),
            Err(Dial::Retry(e)) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > o.reconnect {
                    return Err(e);
                }
                tracing::info!(error = %e, "coordinator not reachable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => return Ok(Exit::Stopped),
                }
                continue;
            }
        };
        let job = reg.job.clone().ok_or_else(|| WorkerError::Rpc("the coordinator sent no job".into()))?;
        let worker_id = reg.worker_id.clone();
        tracing::info!(worker = %worker_id, job = %job.job_id, "registered");
        let same_job = ctx.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|c| c.spec.digest == job.digest && c.spec.job_id == job.job_id);
        if !same_job {
            let handle = tokio::runtime::Handle::current();
            let ort = o.onnxruntime.clone();
            let spec = job.clone();
            let built = tokio::task::spawn_blocking(move || JobContext::new(spec, handle, ort))
                .await
                .map_err(|e| WorkerError::Rpc(format!("loading the job panicked: {e}")))?;
            match built {
                Ok(c) => *ctx.lock().unwrap_or_else(|e| e.into_inner()) = Some(c),
                Err(e) => {
                    // This worker cannot take part (wrong bundle, unreadable dataset): say why and leave.
                    let _ = client.leave(v1::LeaveRequest { worker_id: worker_id.clone() }).await;
                    return Err(e);
                }
            }
        }

        // Heartbeats in the background.
        let leases: Arc<Mutex<Vec<u64>>> = Arc::default();
        let lost = Arc::new(AtomicBool::new(false));
        let hb = {
            let (mut client, leases, lost, worker_id) = (client.clone(), leases.clone(), lost.clone(), worker_id.clone());
            let every = Duration::from_millis(u64::from(reg.heartbeat_ms.max(50)));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let ids = leases.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Ok(r) = client.heartbeat(v1::HeartbeatRequest { worker_id: worker_id.clone(), lease_ids: ids }).await
                        && !r.get_ref().known
                    {
                        lost.store(true, Ordering::SeqCst);
                    }
                }
            })
        };
        let outcome = serve_tasks(&o, &mut client, &worker_id, &ctx, &leases, &lost, &mut stop, &metrics).await;
        hb.abort();
        match outcome {
            Loop::Exit(e) => {
                if !matches!(e, Ok(Exit::Stopped)) {
                    ctx.lock().unwrap_or_else(|e| e.into_inner()).take();
                }
                return e;
            }
            Loop::Redial => continue,
        }
    }
}

enum Dial {
    Fatal(WorkerError),
    Retry(WorkerError),
}

async fn dial(o: &Options) -> std::result::Result<(Client, v1::RegisterResponse), Dial> {
    let mut client = connect(o).await.map_err(|e| match e {
        WorkerError::Rpc(m) if m.contains("not a valid URL") || m.contains("needs the CA") || m.contains("TLS configuration") => Dial::Fatal(WorkerError::Rpc(m)),
        e => Dial::Retry(e),
    })?;
    let req = v1::RegisterRequest {
        hostname: hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        name: o.name.clone(),
    };
    match client.register(req).await {
        Ok(r) => Ok((client, r.into_inner())),
        Err(s) if s.code() == Code::Unauthenticated => Err(Dial::Fatal(rpc_error(o, "register", &s))),
        Err(s) => Err(Dial::Retry(rpc_error(o, "register", &s))),
    }
}

enum Loop {
    Exit(Result<Exit>),
    Redial,
}

#[allow(clippy::too_many_arguments)]
async fn serve_tasks(
    o: &Options,
    client: &mut Client,
    worker_id: &str,
    ctx: &Arc<Mutex<Option<JobContext>>>,
    leases: &Arc<Mutex<Vec<u64>>>,
    lost: &AtomicBool,
    stop: &mut watch::Receiver<bool>,
    metrics: &WorkerMetrics,
) -> Loop {
    loop {
        if *stop.borrow() {
            let _ = client.leave(v1::LeaveRequest { worker_id: worker_id.to_string() }).await;
            tracing::info!("stopping: left the job");
            return Loop::Exit(Ok(Exit::Stopped));
        }
        if lost.load(Ordering::SeqCst) {
            tracing::info!("the coordinator no longer knows this worker; registering again");
            return Loop::Redial;
        }
        let reply = match client.lease_task(v1::LeaseTaskRequest { worker_id: worker_id.to_string() }).await {
            Ok(r) => r.into_inner().reply,
            Err(s) if transient(&s) => return Loop::Redial,
            Err(s) => return Loop::Exit(Err(rpc_error(o, "lease", &s))),
        };
        match reply {
            Some(Reply::Task(task)) => {
                let stage = task.stage().name();
                leases.lock().unwrap_or_else(|e| e.into_inner()).push(task.lease_id);
                let t = Instant::now();
                let c = ctx.clone();
                let task2 = task.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let mut guard = c.lock().unwrap_or_else(|e| e.into_inner());
                    guard.as_mut().expect("a job context before tasks").run(&task2)
                })
                .await
                .unwrap_or_else(|e| Err(WorkerError::Input(format!("the task panicked: {e}"))));
                leases.lock().unwrap_or_else(|e| e.into_inner()).retain(|&l| l != task.lease_id);
                let seconds = t.elapsed().as_secs_f64();
                metrics.task_seconds(stage).inc_by(seconds);
                let sent = match result {
                    Ok(payload) => {
                        metrics.tasks(stage, "ok").inc();
                        tracing::debug!(stage, shards = ?task.shards, seconds, "task done");
                        client
                            .report_result(v1::ReportResultRequest {
                                worker_id: worker_id.to_string(),
                                lease_id: task.lease_id,
                                result: Some(payload),
                                seconds,
                            })
                            .await
                            .map(|r| {
                                let r = r.into_inner();
                                if !r.accepted {
                                    tracing::info!(reason = %r.reason, "result not accepted");
                                }
                            })
                    }
                    Err(e) => {
                        metrics.tasks(stage, "failed").inc();
                        tracing::warn!(stage, shards = ?task.shards, error = %e, "task failed");
                        client
                            .report_failure(v1::ReportFailureRequest {
                                worker_id: worker_id.to_string(),
                                lease_id: task.lease_id,
                                message: e.to_string(),
                                retryable: retryable(&e),
                            })
                            .await
                            .map(|_| ())
                    }
                };
                if let Err(s) = sent {
                    if transient(&s) {
                        return Loop::Redial;
                    }
                    return Loop::Exit(Err(rpc_error(o, "report", &s)));
                }
            }
            Some(Reply::Wait(w)) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(u64::from(w.retry_ms.max(10)))) => {}
                    _ = stop.changed() => {}
                }
            }
            Some(Reply::Done(d)) => {
                if d.failed {
                    tracing::warn!(reason = %d.message, "the job failed");
                } else {
                    tracing::info!("the job is done");
                }
                return Loop::Exit(Ok(Exit::JobOver { failed: d.failed, message: d.message }));
            }
            None => return Loop::Exit(Err(WorkerError::Rpc("an empty reply to LeaseTask".into()))),
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string()))
        .unwrap_or_default()
}
