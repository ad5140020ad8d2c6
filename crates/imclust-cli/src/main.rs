//! The `imclust` command-line tool.

mod bench;
mod cluster;
mod dataset;
mod embed;
mod eval;
mod job;
mod models;
mod seeds;
mod telemetry;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "imclust", version, about = "Cluster large image collections: embed, seed, k-means, report")]
struct Cli {
    /// Log format on stderr (RUST_LOG sets the level).
    #[arg(long, global = true, value_enum, default_value = "pretty")]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a whole job on this machine: a coordinator plus --workers local worker processes.
    Run(job::RunArgs),
    /// Checks a job spec (all layers applied) without running anything.
    ValidateConfig(job::ValidateArgs),
    /// Runs a job's coordinator: workers dial it (imclust worker --coordinator URL).
    Coordinator(job::CoordinatorArgs),
    /// Runs a worker that dials a coordinator and works until the job is over.
    Worker(job::WorkerArgs),
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
    let filter = match cli.command {
        Command::Coordinator(_) | Command::Worker(_) => "warn,imclust_coordinator=info,imclust_worker=info",
        _ => "warn",
    };
    telemetry::init_tracing(cli.log_format, filter);
    let result = match cli.command {
        Command::Run(a) => job::run(a, cli.log_format),
        Command::ValidateConfig(a) => job::validate(a),
        Command::Coordinator(a) => job::coordinator(a),
        Command::Worker(a) => job::worker(a),
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
