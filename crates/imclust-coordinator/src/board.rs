//! The task board: workers, leases, attempts and accepted results of the current round (one
//! stage of one redo and iteration over every shard). Pure bookkeeping with the clock passed
//! in, so every rule is unit-tested without a network:
//! - a shard is leased to one worker at a time; heartbeats renew its leases, an expired lease
//!   puts its shards back (one attempt spent), a worker's own shards go back to it;
//! - exactly one result per (round, shard) is accepted: a late or duplicate result is
//!   refused, and accepting a result revokes any other lease on the same shards;
//! - a shard that fails `max_attempts` times, or a non-retryable failure, fails the round
//!   with the shard, the worker and the last error.

use imclust_proto::v1::{self, Done, LeaseTaskResponse, Stage, Task, Wait, lease_task_response::Reply, report_result_request};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a round's results are keyed by (with the shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundKey {
    pub stage: Stage,
    pub redo: u32,
    pub iteration: u32,
}

impl std::fmt::Display for RoundKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.stage {
            Stage::Iterate => write!(f, "{} (redo {}, iteration {})", self.stage.name(), self.redo, self.iteration),
            s => write!(f, "{}", s.name()),
        }
    }
}

pub type Payload = report_result_request::Result;

/// An accepted result and the shards it covers.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub shards: Vec<u32>,
    pub worker: String,
    pub payload: Payload,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShardState {
    Pending,
    Leased(u64),
    Done,
}

#[derive(Clone, Debug)]
struct Lease {
    worker: String,
    shards: Vec<u32>,
    deadline: Instant,
}

struct Round {
    key: RoundKey,
    template: Task,
    /// Embedding: one shard per lease (balances the expensive stage); later stages: a
    /// worker's resident shards in one lease, combined.
    one_per_lease: bool,
    state: Vec<ShardState>,
    attempts: Vec<u32>,
    last_error: Vec<Option<String>>,
    leases: BTreeMap<u64, Lease>,
    /// Expired or revoked leases whose late result may still be the first for its shards.
    stale: BTreeMap<u64, Lease>,
    accepted: Vec<Accepted>,
    remaining: usize,
    failure: Option<String>,
}

#[derive(Clone, Debug)]
struct Worker {
    name: String,
    last_seen: Instant,
    left: bool,
}

/// Largest number of foreign shards one lease takes over.
const STEAL: usize = 8;
/// How long an idle worker is told to wait before asking again (the service long-polls).
pub const WAIT_MS: u32 = 200;

pub struct Board {
    ttl: Duration,
    max_attempts: u32,
    workers: BTreeMap<String, Worker>,
    owner: Vec<Option<String>>,
    round: Option<Round>,
    next_lease: u64,
    next_worker: u64,
    /// Distinguishes this coordinator's worker ids from those of an earlier incarnation.
    incarnation: String,
    finished: Option<Done>,
    /// Workers that have been told the job is over.
    told_done: std::collections::BTreeSet<String>,
}

/// Outcome of a report.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused(String),
}

impl Board {
    pub fn new(n_shards: usize, ttl: Duration, max_attempts: u32) -> Self {
        Board {
            ttl,
            max_attempts,
            workers: BTreeMap::new(),
            owner: vec![None; n_shards],
            round: None,
            next_lease: 1,
            next_worker: 1,
            incarnation: {
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                format!("{:06x}", (t.as_nanos() as u64 ^ u64::from(std::process::id())) & 0xff_ffff)
            },
            finished: None,
            told_done: Default::default(),
        }
    }

    /// How many distinct workers have been told the job is over.
    pub fn told_done(&self) -> usize {
        self.told_done.len()
    }

    /// Live workers that have not yet been told the job is over (the coordinator waits for
    /// them before it exits, so that workers exit 0 instead of finding it gone).
    pub fn awaiting_goodbye(&self, now: Instant) -> usize {
        self.workers.keys().filter(|w| self.alive(w, now) && !self.told_done.contains(*w)).count()
    }

