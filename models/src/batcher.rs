//! The dynamic batcher: one bounded queue per loaded model version, drained by one worker
//! thread per model instance, and a short cut past the queue for a request that would run
//! alone at once anyway.
//!
//! A request enters with [`Batcher::submit`], which never waits: when the queue already holds
//! `max_queue_size` requests it fails at once with [`Error::QueueFull`] (429 /
//! `RESOURCE_EXHAUSTED`). Workers take the oldest request of the highest priority, add every
//! queued request whose non-batch dimensions match while the batch stays within
//! `max_batch_size` rows, and run as soon as the batch is full or the oldest request has waited
//! `max_queue_delay` (Triton's rule: with the default delay of 0, whatever is queued runs now,
//! so batches grow with load by themselves). Requests whose queue timeout passed, and
//! requests whose client has gone (the response receiver was dropped), are answered or dropped
//! before they run.
//!
//! The queue is a mutex-guarded set of FIFOs with a condition variable rather than a channel,
//! because workers need to look past the head (priorities, shape compatibility, deadlines)
//! and several instances must share one queue. Queued work runs on these dedicated threads,
//! never on the async runtime; the response travels back on a `tokio::sync::oneshot`.
//!
//! **Caller runs.** Handing a request to a worker thread and being woken back costs two
//! cross-thread wake-ups (~50 µs on a small VM, more than a small model's whole run), and buys
//! nothing when the queue is empty and an instance idle: the worker would take the request
//! alone and run it at once. [`Batcher::call`] then runs it on the caller's own thread instead,
//! with the same accounting as a queued batch. A model whose recent inline runs were mostly
//! short (under [`SHORT_RUN`], tokio's own budget between two awaits) runs right on the async
//! worker; a longer one runs inside `tokio::task::block_in_place`, which first hands the
//! worker's other tasks to another thread — itself a wake-up and a thread migration, so it is
//! only worth paying when the run would otherwise stall those tasks. Requests that arrive
//! while a caller runs inline find no idle instance and queue; when that run ends, the caller
//! runs them as one batch before it gives the instance back (the leader of a group commit),
//! so they are batched without waking a worker thread either, and a worker takes over only
//! what queues after that. Instances live in one pool that workers and such callers share. A
//! model with a `max_queue_delay` waits for batch-mates by design and never takes the short
//! cut.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::metrics::{FailureReason, VersionMetrics};
use crate::model::Model;
use crate::stats::ModelStats;
use crate::tensor::Tensor;

/// The run time under which [`Batcher::call`] runs a model directly on an async worker
/// thread, when most of its recent inline runs stayed under it; other models go through
/// `block_in_place`. Tokio asks tasks to reach an await every 10–100 µs; a model that answers
/// within this keeps its neighbours' latency within that budget. A median rather than a mean
/// decides, because on a loaded machine a run's wall time now and then includes its thread
/// being preempted, which says nothing about the model.
pub const SHORT_RUN: Duration = Duration::from_micros(50);

/// [`Shared::long_runs`]'s unit: a share of 1.
const ALL_RUNS: u32 = 1 << 16;

/// How a model version's queue behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSettings {
    /// Rows per execution; 0 runs each request alone (models without a batch dimension).
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    pub max_queue_size: usize,
    /// Queue timeout for requests that set none.
    pub default_timeout: Option<Duration>,
    /// Priorities run 1 (first) ..= `priority_levels`.
    pub priority_levels: u32,
    pub default_priority: u32,
    /// A second budget besides rows, in units of [`Job::cost`] (e.g. tokens for text
    /// models): a batch stops growing before it would exceed it.
    pub max_batch_cost: Option<usize>,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_batch_size: 0,
            max_queue_delay: Duration::ZERO,
            max_queue_size: 1024,
            default_timeout: None,
            priority_levels: 1,
            default_priority: 1,
            max_batch_cost: None,
        }
    }
}

/// One inference request, its inputs already checked against the signature.
#[derive(Debug)]
pub struct Job {
    /// Inputs in signature order.
    pub inputs: Vec<Tensor>,
    /// Rows along the batch dimension (1 for models that do not batch).
    pub rows: usize,
    /// 1 = highest; `None` = the model's default.
    pub priority: Option<u32>,
    /// Longest time to wait in the queue; `None` = the model's default.
    pub timeout: Option<Duration>,
    /// What the job spends of [`BatchSettings::max_batch_cost`] (e.g. its tokens).
    pub cost: usize,
}

/// Where the time of one request went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    pub queue: Duration,
    pub compute_input: Duration,
    pub compute_infer: Duration,
    pub compute_output: Duration,
}

/// The result of one request: outputs in signature order.
#[derive(Debug)]
pub struct JobOutput {
    pub outputs: Vec<Tensor>,
    pub timing: Timing,
    /// Rows of the batch this request ran in.
    pub batch_rows: usize,
}

/// The receiving end of a submitted job: a future of its result.
///
/// Dropping it before the result arrives (the client went away) wakes the workers, which
/// drop the request from the queue instead of running it.
pub struct JobReceiver {
    /// `None` once the result was taken or the receiver given up.
    rx: Option<oneshot::Receiver<Result<JobOutput>>>,
    shared: Arc<Shared>,
    done: bool,
}

impl Future for JobReceiver {
    type Output = Result<JobOutput>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let rx = this
            .rx
            .as_mut()
            .expect("JobReceiver polled after completion");
        let out = ready!(Pin::new(rx).poll(cx));
        this.done = true;
        Poll::Ready(out.unwrap_or_else(|_| {
            Err(Error::Execution {
                model: this.shared.model.clone(),
                message: "the model's worker stopped before answering".into(),
            })
        }))
    }
}

