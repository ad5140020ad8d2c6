#!/usr/bin/env bash
# The whole test suite, from a fresh clone: fetches what the tests need (idempotent, cached in
# .cache/, checksummed), then runs every unit and integration test of the workspace, then the
# offline checks of the Kubernetes manifests and the Helm chart (scripts/check-k8s.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export IMCLUST_PYTHON="$(bash scripts/python-env.sh)"
export IMCLUST_DIGITS="$(bash scripts/fetch-digits.sh)"
export ORT_DYLIB_PATH="$(bash scripts/fetch-onnxruntime.sh)"
export IMCLUST_OPEN_NSFW="$(bash scripts/fetch-open-nsfw.sh)"
export IMCLUST_FASHION_MNIST="$(bash scripts/fetch-fashion-mnist.sh)"
export IMCLUST_TEXTILES="$(bash scripts/fetch-textiles.sh)"
cargo test --workspace --locked "$@"
bash scripts/check-k8s.sh
