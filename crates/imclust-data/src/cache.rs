//! The embedding cache: one model's embeddings of one shard, keyed by (shard fingerprint,
//! model digest, preprocessing), under a cache URL (local or object store).
//!
//! An entry is `<cache>/<key[..2]>/<key>.npy` (the good rows, float32) and `<key>.json` (the
//! shard's range, ids, labels, bad records and the npy's sha256). The JSON is written last
//! and checked against the npy when read, so a torn or corrupt entry is a miss, never
//! wrong rows.

use crate::bad::BadRecord;
use crate::error::{DataError, Result};
use crate::npy;
use crate::storage::Location;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped whenever the entry layout changes.
const FORMAT: u32 = 1;

/// What a cache entry is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    /// `preprocessing` describes everything between the record and the model input (the
    /// image spec and the code's preprocessing version).
    pub fn new(shard_fingerprint: &str, model_digest: &str, preprocessing: &str) -> Self {
        let mut h = Sha256::new();
        for part in [shard_fingerprint, model_digest, preprocessing] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        CacheKey(hex::encode(h.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One model's embeddings of one shard.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardEmbeddings {
    pub start: u64,
    pub end: u64,
    pub dim: usize,
    /// Dataset indices of the rows, ascending: the shard's range without the bad records.
    pub indices: Vec<u64>,
    /// `indices.len() x dim`, row-major.
    pub rows: Vec<f32>,
    /// Ids and labels of the rows (same order as `indices`).
    pub ids: Vec<String>,
    pub labels: Vec<Option<i64>>,
    pub bad: Vec<BadRecord>,
}

#[derive(Serialize, Deserialize)]
struct EntryMeta {
    format: u32,
    start: u64,
    end: u64,
    dim: usize,
    indices: Vec<u64>,
    ids: Vec<String>,
    labels: Vec<Option<i64>>,
    bad: Vec<BadRecord>,
    npy_sha256: String,
}

#[derive(Clone, Debug)]
pub struct EmbeddingCache {
    root: Location,
}

impl EmbeddingCache {
    pub fn new(root: Location) -> Self {
        EmbeddingCache { root }
    }

    pub fn url(&self) -> &str {
        self.root.url()
    }

    fn entry(&self, key: &CacheKey, ext: &str) -> Location {
        self.root.join(&format!("{}/{}.{ext}", &key.0[..2], key.0))
    }

    /// The entry for `key`, or `None` (missing, torn or corrupt: all mean "embed again").
    /// Errors only when the store itself fails (unreachable, access denied).
    pub async fn get(&self, key: &CacheKey) -> Result<Option<ShardEmbeddings>> {
        let Some(meta) = self.entry(key, "json").get_opt().await? else { return Ok(None) };
        let Ok(meta) = serde_json::from_slice::<EntryMeta>(&meta) else { return Ok(None) };
        if meta.format != FORMAT {
            return Ok(None);
        }
        let npy_loc = self.entry(key, "npy");
        let Some(bytes) = npy_loc.get_opt().await? else { return Ok(None) };
        if hex::encode(Sha256::digest(&bytes)) != meta.npy_sha256 {
            return Ok(None);
        }
        let Ok(m) = npy::read_matrix_f32_bytes(npy_loc.url(), &bytes) else { return Ok(None) };
        if m.rows != meta.indices.len() || (m.rows > 0 && m.cols != meta.dim) || meta.ids.len() != m.rows || meta.labels.len() != m.rows {
            return Ok(None);
        }
        Ok(Some(ShardEmbeddings {
            start: meta.start,
            end: meta.end,
            dim: meta.dim,
            indices: meta.indices,
            rows: m.data,
            ids: meta.ids,
            labels: meta.labels,
            bad: meta.bad,
        }))
    }

    /// Stores an entry: the rows first, the JSON that makes it visible last.
    pub async fn put(&self, key: &CacheKey, e: &ShardEmbeddings) -> Result<()> {
        let npy_bytes = npy::encode_f32(&[e.indices.len(), e.dim], &e.rows)
            .map_err(|r| DataError::invalid(format!("cache entry {}", key.0), r))?;
        let meta = EntryMeta {
            format: FORMAT,
            start: e.start,
            end: e.end,
            dim: e.dim,
            indices: e.indices.clone(),
            ids: e.ids.clone(),
            labels: e.labels.clone(),
            bad: e.bad.clone(),
            npy_sha256: hex::encode(Sha256::digest(&npy_bytes)),
        };
        self.entry(key, "npy").put(Bytes::from(npy_bytes)).await?;
        let json = serde_json::to_vec(&meta).expect("plain struct");
        self.entry(key, "json").put(Bytes::from(json)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    #[tokio::test]
    async fn entries_round_trip_and_corrupt_ones_are_misses() {
        let d = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::new(Storage::default().locate(d.path().to_str().unwrap()).unwrap());
        let key = CacheKey::new("shard-fp", "model-digest", "spec v1");
        assert_ne!(key, CacheKey::new("shard-fp", "model-digest", "spec v2"));
        assert_ne!(key, CacheKey::new("shard-fpm", "odel-digest", "spec v1"));
        assert!(cache.get(&key).await.unwrap().is_none());
        let e = ShardEmbeddings {
            start: 10,
            end: 13,
            dim: 2,
            indices: vec![10, 12],
            rows: vec![1.0, 2.0, 3.0, 4.0],
            ids: vec!["a".into(), "c".into()],
            labels: vec![Some(1), None],
            bad: vec![BadRecord { index: 11, id: "b".into(), reason: "corrupt".into() }],
        };
        cache.put(&key, &e).await.unwrap();
        assert_eq!(cache.get(&key).await.unwrap().unwrap(), e);
        // Corrupt rows are a miss, not wrong rows.
        let npy_path = d.path().join(&key.as_str()[..2]).join(format!("{}.npy", key.as_str()));
        let mut b = std::fs::read(&npy_path).unwrap();
        *b.last_mut().unwrap() ^= 1;
        std::fs::write(&npy_path, b).unwrap();
        assert!(cache.get(&key).await.unwrap().is_none());
    }
}
