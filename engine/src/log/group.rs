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
//! every current and future waiter gets the error. The log also poisons it
//! from outside ([`GroupCommit::poison`]) when another fsync of the log
//! fails (a segment roll); a sync running meanwhile then releases no one.
//!
//! A panic on the syncer thread (in `sync` or in a callback) poisons too,
//! and every callback is settled exactly once (with an error if a panic
//! unwound past it), so nobody waits for a thread that is gone.
//!
//! Without a syncer thread (a deterministic simulation owns every thread),
//! the owner runs the same rounds itself: [`GroupCommit::run_round`] does
//! what the syncer's loop does once it has a target (`sync_round`, shared
//! by both), and [`GroupCommit::poll`] replaces the blocking wait.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

#[cfg(loom)]
use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
use std::sync::{Condvar, Mutex, MutexGuard};

/// Called once the position it waits for is durable, or with the reason
/// it never will be.
pub(crate) type Callback = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A registered callback. Called exactly once: by whoever settles it, or,
/// if it is dropped unsettled (a panic unwound past it), with an error
/// from its `Drop`, so no waiter built on a callback waits forever.
struct Pending {
    lsn: u64,
    callback: Option<Callback>,
}

impl Pending {
    fn settle(mut self, result: Result<(), String>) {
        if let Some(cb) = self.callback.take() {
            cb(result)
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(cb) = self.callback.take() {
            cb(Err(
                "the log sync thread stopped before the write was durable".into(),
            ))
        }
    }
}

/// Takes the lock even if a thread panicked while holding it. Every
/// critical section in this module only assigns fields or moves a vector
/// in or out (nothing that can panic halfway and leave a half-updated
/// state; allocation failure aborts), so the state behind a poisoned lock
/// is consistent, and refusing it would turn one panic into a permanent
/// wedge of every writer.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

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
    callbacks: Vec<Pending>,
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
        let mut st = lock(&self.state);
        if end > st.written {
            st.written = end;
        }
    }

    /// Fails if the log is poisoned.
    pub(crate) fn check(&self) -> Result<(), String> {
        match &lock(&self.state).poisoned {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Nothing is known to be durable any more (an fsync of some log file
    /// failed, or the sync thread died): every waiter, current and future,
    /// gets `reason`, and no later sync releases anyone. The first reason
    /// sticks. Callbacks are failed by the sync thread (never on the
    /// caller's thread, which may hold the log's locks), or at once when
    /// registered after this.
    pub(crate) fn poison(&self, reason: String) {
        let mut st = lock(&self.state);
        if st.poisoned.is_none() {
            st.poisoned = Some(reason);
        }
        self.work.notify_all();
        self.done.notify_all();
    }

    /// The syncer is gone for good (it panicked): poison, and fail every
    /// callback on this thread since nobody else will.
    fn fail_all(&self, reason: String) {
        self.poison(reason);
        let failed = std::mem::take(&mut lock(&self.state).callbacks);
        let reason = self.check().unwrap_err();
        for p in failed {
            p.settle(Err(reason.clone()));
        }
    }

    #[cfg(test)]
    pub(crate) fn synced(&self) -> u64 {
        lock(&self.state).synced
    }

    /// Blocks until everything below `lsn` is durable.
    pub(crate) fn wait(&self, lsn: u64) -> Result<(), String> {
        let mut st = lock(&self.state);
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
            st = wait(&self.done, st);
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
        let mut st = lock(&self.state);
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
        st.callbacks.push(Pending {
            lsn,
            callback: Some(callback),
        });
        if request && lsn > st.requested {
            st.requested = lsn;
            self.work.notify_one();
        }
    }

    /// Asks the syncer to make everything written so far durable, without
    /// waiting.
    pub(crate) fn request_all(&self) {
        let mut st = lock(&self.state);
        if st.written > st.requested {
            st.requested = st.written;
            self.work.notify_one();
        }
    }

    /// Stops the syncer after it has synced everything written.
    pub(crate) fn shutdown(&self) {
        let mut st = lock(&self.state);
        st.shutdown = true;
        self.work.notify_one();
        self.done.notify_all();
    }

    /// Whether everything written was synced and nothing is poisoned (after
    /// the syncer stopped: whether the log ended cleanly).
    pub(crate) fn all_synced(&self) -> bool {
        let st = lock(&self.state);
        st.poisoned.is_none() && st.synced >= st.written
    }

    /// The syncer loop. `sync(target)` must make every byte below `target`
    /// durable. Callbacks run on this thread, without the lock; waiters are
    /// released once every callback for the synced positions has run. With
    /// `periodic`, the syncer also syncs on that interval whether or not
    /// anyone waits.
    ///
    /// A panic anywhere in here (in `sync`, or in a callback) poisons the
    /// log and fails every waiter and callback instead of leaving them
    /// waiting for a thread that is gone.
    pub(crate) fn run_syncer(
        &self,
        sync: impl FnMut(u64) -> std::io::Result<()>,
        periodic: Option<Duration>,
    ) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.syncer_loop(sync, periodic))) {
            let msg = panic_message(&*payload);
            tracing::error!(panic = %msg, "the log sync thread panicked; refusing further writes");
            self.fail_all(format!("the log sync thread panicked: {msg}"));
        }
    }

    /// Runs callbacks, catching a panic in any of them: the others still
    /// run, and the log is poisoned (a callback that panics is a bug; what
    /// it was meant to record is now unknown).
    fn settle_all(&self, ready: Vec<Pending>, result: &Result<(), String>) {
        for p in ready {
            let r = result.clone();
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| p.settle(r))) {
                let msg = panic_message(&*payload);
                tracing::error!(panic = %msg, "a durability callback panicked; refusing further writes");
                self.poison(format!("a durability callback panicked: {msg}"));
            }
        }
    }

    /// Fails every registered callback with the poison reason (syncer thread).
    fn fail_registered(&self) {
        let (failed, reason) = {
            let mut st = lock(&self.state);
            let reason = st.poisoned.clone().unwrap_or_default();
            (std::mem::take(&mut st.callbacks), reason)
        };
        self.settle_all(failed, &Err(reason));
    }

    fn syncer_loop(
        &self,
        mut sync: impl FnMut(u64) -> std::io::Result<()>,
        periodic: Option<Duration>,
    ) {
        loop {
            let target = {
                let mut st = lock(&self.state);
                loop {
                    if st.poisoned.is_some() {
                        drop(st);
                        self.fail_registered();
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
                        None => st = wait(&self.work, st),
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
            if !self.sync_round(target, &mut sync) {
                return;
            }
        }
    }

    /// One round of the syncer: fdatasync up to `target` (without the
    /// lock), then run the callbacks that sync covered and release the
    /// waiters. Returns `false` if the log is poisoned (now or by someone
    /// else meanwhile): every callback has then been failed.
    fn sync_round(&self, target: u64, sync: &mut impl FnMut(u64) -> std::io::Result<()>) -> bool {
        let result = sync(target);
        let released: Vec<Pending> = {
            let mut st = lock(&self.state);
            if let Err(e) = &result
                && st.poisoned.is_none()
            {
                tracing::error!(error = %e, "log fdatasync failed; refusing further writes");
                st.poisoned = Some(format!("fdatasync failed: {e}"));
            }
            if st.poisoned.is_some() {
                // A failed fsync here or anywhere else on the log (a
                // segment roll) while this one ran: the pages it
                // covered may have been dropped, so even a successful
                // return proves nothing. Release no one.
                self.done.notify_all();
                drop(st);
                self.fail_registered();
                return false;
            }
            st.synced = st.synced.max(target);
            let synced = st.synced;
            let (ready, waiting) = std::mem::take(&mut st.callbacks)
                .into_iter()
                .partition(|p| p.lsn <= synced);
            st.callbacks = waiting;
            ready
        };
        self.settle_all(released, &Ok(()));
        // Callbacks registered for synced positions meanwhile run too;
        // then waiters for everything synced are released.
        loop {
            let ready: Vec<Pending> = {
                let mut st = lock(&self.state);
                if st.poisoned.is_some() {
                    break;
                }
                let synced = st.synced;
                let (ready, waiting) = std::mem::take(&mut st.callbacks)
                    .into_iter()
                    .partition(|p| p.lsn <= synced);
                st.callbacks = waiting;
                if ready.is_empty() {
                    st.released = synced;
                    self.done.notify_all();
                    break;
                }
                ready
            };
            self.settle_all(ready, &Ok(()));
        }
        true
    }

    /// Without a syncer thread (a deterministic simulation drives the
    /// fsyncs itself): whether a sync was asked for and has not run.
    pub(crate) fn sync_wanted(&self) -> bool {
        let st = lock(&self.state);
        st.poisoned.is_none() && st.requested > st.synced
    }

    /// Without a syncer thread: runs one round of what the syncer would do
    /// next, on the calling thread. With `all`, syncs everything written
    /// even if nobody asked (the periodic sync). Returns whether an fsync
    /// ran; `Err` with the reason if the log is poisoned (every callback
    /// then failed). A panic in `sync` or a callback is caught and poisons,
    /// as on the syncer thread.
    pub(crate) fn run_round(
        &self,
        all: bool,
        mut sync: impl FnMut(u64) -> std::io::Result<()>,
    ) -> Result<bool, String> {
        let target = {
            let st = lock(&self.state);
            if st.poisoned.is_some() {
                drop(st);
                self.fail_registered();
                return Err(self.check().unwrap_err());
            }
            let wanted = st.requested > st.synced || (all && st.written > st.synced);
            if !wanted {
                return Ok(false);
            }
            st.written
        };
        match catch_unwind(AssertUnwindSafe(|| self.sync_round(target, &mut sync))) {
            Ok(true) => Ok(true),
            Ok(false) => Err(self.check().unwrap_err()),
            Err(payload) => {
                let msg = panic_message(&*payload);
                tracing::error!(panic = %msg, "a log sync panicked; refusing further writes");
                self.fail_all(format!("the log sync panicked: {msg}"));
                Err(self.check().unwrap_err())
            }
        }
    }

    /// Without a syncer thread: whether everything below `lsn` is durable
    /// (`Ok(false)`: not yet, and a sync covering it is now asked for).
    pub(crate) fn poll(&self, lsn: u64) -> Result<bool, String> {
        let mut st = lock(&self.state);
        if let Some(e) = &st.poisoned {
            return Err(e.clone());
        }
        if st.released >= lsn {
            return Ok(true);
        }
        if st.shutdown && st.synced < lsn {
            return Err("log closed before the write was durable".into());
        }
        if lsn > st.requested {
            st.requested = lsn;
        }
        Ok(false)
    }
}

#[cfg(not(loom))]
fn wait_timeout<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>, d: Duration) -> MutexGuard<'a, T> {
    cv.wait_timeout(guard, d)
        .unwrap_or_else(|e| e.into_inner())
        .0
}

