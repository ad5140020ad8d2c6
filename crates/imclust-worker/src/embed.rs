//! Embedding a shard: cache lookups per model, one read of the shard's records for the
//! models that missed, decode and preprocess in parallel while the model runs, then the
//! cache is filled. Bad records (unreadable, undecodable, label out of range) fail the
//! shard or are skipped and listed, as the policy says.

use crate::error::{Result, WorkerError};
use imclust_data::bad::{BadRecord, OnBadRecord};
use imclust_data::cache::{CacheKey, EmbeddingCache, ShardEmbeddings};
use imclust_data::dataset::{Dataset, Payload, Record as DataRecord};
use imclust_data::shard::Shard;
use imclust_embed::bundle::Bundle;
use imclust_embed::engine::ImageEncoder;
use imclust_embed::preprocess::{self, PREPROCESS_VERSION, Record};
use imclust_embed::runtime::RuntimeConfig;
use imclust_embed::EmbedError;
use tokio::runtime::Handle;

/// A model ready to embed: its bundle, session and cache identity.
pub struct Model {
    pub bundle: Bundle,
    pub encoder: ImageEncoder,
    digest: String,
    preprocessing: String,
    batch: usize,
}

impl Model {
    pub fn new(bundle: Bundle, runtime: &RuntimeConfig, batch: usize) -> Result<Self> {
        let encoder = ImageEncoder::new(&bundle, runtime)?;
        let digest = bundle.digest()?;
        let preprocessing = format!("{:?} preprocess-v{PREPROCESS_VERSION}", bundle.image_spec());
        Ok(Model { bundle, encoder, digest, preprocessing, batch: batch.max(1) })
    }

    pub fn name(&self) -> &str {
        self.bundle.name()
    }