    pub fn register(&mut self, name: &str, now: Instant) -> String {
        let id = format!("w{}-{}", self.next_worker, self.incarnation);
        self.next_worker += 1;
        let name = if name.is_empty() { id.clone() } else { name.to_string() };
        self.workers.insert(id.clone(), Worker { name, last_seen: now, left: false });
        id
    }

    pub fn workers_alive(&self, now: Instant) -> usize {
        self.workers.keys().filter(|w| self.alive(w, now)).count()
    }

    pub fn workers_seen(&self) -> usize {
        self.workers.len()
    }

    fn alive(&self, worker: &str, now: Instant) -> bool {
        self.workers.get(worker).is_some_and(|w| !w.left && now.duration_since(w.last_seen) <= self.ttl)
    }

    fn worker_name(&self, worker: &str) -> String {
        match self.workers.get(worker) {
            Some(w) if w.name != worker => format!("{worker} ({})", w.name),
            _ => worker.to_string(),
        }
    }

    pub fn is_known(&self, worker: &str) -> bool {
        self.workers.get(worker).is_some_and(|w| !w.left)
    }

    /// Spreads shard ownership evenly over the live workers: the first workers to arrive can
    /// embed most shards before the others register, and every later round would then wait
    /// on them. Moves one shard at a time (the highest of the most loaded worker, to the least
    /// loaded) until counts differ by at most one; a moved shard is reloaded by its new owner
    /// from the cache. Results do not depend on who holds what. Returns the shards moved.
    pub fn rebalance(&mut self, now: Instant) -> usize {
        let mut load: BTreeMap<String, Vec<usize>> =
            self.workers.keys().filter(|w| self.alive(w, now)).map(|w| (w.clone(), Vec::new())).collect();
        if load.is_empty() {
            return 0;
        }
        let mut orphans = Vec::new();
        for (s, o) in self.owner.iter().enumerate() {
            match o.as_ref().and_then(|o| load.get_mut(o)) {
                Some(list) => list.push(s),
                None => orphans.push(s),
            }
        }
        let mut moved = 0;
        loop {
            let min = load.iter().min_by_key(|(_, l)| l.len()).map(|(w, l)| (w.clone(), l.len())).expect("non-empty");
            let max = load.iter().max_by_key(|(_, l)| l.len()).map(|(w, l)| (w.clone(), l.len())).expect("non-empty");
            let s = if let Some(s) = orphans.pop() {
                s
            } else if max.1 > min.1 + 1 {
                load.get_mut(&max.0).expect("listed").pop().expect("more than one")
            } else {
                break;
            };
            load.get_mut(&min.0).expect("listed").push(s);
            self.owner[s] = Some(min.0);
            moved += 1;
        }
        moved
    }

    /// Starts a round over all shards; `template` is the task every lease copies.
    pub fn start_round(&mut self, key: RoundKey, template: Task, one_per_lease: bool) {
        let n = self.owner.len();
        self.round = Some(Round {
            key,
            template,
            one_per_lease,
            state: vec![ShardState::Pending; n],
            attempts: vec![0; n],
            last_error: vec![None; n],
            leases: BTreeMap::new(),
            stale: BTreeMap::new(),
            accepted: Vec::new(),
            remaining: n,
            failure: None,
        });
    }

    /// The round's results when every shard has one (sorted by first shard), or its failure.
    pub fn round_outcome(&mut self) -> Option<Result<Vec<Accepted>, String>> {
        let r = self.round.as_ref()?;
        if let Some(f) = &r.failure {
            let f = f.clone();
            self.round = None;
            return Some(Err(f));
        }
        if r.remaining > 0 {
            return None;
        }
        let mut r = self.round.take().expect("checked");
        r.accepted.sort_by_key(|a| a.shards[0]);
        Some(Ok(r.accepted))
    }

    /// (done, total) shards of the current round.
    pub fn progress(&self) -> Option<(RoundKey, usize, usize)> {
        self.round.as_ref().map(|r| (r.key, r.state.len() - r.remaining, r.state.len()))
    }

