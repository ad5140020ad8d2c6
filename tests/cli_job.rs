//! The job runner end to end through the real binary: `imclust run` with 1..3 local worker
//! processes, `imclust coordinator` + `imclust worker` processes, a worker killed mid-iterate,
//! a coordinator killed and restarted (resuming from its checkpoint), bearer tokens, text and
//! zero-shot seeding with the toy dual encoder (alone and fused with an image-only model), bad
//! records, and `imclust validate-config`.
//!
//! Every comparison is byte for byte: a job's results do not depend on the number of workers,
//! on failures or on restarts.

#[path = "common.rs"]
mod common;
use common::*;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Data.

/// splitmix64: a fixed, portable stream of numbers for generated data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// `n x d` float32 Gaussian blobs around `k` centres (centre coordinates ~ N(0, spread^2),
/// unit noise) at `path`, with the labels in the sibling `<stem>.labels.npy` (which is where
/// npy datasets find them). Returns the labels.
fn blobs(path: &Path, n: usize, d: usize, k: usize, spread: f64, seed: u64) -> Vec<i64> {
    let mut rng = Rng(seed);
    let centres: Vec<f64> = (0..k * d).map(|_| rng.normal() * spread).collect();
    let mut data = Vec::with_capacity(n * d);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = (rng.next_u64() % k as u64) as usize;
        labels.push(c as i64);
        data.extend((0..d).map(|j| (centres[c * d + j] + rng.normal()) as f32));
    }
    imclust_data::npy::write_f32(path, &[n, d], &data).unwrap();
    let stem = path.file_stem().unwrap().to_str().unwrap();
    imclust_data::npy::write_i64(&path.with_file_name(format!("{stem}.labels.npy")), &[n], &labels).unwrap();
    labels
}

/// An image-only bundle made from the toy dual encoder: the same image tower, `family =
/// "image"`, no `[text]` section (docs/bundles.md: an image bundle must not have one) and no
/// text model file, under another name (model names must be unique in a fused job).
fn toy_image_only_bundle(toy: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("toy-image");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(toy.join("image.onnx"), out.join("image.onnx")).unwrap();
    let text = std::fs::read_to_string(toy.join("bundle.toml")).unwrap();
    let (head, _text_section) = text.split_once("\n[text]").expect("the toy bundle has a [text] section");
    assert!(head.contains("name = \"toy-colors\"") && head.contains("family = \"dual\""), "{head}");
    let toml = head.replace("name = \"toy-colors\"", "name = \"toy-image\"").replace("family = \"dual\"", "family = \"image\"");
    std::fs::write(out.join("bundle.toml"), toml).unwrap();
    // The copy is a valid bundle of its own.
    let inspect = ok(&["models", "inspect", s(&out)]);
    assert!(!inspect.contains("text.onnx"), "{inspect}");
    out
}

