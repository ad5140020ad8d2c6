#!/usr/bin/env bash
# Fetches scikit-learn's digits (1,797 x 64, 10 classes) out of the scikit-learn wheel and
# converts it to .cache/data/digits/{x.npy,y.npy}. Idempotent; the extracted CSV is checked
# against a pinned sha256. Prints the directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/.cache/data/digits"
csv_sha256="09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
if [[ -f "$out/x.npy" && -f "$out/y.npy" && -f "$out/.ok" ]]; then
  echo "$out"; exit 0
fi
mkdir -p "$out" "$root/.cache/downloads"
wheel_dir="$root/.cache/downloads/scikit-learn-1.9.1"
if ! ls "$wheel_dir"/scikit_learn-1.9.1-*.whl >/dev/null 2>&1; then
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    scikit-learn==1.9.1 -d "$wheel_dir" >&2
fi
wheel=$(ls "$wheel_dir"/scikit_learn-1.9.1-*.whl | head -n 1)
python3 - "$wheel" "$out" "$csv_sha256" <<'PY'
import gzip, hashlib, struct, sys, zipfile
wheel, out, want = sys.argv[1:]
raw = zipfile.ZipFile(wheel).read("sklearn/datasets/data/digits.csv.gz")
got = hashlib.sha256(raw).hexdigest()
if got != want:
    sys.exit(f"digits.csv.gz from {wheel}: sha256 {got}, expected {want}: the download is corrupt or the wrong version")
rows = [line.split(",") for line in gzip.decompress(raw).decode().strip().splitlines()]
x = [float(v) for r in rows for v in r[:-1]]
y = [int(r[-1]) for r in rows]
def npy(path, descr, shape, fmt, values):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else ""))
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    with open(path + ".tmp", "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%d%s" % (len(values), fmt), *values))
    import os; os.replace(path + ".tmp", path)
npy(out + "/x.npy", "<f4", (len(rows), len(rows[0]) - 1), "f", x)
npy(out + "/y.npy", "<i4", (len(rows),), "i", y)
PY
touch "$out/.ok"
echo "$out"
