#!/usr/bin/env python3
"""Side-by-side Lloyd k-means timing: imclust vs scikit-learn vs faiss.

Reads what `imclust bench kmeans --save DIR` wrote (x.npy, init_k{K}.npy, imclust.json),
runs the same number of Lloyd iterations from the same initial centroids with
scikit-learn and faiss, prints a comparison table and writes DIR/compare.json.
Normally run through bench/compare_kmeans.sh.
"""

import argparse
import json
import os
import sys
import time

import faiss
import numpy as np
import sklearn
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_info

# Targets: K -> minimum speedup of imclust over each baseline.
TARGETS = {10: {"sklearn": 4.0}, 100: {"sklearn": 1.5, "faiss": 1.5}, 1000: {"sklearn": 1.5, "faiss": 1.5}}
# OpenBLAS core types that mean "CPU not recognised, generic SSE kernels" on a modern x86 CPU.
GENERIC_OPENBLAS = {"prescott", "core2", "katmai", "coppermine", "northwood", "banias", "atom", "nehalem"}


def print_libraries(threads):
    print("Python baselines: numpy %s, scikit-learn %s, faiss %s" % (np.__version__, sklearn.__version__, faiss.__version__))
    print("faiss OpenMP threads: %d" % faiss.omp_get_max_threads())
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if k in os.environ:
            print("env %s=%s" % (k, os.environ[k]))
    info = threadpool_info()
    for lib in info:
        arch = lib.get("architecture")
        print("  %-8s %-18s version=%-14s %s num_threads=%s  (%s)" % (
            lib["internal_api"], lib.get("prefix", ""), lib.get("version"),
            "core=%-10s" % arch if arch else "", lib["num_threads"], os.path.basename(lib["filepath"])))
        if arch and arch.lower() in GENERIC_OPENBLAS:
            print("  WARNING: %s reports generic core '%s' (CPU not recognised by this OpenBLAS);"
                  " its SGEMM runs slow SSE kernels." % (os.path.basename(lib["filepath"]), arch))
        if lib["num_threads"] != threads:
            print("  NOTE: %s uses %s threads, imclust used %d" % (lib.get("prefix"), lib["num_threads"], threads))
    return info


def run_sklearn(x, init, iters):
    k = init.shape[0]
    warm = x[: min(len(x), max(2000, 4 * k))]
    KMeans(n_clusters=k, init=init, n_init=1, max_iter=2, tol=0, algorithm="lloyd").fit(warm)
    km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=iters, tol=0, algorithm="lloyd")
    t0 = time.perf_counter()
    km.fit(x)
    elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "n_iter": int(km.n_iter_), "seconds_per_iter": elapsed / km.n_iter_,
            "inertia": float(km.inertia_)}


def run_faiss(x, init, iters, seed):
    n, d = x.shape
    k = init.shape[0]

    def make(niter):
        # max_points_per_centroid large enough that faiss never subsamples; min_points_per_centroid=1
        # only silences the "please provide at least ... training points" warning.
        return faiss.Kmeans(d, k, niter=niter, max_points_per_centroid=n // k + 1, min_points_per_centroid=1,
                            seed=seed, verbose=False)

    warm = x[: min(n, max(2000, 4 * k))]
    make(2).train(warm, init_centroids=init)
    km = make(iters)
    t0 = time.perf_counter()
    km.train(x, init_centroids=init)
    elapsed = time.perf_counter() - t0
    n_iter = len(km.obj) if km.obj is not None and len(km.obj) else iters
    return {"seconds": elapsed, "n_iter": n_iter, "seconds_per_iter": elapsed / n_iter,
            "inertia": float(km.obj[-1]) if km.obj is not None and len(km.obj) else None}


