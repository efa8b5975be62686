//! A `quorum` write counts a peer only once the peer holds it *durably*
//! (fsynced), never merely applied (docs/architecture.md section 3: each
//! node keeps an applied and a durable context, "durable (applied and
//! fsynced; what it may acknowledge)"; section 7: "`quorum`: Q replicas
//! have it durably", "other replicas count only once they have fsynced
//! it"; section 10 step 7: `Mesh::wait_durable` "resolved by the protocol
//! as peers' acks show the dot in their durable contexts"; section 12
//! "Replication: push plus pull": "Acks carry applied *and durable* dots,
//! and quorum writes wait for `Q − 1` peers' durable dots").
//!
//! To make "applied but not durable" last, the peer's log-sync thread
//! (`meridian-log-sync`, the only thread that fsyncs the log) is stopped
//! with ptrace while the rest of the process runs: it applies the delta and
//! keeps acknowledging what it *applied* in its heartbeats, but its durable
//! context cannot advance. Real `meridian serve` processes, since a
//! process cannot ptrace its own threads.
//!
//! Address block (`127.31.<block>.x`): 81.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use meridian::metrics::scrape_parsed;
use meridian::{CONVERGE, ProcessCluster, Spec, eventually, local_count};
use meridian_client::{Consistency, Error};
use nix::sys::ptrace;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";

/// The deadline of the write that must not be acknowledged: long enough
/// that the peer's heartbeat acks (every 250 ms) of the applied write
/// arrive well before it, even on a loaded machine.
const WRITE_TIMEOUT: Duration = Duration::from_secs(8);

/// The name the kernel shows for the engine's log-sync thread
/// (`meridian-log-sync`, cut to 15 bytes).
const SYNC_THREAD: &str = "meridian-log-sy";

/// The thread id of `pid`'s thread named `name`.
fn thread_named(pid: u32, name: &str) -> Result<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            found.push(entry.file_name().to_string_lossy().parse::<i32>()?);
        }
    }
    match found.as_slice() {
        [tid] => Ok(*tid),
        other => bail!("process {pid} has {} threads named {name}", other.len()),
    }
}

/// One thread of another process, stopped with ptrace until this is
/// dropped (or [`thaw`](Self::thaw)ed). The other threads keep running.
/// Every ptrace request comes from one dedicated tracer thread (ptrace
/// binds a tracee to the thread that attached it). Needs ptrace permission
/// on the node process (same user, no Yama restriction; CI runs as root):
/// without it the test fails saying so.
///
/// The log-sync thread is stopped while idle (no write in flight), so it
/// is waiting on its condition variable without holding the group-commit
/// lock; it holds that lock only for microseconds around each fsync.
struct FrozenThread {
    thaw: Option<mpsc::Sender<()>>,
    tracer: Option<std::thread::JoinHandle<()>>,
}

