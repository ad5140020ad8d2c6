//! `imclust embed`: images (a folder, or raw pixels in .npy) through a bundle's image tower.

use anyhow::{Context, Result, bail};
use imclust_core::fusion::{self, Part};
use imclust_embed::bundle::Bundle;
use imclust_embed::engine::ImageEncoder;
use imclust_embed::preprocess::{self, Record};
use crate::models::RuntimeArgs;
use imclust_embed::runtime;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The models of a run: one bundle, or several fused into one space.
#[derive(clap::Args)]
pub struct FusionArgs {
    /// A model bundle (a directory with bundle.toml). Repeat to fuse several models: each
    /// model's rows (embeddings or text seeds) are L2-normalised, multiplied by its --weight
    /// and concatenated, so `embed` and `seeds` with the same bundles and weights agree.
    #[arg(long = "bundle", required = true)]
    pub bundles: Vec<PathBuf>,
    /// Weight of each bundle, in --bundle order (default 1 each).
    #[arg(long = "weight")]
    pub weights: Vec<f32>,
}

impl FusionArgs {
    /// The weight of each bundle: as given (one per bundle, positive), or 1 each.
    pub fn weights(&self) -> Result<Vec<f32>> {
        let bundles = self.bundles.len();
        if self.weights.is_empty() {
            return Ok(vec![1.0; bundles]);
        }
        if self.weights.len() != bundles {
            bail!("{} --weight values for {bundles} --bundle values: give one weight per bundle, or none", self.weights.len());
        }
        if let Some(w) = self.weights.iter().find(|w| !w.is_finite() || **w <= 0.0) {
            bail!("--weight {w}: weights must be positive numbers");
        }
        Ok(self.weights.clone())
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    models: FusionArgs,
    /// A folder of images (searched recursively; rows in sorted path order).
    #[arg(long, required_unless_present = "npy_pixels", conflicts_with = "npy_pixels")]
    images: Option<PathBuf>,
    /// Raw uint8 pixels, (N, H, W) or (N, H, W, C) with C = 1 or 3.
    #[arg(long)]
    npy_pixels: Option<PathBuf>,
    /// Output embeddings, N x dim float32 .npy.
    #[arg(long)]
    out: PathBuf,
    /// With --images: also write each image's class, the index of its top-level folder under
    /// DIR in sorted order (int32 .npy), and the class names next to it (<file>.classes.txt).
    #[arg(long, requires = "images")]
    labels_out: Option<PathBuf>,
    /// Images per inference call.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// File extensions read as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// Image files under `dir`, recursively, sorted by path relative to `dir`; also returns the
/// other files found (never silently ignored: the caller reports them).
pub fn list_images(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    fn walk(d: &Path, images: &mut Vec<PathBuf>, other: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(d).with_context(|| format!("listing {}", d.display()))? {
            let p = e.with_context(|| format!("listing {}", d.display()))?.path();
            if p.is_dir() {
                walk(&p, images, other)?;
            } else {
                let ext = p.extension().and_then(|x| x.to_str()).map(str::to_ascii_lowercase);
                if ext.is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.as_str())) {
                    images.push(p);
                } else if !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                    other.push(p);
                }
            }
        }
        Ok(())
    }
    let (mut images, mut other) = (Vec::new(), Vec::new());
    walk(dir, &mut images, &mut other)?;
    images.sort();
    other.sort();
    Ok((images, other))
}

/// The inputs of a run as pipeline records, lazily read.
pub enum Inputs {
    Files(Vec<PathBuf>),
    Pixels(imclust_data::npy::Pixels, String),
}

impl Inputs {
    pub fn len(&self) -> usize {
        match self {
            Inputs::Files(f) => f.len(),
            Inputs::Pixels(p, _) => p.count,
        }
    }

    pub fn records(&self) -> Box<dyn Iterator<Item = Record> + Send + '_> {
        match self {
            Inputs::Files(files) => Box::new(files.iter().map(|p| {
                let name = p.display().to_string();
                match std::fs::read(p) {
                    Ok(bytes) => Record::Encoded { name, bytes },
                    Err(e) => Record::Failed(imclust_embed::EmbedError::io(p, e)),
                }
            })),
            Inputs::Pixels(px, file) => Box::new((0..px.count).map(move |i| Record::Pixels {
                name: format!("{file}[{i}]"),
                width: px.width as u32,
                height: px.height as u32,
                channels: px.channels as u8,
                data: px.image(i).to_vec(),
            })),
        }
    }
}

