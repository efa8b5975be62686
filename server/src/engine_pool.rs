//! Engine work off the async workers.
//!
//! Every engine call a request makes (apply, read, full state, state merge)
//! blocks: sled reads and writes, the log append, and for a large set a
//! scan of every member. Run on a tokio worker, such a call stalls every
//! other task of that worker for its duration: the QUIC drivers of client
//! and peer connections, heartbeats, timers. So the coordinator runs them
//! through an [`EnginePool`]: `spawn_blocking` behind a semaphore.
//!
//! Why a semaphore in front of tokio's blocking pool rather than
//! `spawn_blocking` alone: tokio's pool grows to 512 threads, and a burst of
//! requests would make that many threads contend for the engine's key
//! stripes and sled's caches, each with its own stack, for no extra
//! throughput (the engine is bound by CPU and one log). The semaphore keeps
//! at most [`EnginePool::size`] engine calls running; the rest wait
//! asynchronously (holding no thread) in FIFO order. How many can wait is
//! itself bounded by the listeners (connections × requests in flight, and
//! the peers' RPC streams). A dedicated pool of named threads would do the
//! same with more code; `spawn_blocking` reuses tokio's idle threads.
//!
//! Fairness: the semaphore is FIFO, so one client connection with 256
//! requests in flight (say, reads of a large set) would queue 256 calls
//! ahead of everyone else's. A client connection therefore runs its
//! requests under a *share* ([`EnginePool::share`], [`with_share`]): at
//! most half the pool at once, so another connection always finds a free
//! slot. A connection's requests beyond its share wait on the share, not
//! in the pool's queue. Peer RPCs and RESP connections (which execute one
//! command at a time) run without one.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};

use meridian_engine::{Error as EngineError, Result as EngineResult};
use tokio::sync::Semaphore;

tokio::task_local! {
    /// The share of the pool the current request's connection may use.
    static SHARE: Arc<Semaphore>;
}

/// Runs `f` (a connection's request) under `share` (from
/// [`EnginePool::share`]): its engine calls use at most that many pool
/// slots at once, with the other requests of the same connection.
pub async fn with_share<F: Future>(share: Arc<Semaphore>, f: F) -> F::Output {
    SHARE.scope(share, f).await
}

/// Engine calls running at once, per available core. Engine calls are
/// mostly CPU (encoding, merging) with some waiting on page-cache misses;
/// two per core keeps every core busy while a call waits on the disk.
pub const ENGINE_CALLS_PER_CORE: usize = 2;

/// Fewest engine calls running at once, whatever the core count: a
/// 1-core machine still overlaps a disk read with other work.
pub const MIN_ENGINE_CALLS: usize = 4;

/// Most engine calls running at once, whatever the core count: past this
/// the calls contend for the same stripes and log for no throughput.
pub const MAX_ENGINE_CALLS: usize = 64;

/// A bounded pool for blocking engine calls. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EnginePool {
    permits: Arc<Semaphore>,
    size: usize,
    combined: Arc<CombinedRunner>,
}

/// A job of [`EnginePool::run_combined`]: runs the caller's work and sends
/// the outcome back.
type CombinedJob = Box<dyn FnOnce() + Send>;

/// The queue of [`EnginePool::run_combined`]'s runner thread.
#[derive(Default)]
struct Combined {
    state: Mutex<CombinedState>,
    /// Signalled when a job arrives while the runner sleeps, or at close.
    wake: Condvar,
}

#[derive(Default)]
struct CombinedState {
    jobs: VecDeque<CombinedJob>,
    /// The runner is asleep on `wake` (a pusher must signal it).
    asleep: bool,
    /// The pool is gone: the runner runs what is queued and ends.
    closed: bool,
}

/// The runner thread's handle, shared by the pool's clones: when the last
/// clone drops it, the thread runs what is queued and ends.
struct CombinedRunner {
    queue: Arc<Combined>,
}

impl std::fmt::Debug for CombinedRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CombinedRunner").finish_non_exhaustive()
    }
}

impl CombinedRunner {
    fn start() -> CombinedRunner {
        let queue = Arc::new(Combined::default());
        let runner = queue.clone();
        std::thread::Builder::new()
            .name("meridian-engine".into())
            .spawn(move || runner.run())
            .expect("spawning the engine runner thread");
        CombinedRunner { queue }
    }

