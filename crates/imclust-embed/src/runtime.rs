//! Loading ONNX Runtime and building sessions.
//!
//! `libonnxruntime` is loaded at run time (ort's `load-dynamic`), once per process. [`init`]
//! resolves the library in this order: [`RuntimeConfig::onnxruntime_path`], the environment
//! variable `ORT_DYLIB_PATH`, `.cache/onnxruntime/libonnxruntime.so.1.31.1` under the current
//! directory, then the same path under each ancestor of the running executable (so
//! `target/release/imclust` finds the repository's `.cache`). An explicitly configured path
//! (config or environment) that does not exist is an error rather than skipped: silently
//! loading another library would hide the mistake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::SessionBuilder;
use ort::value::{Outlet, ValueType};

use crate::error::{EmbedError, Result};
use crate::onnx_edit;

/// Where the set-up script puts the library, relative to the repository root.
pub const DEFAULT_LIBRARY: &str = ".cache/onnxruntime/libonnxruntime.so.1.31.1";
/// The command that fetches the library.
pub const SETUP_COMMAND: &str = "bash scripts/fetch-onnxruntime.sh";

/// The execution device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// CUDA; falls back to CPU with a warning when the library or machine lacks it.
    Cuda,
    /// TensorRT, then CUDA, then CPU (with warnings).
    TensorRt,
    /// CUDA when ONNX Runtime has it, otherwise CPU, without warnings.
    Auto,
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            "tensorrt" => Ok(Device::TensorRt),
            "auto" => Ok(Device::Auto),
            _ => Err(format!("unknown device '{s}': expected one of cpu, cuda, tensorrt, auto")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::TensorRt => "tensorrt",
            Device::Auto => "auto",
        })
    }
}

/// How to load ONNX Runtime and run sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// The `libonnxruntime` file; `None` resolves it as described in the module docs.
    pub onnxruntime_path: Option<PathBuf>,
    pub device: Device,
    /// Intra-op threads per session; 0 keeps ONNX Runtime's default (one per core).
    pub intra_threads: usize,
}

struct Loaded {
    path: PathBuf,
    env: Environment,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The library loaded in this process, if any.
pub fn loaded_library() -> Option<&'static Path> {
    LOADED.get().map(|l| l.path.as_path())
}

/// Loads ONNX Runtime once per process. Later calls succeed when they name no library or the
/// same one; naming another library is an error (a process can hold only one).
pub fn init(config: &RuntimeConfig) -> Result<()> {
    environment(config).map(|_| ())
}

fn environment(config: &RuntimeConfig) -> Result<&'static Environment> {
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(loaded) = LOADED.get() {
        if let Some(wanted) = &config.onnxruntime_path {
            let wanted_abs = std::fs::canonicalize(wanted).unwrap_or_else(|_| wanted.clone());
            if wanted_abs != loaded.path {
                return Err(EmbedError::Runtime(format!(
                    "this process already loaded {}; it cannot also load {} (one ONNX Runtime library per process: \
                     configure the same onnxruntime_path everywhere, or leave it unset)",
                    loaded.path.display(),
                    wanted.display()
                )));
            }
        }
        return Ok(&loaded.env);
    }
    let path = resolve_library(config)?;
    let builder = ort::init_from(&path).map_err(|e| {
        EmbedError::Runtime(format!("cannot load {}: {e}. Fetch a compatible library (1.31.x) with `{SETUP_COMMAND}`", path.display()))
    })?;
    let env = builder
        .with_name("imclust")
        .build()
        .map_err(|e| EmbedError::Runtime(format!("loaded {} but could not create its environment: {e}", path.display())))?;
    let _ = LOADED.set(Loaded { path, env });
    Ok(&LOADED.get().expect("set above").env)
}

/// Finds the library (see the module docs for the order).
pub fn resolve_library(config: &RuntimeConfig) -> Result<PathBuf> {
    resolve_from(
        config.onnxruntime_path.as_deref(),
        std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).as_deref(),
        std::env::current_dir().ok().as_deref(),
        std::env::current_exe().ok().as_deref(),
    )
}