/// Embeds every input in order; the first bad input fails the run with its error.
pub fn embed_all(enc: &mut ImageEncoder, bundle: &Bundle, inputs: &Inputs, batch: usize) -> Result<Vec<f32>> {
    let dim = enc.dim();
    let mut out = vec![0.0f32; inputs.len() * dim];
    preprocess::pipeline(inputs.records(), bundle.image_spec(), batch, 2, |b| {
        if let Some((_, e)) = b.errors.into_iter().next() {
            return Err(e);
        }
        let rows = enc.run(b.pixels.view())?;
        for (j, &i) in b.indices.iter().enumerate() {
            out[i * dim..(i + 1) * dim].copy_from_slice(rows.row(j).as_slice().expect("standard layout"));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Class of each file = its top-level folder under `dir` (sorted names); files directly in
/// `dir` are an error, since they have no class.
fn write_folder_labels(path: &Path, dir: &Path, files: &[PathBuf]) -> Result<()> {
    let class_of = |f: &PathBuf| -> Result<String> {
        let rel = f.strip_prefix(dir).expect("listed under dir");
        match rel.components().next() {
            Some(c) if rel.components().count() > 1 => Ok(c.as_os_str().to_string_lossy().into_owned()),
            _ => bail!("{} is not inside a class folder of {}: --labels-out needs DIR/<class>/<image>", f.display(), dir.display()),
        }
    };
    let names: Vec<String> = files.iter().map(class_of).collect::<Result<_>>()?;
    let mut classes = names.clone();
    classes.sort();
    classes.dedup();
    let ids: Vec<i32> = names.iter().map(|n| classes.binary_search(n).expect("present") as i32).collect();
    imclust_data::npy::write_i32(path, &[ids.len()], &ids)?;
    let mut list = path.as_os_str().to_owned();
    list.push(".classes.txt");
    imclust_data::fsutil::write_atomic(Path::new(&list), (classes.join("\n") + "\n").as_bytes())?;
    eprintln!("labels: {} classes ({}) -> {}", classes.len(), classes.join(", "), path.display());
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let rt = a.runtime.config();
    runtime::init(&rt)?;
    let weights = a.models.weights()?;
    let bundles = a.models.bundles.iter().map(|b| Bundle::load_with(b, &rt)).collect::<Result<Vec<_>, _>>()?;
    let inputs = match (&a.images, &a.npy_pixels) {
        (Some(dir), _) => {
            let (images, other) = list_images(dir)?;
            if !other.is_empty() {
                eprintln!(
                    "note: {} file(s) under {} are not images ({}) and were not embedded, e.g. {}",
                    other.len(),
                    dir.display(),
                    IMAGE_EXTENSIONS.join(", "),
                    other[0].display()
                );
            }
            if images.is_empty() {
                bail!("no images ({}) under {}", IMAGE_EXTENSIONS.join(", "), dir.display());
            }
            Inputs::Files(images)
        }
        (None, Some(p)) => Inputs::Pixels(imclust_data::npy::read_pixels(p)?, p.display().to_string()),
        (None, None) => unreachable!("clap requires --images or --npy-pixels"),
    };
    if let (Some(path), Some(dir), Inputs::Files(files)) = (&a.labels_out, &a.images, &inputs) {
        write_folder_labels(path, dir, files)?;
    }
    let n = inputs.len();
    let t = Instant::now();
    let mut parts = Vec::with_capacity(bundles.len());
    for (bundle, &weight) in bundles.iter().zip(&weights) {
        let mut enc = ImageEncoder::new(bundle, &rt)?;
        let rows = embed_all(&mut enc, bundle, &inputs, a.batch_size)?;
        eprintln!("'{}' (digest {}): {n} x {}", bundle.name(), &bundle.digest()?[..12], enc.dim());
        parts.push((rows, Part { dim: enc.dim(), weight }));
    }
    let (rows, dim) = if parts.len() == 1 {
        let (rows, part) = parts.pop().expect("one part");
        (rows, part.dim)
    } else {
        let refs: Vec<(&[f32], Part)> = parts.iter().map(|(r, p)| (r.as_slice(), *p)).collect();
        (fusion::fuse_rows(&refs, n), parts.iter().map(|(_, p)| p.dim).sum())
    };
    let secs = t.elapsed().as_secs_f64();
    imclust_data::npy::write_f32(&a.out, &[n, dim], &rows)?;
    println!(
        "embedded {n} images with {} model(s) -> {} ({n} x {dim}, float32) in {secs:.2}s ({:.1} images/s)",
        bundles.len(),
        a.out.display(),
        n as f64 / secs
    );
    Ok(())
}
