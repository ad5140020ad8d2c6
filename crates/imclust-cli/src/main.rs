//! The `imclust` command-line tool.

mod bench;
mod cluster;
mod dataset;
mod embed;
mod eval;
mod models;
mod seeds;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "imclust", version, about = "Cluster large image collections: embed, seed, k-means, report")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// k-means on an embeddings matrix (.npy, float32 or float16, N x D).
    Cluster(cluster::Args),
    /// Embeds a dataset (CIFAR, STL-10, IDX, image folders, MIT Indoor-67, manifests, npy
    /// pixels) with one or more bundles' image towers.
    Embed(embed::Args),
    /// Datasets: size, classes, label counts, fingerprint.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Scores assignments against labels: ACC (Hungarian), NMI, ARI as JSON.
    Eval(eval::Args),
    /// Seed centroids from text prompts ("a photo of a {}.") through a dual-encoder bundle.
    Seeds(seeds::Args),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Model bundles: inspect ONNX files and bundles, prepare bundles from known models.
    #[command(subcommand)]
    Models(models::Models),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cluster(a) => cluster::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Dataset(c) => dataset::run(c),
        Command::Eval(a) => eval::run(a),
        Command::Bench(b) => bench::run(b),
        Command::Models(m) => models::run(m),
        Command::Seeds(a) => seeds::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
