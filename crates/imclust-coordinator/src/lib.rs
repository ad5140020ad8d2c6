//! The imclust coordinator: the job spec, the task board (leases, attempts, exactly-once
//! results), the gRPC service workers dial, checkpoints, and the driver that runs a job's
//! stages from plan to commit.

pub mod board;
pub mod checkpoint;
pub mod driver;
pub mod error;
pub mod metrics;
pub mod service;
pub mod spec;

pub use error::{CoordinatorError, Result};