fn resolve_from(configured: Option<&Path>, env: Option<&Path>, cwd: Option<&Path>, exe: Option<&Path>) -> Result<PathBuf> {
    let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let explicit = [("the configured onnxruntime_path", configured), ("ORT_DYLIB_PATH", env.filter(|p| !p.as_os_str().is_empty()))];
    for (what, path) in explicit {
        if let Some(p) = path {
            return if p.is_file() {
                Ok(absolute(p))
            } else {
                Err(EmbedError::Runtime(format!(
                    "{what} ({}) does not exist; fix it (or unset it to use the default places), or fetch the library with `{SETUP_COMMAND}`",
                    p.display()
                )))
            };
        }
    }
    let mut tried = vec!["runtime.onnxruntime_path (not set)".to_string(), "ORT_DYLIB_PATH (not set)".to_string()];
    let mut candidates: Vec<PathBuf> = cwd.map(|d| d.join(DEFAULT_LIBRARY)).into_iter().collect();
    if let Some(exe) = exe {
        candidates.extend(exe.ancestors().skip(1).map(|dir| dir.join(DEFAULT_LIBRARY)));
    }
    for c in candidates {
        if c.is_file() {
            return Ok(absolute(&c));
        }
        let shown = c.display().to_string();
        if !tried.contains(&shown) {
            tried.push(shown);
        }
    }
    Err(EmbedError::Runtime(format!(
        "libonnxruntime not found; tried: {}. Fetch it with `{SETUP_COMMAND}` (from the repository root), \
         or point ORT_DYLIB_PATH or runtime.onnxruntime_path at a libonnxruntime 1.31.x",
        tried.join(", ")
    )))
}

/// A model to open: a file, or bytes with a name for messages.
#[derive(Debug, Clone, Copy)]
pub enum ModelSource<'a> {
    File(&'a Path),
    Bytes { name: &'a str, bytes: &'a [u8] },
}

impl<'a> From<&'a Path> for ModelSource<'a> {
    fn from(p: &'a Path) -> Self {
        ModelSource::File(p)
    }
}

impl<'a> From<&'a PathBuf> for ModelSource<'a> {
    fn from(p: &'a PathBuf) -> Self {
        ModelSource::File(p)
    }
}

impl<'a> From<&'a [u8]> for ModelSource<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        ModelSource::Bytes { name: "<in-memory model>", bytes }
    }
}

impl ModelSource<'_> {
    fn path(&self) -> PathBuf {
        match self {
            ModelSource::File(p) => p.to_path_buf(),
            ModelSource::Bytes { name, .. } => PathBuf::from(name),
        }
    }
}

/// Opens a session on the configured device (loading ONNX Runtime first if needed).
pub fn session<'a>(model: impl Into<ModelSource<'a>>, config: &RuntimeConfig) -> Result<Session> {
    let model = model.into();
    let env = environment(config)?;
    let path = model.path();
    let model_err = |reason: String| EmbedError::Model { path: path.clone(), reason };

    let ort_err = |what: &str, e: ort::Error| model_err(format!("{what}: {e}"));
    let mut builder = Session::builder(env).map_err(|e| ort_err("cannot create a session builder", e))?;
    if config.intra_threads > 0 {
        builder = builder.with_intra_threads(config.intra_threads).map_err(|e| ort_err("cannot set intra-op threads", e.into()))?;
    }
    register_providers(&mut builder, config.device);
    let committed = match model {
        ModelSource::File(p) => builder.commit_from_file(p),
        ModelSource::Bytes { bytes, .. } => builder.commit_from_memory(bytes),
    };
    committed.map_err(|e| {
        // ONNX Runtime's own message for a file that is not a model at all is obscure: check
        // the container (only on failure, so a large model is not read twice).
        let not_onnx = e.code() == ort::ErrorCode::InvalidProtobuf
            || match model {
                ModelSource::File(p) => std::fs::read(p).map(|b| !onnx_edit::is_onnx_model(&b)).unwrap_or(false),
                ModelSource::Bytes { bytes, .. } => !onnx_edit::is_onnx_model(bytes),
            };
        if matches!(model, ModelSource::File(p) if !p.exists()) {
            model_err("does not exist".into())
        } else if not_onnx {
            model_err(format!(
                "not a valid ONNX model (it does not parse as an ONNX ModelProto with a graph); check that the file is \
                 the .onnx export and not, e.g., a PyTorch checkpoint or an HTML error page. ONNX Runtime said: {e}"
            ))
        } else {
            model_err(format!("ONNX Runtime cannot load it: {e}"))
        }
    })
}

