//! Dynamic batching in front of the model: a bounded queue and one dedicated OS thread.
//!
//! Why: the encoder is far cheaper per post in batches, and it is CPU-bound work that must never run on the
//! async HTTP workers. Like text-embeddings-inference, requests are queued as *jobs* (one job = the posts of
//! one HTTP request); the worker thread takes the oldest job, then keeps taking queued jobs, and waits up to
//! `max_wait` after the oldest job arrived for more, until the batch reaches its post or character budget
//! or holds every request likely in flight: the previous batch's jobs (their clients got answers and send
//! again within a few milliseconds) plus the jobs already queued when the worker came back. That last rule
//! is why waiting costs a lone client nothing while 32 clients get full batches: a batch cut off by a short
//! fixed wait holds only the quick half of them, and the clients then settle into two half-size groups
//! that take turns (about 16 of 32 on the 2-core machine).
//! The whole batch goes through one call of the work function (`Engine::locate` in the server) and each job
//! gets its own slice of the results through a oneshot channel.
//!
//! - Back-pressure: the queue holds at most `queue_capacity` posts; [`Batcher::submit`] refuses more at once
//!   ([`SubmitError::Overloaded`]) instead of letting latency grow without bound.
//! - Cancellation: a job whose receiver was dropped (its request timed out or its client left) is skipped.
//! - Isolation: when a batch of several jobs fails, each job is retried alone, so one bad job cannot fail its
//!   neighbours; a panic in the work function is caught and reported to the batch's jobs.
//! - Shutdown: [`Batcher::shutdown`] refuses new jobs, lets the worker finish every queued job, and joins it.
//!
//! Nothing here knows about HTTP or the model: the work function is a closure, so the tests drive it with
//! plain functions.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Sizes and timing of the queue and of the batches taken from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most posts waiting in the queue (jobs being computed do not count).
    pub queue_capacity: usize,
    /// Most posts in one batch (a single larger job still runs, alone).
    pub max_batch_posts: usize,
    /// Most characters of text in one batch (a single larger job still runs, alone).
    pub max_batch_chars: usize,
    /// How long after the oldest queued job arrived the worker waits for more jobs to fill a batch.
    pub max_wait: Duration,
}

/// Why a job was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: retry later.
    #[error("the queue is full ({queued} posts waiting, capacity {capacity})")]
    Overloaded {
        /// Posts waiting when the job was refused.
        queued: usize,
        /// The queue's capacity in posts.
        capacity: usize,
    },
    /// The batcher is shutting down and takes no new jobs.
    #[error("the batcher is shutting down")]
    Closed,
}

/// Why a queued job got no results.
#[derive(Debug, thiserror::Error)]
pub enum BatchError<E> {
    /// The work function refused the job's posts.
    #[error(transparent)]
    Failed(E),
    /// The work function panicked or returned a wrong number of results: a bug, reported rather than hung.
    #[error("the inference worker failed: {0}")]
    Worker(String),
}

/// What a job's receiver yields: one result per submitted text, in order.
pub type JobResult<R, E> = Result<Vec<R>, BatchError<E>>;

/// What the queue holds: anything that can say how many characters of text it brings to a batch.
pub trait Weighed {
    /// Characters counted against the batch's character budget.
    fn chars(&self) -> usize;
}

impl Weighed for String {
    fn chars(&self) -> usize {
        str::chars(self).count()
    }
}

/// Hooks for metrics; every method has a no-op default.
pub trait BatchObserver: Send + Sync {
    /// The number of posts waiting changed.
    fn queue_depth(&self, _posts: usize) {}
    /// A batch of `posts` posts from `jobs` jobs was computed in `seconds`.
    fn batch_done(&self, _posts: usize, _jobs: usize, _seconds: f64) {}
}

/// An observer that records nothing.
pub struct NoObserver;

impl BatchObserver for NoObserver {}

struct Job<I, R, E> {
    items: Vec<I>,
    chars: usize,
    enqueued: Instant,
    reply: oneshot::Sender<JobResult<R, E>>,
}

struct Queue<I, R, E> {
    jobs: VecDeque<Job<I, R, E>>,
    posts: usize,
    closed: bool,
    /// Jobs in the previous batch, whose clients are likely to send again at once. `None` before the
    /// first batch (which waits the whole `max_wait`).
    last_batch_jobs: Option<usize>,
    /// When the previous batch's results were ready (before any was sent): jobs queued earlier are other
    /// clients than the ones it answers.
    last_batch_computed: Option<Instant>,
}

