//! The imclust wire contract (`proto/imclust/v1/coordinator.proto`): generated tonic/prost
//! types plus exact conversions to and from the core's partial sums.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("imclust.v1");
}

use imclust_core::fixed::FixedScale;
use imclust_core::kernel::{Candidate, PartialSums};
pub use v1::{Matrix, Stage, Sums};

/// Messages may carry K x D centroids, partial sums and a shard group's assignments.
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

impl From<&PartialSums> for Sums {
    fn from(p: &PartialSums) -> Self {
        Sums {
            k: p.k as u32,
            d: p.d as u32,
            exponent: p.scale.exponent,
            sums: p.sums.clone(),
            counts: p.counts.clone(),
            inertia_lo: p.inertia as u64,
            inertia_hi: (p.inertia >> 64) as u64,
            farthest: p
                .farthest
                .iter()
                .map(|c| v1::Candidate { distance: c.distance, row: c.row, cluster: c.cluster, vector: c.vector.clone() })
                .collect(),
            farthest_cap: p.farthest_cap as u32,
        }
    }
}

impl Sums {
    /// Back to the core type, checking every length (a malformed message is refused, never
    /// merged).
    pub fn to_partial(&self) -> Result<PartialSums, String> {
        let (k, d) = (self.k as usize, self.d as usize);
        if self.sums.len() != k * d || self.counts.len() != k {
            return Err(format!(
                "partial sums of {k} x {d} carry {} sums and {} counts",
                self.sums.len(),
                self.counts.len()
            ));
        }
        if let Some(c) = self.farthest.iter().find(|c| c.vector.len() != d || c.cluster as usize >= k) {
            return Err(format!("a farthest-row candidate (row {}) has {} values or cluster {} for {k} x {d}", c.row, c.vector.len(), c.cluster));
        }
        Ok(PartialSums {
            k,
            d,
            scale: FixedScale { exponent: self.exponent },
            sums: self.sums.clone(),
            counts: self.counts.clone(),
            inertia: (u128::from(self.inertia_hi) << 64) | u128::from(self.inertia_lo),
            farthest: self
                .farthest
                .iter()
                .map(|c| Candidate { distance: c.distance, row: c.row, cluster: c.cluster, vector: c.vector.clone() })
                .collect(),
            farthest_cap: self.farthest_cap as usize,
        })
    }
}

impl Matrix {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(rows * cols, data.len());
        Matrix { rows: rows as u32, cols: cols as u32, data }
    }

    /// Checks that the values make `rows x cols`.
    pub fn check(&self, what: &str) -> Result<(), String> {
        if self.data.len() != self.rows as usize * self.cols as usize {
            return Err(format!("{what}: {} values are not {} x {}", self.data.len(), self.rows, self.cols));
        }
        Ok(())
    }
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Unspecified => "unspecified",
            Stage::Embed => "embed",
            Stage::Sample => "sample",
            Stage::ZeroShot => "zero-shot",
            Stage::Iterate => "iterate",
            Stage::Assign => "assign",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_round_trip_exactly() {
        let mut p = PartialSums::new(2, 3, FixedScale { exponent: 40 }, 2);
        p.sums = vec![1, -2, 3, i64::MAX, i64::MIN, 0];
        p.counts = vec![5, 7];
        p.inertia = (7u128 << 64) | 9;
        p.farthest = vec![Candidate { distance: 2.5, row: 17, cluster: 1, vector: vec![0.5, -1.0, 2.0] }];
        let wire = Sums::from(&p);
        assert_eq!(wire.to_partial().unwrap(), p);
        let bad = Sums { counts: vec![1], ..wire.clone() };
        assert!(bad.to_partial().unwrap_err().contains("1 counts"));
        let mut bad = wire;
        bad.farthest[0].cluster = 2;
        assert!(bad.to_partial().unwrap_err().contains("row 17"));
    }
}
