//! Image and text encoders: run preprocessed batches through a bundle's towers.
//!
//! Inputs are tensors already prepared by [`crate::preprocess`] (images) and [`crate::text`]
//! (token ids); the encoders check their shapes against the bundle, run the session, check
//! the output width and L2-normalise rows when the bundle asks for it.

use std::path::PathBuf;

use ndarray::{Array2, ArrayView2, ArrayView4, ArrayViewD, Axis};
use ort::session::Session;
use ort::value::TensorRef;

use crate::bundle::{Bundle, Layout, Tower};
use crate::error::{EmbedError, Result};
use crate::runtime::RuntimeConfig;

/// Runs the image tower.
pub struct ImageEncoder {
    session: Session,
    model: PathBuf,
    /// `bundle/model.onnx`, for messages.
    label: String,
    input: String,
    output: String,
    layout: Layout,
    size: usize,
    dim: usize,
    normalize: bool,
    /// Number of [`ImageEncoder::run`] calls that reached the session.
    pub invocations: u64,
    /// Number of images embedded.
    pub rows: u64,
}

impl ImageEncoder {
    pub fn new(bundle: &Bundle, config: &RuntimeConfig) -> Result<Self> {
        let c = &bundle.config().image;
        Ok(ImageEncoder {
            session: bundle.session(Tower::Image, config)?,
            model: bundle.image_model(),
            label: format!("{}/{}", bundle.name(), c.model),
            input: c.input.clone(),
            output: c.output.clone(),
            layout: c.layout,
            size: c.size as usize,
            dim: c.dim,
            normalize: c.normalize,
            invocations: 0,
            rows: 0,
        })
    }

    /// The embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embeds a batch laid out as the bundle says (`[N, 3, S, S]` or `[N, S, S, 3]`); returns
    /// `N x dim` rows. An empty batch returns an empty matrix without running the model.
    pub fn run(&mut self, batch: ArrayView4<f32>) -> Result<Array2<f32>> {
        let n = batch.shape()[0];
        let expected = self.layout.shape(n, self.size);
        if batch.shape() != expected {
            return Err(EmbedError::Model {
                path: self.model.clone(),
                reason: format!(
                    "the image batch has shape {:?} but this bundle takes {:?} (layout {}, size {}); preprocess with the bundle's ImageSpec",
                    batch.shape(),
                    expected,
                    self.layout,
                    self.size
                ),
            });
        }
        if n == 0 {
            return Ok(Array2::zeros((0, self.dim)));
        }
        let batch = batch.as_standard_layout();
        let tensor = TensorRef::from_array_view(batch.view()).map_err(|e| self.ort_err(e))?;
        let outputs = self.session.run(ort::inputs![self.input.as_str() => tensor]).map_err(|e| inference(&self.label, e))?;
        let out = outputs[self.output.as_str()].try_extract_array::<f32>().map_err(|e| inference(&self.label, e))?;
        let rows = to_rows(out, n, self.dim, &self.model, &self.output)?;
        drop(outputs);
        self.invocations += 1;
        self.rows += n as u64;
        Ok(finish(rows, self.normalize))
    }

    fn ort_err(&self, e: ort::Error) -> EmbedError {
        inference(&self.label, e)
    }
}

/// Runs the text tower.
pub struct TextEncoder {
    session: Session,
    model: PathBuf,
    label: String,
    input_ids: String,
    attention_mask: Option<String>,
    output: String,
    context_length: usize,
    dim: usize,
    normalize: bool,
    /// Number of [`TextEncoder::run`] calls that reached the session.
    pub invocations: u64,
    /// Number of texts embedded.
    pub rows: u64,
}