impl FrozenThread {
    fn freeze(tid: i32) -> Result<FrozenThread> {
        let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<(), String>>();
        let (thaw_tx, thaw_rx) = mpsc::channel::<()>();
        let tracer = std::thread::Builder::new()
            .name("ptrace-tracer".into())
            .spawn(move || {
                let pid = Pid::from_raw(tid);
                let stopped = (|| {
                    ptrace::seize(pid, ptrace::Options::empty())
                        .map_err(|e| format!("PTRACE_SEIZE {tid}: {e}"))?;
                    ptrace::interrupt(pid).map_err(|e| format!("PTRACE_INTERRUPT {tid}: {e}"))?;
                    match waitpid(pid, Some(WaitPidFlag::__WALL)) {
                        Ok(WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..)) => Ok(()),
                        other => Err(format!("waiting for {tid} to stop: {other:?}")),
                    }
                })();
                let failed = stopped.is_err();
                let _ = ready_tx.send(stopped);
                if !failed {
                    // Until thawed, or the test is unwinding (sender dropped).
                    let _ = thaw_rx.recv();
                }
                let _ = ptrace::detach(pid, None);
            })?;
        let frozen = FrozenThread {
            thaw: Some(thaw_tx),
            tracer: Some(tracer),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(frozen),
            Ok(Err(e)) => bail!("could not stop thread {tid} with ptrace: {e}"),
            Err(e) => bail!("the tracer did not report: {e}"),
        }
    }

    fn thaw(mut self) {
        self.release();
    }

    fn release(&mut self) {
        drop(self.thaw.take());
        if let Some(t) = self.tracer.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FrozenThread {
    fn drop(&mut self) {
        self.release();
    }
}

async fn fsyncs(cluster: &ProcessCluster, node: &str) -> Result<f64> {
    let m = scrape_parsed(cluster.dir.config(node)?.metrics_listen).await?;
    m.value("meridian_log_fsyncs_total", &[])
}

/// Three replicas (N = 3, Q = 2), ap-south-1 never started: a `quorum`
/// write on us-east-1 needs eu-west-1's durable ack. eu-west-1's log-sync
/// thread is stopped; then a `quorum` write on us-east-1:
/// * is applied on eu-west-1 (a `local` read there sees it) and eu-west-1
///   acknowledges *applying* it (us-east-1 reports no replication lag
///   towards it, which is computed from the applied dots the peer acked),
///   while eu-west-1 does no fsync at all;
/// * is nevertheless not acknowledged: it fails with `Timeout { acked: 1,
///   needed: 2 }` at its deadline (us-east-1's own durable copy only);
/// * takes effect once eu-west-1 fsyncs again (a `Timeout` is
///   indeterminate, not lost), and the next `quorum` write is acknowledged.
///
/// What would make this fail: a quorum wait resolved by applied dots (or by
/// any ack, or not waiting for remote acks at all), which would acknowledge
/// the write while its only other copy could still vanish in a power loss;
/// a peer that reports dots as durable before its fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quorum_write_waits_for_durable_not_applied_acks() -> Result<()> {
    let mut cluster = ProcessCluster::create(Spec::new(81))?;
    cluster.process(US).start()?;
    cluster.process(EU).start()?;
    let us = cluster.wait_serving(US, &[EU]).await;
    let eu = cluster.wait_serving(EU, &[US]).await;
    let quorum = Consistency::Quorum;

    // Without interference the pair acknowledges quorum writes.
    us.counter("k").incr(1).consistency(quorum).await?;
    assert_eq!(local_count(&us, "k").await?, 1);

    let eu_pid = cluster.process(EU).pid().context("eu-west-1 is running")?;
    let sync_tid = thread_named(eu_pid, SYNC_THREAD)?;
    let frozen = FrozenThread::freeze(sync_tid)?;
    let fsyncs_frozen = fsyncs(&cluster, EU).await?;

    let write = {
        let us = us.clone();
        tokio::spawn(async move {
            us.counter("k")
                .incr(1)
                .consistency(quorum)
                .timeout(WRITE_TIMEOUT)
                .await
        })
    };
    // eu-west-1 applies it (and so us-east-1 did too)...
    eventually("eu-west-1 applies the write", WRITE_TIMEOUT, || async {
        match local_count(&eu, "k").await {
            Ok(2) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // ...and says so: us-east-1 learns from its acks that it applied it.
    eventually(
        "us-east-1 learns that eu-west-1 applied the write",
        WRITE_TIMEOUT,
        || async {
            let status = us.status().await.map_err(|e| e.to_string())?;
            let peer = status
                .peers
                .iter()
                .find(|p| p.node == EU)
                .ok_or_else(|| format!("no {EU} in {status:?}"))?;
            if peer.lag_deltas == 0 {
                Ok(())
            } else {
                Err(format!("{EU} lags by {} deltas", peer.lag_deltas))
            }
        },
    )
    .await;
    assert_eq!(
        fsyncs(&cluster, EU).await?,
        fsyncs_frozen,
        "eu-west-1 fsynced with its log-sync thread stopped: the scenario is broken"
    );
    // The applied-but-not-durable ack was there before the deadline...
    assert!(
        !write.is_finished(),
        "the quorum write finished while its only other copy was not durable: {:?}",
        write.await?
    );
    // ...and was not counted.
    let result = write.await?;
    assert!(
        matches!(
            result,
            Err(Error::Timeout {
                acked: 1,
                needed: 2
            })
        ),
        "a quorum write with the other replica applied but not durable: {result:?}"
    );
    assert_eq!(
        fsyncs(&cluster, EU).await?,
        fsyncs_frozen,
        "eu-west-1 fsynced with its log-sync thread stopped: the scenario is broken"
    );

    frozen.thaw();
    // Indeterminate, not lost: it is there once eu-west-1 fsyncs again.
    eventually(
        "the timed-out write is readable at quorum",
        CONVERGE,
        || async {
            match us.counter("k").read().consistency(quorum).await {
                Ok(r) if r.value == 2 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let r = us.counter("k").incr(1).consistency(quorum).await?;
    assert_eq!(r.value, 3);
    assert!(fsyncs(&cluster, EU).await? > fsyncs_frozen);

    for name in [US, EU] {
        cluster.process(name).terminate()?;
    }
    Ok(())
}