impl std::fmt::Debug for JobReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobReceiver")
            .field("model", &self.shared.model)
            .finish_non_exhaustive()
    }
}

impl JobReceiver {
    /// Waits for the result on a thread outside any async runtime.
    pub fn wait(mut self) -> Result<JobOutput> {
        let rx = self.rx.take().expect("a JobReceiver is waited on once");
        self.done = true;
        rx.blocking_recv().unwrap_or_else(|_| {
            Err(Error::Execution {
                model: self.shared.model.clone(),
                message: "the model's worker stopped before answering".into(),
            })
        })
    }
}

impl Drop for JobReceiver {
    fn drop(&mut self) {
        if !self.done {
            // Close the channel first, so the woken worker sees the request abandoned, then
            // pass through the queue's lock before notifying: a worker between its check and
            // its wait holds that lock, so it cannot miss the wake-up.
            drop(self.rx.take());
            drop(self.shared.lock());
            self.shared.wake.notify_all();
        }
    }
}

struct Pending {
    job: Job,
    enqueued: Instant,
    deadline: Option<Instant>,
    reply: oneshot::Sender<Result<JobOutput>>,
}

struct State {
    /// One FIFO per priority level, index 0 = priority 1.
    queues: Vec<VecDeque<Pending>>,
    len: usize,
    closing: bool,
    /// Model instances not running anything: taken by a worker with its batch, or by a
    /// caller running its request inline, and given back after.
    idle: Vec<Box<dyn Model>>,
}

/// What [`Batcher::admit`] did with a job.
enum Admitted {
    Queued(JobReceiver),
    /// The queue was empty and this instance idle: the caller runs the job, whose answer
    /// arrives on the receiver.
    Claimed(
        Pending,
        oneshot::Receiver<Result<JobOutput>>,
        Box<dyn Model>,
    ),
}

struct Shared {
    model: String,
    version: String,
    settings: BatchSettings,
    state: Mutex<State>,
    wake: Condvar,
    metrics: VersionMetrics,
    stats: Arc<ModelStats>,
    /// Share of recent inline runs longer than [`SHORT_RUN`], as a moving average (1/8
    /// weight for the newest) in units of 1/65536; starts at "all of them" until runs are
    /// measured.
    long_runs: AtomicU32,
}

