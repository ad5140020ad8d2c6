#!/usr/bin/env bash
# Fetches Fashion-MNIST (the real IDX files, gzipped: train 60,000 and t10k 10,000 images of
# 28 x 28, 10 classes) from the Debian package dataset-fashion-mnist into
# .cache/data/fashion-mnist/, with class_names.txt. Uses an installed copy
# (/usr/share/datasets/fashion-mnist) when there is one; otherwise `apt-get download`s the
# package (no root needed; runs `apt-get update` first only if apt has no index for it).
# Idempotent; the .deb and the extracted files are checked against pinned sha256 digests.
# Prints the directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/data/fashion-mnist"
deb_sha=39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0
version="0.0~git20200523.55506a9-1"
declare -A sums=(
  [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
  [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
  [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
  [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
)
check() {
  for f in "${!sums[@]}"; do
    [ -f "$1/$f" ] && [ "$(sha256sum "$1/$f" | cut -d' ' -f1)" = "${sums[$f]}" ] || return 1
  done
}
if ! check "$dest"; then
  mkdir -p "$dest"
  if check /usr/share/datasets/fashion-mnist; then
    src=/usr/share/datasets/fashion-mnist
  else
    dl="$root/.cache/downloads/fashion-mnist"
    mkdir -p "$dl"
    deb="$dl/dataset-fashion-mnist_${version}_all.deb"
    if [ ! -f "$deb" ] || [ "$(sha256sum "$deb" | cut -d' ' -f1)" != "$deb_sha" ]; then
      rm -f "$deb"
      if ! apt-cache show "dataset-fashion-mnist=$version" >/dev/null 2>&1; then
        sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq >&2
      fi
      (cd "$dl" && apt-get download "dataset-fashion-mnist=$version" >&2 2>/dev/null) \
        || { echo "fetch-fashion-mnist: apt-get download dataset-fashion-mnist=$version failed" >&2; exit 1; }
      got="$(sha256sum "$deb" | cut -d' ' -f1)"
      [ "$got" = "$deb_sha" ] || { echo "fetch-fashion-mnist: $deb has sha256 $got, expected $deb_sha" >&2; rm -f "$deb"; exit 1; }
    fi
    rm -rf "$dl/x" && mkdir -p "$dl/x" && dpkg-deb -x "$deb" "$dl/x"
    src="$dl/x/usr/share/datasets/fashion-mnist"
  fi
  for f in "${!sums[@]}"; do cp "$src/$f" "$dest/$f.tmp" && mv "$dest/$f.tmp" "$dest/$f"; done
  check "$dest" || { echo "fetch-fashion-mnist: extracted files do not match their pinned sha256" >&2; exit 1; }
fi
# Rewritten only when it differs: its modification time is part of the dataset's fingerprint,
# so touching it would make every run miss the embedding cache.
names="$(printf '%s\n' "T-shirt/top" Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag "Ankle boot")"
if [ ! -f "$dest/class_names.txt" ] || [ "$(cat "$dest/class_names.txt")" != "$names" ]; then
  printf '%s\n' "$names" > "$dest/class_names.txt.tmp" && mv "$dest/class_names.txt.tmp" "$dest/class_names.txt"
fi
echo "$dest"
