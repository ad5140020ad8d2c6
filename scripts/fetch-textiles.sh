#!/usr/bin/env bash
# Fetches the 2,000 simulated textile JPEGs of PyPI conformal-clip-data (classes global, local,
# nominal; 500/500/1000) into .cache/data/textiles/<class>/*.jpg. Idempotent; the wheel and the
# extracted tree are checked against pinned sha256 digests. Prints the directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/data/textiles"
python3 "$root/scripts/fetch_wheel_member.py" conformal-clip-data==0.1.4 \
  00144ccc179a887dbea15923be8cf236d0c0f49bf7fb6f7bb288e40b53fb1bcb \
  conformal_clip_data/data/textile_images/simulated/ \
  6c52c28cd3ec860ce19e1e34cf9f5a66996c203bc17880c50404a3908402915f \
  "$dest" >&2
echo "$dest"
