//! The job runner commands: `validate-config`, `run` (an in-process coordinator plus N local
//! worker processes), `coordinator` and `worker` (for clusters).

use crate::telemetry::{self, LogFormat};
use anyhow::{Context, Result, bail};
use imclust_coordinator::driver::{Driver, Event, Outcome, Plan, Progress, Summary};
use imclust_coordinator::metrics::Metrics;
use imclust_coordinator::service::{self, Security};
use imclust_coordinator::spec::{self, AuthSection, LoadedJob};
use imclust_data::storage::Storage;
use imclust_embed::runtime::RuntimeConfig;
use imclust_worker::metrics::WorkerMetrics;
use imclust_worker::task::{self, Exit, Options};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(clap::Args)]
pub struct ConfigArgs {
    /// The job spec (TOML; see docs/job-config.md).
    #[arg(long)]
    config: PathBuf,
    /// Override a key: section.key=value (repeatable; wins over the file and IMCLUST__* env).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> Result<LoadedJob> {
        Ok(spec::load(&self.config, &self.set)?)
    }
}

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// The job spec to check.
    file: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the resolved spec (all layers and defaults applied) as TOML.
    #[arg(long)]
    print: bool,
}

pub fn validate(a: ValidateArgs) -> Result<()> {
    let j = spec::load(&a.file, &a.set)?;
    if a.print {
        print!("{}", j.config.resolved_toml(&j.job_id));
    }
    eprintln!(
        "{}: valid ({} model(s), init {}, k {}, output {}/{})",
        a.file.display(),
        j.config.models.len(),
        j.config.init.method.name(),
        j.config.kmeans.k.map_or("= number of classes".to_string(), |k| k.to_string()),
        j.config.output.url,
        j.job_id
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Local worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// The libonnxruntime file (default: ORT_DYLIB_PATH, then .cache/onnxruntime/).
    #[arg(long, value_name = "PATH")]
    onnxruntime: Option<PathBuf>,
    /// Prometheus /metrics address of the coordinator (default: cluster.metrics_listen).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// No progress bars or per-iteration lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// gRPC address (default: cluster.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Prometheus /metrics address (default: cluster.metrics_listen).
    #[arg(long)]
    metrics_listen: Option<String>,
    #[arg(long, value_name = "PATH")]
    onnxruntime: Option<PathBuf>,
    /// Workers that will dial (e.g. the worker Job's parallelism): after the job ends (or is
    /// found committed already), keep telling workers it is over until this many have heard
    /// it, for at most --linger-seconds.
    #[arg(long, default_value_t = 0)]
    expect_workers: usize,
    #[arg(long, default_value_t = 600)]
    linger_seconds: u64,
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The coordinator: http://host:port, or https://host:port with --tls-ca.
    #[arg(long)]
    coordinator: String,
    /// Name in the coordinator's logs (default: JOB_COMPLETION_INDEX or the host name).
    #[arg(long)]
    name: Option<String>,
    /// A file holding the bearer token (default: the IMCLUST_TOKEN environment variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// PEM CA of the coordinator's certificate.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate and key (mutual TLS).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Name expected in the coordinator's certificate (default: the URL's host).
    #[arg(long)]
    tls_domain: Option<String>,
    /// Keep dialling an unreachable coordinator for this many seconds (it may be starting
    /// or restarting).
    #[arg(long, default_value_t = 120)]
    reconnect_seconds: u64,
    /// Prometheus /metrics address ("" = off).
    #[arg(long, default_value = "")]
    metrics_listen: String,
    #[arg(long, value_name = "PATH")]
    onnxruntime: Option<PathBuf>,
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// The bearer token of a coordinator: the `auth.token_env` variable, else `auth.token_file`.
fn coordinator_token(auth: &AuthSection) -> Result<Option<String>> {
    if let Ok(t) = std::env::var(&auth.token_env)
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_string()));
    }
    if let Some(f) = &auth.token_file {
        let t = String::from_utf8(read(f, "token file")?).context("the token file is not UTF-8")?;
        if t.trim().is_empty() {
            bail!("the token file {} is empty", f.display());
        }
        return Ok(Some(t.trim().to_string()));
    }
    if auth.require_token {
        bail!("auth.require_token is set but there is no token: set {} or auth.token_file", auth.token_env);
    }
    Ok(None)
}

fn security(auth: &AuthSection, token: Option<String>) -> Result<Security> {
    let tls = match (&auth.tls.cert, &auth.tls.key) {
        (Some(c), Some(k)) => Some((read(c, "TLS certificate")?, read(k, "TLS key")?)),
        _ => None,
    };
    let client_ca = auth.tls.client_ca.as_ref().map(|p| read(p, "client CA")).transpose()?;
    Ok(Security { token, tls, client_ca })
}

