//! `imclust seeds`: k-means seed centroids from text prompts through a dual-encoder bundle.

use crate::models::RuntimeArgs;
use anyhow::{Context, Result, bail};
use imclust_core::fusion::{self, Part};
use imclust_embed::bundle::Bundle;
use imclust_embed::{engine, runtime, text};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Dual-encoder bundles (CLIP, SigLIP, LiT: with a text tower).
    #[command(flatten)]
    models: crate::embed::FusionArgs,
    /// Class names, comma-separated, in cluster order.
    #[arg(long, value_delimiter = ',', required_unless_present = "classes_file", conflicts_with = "classes_file")]
    classes: Vec<String>,
    /// A file with one class name per line.
    #[arg(long)]
    classes_file: Option<PathBuf>,
    /// Prompt template with one `{}` for the class name; repeat for a prompt ensemble
    /// (default: 8 of OpenAI's ImageNet templates, e.g. "a photo of a {}.").
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Output: K x dim float32 .npy, one unit-norm seed per class (for `cluster --init seeds:`).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(a: Args) -> Result<()> {
    let classes: Vec<String> = match &a.classes_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading class names from {}", p.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        None => a.classes.iter().map(|c| c.trim().to_string()).collect(),
    };
    if classes.is_empty() {
        bail!("no class names given");
    }
    let templates: Vec<String> = if a.templates.is_empty() {
        text::CLIP_IMAGENET_TEMPLATES_SHORT.iter().map(|t| t.to_string()).collect()
    } else {
        a.templates.clone()
    };
    let weights = a.models.weights()?;
    let rt = a.runtime.config();
    runtime::init(&rt)?;
    let k = classes.len();
    let mut parts = Vec::with_capacity(weights.len());
    let mut names = Vec::new();
    for (path, &weight) in a.models.bundles.iter().zip(&weights) {
        let bundle = Bundle::load_with(path, &rt)?;
        let seeds = engine::text_seeds(&bundle, &rt, &classes, &templates)?;
        names.push(bundle.name().to_string());
        parts.push((seeds.len() / k, seeds, weight));
    }
    // One model: its unit seeds as they are. Several: the same fusion as `embed` (each part is
    // already unit-norm per class, so fusion only weights and concatenates).
    let (seeds, d) = if parts.len() == 1 {
        let (d, seeds, _) = parts.pop().expect("one part");
        (seeds, d)
    } else {
        let refs: Vec<(&[f32], Part)> = parts.iter().map(|(d, s, w)| (s.as_slice(), Part { dim: *d, weight: *w })).collect();
        (fusion::fuse_rows(&refs, k), parts.iter().map(|p| p.0).sum())
    };
    imclust_data::npy::write_f32(&a.out, &[k, d], &seeds)?;
    println!(
        "{k} seeds ({} templates each) from {} -> {} ({k} x {d}, float32)",
        templates.len(),
        names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(" + "),
        a.out.display(),
    );
    Ok(())
}
