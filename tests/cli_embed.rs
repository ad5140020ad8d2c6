//! End-to-end embedding and text seeding through the real binary: the toy dual encoder built by
//! scripts/make_toy_dual_encoder.py (image and text towers aligned by construction) on
//! generated images of plain colours, and the real pretrained open_nsfw model against Python
//! onnxruntime.

#[path = "common.rs"]
mod common;
use common::*;
use std::path::Path;
use std::process::Command;


fn write_labels(path: &Path, labels: &[i32]) {
    imclust_data::npy::write_i32(path, &[labels.len()], labels).unwrap();
}


#[test]
fn text_seeded_zero_shot_and_kmeans_recover_the_colour_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = toy_bundle(tmp.path());
    let images = tmp.path().join("images");
    let labels: Vec<i32> = colour_images(&images, 8).into_iter().map(|l| l as i32).collect();
    let y = tmp.path().join("y.npy");
    write_labels(&y, &labels);

    let e = tmp.path().join("e.npy");
    let yl = tmp.path().join("yl.npy");
    let out = ok(&["embed", "--bundle", s(&bundle), "--images", s(&images), "--out", s(&e), "--batch-size", "5", "--labels-out", s(&yl)]);
    assert!(out.contains("embedded 48 of 48 records"), "{out}");
    // Folder labels: the classes in sorted folder order.
    assert_eq!(imclust_data::npy::read_labels(&yl).unwrap(), labels.iter().map(|&v| v as i64).collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(tmp.path().join("yl.npy.classes.txt")).unwrap(), "blue\ncyan\ngreen\nmagenta\nred\nyellow\n");
    let m = imclust_data::npy::read_matrix_f32(&e).unwrap();
    assert_eq!((m.rows, m.cols), (48, 8));

    // Seeds from an ensemble of prompts, one per colour, in folder order.
    let seeds = tmp.path().join("seeds.npy");
    let classes: Vec<&str> = COLOURS.iter().map(|c| c.0).collect();
    ok(&["seeds", "--bundle", s(&bundle), "--classes", &classes.join(","), "--template", "a photo of a {} thing.",
        "--template", "a {} thing.", "--out", s(&seeds)]);
    let sm = imclust_data::npy::read_matrix_f32(&seeds).unwrap();
    assert_eq!((sm.rows, sm.cols), (6, 8));
    for row in sm.data.chunks(8) {
        assert!((row.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5);
    }

    // Zero-shot (seeds, no iteration) is exact; so is seeded k-means, cluster c = class c.
    let init = format!("seeds:{}", seeds.display());
    let clusters = tmp.path().join("clusters");
    for (max_iter, dir) in [("0", "zero-shot"), ("100", "kmeans")] {
        ok(&["cluster", "--embeddings", s(&e), "--labels", s(&y), "--k", "6", "--init", &init, "--metric", "cosine",
            "--max-iter", max_iter, "--output", s(&clusters), "--job-id", dir]);
        let d = clusters.join(dir);
        assert_eq!(json(&d.join("metrics.json"))["acc"], 1.0, "{dir}");
        let a = imclust_data::output::read_assignments(std::fs::read(d.join("assignments.parquet")).unwrap().into()).unwrap();
        assert_eq!(a.clusters, labels.iter().map(|&v| v as u32).collect::<Vec<_>>(), "{dir}");
    }

    // Fusing the toy model with itself (weights 1 and 0.5) concatenates normalised parts.
    let f = tmp.path().join("fused.npy");
    ok(&["embed", "--bundle", s(&bundle), "--bundle", s(&bundle), "--weight", "1", "--weight", "0.5", "--images", s(&images), "--out", s(&f)]);
    let fm = imclust_data::npy::read_matrix_f32(&f).unwrap();
    assert_eq!((fm.rows, fm.cols), (48, 16));
    for (row, one) in fm.data.chunks(16).zip(m.data.chunks(8)) {
        for j in 0..8 {
            assert!((row[j] - one[j]).abs() < 1e-6 && (row[8 + j] - 0.5 * one[j]).abs() < 1e-6);
        }
    }
    // Fused text seeds for the same two dual parts seed the fused space just as well.
    let fs = tmp.path().join("fused-seeds.npy");
    ok(&["seeds", "--bundle", s(&bundle), "--bundle", s(&bundle), "--weight", "1", "--weight", "0.5", "--classes",
        &classes.join(","), "--template", "a photo of a {} thing.", "--out", s(&fs)]);
    let fsm = imclust_data::npy::read_matrix_f32(&fs).unwrap();
    assert_eq!((fsm.rows, fsm.cols), (6, 16));
    ok(&["cluster", "--embeddings", s(&f), "--labels", s(&y), "--k", "6", "--init", &format!("seeds:{}", fs.display()),
        "--metric", "cosine", "--max-iter", "0", "--output", s(&clusters), "--job-id", "fused-zero-shot"]);
    assert_eq!(json(&clusters.join("fused-zero-shot/metrics.json"))["acc"], 1.0);

    // Raw pixels go through the same preprocessing: a (6, 32, 32, 3) array of the pure colours.
    let px = tmp.path().join("px.npy");
    let mut bytes = imclust_data::npy::encode_header(&[6, 32, 32, 3], "|u1");
    for (_, rgb) in COLOURS {
        for _ in 0..32 * 32 {
            bytes.extend(rgb);
        }
    }
    std::fs::write(&px, bytes).unwrap();
    let ep = tmp.path().join("ep.npy");
    ok(&["embed", "--bundle", s(&bundle), "--npy-pixels", s(&px), "--out", s(&ep)]);
    let y6 = tmp.path().join("y6.npy");
    write_labels(&y6, &[0, 1, 2, 3, 4, 5]);
    ok(&["cluster", "--embeddings", s(&ep), "--labels", s(&y6), "--k", "6", "--init", &init, "--metric", "cosine",
        "--max-iter", "0", "--output", s(&clusters), "--job-id", "px-zero-shot"]);
    assert_eq!(json(&clusters.join("px-zero-shot/metrics.json"))["acc"], 1.0);

    // Bad input: a corrupt image fails the run naming it and writes nothing.
    std::fs::write(images.join("red").join("999.png"), b"not a png").unwrap();
    let err = fails(&["embed", "--bundle", s(&bundle), "--images", s(&images), "--out", s(&tmp.path().join("bad.npy"))]);
    assert!(err.contains("999.png"), "{err}");
    assert!(!tmp.path().join("bad.npy").exists());
}

