//! The iteration state that survives a coordinator restart: written to
//! `<output>/<job-id>/checkpoints/latest.json` after every iteration (one atomic object put),
//! read back by a restarted coordinator. Centroids travel as f32 bit patterns, so a resumed
//! job continues from exactly the same numbers.

use serde::{Deserialize, Serialize};

pub const PATH: &str = "checkpoints/latest.json";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IterRecord {
    pub redo: u32,
    pub iteration: u32,
    pub inertia: f64,
    pub shift: f64,
    pub relocated: u64,
}

/// The best finished redo so far (n_redo > 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub redo: u32,
    pub inertia: f64,
    pub centroid_bits: Vec<u32>,
    pub iterations: u32,
    pub converged: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub job_id: String,
    /// `JobConfig::result_digest`: a checkpoint is resumed only under the same settings.
    pub digest: String,
    pub k: usize,
    pub d: usize,
    /// The redo in progress (== n_redo when every redo is finished).
    pub redo: u32,
    /// The next iteration to run in `redo`.
    pub next_iteration: u32,
    pub converged: bool,
    pub centroid_bits: Vec<u32>,
    /// Mini-batch: rows seen per cluster so far.
    pub seen: Vec<u64>,
    pub history: Vec<IterRecord>,
    pub best: Option<Best>,
    pub inertia_per_redo: Vec<f64>,
    /// Names of the clusters (text inits).
    pub names: Option<Vec<String>>,
}

pub fn to_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

pub fn from_bits(v: &[u32]) -> Vec<f32> {
    v.iter().map(|&b| f32::from_bits(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_exact_floats() {
        let c = vec![0.1f32, -1e-38, f32::MIN_POSITIVE, 3.4e38, -0.0];
        let ck = Checkpoint {
            version: VERSION,
            job_id: "j".into(),
            digest: "d".into(),
            k: 1,
            d: 5,
            redo: 0,
            next_iteration: 3,
            converged: false,
            centroid_bits: to_bits(&c),
            seen: vec![4],
            history: vec![IterRecord { redo: 0, iteration: 2, inertia: 0.1 + 0.2, shift: 1e-300, relocated: 1 }],
            best: None,
            inertia_per_redo: vec![],
            names: Some(vec!["a".into()]),
        };
        let text = serde_json::to_string(&ck).unwrap();
        let back: Checkpoint = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ck);
        let got = from_bits(&back.centroid_bits);
        assert!(got.iter().zip(&c).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