fn warn_once(line: String) {
    static WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if !warned.contains(&line) {
        eprintln!("{line}");
        warned.push(line);
    }
}

/// Registers the device's execution providers; whatever is unavailable falls back to CPU
/// (ONNX Runtime's CPU provider is always present) with a warning, except for `Auto`.
fn register_providers(builder: &mut SessionBuilder, device: Device) {
    let chain: &[&str] = match device {
        Device::Cpu => &[],
        Device::Cuda | Device::Auto => &["CUDA"],
        Device::TensorRt => &["TensorRT", "CUDA"],
    };
    let library = loaded_library().map(|p| p.display().to_string()).unwrap_or_default();
    let mut failures = Vec::new();
    for name in chain {
        let (available, register) = match *name {
            "TensorRT" => (ep::TensorRT::is_available(), ep::TensorRT::default().register(builder)),
            _ => (ep::CUDA::is_available(), Ok(())),
        };
        // CUDA is registered only once we know it is compiled in (registering it otherwise
        // is an error anyway, but a less clear one).
        let outcome = match available {
            Ok(true) if *name == "TensorRT" => register.map_err(|e| e.to_string()),
            Ok(true) => ep::CUDA::default().register(builder).map_err(|e| e.to_string()),
            Ok(false) => Err(format!("the ONNX Runtime library {library} was built without it (the PyPI `onnxruntime` wheel is CPU-only; use the library of `onnxruntime-gpu`)")),
            Err(e) => Err(format!("ONNX Runtime could not list its providers: {e}")),
        };
        match outcome {
            Ok(()) => return,
            Err(why) => failures.push(format!("{name} execution provider unavailable: {why}")),
        }
    }
    if !failures.is_empty() && device != Device::Auto {
        warn_once(format!("warning: device {device}: {}; running on CPU", failures.join("; ")));
    }
}

/// A tensor input or output of a graph, for messages and `imclust models inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Element type, e.g. `f32`, `i64`; `"-"` for non-tensors.
    pub dtype: String,
    /// Dimensions; `None` is dynamic.
    pub shape: Vec<Option<i64>>,
    /// Names of the dynamic dimensions (empty when unnamed), parallel to `shape`.
    pub symbols: Vec<String>,
    /// Whether the value is a tensor at all.
    pub is_tensor: bool,
}

impl TensorInfo {
    pub fn from_outlet(outlet: &Outlet) -> Self {
        match outlet.dtype() {
            ValueType::Tensor { ty, shape, dimension_symbols } => TensorInfo {
                name: outlet.name().to_string(),
                dtype: ty.to_string(),
                shape: shape.iter().map(|&d| (d >= 0).then_some(d)).collect(),
                symbols: (0..shape.len()).map(|i| dimension_symbols.get(i).cloned().unwrap_or_default()).collect(),
                is_tensor: true,
            },
            other => TensorInfo { name: outlet.name().to_string(), dtype: other.to_string(), shape: Vec::new(), symbols: Vec::new(), is_tensor: false },
        }
    }

    /// `[batch, 224, 224, 3]`: symbols for named dynamic dimensions, `?` for unnamed ones.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .zip(&self.symbols)
            .map(|(d, s)| match d {
                Some(n) => n.to_string(),
                None if s.is_empty() => "?".to_string(),
                None => s.clone(),
            })
            .collect();
        format!("[{}]", dims.join(", "))
    }
}

impl fmt::Display for TensorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_tensor {
            write!(f, "{}: {} {}", self.name, self.dtype, self.shape_string())
        } else {
            write!(f, "{}: {}", self.name, self.dtype)
        }
    }
}

