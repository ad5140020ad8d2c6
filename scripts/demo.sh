#!/usr/bin/env bash
# The demo: clusters scikit-learn's handwritten digits (1,797 images, 8x8 pixels, 10 classes)
# with k-means++ and 10 restarts, scores the clusters against the true digits and prints
# where the outputs are.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
data="$(bash scripts/fetch-digits.sh)"
cargo build --release --locked --quiet -p imclust-cli
out="$root/out/digits"
./target/release/imclust cluster --embeddings "$data/x.npy" --labels "$data/y.npy" \
  --k 10 --init kmeans++ --n-redo 10 --seed 0 --out "$out" >/dev/null
python3 - "$out/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"digits: {m['n']} images x {m['d']} pixels -> {m['k']} clusters in {m['seconds']:.3f}s "
      f"({m['iterations']} iterations, best of {m['n_redo']} restarts)")
print(f"inertia {m['inertia']:.1f}   ACC {m['acc']:.4f}   NMI {m['nmi']:.4f}   ARI {m['ari']:.4f}")
print("cluster sizes:", m["cluster_sizes"])
PY
echo "outputs: $out/{centroids,assignments,distances,margins}.npy, $out/metrics.json"
