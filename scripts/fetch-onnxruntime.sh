#!/usr/bin/env bash
# Fetches ONNX Runtime 1.31.1 (libonnxruntime.so.1.31.1, CPU) out of the pinned PyPI wheel into
# .cache/onnxruntime/. Idempotent and sha256-checked. Prints the library's path; imclust finds
# it there by default (or through ORT_DYLIB_PATH / runtime.onnxruntime_path).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/onnxruntime/libonnxruntime.so.1.31.1"
python3 "$root/scripts/fetch_wheel_member.py" onnxruntime==1.31.1 \
  5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f \
  onnxruntime/capi/libonnxruntime.so.1.31.1 \
  fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3 \
  "$dest" \
  --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 >&2
echo "$dest"
