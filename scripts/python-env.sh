#!/usr/bin/env bash
# Creates (idempotently) the Python environment used by the benchmark baselines and by the
# fixture scripts: .cache/venv with pinned numpy, scikit-learn, faiss-cpu, threadpoolctl, and onnx,
# onnxruntime and pillow (test fixtures and reference embeddings).
# Prints the venv's python path on stdout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cache/venv"
stamp="$venv/.imclust-requirements"
reqs="numpy==2.4.6 scikit-learn==1.9.1 faiss-cpu==1.15.1 threadpoolctl==3.8.0 onnx==1.23.2 onnxruntime==1.31.1 pillow==13.0.0"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$reqs" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check $reqs >&2
  echo "$reqs" >"$stamp"
fi
echo "$venv/bin/python"
