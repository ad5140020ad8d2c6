//! The `imclust` command-line tool.

mod bench;
mod cluster;
mod eval;

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
    /// Scores assignments against labels: ACC (Hungarian), NMI, ARI as JSON.
    Eval(eval::Args),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::Bench),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cluster(a) => cluster::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(b) => bench::run(b),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