/// A string as a TOML basic string.
fn q(p: &Path) -> String {
    format!("{:?}", p.to_str().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// A spawned `imclust` whose stderr lines arrive on a channel (and are all kept), and whose
/// stdout is collected. Killed on drop if still running, so a failing test leaves no process.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    stderr: Vec<String>,
    /// When each line of `stderr` arrived.
    times: Vec<Instant>,
    stdout: Option<JoinHandle<String>>,
    what: String,
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(std::env::temp_dir()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.env_remove("IMCLUST_TOKEN").env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn imclust");
    let (tx, lines) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    Proc { child, lines, stderr: Vec::new(), times: Vec::new(), stdout: Some(stdout), what: format!("imclust {}", args.join(" ")) }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn push(&mut self, at: Instant, line: String) {
        self.times.push(at);
        self.stderr.push(line);
    }

    fn stderr(&self) -> String {
        self.stderr.join("\n")
    }

    /// Waits for a stderr line satisfying `pred` and returns it; fails (with what was printed)
    /// on a timeout or when stderr ends first.
    fn wait_for(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    self.push(at, line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("{}: no expected line ({e:?}); stderr so far:\n{}", self.what, self.stderr()),
            }
        }
    }

    /// Drains what stderr has so far without blocking.
    fn drain(&mut self) {
        while let Ok((at, line)) = self.lines.try_recv() {
            self.push(at, line);
        }
    }

    /// Waits for the process to exit (at most `timeout`); returns its status and stdout.
    fn finish(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let until = Instant::now() + timeout;
        let status = loop {
            self.drain();
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} still running after {timeout:?}; stderr:\n{}", self.what, self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader ends with the process's stderr.
        while let Ok((at, line)) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.push(at, line);
        }
        let stdout = self.stdout.take().map(|h| h.join().unwrap()).unwrap_or_default();
        (status, stdout)
    }

    /// `finish` and require success.
    fn succeeds(&mut self, timeout: Duration) -> String {
        let (st, out) = self.finish(timeout);
        assert!(st.success(), "{} exited with {st}; stderr:\n{}", self.what, self.stderr());
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn kill9(pid: u32) {
    let st = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(st.success(), "kill -9 {pid}");
}

/// User + system CPU time of a process, in clock ticks (/proc/PID/stat fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// `imclust run --config CONFIG --workers N [extra...]`, required to succeed; returns stderr.
fn run_job(config: &Path, workers: usize, extra: &[&str]) -> String {
    let w = workers.to_string();
    let mut args = vec!["run", "--config", s(config), "--workers", &w];
    args.extend_from_slice(extra);
    let mut p = spawn(&args, &[]);
    let out = p.succeeds(Duration::from_secs(120));
    assert!(out.contains("imclust job committed"), "{out}");
    p.stderr()
}

// ---------------------------------------------------------------------------------------------
// Outputs.

const RESULT_FILES: [&str; 4] = ["assignments.parquet", "centroids.npy", "centroids.json", "metrics.json"];

/// The result files of `<root>/<a>` and `<root>/<b>` are byte-identical (the job id lives in
/// the manifest, not in the results).
fn assert_same_results(root: &Path, a: &str, b: &str) {
    for f in RESULT_FILES {
        let x = std::fs::read(root.join(a).join(f)).unwrap();
        let y = std::fs::read(root.join(b).join(f)).unwrap();
        assert!(x == y, "{f} differs between jobs {a} and {b} under {}", root.display());
    }
    // Not vacuous: the files hold results.
    let m = json(&root.join(a).join("metrics.json"));
    assert!(m["n"].as_u64().unwrap() > 0 && m["inertia"].as_f64().unwrap() > 0.0, "{m}");
}

fn metrics(root: &Path, id: &str) -> serde_json::Value {
    json(&root.join(id).join("metrics.json"))
}

fn assignments(root: &Path, id: &str) -> imclust_data::output::Assignments {
    imclust_data::output::read_assignments(std::fs::read(root.join(id).join("assignments.parquet")).unwrap().into()).unwrap()
}

/// An npy job (no models: the vectors are clustered as they are).
fn npy_job(path: &Path, id: &str, data: &Path, out: &Path, kmeans: &str, cluster: &str) {
    let text = format!(
        "[job]\nid = \"{id}\"\n\n[dataset]\nurl = \"npy:{}\"\n\n[init]\nmethod = \"kmeans++\"\n\n[kmeans]\n{kmeans}\n\n\
         [output]\nurl = {}\n\n[cluster]\n{cluster}\n",
        data.display(),
        q(out)
    );
    std::fs::write(path, text).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn one_and_three_workers_give_identical_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("blobs.npy");
    let labels = blobs(&data, 20_000, 32, 8, 5.0, 7);
    let out = t.join("out");

    // Lloyd, euclidean, tol 0: exactly max_iter full passes over 20 shards.
    let cfg = t.join("lloyd.toml");
    npy_job(&cfg, "lloyd-w1", &data, &out, "k = 8\nalgorithm = \"lloyd\"\nmetric = \"euclidean\"\ntol = 0\nmax_iter = 15\nseed = 3", "shard_size = 1000");
    run_job(&cfg, 1, &[]);
    run_job(&cfg, 3, &["--set", "job.id=lloyd-w3"]);
    assert_same_results(&out, "lloyd-w1", "lloyd-w3");
    let m = metrics(&out, "lloyd-w1");
    assert_eq!((m["n"].as_u64(), m["records"].as_u64(), m["k"].as_u64(), m["d"].as_u64()), (Some(20_000), Some(20_000), Some(8), Some(32)));
    assert_eq!((m["shards"].as_u64(), m["iterations"].as_u64(), m["converged"].as_bool()), (Some(20), Some(15), Some(false)));
    assert_eq!(m["history"].as_array().unwrap().len(), 15);
    assert!(m["acc"].as_f64().unwrap() > 0.99, "{m}");
    assert_eq!(m["cluster_sizes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum::<u64>(), 20_000);
    // The rows are in dataset order with the dataset's labels.
    let a = assignments(&out, "lloyd-w1");
    assert_eq!(a.index, (0..20_000u64).collect::<Vec<_>>());
    assert_eq!(a.labels.as_ref().unwrap().iter().map(|l| l.unwrap()).collect::<Vec<_>>(), labels);
    assert!(a.clusters.iter().all(|&c| c < 8));
    let c = imclust_data::npy::read_matrix_f32(&out.join("lloyd-w1/centroids.npy")).unwrap();
    assert_eq!((c.rows, c.cols), (8, 32));

    // Mini-batch (cosine): 1 and 2 workers agree too.
    let cfg = t.join("minibatch.toml");
    npy_job(
        &cfg,
        "mb-w1",
        &data,
        &out,
        "k = 8\nalgorithm = \"minibatch\"\nmetric = \"cosine\"\nbatch_size = 2000\ntol = 0\nmax_iter = 15\nseed = 3",
        "shard_size = 1000",
    );
    run_job(&cfg, 1, &[]);
    run_job(&cfg, 2, &["--set", "job.id=mb-w2"]);
    assert_same_results(&out, "mb-w1", "mb-w2");
    let m = metrics(&out, "mb-w1");
    assert_eq!((m["algorithm"].as_str(), m["metric"].as_str(), m["iterations"].as_u64()), (Some("minibatch"), Some("cosine"), Some(15)));
    assert!(m["acc"].as_f64().unwrap() > 0.99, "{m}");
    // A different algorithm gives different centroids (the comparison above is not vacuous).
    assert_ne!(std::fs::read(out.join("mb-w1/centroids.npy")).unwrap(), std::fs::read(out.join("lloyd-w1/centroids.npy")).unwrap());
}

#[test]
fn killing_a_worker_mid_iterate_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("big.npy");
    blobs(&data, 100_000, 96, 64, 3.0, 11);
    let out = t.join("out");
    let cfg = t.join("job.toml");
    npy_job(
        &cfg,
        "killed",
        &data,
        &out,
        "k = 64\nmetric = \"cosine\"\ntol = 0\nmax_iter = 60\nseed = 1",
        "shard_size = 5000\nlease_seconds = 1.5\nheartbeat_seconds = 0.25",
    );

    let mut p = spawn(&["run", "--config", s(&cfg), "--workers", "3"], &[]);
    let mut pids = Vec::new();
    for _ in 0..3 {
        let line = p.wait_for(|l| l.starts_with("worker local-"), Duration::from_secs(60));
        pids.push(line.rsplit(' ').next().unwrap().parse::<u32>().unwrap());
    }
    p.wait_for(|l| l.starts_with("iteration 3 (redo 0)"), Duration::from_secs(120));
    // The worker that has done the most work: it surely holds shards (a worker that started
    // late may hold none, and killing it would test nothing).
    let victim = *pids.iter().max_by_key(|&&pid| cpu_ticks(pid)).unwrap();
    assert!(cpu_ticks(victim) > 0);
    kill9(victim);
    let killed_at = p.stderr.len();
    let summary = p.succeeds(Duration::from_secs(180));
    let after = p.stderr[killed_at..].join("\n");
    // The round after the kill waited for the dead worker's shards: its lease expired, or
    // (killed between rounds) the worker was given up after lease_seconds without heartbeats.
    let iters: Vec<Instant> = (killed_at - 1..p.stderr.len()).filter(|&i| p.stderr[i].starts_with("iteration ")).map(|i| p.times[i]).collect();
    let stall = iters.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(stall >= Duration::from_secs(1), "no round waited for the killed worker's shards (longest gap {stall:?}):\n{after}");
    // The job went on past the kill, through every iteration.
    assert!(after.contains("iteration 59 (redo 0)"), "{after}");
    assert!(summary.contains("imclust job committed"), "{summary}");
    let m = metrics(&out, "killed");
    assert_eq!((m["iterations"].as_u64(), m["n"].as_u64(), m["shards"].as_u64()), (Some(60), Some(100_000), Some(20)));

    // Byte for byte the result of a fault-free single worker.
    run_job(&cfg, 1, &["--set", "job.id=reference"]);
    assert_same_results(&out, "reference", "killed");
}

#[test]
fn restarted_coordinator_resumes_with_identical_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("big.npy");
    blobs(&data, 100_000, 96, 64, 3.0, 13);
    let out = t.join("out");
    let cfg = t.join("job.toml");
    npy_job(
        &cfg,
        "restarted",
        &data,
        &out,
        "k = 64\nmetric = \"cosine\"\ntol = 0\nmax_iter = 40\nseed = 2",
        "shard_size = 5000\nlease_seconds = 2\nheartbeat_seconds = 0.25",
    );
    let token = [("IMCLUST_TOKEN", "restart-test-token")];

    let mut coord = spawn(&["coordinator", "--config", s(&cfg), "--listen", "127.0.0.1:0"], &token);
    let line = coord.wait_for(|l| l.starts_with("coordinator listening on "), Duration::from_secs(60));
    let addr = line.trim_start_matches("coordinator listening on ").trim().to_string();
    let port = addr.rsplit(':').next().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let mut workers: Vec<Proc> = (0..2)
        .map(|i| {
            spawn(&["worker", "--coordinator", &url, "--name", &format!("w{i}"), "--reconnect-seconds", "60"], &token)
        })
        .collect();

    // Kill the coordinator once three iterations are checkpointed.
    let ck = out.join("restarted/checkpoints/latest.json");
    let until = Instant::now() + Duration::from_secs(120);
    let at = loop {
        let next = std::fs::read(&ck).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).and_then(|v| v["next_iteration"].as_u64());
        if let Some(n) = next
            && n >= 3
        {
            break n;
        }
        assert!(Instant::now() < until, "no checkpoint at iteration 3 in time; coordinator stderr:\n{}", {
            coord.drain();
            coord.stderr()
        });
        std::thread::sleep(Duration::from_millis(10));
    };
    kill9(coord.pid());
    let (st, _) = coord.finish(Duration::from_secs(30));
    assert!(!st.success());
    assert!(at < 40, "the job must not be finished before the kill (checkpoint at {at})");
    assert!(!out.join("restarted/manifest.json").exists(), "committed before the kill");

    // The same port again: the workers (still dialling) register with the new coordinator.
    let mut again = spawn(&["coordinator", "--config", s(&cfg), "--listen", &format!("127.0.0.1:{port}")], &token);
    let summary = again.succeeds(Duration::from_secs(180));
    let err = again.stderr();
    assert!(err.contains(&format!("coordinator listening on 127.0.0.1:{port}")), "{err}");
    // It resumed where the checkpoint left off (at least iteration 3), not from the start.
    let resumed = err.lines().find(|l| l.starts_with("resumed from the checkpoint at redo 0, iteration ")).unwrap_or_else(|| panic!("{err}"));
    let from: u64 = resumed.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(from >= at, "{resumed} (checkpoint seen at {at})");
    let first = err.lines().find(|l| l.starts_with("iteration ")).unwrap();
    assert!(first.starts_with(&format!("iteration {from} (redo 0)")), "{first}");
    assert!(summary.contains("imclust job committed (resumed from a checkpoint)"), "{summary}");
    for w in &mut workers {
        w.succeeds(Duration::from_secs(60));
    }
    assert_eq!(json(&out.join("restarted/run.json"))["resumed"], true);
    let m = metrics(&out, "restarted");
    assert_eq!((m["iterations"].as_u64(), m["history"].as_array().unwrap().len()), (Some(40), 40));

    // Byte for byte the result of a fault-free run.
    run_job(&cfg, 1, &["--set", "job.id=reference"]);
    assert_same_results(&out, "reference", "restarted");
    assert_eq!(json(&out.join("reference/run.json"))["resumed"], false);
}

/// A job on the colour folder with the toy bundle(s).
#[allow(clippy::too_many_arguments)]
fn colour_job(path: &Path, id: &str, images: &Path, out: &Path, models: &str, init: &str, dataset: &str, kmeans: &str) {
    let text = format!(
        "[job]\nid = \"{id}\"\n\n[dataset]\nurl = \"folder:{}\"\n{dataset}\n\n{models}\n\n[init]\n{init}\n\n\
         [kmeans]\nmetric = \"cosine\"\nmax_iter = 20\n{kmeans}\n\n[output]\nurl = {}\n\n[cluster]\nshard_size = 7\n",
        images.display(),
        q(out)
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn text_seeds_recover_the_planted_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let toy = toy_bundle(t);
    let images = t.join("images");
    let labels = colour_images(&images, 8);
    let out = t.join("out");
    let models = format!("[[models]]\nbundle = {}\nbatch_size = 5", q(&toy));
    let names: Vec<&str> = COLOURS.iter().map(|c| c.0).collect();

    let cfg = t.join("text.toml");
    colour_job(&cfg, "text", &images, &out, &models, "method = \"text\"\ntemplates = [\"a photo of a {} thing.\"]", "", "");
    run_job(&cfg, 2, &[]);
    let m = metrics(&out, "text");
    assert_eq!((m["k"].as_u64(), m["d"].as_u64(), m["n"].as_u64()), (Some(6), Some(8), Some(48)));
    assert_eq!(m["init"], "text");
    assert_eq!(m["acc"], 1.0, "{m}");
    assert_eq!(m["cluster_names"], serde_json::json!(names));
    let c = json(&out.join("text/centroids.json"));
    let got: Vec<&str> = c["clusters"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(got, names);
    assert!(c["clusters"].as_array().unwrap().iter().all(|c| c["size"] == 8), "{c}");
    // Cluster c is class c (the text seeds fix the order).
    assert_eq!(assignments(&out, "text").clusters, labels.iter().map(|&l| l as u32).collect::<Vec<_>>());

    let cfg = t.join("zero-shot.toml");
    colour_job(&cfg, "zero-shot", &images, &out, &models, "method = \"zero-shot\"\ntemplates = [\"a photo of a {} thing.\"]", "", "");
    run_job(&cfg, 2, &[]);
    let m = metrics(&out, "zero-shot");
    assert_eq!(m["init"], "zero-shot");
    assert_eq!(m["iterations"], 0);
    assert_eq!(m["history"], serde_json::json!([]));
    assert_eq!(m["acc"], 1.0, "{m}");
    assert_eq!(assignments(&out, "zero-shot").clusters, labels.iter().map(|&l| l as u32).collect::<Vec<_>>());
    // Zero-shot centroids are the (unit) text seeds: colour c's seed is its image embedding.
    let z = imclust_data::npy::read_matrix_f32(&out.join("zero-shot/centroids.npy")).unwrap();
    assert_eq!((z.rows, z.cols), (6, 8));
    for row in z.data.chunks(8) {
        assert!((row.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
    }
}

#[test]
fn two_models_with_one_name_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let toy = toy_bundle(t);
    let images = t.join("images");
    colour_images(&images, 2);
    let out = t.join("out");
    // The same bundle twice: both default to its name, and their embedding files would collide.
    let models = format!("[[models]]\nbundle = {}\n\n[[models]]\nbundle = {}\nweight = 0.5", q(&toy), q(&toy));
    let cfg = t.join("twice.toml");
    colour_job(&cfg, "twice", &images, &out, &models, "method = \"kmeans++\"", "", "k = 2");
    let err = fails(&["run", "--config", s(&cfg), "--workers", "1"]);
    assert!(err.contains("models[0] and models[1] are both named 'toy-colors'") && err.contains("give one a `name`"), "{err}");
    assert!(!out.join("twice").exists(), "nothing is written");
    // Named apart, the same job runs.
    let models = format!("[[models]]\nbundle = {}\nname = \"a\"\n\n[[models]]\nbundle = {}\nname = \"b\"\nweight = 0.5", q(&toy), q(&toy));
    colour_job(&cfg, "twice", &images, &out, &models, "method = \"kmeans++\"", "", "k = 2");
    run_job(&cfg, 1, &[]);
    assert_eq!(metrics(&out, "twice")["d"], 16);
}

#[test]
fn fused_job_runs_the_zero_shot_seeding_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let toy = toy_bundle(t);
    let image_only = toy_image_only_bundle(&toy, t);
    let images = t.join("images");
    let labels = colour_images(&images, 6);
    let out = t.join("out");
    let models = format!(
        "[[models]]\nbundle = {}\nweight = 1.0\n\n[[models]]\nbundle = {}\nweight = 0.5",
        q(&toy),
        q(&image_only)
    );
    let cfg = t.join("fused.toml");
    colour_job(&cfg, "fused", &images, &out, &models, "method = \"text\"\ntemplates = [\"a photo of a {} thing.\"]", "", "");
    run_job(&cfg, 2, &[]);
    let m = metrics(&out, "fused");
    let ms = m["models"].as_array().unwrap();
    assert_eq!(ms.len(), 2, "{m}");
    assert_eq!((ms[0]["name"].as_str(), ms[0]["dual_encoder"].as_bool(), ms[0]["dim"].as_u64()), (Some("toy-colors"), Some(true), Some(8)));
    assert_eq!((ms[1]["name"].as_str(), ms[1]["dual_encoder"].as_bool(), ms[1]["dim"].as_u64()), (Some("toy-image"), Some(false), Some(8)));
    assert_eq!((ms[0]["weight"].as_f64(), ms[1]["weight"].as_f64()), (Some(1.0), Some(0.5)));
    assert_eq!((m["d"].as_u64(), m["k"].as_u64(), m["n"].as_u64()), (Some(16), Some(6), Some(36)));
    assert_eq!(m["acc"], 1.0, "{m}");
    assert_eq!(assignments(&out, "fused").clusters, labels.iter().map(|&l| l as u32).collect::<Vec<_>>());
    // The zero-shot pass filled in the image-only half of every seed, and it stays non-zero.
    let c = imclust_data::npy::read_matrix_f32(&out.join("fused/centroids.npy")).unwrap();
    assert_eq!((c.rows, c.cols), (6, 16));
    for (i, row) in c.data.chunks(16).enumerate() {
        let dual = row[..8].iter().map(|v| v * v).sum::<f32>().sqrt();
        let image = row[8..].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(dual > 0.1 && image > 0.1, "centroid {i}: |dual part| {dual}, |image-only part| {image}: {row:?}");
    }
    // Both parts of the fused rows are the same image tower's output, so each centroid's halves
    // point the same way (the image-only half of seed c is the mean of class c's images).
    for (i, row) in c.data.chunks(16).enumerate() {
        let (a, b) = (&row[..8], &row[8..]);
        let cos = a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
            / (a.iter().map(|v| v * v).sum::<f32>().sqrt() * b.iter().map(|v| v * v).sum::<f32>().sqrt());
        assert!(cos > 0.99, "centroid {i}: cosine {cos} between its halves: {row:?}");
    }
}

#[test]
fn a_committed_job_sends_late_workers_home() {
    // A coordinator that finds its job committed (a Kubernetes Job retried after the commit)
    // still tells the expected workers that the job is over, so they exit 0.
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("blobs.npy");
    blobs(&data, 1_000, 8, 4, 5.0, 9);
    let out = t.join("out");
    let cfg = t.join("job.toml");
    npy_job(&cfg, "done", &data, &out, "k = 4\ntol = 0\nmax_iter = 3", "shard_size = 500");
    run_job(&cfg, 1, &[]);
    let manifest = std::fs::read(out.join("done/manifest.json")).unwrap();
    let mut coord = spawn(
        &["coordinator", "--config", s(&cfg), "--listen", "127.0.0.1:0", "--expect-workers", "2", "--linger-seconds", "60"],
        &[("IMCLUST_TOKEN", "tok")],
    );
    let line = coord.wait_for(|l| l.starts_with("coordinator listening on "), Duration::from_secs(60));
    let url = format!("http://127.0.0.1:{}", line.rsplit(':').next().unwrap().trim());
    for _ in 0..2 {
        let mut w = spawn(&["worker", "--coordinator", &url, "--reconnect-seconds", "30"], &[("IMCLUST_TOKEN", "tok")]);
        let (st, _) = w.finish(Duration::from_secs(30));
        assert!(st.success(), "worker exited {st}:\n{}", w.stderr());
    }
    let (st, _) = coord.finish(Duration::from_secs(30));
    assert!(st.success(), "{}", coord.stderr());
    assert!(coord.stderr().contains("already committed"), "{}", coord.stderr());
    assert_eq!(std::fs::read(out.join("done/manifest.json")).unwrap(), manifest, "the committed output is untouched");
}

#[test]
fn a_wrong_token_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("blobs.npy");
    blobs(&data, 2_000, 8, 4, 5.0, 5);
    let out = t.join("out");
    let cfg = t.join("job.toml");
    npy_job(&cfg, "auth", &data, &out, "k = 4\ntol = 0\nmax_iter = 5", "shard_size = 500");
    let right = "right-token-5f0c2a";
    let wrong = "wrong-token-91bd7e";
    let mut coord = spawn(&["coordinator", "--config", s(&cfg), "--listen", "127.0.0.1:0"], &[("IMCLUST_TOKEN", right)]);
    let line = coord.wait_for(|l| l.starts_with("coordinator listening on "), Duration::from_secs(60));
    let port = line.rsplit(':').next().unwrap().trim().to_string();

    let started = Instant::now();
    let mut w = spawn(
        &["worker", "--coordinator", &format!("http://127.0.0.1:{port}"), "--reconnect-seconds", "60"],
        &[("IMCLUST_TOKEN", wrong)],
    );
    let (st, out_w) = w.finish(Duration::from_secs(20));
    let took = started.elapsed();
    let err = w.stderr();
    assert!(!st.success(), "a worker with the wrong token exited {st}; stderr:\n{err}");
    assert!(took < Duration::from_secs(10), "refusal took {took:?} (a refusal is not retried)");
    assert!(err.contains("refused") && err.contains("token"), "{err}");
    assert!(!err.contains(right) && !out_w.contains(right), "the worker printed the coordinator's token:\n{err}");
    assert!(!err.contains(wrong), "the worker printed its token:\n{err}");

    // The coordinator is still waiting for workers: nothing was committed; it never printed a token.
    assert!(coord.child.try_wait().unwrap().is_none(), "the coordinator exited; stderr:\n{}", coord.stderr());
    kill9(coord.pid());
    coord.finish(Duration::from_secs(30));
    let cerr = coord.stderr();
    assert!(!cerr.contains(right) && !cerr.contains(wrong), "{cerr}");
    assert!(!out.join("auth/manifest.json").exists());
}

#[test]
fn bad_records_fail_or_skip_as_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let toy = toy_bundle(t);
    let images = t.join("images");
    colour_images(&images, 5);
    // A truncated PNG: a real image cut after 40 bytes.
    let good = std::fs::read(images.join("green/002.png")).unwrap();
    std::fs::write(images.join("green/002.png"), &good[..40]).unwrap();
    let total = 30u64;
    let out = t.join("out");
    let models = format!("[[models]]\nbundle = {}\nbatch_size = 4", q(&toy));
    let init = "method = \"kmeans++\"";

    let cfg = t.join("fail.toml");
    colour_job(&cfg, "fail", &images, &out, &models, init, "on_bad_record = \"fail\"", "k = 6");
    let mut p = spawn(&["run", "--config", s(&cfg), "--workers", "2"], &[]);
    let (st, _) = p.finish(Duration::from_secs(120));
    let err = p.stderr();
    assert!(!st.success(), "a job with a corrupt image and on_bad_record = fail succeeded:\n{err}");
    assert!(err.contains("green/002.png"), "{err}");
    assert!(!out.join("fail/manifest.json").exists());

    let cfg = t.join("skip.toml");
    colour_job(&cfg, "skip", &images, &out, &models, init, "on_bad_record = \"skip\"", "k = 6");
    run_job(&cfg, 2, &[]);
    let m = metrics(&out, "skip");
    assert_eq!((m["records"].as_u64(), m["n"].as_u64(), m["bad_records"].as_u64()), (Some(total), Some(total - 1), Some(1)), "{m}");
    let errors = std::fs::read_to_string(out.join("skip/errors.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = errors.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{errors}");
    assert!(lines[0]["id"].as_str().unwrap().contains("green/002.png"), "{errors}");
    assert_eq!(lines[0]["index"], 12); // blue 0..5, cyan 5..10, green 10..15
    assert!(!lines[0]["reason"].as_str().unwrap().is_empty());
    let a = assignments(&out, "skip");
    assert_eq!(a.len() as u64, total - 1);
    assert!(!a.index.contains(&12));
    let manifest = std::fs::read_to_string(out.join("skip/manifest.json")).unwrap();
    assert!(manifest.contains("errors.jsonl"), "{manifest}");
}

#[test]
fn validate_config_refuses_unknown_keys() {
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo().join("examples")).unwrap().map(|e| e.unwrap().path()).collect();
    examples.sort();
    let tomls: Vec<&PathBuf> = examples.iter().filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
    assert!(tomls.len() >= 4, "{examples:?}");
    for f in &tomls {
        let o = run(&["validate-config", s(f)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{}: {err}", f.display());
        assert!(err.contains(": valid ("), "{err}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("examples/fashion-mnist.toml")).unwrap();
    assert!(text.contains("\nmax_iter = "), "the example sets kmeans.max_iter");
    let bad = tmp.path().join("misspelt.toml");
    std::fs::write(&bad, text.replacen("\nmax_iter = ", "\nmax_iters = ", 1)).unwrap();
    let err = fails(&["validate-config", s(&bad)]);
    assert!(err.contains("max_iters") && err.contains("misspelt.toml"), "{err}");
    // A misspelt section too.
    std::fs::write(&bad, text.replacen("[cluster]", "[clustre]", 1)).unwrap();
    let err = fails(&["validate-config", s(&bad)]);
    assert!(err.contains("clustre"), "{err}");
}
