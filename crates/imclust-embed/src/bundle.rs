//! Model bundles: a directory with `bundle.toml` and the ONNX towers it names.
//!
//! The format is documented key by key in `docs/bundles.md`. [`Bundle::load`] parses the file
//! (unknown keys are errors) and validates it against the graphs themselves, so a bundle that
//! loads can be run: inputs and outputs exist under the configured names, the image input is a
//! rank-4 float tensor whose channel axis and spatial size match the layout and size, outputs
//! have the configured width. The sessions opened for validation are kept and handed to the
//! first encoder built with the same runtime configuration (opening a large model twice costs
//! seconds).

use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EmbedError, Result};
use crate::runtime::{self, RuntimeConfig, TensorInfo};

/// The file name of a bundle's configuration.
pub const BUNDLE_FILE: &str = "bundle.toml";

/// Which towers a bundle has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Image and text towers sharing one embedding space (CLIP, OpenCLIP, SigLIP, LiT).
    Dual,
    /// An image tower only (SimCLR, BYOL, any backbone).
    Image,
}

/// Memory layout of the image input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `[N, C, H, W]`
    Nchw,
    /// `[N, H, W, C]`
    Nhwc,
}

impl Layout {
    /// The axis holding the channels.
    pub fn channel_axis(self) -> usize {
        match self {
            Layout::Nchw => 1,
            Layout::Nhwc => 3,
        }
    }

    /// The two spatial axes (height, width).
    pub fn spatial_axes(self) -> [usize; 2] {
        match self {
            Layout::Nchw => [2, 3],
            Layout::Nhwc => [1, 2],
        }
    }

    /// The input shape for `n` images of side `size`.
    pub fn shape(self, n: usize, size: usize) -> [usize; 4] {
        match self {
            Layout::Nchw => [n, 3, size, size],
            Layout::Nhwc => [n, size, size, 3],
        }
    }
}

/// How an image is brought to `size x size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    /// Resize the shorter side to `size` (keeping the aspect ratio), then crop the centre.
    ShortestCrop,
    /// Resize both sides to `size`, ignoring the aspect ratio.
    Squash,
}

/// The resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interpolation {
    Bilinear,
    Bicubic,
    Nearest,
    Lanczos3,
}

/// Channel order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channels {
    Rgb,
    Bgr,
}

/// `Display` as spelled in `bundle.toml`.
macro_rules! toml_names {
    ($($ty:ident { $($variant:ident => $name:literal),+ })+) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($ty::$variant => $name),+ })
            }
        }
    )+};
}

toml_names! {
    Family { Dual => "dual", Image => "image" }
    Layout { Nchw => "nchw", Nhwc => "nhwc" }
    Resize { ShortestCrop => "shortest-crop", Squash => "squash" }
    Interpolation { Bilinear => "bilinear", Bicubic => "bicubic", Nearest => "nearest", Lanczos3 => "lanczos3" }
    Channels { Rgb => "rgb", Bgr => "bgr" }
}

/// The image preprocessing a bundle asks for: `value = (pixel * scale - mean[c]) / std[c]`
/// with `pixel` in 0..=255, channels in `channels` order (mean and std are in that order too).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImageSpec {
    pub layout: Layout,
    pub size: u32,
    pub resize: Resize,
    pub interpolation: Interpolation,
    pub channels: Channels,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// `[image]` of `bundle.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub model: String,
    pub input: String,
    pub layout: Layout,
    pub size: u32,
    pub resize: Resize,
    pub interpolation: Interpolation,
    pub channels: Channels,
    #[serde(deserialize_with = "number_or_fraction")]
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub output: String,
    pub dim: usize,
    pub normalize: bool,
}

/// `[text]` of `bundle.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    pub model: String,
    /// `"clip-bpe"` (built in) or a `tokenizer.json` file in the bundle.
    pub tokenizer: String,
    pub context_length: usize,
    pub input_ids: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_mask: Option<String>,
    pub output: String,
    pub dim: usize,
    pub normalize: bool,
}

/// The built-in CLIP tokenizer's name in `[text] tokenizer`.
pub const CLIP_BPE: &str = "clip-bpe";

