//! End-to-end tests of `imclust cluster` / `imclust eval`: the real binary, real data
//! (scikit-learn's digits, fetched by scripts/fetch-digits.sh) and scikit-learn itself as the
//! reference (the Python env of scripts/python-env.sh). scripts/test.sh prepares both.

#[path = "common.rs"]
mod common;
use common::*;
use imclust_data::output::{Assignments, OutputReader};
use imclust_data::storage::Storage;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The digits fixture: (x.npy, y.npy).
fn digits() -> (PathBuf, PathBuf) {
    let dir = fixture("IMCLUST_DIGITS", ".cache/data/digits", "scripts/fetch-digits.sh");
    (dir.join("x.npy"), dir.join("y.npy"))
}

/// Runs a future to completion (the tests are synchronous, like the binary).
fn block<T>(f: impl Future<Output = T>) -> T {
    imclust_data::storage::runtime().unwrap().block_on(f)
}

/// The committed output of job `job` under `root`, its checksums verified.
fn open(root: &Path, job: &str) -> OutputReader {
    let loc = Storage::default().locate(s(&root.join(job))).unwrap();
    let r = block(OutputReader::open(loc)).unwrap();
    block(r.verify()).unwrap();
    r
}

/// scikit-learn's `KMeans(10, n_init=10)` inertia on digits, median over seeds 0..9
/// (1,165,148.98 .. 1,165,248.45; measured with scikit-learn 1.9.1).
const SKLEARN_DIGITS_INERTIA: f64 = 1_165_189.0;

