//! `imclust seeds`: k-means seed centroids from text prompts through a dual-encoder bundle.

use crate::models::RuntimeArgs;
use anyhow::{Context, Result, bail};
use imclust_embed::bundle::Bundle;
use imclust_embed::{engine, runtime, text};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A dual-encoder bundle (CLIP, SigLIP, LiT): one with a text tower.
    #[arg(long)]
    bundle: PathBuf,
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
    let rt = a.runtime.config();
    runtime::init(&rt)?;
    let bundle = Bundle::load_with(&a.bundle, &rt)?;
    let seeds = engine::text_seeds(&bundle, &rt, &classes, &templates)?;
    let d = seeds.len() / classes.len();
    imclust_data::npy::write_f32(&a.out, &[classes.len(), d], &seeds)?;
    println!(
        "{} seeds ({} templates each) from '{}' -> {} ({} x {d}, float32)",
        classes.len(),
        templates.len(),
        bundle.name(),
        a.out.display(),
        classes.len()
    );
    Ok(())
}
