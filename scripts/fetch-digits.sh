#!/usr/bin/env bash
# Fetches scikit-learn's digits (1,797 x 64, 10 classes) out of the scikit-learn wheel and
# converts it to .cache/data/digits/{x.npy,y.npy}. Idempotent; the wheel and the extracted CSV
# are checked against pinned sha256 sums. Prints the directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/.cache/data/digits"
csv_sha256="09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
if [[ -f "$out/x.npy" && -f "$out/y.npy" && -f "$out/.ok" ]]; then
  echo "$out"; exit 0
fi
mkdir -p "$out"
csv="$root/.cache/downloads/digits.csv.gz"
python3 "$root/scripts/fetch_wheel_member.py" scikit-learn==1.9.1 \
  52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df \
  sklearn/datasets/data/digits.csv.gz "$csv_sha256" "$csv" \
  --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 >&2
python3 - "$csv" "$out" <<'PY'
import gzip, struct, sys
csv, out = sys.argv[1:]
raw = open(csv, "rb").read()
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
