//! `imclust dataset info`, and the dataset arguments shared by the commands that read one.

use anyhow::Result;
use imclust_data::dataset::{self, Dataset, DatasetSpec};
use imclust_data::shard::{DEFAULT_SHARD_SIZE, ShardPlan};
use imclust_data::storage::Storage;
use std::sync::Arc;

/// A dataset named `KIND:URL`.
#[derive(clap::Args, Clone)]
pub struct DatasetArgs {
    /// The dataset, KIND:URL with KIND one of cifar10, cifar100, stl10, idx, folder, mit67,
    /// manifest, npy; URL a local path or file://, s3://, gs://, az://, http(s):// URL.
    #[arg(long = "dataset", value_name = "KIND:URL")]
    pub spec: Option<String>,
    /// The split, for formats that have them (cifar10/100, idx: train, test, all; stl10:
    /// train, test, unlabeled, all, train-fold-0..9; mit67: all, train, test).
    #[arg(long)]
    pub split: Option<String>,
    /// cifar100 only: fine (100 classes, default) or coarse (20 superclasses) labels.
    #[arg(long = "label-set", value_name = "fine|coarse")]
    pub label_set: Option<String>,
}

impl DatasetArgs {
    pub fn parse(&self, spec: &str) -> Result<DatasetSpec> {
        let mut s = DatasetSpec::parse(spec, self.split.as_deref())?;
        s.labels = self.label_set.clone();
        Ok(s)
    }
}

/// Opens a dataset on `rt` through `storage` (whose clients the run's other locations share).
pub fn open(rt: &tokio::runtime::Runtime, spec: &DatasetSpec, storage: &Storage) -> Result<Arc<dyn Dataset>> {
    Ok(rt.block_on(dataset::open(spec, storage))?)
}

#[derive(clap::Subcommand)]
pub enum DatasetCommand {
    /// Prints a dataset's size, classes, label counts, fingerprint and shard plan.
    Info(InfoArgs),
}

#[derive(clap::Args)]
pub struct InfoArgs {
    /// The dataset, KIND:URL (see `imclust embed --help`).
    #[arg(value_name = "KIND:URL")]
    name: String,
    #[command(flatten)]
    dataset: DatasetArgs,
    /// Records per shard, for the shard plan shown.
    #[arg(long, default_value_t = DEFAULT_SHARD_SIZE)]
    shard_size: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(c: DatasetCommand) -> Result<()> {
    let DatasetCommand::Info(a) = c;
    if a.dataset.spec.is_some() {
        anyhow::bail!("give the dataset once, as the argument (imclust dataset info KIND:URL)");
    }
    let spec = a.dataset.parse(&a.name)?;
    let rt = imclust_data::storage::runtime()?;
    let ds = open(&rt, &spec, &Storage::default())?;
    let labels = rt.block_on(ds.labels())?;
    let plan = ShardPlan::for_dataset(ds.as_ref(), a.shard_size)?;
    let classes = ds.class_names().map(<[String]>::to_vec);
    let mut counts: Option<Vec<u64>> = None;
    let mut unlabelled = 0u64;
    if let (Some(l), Some(c)) = (&labels, &classes) {
        let mut v = vec![0u64; c.len()];
        for x in l {
            match x {
                Some(i) if (*i as usize) < v.len() => v[*i as usize] += 1,
                _ => unlabelled += 1,
            }
        }
        counts = Some(v);
    }
    if a.json {
        let j = serde_json::json!({
            "kind": spec.kind.name(),
            "url": spec.url,
            "split": spec.split()?,
            "records": ds.len(),
            "classes": classes,
            "label_counts": counts,
            "unlabelled_or_bad_labels": if labels.is_some() { Some(unlabelled) } else { None },
            "fingerprint": ds.fingerprint(),
            "shard_size": a.shard_size,
            "shards": plan.shards.len(),
            "notes": ds.notes(),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("dataset      {spec}");
    println!("records      {}", ds.len());
    println!("fingerprint  {}", ds.fingerprint());
    println!("shards       {} of up to {} records", plan.shards.len(), a.shard_size);
    match (&classes, &counts) {
        (Some(c), Some(n)) => {
            println!("classes      {}", c.len());
            let w = c.iter().map(String::len).max().unwrap_or(5).max(5);
            println!("  {:>5}  {:<w$}  {:>8}", "label", "class", "records");
            for (i, (name, k)) in c.iter().zip(n).enumerate() {
                println!("  {i:>5}  {name:<w$}  {k:>8}");
            }
            if unlabelled > 0 {
                println!("  {unlabelled} record(s) without a usable label (out of range or missing)");
            }
        }
        (Some(c), None) => println!("classes      {} ({}), records unlabelled", c.len(), c.join(", ")),
        _ => println!("classes      none (unlabelled)"),
    }
    for n in ds.notes() {
        println!("note: {n}");
    }
    Ok(())
}