impl TextConfig {
    /// The tokenizer file inside the bundle, when it is not the built-in CLIP BPE.
    pub fn tokenizer_file(&self) -> Option<&str> {
        (self.tokenizer != CLIP_BPE).then_some(self.tokenizer.as_str())
    }
}

/// `bundle.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    pub name: String,
    pub family: Family,
    pub image: ImageConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfig>,
}

impl BundleConfig {
    /// Parses `bundle.toml` text; `bundle` names it in errors.
    pub fn parse(text: &str, bundle: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| EmbedError::Bundle {
            bundle: bundle.to_string(),
            reason: format!("{BUNDLE_FILE} is invalid: {}. The keys are documented in docs/bundles.md", e.to_string().trim_end()),
        })
    }

    /// The canonical text of the configuration (what the digest covers): fixed key order,
    /// normalised numbers, no comments.
    pub fn canonical(&self) -> String {
        toml::to_string(self).expect("a bundle config always serialises")
    }

    pub fn image_spec(&self) -> ImageSpec {
        let i = &self.image;
        ImageSpec {
            layout: i.layout,
            size: i.size,
            resize: i.resize,
            interpolation: i.interpolation,
            channels: i.channels,
            scale: i.scale,
            mean: i.mean,
            std: i.std,
        }
    }
}

/// `scale = 0.00392157`, `scale = 1` or `scale = "1/255"`.
fn number_or_fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
    }
    let bad = |s: &str| serde::de::Error::custom(format!("scale = {s:?} is not a number or a fraction like \"1/255\""));
    match Repr::deserialize(d)? {
        Repr::Number(x) => Ok(x as f32),
        Repr::Text(s) => {
            let (num, den) = s.split_once('/').ok_or_else(|| bad(&s))?;
            let num: f64 = num.trim().parse().map_err(|_| bad(&s))?;
            let den: f64 = den.trim().parse().map_err(|_| bad(&s))?;
            Ok((num / den) as f32)
        }
    }
}

/// Which tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tower {
    Image,
    Text,
}

impl fmt::Display for Tower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tower::Image => "image",
            Tower::Text => "text",
        })
    }
}

/// A validated bundle.
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
    config: BundleConfig,
    image_signature: (Vec<TensorInfo>, Vec<TensorInfo>),
    text_signature: Option<(Vec<TensorInfo>, Vec<TensorInfo>)>,
    /// Sessions opened for validation, with the configuration they were opened with.
    sessions: Mutex<Vec<(Tower, RuntimeConfig, Session)>>,
}

impl Bundle {
    /// Loads and validates the bundle in `dir` (or whose `bundle.toml` is `dir`), on CPU.
    pub fn load(dir: impl AsRef<Path>) -> Result<Bundle> {
        Self::load_with(dir, &RuntimeConfig::default())
    }

