//! Per-version inference statistics in the shape of Triton's statistics extension
//! (`GET /v2/models/{m}/stats`, gRPC `ModelStatistics`), which perf_analyzer reads to show the
//! server-side queue and compute breakdown. Lock-free counters on the hot path; only the
//! per-batch-size table takes a lock, once per batch.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and a cumulative duration.
#[derive(Debug, Default)]
pub struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

impl DurationStat {
    pub fn add(&self, count: u64, d: Duration) {
        self.count.fetch_add(count, Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    pub fn get(&self) -> StatValue {
        StatValue {
            count: self.count.load(Relaxed),
            ns: self.ns.load(Relaxed),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatValue {
    pub count: u64,
    pub ns: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStat {
    pub compute_input: StatValue,
    pub compute_infer: StatValue,
    pub compute_output: StatValue,
}

#[derive(Debug, Default)]
pub struct ModelStats {
    pub success: DurationStat,
    pub fail: DurationStat,
    pub queue: DurationStat,
    pub compute_input: DurationStat,
    pub compute_infer: DurationStat,
    pub compute_output: DurationStat,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
    batches: Mutex<BTreeMap<u64, BatchStat>>,
}

/// A consistent-enough copy of [`ModelStats`] for the transports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub last_inference_ms: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub success: StatValue,
    pub fail: StatValue,
    pub queue: StatValue,
    pub compute_input: StatValue,
    pub compute_infer: StatValue,
    pub compute_output: StatValue,
    pub batches: Vec<(u64, BatchStat)>,
}

impl ModelStats {
    /// Records one executed batch of `rows` inferences.
    pub fn record_execution(&self, rows: u64, input: Duration, infer: Duration, output: Duration) {
        self.inference_count.fetch_add(rows, Relaxed);
        self.execution_count.fetch_add(1, Relaxed);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_inference_ms.store(now_ms, Relaxed);
        let add = |s: &mut StatValue, d: Duration| {
            s.count += 1;
            s.ns += d.as_nanos() as u64;
        };
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let b = batches.entry(rows).or_default();
        add(&mut b.compute_input, input);
        add(&mut b.compute_infer, infer);
        add(&mut b.compute_output, output);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        StatsSnapshot {
            last_inference_ms: self.last_inference_ms.load(Relaxed),
            inference_count: self.inference_count.load(Relaxed),
            execution_count: self.execution_count.load(Relaxed),
            success: self.success.get(),
            fail: self.fail.get(),
            queue: self.queue.get(),
            compute_input: self.compute_input.get(),
            compute_infer: self.compute_infer.get(),
            compute_output: self.compute_output.get(),
            batches: batches.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }
}