    pub fn finish(&mut self, failed: bool, message: String) {
        self.round = None;
        self.finished = Some(Done { failed, message });
    }

    pub fn finished(&self) -> Option<&Done> {
        self.finished.as_ref()
    }

    pub fn heartbeat(&mut self, worker: &str, leases: &[u64], now: Instant) -> v1::HeartbeatResponse {
        if !self.is_known(worker) {
            return v1::HeartbeatResponse { known: false, job_done: self.finished.is_some(), revoked: leases.to_vec() };
        }
        self.workers.get_mut(worker).expect("known").last_seen = now;
        let mut revoked = Vec::new();
        for id in leases {
            match self.round.as_mut().and_then(|r| r.leases.get_mut(id)) {
                Some(l) if l.worker == worker => l.deadline = now + self.ttl,
                _ => revoked.push(*id),
            }
        }
        v1::HeartbeatResponse { known: true, job_done: self.finished.is_some(), revoked }
    }

    pub fn lease(&mut self, worker: &str, now: Instant) -> LeaseTaskResponse {
        let reply = |r| LeaseTaskResponse { reply: Some(r) };
        if let Some(d) = &self.finished {
            self.told_done.insert(worker.to_string());
            return reply(Reply::Done(d.clone()));
        }
        if !self.is_known(worker) {
            return reply(Reply::Done(Done {
                failed: true,
                message: format!("worker {worker} is not registered with this coordinator: register again"),
            }));
        }
        self.workers.get_mut(worker).expect("known").last_seen = now;
        let wait = reply(Reply::Wait(Wait { retry_ms: WAIT_MS }));
        let Some(r) = self.round.as_ref() else { return wait };
        if r.failure.is_some() {
            return wait;
        }
        let pending = |s: usize| r.state[s] == ShardState::Pending;
        let mine: Vec<usize> = (0..r.state.len()).filter(|&s| pending(s) && self.owner[s].as_deref() == Some(worker)).collect();
        let free = || -> Vec<usize> {
            (0..r.state.len())
                .filter(|&s| pending(s) && self.owner[s].as_deref().is_none_or(|o| o != worker && !self.alive(o, now)))
                .collect()
        };
        let shards: Vec<usize> = if r.one_per_lease {
            mine.first().copied().or_else(|| free().first().copied()).into_iter().collect()
        } else if !mine.is_empty() {
            mine
        } else {
            free().into_iter().take(STEAL).collect()
        };
        if shards.is_empty() {
            return wait;
        }
        let id = self.next_lease;
        self.next_lease += 1;
        let r = self.round.as_mut().expect("checked");
        for &s in &shards {
            r.state[s] = ShardState::Leased(id);
        }
        let shards: Vec<u32> = shards.iter().map(|&s| s as u32).collect();
        r.leases.insert(id, Lease { worker: worker.to_string(), shards: shards.clone(), deadline: now + self.ttl });
        let mut task = r.template.clone();
        task.lease_id = id;
        task.shards = shards;
        task.lease_ms = self.ttl.as_millis() as u64;
        reply(Reply::Task(task))
    }