fn random_token() -> Result<String> {
    let mut b = [0u8; 24];
    use std::io::Read;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).context("reading /dev/urandom for a token")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn runtime_config(job: &LoadedJob, onnxruntime: Option<PathBuf>) -> Result<RuntimeConfig> {
    Ok(RuntimeConfig {
        onnxruntime_path: onnxruntime,
        device: job.config.runtime.device.parse().map_err(|e: String| anyhow::anyhow!("runtime.device: {e}"))?,
        intra_threads: job.config.runtime.threads,
    })
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    imclust_data::storage::runtime().map_err(Into::into)
}

/// Progress on stderr: bars on a terminal, plain lines otherwise.
fn progress_printer(quiet: bool) -> Progress {
    if quiet {
        return Arc::new(|_: &Event| {});
    }
    if !std::io::stderr().is_terminal() {
        return Arc::new(|e: &Event| match e {
            Event::Stage { name, shards } => eprintln!("stage {name}: {shards} shard(s)"),
            Event::Progress { .. } => {}
            Event::Iteration { redo, iteration, inertia, shift } => {
                eprintln!("iteration {iteration} (redo {redo}): inertia {inertia:.6e}, shift {shift:.3e}")
            }
            Event::StageDone { name, seconds } => eprintln!("stage {name} done in {seconds:.2}s"),
            Event::Resumed { redo, iteration } => eprintln!("resumed from the checkpoint at redo {redo}, iteration {iteration}"),
        });
    }
    let multi = MultiProgress::new();
    let bars: Mutex<HashMap<&'static str, ProgressBar>> = Mutex::default();
    let style = ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} shards {msg} ({elapsed})")
        .expect("valid template")
        .progress_chars("=> ");
    let iter_bar: Mutex<Option<ProgressBar>> = Mutex::default();
    Arc::new(move |e: &Event| {
        let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            Event::Stage { name, shards } => {
                let b = multi.add(ProgressBar::new(*shards as u64).with_style(style.clone()).with_prefix(*name));
                bars.insert(name, b);
            }
            Event::Progress { name, done, workers, .. } => {
                if let Some(b) = bars.get(name) {
                    b.set_position(*done as u64);
                    b.set_message(format!("{workers} worker(s)"));
                }
            }
            Event::StageDone { name, seconds } => {
                if let Some(b) = bars.get(name) {
                    b.finish_with_message(format!("done in {seconds:.2}s"));
                }
            }
            Event::Iteration { redo, iteration, inertia, shift } => {
                let mut ib = iter_bar.lock().unwrap_or_else(|e| e.into_inner());
                let b = ib.get_or_insert_with(|| {
                    multi.add(ProgressBar::new_spinner().with_style(ProgressStyle::with_template("  iterate {msg}").expect("valid")))
                });
                b.set_message(format!("redo {redo} iteration {iteration}: inertia {inertia:.6e}, shift {shift:.3e}"));
            }
            Event::Resumed { redo, iteration } => {
                let _ = multi.println(format!("resumed from the checkpoint at redo {redo}, iteration {iteration}"));
            }
        }
    })
}

/// The summary table printed at the end of `run` and `coordinator`.
fn print_summary(s: &Summary, workers: usize) {
    let m = &s.metrics;
    let f = |k: &str| m.get(k).map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let score = |k: &str| m.get(k).and_then(|v| v.as_f64()).map_or("-".into(), |v| format!("{v:.4}"));
    let mut rows: Vec<(String, String)> = vec![
        ("output".into(), s.output.clone()),
        ("dataset".into(), m["dataset"].as_str().unwrap_or("").to_string()),
        ("records".into(), format!("{} ({} embedded, {} bad)", f("records"), f("n"), f("bad_records"))),
        ("model(s)".into(), match m["models"].as_array() {
            Some(a) if !a.is_empty() => a.iter().map(|x| format!("{} ({}-d)", x["name"].as_str().unwrap_or("?"), x["dim"])).collect::<Vec<_>>().join(" + "),
            _ => "none (the dataset's vectors as they are)".into(),
        }),
        ("k x d".into(), format!("{} x {}", f("k"), f("d"))),
        ("init".into(), format!("{} ({}, {})", m["init"].as_str().unwrap_or(""), m["algorithm"].as_str().unwrap_or(""), m["metric"].as_str().unwrap_or(""))),
        ("iterations".into(), format!("{}{}", f("iterations"), if m["converged"] == true { " (converged)" } else { "" })),
        ("inertia".into(), m["inertia"].as_f64().map_or("-".into(), |v| format!("{v:.6e}"))),
        ("ACC / NMI / ARI".into(), format!("{} / {} / {}", score("acc"), score("nmi"), score("ari"))),
        ("workers".into(), workers.to_string()),
    ];
    let sizes: Vec<String> = s.cluster_sizes.iter().map(u64::to_string).collect();
    rows.push(("cluster sizes".into(), sizes.join(" ")));
    let order = ["embed", "seed", "iterate", "assign", "commit"];
    let times: Vec<String> = order.iter().filter_map(|k| s.timings.get(*k).map(|t| format!("{k} {t:.2}s"))).collect();
    rows.push(("time per stage".into(), times.join(", ")));
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    println!("imclust job committed{}", if s.resumed { " (resumed from a checkpoint)" } else { "" });
    for (k, v) in rows {
        println!("  {k:<w$}  {v}");
    }
}

