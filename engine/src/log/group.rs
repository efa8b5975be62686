//! Group commit: many writers, one fsync.
//!
//! Writers append records to the log file themselves (under the log's
//! writer lock) and report the new end position with [`GroupCommit::written`].
//! A writer that needs durability then waits for `synced >= its end`
//! ([`GroupCommit::wait`], or [`GroupCommit::on_durable`] with a callback).
//! One syncer thread ([`GroupCommit::run_syncer`]) repeatedly takes the
//! current written position, fdatasyncs once without holding the lock, and
//! then releases every waiter that sync covered. Writers that arrive while a
//! sync is running are covered by the next one, so under load one fsync
//! serves many writes.
//!
//! The invariants (checked by the loom models below): a waiter is released
//! with success only after a sync that started after its record was
//! written; and only after every callback registered for a position that
//! sync covered has run (the engine's callbacks record which dots are
//! durable, and whoever waited must find its dot there). After a failed
//! fsync nothing is known to be durable any more: the state is poisoned,
//! every current and future waiter gets the error.

use std::time::Duration;

#[cfg(loom)]
use loom::sync::{Condvar, Mutex};
#[cfg(not(loom))]
use std::sync::{Condvar, Mutex};

/// Called once the position it waits for is durable, or with the reason
/// it never will be.
pub(crate) type Callback = Box<dyn FnOnce(Result<(), String>) + Send>;

struct State {
    /// End of the last record handed to the OS.
    written: u64,
    /// Everything below this position has been fdatasync'ed.
    synced: u64,
    /// Everything below this position is synced *and* every callback for
    /// it has run: what waiters and new callbacks go by.
    released: u64,
    /// Highest position some waiter needs durable.
    requested: u64,
    poisoned: Option<String>,
    shutdown: bool,
    callbacks: Vec<(u64, Callback)>,
}

pub(crate) struct GroupCommit {
    state: Mutex<State>,
    /// Wakes the syncer.
    work: Condvar,
    /// Wakes waiters after a sync.
    done: Condvar,
}

