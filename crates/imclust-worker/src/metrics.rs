//! The worker's Prometheus metrics (served on `/metrics` by the binary).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone, Default)]
pub struct WorkerMetrics {
    tasks: Family<Labels, Counter>,
    seconds: Family<Labels, Counter<f64, AtomicU64>>,
}

impl WorkerMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("imclust_worker_tasks", "Tasks run, by stage and outcome (ok, failed)", self.tasks.clone());
        r.register("imclust_worker_task_seconds", "Seconds spent running tasks, by stage", self.seconds.clone());
    }

    pub fn tasks(&self, stage: &'static str, outcome: &'static str) -> Counter {
        self.tasks.get_or_create(&vec![("stage", stage), ("outcome", outcome)]).clone()
    }

    pub fn task_seconds(&self, stage: &'static str) -> Counter<f64, AtomicU64> {
        self.seconds.get_or_create(&vec![("stage", stage)]).clone()
    }
}