#[cfg(loom)]
fn wait_timeout<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>, _d: Duration) -> MutexGuard<'a, T> {
    wait(cv, guard)
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
        // Each sync takes 2 ms and 16 writers are waiting at any time: a
        // sync covers every record written while the previous one ran, so
        // about one sync per round of 16 writes. Syncing each write alone
        // would take 320; half of that fails the test.
        let n = syncs.load(Ordering::SeqCst);
        assert!(
            n < 320 / 2,
            "{n} syncs for 320 writes: writers do not share syncs"
        );
    }

    #[test]
    fn failed_sync_poisons_every_waiter() {
        let gc = Arc::new(GroupCommit::new(0));
        let syncer = {
            let gc = gc.clone();
            std::thread::spawn(move || {
                gc.run_syncer(|_| Err(std::io::Error::other("disk on fire")), None)
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
            std::thread::spawn(move || gc.run_syncer(|_| Ok(()), None))
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

#[cfg(all(test, not(loom)))]
mod poison_tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;

    /// A failed fsync elsewhere on the log (a segment roll) while the
    /// syncer's own fsync runs: the syncer's fsync then returns success
    /// (Linux reports a writeback error to one caller), and must release
    /// no one.
    #[test]
    fn a_poison_during_a_sync_releases_no_one() {
        let gc = Arc::new(GroupCommit::new(0));
        let (entered_tx, entered_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let syncer = {
            let gc = gc.clone();
            std::thread::spawn(move || {
                gc.run_syncer(
                    move |_| {
                        entered_tx.send(()).unwrap();
                        go_rx.recv().unwrap();
                        Ok(())
                    },
                    None,
                )
            })
        };
        gc.written(10);
        let (tx, rx) = mpsc::channel();
        gc.on_durable(10, Box::new(move |r| tx.send(r).unwrap()));
        let waiter = {
            let gc = gc.clone();
            std::thread::spawn(move || gc.wait(10))
        };
        entered_rx.recv().unwrap();
        gc.poison("fdatasync at roll failed".into());
        go_tx.send(()).unwrap();
        assert!(waiter.join().unwrap().unwrap_err().contains("roll"));
        assert!(rx.recv().unwrap().is_err());
        assert!(gc.synced() < 10, "a sync overlapping the failure advanced");
        syncer.join().unwrap();
    }

    #[test]
    fn a_panic_in_the_sync_fails_every_waiter_and_callback() {
        let gc = Arc::new(GroupCommit::new(0));
        let syncer = {
            let gc = gc.clone();
            std::thread::spawn(move || gc.run_syncer(|_| panic!("disk driver bug"), None))
        };
        gc.written(10);
        let (tx, rx) = mpsc::channel();
        gc.on_durable(10, Box::new(move |r| tx.send(r).unwrap()));
        let e = gc.wait(10).unwrap_err();
        assert!(
            e.contains("panicked") && e.contains("disk driver bug"),
            "{e}"
        );
        assert!(rx.recv().unwrap().is_err());
        assert!(gc.check().is_err());
        syncer.join().unwrap();
    }

    #[test]
    fn a_panicking_callback_poisons_without_stranding_the_others() {
        let gc = Arc::new(GroupCommit::new(0));
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let syncer = {
            let gc = gc.clone();
            std::thread::spawn(move || {
                gc.run_syncer(
                    move |_| {
                        go_rx.recv().unwrap();
                        Ok(())
                    },
                    None,
                )
            })
        };
        gc.written(10);
        let (tx, rx) = mpsc::channel();
        gc.on_durable(5, Box::new(|_| panic!("callback bug")));
        gc.on_durable(10, Box::new(move |r| tx.send(r).unwrap()));
        go_tx.send(()).unwrap();
        // Its position was synced: the truth is "durable".
        assert!(rx.recv().unwrap().is_ok());
        let e = gc.wait(10).unwrap_err();
        assert!(e.contains("callback bug"), "{e}");
        syncer.join().unwrap();
    }

    #[test]
    fn a_dropped_callback_is_failed_not_forgotten() {
        let gc = GroupCommit::new(0);
        gc.written(10);
        let (tx, rx) = mpsc::channel();
        gc.on_durable(10, Box::new(move |r| tx.send(r).unwrap()));
        drop(gc);
        assert!(rx.recv().unwrap().is_err());
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
                loom::thread::spawn(move || gc.run_syncer(|_| Ok(()), None))
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

    /// Three writers and a sync that fails the second time it runs: a
    /// writer is released with success only after a successful sync
    /// covered its record; once a sync failed, nobody else is released,
    /// the log stays poisoned, and every callback runs exactly once (with
    /// the error if its sync never succeeded).
    #[test]
    fn three_writers_and_a_failing_sync() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(|| {
            let gc = Arc::new(GroupCommit::new(0));
            let durable = Arc::new(AtomicU64::new(0));
            let calls = Arc::new(AtomicU64::new(0));
            let early = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let log = Arc::new(loom::sync::Mutex::new(0u64));
            let syncer = {
                let gc = gc.clone();
                let durable = durable.clone();
                let failed = failed.clone();
                let attempts = AtomicU64::new(0);
                loom::thread::spawn(move || {
                    gc.run_syncer(
                        move |target| {
                            if attempts.fetch_add(1, Ordering::SeqCst) == 1 {
                                failed.store(1, Ordering::SeqCst);
                                return Err(std::io::Error::other("EIO"));
                            }
                            durable.fetch_max(target, Ordering::SeqCst);
                            Ok(())
                        },
                        None,
                    )
                })
            };
            let writers: Vec<_> = (0..3)
                .map(|_| {
                    let gc = gc.clone();
                    let durable = durable.clone();
                    let calls = calls.clone();
                    let early = early.clone();
                    let log = log.clone();
                    loom::thread::spawn(move || {
                        let end = {
                            let mut pos = log.lock().unwrap();
                            *pos += 1;
                            gc.written(*pos);
                            *pos
                        };
                        let c = calls.clone();
                        let d = durable.clone();
                        let bad = early.clone();
                        // (Asserting inside a callback would be caught by
                        // the syncer's panic guard: count instead.)
                        gc.on_durable(
                            end,
                            Box::new(move |res| {
                                if res.is_ok() && d.load(Ordering::SeqCst) < end {
                                    bad.fetch_add(1, Ordering::SeqCst);
                                }
                                c.fetch_add(1, Ordering::SeqCst);
                            }),
                        );
                        if gc.wait(end).is_ok() {
                            assert!(
                                durable.load(Ordering::SeqCst) >= end,
                                "released without a successful sync covering its record"
                            );
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            gc.shutdown();
            syncer.join().unwrap();
            assert_eq!(
                calls.load(Ordering::SeqCst),
                3,
                "a callback ran twice or never"
            );
            assert_eq!(
                early.load(Ordering::SeqCst),
                0,
                "a callback was told durable too early"
            );
            if failed.load(Ordering::SeqCst) == 1 {
                assert!(gc.check().is_err(), "a failed sync did not poison");
            }
        });
    }

    /// A segment roll's fsync fails while the syncer's own fsync of the
    /// same file runs. Linux reports the error to one of them, so the
    /// syncer's may "succeed" without writing the dropped pages. The log
    /// serializes fsyncs with the poisoning (`Log::sync_lock`, modelled
    /// here by `sync_lock`): a writer is released only if a sync that
    /// finished before the failure covered its record.
    #[test]
    fn a_roll_failure_racing_a_successful_sync_releases_no_one_uncovered() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(|| {
            let gc = Arc::new(GroupCommit::new(0));
            let durable = Arc::new(AtomicU64::new(0));
            let lost = Arc::new(AtomicU64::new(0));
            let early = Arc::new(AtomicU64::new(0));
            let sync_lock = Arc::new(loom::sync::Mutex::new(()));
            let log = Arc::new(loom::sync::Mutex::new(0u64));
            let syncer = {
                let gc = gc.clone();
                let durable = durable.clone();
                let lost = lost.clone();
                let sync_lock = sync_lock.clone();
                loom::thread::spawn(move || {
                    gc.run_syncer(
                        move |target| {
                            let _g = sync_lock.lock().unwrap();
                            // After the failure the pages are gone: this
                            // fsync "succeeds" and writes nothing.
                            if lost.load(Ordering::SeqCst) == 0 {
                                durable.fetch_max(target, Ordering::SeqCst);
                            }
                            Ok(())
                        },
                        None,
                    )
                })
            };
            let roller = {
                let gc = gc.clone();
                let lost = lost.clone();
                let sync_lock = sync_lock.clone();
                loom::thread::spawn(move || {
                    let _g = sync_lock.lock().unwrap();
                    lost.store(1, Ordering::SeqCst);
                    gc.poison("fdatasync at roll failed".into());
                })
            };
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    let gc = gc.clone();
                    let durable = durable.clone();
                    let early = early.clone();
                    let log = log.clone();
                    loom::thread::spawn(move || {
                        let end = {
                            let mut pos = log.lock().unwrap();
                            *pos += 1;
                            gc.written(*pos);
                            *pos
                        };
                        let d = durable.clone();
                        let bad = early.clone();
                        gc.on_durable(
                            end,
                            Box::new(move |res| {
                                if res.is_ok() && d.load(Ordering::SeqCst) < end {
                                    bad.fetch_add(1, Ordering::SeqCst);
                                }
                            }),
                        );
                        if gc.wait(end).is_ok() {
                            assert!(
                                durable.load(Ordering::SeqCst) >= end,
                                "released by a sync that wrote nothing"
                            );
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            roller.join().unwrap();
            gc.shutdown();
            syncer.join().unwrap();
            assert!(gc.check().is_err());
            assert_eq!(
                early.load(Ordering::SeqCst),
                0,
                "a callback was told durable by a sync that wrote nothing"
            );
        });
    }
}