    /// Queues `job`, waking the runner if it sleeps.
    fn push(&self, job: CombinedJob) {
        let wake = {
            let mut state = self.queue.state.lock().expect("combined queue lock");
            state.jobs.push_back(job);
            std::mem::replace(&mut state.asleep, false)
        };
        if wake {
            self.queue.wake.notify_one();
        }
    }
}

impl Drop for CombinedRunner {
    fn drop(&mut self) {
        self.queue.state.lock().expect("combined queue lock").closed = true;
        self.queue.wake.notify_one();
    }
}

impl Combined {
    /// The runner thread: takes everything queued, runs it in arrival
    /// order, and sleeps when the queue is empty, until the pool is gone.
    /// Jobs catch their own panics, so one bad job never stops the runner.
    fn run(&self) {
        // The batch being run; swapped with the queue so that neither
        // side allocates a new buffer per batch.
        let mut batch = VecDeque::new();
        loop {
            {
                let mut state = self.state.lock().expect("combined queue lock");
                while state.jobs.is_empty() {
                    if state.closed {
                        return;
                    }
                    state.asleep = true;
                    state = self.wake.wait(state).expect("combined queue lock");
                }
                std::mem::swap(&mut batch, &mut state.jobs);
            }
            for job in batch.drain(..) {
                job();
            }
        }
    }
}

impl Default for EnginePool {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        EnginePool::new((cores * ENGINE_CALLS_PER_CORE).clamp(MIN_ENGINE_CALLS, MAX_ENGINE_CALLS))
    }
}

impl EnginePool {
    /// A pool running at most `size` (at least 1) calls at once.
    pub fn new(size: usize) -> EnginePool {
        let size = size.max(1);
        EnginePool {
            permits: Arc::new(Semaphore::new(size)),
            size,
            combined: Arc::new(CombinedRunner::start()),
        }
    }

