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

/// The toy colour classes, in sorted order (the order of the image folders).
pub const COLOURS: [(&str, [u8; 3]); 6] = [
    ("blue", [0, 0, 255]),
    ("cyan", [0, 255, 255]),
    ("green", [0, 255, 0]),
    ("magenta", [255, 0, 255]),
    ("red", [255, 0, 0]),
    ("yellow", [255, 255, 0]),
];

/// `per` noisy images of each colour, of varied sizes, under `dir/<colour>/NNN.png`; the
/// labels in dataset (sorted path) order.
pub fn colour_images(dir: &Path, per: usize) -> Vec<i64> {
    let mut labels = Vec::new();
    let mut state = 12345u32;
    let mut noise = || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 24) as i32 % 61 - 30
    };
    for (c, (name, rgb)) in COLOURS.iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        for i in 0..per {
            let (w, h) = (20 + 7 * i as u32, 30 + 3 * i as u32);
            let img = image::RgbImage::from_fn(w, h, |_, _| image::Rgb(rgb.map(|v| (v as i32 + noise()).clamp(0, 255) as u8)));
            img.save(dir.join(name).join(format!("{i:03}.png"))).unwrap();
            labels.push(c as i64);
        }
    }
    labels
}

/// The toy dual encoder (8-d colour embeddings, text and image towers aligned by
/// construction) under `dir/toy`.
pub fn toy_bundle(dir: &Path) -> PathBuf {
    let bundle = dir.join("toy");
    let o = Command::new(python()).arg(repo().join("scripts/make_toy_dual_encoder.py")).arg(&bundle).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    bundle
}
