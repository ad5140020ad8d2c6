//! End-to-end tests of `imclust models`: the real binary on the real open_nsfw model
//! (scripts/fetch-open-nsfw.sh) with the ONNX Runtime library of scripts/fetch-onnxruntime.sh
//! (found through ORT_DYLIB_PATH or the repository's .cache/). scripts/test.sh prepares both.

#[path = "common.rs"]
mod common;
use common::*;

fn digest_line(out: &str) -> String {
    let d = out.lines().find_map(|l| l.strip_prefix("digest: ")).unwrap_or_else(|| panic!("no digest in:\n{out}"));
    assert!(d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit()), "digest {d:?}");
    d.to_string()
}

#[test]
fn prepare_open_nsfw_then_inspect_the_bundle_and_the_model() {
    let model = open_nsfw();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("open-nsfw");

    let prepared = ok(&["models", "prepare", "open-nsfw", "--model", s(&model), "--out", s(&out)]);
    let digest = digest_line(&prepared);
    assert!(prepared.contains("validated"), "{prepared}");
    let toml = std::fs::read_to_string(out.join("bundle.toml")).unwrap();
    for key in ["layout = \"nhwc\"", "size = 224", "resize = \"shortest-crop\"", "channels = \"bgr\"", "mean = [104.0, 117.0, 123.0]",
        "output = \"/ReduceMean_output_0\"", "dim = 1024", "normalize = false"] {
        assert!(toml.contains(key), "bundle.toml lacks {key}:\n{toml}");
    }

    let inspected = ok(&["models", "inspect", s(&out)]);
    assert_eq!(digest_line(&inspected), digest, "prepare and inspect agree on the digest");
    for phrase in ["bundle open-nsfw", "family: image", "input_0: f32 [batch, 224, 224, 3]", "/ReduceMean_output_0: f32 [", ", 1024]", "dim 1024"] {
        assert!(inspected.contains(phrase), "inspect output lacks {phrase:?}:\n{inspected}");
    }

    // The original model: the pooled tensor is not an output there.
    let raw = ok(&["models", "inspect", s(&model)]);
    assert!(raw.contains("input_0: f32 [batch, 224, 224, 3]"), "{raw}");
    assert!(!raw.contains("ReduceMean"), "{raw}");

    // A bundle naming the pooled tensor on the original model is refused with the key, the
    // graph's outputs and the fix.
    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::copy(&model, broken.join("open_nsfw.onnx")).unwrap();
    std::fs::write(broken.join("bundle.toml"), &toml).unwrap();
    let err = fails(&["models", "inspect", s(&broken)]);
    for phrase in ["image.output = \"/ReduceMean_output_0\" is not an output of open_nsfw.onnx", "its outputs are:", "add_output"] {
        assert!(err.contains(phrase), "error lacks {phrase:?}:\n{err}");
    }

    // Preparing again gives the same bundle.
    let again = ok(&["models", "prepare", "open-nsfw", "--model", s(&model), "--out", s(&out)]);
    assert_eq!(digest_line(&again), digest);
}

#[test]
fn inspect_refuses_a_non_onnx_file_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("weights.onnx");
    std::fs::write(&path, b"\x80\x02ctorch._utils\n pickled, not ONNX").unwrap();
    let err = fails(&["models", "inspect", s(&path)]);
    assert!(err.contains("weights.onnx") && err.contains("not a valid ONNX model"), "{err}");
}

#[test]
fn prepare_names_a_missing_model_and_the_fetch_script() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(&["models", "prepare", "open-nsfw", "--model", s(&tmp.path().join("nope.onnx")), "--out", s(&tmp.path().join("b"))]);
    assert!(err.contains("nope.onnx") && err.contains("scripts/fetch-open-nsfw.sh"), "{err}");
}

#[test]
fn a_bad_device_name_is_refused() {
    let err = fails(&["models", "inspect", "x.onnx", "--device", "gpu"]);
    assert!(err.contains("cpu, cuda, tensorrt, auto"), "{err}");
}