#[test]
fn digits_inertia_matches_scikit_learn_and_eval_agrees_with_it() {
    let (x, y) = digits();
    let out = tempfile::tempdir().unwrap();
    let mut inertias = Vec::new();
    let y_true = imclust_data::npy::read_labels(&y).unwrap();
    for seed in ["0", "1", "2"] {
        ok(&["cluster", "--embeddings", s(&x), "--labels", s(&y), "--k", "10", "--init", "kmeans++",
            "--n-redo", "10", "--seed", seed, "--output", s(out.path()), "--job-id", seed]);
        let job = open(out.path(), seed);
        let m = block(job.metrics()).unwrap();
        let inertia = m["inertia"].as_f64().unwrap();
        assert!(inertia <= 1.001 * SKLEARN_DIGITS_INERTIA, "seed {seed}: inertia {inertia}");
        // Not a degenerate solution either: close to the best known optimum.
        assert!(inertia >= 1_160_000.0, "seed {seed}: inertia {inertia}");
        assert_eq!(m["n"], 1797);
        assert_eq!(m["cluster_sizes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum::<u64>(), 1797);
        inertias.push(inertia);

        // assignments.parquet: one row per item, the labels given, Euclidean distances whose
        // squares add up to the inertia, non-negative margins.
        let a: Assignments = block(job.assignments()).unwrap();
        assert_eq!(a.index, (0..1797).collect::<Vec<u64>>());
        assert_eq!(a.ids[1796], "1796");
        assert_eq!(a.labels.as_ref().unwrap(), &y_true.iter().map(|&v| Some(v)).collect::<Vec<_>>());
        let sum_sq: f64 = a.distances.iter().map(|&d| f64::from(d) * f64::from(d)).sum();
        assert!((sum_sq - inertia).abs() <= 1e-4 * inertia, "seed {seed}: sum of squared distances {sum_sq} vs inertia {inertia}");
        assert!(a.margins.iter().all(|&g| g >= 0.0));

        // `imclust eval` on the written clusters equals scikit-learn's scores and the scores
        // in metrics.json.
        let ids: Vec<i32> = a.clusters.iter().map(|&c| c as i32).collect();
        let a = out.path().join(format!("clusters-{seed}.npy"));
        imclust_data::npy::write_i32(&a, &[ids.len()], &ids).unwrap();
        let ours: serde_json::Value = serde_json::from_str(&ok(&["eval", "--assignments", s(&a), "--labels", s(&y)])).unwrap();
        // eval reads the committed assignments.parquet as well.
        let parquet = out.path().join(seed).join("assignments.parquet");
        let from_parquet: serde_json::Value = serde_json::from_str(&ok(&["eval", "--assignments", s(&parquet), "--labels", s(&y)])).unwrap();
        assert_eq!(from_parquet, ours);
        let script = "import sys, json, numpy as np\n\
            from sklearn.metrics import normalized_mutual_info_score as nmi, adjusted_rand_score as ari\n\
            from sklearn.metrics.cluster import contingency_matrix\n\
            from scipy.optimize import linear_sum_assignment\n\
            a = np.load(sys.argv[1]); y = np.load(sys.argv[2])\n\
            c = contingency_matrix(y, a); r, k = linear_sum_assignment(-c)\n\
            print(json.dumps({'acc': c[r, k].sum() / len(y), 'nmi': nmi(y, a), 'ari': ari(y, a)}))";
        let o = Command::new(python()).args(["-c", script, s(&a), s(&y)]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let theirs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for key in ["acc", "nmi", "ari"] {
            let (a, b, c) = (ours[key].as_f64().unwrap(), theirs[key].as_f64().unwrap(), m[key].as_f64().unwrap());
            assert!((a - b).abs() < 1e-12, "{key}: imclust {a} vs scikit-learn {b}");
            assert_eq!(a, c, "{key}: eval vs metrics.json");
        }
        // Digits clusters well with k-means: ACC around 0.79.
        assert!(ours["acc"].as_f64().unwrap() > 0.7);
    }
}

#[test]
fn outputs_have_the_documented_shapes_and_seeds_reproduce_a_run() {
    let (x, _) = digits();
    let out = tempfile::tempdir().unwrap();
    let args = ["cluster", "--embeddings", s(&x), "--k", "7", "--seed", "3", "--output", s(out.path())];
    let printed = run(&[&args[..], &["--job-id", "a"]].concat());
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let a_dir = out.path().join("a");
    assert!(String::from_utf8_lossy(&printed.stderr).contains(&format!("output committed: {}", a_dir.display())));
    let a = open(out.path(), "a");
    let c = block(a.centroids()).unwrap();
    assert_eq!((c.rows, c.cols), (7, 64));
    let assigned = block(a.assignments()).unwrap();
    assert_eq!(assigned.len(), 1797);
    assert!(assigned.clusters.iter().all(|&v| v < 7));
    assert!(assigned.labels.is_none() && assigned.uris.is_none());
    // The printed metrics are metrics.json; centroids.json agrees with them.
    let m = block(a.metrics()).unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&printed.stdout).unwrap(), m);
    let info = block(a.centroids_info()).unwrap();
    assert_eq!((info["k"].as_u64(), info["d"].as_u64()), (Some(7), Some(64)));
    let sizes: Vec<u64> = info["clusters"].as_array().unwrap().iter().map(|c| c["size"].as_u64().unwrap()).collect();
    assert_eq!(serde_json::json!(sizes), m["cluster_sizes"]);
    let mut counted = vec![0u64; 7];
    assigned.clusters.iter().for_each(|&c| counted[c as usize] += 1);
    assert_eq!(counted, sizes);
    // The manifest lists exactly the outputs; nothing else is there (no temporary files).
    let manifest = a.manifest();
    let listed: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(listed, ["assignments.parquet", "centroids.json", "centroids.npy", "metrics.json"]);
    assert_eq!(manifest.job_id, "a");
    assert!(manifest.timings.contains_key("fit"), "{manifest:?}");
    let mut names: Vec<String> = std::fs::read_dir(&a_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["assignments.parquet", "centroids.json", "centroids.npy", "manifest.json", "metrics.json"]);

    // A committed job is never overwritten; the same arguments under another id give the
    // same configuration digest and the same clustering.
    let err = fails(&[&args[..], &["--job-id", "a"]].concat());
    assert!(err.contains("already has a committed output") && err.contains("--job-id"), "{err}");
    ok(&[&args[..], &["--job-id", "again"]].concat());
    let again = open(out.path(), "again");
    assert_eq!(again.manifest().config_sha256, manifest.config_sha256);
    assert_eq!(block(again.assignments()).unwrap(), assigned);
    // Without --job-id the job is named after the time.
    let printed = ok(&["cluster", "--embeddings", s(&x), "--k", "2", "--max-iter", "1", "--output", s(&out.path().join("auto"))]);
    let jobs: Vec<String> = std::fs::read_dir(out.path().join("auto")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(jobs.len() == 1 && jobs[0].starts_with("cluster-") && jobs[0].len() == "cluster-20261231-235959".len(), "{jobs:?} {printed}");

    // Seeding with the converged centroids reproduces the same clustering.
    let seeds = format!("seeds:{}", a_dir.join("centroids.npy").display());
    ok(&["cluster", "--embeddings", s(&x), "--k", "7", "--init", &seeds, "--output", s(out.path()), "--job-id", "b"]);
    let b = open(out.path(), "b");
    assert_eq!(block(b.assignments()).unwrap().clusters, assigned.clusters);
    let mb = block(b.metrics()).unwrap();
    assert!(mb["iterations"].as_u64().unwrap() <= 2, "{mb}");
    assert_eq!(mb["init"], "seeds");
    assert_ne!(b.manifest().config_sha256, manifest.config_sha256);
}

#[test]
fn float16_input_gives_the_same_result_as_float32() {
    // Digits are small integers, exact in float16.
    let (x, _) = digits();
    let m = imclust_data::npy::read_matrix_f32(&x).unwrap();
    let out = tempfile::tempdir().unwrap();
    let x16 = out.path().join("x16.npy");
    imclust_data::npy::write_f16(&x16, &[m.rows, m.cols], &m.data).unwrap();
    for (input, dir) in [(&x, "a"), (&x16, "b")] {
        ok(&["cluster", "--embeddings", s(input), "--k", "10", "--seed", "1", "--output", s(out.path()), "--job-id", dir]);
    }
    let read = |job: &str| block(open(out.path(), job).file("centroids.npy")).unwrap();
    assert_eq!(read("a"), read("b"));
}

#[test]
fn minibatch_cosine_and_kmeans_parallel_run_end_to_end() {
    let (x, y) = digits();
    let out = tempfile::tempdir().unwrap();
    for (alg, metric, init) in [("minibatch", "cosine", "kmeans++"), ("lloyd", "cosine", "kmeans-parallel"), ("minibatch", "euclidean", "random")] {
        let job = format!("{alg}-{metric}-{}", init.replace('+', "p")); // job ids: letters, digits, . _ -
        ok(&["cluster", "--embeddings", s(&x), "--labels", s(&y), "--k", "10", "--algorithm", alg, "--metric", metric,
            "--init", init, "--batch-size", "256", "--max-iter", "100", "--n-redo", "3", "--output", s(out.path()),
            "--job-id", &job]);
        let job = open(out.path(), &job);
        let m = block(job.metrics()).unwrap();
        // All of them find real structure in digits.
        assert!(m["nmi"].as_f64().unwrap() > 0.6, "{alg} {metric} {init}: {m}");
        if metric == "cosine" {
            let c = block(job.centroids()).unwrap();
            for row in c.data.chunks(64) {
                let n: f32 = row.iter().map(|v| v * v).sum();
                assert!((n - 1.0).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn bad_input_fails_with_one_clear_message() {
    let (x, y) = digits();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");

    // float64 embeddings: named file, dtype, and the fix.
    let f8 = dir.path().join("f8.npy");
    let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let padded = format!("{header:<117}\n");
    bytes.extend((padded.len() as u16).to_le_bytes());
    bytes.extend(padded.as_bytes());
    bytes.extend([0u8; 32]);
    std::fs::write(&f8, &bytes).unwrap();
    let err = fails(&["cluster", "--embeddings", s(&f8), "--k", "2", "--output", s(&out)]);
    assert!(err.contains("f8.npy") && err.contains("<f8") && err.contains("astype('float32')"), "{err}");

    // Truncated file.
    let full = std::fs::read(&x).unwrap();
    let cut = dir.path().join("cut.npy");
    std::fs::write(&cut, &full[..full.len() - 100]).unwrap();
    let err = fails(&["cluster", "--embeddings", s(&cut), "--k", "2", "--output", s(&out)]);
    assert!(err.contains("cut.npy"), "{err}");

    // Missing file, k too large, wrong init, seeds of the wrong shape, label count mismatch.
    let err = fails(&["cluster", "--embeddings", "/nonexistent/x.npy", "--k", "2", "--output", s(&out)]);
    assert!(err.contains("/nonexistent/x.npy"), "{err}");
    let err = fails(&["cluster", "--embeddings", s(&x), "--k", "5000", "--output", s(&out)]);
    assert!(err.contains("larger than the number of rows (1797)"), "{err}");
    let err = fails(&["cluster", "--embeddings", s(&x), "--k", "3", "--init", "best", "--output", s(&out)]);
    assert!(err.contains("unknown --init 'best'"), "{err}");
    let seeds = format!("seeds:{}", x.display());
    let err = fails(&["cluster", "--embeddings", s(&x), "--k", "3", "--init", &seeds, "--output", s(&out)]);
    assert!(err.contains("k x d = 3 x 64"), "{err}");
    let err = fails(&["eval", "--assignments", s(&y), "--labels", s(&x)]);
    assert!(err.contains("x.npy"), "{err}");
    let err = fails(&["cluster", "--embeddings", s(&x), "--k", "3", "--output", s(&out), "--job-id", "a/b"]);
    assert!(err.contains("job id 'a/b'"), "{err}");
    // Nothing was written by the failed runs.
    assert!(!out.exists());
}