    /// Loads and validates with sessions opened under `config`; the first encoder built with
    /// the same configuration reuses them.
    pub fn load_with(dir: impl AsRef<Path>, runtime_config: &RuntimeConfig) -> Result<Bundle> {
        let mut dir = dir.as_ref().to_path_buf();
        if dir.file_name().is_some_and(|f| f == BUNDLE_FILE) && dir.is_file() {
            dir.pop();
            if dir.as_os_str().is_empty() {
                dir = PathBuf::from(".");
            }
        }
        let shown = dir.display().to_string();
        let toml_path = dir.join(BUNDLE_FILE);
        if !toml_path.is_file() {
            return Err(EmbedError::Bundle {
                bundle: shown,
                reason: format!(
                    "no {BUNDLE_FILE} in this directory; a bundle is a directory with {BUNDLE_FILE} and its ONNX files \
                     (docs/bundles.md; `imclust models prepare` builds one)"
                ),
            });
        }
        let text = std::fs::read_to_string(&toml_path).map_err(|e| EmbedError::io(&toml_path, e))?;
        let config = BundleConfig::parse(&text, &shown)?;
        let v = Validator { bundle: &shown, dir: &dir };
        v.check_static(&config)?;

        let mut sessions = Vec::new();
        let image_path = dir.join(&config.image.model);
        let image_session = runtime::session(&image_path, runtime_config)?;
        let image_signature = runtime::signature(&image_session);
        v.check_image(&config.image, &image_signature)?;
        sessions.push((Tower::Image, runtime_config.clone(), image_session));

        let mut text_signature = None;
        if let Some(t) = &config.text {
            let text_session = runtime::session(&dir.join(&t.model), runtime_config)?;
            let sig = runtime::signature(&text_session);
            v.check_text(t, &sig)?;
            text_signature = Some(sig);
            sessions.push((Tower::Text, runtime_config.clone(), text_session));
        }
        Ok(Bundle { dir, config, image_signature, text_signature, sessions: Mutex::new(sessions) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &BundleConfig {
        &self.config
    }

    pub fn image_spec(&self) -> ImageSpec {
        self.config.image_spec()
    }

    /// The image tower's ONNX file.
    pub fn image_model(&self) -> PathBuf {
        self.dir.join(&self.config.image.model)
    }

    /// The text tower's ONNX file (dual bundles).
    pub fn text_model(&self) -> Option<PathBuf> {
        self.config.text.as_ref().map(|t| self.dir.join(&t.model))
    }

    /// Inputs and outputs of a tower's graph (`None` for the text tower of an image bundle).
    pub fn signature(&self, tower: Tower) -> Option<&(Vec<TensorInfo>, Vec<TensorInfo>)> {
        match tower {
            Tower::Image => Some(&self.image_signature),
            Tower::Text => self.text_signature.as_ref(),
        }
    }

    /// The session for a tower: the validation session when it was opened with the same
    /// runtime configuration (once), otherwise a new one.
    pub(crate) fn session(&self, tower: Tower, config: &RuntimeConfig) -> Result<Session> {
        {
            let mut cached = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = cached.iter().position(|(t, c, _)| *t == tower && c == config) {
                return Ok(cached.swap_remove(i).2);
            }
        }
        let path = match tower {
            Tower::Image => self.image_model(),
            Tower::Text => self.text_model().ok_or_else(|| self.error("text", "this bundle has no text tower (family = \"image\")"))?,
        };
        runtime::session(&path, config)
    }

    /// Drops the sessions kept from validation (their memory) when no encoder will take them.
    pub fn release_sessions(&self) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The files the bundle references, in digest order: the image model, the text model,
    /// the tokenizer file.
    pub fn files(&self) -> Vec<String> {
        let mut files = vec![self.config.image.model.clone()];
        if let Some(t) = &self.config.text {
            files.push(t.model.clone());
            files.extend(t.tokenizer_file().map(str::to_string));
        }
        files
    }

    /// Hex SHA-256 over the canonical `bundle.toml` and the bytes of every referenced file
    /// (in [`Bundle::files`] order, each preceded by its name and length). It identifies the
    /// bundle's behaviour, e.g. as an embedding-cache key.
    pub fn digest(&self) -> Result<String> {
        let mut h = Sha256::new();
        let canonical = self.config.canonical();
        h.update(b"imclust-bundle-v1\n");
        h.update((canonical.len() as u64).to_le_bytes());
        h.update(canonical.as_bytes());
        for name in self.files() {
            let path = self.dir.join(&name);
            let len = std::fs::metadata(&path).map_err(|e| EmbedError::io(&path, e))?.len();
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(len.to_le_bytes());
            let mut file = std::fs::File::open(&path).map_err(|e| EmbedError::io(&path, e))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).map_err(|e| EmbedError::io(&path, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    pub(crate) fn error(&self, key: &str, reason: &str) -> EmbedError {
        EmbedError::Bundle { bundle: self.dir.display().to_string(), reason: format!("[{key}] {reason}") }
    }
}

/// The pooled 1024-d features of open_nsfw's ResNet-50 (not a graph output of the original).
pub const OPEN_NSFW_POOLED: &str = "/ReduceMean_output_0";

/// `bundle.toml` of the open_nsfw preset (see docs/bundles.md).
pub const OPEN_NSFW_TOML: &str = r#"# Yahoo's open_nsfw ResNet-50 as an image-only feature extractor (imclust models prepare open-nsfw).
name = "open-nsfw"
family = "image"

[image]
# The original model with its global-average-pooled features exposed as an extra output.
model = "open_nsfw.onnx"
input = "input_0"
layout = "nhwc"
size = 224
# The reference pipeline resizes to 256 x 256 and centre-crops 224; the nearest of our modes is
# shortest-crop at 224 (shorter side to 224, centre crop), which keeps the aspect ratio.
resize = "shortest-crop"
interpolation = "bilinear"
channels = "bgr"
# Caffe convention: 0-255 pixels minus the per-channel BGR mean, no division.
scale = 1.0
mean = [104.0, 117.0, 123.0]
std = [1.0, 1.0, 1.0]
output = "/ReduceMean_output_0"
dim = 1024
normalize = false
"#;

/// Builds the open_nsfw bundle in `out` from the original model file: the model with
/// [`OPEN_NSFW_POOLED`] exposed and [`OPEN_NSFW_TOML`]; returns it loaded (validated).
pub fn prepare_open_nsfw(model: &Path, out: &Path, runtime_config: &RuntimeConfig) -> Result<Bundle> {
    if !model.is_file() {
        return Err(EmbedError::Model {
            path: model.to_path_buf(),
            reason: "does not exist; fetch it with `bash scripts/fetch-open-nsfw.sh` or pass --model".into(),
        });
    }
    let edited = crate::onnx_edit::add_output_to_file(model, OPEN_NSFW_POOLED)?;
    std::fs::create_dir_all(out).map_err(|e| EmbedError::io(out, e))?;
    write_replacing(&out.join("open_nsfw.onnx"), &edited)?;
    write_replacing(&out.join(BUNDLE_FILE), OPEN_NSFW_TOML.as_bytes())?;
    Bundle::load_with(out, runtime_config)
}

/// Writes through a temporary file in the same directory and renames it into place, so a
/// reader never sees half a file.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| EmbedError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EmbedError::io(path, e))
}

struct Validator<'a> {
    bundle: &'a str,
    dir: &'a Path,
}

fn list(infos: &[TensorInfo]) -> String {
    infos.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("; ")
}

fn dim_str(d: Option<i64>) -> String {
    d.map_or_else(|| "dynamic".to_string(), |n| n.to_string())
}

impl Validator<'_> {
    fn err(&self, reason: String) -> EmbedError {
        EmbedError::Bundle { bundle: self.bundle.to_string(), reason }
    }

    /// Checks that need no graph: files, ranges, family.
    fn check_static(&self, c: &BundleConfig) -> Result<()> {
        match (c.family, &c.text) {
            (Family::Dual, None) => {
                return Err(self.err("family = \"dual\" needs a [text] table (the text tower); add it, or set family = \"image\"".into()));
            }
            (Family::Image, Some(_)) => {
                return Err(self.err("family = \"image\" has no text tower but a [text] table is present; remove it, or set family = \"dual\"".into()));
            }
            _ => {}
        }
        let i = &c.image;
        self.check_file("image.model", &i.model)?;
        if i.size == 0 {
            return Err(self.err("image.size = 0: set it to the model's input side, e.g. 224".into()));
        }
        if i.dim == 0 {
            return Err(self.err("image.dim = 0: set it to the width of the output embedding".into()));
        }
        if !(i.scale.is_finite() && i.scale > 0.0) {
            return Err(self.err(format!("image.scale = {} must be a positive number, e.g. \"1/255\" or 1.0", i.scale)));
        }
        if let Some(s) = i.std.iter().find(|s| !(s.is_finite() && **s != 0.0)) {
            return Err(self.err(format!("image.std has {s}: every entry must be a non-zero number (use 1.0 for no scaling)")));
        }
        if i.mean.iter().any(|m| !m.is_finite()) {
            return Err(self.err("image.mean must hold three finite numbers".into()));
        }
        if let Some(t) = &c.text {
            self.check_file("text.model", &t.model)?;
            if let Some(f) = t.tokenizer_file() {
                self.check_file("text.tokenizer", f).map_err(|_| {
                    self.err(format!(
                        "text.tokenizer = {f:?} is neither \"{CLIP_BPE}\" nor a file in the bundle ({} does not exist); \
                         copy the model's tokenizer.json into the bundle or use \"{CLIP_BPE}\"",
                        self.dir.join(f).display()
                    ))
                })?;
            }
            if t.context_length == 0 {
                return Err(self.err("text.context_length = 0: set it to the text model's sequence length, e.g. 77".into()));
            }
            if t.dim == 0 {
                return Err(self.err("text.dim = 0: set it to the width of the output embedding".into()));
            }
        }
        Ok(())
    }

    fn check_file(&self, key: &str, name: &str) -> Result<()> {
        let p = Path::new(name);
        if name.is_empty() || p.is_absolute() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(self.err(format!("{key} = {name:?} must be a file name relative to the bundle directory, inside it")));
        }
        let full = self.dir.join(p);
        if !full.is_file() {
            return Err(self.err(format!("{key} = {name:?}: {} does not exist; copy the file into the bundle or fix the name", full.display())));
        }
        Ok(())
    }

    fn find<'s>(&self, key: &str, name: &str, infos: &'s [TensorInfo], kind: &str, model: &str) -> Result<&'s TensorInfo> {
        infos.iter().find(|i| i.name == name).ok_or_else(|| {
            let hint = if kind == "output" {
                " (an intermediate tensor can be exposed as an output with imclust_embed::onnx_edit::add_output, as `imclust models prepare` does)"
            } else {
                ""
            };
            self.err(format!("{key} = {name:?} is not an {kind} of {model}; its {kind}s are: {}. Set {key} to one of them{hint}", list(infos)))
        })
    }

