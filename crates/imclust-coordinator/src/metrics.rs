//! The coordinator's Prometheus metrics (`imclust_<what>_<unit>[_total]`, low-cardinality
//! labels only: stage and outcome). The binary serves them on `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone, Default)]
pub struct Metrics {
    pub workers_registered: Counter,
    pub workers_alive: Gauge,
    leases: Family<Labels, Counter>,
    results: Family<Labels, Counter>,
    pub shards_done: Gauge,
    pub shards_total: Gauge,
    pub iteration: Gauge,
    pub inertia: Gauge<f64, AtomicU64>,
    stage_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    pub job_failed: Gauge,
    pub job_committed: Gauge,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("imclust_workers_registered", "Workers that registered", self.workers_registered.clone());
        r.register("imclust_workers_alive", "Workers whose heartbeat is current", self.workers_alive.clone());
        r.register("imclust_leases", "Tasks leased, by stage", self.leases.clone());
        r.register("imclust_results", "Task results, by outcome (accepted, refused, failed, failed_fatal)", self.results.clone());
        r.register("imclust_round_shards_done", "Shards done in the current round", self.shards_done.clone());
        r.register("imclust_round_shards", "Shards in the current round", self.shards_total.clone());
        r.register("imclust_iteration", "Current k-means iteration", self.iteration.clone());
        r.register("imclust_inertia", "Inertia of the last iteration", self.inertia.clone());
        r.register("imclust_stage_seconds", "Seconds spent per stage", self.stage_seconds.clone());
        r.register("imclust_job_failed", "1 when the job failed", self.job_failed.clone());
        r.register("imclust_job_committed", "1 when the job's outputs are committed", self.job_committed.clone());
    }

    pub fn leases(&self, stage: &'static str) -> Counter {
        self.leases.get_or_create(&vec![("stage", stage)]).clone()
    }

    pub fn results(&self, outcome: &'static str) -> Counter {
        self.results.get_or_create(&vec![("outcome", outcome)]).clone()
    }

    pub fn stage_seconds(&self, stage: &'static str, seconds: f64) {
        self.stage_seconds.get_or_create(&vec![("stage", stage)]).set(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_names_and_labels() {
        let m = Metrics::default();
        let mut r = Registry::default();
        m.register(&mut r);
        m.leases("embed").inc();
        m.results("accepted").inc_by(3);
        m.stage_seconds("embed", 1.5);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(text.contains("imclust_leases_total{stage=\"embed\"} 1"), "{text}");
        assert!(text.contains("imclust_results_total{outcome=\"accepted\"} 3"), "{text}");
        assert!(text.contains("imclust_stage_seconds{stage=\"embed\"} 1.5"), "{text}");
    }
}
