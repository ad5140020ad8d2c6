#!/usr/bin/env python3
"""Side-by-side embedding throughput: imclust vs a Python (Pillow + onnxruntime) baseline.

Reads what `imclust bench embed --save DIR` wrote (imclust_embed.json with the image list and the
imclust figures, embeddings.npy from imclust's pipeline), does the same work on the same images
in Python and prints a comparison table; writes DIR/compare.json.

Python baseline, as the open-nsfw bundle says: Pillow decode (RGB), resize the shortest side to
224 (BILINEAR, long side int(224 * long / short)) and centre-crop 224 (torchvision's offsets),
RGB -> BGR, float32, minus the BGR mean [104, 117, 123], NHWC, batches of the same size as
imclust's, onnxruntime InferenceSession on the bundle's ONNX file with the same intra-op thread
count, output '/ReduceMean_output_0'. Timed: (i) inference on ready tensors (all images
preprocessed first, not timed) and (ii) the whole sequential pipeline (read + decode + preprocess +
infer, batch by batch). Each after a warm-up batch; `--rounds` interleaved rounds, best reported
(as imclust does).
Normally run through bench/compare_embed.sh.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
import PIL
from PIL import Image

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
SIZE = 224
OUTPUT = "/ReduceMean_output_0"
TARGET_PIPE_VS_RAW = 0.9  # imclust pipeline / imclust raw session
TARGET_VS_PYTHON = 1.5  # imclust pipeline / Python pipeline


def preprocess(path):
    """One image -> (224, 224, 3) float32, BGR minus mean."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if w <= h:
            nw, nh = SIZE, int(SIZE * h / w)
        else:
            nw, nh = int(SIZE * w / h), SIZE
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.BILINEAR)
        left = int(round((nw - SIZE) / 2.0))
        top = int(round((nh - SIZE) / 2.0))
        im = im.crop((left, top, left + SIZE, top + SIZE))
        x = np.asarray(im, dtype=np.float32)
    return x[:, :, ::-1] - MEAN_BGR


def cpu_ticks():
    """(all CPUs busy, all CPUs total, this process) in clock ticks from /proc, or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return sum(v) - v[3] - v[4], sum(v), int(rest[11]) + int(rest[12])
    except (OSError, ValueError, IndexError):
        return None


def others_since(t0):
    """Share (0..1) of the machine's CPU time other processes used since cpu_ticks() gave t0."""
    t1 = cpu_ticks()
    if t0 is None or t1 is None or t1[1] <= t0[1]:
        return None
    return max(0, (t1[0] - t0[0]) - (t1[2] - t0[2])) / (t1[1] - t0[1])


def pct(share):
    return "n/a" if share is None else "%.0f%%" % (100 * share)


def batches(n, b):
    return [(i, min(i + b, n)) for i in range(0, n, b)]


def run_ready(sess, inp, ready):
    t0 = time.perf_counter()
    out = [sess.run([OUTPUT], {inp: x})[0] for x in ready]
    return time.perf_counter() - t0, np.concatenate(out).reshape(sum(len(x) for x in ready), -1)


def run_pipeline(sess, inp, files, b):
    t0 = time.perf_counter()
    out = []
    for s, e in batches(len(files), b):
        x = np.ascontiguousarray(np.stack([preprocess(f) for f in files[s:e]]))
        out.append(sess.run([OUTPUT], {inp: x})[0])
    return time.perf_counter() - t0, np.concatenate(out).reshape(len(files), -1)