    fn check_output(&self, tower: &str, name: &str, dim: usize, outputs: &[TensorInfo], model: &str) -> Result<()> {
        let key = format!("{tower}.output");
        let out = self.find(&key, name, outputs, "output", model)?;
        if out.dtype != "f32" {
            return Err(self.err(format!("{key} = {name:?} is {} but embeddings must be float32 tensors", out)));
        }
        // Values per row: the product of the axes after the batch axis ([N, dim], or e.g.
        // [N, dim, 1, 1]); unknown when one is dynamic, then checked on the first batch.
        let per_row: Option<i64> = out.shape.iter().skip(1).copied().product();
        if out.shape.len() < 2 {
            return Err(self.err(format!("{key} = {name:?} has shape {} but an embedding output must be [N, dim]", out.shape_string())));
        }
        if let Some(per_row) = per_row
            && per_row != dim as i64
        {
            return Err(self.err(format!(
                "{tower}.dim = {dim} but output {name:?} of {model} has {per_row} values per row (shape {}); set {tower}.dim = {per_row}",
                out.shape_string()
            )));
        }
        Ok(())
    }

    fn check_image(&self, c: &ImageConfig, (inputs, outputs): &(Vec<TensorInfo>, Vec<TensorInfo>)) -> Result<()> {
        let model = &c.model;
        let input = self.find("image.input", &c.input, inputs, "input", model)?;
        if input.shape.len() != 4 {
            return Err(self.err(format!(
                "image.input = {:?} has rank {} (shape {}) but an image input must have rank 4 ([N, C, H, W] for layout \"nchw\", \
                 [N, H, W, C] for \"nhwc\"); check that this is the image tower",
                c.input,
                input.shape.len(),
                input.shape_string()
            )));
        }
        if input.dtype != "f32" {
            return Err(self.err(format!("image.input = {:?} is {input}, but image inputs must be float32", c.input)));
        }
        let axis = c.layout.channel_axis();
        if let Some(ch) = input.shape[axis]
            && ch != 3
        {
            let other = match c.layout {
                Layout::Nchw => Layout::Nhwc,
                Layout::Nhwc => Layout::Nchw,
            };
            let hint = if input.shape[other.channel_axis()] == Some(3) {
                format!("set image.layout = \"{other}\"")
            } else {
                "the model does not take 3-channel images".to_string()
            };
            return Err(self.err(format!(
                "image.layout = \"{}\" puts channels on axis {axis}, where input {:?} has {ch} (shape {}); {hint}",
                c.layout,
                c.input,
                input.shape_string()
            )));
        }
        let [h, w] = c.layout.spatial_axes().map(|a| input.shape[a]);
        for d in [h, w].into_iter().flatten() {
            if d != i64::from(c.size) {
                return Err(self.err(format!(
                    "image.size = {} but input {:?} of {model} is {} x {} (shape {}); set image.size = {d}",
                    c.size,
                    c.input,
                    dim_str(h),
                    dim_str(w),
                    input.shape_string()
                )));
            }
        }
        self.check_output("image", &c.output, c.dim, outputs, model)
    }

