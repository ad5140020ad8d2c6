//! `imclust eval`: ACC / NMI / ARI of assignments against labels.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Cluster ids, one per row: an integer .npy, or the assignments.parquet of a committed
    /// output (its `cluster` column, rows in `index` order).
    #[arg(long)]
    assignments: PathBuf,
    /// True class ids, one per row (.npy, integer).
    #[arg(long)]
    labels: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let assignments = if a.assignments.extension().is_some_and(|e| e == "parquet") {
        let bytes = std::fs::read(&a.assignments).with_context(|| format!("reading {}", a.assignments.display()))?;
        let t = imclust_data::output::read_assignments(bytes.into())?;
        let mut rows: Vec<(u64, u32)> = t.index.iter().copied().zip(t.clusters.iter().copied()).collect();
        rows.sort_unstable();
        rows.into_iter().map(|(_, c)| c).collect()
    } else {
        read_ids(&a.assignments, "assignments")?
    };
    let labels = read_ids(&a.labels, "labels")?;
    if assignments.len() != labels.len() {
        bail!(
            "{} has {} rows but {} has {}: they must describe the same rows",
            a.assignments.display(),
            assignments.len(),
            a.labels.display(),
            labels.len()
        );
    }
    let s = imclust_core::metrics::scores(&assignments, &labels)?;
    println!("{}", serde_json::json!({"acc": s.acc, "nmi": s.nmi, "ari": s.ari}));
    Ok(())
}

/// Reads a 1-D integer .npy of non-negative ids.
pub fn read_ids(path: &Path, what: &str) -> Result<Vec<u32>> {
    let raw = imclust_data::npy::read_labels(path).with_context(|| format!("reading {what}"))?;
    raw.iter()
        .enumerate()
        .map(|(i, &v)| {
            u32::try_from(v).map_err(|_| {
                anyhow::anyhow!("{}: {what} must be ids in 0..2^32, row {i} holds {v}", path.display())
            })
        })
        .collect()
}