def cell(ratio, target):
    return "%6.3fx (target >= %gx: %s)" % (ratio, target, "PASS" if ratio >= target else "MISS")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="what imclust bench embed --save wrote")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    with open(os.path.join(args.dir, "imclust_embed.json")) as f:
        ours = json.load(f)
    files = ours["files"]
    n, b, threads = int(ours["images"]), int(ours["batch"]), int(ours["threads"])
    assert len(files) == n, (len(files), n)
    model = os.path.join(ours["bundle"], "open_nsfw.onnx")
    emb_ours = np.load(os.path.join(args.dir, "embeddings.npy"))
    assert emb_ours.shape[0] == n, emb_ours.shape

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    print("\n== Python baseline: onnxruntime %s, Pillow %s, numpy %s; %d images, batch %d, intra_op_num_threads %d ==" % (
        ort.__version__, PIL.__version__, np.__version__, n, b, threads))
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS"):
        if k in os.environ:
            print("env %s=%s" % (k, os.environ[k]))

    t0 = time.perf_counter()
    ready = [np.ascontiguousarray(np.stack([preprocess(f) for f in files[s:e]])) for s, e in batches(n, b)]
    pre_s = time.perf_counter() - t0
    print("Python preprocess only (read+decode+resize+normalise, 1 thread): %.1f images/s (%.2fs)" % (n / pre_s, pre_s))

    ready_rates, pipe_rates, ready_others, pipe_others = [], [], [], []
    emb_py = emb_ready = None
    for r in range(1, args.rounds + 1):
        sess.run([OUTPUT], {inp: ready[0]})  # warm-up
        c = cpu_ticks()
        rs, emb_ready = run_ready(sess, inp, ready)
        ready_others.append(others_since(c))
        sess.run([OUTPUT], {inp: ready[0]})  # warm-up
        c = cpu_ticks()
        ps, emb_py = run_pipeline(sess, inp, files, b)
        pipe_others.append(others_since(c))
        ready_rates.append(n / rs)
        pipe_rates.append(n / ps)
        print("round %d: Python ready tensors %.2f images/s (%.2fs), Python pipeline %.2f images/s (%.2fs)"
              " [other processes' CPU share: %s / %s]" % (
                  r, n / rs, rs, n / ps, ps, pct(ready_others[-1]), pct(pipe_others[-1])), flush=True)
    py_ready, py_pipe = max(ready_rates), max(pipe_rates)

    # Parity: imclust's pipeline embeddings vs Python's (different JPEG decoders and resize
    # rounding: small differences are expected; reported, never a failure).
    a = emb_ours.astype(np.float64)
    p = emb_py.astype(np.float64)
    max_abs = float(np.abs(a - p).max())
    scale = float(np.abs(p).max())
    cos = (a * p).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(p, axis=1))
    parity = {"max_abs_diff": max_abs, "max_abs_value": scale, "mean_cosine": float(cos.mean()),
              "min_cosine": float(cos.min()),
              "python_ready_vs_pipeline_max_abs_diff": float(np.abs(emb_ready - emb_py).max())}

    ip, ir = float(ours["pipeline_images_per_s"]), float(ours["raw_images_per_s"])
    rows = [("imclust pipeline (decode+preprocess || infer)", ip),
            ("imclust raw session (ready tensors)", ir),
            ("Python ready tensors (onnxruntime only)", py_ready),
            ("Python pipeline (sequential decode+preprocess+infer)", py_pipe)]
    print("\n== embedding throughput: %s, %d images, batch %d, %d ORT threads, best of %d rounds each ==" % (
        ours.get("bundle_name", ours["bundle"]), n, b, threads, min(args.rounds, int(ours.get("rounds", args.rounds)))))
    print("%-54s %12s" % ("", "images/s"))
    for name, v in rows:
        print("%-54s %12.2f" % (name, v))
    print("preprocess only: imclust %.1f images/s (%d rayon threads), Python %.1f images/s (1 thread)" % (
        float(ours["preprocess_images_per_s"]), int(ours.get("decode_threads", 0)), n / pre_s))
    print("%-54s %s" % ("imclust pipeline / imclust raw", cell(ip / ir, TARGET_PIPE_VS_RAW)))
    print("%-54s %s" % ("imclust pipeline / Python pipeline", cell(ip / py_pipe, TARGET_VS_PYTHON)))
    print("%-54s %6.3fx" % ("imclust raw / Python ready tensors (same ORT)", ir / py_ready))
    print("%-54s %6.3fx" % ("Python pipeline / Python ready tensors", py_pipe / py_ready))
    shares = [x for x in (ours.get("raw_other_processes_cpu_share_rounds", []) +
                          ours.get("pipeline_other_processes_cpu_share_rounds", []) + ready_others + pipe_others)
              if x is not None]
    if shares and max(shares) > 0.05:
        print("WARNING: other processes used up to %.0f%% of the machine's CPU during some timed rounds (see the"
              " per-round lines); the figures are best-of-rounds, rerun on a quiet machine to confirm" % (100 * max(shares)))
    print("embeddings imclust vs Python: max abs diff %.4g (max |value| %.4g), cosine mean %.6f, min %.6f" % (
        max_abs, scale, parity["mean_cosine"], parity["min_cosine"]))

    out = {"imclust": {k: v for k, v in ours.items() if k != "files"},
           "python": {"onnxruntime": ort.__version__, "pillow": PIL.__version__, "numpy": np.__version__,
                      "intra_op_num_threads": threads, "batch": b, "images": n, "rounds": args.rounds,
                      "reported": "best", "ready_images_per_s": py_ready, "pipeline_images_per_s": py_pipe,
                      "preprocess_images_per_s": n / pre_s, "ready_images_per_s_rounds": ready_rates,
                      "pipeline_images_per_s_rounds": pipe_rates,
                      "ready_other_processes_cpu_share_rounds": ready_others,
                      "pipeline_other_processes_cpu_share_rounds": pipe_others},
           "ratios": {"imclust_pipeline_over_raw": {"value": ip / ir, "target": TARGET_PIPE_VS_RAW,
                                                    "pass": ip / ir >= TARGET_PIPE_VS_RAW},
                      "imclust_pipeline_over_python_pipeline": {"value": ip / py_pipe, "target": TARGET_VS_PYTHON,
                                                                "pass": ip / py_pipe >= TARGET_VS_PYTHON},
                      "imclust_raw_over_python_ready": ir / py_ready},
           "parity": parity}
    path = os.path.join(args.dir, "compare.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print("wrote %s" % path)


if __name__ == "__main__":
    sys.exit(main())