    fn check_text(&self, c: &TextConfig, (inputs, outputs): &(Vec<TensorInfo>, Vec<TensorInfo>)) -> Result<()> {
        let model = &c.model;
        let mut named = vec![("text.input_ids", &c.input_ids)];
        named.extend(c.attention_mask.as_ref().map(|m| ("text.attention_mask", m)));
        for (key, name) in named {
            let input = self.find(key, name, inputs, "input", model)?;
            if input.shape.len() != 2 {
                return Err(self.err(format!(
                    "{key} = {name:?} has rank {} (shape {}) but token inputs must have rank 2 ([N, context_length]); \
                     check that this is the text tower",
                    input.shape.len(),
                    input.shape_string()
                )));
            }
            if input.dtype != "i64" {
                return Err(self.err(format!("{key} = {name:?} is {input} but token inputs must be int64; re-export the text tower with int64 inputs")));
            }
            if let Some(len) = input.shape[1]
                && len != c.context_length as i64
            {
                return Err(self.err(format!(
                    "text.context_length = {} but input {name:?} of {model} takes {len} tokens (shape {}); set text.context_length = {len}",
                    c.context_length,
                    input.shape_string()
                )));
            }
        }
        self.check_output("text", &c.output, c.dim, outputs, model)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::onnx_edit::testmodel::{FLOAT, INT64, model, node, value_info};

    /// An NCHW image model: x [batch, 3, 2, 2] -> Flatten -> y [batch, 12].
    pub fn tiny_image_model() -> Vec<u8> {
        model(&[node("Flatten", &["x"], &["y"], &[("axis", 1)])], &[value_info("x", FLOAT, &[None, Some(3), Some(2), Some(2)])], &[value_info(
            "y",
            FLOAT,
            &[None, Some(12)],
        )])
    }

    /// A text model: ids, mask [batch, 4] int64 -> y = float(ids) + float(mask) [batch, 4].
    pub fn tiny_text_model() -> Vec<u8> {
        model(
            &[
                node("Cast", &["ids"], &["idsf"], &[("to", FLOAT)]),
                node("Cast", &["mask"], &["maskf"], &[("to", FLOAT)]),
                node("Add", &["idsf", "maskf"], &["y"], &[]),
            ],
            &[value_info("ids", INT64, &[None, Some(4)]), value_info("mask", INT64, &[None, Some(4)])],
            &[value_info("y", FLOAT, &[None, Some(4)])],
        )
    }

    pub const TINY_IMAGE_TOML: &str = r#"
name = "tiny"
family = "image"

[image]
model = "image.onnx"
input = "x"
layout = "nchw"
size = 2
resize = "squash"
interpolation = "bilinear"
channels = "rgb"
scale = "1/255"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
output = "y"
dim = 12
normalize = true
"#;

    pub const TINY_TEXT_TOML: &str = r#"
[text]
model = "text.onnx"
tokenizer = "clip-bpe"
context_length = 4
input_ids = "ids"
attention_mask = "mask"
output = "y"
dim = 4
normalize = false
"#;

    /// A bundle directory with both tiny models and the given bundle.toml.
    pub fn tiny_bundle(toml_text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("image.onnx"), tiny_image_model()).unwrap();
        std::fs::write(dir.path().join("text.onnx"), tiny_text_model()).unwrap();
        std::fs::write(dir.path().join(BUNDLE_FILE), toml_text).unwrap();
        dir
    }