    pub fn report(&mut self, worker: &str, lease_id: u64, payload: Payload) -> Verdict {
        let Some(r) = self.round.as_mut() else {
            return Verdict::Refused("no round is running (the result is late)".into());
        };
        let lease = match r.leases.get(&lease_id).or_else(|| r.stale.get(&lease_id)) {
            Some(l) => l.clone(),
            None => return Verdict::Refused(format!("lease {lease_id} is not part of {}", r.key)),
        };
        if lease.worker != worker {
            return Verdict::Refused(format!("lease {lease_id} belongs to another worker"));
        }
        let expected = match &payload {
            Payload::Embed(_) => Stage::Embed,
            Payload::Sample(_) => Stage::Sample,
            Payload::Sums(_) => if r.key.stage == Stage::ZeroShot { Stage::ZeroShot } else { Stage::Iterate },
            Payload::Assign(_) => Stage::Assign,
        };
        if expected != r.key.stage {
            return Verdict::Refused(format!("a {} result for a {} task", expected.name(), r.key.stage.name()));
        }
        if let Some(&s) = lease.shards.iter().find(|&&s| r.state[s as usize] == ShardState::Done) {
            r.leases.remove(&lease_id);
            r.stale.remove(&lease_id);
            return Verdict::Refused(format!("shard {s} of {} already has a result (duplicate dropped)", r.key));
        }
        // Any other lease on these shards is revoked; its other shards go back to pending.
        let others: Vec<u64> = lease
            .shards
            .iter()
            .filter_map(|&s| match r.state[s as usize] {
                ShardState::Leased(l) if l != lease_id => Some(l),
                _ => None,
            })
            .collect();
        for other in others {
            if let Some(l) = r.leases.remove(&other) {
                for s in l.shards {
                    if r.state[s as usize] == ShardState::Leased(other) {
                        r.state[s as usize] = ShardState::Pending;
                    }
                }
            }
        }
        r.leases.remove(&lease_id);
        r.stale.remove(&lease_id);
        for &s in &lease.shards {
            r.state[s as usize] = ShardState::Done;
            self.owner[s as usize] = Some(worker.to_string());
        }
        r.remaining -= lease.shards.len();
        r.accepted.push(Accepted { shards: lease.shards, worker: worker.to_string(), payload });
        Verdict::Accepted
    }

    pub fn failure(&mut self, worker: &str, lease_id: u64, message: &str, retryable: bool) {
        let name = self.worker_name(worker);
        let Some(r) = self.round.as_mut() else { return };
        let Some(lease) = r.leases.remove(&lease_id).filter(|l| l.worker == worker) else { return };
        let why = format!("worker {name}: {message}");
        Self::put_back(r, &lease, lease_id, &why, true, self.max_attempts);
        if !retryable && r.failure.is_none() {
            r.failure = Some(format!("{} failed on shard {}: {why}", r.key, shard_list(&lease.shards)));
        }
    }

    /// A leaving worker hands its leases back (no attempt spent) and its shards lose their owner.
    pub fn leave(&mut self, worker: &str) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.left = true;
        }
        for o in self.owner.iter_mut().filter(|o| o.as_deref() == Some(worker)) {
            *o = None;
        }
        if let Some(r) = self.round.as_mut() {
            let ids: Vec<u64> = r.leases.iter().filter(|(_, l)| l.worker == worker).map(|(id, _)| *id).collect();
            for id in ids {
                let l = r.leases.remove(&id).expect("listed");
                Self::put_back(r, &l, id, "", false, self.max_attempts);
            }
        }
    }

    /// Expires leases past their deadline. Returns the expired (worker, shards) for logs.
    pub fn tick(&mut self, now: Instant) -> Vec<(String, Vec<u32>)> {
        let mut out = Vec::new();
        let names: BTreeMap<String, String> = self.workers.keys().map(|w| (w.clone(), self.worker_name(w))).collect();
        let Some(r) = self.round.as_mut() else { return out };
        let expired: Vec<u64> = r.leases.iter().filter(|(_, l)| l.deadline < now).map(|(id, _)| *id).collect();
        for id in expired {
            let l = r.leases.remove(&id).expect("listed");
            let name = names.get(&l.worker).cloned().unwrap_or_else(|| l.worker.clone());
            let why = format!("lease expired: worker {name} stopped sending heartbeats for {:?}", self.ttl);
            Self::put_back(r, &l, id, &why, true, self.max_attempts);
            out.push((l.worker.clone(), l.shards.clone()));
            r.stale.insert(id, l);
        }
        out
    }

    fn put_back(r: &mut Round, l: &Lease, id: u64, why: &str, counts: bool, max_attempts: u32) {
        for &s in &l.shards {
            let s = s as usize;
            if r.state[s] != ShardState::Leased(id) {
                continue;
            }
            r.state[s] = ShardState::Pending;
            if counts {
                r.attempts[s] += 1;
                r.last_error[s] = Some(why.to_string());
                if r.attempts[s] >= max_attempts && r.failure.is_none() {
                    r.failure = Some(format!(
                        "{} failed on shard {s} after {} attempt(s); last error: {why}",
                        r.key, r.attempts[s]
                    ));
                }
            }
        }
    }
}