def target_cell(k, lib, ratio):
    t = TARGETS.get(k, {}).get(lib)
    if t is None:
        return "%6.2fx" % ratio, None
    ok = ratio >= t
    return "%6.2fx (>=%gx %s)" % (ratio, t, "PASS" if ok else "MISS"), {"target": t, "pass": ok}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="directory written by `imclust bench kmeans --save`")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with open(os.path.join(args.dir, "imclust.json")) as f:
        ours = json.load(f)
    iters, threads = int(ours["iters"]), int(ours["threads"])
    faiss.omp_set_num_threads(threads)
    x = np.load(os.path.join(args.dir, "x.npy"))
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape == (ours["n"], ours["d"]), (x.dtype, x.shape)
    n, d = x.shape
    print("\n== Python baselines: N=%d D=%d iters=%d threads=%d ==" % (n, d, iters, threads))
    info = print_libraries(threads)

    rows = []
    for r in ours["results"]:
        k = int(r["k"])
        init = np.load(os.path.join(args.dir, "init_k%d.npy" % k))
        assert init.dtype == np.float32 and init.shape == (k, d), (init.dtype, init.shape)
        init = np.ascontiguousarray(init)
        sk = run_sklearn(x, init, iters)
        print("K=%-5d sklearn %.4f s/iter (%d iters)" % (k, sk["seconds_per_iter"], sk["n_iter"]), flush=True)
        fa = run_faiss(x, init, iters, args.seed)
        print("K=%-5d faiss   %.4f s/iter (%d iters)" % (k, fa["seconds_per_iter"], fa["n_iter"]), flush=True)
        for name, res in (("sklearn", sk), ("faiss", fa)):
            if res["n_iter"] != iters:
                print("  NOTE: %s stopped after %d of %d iterations (converged)" % (name, res["n_iter"], iters))
        rows.append({"k": k, "imclust": r, "sklearn": sk, "faiss": fa})

    hdr = ("%6s | %14s | %14s | %12s | %15s | %-24s | %-24s | %s" % (
        "K", "imclust s/iter", "sklearn s/iter", "faiss s/iter", "imclust GFLOP/s",
        "speedup vs sklearn", "speedup vs faiss", "inertia imclust / sklearn / faiss*"))
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for row in rows:
        k, ours_s = row["k"], row["imclust"]["seconds_per_iter"]
        row["speedup_vs_sklearn"] = row["sklearn"]["seconds_per_iter"] / ours_s
        row["speedup_vs_faiss"] = row["faiss"]["seconds_per_iter"] / ours_s
        cs, row["target_vs_sklearn"] = target_cell(k, "sklearn", row["speedup_vs_sklearn"])
        cf, row["target_vs_faiss"] = target_cell(k, "faiss", row["speedup_vs_faiss"])
        fi = row["faiss"]["inertia"]
        print("%6d | %14.4f | %14.4f | %12.4f | %15.1f | %-24s | %-24s | %.6g / %.6g / %s" % (
            k, ours_s, row["sklearn"]["seconds_per_iter"], row["faiss"]["seconds_per_iter"],
            row["imclust"]["gflops"], cs, cf, row["imclust"]["inertia"], row["sklearn"]["inertia"],
            "%.6g" % fi if fi is not None else "n/a"))
    print("* faiss's objective is measured at the assignment step of its last iteration, i.e. before the"
          " last centroid update, so it is slightly higher than the imclust/sklearn inertia (after the update)."
          "\n  Inertias can also differ when a cluster goes empty: each library re-seeds empty clusters differently.")
    print("  sklearn s/iter = fit() time / n_iter_ (includes its input checks, centring copy and final E-step);"
          " faiss s/iter = train() time / iterations.")
    checks = [row[t] for row in rows for t in ("target_vs_sklearn", "target_vs_faiss") if row[t] is not None]
    print("targets: %d/%d PASS" % (sum(c["pass"] for c in checks), len(checks)))

    out = {"n": n, "d": d, "iters": iters, "threads": threads, "seed": args.seed,
           "versions": {"numpy": np.__version__, "sklearn": sklearn.__version__, "faiss": faiss.__version__},
           "threadpools": [{k: v for k, v in lib.items()} for lib in info],
           "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
           "results": rows}
    path = os.path.join(args.dir, "compare.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print("wrote %s" % path)


if __name__ == "__main__":
    sys.exit(main())
