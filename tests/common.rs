//! Helpers shared by the integration tests (included with `#[path = "common.rs"] mod common;`):
//! spawning the real binary, and finding the fixtures that scripts/test.sh prepares.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_imclust");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A fixture from `env` or, by default, `default` under the repository; a clear failure naming
/// the script that fetches it when it is missing.
pub fn fixture(env: &str, default: &str, script: &str) -> PathBuf {
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| repo().join(default));
    assert!(p.exists(), "missing fixture {} ({env}): run {script} (scripts/test.sh does it)", p.display());
    p
}

/// The Python with numpy, scikit-learn, onnxruntime and Pillow.
pub fn python() -> PathBuf {
    fixture("IMCLUST_PYTHON", ".cache/venv/bin/python", "scripts/python-env.sh")
}

pub fn open_nsfw() -> PathBuf {
    fixture("IMCLUST_OPEN_NSFW", ".cache/models/open_nsfw.onnx", "scripts/fetch-open-nsfw.sh")
}

/// Runs the binary from a directory outside the repository, so nothing depends on the current
/// directory (the ONNX Runtime library is found through ORT_DYLIB_PATH or the executable's
/// ancestors).
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(std::env::temp_dir()).output().expect("spawn imclust")
}

pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "imclust {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

pub fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(!o.status.success(), "imclust {args:?} should have failed");
    String::from_utf8(o.stderr).unwrap()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}
