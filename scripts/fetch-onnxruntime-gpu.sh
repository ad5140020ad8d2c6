#!/usr/bin/env bash
# Fetches ONNX Runtime 1.31.1 with CUDA out of the pinned PyPI onnxruntime-gpu wheel into
# .cache/onnxruntime-gpu/: libonnxruntime.so.1.31.1 and the provider libraries it loads from its
# own folder (providers_shared, providers_cuda, providers_tensorrt). Idempotent and
# sha256-checked. Prints the main library's path; point ORT_DYLIB_PATH (or --onnxruntime) at it.
#
# The CUDA provider needs CUDA 13 (libcudart.so.13, libcublas(Lt).so.13, libcurand.so.10) and
# cuDNN 9 on the machine (the wheel's `cuda` / `cudnn` extras: nvidia-*-cu13), plus the NVIDIA
# driver; the TensorRT provider also needs TensorRT 10. Without them imclust falls back to CPU
# with a warning. The Dockerfile's runtime-cuda target runs this script.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/onnxruntime-gpu"
wheel_sha=e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6
# member  sha256 (the same wheel is downloaded once and reused for every member)
while read -r member sha; do
  python3 "$root/scripts/fetch_wheel_member.py" onnxruntime-gpu==1.31.1 "$wheel_sha" \
    "onnxruntime/capi/$member" "$sha" "$dest/$member" \
    --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 >&2
done <<'PINS'
libonnxruntime.so.1.31.1 5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303
libonnxruntime_providers_shared.so 086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d
libonnxruntime_providers_cuda.so d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137
libonnxruntime_providers_tensorrt.so 1882ee49fdb0e6fc2d272b00cfaf9a3310bf8580a34385c0eec4d82014ea172e
PINS
echo "$dest/libonnxruntime.so.1.31.1"