    /// How many calls may run at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// A new connection's share of the pool: half of it, so that no
    /// connection can occupy every slot (see the module docs).
    pub fn share(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new((self.size / 2).max(1)))
    }

    /// Calls running right now.
    pub fn busy(&self) -> usize {
        self.size - self.permits.available_permits()
    }

    /// Runs `call` on a blocking thread once fewer than [`size`](Self::size)
    /// calls are running, and returns its result. A panic in `call` is
    /// resumed here (a bug crashes the request's task, as it would inline);
    /// a runtime shutting down before the call ran reads as
    /// [`EngineError::Shutdown`].
    pub async fn run<T, F>(&self, call: F) -> EngineResult<T>
    where
        F: FnOnce() -> EngineResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.compute(call)
            .await
            .unwrap_or(Err(EngineError::Shutdown))
    }

    /// Runs `work` on the pool's runner thread, combined with the other
    /// callers' `run_combined` work: one dedicated thread (outside the
    /// [`size`](Self::size) slots) takes whatever is queued and runs it in
    /// arrival order, and sleeps on a condition variable when the queue is
    /// empty. Jobs that arrive while it runs cost no thread hand-off of
    /// their own (a hand-off, a futex wake and a context switch each way,
    /// costs more than a small engine call), and a job arriving at an idle
    /// runner costs one wake, not a task spawn, a pool permit and a
    /// blocking-pool hand-off (`benches/README.md`, "Before and after the
    /// layout move"). For short jobs only: each waits for the ones queued
    /// before it. The queue holds at most one job per caller awaiting it
    /// (RESP connections, bounded by `[resp] max_connections`; native
    /// requests, bounded by the client door's connections × requests in
    /// flight). A panic in `work` is resumed here; `None` if the job was
    /// dropped without running (the pool is gone).
    pub async fn run_combined<T, F>(&self, work: F) -> Option<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: CombinedJob = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = tx.send(outcome);
        });
        self.combined.push(job);
        match rx.await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => None,
        }
    }

    /// Runs CPU-heavy work that is not an engine call (validating,
    /// decoding or encoding a large frame) the same way; `None` if the
    /// runtime shut down before it ran.
    pub async fn compute<T, F>(&self, work: F) -> Option<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // The connection's share first: a connection past its share waits
        // here, not in the pool's queue ahead of other connections.
        let share = SHARE.try_with(Arc::clone).ok();
        let _share = match share {
            Some(s) => Some(
                s.acquire_owned()
                    .await
                    .expect("a pool share's semaphore is never closed"),
            ),
            None => None,
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the engine pool's semaphore is never closed");
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => Some(result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// The call runs off the runtime's thread: on a current-thread runtime,
    /// a call that waits for an async task to signal it would never see the
    /// signal if it ran inline (the runtime's one thread would be blocked
    /// in it).
    #[tokio::test(flavor = "current_thread")]
    async fn calls_run_off_the_async_thread() {
        let pool = EnginePool::new(2);
        let got = with_async_signal(|signalled| {
            pool.run(move || Ok(signalled.recv_timeout(Duration::from_secs(10)).is_ok()))
        })
        .await
        .unwrap();
        assert!(got, "the call blocked the runtime's thread");
    }

    /// Awaits `call`, handing it a receiver that a task on this runtime
    /// signals once it gets to run: a call that waits for the signal sees
    /// it only if it does not hold the runtime's thread.
    async fn with_async_signal<F: std::future::Future>(
        call: impl FnOnce(std::sync::mpsc::Receiver<()>) -> F,
    ) -> F::Output {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let signal = tokio::spawn(async move {
            tokio::task::yield_now().await;
            // Gone only if the call gave up waiting: the caller's assert says so.
            let _ = tx.send(());
        });
        let got = call(rx).await;
        signal.await.unwrap();
        got
    }

    /// One connection's calls use at most its share of the pool: another
    /// connection's call runs while the first has many waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_uses_at_most_its_share() {
        let pool = EnginePool::new(4);
        let share = pool.share();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let mut hog = Vec::new();
        for _ in 0..8 {
            let pool = pool.clone();
            let share = share.clone();
            let released = released.clone();
            hog.push(tokio::spawn(with_share(share, async move {
                pool.run(move || {
                    let _ = released
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(10));
                    Ok(())
                })
                .await
            })));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.busy() <= 2,
            "{} calls of one connection running",
            pool.busy()
        );
        let other = pool.share();
        let ran = tokio::time::timeout(
            Duration::from_secs(5),
            with_share(other, pool.run(|| Ok(42))),
        )
        .await;
        assert_eq!(ran.ok().and_then(Result::ok), Some(42));
        for _ in 0..8 {
            let _ = release.send(());
        }
        for h in hog {
            h.await.unwrap().unwrap();
        }
    }

    /// A combined job runs off the runtime's thread, like a pool call.
    #[tokio::test(flavor = "current_thread")]
    async fn combined_jobs_run_off_the_async_thread() {
        let pool = EnginePool::new(2);
        let got = with_async_signal(|signalled| {
            pool.run_combined(move || signalled.recv_timeout(Duration::from_secs(10)).is_ok())
        })
        .await;
        assert_eq!(got, Some(true), "the job blocked the runtime's thread");
    }

    /// Combined jobs all run, each exactly once, in order per caller, off
    /// the async thread; a panicking job is resumed in its caller and does
    /// not stop the runner.
    #[tokio::test(flavor = "current_thread")]
    async fn combined_jobs_run_in_order_and_survive_a_panic() {
        let pool = EnginePool::new(2);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut callers = Vec::new();
        for caller in 0..8u32 {
            let pool = pool.clone();
            let log = log.clone();
            callers.push(tokio::spawn(async move {
                for i in 0..20u32 {
                    let log = log.clone();
                    let got = pool
                        .run_combined(move || {
                            log.lock().unwrap().push((caller, i));
                            caller * 100 + i
                        })
                        .await;
                    assert_eq!(got, Some(caller * 100 + i));
                }
            }));
        }
        let panicked = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run_combined(|| panic!("a bug in one job")).await }
        });
        for c in callers {
            c.await.unwrap();
        }
        assert!(panicked.await.unwrap_err().is_panic());
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 8 * 20);
        for caller in 0..8u32 {
            let mine: Vec<u32> = log
                .iter()
                .filter(|(c, _)| *c == caller)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(mine, (0..20).collect::<Vec<_>>());
        }
        // The runner sleeps once the queue is empty, and a new job wakes it.
        assert_eq!(pool.run_combined(|| 7).await, Some(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_size_calls_run_at_once() {
        let pool = EnginePool::new(3);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let calls: Vec<_> = (0..12)
            .map(|_| {
                let pool = pool.clone();
                let running = running.clone();
                let most = most.clone();
                tokio::spawn(async move {
                    pool.run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
                })
            })
            .collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert_eq!(pool.busy(), 0);
    }
}