    pub fn dim(&self) -> usize {
        self.encoder.dim()
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The cache key of this model's embeddings of `shard`.
    pub fn cache_key(&self, shard: &Shard) -> CacheKey {
        CacheKey::new(&shard.fingerprint, &self.digest, &self.preprocessing)
    }
}

/// One model's embeddings of a shard, and whether they came from the cache.
pub struct Embedded {
    pub rows: ShardEmbeddings,
    pub cached: bool,
}

/// Embeds `shard` with every model (in order). Must not be called from inside an async
/// task (it blocks on `handle`): call it from a plain or `spawn_blocking` thread.
pub fn embed_shard(
    handle: &Handle,
    dataset: &dyn Dataset,
    shard: &Shard,
    models: &mut [Model],
    cache: Option<&EmbeddingCache>,
    policy: OnBadRecord,
) -> Result<Vec<Embedded>> {
    let mut out: Vec<Option<Embedded>> = Vec::with_capacity(models.len());
    for m in models.iter() {
        let hit = match cache {
            Some(c) => handle.block_on(c.get(&m.cache_key(shard)))?,
            None => None,
        };
        out.push(hit.map(|rows| Embedded { rows, cached: true }));
    }
    if out.iter().any(Option::is_none) {
        let records = handle.block_on(dataset.read(shard.range()))?;
        if records.len() as u64 != shard.len() {
            return Err(WorkerError::Input(format!(
                "{}: shard {} ({}..{}) read back {} records",
                dataset.spec(),
                shard.id,
                shard.start,
                shard.end,
                records.len()
            )));
        }
        for (slot, m) in out.iter_mut().zip(models.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            let rows = run_model(m, &records, shard, dataset, policy)?;
            if let Some(c) = cache {
                handle.block_on(c.put(&m.cache_key(shard), &rows))?;
            }
            *slot = Some(Embedded { rows, cached: false });
        }
    }
    let out: Vec<Embedded> = out.into_iter().map(|e| e.expect("filled")).collect();
    if policy == OnBadRecord::Fail {
        // A cache entry made by a run that skipped holds bad records this run must fail on.
        if let Some(b) = out.iter().flat_map(|e| e.rows.bad.iter()).min_by_key(|b| b.index) {
            return Err(b.clone().into_error(&dataset.spec().to_string()).into());
        }
    }
    Ok(out)
}

/// A dataset record as an input of the preprocessing pipeline; embeddings are refused (they
/// need no model).
pub fn to_embed_record(r: &DataRecord) -> Result<Record> {
    Ok(match &r.payload {
        Payload::Pixels { width, height, channels, data } => {
            Record::Pixels { name: r.id.clone(), width: *width, height: *height, channels: *channels, data: data.clone() }
        }
        Payload::Encoded(bytes) => Record::Encoded { name: r.id.clone(), bytes: bytes.to_vec() },
        Payload::Bad(why) => Record::Failed(EmbedError::Image { name: r.id.clone(), reason: why.clone() }),
        Payload::Embedding(_) => {
            return Err(WorkerError::Input(format!(
                "{}: the records are embeddings already; cluster them (imclust cluster) instead of embedding them",
                r.id
            )));
        }
    })
}

fn reason(e: &EmbedError) -> String {
    match e {
        EmbedError::Image { reason, .. } => reason.clone(),
        e => e.to_string(),
    }
}

fn run_model(m: &mut Model, records: &[DataRecord], shard: &Shard, dataset: &dyn Dataset, policy: OnBadRecord) -> Result<ShardEmbeddings> {
    let inputs: Vec<Record> = records.iter().map(to_embed_record).collect::<Result<_>>()?;
    let dim = m.dim();
    let mut rows = vec![0f32; records.len() * dim];
    let mut good = vec![false; records.len()];
    let mut bad = Vec::new();
    let mut first_bad: Option<BadRecord> = None;
    let spec = m.bundle.image_spec();
    let encoder = &mut m.encoder;
    let result = preprocess::pipeline(inputs, spec, m.batch, 2, |b| {
        for (i, e) in &b.errors {
            let r = &records[*i];
            let rec = BadRecord { index: r.index, id: r.id.clone(), reason: reason(e) };
            if policy == OnBadRecord::Fail {
                first_bad = Some(rec);
                return Err(EmbedError::Image { name: r.id.clone(), reason: "bad record".into() });
            }
            bad.push(rec);
        }
        let out = encoder.run(b.pixels.view())?;
        for (j, &i) in b.indices.iter().enumerate() {
            rows[i * dim..(i + 1) * dim].copy_from_slice(out.row(j).as_slice().expect("standard layout"));
            good[i] = true;
        }
        Ok(())
    });
    if let Some(b) = first_bad {
        return Err(b.into_error(&dataset.spec().to_string()).into());
    }
    result?;
    let keep: Vec<usize> = (0..records.len()).filter(|&i| good[i]).collect();
    let mut packed = Vec::with_capacity(keep.len() * dim);
    for &i in &keep {
        packed.extend_from_slice(&rows[i * dim..(i + 1) * dim]);
    }
    Ok(ShardEmbeddings {
        start: shard.start,
        end: shard.end,
        dim,
        indices: keep.iter().map(|&i| records[i].index).collect(),
        rows: packed,
        ids: keep.iter().map(|&i| records[i].id.clone()).collect(),
        labels: keep.iter().map(|&i| records[i].label).collect(),
        bad,
    })
}

/// Several models' embeddings of one shard on common rows: the records every model
/// embedded. A record one model could not embed is bad for all (listed once, with the
/// first model's reason).
pub struct Aligned {
    pub indices: Vec<u64>,
    pub ids: Vec<String>,
    pub labels: Vec<Option<i64>>,
    /// Per model, `indices.len() x dim` rows.
    pub rows: Vec<Vec<f32>>,
    pub bad: Vec<BadRecord>,
}

pub fn align(parts: Vec<ShardEmbeddings>) -> Aligned {
    let mut bad: Vec<BadRecord> = Vec::new();
    for p in &parts {
        for b in &p.bad {
            if !bad.iter().any(|x| x.index == b.index) {
                bad.push(b.clone());
            }
        }
    }
    bad.sort_by_key(|b| b.index);
    let first = parts.first().expect("at least one model");
    let keep: Vec<u64> = first.indices.iter().copied().filter(|i| bad.binary_search_by_key(i, |b| b.index).is_err()).collect();
    let select = |p: &ShardEmbeddings| -> Vec<f32> {
        let mut out = Vec::with_capacity(keep.len() * p.dim);
        let mut j = 0;
        for &i in &keep {
            while p.indices[j] < i {
                j += 1;
            }
            out.extend_from_slice(&p.rows[j * p.dim..(j + 1) * p.dim]);
        }
        out
    };
    let pos = |i: u64| first.indices.binary_search(&i).expect("kept from first");
    Aligned {
        ids: keep.iter().map(|&i| first.ids[pos(i)].clone()).collect(),
        labels: keep.iter().map(|&i| first.labels[pos(i)]).collect(),
        rows: parts.iter().map(select).collect(),
        indices: keep,
        bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(indices: &[u64], dim: usize, bad: &[u64]) -> ShardEmbeddings {
        ShardEmbeddings {
            start: 0,
            end: 5,
            dim,
            indices: indices.to_vec(),
            rows: indices.iter().flat_map(|&i| vec![i as f32; dim]).collect(),
            ids: indices.iter().map(|i| format!("r{i}")).collect(),
            labels: indices.iter().map(|&i| Some(i as i64 % 2)).collect(),
            bad: bad.iter().map(|&i| BadRecord { index: i, id: format!("r{i}"), reason: "corrupt".into() }).collect(),
        }
    }

    #[test]
    fn alignment_keeps_rows_every_model_embedded() {
        let a = align(vec![part(&[0, 1, 3, 4], 2, &[2]), part(&[0, 2, 3, 4], 3, &[1])]);
        assert_eq!(a.indices, vec![0, 3, 4]);
        assert_eq!(a.bad.iter().map(|b| b.index).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(a.rows[0], vec![0.0, 0.0, 3.0, 3.0, 4.0, 4.0]);
        assert_eq!(a.rows[1], vec![0.0, 0.0, 0.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0]);
        assert_eq!(a.ids, vec!["r0", "r3", "r4"]);
        assert_eq!(a.labels, vec![Some(0), Some(1), Some(0)]);
    }
}