    pub fn dual_toml() -> String {
        format!("{}{}", TINY_IMAGE_TOML.replace("family = \"image\"", "family = \"dual\""), TINY_TEXT_TOML)
    }

    fn load_err(toml_text: &str) -> String {
        let dir = tiny_bundle(toml_text);
        Bundle::load(dir.path()).unwrap_err().to_string()
    }

    fn assert_has(msg: &str, phrases: &[&str]) {
        for p in phrases {
            assert!(msg.contains(p), "message lacks {p:?}:\n{msg}");
        }
    }

    #[test]
    fn enum_names_are_the_toml_spellings() {
        assert_eq!(Resize::ShortestCrop.to_string(), "shortest-crop");
        assert_eq!(Interpolation::Lanczos3.to_string(), "lanczos3");
        let parsed: ImageConfig = toml::from_str(&TINY_IMAGE_TOML.split("[image]").nth(1).unwrap().replace("\"squash\"", "\"shortest-crop\"").replace("\"bilinear\"", "\"lanczos3\"")).unwrap();
        assert_eq!((parsed.resize, parsed.interpolation), (Resize::ShortestCrop, Interpolation::Lanczos3));
    }

    #[test]
    fn a_valid_dual_bundle_loads_and_exposes_its_spec() {
        let dir = tiny_bundle(&dual_toml());
        let b = Bundle::load(dir.path()).unwrap();
        assert_eq!(b.name(), "tiny");
        assert_eq!(b.config().family, Family::Dual);
        let spec = b.image_spec();
        assert_eq!(
            spec,
            ImageSpec {
                layout: Layout::Nchw,
                size: 2,
                resize: Resize::Squash,
                interpolation: Interpolation::Bilinear,
                channels: Channels::Rgb,
                scale: 1.0 / 255.0,
                mean: [0.5; 3],
                std: [0.25; 3],
            }
        );
        assert_eq!(b.files(), ["image.onnx", "text.onnx"]);
        // Loading through bundle.toml's path works too.
        Bundle::load(dir.path().join(BUNDLE_FILE)).unwrap();
    }

