//! Shard plans: a dataset cut into contiguous ranges of a fixed size. The plan depends on
//! the dataset (its length and fingerprint) and the shard size only, never on how many
//! workers there are, so results and cache keys are the same with 1 or 100 workers.

use crate::error::{DataError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ops::Range;

/// Default records per shard.
pub const DEFAULT_SHARD_SIZE: u64 = 4096;

/// One shard: an id (its position in the plan), a range of record indices and a
/// fingerprint (dataset fingerprint + range).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub id: u32,
    pub start: u64,
    pub end: u64,
    pub fingerprint: String,
}

impl Shard {
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The shard's file name stem, e.g. `shard-00012` (sorts in plan order).
    pub fn name(&self) -> String {
        format!("shard-{:05}", self.id)
    }
}

/// A dataset's shards, in order, covering every record exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub dataset_fingerprint: String,
    pub records: u64,
    pub shard_size: u64,
    pub shards: Vec<Shard>,
}

impl ShardPlan {
    /// The plan of a dataset, each shard fingerprinted by the dataset
    /// ([`Dataset::shard_fingerprint`](crate::dataset::Dataset::shard_fingerprint)).
    pub fn for_dataset(ds: &dyn crate::dataset::Dataset, shard_size: u64) -> Result<ShardPlan> {
        let mut plan = ShardPlan::new(ds.len(), shard_size, ds.fingerprint())?;
        for s in &mut plan.shards {
            s.fingerprint = ds.shard_fingerprint(s.range());
        }
        Ok(plan)
    }

    pub fn new(records: u64, shard_size: u64, dataset_fingerprint: &str) -> Result<ShardPlan> {
        if shard_size == 0 {
            return Err(DataError::invalid("shard size 0", "a shard must hold at least one record"));
        }
        let count = records.div_ceil(shard_size);
        if count > u32::MAX as u64 {
            return Err(DataError::invalid(format!("shard size {shard_size}"), format!("{count} shards are too many; use larger shards")));
        }
        let shards = (0..count)
            .map(|i| {
                let (start, end) = (i * shard_size, ((i + 1) * shard_size).min(records));
                let mut h = Sha256::new();
                h.update(dataset_fingerprint.as_bytes());
                h.update(start.to_le_bytes());
                h.update(end.to_le_bytes());
                Shard { id: i as u32, start, end, fingerprint: hex::encode(h.finalize()) }
            })
            .collect();
        Ok(ShardPlan { dataset_fingerprint: dataset_fingerprint.to_string(), records, shard_size, shards })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cover_every_record_once_and_are_stable() {
        let p = ShardPlan::new(10_001, 1000, "fp").unwrap();
        assert_eq!(p.shards.len(), 11);
        assert_eq!(p.shards[10].range(), 10_000..10_001);
        let mut next = 0;
        for (i, s) in p.shards.iter().enumerate() {
            assert_eq!((s.id as usize, s.start), (i, next));
            next = s.end;
        }
        assert_eq!(next, 10_001);
        assert_eq!(p, ShardPlan::new(10_001, 1000, "fp").unwrap());
        assert_eq!(p.shards[3].name(), "shard-00003");
        // The fingerprint follows the data and the range.
        let q = ShardPlan::new(10_001, 1000, "other").unwrap();
        assert_ne!(p.shards[0].fingerprint, q.shards[0].fingerprint);
        assert_ne!(p.shards[0].fingerprint, p.shards[1].fingerprint);
        assert!(ShardPlan::new(0, 10, "fp").unwrap().shards.is_empty());
        assert!(ShardPlan::new(5, 0, "fp").unwrap_err().to_string().contains("at least one"));
    }
}
