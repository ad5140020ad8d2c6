#!/usr/bin/env python3
"""Side-by-side Lloyd k-means timing: imclust vs scikit-learn vs faiss.

Reads what `imclust bench kmeans --save DIR` wrote (x.npy, init_k{K}.npy, imclust.json),
runs the same number of Lloyd iterations from the same initial centroids with
scikit-learn and faiss, prints a comparison table and writes DIR/compare.json.

`--only faiss --label faiss-skx` runs faiss alone and writes DIR/faiss_skx.json instead; the
shell script runs it first, in a separate process with OPENBLAS_CORETYPE=SkylakeX (faiss-cpu's
bundled OpenBLAS 0.3.15 does not recognise recent Xeons and otherwise falls back to its generic
'Prescott' SSE kernels). The main run then shows both faiss runs and checks the faiss targets
against the faster one.
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
# Label of the extra faiss run (separate process, OPENBLAS_CORETYPE=SkylakeX) read by the main run.
SKX_LABEL = "faiss-skx"


def label_path(directory, label):
    return os.path.join(directory, label.replace("-", "_") + ".json")


def faiss_openblas_core(info):
    """threadpoolctl 'architecture' (OpenBLAS core) of the OpenBLAS bundled with faiss, or None."""
    for lib in info:
        if lib["internal_api"] == "openblas" and "faiss" in lib["filepath"]:
            return lib.get("architecture")
    return None


def data_stamp(directory):
    """Identifies the x.npy a run used, so a stale faiss_skx.json is never mixed into the table."""
    st = os.stat(os.path.join(directory, "x.npy"))
    return {"x_size": st.st_size, "x_mtime_ns": st.st_mtime_ns}


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


def run_only_faiss(args, ours, x):
    """Runs faiss alone (e.g. under OPENBLAS_CORETYPE=SkylakeX) and writes DIR/<label>.json."""
    iters, threads = int(ours["iters"]), int(ours["threads"])
    n, d = x.shape
    print("\n== %s: faiss only, N=%d D=%d iters=%d threads=%d ==" % (args.label, n, d, iters, threads))
    info = print_libraries(threads)
    core = faiss_openblas_core(info)
    print("%s: faiss OpenBLAS core = %s (OPENBLAS_CORETYPE=%s)" % (
        args.label, core, os.environ.get("OPENBLAS_CORETYPE", "unset")))
    want = os.environ.get("OPENBLAS_CORETYPE")
    if want and (core or "").lower() != want.lower():
        print("  WARNING: OPENBLAS_CORETYPE=%s was requested but faiss's OpenBLAS reports core %s" % (want, core))
    results = []
    for r in ours["results"]:
        k = int(r["k"])
        init = np.ascontiguousarray(np.load(os.path.join(args.dir, "init_k%d.npy" % k)))
        assert init.dtype == np.float32 and init.shape == (k, d), (init.dtype, init.shape)
        fa = run_faiss(x, init, iters, args.seed)
        print("K=%-5d %s %.4f s/iter (%d iters)" % (k, args.label, fa["seconds_per_iter"], fa["n_iter"]), flush=True)
        results.append(dict(fa, k=k))
    out = {"label": args.label, "n": n, "d": d, "iters": iters, "threads": threads, "seed": args.seed,
           "data": data_stamp(args.dir), "faiss_openblas_core": core,
           "versions": {"numpy": np.__version__, "faiss": faiss.__version__},
           "threadpools": [dict(lib) for lib in info],
           "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
           "results": results}
    path = label_path(args.dir, args.label)
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print("wrote %s" % path)


def load_skx(args, ours, x):
    """The SkylakeX-forced faiss results written by a `--only faiss` run on this same data, or None."""
    path = label_path(args.dir, SKX_LABEL)
    if not os.path.exists(path):
        print("WARNING: %s not found; the SkylakeX-forced faiss column will be n/a" % path)
        return None
    with open(path) as f:
        skx = json.load(f)
    n, d = x.shape
    mine = {"n": n, "d": d, "iters": int(ours["iters"]), "threads": int(ours["threads"]), "seed": args.seed,
            "data": data_stamp(args.dir)}
    stale = {k: (skx.get(k), v) for k, v in mine.items() if skx.get(k) != v}
    if stale:
        print("WARNING: ignoring %s: it was made for other data/settings %s" % (path, stale))
        return None
    return skx


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="directory written by `imclust bench kmeans --save`")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["faiss"],
                    help="run only this baseline and write DIR/<label>.json (for a run under other OpenBLAS settings)")
    ap.add_argument("--label", default=SKX_LABEL, help="name of the --only run (default %(default)s)")
    args = ap.parse_args()

    with open(os.path.join(args.dir, "imclust.json")) as f:
        ours = json.load(f)
    iters, threads = int(ours["iters"]), int(ours["threads"])
    faiss.omp_set_num_threads(threads)
    x = np.load(os.path.join(args.dir, "x.npy"))
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape == (ours["n"], ours["d"]), (x.dtype, x.shape)
    n, d = x.shape
    if args.only:
        return run_only_faiss(args, ours, x)
    print("\n== Python baselines: N=%d D=%d iters=%d threads=%d ==" % (n, d, iters, threads))
    info = print_libraries(threads)
    skx = load_skx(args, ours, x)
    core_default = faiss_openblas_core(info)
    core_skx = skx["faiss_openblas_core"] if skx else None
    print("faiss OpenBLAS core: default run = %s; %s run (OPENBLAS_CORETYPE=%s) = %s" % (
        core_default, SKX_LABEL, skx["env"].get("OPENBLAS_CORETYPE") if skx else "-",
        core_skx if skx else "n/a (no usable %s, see above)" % os.path.basename(label_path(args.dir, SKX_LABEL))))
    skx_by_k = {int(r["k"]): r for r in skx["results"]} if skx else {}

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
        fs = skx_by_k.get(k)
        if skx and fs is None:
            print("  WARNING: %s has no K=%d result" % (SKX_LABEL, k))
        for name, res in (("sklearn", sk), ("faiss", fa), (SKX_LABEL, fs)):
            if res is not None and res["n_iter"] != iters:
                print("  NOTE: %s stopped after %d of %d iterations (converged)" % (name, res["n_iter"], iters))
        rows.append({"k": k, "imclust": r, "sklearn": sk, "faiss": fa, "faiss_skx": fs})

    def fmt(v, spec):
        return spec % v if v is not None else "n/a"

    hdr = ("%6s | %14s | %14s | %12s | %30s | %15s | %-24s | %-24s | %-36s | %s" % (
        "K", "imclust s/iter", "sklearn s/iter", "faiss s/iter", "faiss (SkylakeX forced) s/iter",
        "imclust GFLOP/s", "speedup vs sklearn", "speedup vs faiss default", "speedup vs faster faiss",
        "inertia imclust / sklearn / faiss / faiss-skx*"))
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for row in rows:
        k, ours_s = row["k"], row["imclust"]["seconds_per_iter"]
        fa_s = row["faiss"]["seconds_per_iter"]
        fs_s = row["faiss_skx"]["seconds_per_iter"] if row["faiss_skx"] else None
        row["speedup_vs_sklearn"] = row["sklearn"]["seconds_per_iter"] / ours_s
        row["speedup_vs_faiss_default"] = fa_s / ours_s
        row["speedup_vs_faiss_skx"] = fs_s / ours_s if fs_s is not None else None
        # The faiss targets are checked against the faster of the two faiss runs.
        row["faiss_fastest"] = "faiss_skx" if fs_s is not None and fs_s < fa_s else "faiss"
        row["speedup_vs_faiss"] = min(fa_s, fs_s if fs_s is not None else fa_s) / ours_s
        cs, row["target_vs_sklearn"] = target_cell(k, "sklearn", row["speedup_vs_sklearn"])
        cf, row["target_vs_faiss"] = target_cell(k, "faiss", row["speedup_vs_faiss"])
        cf += " [%s]" % ("default only" if fs_s is None else "skx" if row["faiss_fastest"] == "faiss_skx" else "default")
        print("%6d | %14.4f | %14.4f | %12.4f | %30s | %15.1f | %-24s | %-24s | %-36s | %.6g / %.6g / %s / %s" % (
            k, ours_s, row["sklearn"]["seconds_per_iter"], fa_s, fmt(fs_s, "%.4f"),
            row["imclust"]["gflops"], cs, "%6.2fx" % row["speedup_vs_faiss_default"], cf,
            row["imclust"]["inertia"], row["sklearn"]["inertia"], fmt(row["faiss"]["inertia"], "%.6g"),
            fmt(row["faiss_skx"]["inertia"] if row["faiss_skx"] else None, "%.6g")))
    print("* faiss's objective is measured at the assignment step of its last iteration, i.e. before the"
          " last centroid update, so it is slightly higher than the imclust/sklearn inertia (after the update)."
          "\n  Inertias can also differ when a cluster goes empty: each library re-seeds empty clusters differently.")
    print("  sklearn s/iter = fit() time / n_iter_ (includes its input checks, centring copy and final E-step);"
          " faiss s/iter = train() time / iterations.")
    print("  faiss default: this process, OPENBLAS_CORETYPE unset (faiss's OpenBLAS core %s); faiss (SkylakeX"
          " forced): separate process with OPENBLAS_CORETYPE=SkylakeX (core %s)." % (core_default, core_skx or "n/a"))
    print("  'speedup vs faster faiss' (the faiss target) uses the faster of the two faiss runs, named in [];"
          " 'speedup vs faiss default' is for reference only.")
    if not skx:
        print("  WARNING: no %s results: the faiss targets were checked against the default faiss run only,"
              " which may be running generic OpenBLAS kernels." % SKX_LABEL)
    checks = [row[t] for row in rows for t in ("target_vs_sklearn", "target_vs_faiss") if row[t] is not None]
    print("targets: %d/%d PASS" % (sum(c["pass"] for c in checks), len(checks)))

    out = {"n": n, "d": d, "iters": iters, "threads": threads, "seed": args.seed,
           "versions": {"numpy": np.__version__, "sklearn": sklearn.__version__, "faiss": faiss.__version__},
           "threadpools": [{k: v for k, v in lib.items()} for lib in info],
           "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
           "faiss_openblas_core": {"faiss": core_default, "faiss_skx": core_skx},
           # The SkylakeX-forced faiss run: its environment, thread pools and versions (results are per row).
           "faiss_skx": {k: v for k, v in skx.items() if k != "results"} if skx else None,
           "results": rows}
    path = os.path.join(args.dir, "compare.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print("wrote %s" % path)


if __name__ == "__main__":
    sys.exit(main())
