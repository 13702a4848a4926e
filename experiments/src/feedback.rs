//! The request log that feedback joins with: request id → which experiment and arm served
//! it. Bounded in entries and in age; what it evicts is counted, so an operator can see
//! feedback arriving too late or from more requests than it keeps.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Independent shards, so concurrent requests rarely wait on one lock.
const SHARDS: usize = 16;

#[derive(Debug, Clone)]
pub struct Served {
    pub experiment: Arc<str>,
    pub arm: usize,
    pub at: Instant,
}

/// Why an entry left the log without feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    Capacity,
    Age,
}

pub struct RequestLog {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    ttl: Duration,
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, Served>,
    /// Insertion order, for eviction; ids whose feedback arrived are skipped when popped.
    order: VecDeque<(String, Instant)>,
}

impl RequestLog {
    /// Keeps at most `capacity` requests (rounded up to a multiple of the shard count), none
    /// older than `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> RequestLog {
        RequestLog {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl,
        }
    }

    fn shard(&self, id: &str) -> &Mutex<Shard> {
        // FNV-1a: cheap and good enough to spread ids over 16 shards.
        let h = id.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        &self.shards[h as usize % SHARDS]
    }

    /// Records that `id` was served; calls `evicted` for each entry pushed out.
    pub fn insert(&self, id: String, served: Served, mut evicted: impl FnMut(Eviction)) {
        let now = served.at;
        let mut s = self.shard(&id).lock().unwrap_or_else(|p| p.into_inner());
        while let Some((old, at)) = s.order.front() {
            let live = s.map.get(old).is_some_and(|e| e.at == *at);
            let reason = if now.duration_since(*at) > self.ttl {
                Eviction::Age
            } else if s.map.len() >= self.per_shard {
                Eviction::Capacity
            } else if !live {
                // Already answered: just drop the stale order entry.
                s.order.pop_front();
                continue;
            } else {
                break;
            };
            let (old, _) = s.order.pop_front().expect("front exists");
            if live {
                s.map.remove(&old);
                evicted(reason);
            }
        }
        s.order.push_back((id.clone(), now));
        if s.map.insert(id, served).is_some() {
            // A client reused an id: the newest request wins; the older order entry goes stale.
        }
    }

    /// Takes the entry for `id` (feedback is counted once per request). `None` when unknown
    /// or older than the log keeps.
    pub fn take(&self, id: &str) -> Option<Served> {
        self.take_if(id, |_| true)
    }

    /// [`take`](Self::take) when `accept` accepts the entry; otherwise it stays and the
    /// answer is `None`, as for an unknown id.
    pub fn take_if(&self, id: &str, accept: impl FnOnce(&Served) -> bool) -> Option<Served> {
        let mut s = self.shard(id).lock().unwrap_or_else(|p| p.into_inner());
        if !accept(s.map.get(id)?) {
            return None;
        }
        let e = s.map.remove(id)?;
        (e.at.elapsed() <= self.ttl).then_some(e)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(at: Instant) -> Served {
        Served {
            experiment: Arc::from("e"),
            arm: 1,
            at,
        }
    }

    #[test]
    fn bounded_by_entries_and_counts_evictions() {
        let log = RequestLog::new(32, Duration::from_secs(60));
        let mut evicted = 0;
        let now = Instant::now();
        for i in 0..1000 {
            log.insert(format!("r{i}"), served(now), |r| {
                assert_eq!(r, Eviction::Capacity);
                evicted += 1;
            });
        }
        assert_eq!(log.len(), 32);
        assert_eq!(evicted, 1000 - 32);
        assert!(log.take("r999").is_some());
        assert!(log.take("r999").is_none(), "feedback is taken once");
        assert!(log.take("r0").is_none());
    }

    #[test]
    fn an_entry_refused_by_take_if_stays() {
        let log = RequestLog::new(1000, Duration::from_secs(60));
        log.insert("r".into(), served(Instant::now()), |_| {});
        assert!(log.take_if("r", |_| false).is_none());
        assert_eq!(log.len(), 1);
        assert!(log.take_if("r", |s| s.arm == 1).is_some());
        assert!(log.take("r").is_none());
    }

    #[test]
    fn bounded_by_age() {
        let log = RequestLog::new(1000, Duration::from_millis(50));
        let old = Instant::now() - Duration::from_secs(1);
        log.insert("old".into(), served(old), |_| {});
        assert!(log.take("old").is_none(), "too old to join");
        log.insert("old2".into(), served(old), |_| {});
        let mut reasons = Vec::new();
        // Same shard is not guaranteed; insert enough ids to hit it.
        for i in 0..64 {
            log.insert(format!("new{i}"), served(Instant::now()), |r| {
                reasons.push(r)
            });
        }
        assert_eq!(reasons, [Eviction::Age]);
    }
}