impl TextEncoder {
    /// Fails for an image-only bundle.
    pub fn new(bundle: &Bundle, config: &RuntimeConfig) -> Result<Self> {
        let c = bundle.config().text.as_ref().ok_or_else(|| EmbedError::Bundle {
            bundle: bundle.dir().display().to_string(),
            reason: "family = \"image\" has no text tower; text prompts need a dual-encoder bundle (family = \"dual\")".into(),
        })?;
        Ok(TextEncoder {
            session: bundle.session(Tower::Text, config)?,
            model: bundle.text_model().expect("a [text] table names a model"),
            label: format!("{}/{}", bundle.name(), c.model),
            input_ids: c.input_ids.clone(),
            attention_mask: c.attention_mask.clone(),
            output: c.output.clone(),
            context_length: c.context_length,
            dim: c.dim,
            normalize: c.normalize,
            invocations: 0,
            rows: 0,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Embeds `N x context_length` token ids. `mask` is required when the bundle names an
    /// `attention_mask` input and ignored otherwise (CLIP-style towers find the end of text
    /// from the ids).
    pub fn run(&mut self, ids: ArrayView2<i64>, mask: Option<ArrayView2<i64>>) -> Result<Array2<f32>> {
        let n = ids.nrows();
        let model_err = |reason: String| EmbedError::Model { path: self.model.clone(), reason };
        if ids.ncols() != self.context_length {
            return Err(model_err(format!(
                "the token ids have shape {:?} but this bundle's context_length is {}; tokenize with context_length = {}",
                ids.shape(),
                self.context_length,
                self.context_length
            )));
        }
        let mask = match (&self.attention_mask, mask) {
            (Some(name), None) => {
                return Err(model_err(format!("the text model needs an attention mask (input {name:?}) but none was given")));
            }
            (Some(_), Some(m)) if m.shape() != ids.shape() => {
                return Err(model_err(format!("the attention mask has shape {:?} but the ids have {:?}", m.shape(), ids.shape())));
            }
            (Some(name), Some(m)) => Some((name.as_str(), m.as_standard_layout().into_owned())),
            (None, _) => None,
        };
        if n == 0 {
            return Ok(Array2::zeros((0, self.dim)));
        }
        let ids = ids.as_standard_layout();
        let label = &self.label;
        let mut inputs = ort::inputs![self.input_ids.as_str() => TensorRef::from_array_view(ids.view()).map_err(|e| inference(label, e))?];
        if let Some((name, m)) = &mask {
            inputs.push((name.to_string().into(), TensorRef::from_array_view(m.view()).map_err(|e| inference(label, e))?.into()));
        }
        let outputs = self.session.run(inputs).map_err(|e| inference(label, e))?;
        let out = outputs[self.output.as_str()].try_extract_array::<f32>().map_err(|e| inference(label, e))?;
        let rows = to_rows(out, n, self.dim, &self.model, &self.output)?;
        drop(outputs);
        self.invocations += 1;
        self.rows += n as u64;
        Ok(finish(rows, self.normalize))
    }
}

fn inference(label: &str, source: ort::Error) -> EmbedError {
    EmbedError::Inference { model: label.to_string(), source }
}

/// Copies an `[N, ...]` output into `N x dim` rows; the trailing dimensions must hold `dim`
/// values per row (e.g. `[N, dim]` or `[N, dim, 1, 1]`).
fn to_rows(out: ArrayViewD<f32>, n: usize, dim: usize, model: &std::path::Path, name: &str) -> Result<Array2<f32>> {
    let shape = out.shape().to_vec();
    let per_row: usize = shape.iter().skip(1).product();
    if shape.len() < 2 || shape[0] != n || per_row != dim {
        return Err(EmbedError::Model {
            path: model.to_path_buf(),
            reason: format!("output {name:?} has shape {shape:?} for a batch of {n}, but the bundle says dim = {dim}; fix the bundle's dim or output"),
        });
    }
    let flat: Vec<f32> = out.as_standard_layout().iter().copied().collect();
    Ok(Array2::from_shape_vec((n, dim), flat).expect("size checked"))
}

fn finish(mut rows: Array2<f32>, normalize: bool) -> Array2<f32> {
    if normalize {
        for mut row in rows.axis_iter_mut(Axis(0)) {
            let norm = row.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.mapv_inplace(|v| (f64::from(v) / norm) as f32);
            }
        }
    }
    rows
}

/// Text seeds of a dual-encoder bundle, `k x dim` row-major: for each class `c`,
/// `normalize(mean over templates t of normalize(text(t.format(c))))` (the math is
/// [`imclust_core::fusion::class_seeds`]). Templates hold one `{}` for the class name.
pub fn text_seeds(bundle: &Bundle, config: &RuntimeConfig, class_names: &[String], templates: &[String]) -> Result<Vec<f32>> {
    let text = bundle.config().text.as_ref().ok_or_else(|| EmbedError::Bundle {
        bundle: bundle.name().to_string(),
        reason: "is an image-only bundle (family = \"image\"): it has no text tower to seed from; \
                 seed from a dual-encoder bundle (CLIP, SigLIP, LiT) or use a k-means init"
            .into(),
    })?;
    let mut tokenizer = crate::text::TextTokenizer::from_spec(&text.tokenizer, bundle.dir())?;
    tokenizer.set_context_length(text.context_length)?;
    let mut encoder = TextEncoder::new(bundle, config)?;
    let prompts: Vec<String> = crate::text::prompts(templates, class_names)?.into_iter().flatten().collect();
    let d = encoder.dim();
    let mut all = Vec::with_capacity(prompts.len() * d);
    for chunk in prompts.chunks(256) {
        let (ids, mask) = tokenizer.encode_batch(chunk, text.context_length)?;
        let rows = encoder.run(ids.view(), Some(mask.view()))?;
        all.extend(rows.iter().copied());
    }
    Ok(imclust_core::fusion::class_seeds(&all, class_names.len(), templates.len(), d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::tests::{TINY_IMAGE_TOML, dual_toml, tiny_bundle};
    use ndarray::{Array4, array};
    use std::path::PathBuf;

    #[test]
    fn image_encoder_runs_normalises_and_counts() {
        let dir = tiny_bundle(TINY_IMAGE_TOML);
        let bundle = Bundle::load(dir.path()).unwrap();
        let mut enc = ImageEncoder::new(&bundle, &RuntimeConfig::default()).unwrap();
        assert_eq!(enc.dim(), 12);
        let x = Array4::from_shape_fn((2, 3, 2, 2), |(n, c, h, w)| (n * 12 + c * 4 + h * 2 + w) as f32 - 3.0);
        let y = enc.run(x.view()).unwrap();
        assert_eq!(y.shape(), [2, 12]);
        for (r, row) in y.outer_iter().enumerate() {
            let raw: Vec<f32> = x.index_axis(Axis(0), r).iter().copied().collect();
            let norm = raw.iter().map(|v| v * v).sum::<f32>().sqrt();
            for (a, b) in row.iter().zip(&raw) {
                assert!((a - b / norm).abs() < 1e-6, "{a} vs {}", b / norm);
            }
        }
        assert_eq!((enc.invocations, enc.rows), (1, 2));
        // A non-contiguous view is fine.
        let wide = Array4::<f32>::ones((2, 3, 2, 4));
        let y2 = enc.run(wide.slice(ndarray::s![.., .., .., ..;2])).unwrap();
        assert!((y2[[1, 0]] - 1.0 / 12f32.sqrt()).abs() < 1e-6);
        // Empty batch: no session call.
        assert_eq!(enc.run(Array4::zeros((0, 3, 2, 2)).view()).unwrap().shape(), [0, 12]);
        assert_eq!(enc.invocations, 2);
        // Wrong layout/size.
        let err = enc.run(Array4::zeros((1, 2, 2, 3)).view()).unwrap_err().to_string();
        assert!(err.contains("image.onnx") && err.contains("[1, 2, 2, 3]") && err.contains("[1, 3, 2, 2]"), "{err}");
    }

    #[test]
    fn text_encoder_runs_with_a_mask_and_checks_shapes() {
        let dir = tiny_bundle(&dual_toml());
        let bundle = Bundle::load(dir.path()).unwrap();
        let mut enc = TextEncoder::new(&bundle, &RuntimeConfig::default()).unwrap();
        let ids = array![[49406i64, 320, 49407, 0], [1, 2, 3, 4]];
        let mask = array![[1i64, 1, 1, 0], [1, 1, 1, 1]];
        let y = enc.run(ids.view(), Some(mask.view())).unwrap();
        assert_eq!(y, array![[49407.0f32, 321.0, 49408.0, 0.0], [2.0, 3.0, 4.0, 5.0]]);
        assert_eq!(enc.invocations, 1);
        let err = enc.run(ids.view(), None).unwrap_err().to_string();
        assert!(err.contains("needs an attention mask") && err.contains("\"mask\""), "{err}");
        let err = enc.run(array![[1i64, 2, 3]].view(), Some(array![[1i64, 1, 1]].view())).unwrap_err().to_string();
        assert!(err.contains("context_length is 4"), "{err}");

        // An image bundle has no text tower.
        let img = tiny_bundle(TINY_IMAGE_TOML);
        let err = TextEncoder::new(&Bundle::load(img.path()).unwrap(), &RuntimeConfig::default()).err().unwrap().to_string();
        assert!(err.contains("has no text tower"), "{err}");
    }

    #[test]
    fn a_dynamic_output_width_is_checked_at_run_time() {
        // Dynamic spatial input dims make the output's width unknown to the graph; the
        // bundle's dim is then checked on the first batch.
        use crate::onnx_edit::testmodel::{FLOAT, model, node, value_info};
        let dir = tiny_bundle(&TINY_IMAGE_TOML.replace("dim = 12", "dim = 10"));
        let m = model(&[node("Flatten", &["x"], &["y"], &[("axis", 1)])], &[value_info("x", FLOAT, &[None, Some(3), None, None])], &[value_info(
            "y",
            FLOAT,
            &[None, None],
        )]);
        std::fs::write(dir.path().join("image.onnx"), m).unwrap();
        let bundle = Bundle::load(dir.path()).unwrap();
        let mut enc = ImageEncoder::new(&bundle, &RuntimeConfig::default()).unwrap();
        let err = enc.run(Array4::zeros((1, 3, 2, 2)).view()).unwrap_err().to_string();
        assert!(err.contains("output \"y\" has shape [1, 12]") && err.contains("dim = 10"), "{err}");
    }

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn fixture(env: &str, default: &str, how: &str) -> PathBuf {
        let p = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| repo().join(default));
        assert!(p.exists(), "{} is missing: run {how} (scripts/test.sh does it), or set {env}", p.display());
        p
    }

    /// The real open_nsfw: prepare the bundle, embed a fixed tensor, compare with Python's
    /// onnxruntime on the same tensor and the same edited model.
    #[test]
    fn open_nsfw_features_match_python_onnxruntime() {
        let model = fixture("IMCLUST_OPEN_NSFW", ".cache/models/open_nsfw.onnx", "bash scripts/fetch-open-nsfw.sh");
        let python = fixture("IMCLUST_PYTHON", ".cache/venv/bin/python", "bash scripts/python-env.sh");
        let out = tempfile::tempdir().unwrap();
        let cfg = RuntimeConfig::default();
        let bundle = crate::bundle::prepare_open_nsfw(&model, out.path(), &cfg).unwrap();
        assert_eq!(bundle.digest().unwrap().len(), 64);
        let spec = bundle.image_spec();
        assert_eq!((spec.layout, spec.size, spec.mean), (Layout::Nhwc, 224, [104.0, 117.0, 123.0]));
        let mut enc = ImageEncoder::new(&bundle, &cfg).unwrap();

        // Deterministic, image-like values (BGR minus mean, roughly -123..132).
        let x = Array4::from_shape_fn((2, 224, 224, 3), |(n, h, w, c)| {
            let v = (n * 7919 + h * 263 + w * 71 + c * 31) % 256;
            v as f32 - [104.0, 117.0, 123.0][c]
        });
        let y = enc.run(x.view()).unwrap();
        assert_eq!(y.shape(), [2, 1024]);
        assert_eq!(enc.invocations, 1);

        let xs = out.path().join("x.f32");
        let ys = out.path().join("y.f32");
        std::fs::write(&xs, x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let script = r#"
import sys, numpy as np, onnxruntime as ort
model, xs, ys = sys.argv[1:4]
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
x = np.fromfile(xs, dtype="<f4").reshape(2, 224, 224, 3)
(y,) = s.run(["/ReduceMean_output_0"], {"input_0": x})
np.asarray(y, dtype="<f4").tofile(ys)
"#;
        let status = std::process::Command::new(&python)
            .args(["-c", script])
            .arg(out.path().join("open_nsfw.onnx"))
            .arg(&xs)
            .arg(&ys)
            .status()
            .unwrap();
        assert!(status.success(), "the Python reference failed");
        let reference: Vec<f32> = std::fs::read(&ys).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(reference.len(), 2 * 1024);
        let max_diff = y.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_diff <= 1e-4, "max |rust - python| = {max_diff}");
        // Features of different inputs differ (not a constant output).
        assert!(y.row(0).iter().zip(y.row(1)).any(|(a, b)| (a - b).abs() > 1e-3));
    }
}

