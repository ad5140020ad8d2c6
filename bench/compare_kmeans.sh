#!/usr/bin/env bash
# Side-by-side Lloyd k-means benchmark: imclust vs scikit-learn vs faiss on the same synthetic
# data and the same initial centroids. faiss is timed twice: with its bundled OpenBLAS's default
# core detection, and in a separate process with OPENBLAS_CORETYPE=SkylakeX (DIR/faiss_skx.json).
# Usage: bench/compare_kmeans.sh [--n 200000] [--d 512] [--k 10,100,1000] [--iters 10] [--seed 0]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n=200000 d=512 k=10,100,1000 iters=10 seed=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --n|--d|--k|--iters|--seed)
      [[ $# -ge 2 ]] || { echo "missing value for $1" >&2; exit 2; }
      declare "${1#--}=$2"; shift 2 ;;
    --n=*|--d=*|--k=*|--iters=*|--seed=*)
      opt="${1%%=*}"; declare "${opt#--}=${1#*=}"; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
save="$root/.cache/bench/kmeans"
mkdir -p "$save"

cd "$root"
cargo build --release --quiet -p imclust-cli
"${CARGO_TARGET_DIR:-$root/target}/release/imclust" bench kmeans \
  --n "$n" --d "$d" --k "$k" --iters "$iters" --seed "$seed" --save "$save"

py=$(bash "$root/scripts/python-env.sh")
# faiss-cpu bundles OpenBLAS 0.3.15, which does not recognise recent Xeons (e.g. Emerald Rapids)
# and falls back to its generic 'Prescott' SSE kernels. Time faiss a second time, first and in its
# own process, with OPENBLAS_CORETYPE=SkylakeX (only that variable; OPENBLAS_L2_SIZE stays unset),
# so the main run below can show both and check the faiss targets against the faster one.
rm -f "$save/faiss_skx.json"
env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=SkylakeX "$py" "$root/bench/compare_kmeans.py" \
  --dir "$save" --seed "$seed" --only faiss --label faiss-skx ||
  echo "WARNING: the SkylakeX-forced faiss run failed (exit $?); the table will show it as n/a" >&2
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set machine-wide for safety but slow down current
# numpy's OpenBLAS; unset them for the Python baselines only.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$py" "$root/bench/compare_kmeans.py" --dir "$save" --seed "$seed"