fn shard_list(shards: &[u32]) -> String {
    shards.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use imclust_proto::v1::{EmbedResult, Sums};

    const TTL: Duration = Duration::from_secs(10);

    fn key(stage: Stage) -> RoundKey {
        RoundKey { stage, redo: 0, iteration: 0 }
    }

    fn task_of(r: LeaseTaskResponse) -> Option<Task> {
        match r.reply {
            Some(Reply::Task(t)) => Some(t),
            _ => None,
        }
    }

    fn sums() -> Payload {
        Payload::Sums(Sums::default())
    }

    #[test]
    fn board_embed_leases_one_shard_each_then_iterate_goes_to_owners() {
        let t0 = Instant::now();
        let mut b = Board::new(4, TTL, 3);
        let (w1, w2) = (b.register("a", t0), b.register("b", t0));
        b.start_round(key(Stage::Embed), Task::default(), true);
        let mut got = Vec::new();
        for w in [&w1, &w2, &w1, &w2] {
            let t = task_of(b.lease(w, t0)).unwrap();
            assert_eq!(t.shards.len(), 1);
            got.push((w.clone(), t));
        }
        assert!(task_of(b.lease(&w1, t0)).is_none(), "nothing left to lease");
        for (w, t) in &got {
            assert_eq!(b.report(w, t.lease_id, Payload::Embed(EmbedResult::default())), Verdict::Accepted);
        }
        let done = b.round_outcome().unwrap().unwrap();
        assert_eq!(done.iter().map(|a| a.shards[0]).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        // Iterate: each worker gets exactly the shards it embedded, in one lease.
        b.start_round(key(Stage::Iterate), Task::default(), false);
        assert_eq!(task_of(b.lease(&w1, t0)).unwrap().shards, vec![0, 2]);
        assert_eq!(task_of(b.lease(&w2, t0)).unwrap().shards, vec![1, 3]);
    }

    #[test]
    fn board_expired_lease_moves_to_a_live_worker_and_late_result_is_dropped() {
        let t0 = Instant::now();
        let mut b = Board::new(2, TTL, 3);
        let (w1, w2) = (b.register("", t0), b.register("", t0));
        b.owner = vec![Some(w1.clone()), Some(w2.clone())];
        b.start_round(key(Stage::Iterate), Task::default(), false);
        let l1 = task_of(b.lease(&w1, t0)).unwrap();
        let l2 = task_of(b.lease(&w2, t0)).unwrap();
        assert_eq!(b.report(&w2, l2.lease_id, sums()), Verdict::Accepted);
        // w2 keeps heartbeating; w1 goes silent. w2 cannot take w1's shard while w1 is alive.
        let t1 = t0 + Duration::from_secs(6);
        b.heartbeat(&w2, &[], t1);
        assert!(task_of(b.lease(&w2, t1)).is_none());
        let t2 = t0 + Duration::from_secs(11);
        b.heartbeat(&w2, &[], t2);
        assert_eq!(b.tick(t2), vec![(w1.clone(), vec![0])]);
        let l3 = task_of(b.lease(&w2, t2)).unwrap();
        assert_eq!(l3.shards, vec![0]);
        // w1's late result is the first for shard 0: accepted, and w2's lease is revoked.
        assert_eq!(b.report(&w1, l1.lease_id, sums()), Verdict::Accepted);
        match b.report(&w2, l3.lease_id, sums()) {
            Verdict::Refused(why) => assert!(why.contains("already has a result") || why.contains("not part"), "{why}"),
            v => panic!("{v:?}"),
        }
        let done = b.round_outcome().unwrap().unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].worker, w1);
        // A heartbeat for a revoked lease tells the worker to drop it.
        b.start_round(key(Stage::Iterate), Task::default(), false);
        assert_eq!(b.heartbeat(&w2, &[l3.lease_id], t2).revoked, vec![l3.lease_id]);
    }

    #[test]
    fn board_rebalance_evens_out_ownership() {
        let t0 = Instant::now();
        let mut b = Board::new(11, TTL, 3);
        let (w1, w2, w3) = (b.register("", t0), b.register("", t0), b.register("", t0));
        b.owner = vec![Some(w1.clone()); 11];
        b.owner[0] = None;
        assert_eq!(b.rebalance(t0), 7);
        let count = |w: &str| b.owner.iter().filter(|o| o.as_deref() == Some(w)).count();
        let mut counts = vec![count(&w1), count(&w2), count(&w3)];
        counts.sort();
        assert_eq!(counts, vec![3, 4, 4]);
        assert_eq!(b.rebalance(t0), 0, "already even");
        // Iterate leases follow the new owners.
        b.start_round(key(Stage::Iterate), Task::default(), false);
        let got: usize = [&w1, &w2, &w3].iter().map(|w| task_of(b.lease(w, t0)).unwrap().shards.len()).sum();
        assert_eq!(got, 11);
    }

    #[test]
    fn board_duplicate_results_are_refused() {
        let t0 = Instant::now();
        let mut b = Board::new(1, TTL, 3);
        let w = b.register("", t0);
        b.start_round(key(Stage::Iterate), Task::default(), false);
        let l = task_of(b.lease(&w, t0)).unwrap();
        assert_eq!(b.report(&w, l.lease_id, sums()), Verdict::Accepted);
        assert!(matches!(b.report(&w, l.lease_id, sums()), Verdict::Refused(_)));
        // Wrong kind of result for the stage.
        b.start_round(key(Stage::Iterate), Task::default(), false);
        let l = task_of(b.lease(&w, t0)).unwrap();
        assert!(matches!(b.report(&w, l.lease_id, Payload::Embed(EmbedResult::default())), Verdict::Refused(_)));
        assert_eq!(b.round_outcome().map(|r| r.is_ok()), None, "round still open");
    }

    #[test]
    fn board_attempts_run_out_with_the_shard_and_last_error_named() {
        let t0 = Instant::now();
        let mut b = Board::new(3, TTL, 2);
        let w = b.register("pod-1", t0);
        b.start_round(key(Stage::Embed), Task::default(), true);
        let l = task_of(b.lease(&w, t0)).unwrap();
        b.failure(&w, l.lease_id, "connection reset", true);
        assert!(b.round_outcome().is_none());
        let l = task_of(b.lease(&w, t0)).unwrap();
        assert_eq!(l.shards, vec![0], "the failed shard is retried first");
        b.failure(&w, l.lease_id, "connection reset again", true);
        let e = b.round_outcome().unwrap().unwrap_err();
        assert!(e.contains("shard 0") && e.contains("2 attempt") && e.contains("connection reset again") && e.contains("pod-1"), "{e}");
    }

    #[test]
    fn board_non_retryable_failure_fails_at_once_and_leave_hands_back_for_free() {
        let t0 = Instant::now();
        let mut b = Board::new(2, TTL, 5);
        let (w1, w2) = (b.register("", t0), b.register("", t0));
        b.start_round(key(Stage::Embed), Task::default(), true);
        let l1 = task_of(b.lease(&w1, t0)).unwrap();
        b.leave(&w1);
        let l2 = task_of(b.lease(&w2, t0)).unwrap();
        assert_eq!(l2.shards, l1.shards, "handed back without waiting for the lease to expire");
        assert!(!b.is_known(&w1));
        b.failure(&w2, l2.lease_id, "record 7 (7.png): not a PNG", false);
        let e = b.round_outcome().unwrap().unwrap_err();
        assert!(e.contains("embed failed on shard 0") && e.contains("7.png"), "{e}");
        b.finish(true, e.clone());
        match b.lease(&w2, t0).reply {
            Some(Reply::Done(d)) => assert!(d.failed && d.message == e),
            r => panic!("{r:?}"),
        }
    }
}