#[test]
fn open_nsfw_embeddings_match_python_onnxruntime() {
    let model = open_nsfw();
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("open-nsfw");
    ok(&["models", "prepare", "open-nsfw", "--model", s(&model), "--out", s(&bundle)]);
    // 224 x 224 images need no resampling, so both sides preprocess exactly alike.
    let images = tmp.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    for k in 0..3u32 {
        let img = image::RgbImage::from_fn(224, 224, |x, y| {
            image::Rgb([((x * (k + 1) + y) % 256) as u8, ((y * 3 + k * 50) % 256) as u8, ((x ^ y) % 256) as u8])
        });
        img.save(images.join(format!("{k}.png"))).unwrap();
    }
    let e = tmp.path().join("e.npy");
    ok(&["embed", "--bundle", s(&bundle), "--images", s(&images), "--out", s(&e)]);
    let ours = imclust_data::npy::read_matrix_f32(&e).unwrap();
    assert_eq!((ours.rows, ours.cols), (3, 1024));
    let script = "import sys, numpy as np, onnxruntime as ort\n\
        from PIL import Image\n\
        model, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]\n\
        x = np.stack([np.asarray(Image.open(f).convert('RGB'), dtype=np.float32)[:, :, ::-1] for f in files])\n\
        x = x - np.array([104, 117, 123], dtype=np.float32)\n\
        s = ort.InferenceSession(model, providers=['CPUExecutionProvider'])\n\
        np.save(out, s.run(['/ReduceMean_output_0'], {s.get_inputs()[0].name: x})[0].astype(np.float32))";
    let reference = tmp.path().join("ref.npy");
    let files: Vec<String> = (0..3).map(|k| images.join(format!("{k}.png")).display().to_string()).collect();
    let o = Command::new(python())
        .args(["-c", script, s(&bundle.join("open_nsfw.onnx")), s(&reference)])
        .args(&files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs = imclust_data::npy::read_matrix_f32(&reference).unwrap();
    let max = ours.data.iter().zip(&theirs.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max <= 1e-4, "max abs difference {max}");
    // Not trivially zero: real features with spread.
    assert!(ours.data.iter().any(|&v| v > 0.1));
    // An image-only bundle has no text tower to seed from.
    let err = fails(&["seeds", "--bundle", s(&bundle), "--classes", "a,b", "--out", s(&tmp.path().join("s.npy"))]);
    assert!(err.contains("image-only bundle"), "{err}");
}