/// The queue of one model version and its worker threads. Dropping it stops intake; the
/// workers finish what is queued, then exit and free their model instances.
pub struct Batcher {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Batcher {
    /// Starts one worker thread per model instance.
    pub fn start(
        model: &str,
        version: &str,
        instances: Vec<Box<dyn Model>>,
        settings: BatchSettings,
        metrics: VersionMetrics,
        stats: Arc<ModelStats>,
    ) -> Result<Batcher> {
        let levels = settings.priority_levels.max(1) as usize;
        let shared = Arc::new(Shared {
            model: model.to_owned(),
            version: version.to_owned(),
            settings,
            state: Mutex::new(State {
                queues: (0..levels).map(|_| VecDeque::new()).collect(),
                len: 0,
                closing: false,
                idle: instances,
            }),
            wake: Condvar::new(),
            metrics,
            stats,
            long_runs: AtomicU32::new(ALL_RUNS),
        });
        let n = shared.lock().idle.len();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("batch-{model}-{version}-{i}"))
                .spawn(move || worker(&shared))
                .map_err(|e| Error::Load {
                    model: model.to_owned(),
                    message: format!("cannot start a worker thread: {e}"),
                })?;
            workers.push(handle);
        }
        Ok(Batcher { shared, workers })
    }

    pub fn settings(&self) -> &BatchSettings {
        &self.shared.settings
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.shared.lock().len
    }

    /// Queues a job. Never waits: a full queue or a closing batcher is an error at once.
    pub fn submit(&self, job: Job) -> Result<JobReceiver> {
        match self.admit(job, false)? {
            Admitted::Queued(rx) => Ok(rx),
            Admitted::Claimed(..) => unreachable!("admit claims only when asked to"),
        }
    }

    /// Runs a job and waits for its result, on the calling task's thread when the queue is
    /// empty, an instance idle and the model waits for no batch-mates (see the module's
    /// "caller runs"); otherwise queued as [`Batcher::submit`] does. Inline runs need a
    /// multi-threaded runtime: a model whose recent runs took longer than [`SHORT_RUN`] runs
    /// inside `block_in_place`, which moves the runtime's other tasks elsewhere first. On a
    /// current-thread runtime every job is queued.
    pub async fn call(&self, job: Job) -> Result<JobOutput> {
        let inline = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        match self.admit(job, inline)? {
            Admitted::Queued(rx) => rx.await,
            Admitted::Claimed(p, rx, model) if self.shared.runs_short() => {
                self.shared.run_inline(p, rx, model)
            }
            Admitted::Claimed(p, rx, model) => {
                tokio::task::block_in_place(|| self.shared.run_inline(p, rx, model))
            }
        }
    }

    /// [`Batcher::call`] for a thread outside any async runtime: the job runs on this thread
    /// when it would run at once anyway, else it is queued and waited for.
    pub fn call_blocking(&self, job: Job) -> Result<JobOutput> {
        match self.admit(job, true)? {
            Admitted::Queued(rx) => rx.wait(),
            Admitted::Claimed(p, rx, model) => self.shared.run_inline(p, rx, model),
        }
    }

    /// Checks a job's priority and the queue's room, then queues it, or, when `claim` is set
    /// and the job would run alone at once, hands it back with an idle instance to run it on.
    fn admit(&self, job: Job, claim: bool) -> Result<Admitted> {
        let s = &*self.shared;
        let level = match job.priority {
            None | Some(0) => s.settings.default_priority,
            Some(p) if p <= s.settings.priority_levels => p,
            Some(p) => {
                return Err(Error::InvalidInput(format!(
                    "priority {p} is out of range: model '{}' has priority levels 1..={} (0 = default)",
                    s.model, s.settings.priority_levels
                )));
            }
        };
        let timeout = job.timeout.or(s.settings.default_timeout);
        let now = Instant::now();
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            job,
            enqueued: now,
            deadline: timeout.map(|t| now + t),
            reply: tx,
        };
        let wake;
        {
            let mut st = s.lock();
            if st.closing {
                return Err(Error::ShuttingDown(s.model.clone()));
            }
            if claim
                && st.len == 0
                && s.settings.max_queue_delay.is_zero()
                && let Some(model) = st.idle.pop()
            {
                return Ok(Admitted::Claimed(pending, rx, model));
            }
            if st.len >= s.settings.max_queue_size {
                drop(st);
                s.metrics.failure(FailureReason::Rejected).inc();
                return Err(Error::QueueFull {
                    model: s.model.clone(),
                    version: s.version.clone(),
                    max_queue_size: s.settings.max_queue_size,
                });
            }
            st.queues[level as usize - 1].push_back(pending);
            st.len += 1;
            // With every instance taken, nobody waits to be woken: a worker checks the queue
            // before it waits again, and an inline caller runs what queued behind it.
            wake = !st.idle.is_empty();
        }
        s.metrics.pending.inc();
        if wake {
            s.wake.notify_one();
        }
        Ok(Admitted::Queued(JobReceiver {
            rx: Some(rx),
            shared: Arc::clone(&self.shared),
            done: false,
        }))
    }

    /// Stops intake; queued requests still run. Idempotent.
    pub fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_all();
    }

    /// Closes the queue and waits for the workers to finish what was queued.
    pub fn shutdown(mut self) {
        self.close();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Workers exit by themselves once the queue is drained; they are not joined here
        // because the last reference may be dropped on an async runtime thread.
        self.close();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers and removes queued requests that timed out or whose client is gone.
    fn expire(&self, st: &mut State, now: Instant) {
        let mut canceled = 0usize;
        let mut timed_out = Vec::new();
        for q in &mut st.queues {
            let before = q.len();
            q.retain(|p| !p.reply.is_closed());
            canceled += before - q.len();
            let mut i = 0;
            while i < q.len() {
                if q[i].deadline.is_some_and(|d| d <= now) {
                    timed_out.push(q.remove(i).expect("index in range"));
                } else {
                    i += 1;
                }
            }
        }
        let removed = canceled + timed_out.len();
        if removed == 0 {
            return;
        }
        st.len -= removed;
        // The gauge first: whoever sees a counter move or gets an answer also sees the queue
        // without these requests.
        self.metrics.pending.sub(removed as i64);
        self.metrics
            .failure(FailureReason::Canceled)
            .inc_by(canceled as u64);
        for p in timed_out {
            let waited = now - p.enqueued;
            self.metrics.failure(FailureReason::Timeout).inc();
            self.stats.fail.add(1, waited);
            let _ = p.reply.send(Err(Error::Timeout {
                model: self.model.clone(),
                waited_us: waited.as_micros() as u64,
                timeout_us: p
                    .deadline
                    .map_or(0, |d| (d - p.enqueued).as_micros() as u64),
            }));
        }
    }

    /// Takes the next batch and an instance to run it on, waiting as the settings say (and
    /// for an instance, while callers run inline on them all). `None` once closed and
    /// drained; the idle instances are then freed.
    fn next_batch(&self) -> Option<(Vec<Pending>, Box<dyn Model>)> {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            self.expire(&mut st, now);
            if st.len == 0 {
                if st.closing {
                    let idle = std::mem::take(&mut st.idle);
                    drop(st);
                    drop(idle);
                    return None;
                }
                st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            if st.idle.is_empty() {
                // Every instance runs a caller's request; giving one back wakes a worker.
                st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let max = self.settings.max_batch_size;
            let (oldest, full, earliest_deadline) = self.survey(&st);
            let ready =
                max == 0 || full || st.closing || now >= oldest + self.settings.max_queue_delay;
            if ready {
                let batch = self.take(&mut st);
                let model = st.idle.pop().expect("an idle instance, checked above");
                return Some((batch, model));
            }
            let mut until = oldest + self.settings.max_queue_delay;
            if let Some(d) = earliest_deadline {
                until = until.min(d);
            }
            let wait = until.saturating_duration_since(now);
            st = self
                .wake
                .wait_timeout(st, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The head's enqueue time, whether a full batch is waiting (rows or cost), and the
    /// earliest deadline.
    fn survey(&self, st: &State) -> (Instant, bool, Option<Instant>) {
        let head = st
            .queues
            .iter()
            .find_map(|q| q.front())
            .expect("queue not empty");
        let mut oldest = head.enqueued;
        let (mut rows, mut cost) = (0, 0usize);
        let mut deadline: Option<Instant> = None;
        for p in st.queues.iter().flatten() {
            oldest = oldest.min(p.enqueued);
            if let Some(d) = p.deadline {
                deadline = Some(deadline.map_or(d, |e| e.min(d)));
            }
            if compatible(&head.job, &p.job) {
                rows += p.job.rows;
                cost = cost.saturating_add(p.job.cost);
            }
        }
        let full = rows >= self.settings.max_batch_size
            || self.settings.max_batch_cost.is_some_and(|max| cost >= max);
        (oldest, full, deadline)
    }

    /// Removes the next batch from the queues and counts it out of the queue's length and
    /// its pending gauge.
    fn take(&self, st: &mut State) -> Vec<Pending> {
        let batch = self.pick(st);
        st.len -= batch.len();
        self.metrics.pending.sub(batch.len() as i64);
        batch
    }

    /// The next batch, removed from the queues: the head of the highest priority, then every
    /// compatible request, in priority and arrival order, that keeps the batch within
    /// `max_batch_size` rows and `max_batch_cost`.
    fn pick(&self, st: &mut State) -> Vec<Pending> {
        let max = self.settings.max_batch_size;
        let first_level = st
            .queues
            .iter()
            .position(|q| !q.is_empty())
            .expect("queue not empty");
        let head = st.queues[first_level].pop_front().expect("non-empty level");
        let (mut rows, mut cost) = (head.job.rows, head.job.cost);
        let max_cost = self.settings.max_batch_cost.unwrap_or(usize::MAX);
        let mut batch = vec![head];
        if max == 0 {
            return batch;
        }
        for q in &mut st.queues[first_level..] {
            let mut i = 0;
            while i < q.len() && rows < max && cost < max_cost {
                let p = &q[i];
                if rows + p.job.rows <= max
                    && cost.saturating_add(p.job.cost) <= max_cost
                    && compatible(&batch[0].job, &p.job)
                {
                    rows += p.job.rows;
                    cost += p.job.cost;
                    batch.push(q.remove(i).expect("index in range"));
                } else {
                    i += 1;
                }
            }
        }
        batch
    }

    /// The next batch of whatever is queued, for a caller that holds an instance (only models
    /// without a `max_queue_delay` run inline, so a queued request is always due).
    fn take_queued(&self) -> Option<Vec<Pending>> {
        let mut st = self.lock();
        self.expire(&mut st, Instant::now());
        if st.len == 0 {
            return None;
        }
        Some(self.take(&mut st))
    }

    /// Puts an instance back in the pool and wakes a worker if work waits for one. Once the
    /// batcher is closed and drained nobody needs it: it is freed instead.
    fn give_back(&self, model: Box<dyn Model>) {
        let mut st = self.lock();
        if st.closing && st.len == 0 {
            drop(st);
            drop(model);
            return;
        }
        st.idle.push(model);
        let waiting = st.len > 0;
        drop(st);
        if waiting {
            self.wake.notify_one();
        }
    }

    /// Runs one claimed request on the calling thread: the same execution and accounting as
    /// a batch of one taken from the queue. Requests that queued meanwhile (they found the
    /// instance taken) then run here too, as one batch, instead of waking a worker thread to
    /// run them and be woken back; whatever queues after that is the workers'.
    fn run_inline(
        &self,
        pending: Pending,
        mut rx: oneshot::Receiver<Result<JobOutput>>,
        mut model: Box<dyn Model>,
    ) -> Result<JobOutput> {
        let started = Instant::now();
        self.run(model.as_mut(), vec![pending]);
        if let Some(batch) = self.take_queued() {
            self.run(model.as_mut(), batch);
        }
        self.give_back(model);
        let long = if started.elapsed() > SHORT_RUN {
            ALL_RUNS
        } else {
            0
        };
        // Racing updates may lose a sample; the average only steers a choice.
        let old = self.long_runs.load(Ordering::Relaxed);
        self.long_runs
            .store(old - old / 8 + long / 8, Ordering::Relaxed);
        rx.try_recv().unwrap_or_else(|_| {
            Err(Error::Execution {
                model: self.model.clone(),
                message: "the run gave no answer".into(),
            })
        })
    }

    /// Whether most recent inline runs were short enough to run on an async worker directly.
    fn runs_short(&self) -> bool {
        self.long_runs.load(Ordering::Relaxed) < ALL_RUNS / 2
    }

    fn run(&self, model: &mut dyn Model, batch: Vec<Pending>) {
        let started = Instant::now();
        let rows: usize = batch.iter().map(|p| p.job.rows).sum();
        let batching = self.settings.max_batch_size > 0;

        let t0 = Instant::now();
        let (jobs, replies): (Vec<(Job, Instant)>, Vec<_>) = batch
            .into_iter()
            .map(|p| ((p.job, p.enqueued), p.reply))
            .unzip();
        let inputs: Vec<Tensor> = if jobs.len() == 1 {
            Vec::new()
        } else {
            (0..jobs[0].0.inputs.len())
                .map(|i| {
                    Tensor::concat(&jobs.iter().map(|(j, _)| &j.inputs[i]).collect::<Vec<_>>())
                })
                .collect()
        };
        let inputs = if jobs.len() == 1 {
            &jobs[0].0.inputs
        } else {
            &inputs
        };
        let compute_input = t0.elapsed();

        let t1 = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| model.run(inputs))).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Execution {
                model: self.model.clone(),
                message: format!("the backend panicked: {what}"),
            })
        });
        let compute_infer = t1.elapsed();

        let t2 = Instant::now();
        let sizes: Vec<usize> = jobs.iter().map(|(j, _)| j.rows).collect();
        let split = result.and_then(|outputs| self.split_outputs(outputs, &sizes, batching));
        let compute_output = t2.elapsed();

        let m = &self.metrics;
        match split {
            Ok(per_request) => {
                m.exec_count.inc();
                m.inference_count.inc_by(rows as u64);
                m.batch_size.observe(rows as f64);
                m.compute_input.observe(compute_input.as_secs_f64());
                m.compute_infer.observe(compute_infer.as_secs_f64());
                m.compute_output.observe(compute_output.as_secs_f64());
                self.stats.record_execution(
                    rows as u64,
                    compute_input,
                    compute_infer,
                    compute_output,
                );
                // Triton's accounting, which perf_analyzer assumes: every request of a batch is
                // charged the whole batch's compute time.
                let n = jobs.len() as u32;
                self.stats.compute_input.add(n.into(), compute_input * n);
                self.stats.compute_infer.add(n.into(), compute_infer * n);
                self.stats.compute_output.add(n.into(), compute_output * n);
                let done = Instant::now();
                for (((_, enqueued), reply), outputs) in
                    jobs.into_iter().zip(replies).zip(per_request)
                {
                    let queue = started - enqueued;
                    m.queue_duration.observe(queue.as_secs_f64());
                    m.request_duration.observe((done - enqueued).as_secs_f64());
                    m.success.inc();
                    self.stats.queue.add(1, queue);
                    self.stats.success.add(1, done - enqueued);
                    let _ = reply.send(Ok(JobOutput {
                        outputs,
                        timing: Timing {
                            queue,
                            compute_input,
                            compute_infer,
                            compute_output,
                        },
                        batch_rows: rows,
                    }));
                }
            }
            Err(e) => {
                tracing::warn!(model = %self.model, version = %self.version, rows, error = %e, "batch failed");
                let done = Instant::now();
                for ((_, enqueued), reply) in jobs.into_iter().zip(replies) {
                    m.failure(FailureReason::Backend).inc();
                    self.stats.fail.add(1, done - enqueued);
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Splits a batch's outputs (signature order) into one output list per request.
    fn split_outputs(
        &self,
        outputs: Vec<Tensor>,
        sizes: &[usize],
        batching: bool,
    ) -> Result<Vec<Vec<Tensor>>> {
        if sizes.len() == 1 {
            return Ok(vec![outputs]);
        }
        let mut per_request: Vec<Vec<Tensor>> = (0..sizes.len())
            .map(|_| Vec::with_capacity(outputs.len()))
            .collect();
        for t in outputs {
            let shape = t.shape().to_vec();
            let parts = t.split(sizes).filter(|_| batching).ok_or_else(|| Error::Execution {
                model: self.model.clone(),
                message: format!(
                    "an output of shape {shape:?} does not have the batch's {} rows as its first dimension; \
                     set max_batch_size = 0 in the model's config.toml if the model does not batch",
                    sizes.iter().sum::<usize>()
                ),
            })?;
            for (dst, part) in per_request.iter_mut().zip(parts) {
                dst.push(part);
            }
        }
        Ok(per_request)
    }
}

/// Two requests can share a batch when every input agrees on all but the first dimension.
fn compatible(a: &Job, b: &Job) -> bool {
    a.inputs
        .iter()
        .zip(&b.inputs)
        .all(|(x, y)| x.shape().get(1..) == y.shape().get(1..))
}

fn worker(shared: &Shared) {
    while let Some((batch, mut model)) = shared.next_batch() {
        shared.run(model.as_mut(), batch);
        shared.give_back(model);
    }
    tracing::debug!(model = %shared.model, version = %shared.version, "batcher worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datatype::DataType;
    use crate::metrics::Metrics;
    use crate::tensor::TensorData;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    /// Doubles its one FP32 input; records each batch's rows; can be held at a gate.
    struct Doubler {
        batches: Arc<Mutex<Vec<usize>>>,
        gate: Option<Arc<(Mutex<bool>, Condvar)>>,
        runs: Arc<AtomicUsize>,
        /// The thread each run ran on.
        threads: Arc<Mutex<Vec<std::thread::ThreadId>>>,
    }

    impl Model for Doubler {
        fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
            self.threads
                .lock()
                .unwrap()
                .push(std::thread::current().id());
            self.runs.fetch_add(1, Ordering::SeqCst);
            if let Some(g) = &self.gate {
                let mut open = g.0.lock().unwrap();
                while !*open {
                    open = g.1.wait(open).unwrap();
                }
            }
            let t = &inputs[0];
            self.batches.lock().unwrap().push(t.shape()[0] as usize);
            let TensorData::Raw(b) = t.data() else {
                unreachable!()
            };
            let out: Vec<u8> = b
                .chunks(4)
                .flat_map(|c| (f32::from_le_bytes(c.try_into().unwrap()) * 2.0).to_le_bytes())
                .collect();
            Ok(vec![
                Tensor::new(
                    DataType::Fp32,
                    t.shape().to_vec(),
                    TensorData::Raw(out.into()),
                )
                .unwrap(),
            ])
        }
    }

    fn job(values: &[f32]) -> Job {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Job {
            inputs: vec![
                Tensor::new(
                    DataType::Fp32,
                    vec![values.len() as i64, 1],
                    TensorData::Raw(raw),
                )
                .unwrap(),
            ],
            rows: values.len(),
            priority: None,
            timeout: None,
            cost: values.len(),
        }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        let TensorData::Raw(b) = t.data() else {
            unreachable!()
        };
        b.chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    struct Fixture {
        batcher: Batcher,
        batches: Arc<Mutex<Vec<usize>>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        runs: Arc<AtomicUsize>,
        threads: Arc<Mutex<Vec<std::thread::ThreadId>>>,
        metrics: VersionMetrics,
    }

    fn start(settings: BatchSettings, gated: bool) -> Fixture {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(!gated), Condvar::new()));
        let runs = Arc::new(AtomicUsize::new(0));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let model = Doubler {
            batches: batches.clone(),
            gate: Some(gate.clone()),
            runs: runs.clone(),
            threads: threads.clone(),
        };
        let metrics = Metrics::unregistered().for_version("m", "1");
        let batcher = Batcher::start(
            "m",
            "1",
            vec![Box::new(model)],
            settings,
            metrics.clone(),
            Default::default(),
        )
        .unwrap();
        Fixture {
            batcher,
            batches,
            gate,
            runs,
            threads,
            metrics,
        }
    }

    /// A batcher of up to 8 rows per execution, otherwise the defaults.
    fn batching(gated: bool) -> Fixture {
        start(
            BatchSettings {
                max_batch_size: 8,
                ..Default::default()
            },
            gated,
        )
    }

    fn open(gate: &(Mutex<bool>, Condvar)) {
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
    }

    fn wait_until(mut cond: impl FnMut() -> bool) {
        while !cond() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn recv(rx: JobReceiver) -> Result<JobOutput> {
        rx.wait()
    }

    #[test]
    fn queued_requests_run_as_one_batch_and_get_their_own_rows_back() {
        let f = batching(true);
        // The first request occupies the (gated) model; the next three queue up behind it.
        let first = f.batcher.submit(job(&[1.0])).unwrap();
        wait_until(|| f.runs.load(Ordering::SeqCst) == 1);
        let rx: Vec<_> = [[2.0, 3.0].as_slice(), &[4.0], &[5.0, 6.0, 7.0]]
            .iter()
            .map(|v| f.batcher.submit(job(v)).unwrap())
            .collect();
        open(&f.gate);
        assert_eq!(values(&recv(first).unwrap().outputs[0]), vec![2.0]);
        let outs: Vec<_> = rx.into_iter().map(|r| recv(r).unwrap()).collect();
        assert_eq!(values(&outs[0].outputs[0]), vec![4.0, 6.0]);
        assert_eq!(values(&outs[1].outputs[0]), vec![8.0]);
        assert_eq!(values(&outs[2].outputs[0]), vec![10.0, 12.0, 14.0]);
        assert_eq!(outs[2].batch_rows, 6);
        assert_eq!(*f.batches.lock().unwrap(), vec![1, 6]);
    }

    #[test]
    fn batches_never_exceed_max_batch_size() {
        let f = start(
            BatchSettings {
                max_batch_size: 3,
                ..Default::default()
            },
            true,
        );
        let first = f.batcher.submit(job(&[0.0])).unwrap();
        wait_until(|| f.runs.load(Ordering::SeqCst) == 1);
        let rx: Vec<_> = (0..5)
            .map(|i| f.batcher.submit(job(&[i as f32, 1.0])).unwrap())
            .collect();
        open(&f.gate);
        recv(first).unwrap();
        for r in rx {
            recv(r).unwrap();
        }
        let b = f.batches.lock().unwrap().clone();
        assert!(b.iter().all(|&n| n <= 3), "{b:?}");
        assert_eq!(b.iter().sum::<usize>(), 11);
    }

    #[test]
    fn full_queue_rejects_at_once() {
        let f = start(
            BatchSettings {
                max_batch_size: 1,
                max_queue_size: 2,
                ..Default::default()
            },
            true,
        );
        let running = f.batcher.submit(job(&[1.0])).unwrap();
        wait_until(|| f.runs.load(Ordering::SeqCst) == 1);
        let q1 = f.batcher.submit(job(&[2.0])).unwrap();
        let q2 = f.batcher.submit(job(&[3.0])).unwrap();
        let err = f.batcher.submit(job(&[4.0])).unwrap_err();
        assert!(
            matches!(
                err,
                Error::QueueFull {
                    max_queue_size: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(f.metrics.failure(FailureReason::Rejected).get(), 1);
        open(&f.gate);
        for r in [running, q1, q2] {
            recv(r).unwrap();
        }
    }

    #[test]
    fn requests_time_out_in_the_queue_without_running() {
        let f = start(
            BatchSettings {
                max_batch_size: 4,
                ..Default::default()
            },
            true,
        );
        let running = f.batcher.submit(job(&[1.0])).unwrap();
        wait_until(|| f.runs.load(Ordering::SeqCst) == 1);
        let mut j = job(&[2.0]);
        j.timeout = Some(Duration::from_millis(1));
        let timed = f.batcher.submit(j).unwrap();
        // The model is held; the queued request's deadline passes while it waits.
        std::thread::sleep(Duration::from_millis(20));
        open(&f.gate);
        recv(running).unwrap();
        assert!(matches!(recv(timed), Err(Error::Timeout { .. })));
        assert_eq!(f.runs.load(Ordering::SeqCst), 1);
        assert_eq!(f.metrics.failure(FailureReason::Timeout).get(), 1);
    }

    #[test]
    fn requests_whose_client_left_are_dropped_before_running() {
        let f = start(
            BatchSettings {
                max_batch_size: 1,
                ..Default::default()
            },
            true,
        );
        let running = f.batcher.submit(job(&[1.0])).unwrap();
        wait_until(|| f.runs.load(Ordering::SeqCst) == 1);
        drop(f.batcher.submit(job(&[2.0])).unwrap());
        let kept = f.batcher.submit(job(&[3.0])).unwrap();
        open(&f.gate);
        recv(running).unwrap();
        assert_eq!(values(&recv(kept).unwrap().outputs[0]), vec![6.0]);
        assert_eq!(f.runs.load(Ordering::SeqCst), 2);
        assert_eq!(f.metrics.failure(FailureReason::Canceled).get(), 1);
    }

    #[test]
    fn a_dropped_receiver_leaves_the_queue_without_waiting_for_the_batch_delay() {
        // The delay is an hour: only the receiver's drop can wake the worker in time.
        let f = start(
            BatchSettings {
                max_batch_size: 4,
                max_queue_delay: Duration::from_secs(3600),
                ..Default::default()
            },
            false,
        );
        drop(f.batcher.submit(job(&[1.0])).unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.metrics.failure(FailureReason::Canceled).get() == 0 {
            assert!(
                Instant::now() < deadline,
                "the abandoned request was not removed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(f.batcher.queued(), 0);
        assert_eq!(f.metrics.pending.get(), 0);
        assert_eq!(f.runs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn higher_priority_runs_first() {
        let f = start(
            BatchSettings {
                max_batch_size: 1,
                priority_levels: 2,
                default_priority: 2,
                ..Default::default()
            },
            true,
        );
        let running = f.batcher.submit(job(&[1.0])).unwrap();
        wait_until(|| f.runs.load(Ordering::SeqCst) == 1);
        let low = f.batcher.submit(job(&[2.0])).unwrap();
        let mut urgent = job(&[3.0, 3.0]);
        urgent.priority = Some(1);
        let high = f.batcher.submit(urgent).unwrap();
        let mut bad = job(&[4.0]);
        bad.priority = Some(3);
        assert!(
            f.batcher
                .submit(bad)
                .unwrap_err()
                .to_string()
                .contains("priority 3 is out of range")
        );
        open(&f.gate);
        for r in [running, low, high] {
            recv(r).unwrap();
        }
        assert_eq!(*f.batches.lock().unwrap(), vec![1, 2, 1]);
    }

    #[test]
    fn a_partial_batch_waits_for_the_delay_then_runs() {
        let f = start(
            BatchSettings {
                max_batch_size: 4,
                max_queue_delay: Duration::from_millis(30),
                ..Default::default()
            },
            false,
        );
        let (tx, rx) = mpsc::channel();
        let a = f.batcher.submit(job(&[1.0])).unwrap();
        let b = f.batcher.submit(job(&[2.0])).unwrap();
        std::thread::spawn(move || tx.send((recv(a).unwrap(), recv(b).unwrap())).unwrap());
        let (a, b) = rx.recv().unwrap();
        assert_eq!(a.batch_rows, 2);
        assert_eq!(values(&b.outputs[0]), vec![4.0]);
        assert_eq!(*f.batches.lock().unwrap(), vec![2]);
    }

    #[test]
    fn shutdown_finishes_queued_work_and_refuses_new() {
        let f = start(
            BatchSettings {
                max_batch_size: 2,
                ..Default::default()
            },
            true,
        );
        let running = f.batcher.submit(job(&[1.0])).unwrap();
        wait_until(|| f.runs.load(Ordering::SeqCst) == 1);
        let queued = f.batcher.submit(job(&[2.0])).unwrap();
        f.batcher.close();
        assert!(matches!(
            f.batcher.submit(job(&[3.0])),
            Err(Error::ShuttingDown(_))
        ));
        open(&f.gate);
        f.batcher.shutdown();
        recv(running).unwrap();
        assert_eq!(values(&recv(queued).unwrap().outputs[0]), vec![4.0]);
    }

    #[test]
    fn an_idle_model_runs_the_call_on_the_callers_thread() {
        let f = batching(false);
        let out = f.batcher.call_blocking(job(&[1.5, 2.0])).unwrap();
        assert_eq!(values(&out.outputs[0]), vec![3.0, 4.0]);
        assert_eq!(out.batch_rows, 2);
        assert_eq!(
            *f.threads.lock().unwrap(),
            vec![std::thread::current().id()]
        );
        // Counted as any execution is, and nothing left pending.
        assert_eq!(f.metrics.exec_count.get(), 1);
        assert_eq!(f.metrics.success.get(), 1);
        assert_eq!(f.metrics.pending.get(), 0);
        // The instance went back to the pool: queued work still runs on the worker.
        let queued = recv(f.batcher.submit(job(&[3.0])).unwrap()).unwrap();
        assert_eq!(values(&queued.outputs[0]), vec![6.0]);
        assert_ne!(f.threads.lock().unwrap()[1], std::thread::current().id());
    }

    #[test]
    fn requests_overlapping_an_inline_run_still_share_one_execution() {
        let f = batching(true);
        let batcher = Arc::new(f.batcher);
        let caller = {
            let b = Arc::clone(&batcher);
            std::thread::spawn(move || {
                let id = std::thread::current().id();
                (id, b.call_blocking(job(&[1.0])).unwrap())
            })
        };
        // The first request holds the only instance, on its caller's thread.
        wait_until(|| f.runs.load(Ordering::SeqCst) == 1);
        let rx: Vec<_> = [2.0f32, 3.0]
            .iter()
            .map(|v| batcher.submit(job(&[*v])).unwrap())
            .collect();
        // One more call while the instance is busy: queued with the others, not run apart.
        let late = {
            let b = Arc::clone(&batcher);
            std::thread::spawn(move || b.call_blocking(job(&[4.0])).unwrap())
        };
        wait_until(|| batcher.queued() == 3);
        open(&f.gate);
        let (caller_id, first) = caller.join().unwrap();
        assert_eq!(values(&first.outputs[0]), vec![2.0]);
        let outs: Vec<_> = rx.into_iter().map(|r| recv(r).unwrap()).collect();
        let late = late.join().unwrap();
        assert_eq!(values(&outs[0].outputs[0]), vec![4.0]);
        assert_eq!(values(&outs[1].outputs[0]), vec![6.0]);
        assert_eq!(values(&late.outputs[0]), vec![8.0]);
        assert_eq!(late.batch_rows, 3);
        assert_eq!(*f.batches.lock().unwrap(), vec![1, 3]);
        let threads = f.threads.lock().unwrap();
        assert_eq!(threads[0], caller_id);
        assert_eq!(
            threads[1], caller_id,
            "the caller ran what queued behind it"
        );
    }

    #[test]
    fn a_model_waiting_for_batch_mates_never_runs_on_the_caller() {
        let f = start(
            BatchSettings {
                max_batch_size: 8,
                max_queue_delay: Duration::from_millis(1),
                ..Default::default()
            },
            false,
        );
        f.batcher.call_blocking(job(&[1.0])).unwrap();
        assert_ne!(f.threads.lock().unwrap()[0], std::thread::current().id());
    }

    #[test]
    fn calls_run_inline_on_a_multi_threaded_runtime_and_queue_on_a_current_thread_one() {
        let f = batching(false);
        let batcher = Arc::new(f.batcher);
        let on_runtime = |rt: tokio::runtime::Runtime| {
            let b = Arc::clone(&batcher);
            rt.block_on(async move {
                tokio::spawn(async move {
                    let out = b.call(job(&[5.0])).await.unwrap();
                    (std::thread::current().id(), out)
                })
                .await
                .unwrap()
            })
        };
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let (task_thread, out) = on_runtime(multi);
        assert_eq!(values(&out.outputs[0]), vec![10.0]);
        assert_eq!(f.threads.lock().unwrap()[0], task_thread);

        let single = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (task_thread, out) = on_runtime(single);
        assert_eq!(values(&out.outputs[0]), vec![10.0]);
        assert_ne!(f.threads.lock().unwrap()[1], task_thread);
    }

    #[test]
    fn an_inline_run_of_unknown_length_leaves_the_worker_to_its_other_tasks() {
        // One async worker: the gated run can only end if the task that opens the gate gets a
        // thread while the run blocks the caller's, which is what block_in_place provides.
        let f = batching(true);
        let batcher = Arc::new(f.batcher);
        let (gate, b) = (Arc::clone(&f.gate), Arc::clone(&batcher));
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .unwrap();
            let out = rt.block_on(async move {
                tokio::spawn(async move {
                    tokio::spawn(async move { open(&gate) });
                    let out = b.call(job(&[3.0])).await.unwrap();
                    (std::thread::current().id(), out)
                })
                .await
                .unwrap()
            });
            let _ = done_tx.send(out);
        });
        let answer = done_rx.recv_timeout(Duration::from_secs(60));
        open(&f.gate); // unblocks a run that starved its neighbour, so the test fails, not hangs
        let (task_thread, out) = answer.expect("the gate-opening task never ran");
        assert_eq!(values(&out.outputs[0]), vec![6.0]);
        assert_eq!(f.threads.lock().unwrap()[0], task_thread, "ran inline");
    }

    #[test]
    fn the_choice_of_block_in_place_follows_the_recent_run_times() {
        let f = start(BatchSettings::default(), true);
        assert!(
            !f.batcher.shared.runs_short(),
            "unknown until a run is measured"
        );
        open(&f.gate);
        for _ in 0..32 {
            f.batcher.call_blocking(job(&[1.0])).unwrap();
        }
        assert!(
            f.batcher.shared.runs_short(),
            "the doubler takes microseconds"
        );
        // A run now and then held for 1 ms (a preempted thread) changes nothing; runs that
        // are mostly that long do.
        let slow_run = || {
            *f.gate.0.lock().unwrap() = false;
            let runs = f.runs.load(Ordering::SeqCst);
            std::thread::scope(|s| {
                s.spawn(|| {
                    wait_until(|| f.runs.load(Ordering::SeqCst) > runs);
                    std::thread::sleep(Duration::from_millis(1));
                    open(&f.gate);
                });
                f.batcher.call_blocking(job(&[1.0])).unwrap()
            })
        };
        assert_eq!(values(&slow_run().outputs[0]), vec![2.0]);
        assert!(f.batcher.shared.runs_short(), "one long run in 33");
        for _ in 0..8 {
            slow_run();
        }
        assert!(!f.batcher.shared.runs_short(), "the last 8 runs were long");
    }

    #[test]
    fn closing_frees_the_instances_once_the_queue_is_drained() {
        let f = start(BatchSettings::default(), false);
        f.batcher.call_blocking(job(&[1.0])).unwrap();
        let shared = Arc::clone(&f.batcher.shared);
        f.batcher.shutdown();
        assert!(shared.lock().idle.is_empty());
        assert!(shared.lock().closing);
    }
}
