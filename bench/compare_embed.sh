#!/usr/bin/env bash
# Side-by-side embedding throughput: imclust (raw ONNX Runtime session on ready tensors, and the
# overlapped decode+preprocess+inference pipeline of `imclust embed`) vs Python (Pillow +
# onnxruntime, ready tensors and a sequential pipeline), same images, same model, same threads.
# Usage: bench/compare_embed.sh [--limit 256] [--batch-size 32] [--threads 2] [--rounds 2]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
limit=256 batch_size=32 threads=2 rounds=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --limit|--batch-size|--threads|--rounds)
      [[ $# -ge 2 ]] || { echo "missing value for $1" >&2; exit 2; }
      opt="${1#--}"; declare "${opt//-/_}=$2"; shift 2 ;;
    --limit=*|--batch-size=*|--threads=*|--rounds=*)
      opt="${1%%=*}"; opt="${opt#--}"; declare "${opt//-/_}=${1#*=}"; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
save="$root/.cache/bench/embed"
bundle="$root/.cache/bundles/open-nsfw"
mkdir -p "$save"

cd "$root"
cargo build --release --quiet -p imclust-cli
imclust="${CARGO_TARGET_DIR:-$root/target}/release/imclust"
bash scripts/fetch-onnxruntime.sh >/dev/null
model=$(bash scripts/fetch-open-nsfw.sh)
if [[ ! -f "$bundle/bundle.toml" ]]; then
  "$imclust" models prepare open-nsfw --model "$model" --out "$bundle"
fi
images=$(bash scripts/fetch-textiles.sh)
py=$(bash scripts/python-env.sh)

# The figures assume an otherwise idle machine: say how busy it was.
load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "load average before: $(load) ($(nproc) cores)"
rm -f "$save/imclust_embed.json" "$save/embeddings.npy" "$save/compare.json"
"$imclust" bench embed --bundle "$bundle" --images "$images" --limit "$limit" \
  --batch-size "$batch_size" --threads "$threads" --rounds "$rounds" --device cpu --save "$save"
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set machine-wide for safety but slow down current
# numpy's OpenBLAS; unset them for the Python baseline.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$py" "$root/bench/compare_embed.py" --dir "$save" --rounds "$rounds"
echo "load average after: $(load)"