impl GroupCommit {
    pub(crate) fn new(start: u64) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                written: start,
                synced: start,
                released: start,
                requested: start,
                poisoned: None,
                shutdown: false,
                callbacks: Vec::new(),
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        }
    }

    /// Reports that everything below `end` has been written to the file.
    pub(crate) fn written(&self, end: u64) {
        let mut st = self.state.lock().unwrap();
        if end > st.written {
            st.written = end;
        }
    }

    /// Fails if a previous fsync failed.
    pub(crate) fn check(&self) -> Result<(), String> {
        match &self.state.lock().unwrap().poisoned {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    #[cfg(test)]
    pub(crate) fn synced(&self) -> u64 {
        self.state.lock().unwrap().synced
    }

    /// Blocks until everything below `lsn` is durable.
    pub(crate) fn wait(&self, lsn: u64) -> Result<(), String> {
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(e) = &st.poisoned {
                return Err(e.clone());
            }
            if st.released >= lsn {
                return Ok(());
            }
            if st.shutdown && st.synced < lsn {
                return Err("log closed before the write was durable".into());
            }
            if lsn > st.requested {
                st.requested = lsn;
                self.work.notify_one();
            }
            st = self.done.wait(st).unwrap();
        }
    }

    /// Runs `callback` once everything below `lsn` is durable (at once, on
    /// this thread, if it already is; otherwise on the syncer thread), and
    /// asks for a sync covering `lsn`.
    pub(crate) fn on_durable(&self, lsn: u64, callback: Callback) {
        self.register(lsn, callback, true)
    }

    /// Like [`GroupCommit::on_durable`], but asks for no sync: the callback
    /// runs after whichever sync covers `lsn` first (a periodic one, or one
    /// someone else asked for).
    pub(crate) fn on_durable_passive(&self, lsn: u64, callback: Callback) {
        self.register(lsn, callback, false)
    }

    fn register(&self, lsn: u64, callback: Callback, request: bool) {
        let mut st = self.state.lock().unwrap();
        if let Some(e) = &st.poisoned {
            let e = e.clone();
            drop(st);
            callback(Err(e));
            return;
        }
        if st.released >= lsn {
            drop(st);
            callback(Ok(()));
            return;
        }
        if st.shutdown && st.synced < lsn {
            drop(st);
            callback(Err("log closed before the write was durable".into()));
            return;
        }
        // Synced but not yet released: the syncer runs it before releasing.
        st.callbacks.push((lsn, callback));
        if request && lsn > st.requested {
            st.requested = lsn;
            self.work.notify_one();
        }
    }

    /// Asks the syncer to make everything written so far durable, without
    /// waiting.
    pub(crate) fn request_all(&self) {
        let mut st = self.state.lock().unwrap();
        if st.written > st.requested {
            st.requested = st.written;
            self.work.notify_one();
        }
    }

    /// Stops the syncer after it has synced everything written.
    pub(crate) fn shutdown(&self) {
        let mut st = self.state.lock().unwrap();
        st.shutdown = true;
        self.work.notify_one();
        self.done.notify_all();
    }

    /// The syncer loop. `sync(target)` must make every byte below `target`
    /// durable; `after(synced)` runs after each successful sync, before
    /// callbacks run and waiters are released. Callbacks run on this thread,
    /// without the lock; waiters are released once every callback for the
    /// synced positions has run. With `periodic`, the syncer also syncs on
    /// that interval whether or not anyone waits.
    pub(crate) fn run_syncer(
        &self,
        mut sync: impl FnMut(u64) -> std::io::Result<()>,
        mut after: impl FnMut(u64),
        periodic: Option<Duration>,
    ) {
        loop {
            let target = {
                let mut st = self.state.lock().unwrap();
                loop {
                    if st.poisoned.is_some() {
                        return;
                    }
                    let wanted = st.requested > st.synced;
                    if wanted || (st.shutdown && st.written > st.synced) {
                        break;
                    }
                    if st.shutdown {
                        return;
                    }
                    match periodic {
                        None => st = self.work.wait(st).unwrap(),
                        Some(every) => {
                            st = wait_timeout(&self.work, st, every);
                            if st.written > st.synced {
                                break;
                            }
                        }
                    }
                }
                st.written
            };
            let result = sync(target);
            let released: Vec<(u64, Callback)>;
            let outcome: Result<(), String>;
            {
                let mut st = self.state.lock().unwrap();
                match result {
                    Ok(()) => {
                        st.synced = st.synced.max(target);
                        after(st.synced);
                        let synced = st.synced;
                        let (ready, waiting) = std::mem::take(&mut st.callbacks)
                            .into_iter()
                            .partition(|(lsn, _)| *lsn <= synced);
                        st.callbacks = waiting;
                        released = ready;
                        outcome = Ok(());
                    }
                    Err(e) => {
                        let msg = format!("fdatasync failed: {e}");
                        tracing::error!(error = %e, "log fdatasync failed; refusing further writes");
                        st.poisoned = Some(msg.clone());
                        released = std::mem::take(&mut st.callbacks);
                        outcome = Err(msg);
                        self.done.notify_all();
                    }
                }
            }
            for (_, cb) in released {
                cb(outcome.clone());
            }
            if outcome.is_err() {
                return;
            }
            // Callbacks registered for synced positions meanwhile run too;
            // then waiters for everything synced are released.
            loop {
                let ready: Vec<(u64, Callback)> = {
                    let mut st = self.state.lock().unwrap();
                    let synced = st.synced;
                    let (ready, waiting) = std::mem::take(&mut st.callbacks)
                        .into_iter()
                        .partition(|(lsn, _)| *lsn <= synced);
                    st.callbacks = waiting;
                    if ready.is_empty() {
                        st.released = synced;
                        self.done.notify_all();
                        break;
                    }
                    ready
                };
                for (_, cb) in ready {
                    cb(Ok(()));
                }
            }
        }
    }
}

#[cfg(not(loom))]
fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: std::sync::MutexGuard<'a, T>,
    d: Duration,
) -> std::sync::MutexGuard<'a, T> {
    cv.wait_timeout(guard, d).unwrap().0
}

