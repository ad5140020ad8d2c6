//! The toy dual-encoder fixture (scripts/make_toy_dual_encoder.py): the script runs, writes the
//! bundle's three files with the same bytes every time, its bundle.toml has the documented keys,
//! and the colour-word token ids it hard-codes are what the CLIP BPE tokenizer produces. It
//! needs the Python env of scripts/python-env.sh (scripts/test.sh prepares it). The end-to-end
//! zero-shot test through the engine lives elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use imclust_embed::text::{TextTokenizer, prompts};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The Python with onnx and onnxruntime.
fn python() -> PathBuf {
    let p = std::env::var_os("IMCLUST_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".cache/venv/bin/python"));
    assert!(p.exists(), "no Python env at {}: run scripts/python-env.sh (scripts/test.sh does it)", p.display());
    p
}

/// Runs the script into `dir`; its stdout.
fn make_toy(dir: &Path) -> String {
    let out = Command::new(python())
        .arg(repo().join("scripts/make_toy_dual_encoder.py"))
        .arg(dir)
        .output()
        .expect("spawn python");
    assert!(
        out.status.success(),
        "make_toy_dual_encoder.py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const FILES: [&str; 3] = ["bundle.toml", "image.onnx", "text.onnx"];

#[test]
fn toy_fixture_is_deterministic_and_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b/nested"));
    let out_a = make_toy(&a);
    let out_b = make_toy(&b);
    assert_eq!(out_a, out_b);
    let read = |dir: &Path| FILES.map(|f| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")));
    let first = read(&a);
    assert_eq!(first, read(&b), "two runs wrote different bytes");
    make_toy(&a); // over an existing bundle
    assert_eq!(first, read(&a));
    let mut names: Vec<_> = std::fs::read_dir(&a).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, FILES, "no temporary files are left behind");
}

#[test]
fn toy_fixture_bundle_toml_and_token_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let stdout = make_toy(tmp.path());

    let toml: toml::Table = std::fs::read_to_string(tmp.path().join("bundle.toml")).unwrap().parse().unwrap();
    assert_eq!(toml["name"].as_str(), Some("toy-colors"));
    assert_eq!(toml["family"].as_str(), Some("dual"));
    let image = toml["image"].as_table().unwrap();
    let mut keys: Vec<_> = image.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "channels", "dim", "input", "interpolation", "layout", "mean", "model", "normalize", "output", "resize",
            "scale", "size", "std"
        ]
    );
    assert_eq!(image["dim"].as_integer(), Some(8));
    assert_eq!(image["size"].as_integer(), Some(32));
    assert_eq!(image["scale"].as_float(), Some(1.0 / 255.0));
    let text = toml["text"].as_table().unwrap();
    let mut keys: Vec<_> = text.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["context_length", "dim", "input_ids", "model", "normalize", "output", "tokenizer"]);
    assert_eq!(text["tokenizer"].as_str(), Some("clip-bpe"));
    assert_eq!(text["context_length"].as_integer(), Some(77));

    // `colour NAME IDS R,G,B` per colour: the ids must be the tokenizer's.
    let tok = TextTokenizer::from_spec(text["tokenizer"].as_str().unwrap(), tmp.path()).unwrap();
    let colours: Vec<(String, Vec<i64>)> = stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!((f.len(), f[0]), (4, "colour"), "unexpected line '{l}'");
            (f[1].to_string(), f[2].split(',').map(|v| v.parse().unwrap()).collect())
        })
        .collect();
    let names: Vec<String> = colours.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, ["red", "green", "blue", "yellow", "cyan", "magenta"]);
    let p = prompts(&["a photo of a {} thing.".to_string()], &names).unwrap();
    let texts: Vec<String> = p.into_iter().flatten().collect();
    let (ids, _) = tok.encode_batch(&texts, 77).unwrap();
    for (row, (name, want)) in ids.rows().into_iter().zip(&colours) {
        let mut expect = vec![49406, 320, 1125, 539, 320];
        expect.extend(want);
        expect.extend([946, 269, 49407]);
        assert_eq!(row.iter().take(expect.len()).copied().collect::<Vec<_>>(), expect, "{name}");
    }
}