struct Shared<I, R, E> {
    queue: Mutex<Queue<I, R, E>>,
    arrived: Condvar,
    config: BatcherConfig,
    observer: Arc<dyn BatchObserver>,
}

impl<I, R, E> Shared<I, R, E> {
    fn lock(&self) -> MutexGuard<'_, Queue<I, R, E>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bounded queue of posts (items `I`) in front of one worker thread that runs them in batches.
pub struct Batcher<I, R, E> {
    shared: Arc<Shared<I, R, E>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl<I: Weighed + Send + 'static, R: Send + 'static, E: Send + 'static> Batcher<I, R, E> {
    /// Starts the worker thread. `work` gets the items of a batch and must return one result per item, in
    /// order, or an error for the whole call.
    pub fn spawn<W>(
        config: BatcherConfig,
        observer: Arc<dyn BatchObserver>,
        work: W,
    ) -> std::io::Result<Self>
    where
        W: FnMut(&[I]) -> Result<Vec<R>, E> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                posts: 0,
                closed: false,
                last_batch_jobs: None,
                last_batch_computed: None,
            }),
            arrived: Condvar::new(),
            config,
            observer,
        });
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("contrastgeo-batcher".into())
            .spawn(move || worker_loop(&worker_shared, work))?;
        Ok(Self {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Queues `items` as one job; the receiver yields their results once the batch holding them has run.
    pub fn submit(&self, items: Vec<I>) -> Result<oneshot::Receiver<JobResult<R, E>>, SubmitError> {
        let (reply, receiver) = oneshot::channel();
        let chars = items.iter().map(Weighed::chars).sum();
        let mut queue = self.shared.lock();
        if queue.closed {
            return Err(SubmitError::Closed);
        }
        let capacity = self.shared.config.queue_capacity;
        if queue.posts + items.len() > capacity {
            return Err(SubmitError::Overloaded {
                queued: queue.posts,
                capacity,
            });
        }
        queue.posts += items.len();
        self.shared.observer.queue_depth(queue.posts);
        queue.jobs.push_back(Job {
            items,
            chars,
            enqueued: Instant::now(),
            reply,
        });
        drop(queue);
        self.shared.arrived.notify_one();
        Ok(receiver)
    }

    /// Posts waiting in the queue.
    pub fn queued_posts(&self) -> usize {
        self.shared.lock().posts
    }

    /// Refuses new jobs, lets the worker finish the queued ones, and waits for it to exit. Idempotent.
    pub fn shutdown(&self) {
        close_and_join(&self.shared, &self.worker);
    }
}

impl<I, R, E> Drop for Batcher<I, R, E> {
    fn drop(&mut self) {
        close_and_join(&self.shared, &self.worker);
    }
}

/// Refuses new jobs, wakes the worker and waits for it to drain the queue and exit. Idempotent.
fn close_and_join<I, R, E>(shared: &Shared<I, R, E>, worker: &Mutex<Option<JoinHandle<()>>>) {
    shared.lock().closed = true;
    shared.arrived.notify_all();
    let worker = worker.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(worker) = worker {
        if worker.join().is_err() {
            tracing::error!("the batcher thread panicked");
        }
    }
}

/// Takes batches until the queue is closed and empty.
fn worker_loop<I, R, E, W>(shared: &Shared<I, R, E>, mut work: W)
where
    W: FnMut(&[I]) -> Result<Vec<R>, E>,
{
    while let Some(batch) = next_batch(shared) {
        let live: Vec<Job<I, R, E>> = batch
            .into_iter()
            .filter(|job| !job.reply.is_closed())
            .collect();
        if live.is_empty() {
            continue;
        }
        let started = Instant::now();
        let posts: usize = live.iter().map(|j| j.items.len()).sum();
        let jobs = live.len();
        let computed = run_batch(live, &mut work);
        shared.lock().last_batch_computed = Some(computed);
        shared
            .observer
            .batch_done(posts, jobs, started.elapsed().as_secs_f64());
    }
}

/// Blocks for the next batch: the oldest job, then more jobs while they fit the budget and the oldest job has
/// waited less than `max_wait`. `None` once the queue is closed and drained.
fn next_batch<I, R, E>(shared: &Shared<I, R, E>) -> Option<Vec<Job<I, R, E>>> {
    let config = &shared.config;
    let free_since = Instant::now();
    let mut queue = shared.lock();
    // Requests likely in flight: those answered by the last batch, and those that queued while it ran.
    let queued_meanwhile = queue
        .jobs
        .iter()
        .filter(|job| {
            queue
                .last_batch_computed
                .is_some_and(|at| job.enqueued < at)
        })
        .count();
    let expected_jobs = queue.last_batch_jobs.map(|last| last + queued_meanwhile);
    while queue.jobs.is_empty() {
        if queue.closed {
            return None;
        }
        queue = shared
            .arrived
            .wait(queue)
            .unwrap_or_else(PoisonError::into_inner);
    }
    // The wait counts from when the oldest job arrived or the worker came back, whichever is later: jobs
    // that queued while the last batch ran have waited already, but the clients that batch just answered
    // are about to send again, and a batch of both groups is what keeps them from splitting into two
    // half-size groups that take turns.
    let deadline = queue.jobs.front().map(|j| j.enqueued)?.max(free_since) + config.max_wait;
    let mut batch: Vec<Job<I, R, E>> = Vec::new();
    let (mut posts, mut chars) = (0usize, 0usize);
    loop {
        while let Some(job) = queue.jobs.front() {
            let fits = batch.is_empty()
                || (posts + job.items.len() <= config.max_batch_posts
                    && chars + job.chars <= config.max_batch_chars);
            if !fits {
                break;
            }
            let Some(job) = queue.jobs.pop_front() else {
                break;
            };
            posts += job.items.len();
            chars += job.chars;
            queue.posts -= job.items.len();
            batch.push(job);
        }
        let full = !queue.jobs.is_empty()
            || posts >= config.max_batch_posts
            || expected_jobs.is_some_and(|expected| batch.len() >= expected);
        let now = Instant::now();
        if full || queue.closed || now >= deadline {
            break;
        }
        queue = shared
            .arrived
            .wait_timeout(queue, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    queue.last_batch_jobs = Some(batch.len());
    shared.observer.queue_depth(queue.posts);
    Some(batch)
}

/// Runs the jobs' items in one call and replies to each job; on an error with several jobs, runs each job
/// alone so that only the job at fault gets the error.
fn run_batch<I, R, E, W>(mut jobs: Vec<Job<I, R, E>>, work: &mut W) -> Instant
where
    W: FnMut(&[I]) -> Result<Vec<R>, E>,
{
    // The items move into one slice for the call and back to their jobs afterwards (a retry needs them).
    let counts: Vec<usize> = jobs.iter().map(|job| job.items.len()).collect();
    let items: Vec<I> = jobs
        .iter_mut()
        .flat_map(|job| std::mem::take(&mut job.items))
        .collect();
    let outcome = call(work, &items);
    let computed = Instant::now();
    let mut items = items.into_iter();
    for (job, count) in jobs.iter_mut().zip(counts) {
        job.items = items.by_ref().take(count).collect();
    }
    match outcome {
        Ok(mut results) => {
            // Hand each job its slice, in order.
            for job in jobs.into_iter().rev() {
                let mine = results.split_off(results.len() - job.items.len());
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(error) if jobs.len() == 1 => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(error));
            }
        }
        Err(_) => {
            for job in jobs {
                let _ = job.reply.send(call(work, &job.items));
            }
        }
    }
    computed
}

/// One call of the work function, with panics and a wrong result count turned into [`BatchError::Worker`].
fn call<I, R, E, W>(work: &mut W, items: &[I]) -> JobResult<R, E>
where
    W: FnMut(&[I]) -> Result<Vec<R>, E>,
{
    match catch_unwind(AssertUnwindSafe(|| work(items))) {
        Ok(Ok(results)) if results.len() == items.len() => Ok(results),
        Ok(Ok(results)) => Err(BatchError::Worker(format!(
            "{} results for {} posts",
            results.len(),
            items.len()
        ))),
        Ok(Err(error)) => Err(BatchError::Failed(error)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            tracing::error!(%message, "the inference worker panicked");
            Err(BatchError::Worker(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config(capacity: usize, posts: usize, wait_ms: u64) -> BatcherConfig {
        BatcherConfig {
            queue_capacity: capacity,
            max_batch_posts: posts,
            max_batch_chars: 1 << 20,
            max_wait: Duration::from_millis(wait_ms),
        }
    }

    /// Records every batch's size.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<(usize, usize)>>,
        depth: AtomicUsize,
    }

    impl BatchObserver for Recorder {
        fn queue_depth(&self, posts: usize) {
            self.depth.store(posts, Ordering::SeqCst);
        }
        fn batch_done(&self, posts: usize, jobs: usize, _seconds: f64) {
            self.batches.lock().unwrap().push((posts, jobs));
        }
    }

    fn upper(texts: &[String]) -> Result<Vec<String>, String> {
        Ok(texts.iter().map(|t| t.to_uppercase()).collect())
    }

    fn strings(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_string()).collect()
    }

    #[test]
    fn each_job_gets_its_own_results_in_order() {
        let batcher = Batcher::spawn(config(100, 64, 1), Arc::new(NoObserver), upper).unwrap();
        let a = batcher.submit(strings(&["a", "b"])).unwrap();
        let b = batcher.submit(strings(&["c"])).unwrap();
        assert_eq!(a.blocking_recv().unwrap().unwrap(), ["A", "B"]);
        assert_eq!(b.blocking_recv().unwrap().unwrap(), ["C"]);
    }

    #[test]
    fn jobs_arriving_within_the_wait_share_one_batch_up_to_the_post_budget() {
        let recorder = Arc::new(Recorder::default());
        let batcher = Batcher::spawn(config(100, 4, 1000), recorder.clone(), upper).unwrap();
        let receivers: Vec<_> = (0..4)
            .map(|i| batcher.submit(strings(&[&format!("p{i}"), "x"])).unwrap())
            .collect();
        for (i, rx) in receivers.into_iter().enumerate() {
            assert_eq!(
                rx.blocking_recv().unwrap().unwrap(),
                [format!("P{i}"), "X".into()]
            );
        }
        // 8 posts with a 4-post budget: two jobs fill a batch (no waiting once full), the third would make 6.
        // (Shutting down joins the worker, so its last batch is recorded.)
        batcher.shutdown();
        let batches = recorder.batches.lock().unwrap().clone();
        assert_eq!(batches, [(4, 2), (4, 2)], "{batches:?}");
    }

    #[test]
    fn once_a_batch_holds_the_jobs_likely_in_flight_it_runs_without_waiting_out_the_wait() {
        let recorder = Arc::new(Recorder::default());
        // A long wait: the first batch waits it out for more jobs, the later ones do not need to.
        let batcher = Batcher::spawn(config(100, 64, 400), recorder.clone(), upper).unwrap();
        let first: Vec<_> = (0..3)
            .map(|i| batcher.submit(strings(&[&format!("a{i}")])).unwrap())
            .collect();
        for rx in first {
            rx.blocking_recv().unwrap().unwrap();
        }
        // Three jobs again: the batch closes on the third, long before the 400 ms wait.
        let started = Instant::now();
        let second: Vec<_> = (0..3)
            .map(|i| batcher.submit(strings(&[&format!("b{i}")])).unwrap())
            .collect();
        for rx in second {
            rx.blocking_recv().unwrap().unwrap();
        }
        let closed_after = started.elapsed();
        assert!(
            closed_after < Duration::from_millis(300),
            "{closed_after:?}"
        );
        batcher.shutdown();
        let batches = recorder.batches.lock().unwrap().clone();
        assert_eq!(batches, [(3, 3), (3, 3)], "{batches:?}");
    }

    #[test]
    fn the_character_budget_splits_batches_but_an_oversized_job_still_runs_alone() {
        let recorder = Arc::new(Recorder::default());
        let mut cfg = config(100, 64, 100);
        cfg.max_batch_chars = 10;
        let batcher = Batcher::spawn(cfg, recorder.clone(), upper).unwrap();
        let long = batcher.submit(strings(&["a very long post"])).unwrap();
        let short = batcher.submit(strings(&["tiny", "post"])).unwrap();
        assert_eq!(long.blocking_recv().unwrap().unwrap(), ["A VERY LONG POST"]);
        assert_eq!(short.blocking_recv().unwrap().unwrap(), ["TINY", "POST"]);
        batcher.shutdown();
        assert_eq!(*recorder.batches.lock().unwrap(), [(1, 1), (2, 1)]);
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_accepts_again_once_drained() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate_rx);
        let recorder = Arc::new(Recorder::default());
        let batcher = Batcher::spawn(
            config(3, 1, 0),
            recorder.clone(),
            move |texts: &[String]| {
                gate.lock().unwrap().recv().unwrap();
                upper(texts)
            },
        )
        .unwrap();
        let first = batcher.submit(strings(&["1"])).unwrap();
        // Wait until the worker has taken the first job (the queue is empty again) and blocks on the gate.
        let started = Instant::now();
        while batcher.queued_posts() != 0 && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let second = batcher.submit(strings(&["2", "3"])).unwrap();
        assert_eq!(recorder.depth.load(Ordering::SeqCst), 2);
        assert_eq!(
            batcher.submit(strings(&["4", "5"])).unwrap_err(),
            SubmitError::Overloaded {
                queued: 2,
                capacity: 3
            }
        );
        let third = batcher.submit(strings(&["4"])).unwrap();
        for _ in 0..3 {
            gate_tx.send(()).unwrap();
        }
        assert_eq!(first.blocking_recv().unwrap().unwrap(), ["1"]);
        assert_eq!(second.blocking_recv().unwrap().unwrap(), ["2", "3"]);
        assert_eq!(third.blocking_recv().unwrap().unwrap(), ["4"]);
        assert_eq!(batcher.queued_posts(), 0);
        assert!(batcher.submit(strings(&["5", "6", "7"])).is_ok());
        gate_tx.send(()).unwrap();
    }

    #[test]
    fn a_failing_job_gets_its_error_and_its_batch_neighbours_their_results() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        // The three jobs (4 posts) fill one batch; the long wait only covers a very slow test machine.
        let batcher = Batcher::spawn(
            config(100, 4, 2000),
            Arc::new(NoObserver),
            move |texts: &[String]| {
                counted.fetch_add(1, Ordering::SeqCst);
                match texts.iter().position(|t| t.is_empty()) {
                    Some(i) => Err(format!("text {i} is empty")),
                    None => upper(texts),
                }
            },
        )
        .unwrap();
        let good = batcher.submit(strings(&["ok"])).unwrap();
        let bad = batcher.submit(strings(&["fine", ""])).unwrap();
        let after = batcher.submit(strings(&["also"])).unwrap();
        assert_eq!(good.blocking_recv().unwrap().unwrap(), ["OK"]);
        match bad.blocking_recv().unwrap() {
            Err(BatchError::Failed(e)) => assert_eq!(e, "text 1 is empty"),
            other => panic!("{other:?}"),
        }
        assert_eq!(after.blocking_recv().unwrap().unwrap(), ["ALSO"]);
        // One combined call, then one call per job.
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_panic_or_a_wrong_result_count_is_reported_and_the_worker_keeps_going() {
        let batcher = Batcher::spawn(
            config(100, 1, 0),
            Arc::new(NoObserver),
            |texts: &[String]| match texts[0].as_str() {
                "panic" => panic!("boom"),
                "short" => Ok(Vec::new()),
                _ => upper(texts),
            },
        )
        .unwrap();
        let panicked = batcher.submit(strings(&["panic"])).unwrap();
        let short = batcher.submit(strings(&["short"])).unwrap();
        let fine = batcher.submit(strings(&["fine"])).unwrap();
        assert!(matches!(
            panicked.blocking_recv().unwrap(),
            Err(BatchError::Worker(m)) if m == "boom"
        ));
        assert!(matches!(
            short.blocking_recv().unwrap(),
            Err(BatchError::Worker(_))
        ));
        assert_eq!(fine.blocking_recv().unwrap().unwrap(), ["FINE"]);
    }

    #[test]
    fn cancelled_jobs_are_skipped() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = Arc::clone(&seen);
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate_rx);
        let batcher = Batcher::spawn(
            config(100, 1, 0),
            Arc::new(NoObserver),
            move |texts: &[String]| {
                gate.lock().unwrap().recv().unwrap();
                log.lock().unwrap().extend(texts.to_vec());
                upper(texts)
            },
        )
        .unwrap();
        let first = batcher.submit(strings(&["first"])).unwrap();
        let abandoned = batcher.submit(strings(&["abandoned"])).unwrap();
        let last = batcher.submit(strings(&["last"])).unwrap();
        drop(abandoned);
        gate_tx.send(()).unwrap();
        gate_tx.send(()).unwrap();
        assert_eq!(first.blocking_recv().unwrap().unwrap(), ["FIRST"]);
        assert_eq!(last.blocking_recv().unwrap().unwrap(), ["LAST"]);
        assert_eq!(*seen.lock().unwrap(), ["first", "last"]);
    }

    #[test]
    fn shutdown_finishes_queued_jobs_then_refuses_new_ones() {
        let batcher = Batcher::spawn(
            config(100, 1, 0),
            Arc::new(NoObserver),
            |texts: &[String]| {
                std::thread::sleep(Duration::from_millis(20));
                upper(texts)
            },
        )
        .unwrap();
        let receivers: Vec<_> = (0..5)
            .map(|i| batcher.submit(vec![format!("p{i}")]).unwrap())
            .collect();
        batcher.shutdown();
        for (i, rx) in receivers.into_iter().enumerate() {
            assert_eq!(rx.blocking_recv().unwrap().unwrap(), [format!("P{i}")]);
        }
        assert_eq!(
            batcher.submit(strings(&["late"])).unwrap_err(),
            SubmitError::Closed
        );
        batcher.shutdown();
    }
}