/// Starts the coordinator service; returns its address and a shutdown switch.
async fn start_service(
    driver: &Driver,
    listen: &str,
    security: Security,
) -> Result<(std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let shared = driver.shared.clone();
    let server = tokio::spawn(async move {
        if let Err(e) = service::serve(shared, listener, security, async {
            let _ = rx.await;
        })
        .await
        {
            tracing::error!(error = %e, "coordinator service stopped");
        }
    });
    Ok((addr, tx, server))
}

/// After the job: give live workers up to `grace` to hear that it is over. With `expect`
/// workers (the size of a Kubernetes worker Job), keep answering "over" until that many have
/// heard it, so that workers which start late (image pulls, retries) or find a job committed
/// earlier exit 0 instead of dialling a coordinator that is gone.
async fn say_goodbye(driver: &Driver, grace: Duration, expect: usize) {
    let until = std::time::Instant::now() + grace;
    loop {
        let (waiting, told) = {
            let b = driver.shared.board();
            (b.awaiting_goodbye(std::time::Instant::now()), b.told_done())
        };
        if std::time::Instant::now() >= until || (waiting == 0 && told >= expect) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metrics_registry(metrics: &Metrics) -> Registry {
    let mut r = Registry::default();
    metrics.register(&mut r);
    r
}

pub fn run(a: RunArgs, log: LogFormat) -> Result<()> {
    if a.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let mut job = a.config.load()?;
    if job.config.runtime.threads == 0 {
        // N workers on one machine share its cores: one ONNX Runtime pool per core each
        // would oversubscribe them (measured: 2.3x slower with 2 workers on 2 cores).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        job.config.runtime.threads = (cores / a.workers).max(1);
    }
    let threads = job.config.runtime.threads;
    let rtc = runtime_config(&job, a.onnxruntime.clone())?;
    imclust_embed::runtime::init(&rtc)?;
    let token = match coordinator_token(&job.config.auth)? {
        Some(t) => t,
        None => random_token()?,
    };
    // Local workers dial the loopback interface: TLS is for clusters (coordinator / worker).
    let security = Security { token: Some(token.clone()), tls: None, client_ca: None };
    let rt = tokio_runtime()?;
    rt.block_on(async move {
        let storage = Storage::new(job.config.storage.clone());
        let metrics_listen = a.metrics_listen.clone().unwrap_or_else(|| job.config.cluster.metrics_listen.clone());
        let lease = job.config.cluster.lease_seconds;
        let plan = Plan::new(job, storage, rtc.clone()).await?;
        let metrics = Metrics::default();
        if !metrics_listen.is_empty() {
            telemetry::serve_metrics(&metrics_listen, metrics_registry(&metrics)).await?;
        }
        let driver = Driver::new(plan, metrics, progress_printer(a.quiet));
        // Local workers dial the loopback interface, whatever cluster.listen says.
        let (addr, stop_server, server) = start_service(&driver, "127.0.0.1:0", security).await?;
        let url = format!("http://{addr}");
        let exe = std::env::current_exe().context("locating the imclust binary for the workers")?;
        let mut children = Vec::new();
        for i in 0..a.workers {
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.arg("--log-format").arg(match log { LogFormat::Pretty => "pretty", LogFormat::Json => "json" });
            cmd.args(["worker", "--coordinator", &url, "--name", &format!("local-{i}"), "--reconnect-seconds", "10"]);
            if let Some(p) = &rtc.onnxruntime_path {
                cmd.arg("--onnxruntime").arg(p);
            }
            cmd.env("IMCLUST_TOKEN", &token).kill_on_drop(true);
            if std::env::var_os("RAYON_NUM_THREADS").is_none() {
                // The k-means kernel's threads: the worker's share of the cores, like ORT's.
                cmd.env("RAYON_NUM_THREADS", threads.to_string());
            }
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn");
            }
            let child = cmd.spawn().context("starting a local worker process")?;
            eprintln!("worker local-{i}: pid {}", child.id().unwrap_or(0));
            children.push(child);
        }
        // If every worker process dies, nobody is left to do the work: stop the job.
        let abort = driver.abort.clone();
        let watcher = tokio::spawn(async move {
            let mut statuses = Vec::new();
            for (i, mut c) in children.into_iter().enumerate() {
                let s = c.wait().await;
                statuses.push(format!("local-{i}: {}", s.map_or_else(|e| e.to_string(), |s| s.to_string())));
            }
            let mut ab = abort.lock().unwrap_or_else(|e| e.into_inner());
            if ab.is_none() {
                *ab = Some(format!("every local worker exited before the job was done ({}); see their errors above", statuses.join(", ")));
            }
            statuses
        });
        let outcome = driver.run().await;
        say_goodbye(&driver, Duration::from_secs_f64(lease.max(2.0)), 0).await;
        // Workers exit 0 once they hear the job is over; stragglers are stopped.
        let _ = tokio::time::timeout(Duration::from_secs(10), watcher).await;
        let _ = stop_server.send(());
        let _ = server.await;
        match outcome? {
            Outcome::Done(s) => {
                print_summary(&s, a.workers);
                Ok(())
            }
            Outcome::AlreadyCommitted(url) => bail!(
                "job output {url} is already committed: pick another job id (job.id / --set job.id=...) or delete it"
            ),
        }
    })
}

pub fn coordinator(a: CoordinatorArgs) -> Result<()> {
    let job = a.config.load()?;
    let rtc = runtime_config(&job, a.onnxruntime.clone())?;
    imclust_embed::runtime::init(&rtc)?;
    let token = coordinator_token(&job.config.auth)?;
    if token.is_none() {
        tracing::warn!("no bearer token (auth.token_env / auth.token_file): any client that reaches the port can join");
    }
    let security = security(&job.config.auth, token)?;
    let listen = a.listen.clone().unwrap_or_else(|| job.config.cluster.listen.clone());
    let metrics_listen = a.metrics_listen.clone().unwrap_or_else(|| job.config.cluster.metrics_listen.clone());
    let expect = a.expect_workers;
    let grace = if expect > 0 { Duration::from_secs(a.linger_seconds) } else { Duration::from_secs_f64(job.config.cluster.lease_seconds.max(2.0)) };
    let rt = tokio_runtime()?;
    rt.block_on(async move {
        let storage = Storage::new(job.config.storage.clone());
        let plan = Plan::new(job, storage, rtc).await?;
        let metrics = Metrics::default();
        if !metrics_listen.is_empty() {
            telemetry::serve_metrics(&metrics_listen, metrics_registry(&metrics)).await?;
        }
        let driver = Driver::new(plan, metrics, progress_printer(false));
        let (addr, stop_server, server) = start_service(&driver, &listen, security).await?;
        // Tests and scripts read this line to find a port picked by the system (":0").
        eprintln!("coordinator listening on {addr}");
        let outcome = driver.run().await;
        say_goodbye(&driver, grace, expect).await;
        let _ = stop_server.send(());
        let _ = server.await;
        match outcome? {
            Outcome::Done(s) => {
                let workers = driver.shared.board().workers_seen();
                print_summary(&s, workers);
                Ok(())
            }
            Outcome::AlreadyCommitted(url) => {
                eprintln!("job output {url} is already committed: nothing to do");
                Ok(())
            }
        }
    })
}

pub fn worker(a: WorkerArgs) -> Result<()> {
    let token = match &a.token_file {
        Some(f) => Some(String::from_utf8(read(f, "token file")?).context("the token file is not UTF-8")?.trim().to_string()),
        None => std::env::var("IMCLUST_TOKEN").ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
    };
    let identity = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some((read(c, "TLS client certificate")?, read(k, "TLS client key")?)),
        _ => None,
    };
    let name = a.name.clone().or_else(|| std::env::var("JOB_COMPLETION_INDEX").ok().map(|i| format!("index-{i}"))).unwrap_or_default();
    let o = Options {
        coordinator: a.coordinator.clone(),
        token,
        ca: a.tls_ca.as_ref().map(|p| read(p, "TLS CA")).transpose()?,
        identity,
        domain: a.tls_domain.clone(),
        name,
        onnxruntime: a.onnxruntime.clone(),
        reconnect: Duration::from_secs(a.reconnect_seconds),
    };
    let rt = tokio_runtime()?;
    let exit = rt.block_on(async move {
        let metrics = WorkerMetrics::default();
        if !a.metrics_listen.is_empty() {
            let mut r = Registry::default();
            metrics.register(&mut r);
            telemetry::serve_metrics(&a.metrics_listen, r).await?;
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("stop requested: finishing the current task, then leaving");
                let _ = stop_tx.send(true);
            }
        });
        anyhow::Ok(task::run(o, stop_rx, metrics).await?)
    })?;
    match exit {
        Exit::JobOver { failed: true, message } => eprintln!("the job failed: {message}"),
        Exit::JobOver { .. } => {}
        Exit::Stopped => eprintln!("worker stopped"),
    }
    Ok(())
}