#[cfg(loom)]
fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: loom::sync::MutexGuard<'a, T>,
    _d: Duration,
) -> loom::sync::MutexGuard<'a, T> {
    cv.wait(guard).unwrap()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn many_writers_share_few_syncs() {
        let gc = Arc::new(GroupCommit::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let syncer = {
            let gc = gc.clone();
            let syncs = syncs.clone();
            std::thread::spawn(move || {
                gc.run_syncer(
                    |_| {
                        syncs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        Ok(())
                    },
                    |_| {},
                    None,
                )
            })
        };
        let pos = Arc::new(std::sync::Mutex::new(0u64));
        let writers: Vec<_> = (0..16)
            .map(|_| {
                let gc = gc.clone();
                let pos = pos.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let end = {
                            let mut p = pos.lock().unwrap();
                            *p += 10;
                            gc.written(*p);
                            *p
                        };
                        gc.wait(end).unwrap();
                        assert!(gc.synced() >= end);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        gc.shutdown();
        syncer.join().unwrap();
        let n = syncs.load(Ordering::SeqCst);
        assert!((1..=320).contains(&n), "{n} syncs for 320 writes");
    }

    #[test]
    fn failed_sync_poisons_every_waiter() {
        let gc = Arc::new(GroupCommit::new(0));
        let syncer = {
            let gc = gc.clone();
            std::thread::spawn(move || {
                gc.run_syncer(|_| Err(std::io::Error::other("disk on fire")), |_| {}, None)
            })
        };
        gc.written(10);
        assert!(gc.wait(10).unwrap_err().contains("disk on fire"));
        assert!(gc.check().is_err());
        let (tx, rx) = std::sync::mpsc::channel();
        gc.on_durable(
            20,
            Box::new(move |r| {
                tx.send(r).unwrap();
            }),
        );
        assert!(rx.recv().unwrap().is_err());
        syncer.join().unwrap();
    }

    #[test]
    fn callbacks_fire_after_the_covering_sync() {
        let gc = Arc::new(GroupCommit::new(0));
        let syncer = {
            let gc = gc.clone();
            std::thread::spawn(move || gc.run_syncer(|_| Ok(()), |_| {}, None))
        };
        gc.written(5);
        let (tx, rx) = std::sync::mpsc::channel();
        let probe = gc.clone();
        gc.on_durable(
            5,
            Box::new(move |r| {
                // Callbacks run without the lock held: reading state is fine.
                tx.send((r, probe.synced())).unwrap();
            }),
        );
        let (r, synced) = rx.recv().unwrap();
        assert!(r.is_ok());
        assert!(synced >= 5);
        gc.shutdown();
        syncer.join().unwrap();
    }
}

/// loom models of the handoff: run with
/// `RUSTFLAGS="--cfg loom" cargo test -p meridian-engine --release --lib log::group::loom_model`
/// (with a target directory of its own: the cfg changes every dependency).
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn every_writer_is_released_only_after_a_sync_covering_its_record() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let gc = Arc::new(GroupCommit::new(0));
            // What the "disk" has durably: the target of the last completed sync.
            let durable = Arc::new(AtomicU64::new(0));
            // The log's append position, and the writer lock around appends.
            let log = Arc::new(loom::sync::Mutex::new(0u64));
            let syncer = {
                let gc = gc.clone();
                let durable = durable.clone();
                loom::thread::spawn(move || {
                    gc.run_syncer(
                        |target| {
                            durable.fetch_max(target, Ordering::SeqCst);
                            Ok(())
                        },
                        |_| {},
                        None,
                    )
                })
            };
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    let gc = gc.clone();
                    let durable = durable.clone();
                    let log = log.clone();
                    loom::thread::spawn(move || {
                        let end = {
                            let mut pos = log.lock().unwrap();
                            *pos += 1;
                            gc.written(*pos);
                            *pos
                        };
                        gc.wait(end).unwrap();
                        assert!(
                            durable.load(Ordering::SeqCst) >= end,
                            "released before a sync covered its record"
                        );
                        assert!(gc.synced() >= end);
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            gc.shutdown();
            syncer.join().unwrap();
        });
    }

    /// The engine records durable dots from `on_durable` callbacks and
    /// acknowledges writes after `wait`: a writer released by `wait` must
    /// find its own callback already run, and every callback runs exactly
    /// once, whether it was registered before, during or after the sync
    /// that covered it.
    #[test]
    fn waiters_are_released_only_after_the_callbacks_of_their_sync() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let gc = Arc::new(GroupCommit::new(0));
            // Bit `lsn` set: the callback for `lsn` ran; the count catches
            // callbacks that run twice.
            let ran = Arc::new(AtomicU64::new(0));
            let calls = Arc::new(AtomicU64::new(0));
            let log = Arc::new(loom::sync::Mutex::new(0u64));
            let syncer = {
                let gc = gc.clone();
                loom::thread::spawn(move || gc.run_syncer(|_| Ok(()), |_| {}, None))
            };
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    let gc = gc.clone();
                    let ran = ran.clone();
                    let calls = calls.clone();
                    let log = log.clone();
                    loom::thread::spawn(move || {
                        let end = {
                            let mut pos = log.lock().unwrap();
                            *pos += 1;
                            gc.written(*pos);
                            *pos
                        };
                        let (r, c) = (ran.clone(), calls.clone());
                        gc.on_durable(
                            end,
                            Box::new(move |res| {
                                res.unwrap();
                                r.fetch_or(1 << end, Ordering::SeqCst);
                                c.fetch_add(1, Ordering::SeqCst);
                            }),
                        );
                        gc.wait(end).unwrap();
                        assert!(
                            ran.load(Ordering::SeqCst) & (1 << end) != 0,
                            "released before the callback for its position ran"
                        );
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            gc.shutdown();
            syncer.join().unwrap();
            assert_eq!(ran.load(Ordering::SeqCst), 0b110);
            assert_eq!(calls.load(Ordering::SeqCst), 2);
        });
    }
}
