//! `imclust models`: inspect ONNX models and bundles, prepare bundles from known models.

use anyhow::{Context, Result, bail};
use imclust_embed::bundle::{self, BUNDLE_FILE, Bundle, Tower};
use imclust_embed::runtime::{self, Device, RuntimeConfig, TensorInfo};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum Models {
    /// Prints a bundle's or an ONNX file's inputs and outputs (names, dtypes, shapes); for a
    /// bundle also the configured dims and its digest.
    Inspect(InspectArgs),
    /// Builds a bundle from a known model.
    Prepare(PrepareArgs),
}

/// Runtime options of every command that runs models.
#[derive(clap::Args, Clone)]
pub struct RuntimeArgs {
    /// The libonnxruntime file (default: ORT_DYLIB_PATH, then .cache/onnxruntime/ under the
    /// current directory or the executable's ancestors).
    #[arg(long, value_name = "PATH")]
    onnxruntime: Option<PathBuf>,
    /// cpu, cuda, tensorrt or auto (cuda/tensorrt fall back to CPU with a warning).
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// ONNX Runtime intra-op threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

impl RuntimeArgs {
    pub fn config(&self) -> RuntimeConfig {
        RuntimeConfig { onnxruntime_path: self.onnxruntime.clone(), device: self.device, intra_threads: self.threads }
    }
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A bundle directory (or its bundle.toml), or an .onnx file.
    path: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Preset {
    /// Yahoo's open_nsfw ResNet-50: 1024-d pooled features (image-only).
    OpenNsfw,
}

#[derive(clap::Args)]
pub struct PrepareArgs {
    preset: Preset,
    /// The original model file.
    #[arg(long, default_value = ".cache/models/open_nsfw.onnx")]
    model: PathBuf,
    /// The bundle directory to write (created; bundle.toml and the model are replaced).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(m: Models) -> Result<()> {
    match m {
        Models::Inspect(a) => inspect(&a),
        Models::Prepare(a) => prepare(&a),
    }
}

fn is_bundle(path: &Path) -> bool {
    path.is_dir() || path.file_name().is_some_and(|f| f == BUNDLE_FILE)
}

fn inspect(a: &InspectArgs) -> Result<()> {
    let cfg = a.runtime.config();
    if !a.path.exists() {
        bail!("{} does not exist", a.path.display());
    }
    if is_bundle(&a.path) {
        let b = Bundle::load_with(&a.path, &cfg)?;
        let c = b.config();
        println!("bundle {} ({})", b.name(), b.dir().display());
        println!("family: {}", c.family);
        let i = &c.image;
        println!("\nimage tower: {}", i.model);
        print_signature(b.signature(Tower::Image).expect("every bundle has an image tower"));
        println!(
            "  uses: input {} ({}, {}x{}, {}, {}, {}, scale {}, mean {:?}, std {:?}) -> output {} (dim {}, normalize {})",
            i.input, i.layout, i.size, i.size, i.resize, i.interpolation, i.channels, i.scale, i.mean, i.std, i.output, i.dim, i.normalize
        );
        if let Some(t) = &c.text {
            println!("\ntext tower: {}", t.model);
            print_signature(b.signature(Tower::Text).expect("validated"));
            println!(
                "  uses: input_ids {} (context_length {}, tokenizer {}){} -> output {} (dim {}, normalize {})",
                t.input_ids,
                t.context_length,
                t.tokenizer,
                t.attention_mask.as_ref().map(|m| format!(", attention_mask {m}")).unwrap_or_default(),
                t.output,
                t.dim,
                t.normalize
            );
        }
        println!("\ndigest: {}", b.digest()?);
    } else {
        let session = runtime::session(&a.path, &cfg)?;
        println!("model {}", a.path.display());
        print_signature(&runtime::signature(&session));
    }
    Ok(())
}

fn print_signature((inputs, outputs): &(Vec<TensorInfo>, Vec<TensorInfo>)) {
    println!("  inputs:");
    for i in inputs {
        println!("    {i}");
    }
    println!("  outputs:");
    for o in outputs {
        println!("    {o}");
    }
}

fn prepare(a: &PrepareArgs) -> Result<()> {
    let cfg = a.runtime.config();
    let b = match a.preset {
        Preset::OpenNsfw => bundle::prepare_open_nsfw(&a.model, &a.out, &cfg)
            .with_context(|| format!("preparing the open-nsfw bundle in {}", a.out.display()))?,
    };
    println!("bundle {} written to {} (validated)", b.name(), b.dir().display());
    println!("image: {} -> {} (dim {})", b.config().image.model, b.config().image.output, b.config().image.dim);
    println!("digest: {}", b.digest()?);
    Ok(())
}