    #[test]
    fn the_digest_is_stable_ignores_formatting_and_covers_the_files() {
        let dir = tiny_bundle(&dual_toml());
        let d1 = Bundle::load(dir.path()).unwrap().digest().unwrap();
        assert_eq!(d1.len(), 64);
        // Comments and key order do not change the digest: it covers the canonical form.
        let reformatted = format!("# a comment\n{}", dual_toml().replace("normalize = true", "normalize = true # yes"));
        std::fs::write(dir.path().join(BUNDLE_FILE), reformatted).unwrap();
        assert_eq!(Bundle::load(dir.path()).unwrap().digest().unwrap(), d1);
        // A value does.
        std::fs::write(dir.path().join(BUNDLE_FILE), dual_toml().replace("normalize = true", "normalize = false")).unwrap();
        let d2 = Bundle::load(dir.path()).unwrap().digest().unwrap();
        assert_ne!(d2, d1);
        // So do the model's bytes (a renamed output keeps the graph valid but changes the file).
        let renamed = tiny_text_model().iter().map(|&b| if b == b'y' { b'z' } else { b }).collect::<Vec<_>>();
        std::fs::write(dir.path().join("text.onnx"), renamed).unwrap();
        std::fs::write(dir.path().join(BUNDLE_FILE), dual_toml().replace("normalize = true", "normalize = false").replace("output = \"y\"\ndim = 4", "output = \"z\"\ndim = 4")).unwrap();
        assert_ne!(Bundle::load(dir.path()).unwrap().digest().unwrap(), d2);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let msg = load_err(&TINY_IMAGE_TOML.replace("normalize = true", "normalize = true\nnormalise = true"));
        assert_has(&msg, &["bundle '", "bundle.toml is invalid", "unknown field `normalise`", "docs/bundles.md"]);
    }

    #[test]
    fn a_missing_output_is_named_with_the_graph_outputs() {
        let msg = load_err(&TINY_IMAGE_TOML.replace("output = \"y\"", "output = \"pooled\""));
        assert_has(&msg, &["image.output = \"pooled\" is not an output of image.onnx", "its outputs are: y: f32 [batch, 12]", "add_output"]);
    }

    #[test]
    fn a_missing_input_is_named_with_the_graph_inputs() {
        let msg = load_err(&TINY_IMAGE_TOML.replace("input = \"x\"", "input = \"pixel_values\""));
        assert_has(&msg, &["image.input = \"pixel_values\" is not an input of image.onnx", "x: f32 [batch, 3, 2, 2]"]);
    }