/// The inputs and outputs of a session.
pub fn signature(session: &Session) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
    (session.inputs().iter().map(TensorInfo::from_outlet).collect(), session.outputs().iter().map(TensorInfo::from_outlet).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("CUDA".parse::<Device>().unwrap(), Device::Cuda);
        assert_eq!("tensorrt".parse::<Device>().unwrap(), Device::TensorRt);
        assert_eq!("auto".parse::<Device>().unwrap(), Device::Auto);
        let err = "gpu".parse::<Device>().unwrap_err();
        assert!(err.contains("cpu, cuda, tensorrt, auto"), "{err}");
    }

    #[test]
    fn a_missing_configured_library_is_named_with_the_set_up_command() {
        let cfg = RuntimeConfig { onnxruntime_path: Some("/nonexistent/libonnxruntime.so".into()), ..Default::default() };
        let err = resolve_library(&cfg).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/libonnxruntime.so") && err.contains(SETUP_COMMAND), "{err}");
        let err = resolve_from(None, Some(Path::new("/nope/libonnxruntime.so.1.31.1")), None, None).unwrap_err().to_string();
        assert!(err.contains("ORT_DYLIB_PATH (/nope/libonnxruntime.so.1.31.1) does not exist"), "{err}");
    }

    #[test]
    fn the_library_is_found_under_the_cwd_or_the_executables_ancestors_else_every_place_is_named() {
        let repo = tempfile::tempdir().unwrap();
        let lib = repo.path().join(DEFAULT_LIBRARY);
        let exe = repo.path().join("target/release/imclust");
        let elsewhere = tempfile::tempdir().unwrap();
        let err = resolve_from(None, None, Some(elsewhere.path()), Some(&exe)).unwrap_err().to_string();
        for place in [
            "runtime.onnxruntime_path (not set)".to_string(),
            "ORT_DYLIB_PATH (not set)".to_string(),
            elsewhere.path().join(DEFAULT_LIBRARY).display().to_string(),
            repo.path().join("target/release").join(DEFAULT_LIBRARY).display().to_string(),
            lib.display().to_string(),
            SETUP_COMMAND.to_string(),
        ] {
            assert!(err.contains(&place), "{place} missing from: {err}");
        }
        std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
        std::fs::write(&lib, b"").unwrap();
        let found = resolve_from(None, None, Some(elsewhere.path()), Some(&exe)).unwrap();
        assert_eq!(found, lib.canonicalize().unwrap());
        assert_eq!(resolve_from(None, None, Some(repo.path()), None).unwrap(), lib.canonicalize().unwrap());
        // An explicit path wins over the default places.
        let other = elsewhere.path().join("libonnxruntime.so");
        std::fs::write(&other, b"").unwrap();
        assert_eq!(resolve_from(Some(&other), None, Some(repo.path()), None).unwrap(), other.canonicalize().unwrap());
    }

    #[test]
    fn init_twice_is_fine_but_another_library_is_refused() {
        init(&RuntimeConfig::default()).unwrap();
        init(&RuntimeConfig::default()).unwrap();
        let loaded = loaded_library().unwrap().to_path_buf();
        init(&RuntimeConfig { onnxruntime_path: Some(loaded.clone()), ..Default::default() }).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("libonnxruntime.so");
        std::fs::write(&other, b"not a library").unwrap();
        let err = init(&RuntimeConfig { onnxruntime_path: Some(other), ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("already loaded") && err.contains("one ONNX Runtime library per process"), "{err}");
    }

    #[test]
    fn a_non_onnx_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.onnx");
        std::fs::write(&path, b"<html>404 Not Found</html>").unwrap();
        let err = session(&path, &RuntimeConfig::default()).unwrap_err().to_string();
        assert!(err.contains("model.onnx") && err.contains("not a valid ONNX model"), "{err}");
        let err = session(&dir.path().join("absent.onnx"), &RuntimeConfig::default()).unwrap_err().to_string();
        assert!(err.contains("absent.onnx") && err.contains("does not exist"), "{err}");
        let err = session(&b"\x08\x08"[..], &RuntimeConfig::default()).unwrap_err().to_string();
        assert!(err.contains("<in-memory model>") && err.contains("not a valid ONNX model"), "{err}");
    }

    #[test]
    fn cuda_falls_back_to_cpu_on_a_cpu_only_library() {
        // The PyPI wheel's library has no CUDA: the session still opens (on CPU).
        let model = crate::onnx_edit::testmodel::relu_neg();
        let cfg = RuntimeConfig { device: Device::Cuda, intra_threads: 1, ..Default::default() };
        let s = session(&model[..], &cfg).unwrap();
        let (inputs, outputs) = signature(&s);
        assert_eq!(inputs[0].to_string(), "x: f32 [batch, 4]");
        assert_eq!(outputs[0].name, "y");
    }
}
