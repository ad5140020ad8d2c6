//! The coordinator over mutual TLS (rustls): a worker with a client certificate signed by the
//! job's CA runs the job; one without a client certificate, or speaking plain HTTP/2, is
//! refused. Certificates are generated here (rcgen), so nothing is fetched.

#[path = "common.rs"]
mod common;

use common::{BIN, json, s};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki { ca: ca.pem(), server: leaf(vec!["localhost".into()]), client: leaf(vec!["worker".into()]) }
}

/// 600 rows of 3 well-separated 4-d blobs, with labels.
fn blobs(dir: &Path) {
    let centres = [[10.0f32, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0], [0.0, 0.0, 10.0, 0.0]];
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..600usize {
        let c = i % 3;
        for (j, &m) in centres[c].iter().enumerate() {
            x.push(m + ((i * 7 + j * 13) % 11) as f32 / 11.0);
        }
        y.push(c as i64);
    }
    imclust_data::npy::write_f32(&dir.join("x.npy"), &[600, 4], &x).unwrap();
    imclust_data::npy::write_i64(&dir.join("x.labels.npy"), &[600], &y).unwrap();
}

/// `GET /metrics` over plain HTTP/1.1.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    text
}

/// Kills the coordinator if the test fails before it exits on its own.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the coordinator and returns it with the gRPC and metrics ports it printed.
fn coordinator(config: &Path, token: &str) -> (Reaper, u16, u16, std::sync::mpsc::Receiver<String>) {
    let mut c = Reaper(Command::new(BIN)
        .args(["coordinator", "--config", s(config)])
        .env("IMCLUST_TOKEN", token)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let err = c.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let until = Instant::now() + Duration::from_secs(60);
    let port_of = |addr: &str| -> u16 { addr.trim_end_matches("/metrics").rsplit(':').next().unwrap().parse().unwrap() };
    let mut metrics = None;
    loop {
        let line = rx.recv_timeout(until.saturating_duration_since(Instant::now())).expect("the coordinator prints its addresses");
        if let Some(addr) = line.strip_prefix("metrics on http://") {
            metrics = Some(port_of(addr));
        }
        if let Some(addr) = line.strip_prefix("coordinator listening on ") {
            return (c, port_of(addr), metrics.expect("metrics are served before the gRPC port opens"), rx);
        }
    }
}

fn worker(args: &[&str], token: &str) -> std::process::Output {
    Command::new(BIN).arg("worker").args(args).env("IMCLUST_TOKEN", token).output().unwrap()
}

#[test]
fn mutual_tls_admits_only_workers_with_a_client_certificate() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    blobs(d);
    let p = pki();
    for (name, text) in [("ca.pem", &p.ca), ("server.pem", &p.server.0), ("server.key", &p.server.1), ("client.pem", &p.client.0), ("client.key", &p.client.1)] {
        std::fs::write(d.join(name), text).unwrap();
    }
    let config = d.join("job.toml");
    std::fs::write(
        &config,
        format!(
            "[job]\nid = \"tls\"\n[dataset]\nurl = \"npy:{x}\"\n[kmeans]\nk = 3\nmetric = \"euclidean\"\nmax_iter = 10\n\
             [output]\nurl = \"{out}\"\n[cluster]\nshard_size = 100\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nlease_seconds = 10\nheartbeat_seconds = 0.5\n\
             [auth]\nrequire_token = true\n[auth.tls]\ncert = \"{sc}\"\nkey = \"{sk}\"\nclient_ca = \"{ca}\"\n",
            x = s(&d.join("x.npy")),
            out = s(&d.join("out")),
            sc = s(&d.join("server.pem")),
            sk = s(&d.join("server.key")),
            ca = s(&d.join("ca.pem")),
        ),
    )
    .unwrap();
    let (mut coord, port, metrics_port, _log) = coordinator(&config, "tls-token");
    let url = format!("https://localhost:{port}");
    let ca = d.join("ca.pem");

    // No client certificate: the handshake is refused; the worker gives up and says so.
    let o = worker(&["--coordinator", &url, "--tls-ca", s(&ca), "--reconnect-seconds", "2"], "tls-token");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&url), "{err}");
    // Plain HTTP/2 against the TLS port fails too.
    let o = worker(&["--coordinator", &format!("http://127.0.0.1:{port}"), "--reconnect-seconds", "2"], "tls-token");
    assert!(!o.status.success());
    // https without the CA is refused before dialling.
    let o = worker(&["--coordinator", &url], "tls-token");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-ca"));
    assert!(!d.join("out/tls/manifest.json").exists());

    // Prometheus metrics, before any worker got in.
    let m = scrape(metrics_port);
    assert!(m.contains("200 OK") && m.contains("imclust_job_committed 0") && m.contains("imclust_workers_registered_total 0"), "{m}");

    // With the client certificate the job runs to its commit.
    let o = worker(
        &["--coordinator", &url, "--tls-ca", s(&ca), "--tls-cert", s(&d.join("client.pem")), "--tls-key", s(&d.join("client.key"))],
        "tls-token",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let status = coord.0.wait().unwrap();
    assert!(status.success());
    let m = json(&d.join("out/tls/metrics.json"));
    assert_eq!(m["n"], 600);
    assert!(m["acc"].as_f64().unwrap() > 0.999, "{m}");
    assert!(d.join("out/tls/manifest.json").exists());
}