    #[test]
    fn a_dim_mismatch_says_what_the_graph_has() {
        let msg = load_err(&TINY_IMAGE_TOML.replace("dim = 12", "dim = 512"));
        assert_has(&msg, &["image.dim = 512", "has 12 values per row", "set image.dim = 12"]);
    }

    #[test]
    fn a_size_mismatch_says_what_the_graph_has() {
        let msg = load_err(&TINY_IMAGE_TOML.replace("size = 2", "size = 224"));
        assert_has(&msg, &["image.size = 224", "is 2 x 2", "set image.size = 2"]);
    }

    #[test]
    fn a_wrong_layout_suggests_the_other() {
        let msg = load_err(&TINY_IMAGE_TOML.replace("layout = \"nchw\"", "layout = \"nhwc\""));
        assert_has(&msg, &["image.layout = \"nhwc\" puts channels on axis 3", "has 2", "set image.layout = \"nchw\""]);
    }

    #[test]
    fn a_wrong_input_rank_is_refused() {
        // The text model's rank-2 input as an image input.
        let msg = load_err(&TINY_IMAGE_TOML.replace("image.onnx", "text.onnx").replace("input = \"x\"", "input = \"ids\""));
        assert_has(&msg, &["image.input = \"ids\" has rank 2", "must have rank 4"]);
    }

    #[test]
    fn text_tower_errors() {
        let msg = load_err(&dual_toml().replace("input_ids = \"ids\"", "input_ids = \"input_ids\""));
        assert_has(&msg, &["text.input_ids = \"input_ids\" is not an input of text.onnx", "ids: i64 [batch, 4]"]);
        let msg = load_err(&dual_toml().replace("context_length = 4", "context_length = 77"));
        assert_has(&msg, &["text.context_length = 77", "takes 4 tokens", "set text.context_length = 4"]);
        let msg = load_err(&dual_toml().replace("dim = 4", "dim = 512"));
        assert_has(&msg, &["text.dim = 512", "has 4 values per row"]);
        let msg = load_err(&dual_toml().replace("tokenizer = \"clip-bpe\"", "tokenizer = \"tokenizer.json\""));
        assert_has(&msg, &["text.tokenizer = \"tokenizer.json\" is neither \"clip-bpe\" nor a file in the bundle"]);
        let msg = load_err(&dual_toml().replace("model = \"text.onnx\"", "model = \"../text.onnx\""));
        assert_has(&msg, &["text.model = \"../text.onnx\" must be a file name relative to the bundle directory"]);
    }

    #[test]
    fn family_and_files_are_checked() {
        let msg = load_err(&TINY_IMAGE_TOML.replace("family = \"image\"", "family = \"dual\""));
        assert_has(&msg, &["family = \"dual\" needs a [text] table"]);
        let msg = load_err(&format!("{TINY_IMAGE_TOML}{TINY_TEXT_TOML}"));
        assert_has(&msg, &["family = \"image\" has no text tower but a [text] table is present"]);
        let msg = load_err(&TINY_IMAGE_TOML.replace("model = \"image.onnx\"", "model = \"missing.onnx\""));
        assert_has(&msg, &["image.model = \"missing.onnx\"", "does not exist"]);
        let msg = load_err(&TINY_IMAGE_TOML.replace("scale = \"1/255\"", "scale = \"1 over 255\""));
        assert_has(&msg, &["scale", "1/255"]);
        let empty = tempfile::tempdir().unwrap();
        let msg = Bundle::load(empty.path()).unwrap_err().to_string();
        assert_has(&msg, &["no bundle.toml in this directory", "imclust models prepare"]);
    }

    #[test]
    fn a_non_onnx_model_file_is_named() {
        let dir = tiny_bundle(TINY_IMAGE_TOML);
        std::fs::write(dir.path().join("image.onnx"), b"PK\x03\x04 a zip, not a model").unwrap();
        let msg = Bundle::load(dir.path()).unwrap_err().to_string();
        assert_has(&msg, &["image.onnx", "not a valid ONNX model"]);
    }
}
