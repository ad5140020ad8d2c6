//! End-to-end tests of `imclust cluster` / `imclust eval`: the real binary, real data
//! (scikit-learn's digits, fetched by scripts/fetch-digits.sh) and scikit-learn itself as the
//! reference (the Python env of scripts/python-env.sh). scripts/test.sh prepares both.

#[path = "common.rs"]
mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

/// The digits fixture: (x.npy, y.npy).
fn digits() -> (PathBuf, PathBuf) {
    let dir = fixture("IMCLUST_DIGITS", ".cache/data/digits", "scripts/fetch-digits.sh");
    (dir.join("x.npy"), dir.join("y.npy"))
}

/// scikit-learn's `KMeans(10, n_init=10)` inertia on digits, median over seeds 0..9
/// (1,165,148.98 .. 1,165,248.45; measured with scikit-learn 1.9.1).
const SKLEARN_DIGITS_INERTIA: f64 = 1_165_189.0;

#[test]
fn digits_inertia_matches_scikit_learn_and_eval_agrees_with_it() {
    let (x, y) = digits();
    let out = tempfile::tempdir().unwrap();
    let mut inertias = Vec::new();
    for seed in ["0", "1", "2"] {
        let dir = out.path().join(seed);
        ok(&["cluster", "--embeddings", s(&x), "--labels", s(&y), "--k", "10", "--init", "kmeans++",
            "--n-redo", "10", "--seed", seed, "--out", s(&dir)]);
        let m = json(&dir.join("metrics.json"));
        let inertia = m["inertia"].as_f64().unwrap();
        assert!(inertia <= 1.001 * SKLEARN_DIGITS_INERTIA, "seed {seed}: inertia {inertia}");
        // Not a degenerate solution either: close to the best known optimum.
        assert!(inertia >= 1_160_000.0, "seed {seed}: inertia {inertia}");
        assert_eq!(m["n"], 1797);
        assert_eq!(m["cluster_sizes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum::<u64>(), 1797);
        inertias.push(inertia);

        // `imclust eval` on the written assignments equals scikit-learn's scores and the
        // scores in metrics.json.
        let a = dir.join("assignments.npy");
        let ours: serde_json::Value = serde_json::from_str(&ok(&["eval", "--assignments", s(&a), "--labels", s(&y)])).unwrap();
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
    let a = out.path().join("a");
    ok(&["cluster", "--embeddings", s(&x), "--k", "7", "--seed", "3", "--out", s(&a)]);
    let c = imclust_data::npy::read_matrix_f32(&a.join("centroids.npy")).unwrap();
    assert_eq!((c.rows, c.cols), (7, 64));
    let ids = imclust_data::npy::read_labels(&a.join("assignments.npy")).unwrap();
    assert_eq!(ids.len(), 1797);
    assert!(ids.iter().all(|&v| (0..7).contains(&v)));
    let h = imclust_data::npy::read_header(&a.join("distances.npy")).unwrap();
    assert_eq!((h.descr.as_str(), h.shape.as_slice()), ("<f4", &[1797usize][..]));
    // Nothing but the outputs: no temporary files left behind.
    let mut names: Vec<String> = std::fs::read_dir(&a).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["assignments.npy", "centroids.npy", "distances.npy", "margins.npy", "metrics.json"]);

    // Seeding with the converged centroids reproduces the same clustering.
    let b = out.path().join("b");
    let seeds = format!("seeds:{}", a.join("centroids.npy").display());
    ok(&["cluster", "--embeddings", s(&x), "--k", "7", "--init", &seeds, "--out", s(&b)]);
    assert_eq!(imclust_data::npy::read_labels(&b.join("assignments.npy")).unwrap(), ids);
    let mb = json(&b.join("metrics.json"));
    assert!(mb["iterations"].as_u64().unwrap() <= 2, "{mb}");
    assert_eq!(mb["init"], "seeds");
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
        ok(&["cluster", "--embeddings", s(input), "--k", "10", "--seed", "1", "--out", s(&out.path().join(dir))]);
    }
    let read = |d: &str| std::fs::read(out.path().join(d).join("centroids.npy")).unwrap();
    assert_eq!(read("a"), read("b"));
}

#[test]
fn minibatch_cosine_and_kmeans_parallel_run_end_to_end() {
    let (x, y) = digits();
    let out = tempfile::tempdir().unwrap();
    for (alg, metric, init) in [("minibatch", "cosine", "kmeans++"), ("lloyd", "cosine", "kmeans-parallel"), ("minibatch", "euclidean", "random")] {
        let dir = out.path().join(format!("{alg}-{metric}-{init}"));
        ok(&["cluster", "--embeddings", s(&x), "--labels", s(&y), "--k", "10", "--algorithm", alg, "--metric", metric,
            "--init", init, "--batch-size", "256", "--max-iter", "100", "--n-redo", "3", "--out", s(&dir)]);
        let m = json(&dir.join("metrics.json"));
        // All of them find real structure in digits.
        assert!(m["nmi"].as_f64().unwrap() > 0.6, "{alg} {metric} {init}: {m}");
        if metric == "cosine" {
            let c = imclust_data::npy::read_matrix_f32(&dir.join("centroids.npy")).unwrap();
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
    let err = fails(&["cluster", "--embeddings", s(&f8), "--k", "2", "--out", s(&out)]);
    assert!(err.contains("f8.npy") && err.contains("<f8") && err.contains("astype('float32')"), "{err}");

    // Truncated file.
    let full = std::fs::read(&x).unwrap();
    let cut = dir.path().join("cut.npy");
    std::fs::write(&cut, &full[..full.len() - 100]).unwrap();
    let err = fails(&["cluster", "--embeddings", s(&cut), "--k", "2", "--out", s(&out)]);
    assert!(err.contains("cut.npy"), "{err}");

    // Missing file, k too large, wrong init, seeds of the wrong shape, label count mismatch.
    let err = fails(&["cluster", "--embeddings", "/nonexistent/x.npy", "--k", "2", "--out", s(&out)]);
    assert!(err.contains("/nonexistent/x.npy"), "{err}");
    let err = fails(&["cluster", "--embeddings", s(&x), "--k", "5000", "--out", s(&out)]);
    assert!(err.contains("larger than the number of rows (1797)"), "{err}");
    let err = fails(&["cluster", "--embeddings", s(&x), "--k", "3", "--init", "best", "--out", s(&out)]);
    assert!(err.contains("unknown --init 'best'"), "{err}");
    let seeds = format!("seeds:{}", x.display());
    let err = fails(&["cluster", "--embeddings", s(&x), "--k", "3", "--init", &seeds, "--out", s(&out)]);
    assert!(err.contains("k x d = 3 x 64"), "{err}");
    let err = fails(&["eval", "--assignments", s(&y), "--labels", s(&x)]);
    assert!(err.contains("x.npy"), "{err}");
    // Nothing was written by the failed runs.
    assert!(!out.exists());
}
