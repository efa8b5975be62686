//! The coordinator: gives each client request its consistency level
//! (docs/architecture.md section 7).
//!
//! Let N be the size of the object's replica set (placement) and Q = ⌊N/2⌋+1.
//!
//! | level  | write acknowledged when            | read returns |
//! |--------|------------------------------------|--------------|
//! | local  | this replica has it durably        | this replica's state |
//! | leader | the leader has it durably          | the leader's state |
//! | quorum | Q replicas have it durably         | the join of Q replicas, written back to those behind first |
//! | all    | all N replicas have it durably     | the join of all N |
//! | replicas-k | k replicas (this one included) have it durably | the join of k replicas, written back to those behind first |
//!
//! `replicas-k` ("wait for k replicas") needs 1 ≤ k ≤ N, else it is refused
//! `InvalidArgument` ([`required_replicas`]); a `replicas-r` read sees a
//! completed `replicas-w` write when r + w > N.
//!
//! "Durably": fsynced, under either durability mode, for every copy a
//! `quorum`, `all` or `replicas-k` write counts and for read repair. Under `periodic`,
//! `local` and `leader` writes are acknowledged once the log has them (the
//! fsync follows within `periodic_ms`); see
//! `Coordinator::local_copy_waits_for_disk`.
//!
//! * Before doing anything, a request checks that enough replicas are live
//!   ([`required_replicas`]); if not it fails with `Unavailable` and has no
//!   effect. A write that was applied somewhere but did not gather its
//!   acknowledgements in time fails with `Timeout { acked, needed }`: it
//!   may still take effect (replication continues).
//! * The leader of an object is the first node of its preference list
//!   (rendezvous hash, home region first) that may lead: live (the mesh's
//!   failure detector: connected and heard from within
//!   [`meridian_replication::mesh::LIVE_TIMEOUT`]) *and caught up*
//!   ([`Mesh::is_caught_up`]): it has completed a catch-up round from each
//!   of its live peers since (re)connecting to it, and has acknowledged
//!   what this node had. A restarted or healed node therefore leads again
//!   only once it has what its peers acknowledged; until then the next
//!   caught-up node leads, and with none a `leader` request waits up to
//!   [`LEADER_WAIT`], then fails `Unavailable` (definite). A node sent a
//!   `leader` request as leader serves it only once caught up itself.
//!   During a partition two sides can pick different leaders; their writes
//!   merge on heal. What `leader` promises across failover and failback:
//!   docs/architecture.md section 7.
//! * A node that does not replicate an object (placement) forwards the
//!   request to the nearest usable replica (live, same placement, not
//!   stalled) and stores nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_client::wire::{
    self, Consistency, NodeStatus, Operation, PeerStatus, Reply, ReplyValue, Request, Response,
    WireError,
};
use meridian_engine::{Durability, Engine, Expiry, Kind, ObjectKey, ObjectState, Op, Value};
use meridian_replication::mesh::Mesh;
use meridian_replication::protocol::observe_floor;
use meridian_replication::{NodeName, Placement};
use tokio::sync::oneshot;

tokio::task_local! {
    /// Set by [`Coordinator::execute_recording`]: where [`Coordinator::write`]
    /// notes the write it applied (the RESP front door's `WAIT` needs it).
    static LAST_WRITE: std::cell::RefCell<Option<WriteRecord>>;
}

/// A write this node applied as coordinator: its dot and the object's other
/// replicas, enough to ask later how many of them hold it durably
/// ([`Coordinator::wait_replicas`]).
#[derive(Clone, Debug)]
pub struct WriteRecord {
    /// Every record the write appended (an operation may append several:
    /// a firing, a deadline, the write).
    dots: Vec<meridian_engine::Dot>,
    /// Where the write ends in this node's log (local durability).
    lsn: u64,
    others: Vec<NodeName>,
}

impl WriteRecord {
    /// How many other replicas the object has.
    pub fn other_replicas(&self) -> usize {
        self.others.len()
    }
}

use crate::clock::{MAX_DEBUG_CLOCK_OFFSET_MS, NodeClock};
/// This node's engine, inside one [`Coordinator::run_local`] job (on an
/// engine-pool thread): reads and writes of keys the node serves alone.
pub struct LocalJob {
    engine: Engine,
    clock: NodeClock,
    /// The records the writes appended, in log order: their object, delta
    /// and log position (a write's `before` records first, with its own
    /// position).
    applied: Vec<(ObjectKey, meridian_engine::Record, u64)>,
    /// Whether a write was asked for, and whether the last one asked for
    /// failed (then `WAIT` has no write to ask about, as on `execute`).
    attempted: bool,
    last_failed: bool,
}

impl std::fmt::Debug for LocalJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalJob")
            .field("writes", &self.applied.len())
            .finish_non_exhaustive()
    }
}

/// What an `Inspect` or `Probe` asks about, and which of the two it is.
struct Asked {
    members: Vec<Vec<u8>>,
    fields: Vec<Vec<u8>>,
    /// `Probe`: answer with the map too.
    probe: bool,
}

impl LocalJob {
    /// What `key` holds under each type (and whether its set holds each of
    /// `members`): the local `Inspect`.
    pub fn inspect(
        &self,
        key: &[u8],
        members: &[Vec<u8>],
    ) -> Result<meridian_engine::Inspection, WireError> {
        // The size limits, as for a client's `Inspect` request (on the
        // parts: no copy of the key and members to build one).
        wire::check_parts(
            key.len(),
            Some((members.len(), members.iter().map(Vec::len))),
            None,
        )
        .map_err(|e| invalid(e.to_string()))?;
        self.engine
            .inspect_fields_at(key, members, &[], self.clock.now())
            .map_err(engine_error)
    }

    /// [`LocalJob::inspect`] that also reports the map and the values of
    /// `fields` in it: the local `Probe`.
    pub fn inspect_fields(
        &self,
        key: &[u8],
        fields: &[Vec<u8>],
    ) -> Result<meridian_engine::Inspection, WireError> {
        wire::check_fields(fields.iter().map(Vec::len)).map_err(|e| invalid(e.to_string()))?;
        wire::check_parts(
            key.len(),
            Some((fields.len(), fields.iter().map(Vec::len))),
            None,
        )
        .map_err(|e| invalid(e.to_string()))?;
        self.engine
            .inspect_fields_at(key, &[], fields, self.clock.now())
            .map_err(engine_error)
    }

    /// Applies a write, stamped with the node's clock now: what
    /// [`Coordinator::execute`] does to this replica for it. The value
    /// after it for counters and registers; `None` for sets (not read
    /// back). Nothing is acknowledged yet: see [`Coordinator::run_local`].
    pub fn write(&mut self, op: Operation) -> Result<Option<ReplyValue>, WireError> {
        self.attempted = true;
        self.last_failed = true;
        wire::check(&op).map_err(|e| invalid(e.to_string()))?;
        let key = match translate(&op)? {
            Target::Object(key, Access::Write) => key,
            _ => return Err(invalid("not an object write")),
        };
        let op = engine_op(op).expect("an object write has an engine operation");
        let now = self.clock.now();
        let applied = self.engine.apply(&key, op, now).map_err(engine_error)?;
        // What the engine appended ahead of the write (an expiry firing,
        // a deadline), then the write: pushed to the peers in log order.
        for record in applied.before {
            self.applied.push((key.clone(), record, applied.lsn));
        }
        self.applied.push((key, applied.record, applied.lsn));
        self.last_failed = false;
        Ok(applied.value.map(write_reply_value))
    }

    /// Writes made so far in this job.
    pub fn writes(&self) -> usize {
        self.applied.len()
    }
}

/// What [`Coordinator::run_local`] did.
#[derive(Debug)]
pub struct LocalDone<T> {
    /// What the job returned.
    pub value: T,
    /// Whether its writes are as durable as the level needs: when `Err`,
    /// none of them may be acknowledged (they may still take effect).
    pub durable: Result<(), WireError>,
    /// `None` if it asked for no write; else its last write (`WAIT`),
    /// `None` when the last write it asked for failed.
    pub last_write: Option<Option<WriteRecord>>,
}

use crate::engine_pool::EnginePool;
use crate::metrics::{Origin, RequestMetrics};
use crate::rpc::{PeerRequest, PeerResponse};
use crate::translate::{
    Access, MAX_WRITE_REPLY_MEMBERS, Target, engine_error, engine_op, inspected_present, invalid,
    is_expiry_write, read_reply_value, scan_steps, set_page_members, translate, ttl_reply,
    value_present, wire_kind, write_reply_value,
};

// The client protocol's limits are the engine's own (both re-export
// `meridian-limits`), so a request that passes `wire::check` is never
// refused by the engine for its size. What the two crates must still agree
// on is that a client frame can carry the largest request the engine takes:
// a whole object's worth of members, a key, and a megabyte for framing and
// per-member overhead.
const _: () = assert!(
    wire::MAX_FRAME_BYTES
        >= meridian_engine::MAX_OBJECT_BYTES + meridian_engine::MAX_KEY_BYTES + (1 << 20)
);

/// How long a `leader` request waits for a replica that may lead (one
/// catching up after a restart or a heal) before it fails `Unavailable`:
/// a catch-up round takes a round trip or a few batches.
const LEADER_WAIT: Duration = Duration::from_secs(2);

/// How often that wait looks again.
const LEADER_POLL: Duration = Duration::from_millis(10);

/// No replica may lead (or take the request) now: definite, nothing done.
fn no_leader() -> Response {
    Response::Err(WireError::Unavailable {
        needed: 1,
        reachable: 0,
    })
}

/// How many replicas a request at `level` needs, of the `n` replicas of
/// the key's placement group: [`Consistency::replicas_needed`], the one
/// place the arithmetic lives (shared with the client and the harness's
/// checkers). A `replicas-k` the group cannot serve (`k` = 0 or above `n`)
/// is `InvalidArgument`: definite, nothing done. Refused rather than
/// clamped to `n`: the caller asked for `k` durable copies, and a write
/// acknowledged with fewer would break the promise silently (`all` is the
/// level for "every replica, however many").
pub fn required_replicas(level: Consistency, n: usize) -> Result<usize, WireError> {
    level.replicas_needed(n).map_err(|e| invalid(e.to_string()))
}

/// Everything a request may need.
pub struct Coordinator {
    pub(crate) node: NodeName,
    pub(crate) region: String,
    pub(crate) engine: Engine,
    pub(crate) mesh: Mesh,
    pub(crate) placement: Arc<Placement>,
    pub(crate) clock: NodeClock,
    pub(crate) allow_debug_clock: bool,
    pub(crate) default_timeout: Duration,
    pub(crate) max_timeout: Duration,
    pub(crate) metrics: Arc<RequestMetrics>,
    pub(crate) started: Instant,
    /// Where every engine call runs (never on an async worker).
    pub(crate) pool: EnginePool,
    /// Peer RPCs refused because the asking peer does not replicate the
    /// key (`ReadState`, `Repair`).
    pub(crate) peer_refusals: AtomicU64,
    /// The reclamation worker's status ([`crate::expiry`]).
    pub(crate) expiry_metrics: crate::expiry::ExpiryMetrics,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    fn timeout_of(&self, req: &Request) -> Duration {
        if req.timeout_ms == 0 {
            self.default_timeout
        } else {
            Duration::from_millis(req.timeout_ms as u64).min(self.max_timeout)
        }
    }

    fn ok(&self, node: &str, level: Consistency, value: ReplyValue) -> Response {
        Response::Ok(Reply {
            node: node.to_string(),
            consistency: level,
            value,
        })
    }

    /// Serves one request that came in by `origin` (a client's, or one a
    /// peer forwarded).
    pub async fn execute(self: &Arc<Self>, req: Request, origin: Origin) -> Response {
        let started = Instant::now();
        let level = req.consistency;
        let write = req.op.is_write();
        let response = self.execute_inner(req, origin == Origin::Peer).await;
        self.metrics.record(
            origin,
            write,
            level,
            matches!(response, Response::Ok(_)),
            started.elapsed(),
        );
        response
    }

    /// [`execute`](Self::execute) a client request, also returning the write
    /// this node applied for it, if any (`None` for reads, for writes that
    /// failed before being applied, and for writes another node served
    /// through placement forwarding).
    pub async fn execute_recording(
        self: &Arc<Self>,
        req: Request,
    ) -> (Response, Option<WriteRecord>) {
        LAST_WRITE
            .scope(std::cell::RefCell::new(None), async {
                let response = self.execute(req, Origin::Resp).await;
                let record = LAST_WRITE.with(|w| w.borrow_mut().take());
                (response, record)
            })
            .await
    }

    /// Whether this node holds `write` durably (fsynced), waiting up to
    /// `timeout`; asks the log for the fsync at once (under `periodic` too:
    /// the caller asked for durability).
    pub async fn wait_local_durable(&self, write: &WriteRecord, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        self.engine.on_durable(write.lsn, move |r| {
            let _ = tx.send(r.is_ok());
        });
        matches!(
            tokio::time::timeout(timeout.min(self.max_timeout), rx).await,
            Ok(Ok(true))
        )
    }

    /// How many of `write`'s other replicas hold it durably, waiting up to
    /// `timeout` for `needed` of them (0: answers at once with what is
    /// already known, waiting at most a few milliseconds).
    pub async fn wait_replicas(
        &self,
        write: &WriteRecord,
        needed: usize,
        timeout: Duration,
    ) -> usize {
        let (needed, timeout) = if needed == 0 {
            (write.others.len(), timeout.min(Duration::from_millis(5)))
        } else {
            (
                needed.min(write.others.len()),
                timeout.min(self.max_timeout),
            )
        };
        self.mesh
            .wait_durable(write.dots.clone(), write.others.clone(), needed, timeout)
            .await
    }

    /// Whether a request for `key` at `level` is this node's alone to
    /// serve: this node replicates the key, and the level counts one
    /// replica (`local`, or any level but `leader` when the key has a
    /// single replica). Such requests may run through
    /// [`run_local`](Self::run_local), batched, instead of
    /// [`execute`](Self::execute) one at a time: [`execute`] would also
    /// read and write only this node's engine for them.
    pub fn serves_locally(&self, key: &[u8], level: Consistency) -> bool {
        if level == Consistency::Leader {
            return false;
        }
        let group = self.placement.group_of(key);
        if !self.placement.is_replica(&self.node, group) {
            return false;
        }
        required_replicas(level, self.placement.replicas(group).len()).is_ok_and(|n| n <= 1)
    }

    /// Runs `work` in one engine-pool job against this node's engine: the
    /// engine calls of several requests (a RESP connection's pipelined
    /// commands), in order, for one hop to the pool instead of one per
    /// call. Only for keys that [`serves_locally`](Self::serves_locally)
    /// at `level`: `work` reads and writes this replica alone.
    ///
    /// What [`execute`](Self::execute) does after a local write is done
    /// here for every write `work` made, in order: the delta is pushed to
    /// the peers, and when the level's local copy must be on disk
    /// ([`local_copy_waits_for_disk`](Self::local_copy_waits_for_disk):
    /// `sync`, or `quorum`/`all`/`replicas-k` under `periodic`) the job's last log
    /// position is waited for (one group-committed fsync covers them all),
    /// its outcome in [`LocalDone::durable`]. A caller answers a write only
    /// once that is `Ok`. `Err` if the node is shutting down and `work`
    /// did not run.
    pub async fn run_local<T, F>(
        self: &Arc<Self>,
        level: Consistency,
        work: F,
    ) -> Result<LocalDone<T>, WireError>
    where
        F: FnOnce(&mut LocalJob) -> T + Send + 'static,
        T: Send + 'static,
    {
        let mut job = LocalJob {
            engine: self.engine.clone(),
            clock: self.clock.clone(),
            applied: Vec::new(),
            attempted: false,
            last_failed: false,
        };
        // Combined with other connections' jobs: one hand-off to the pool
        // for what arrives together (see `EnginePool::run_combined`).
        let (value, job) = self
            .pool
            .run_combined(move || {
                let value = work(&mut job);
                (value, job)
            })
            .await
            .ok_or(WireError::Unavailable {
                needed: 1,
                reachable: 0,
            })?;
        let (attempted, last_failed) = (job.attempted, job.last_failed);
        let mut last: Option<(ObjectKey, u64)> = None;
        let mut dots = Vec::with_capacity(job.applied.len());
        for (key, record, lsn) in job.applied {
            dots.push(record.dot);
            self.mesh.push(record);
            last = Some((key, lsn));
        }
        let Some((key, lsn)) = last else {
            return Ok(LocalDone {
                value,
                durable: Ok(()),
                last_write: attempted.then_some(None),
            });
        };
        let group = self.placement.group_of(key.key());
        let others = self
            .placement
            .replicas(group)
            .into_iter()
            .filter(|r| **r != *self.node)
            .map(NodeName::from)
            .collect();
        let durable = if self.local_copy_waits_for_disk(level) {
            // Log positions grow with appends: the last one covers the job.
            self.durable(lsn, self.default_timeout).await
        } else {
            Ok(())
        };
        Ok(LocalDone {
            value,
            durable,
            last_write: Some((!last_failed).then_some(WriteRecord { dots, lsn, others })),
        })
    }

    async fn execute_inner(self: &Arc<Self>, req: Request, forwarded: bool) -> Response {
        // Size limits before any work, whichever door the request came in by.
        if let Err(e) = wire::check(&req.op) {
            return Response::Err(invalid(e.to_string()));
        }
        let timeout = self.timeout_of(&req);
        let level = req.consistency;
        let (key, action) = match translate(&req.op) {
            Ok(Target::Status) => {
                return self.ok(&self.node, level, ReplyValue::Status(self.status()));
            }
            Ok(Target::DebugClockOffset(offset_ms)) => {
                if !self.allow_debug_clock {
                    return Response::Err(invalid(
                        "this node was not started with --allow-debug-clock",
                    ));
                }
                if offset_ms.unsigned_abs() > MAX_DEBUG_CLOCK_OFFSET_MS.unsigned_abs() {
                    return Response::Err(invalid(format!(
                        "a debug clock offset is at most {MAX_DEBUG_CLOCK_OFFSET_MS} ms either way"
                    )));
                }
                self.clock.set_offset_ms(offset_ms);
                tracing::warn!(offset_ms, "debug clock offset set");
                return self.ok(&self.node, level, ReplyValue::Done);
            }
            Ok(Target::Scan) => {
                let Operation::Scan {
                    cursor,
                    prefix,
                    count,
                } = req.op
                else {
                    unreachable!("only Scan is translated to Target::Scan")
                };
                return self.scan(cursor, prefix, count).await;
            }
            Ok(Target::Object(key, access)) => (key, access),
            Err(e) => return Response::Err(e),
        };
        let group = self.placement.group_of(key.key());
        let replicas: Vec<NodeName> = self
            .placement
            .replicas(group)
            .into_iter()
            .map(NodeName::from)
            .collect();
        let i_replicate = replicas.iter().any(|r| r == &self.node);
        let needed = match required_replicas(level, replicas.len()) {
            Ok(n) => n,
            Err(e) => return Response::Err(e),
        };
        let live: Vec<NodeName> = replicas
            .iter()
            .filter(|r| self.mesh.is_live(r))
            .cloned()
            .collect();
        if live.len() < needed || live.is_empty() {
            return Response::Err(WireError::Unavailable {
                needed: needed.max(1) as u32,
                reachable: live.len() as u32,
            });
        }
        if !i_replicate {
            if forwarded {
                return Response::Err(WireError::Internal {
                    message: format!("{} does not replicate {key:?}", self.node),
                });
            }
            // Placement: hand the request to the nearest usable replica (live,
            // same placement, not stalled); a `leader` request to the leader
            // (a forwarded request is not routed again).
            let mut candidates: Vec<NodeName> = live
                .iter()
                .filter(|n| self.mesh.is_usable(n))
                .cloned()
                .collect();
            candidates.sort_by_key(|n| self.mesh.rtt(n).unwrap_or(Duration::MAX));
            if level == Consistency::Leader {
                match self.leader_of(&key, timeout).await {
                    Some(leader) => candidates.insert(0, leader),
                    None => return no_leader(),
                }
            }
            let Some(target) = candidates.first() else {
                return no_leader();
            };
            return self.forward(target, req, timeout).await;
        }
        if level == Consistency::Leader {
            if forwarded {
                // Sent here as the leader: serve only once caught up (the
                // forwarder's view of this node may be a heartbeat old).
                if !self.wait_leader_eligible(&self.node, timeout).await {
                    return no_leader();
                }
            } else {
                match self.leader_of(&key, timeout).await {
                    Some(l) if l != self.node => {
                        return self.forward(&l, req, timeout).await;
                    }
                    Some(_) => {}
                    None => return no_leader(),
                }
            }
        }
        match action {
            Access::Write => {
                let op = engine_op(req.op).expect("an object write has an engine operation");
                self.write(level, key, op, &replicas, needed, timeout).await
            }
            Access::Read => {
                self.read(level, key, &replicas, &live, needed, timeout)
                    .await
            }
            Access::Ttl => {
                self.ttl(level, key, &replicas, &live, needed, timeout)
                    .await
            }
            Access::Inspect => {
                let (members, fields, probe) = match req.op {
                    Operation::Inspect { members, .. } => (members, Vec::new(), false),
                    Operation::Probe {
                        members, fields, ..
                    } => (members, fields, true),
                    _ => unreachable!("only Inspect and Probe are translated to Access::Inspect"),
                };
                let asked = Asked {
                    members,
                    fields,
                    probe,
                };
                self.inspect(level, key, asked, &replicas, &live, needed, timeout)
                    .await
            }
            Access::SetPage => {
                let Operation::SetPage { after, count, .. } = req.op else {
                    unreachable!("only SetPage is translated to Access::SetPage")
                };
                if needed > 1 && replicas.len() > 1 {
                    return Response::Err(invalid(format!(
                        "a page of a set is read from one replica: use local or leader, not \
                         {level} (a page joined across replicas would need every replica's \
                         members around it)"
                    )));
                }
                let engine = self.engine.clone();
                let paged = self
                    .pool
                    .run(move || {
                        engine.set_page(
                            &key,
                            after.as_deref(),
                            set_page_members(count),
                            wire::MAX_SET_PAGE_BYTES,
                        )
                    })
                    .await;
                match paged {
                    Ok(page) => self.ok(
                        &self.node,
                        level,
                        ReplyValue::SetPage {
                            members: page.members,
                            next: page.next,
                        },
                    ),
                    Err(e) => Response::Err(engine_error(e)),
                }
            }
        }
    }

    /// `Scan`: a page of the keys this node stores, whatever the level
    /// (answered as `local`): placement decides what a node stores, and
    /// the scan lists exactly that.
    async fn scan(&self, cursor: Vec<u8>, prefix: Vec<u8>, count: u32) -> Response {
        let engine = self.engine.clone();
        let steps = scan_steps(count);
        let scanned = self
            .pool
            .run(move || engine.scan(&cursor, &prefix, steps))
            .await;
        match scanned {
            Ok(page) => self.ok(
                &self.node,
                Consistency::Local,
                ReplyValue::Keys {
                    keys: page
                        .objects
                        .iter()
                        .map(|o| wire::ScanKey {
                            kind: wire_kind(o.kind()),
                            key: o.key().to_vec(),
                        })
                        .collect(),
                    cursor: page.next,
                },
            ),
            Err(e) => Response::Err(engine_error(e)),
        }
    }

    /// `Inspect` and `Probe`: at one replica, a cheap read of this node's
    /// engine; above that, the level's reads of the four objects (joined
    /// and written back like any read), summarized.
    #[allow(clippy::too_many_arguments)]
    async fn inspect(
        &self,
        level: Consistency,
        key: ObjectKey,
        asked: Asked,
        replicas: &[NodeName],
        live: &[NodeName],
        needed: usize,
        timeout: Duration,
    ) -> Response {
        let Asked {
            members,
            fields,
            probe,
        } = asked;
        let answer = |i: meridian_engine::Inspection| {
            if probe {
                ReplyValue::Probe {
                    register: i.register,
                    counter: i.counter,
                    set_count: i.set_count,
                    members_present: i.members_present,
                    map_count: i.map_count,
                    map_values: i.map_values,
                }
            } else {
                ReplyValue::Inspect {
                    register: i.register,
                    counter: i.counter,
                    set_count: i.set_count,
                    members_present: i.members_present,
                }
            }
        };
        if needed <= 1 || replicas.len() <= 1 {
            let (engine, clock) = (self.engine.clone(), self.clock.clone());
            let inspected = self
                .pool
                .run(move || engine.inspect_fields_at(key.key(), &members, &fields, clock.now()))
                .await;
            return match inspected {
                Ok(i) => self.ok(&self.node, level, answer(i)),
                Err(e) => Response::Err(engine_error(e)),
            };
        }
        let object = |kind| ObjectKey::new(kind, key.key().to_vec()).map_err(engine_error);
        let (register, counter, set, map) = match (
            object(Kind::Register),
            object(Kind::Counter),
            object(Kind::Set),
            object(Kind::Map),
        ) {
            (Ok(r), Ok(c), Ok(s), Ok(m)) => (r, c, s, m),
            (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                return Response::Err(e);
            }
        };
        // The joined values, not replies: a set too large to list in a
        // reply is still counted and checked here. The map is read only
        // when the request can report it.
        let map_read = async {
            if probe {
                Some(self.read_joined(map, replicas, live, needed, timeout).await)
            } else {
                None
            }
        };
        let (r, c, s, m) = tokio::join!(
            self.read_joined(register, replicas, live, needed, timeout),
            self.read_joined(counter, replicas, live, needed, timeout),
            self.read_joined(set, replicas, live, needed, timeout),
            map_read,
        );
        let mut summary = meridian_engine::Inspection::default();
        let mut set = Vec::new();
        let mut map = Vec::new();
        for value in [r, c, s].into_iter().chain(m) {
            match value {
                Ok(Value::Register(value)) => summary.register = value.and_then(|r| r.value),
                Ok(Value::Counter(value)) => summary.counter = value,
                Ok(Value::Set(members)) => set = members,
                Ok(Value::Map { fields, .. }) => map = fields,
                Err(e) => return Response::Err(e),
            }
        }
        summary.set_count = set.len() as u64;
        summary.members_present = members
            .iter()
            .map(|m| set.binary_search(m).is_ok())
            .collect();
        summary.map_count = map.len() as u64;
        summary.map_values = fields
            .iter()
            .map(|f| {
                map.binary_search_by(|(name, _)| name.as_slice().cmp(f))
                    .ok()
                    .map(|i| map[i].1.clone())
            })
            .collect();
        self.ok(&self.node, level, answer(summary))
    }

    /// The leader of `key`: the first node of its preference list that may
    /// lead in this node's view ([`Mesh::is_caught_up`]: live, and caught
    /// up since it last (re)connected). When none may yet (a node catching
    /// up after a restart or a heal), waits for one, up to [`LEADER_WAIT`]
    /// or `timeout`.
    async fn leader_of(&self, key: &ObjectKey, timeout: Duration) -> Option<NodeName> {
        let deadline = Instant::now() + timeout.min(LEADER_WAIT);
        let prefs = self.placement.preference_list(key.key());
        loop {
            if let Some(l) = prefs.iter().find(|n| self.mesh.is_caught_up(n)) {
                return Some(NodeName::from(*l));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// Waits (up to [`LEADER_WAIT`] or `timeout`) until `node` may lead.
    async fn wait_leader_eligible(&self, node: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout.min(LEADER_WAIT);
        while !self.mesh.is_caught_up(node) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
        true
    }

    async fn forward(&self, peer: &str, req: Request, timeout: Duration) -> Response {
        let payload = PeerRequest::Forward(req).encode();
        match self
            .mesh
            .call(peer, &payload, timeout + Duration::from_millis(500))
            .await
        {
            Ok(bytes) => match PeerResponse::decode(&bytes) {
                Ok(PeerResponse::Forwarded(r)) => r,
                Ok(other) => Response::Err(WireError::Internal {
                    message: format!("unexpected answer from {peer}: {other:?}"),
                }),
                Err(e) => Response::Err(WireError::Internal {
                    message: format!("malformed answer from {peer}: {e}"),
                }),
            },
            Err(meridian_replication::mesh::MeshError::NotConnected(_))
            | Err(meridian_replication::mesh::MeshError::Cut(_)) => {
                Response::Err(WireError::Unavailable {
                    needed: 1,
                    reachable: 0,
                })
            }
            Err(e) => {
                // Sent, no answer: a write may have taken effect there.
                tracing::debug!(peer, error = %e, "forwarded request failed");
                Response::Err(WireError::Timeout {
                    acked: 0,
                    needed: 1,
                })
            }
        }
    }

    /// Whether this node's own copy of a write at `level` may count
    /// towards the write's acknowledgements only once it is durable.
    ///
    /// `sync`: always. `periodic`: for `quorum`, `all` and `replicas-n`,
    /// which promise that the write survives the loss of a minority (or of
    /// all but one, or of all but n - 1) of its replicas, so every copy
    /// they count must be on disk; peers already acknowledge only what
    /// they fsynced. (So `replicas-1` is `local` made durable: acknowledged
    /// once this replica fsynced it.) `local` and `leader`
    /// acknowledge once the log has the write, the fsync following within
    /// `periodic_ms` (waiting would ask for an fsync per write and make
    /// `periodic` cost what `sync` does).
    fn local_copy_waits_for_disk(&self, level: Consistency) -> bool {
        match self.engine.durability() {
            Durability::Sync => true,
            Durability::Periodic(_) => matches!(
                level,
                Consistency::Quorum | Consistency::All | Consistency::Replicas(_)
            ),
        }
    }

    /// Waits (up to `timeout`) until the log is durable up to `lsn`, asking
    /// for the fsync (group committed) under either durability mode.
    async fn durable(&self, lsn: u64, timeout: Duration) -> Result<(), WireError> {
        let (tx, rx) = oneshot::channel();
        self.engine.on_durable(lsn, move |r| {
            let _ = tx.send(r);
        });
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(engine_error(e)),
            Ok(Err(_)) | Err(_) => Err(WireError::Timeout {
                acked: 0,
                needed: 1,
            }),
        }
    }

    /// Applies `op` to `key` on the engine pool, stamped with the node's
    /// clock when it runs. Combined with the other callers' short engine
    /// calls (`EnginePool::run_combined`): on a node pinned to one CPU a
    /// thread hand-off per request cost more than the write itself (native
    /// QUIC SET, 16 clients: 18.5-21.8k ops/s with a hand-off each, against
    /// 41.5k before engine calls left the async workers).
    async fn apply(
        &self,
        key: &ObjectKey,
        op: Op,
    ) -> meridian_engine::Result<meridian_engine::Applied> {
        let (engine, clock, key) = (self.engine.clone(), self.clock.clone(), key.clone());
        self.pool
            .run_combined(move || {
                let now = clock.now();
                engine.apply(&key, op, now)
            })
            .await
            .unwrap_or(Err(meridian_engine::Error::Shutdown))
    }

    /// Reads `key`'s value on the engine pool as seen at the node's now
    /// (what its expiry hides reads as absent), combined like
    /// [`apply`](Self::apply).
    async fn read_value(&self, key: &ObjectKey) -> meridian_engine::Result<meridian_engine::Value> {
        let (engine, clock, key) = (self.engine.clone(), self.clock.clone(), key.clone());
        self.pool
            .run_combined(move || engine.read_at(&key, clock.now()))
            .await
            .unwrap_or(Err(meridian_engine::Error::Shutdown))
    }

    /// Reads `key`'s full state and expiry state on the engine pool.
    async fn read_copy(&self, key: &ObjectKey) -> meridian_engine::Result<ObjectCopy> {
        let (engine, key) = (self.engine.clone(), key.clone());
        self.pool
            .run(move || Ok((engine.state(&key)?, engine.expiry(&key)?)))
            .await
    }

    /// Joins `state` and `expiry` into `key` on the engine pool (read
    /// repair); the log position to wait for when it changed anything.
    async fn merge_copy(
        &self,
        key: &ObjectKey,
        state: Option<ObjectState>,
        expiry: Option<Expiry>,
    ) -> meridian_engine::Result<Option<u64>> {
        let (engine, clock, key) = (self.engine.clone(), self.clock.clone(), key.clone());
        self.pool
            .run(move || {
                let now = clock.now();
                let mut lsn = None;
                if let Some(state) = &state {
                    lsn = engine.merge_state(&key, state, now)?;
                }
                if let Some(expiry) = &expiry {
                    observe_floor(&engine, expiry, engine.incarnation(), now)?;
                    lsn = lsn.max(engine.merge_expiry(&key, expiry, now)?);
                }
                Ok(lsn)
            })
            .await
    }

    async fn write(
        &self,
        level: Consistency,
        key: ObjectKey,
        op: Op,
        replicas: &[NodeName],
        needed: usize,
        timeout: Duration,
    ) -> Response {
        let expiry_only = is_expiry_write(&op);
        let applied = match self.apply(&key, op).await {
            Ok(a) => a,
            Err(e) => return Response::Err(engine_error(e)),
        };
        // What the engine appended ahead of the write (an expiry firing
        // before a write to an expired object, a `SET … EX` deadline),
        // then the write itself, pushed in log order. A peer may still
        // apply them out of order (a deferred delta), so the write counts
        // as held by a peer only when it holds every one of them.
        let mut dots: Vec<meridian_engine::Dot> = applied.before.iter().map(|r| r.dot).collect();
        dots.push(applied.record.dot);
        for record in applied.before {
            self.mesh.push(record);
        }
        self.mesh.push(applied.record);
        let others: Vec<NodeName> = replicas
            .iter()
            .filter(|r| **r != self.node)
            .cloned()
            .collect();
        let _ = LAST_WRITE.try_with(|w| {
            *w.borrow_mut() = Some(WriteRecord {
                dots: dots.clone(),
                lsn: applied.lsn,
                others: others.clone(),
            })
        });
        let remote_needed = needed.saturating_sub(1);
        let local_durable = async {
            if self.local_copy_waits_for_disk(level) {
                self.durable(applied.lsn, timeout).await
            } else {
                Ok(())
            }
        };
        let (local, remote) = tokio::join!(
            local_durable,
            self.mesh.wait_durable(dots, others, remote_needed, timeout)
        );
        let acked = usize::from(local.is_ok()) + remote;
        if let Err(e) = local
            && !matches!(e, WireError::Timeout { .. })
        {
            return Response::Err(e);
        }
        if acked < needed {
            return Response::Err(WireError::Timeout {
                acked: acked as u32,
                needed: needed as u32,
            });
        }
        if expiry_only {
            return match self.ttl_here(key, None).await {
                Ok(reply) => self.ok(&self.node, level, reply),
                Err(e) => Response::Err(e),
            };
        }
        // Sets: the engine returns no value (they may be large). Their
        // member count is one header read; only a set small enough to list
        // in a write reply is read back (on the pool), so a write to a large
        // set costs what it adds, not what the set holds.
        let value = match applied.value {
            Some(v) => v,
            None => {
                let (engine, clock) = (self.engine.clone(), self.clock.clone());
                let member_key = key.key().to_vec();
                let count = match self
                    .pool
                    .run(move || engine.inspect_fields_at(&member_key, &[], &[], clock.now()))
                    .await
                {
                    Ok(i) => i.set_count,
                    Err(e) => return Response::Err(engine_error(e)),
                };
                if count as usize > MAX_WRITE_REPLY_MEMBERS {
                    return self.ok(
                        &self.node,
                        level,
                        ReplyValue::Set {
                            count,
                            members: Vec::new(),
                        },
                    );
                }
                match self.read_value(&key).await {
                    Ok(v) => v,
                    Err(e) => return Response::Err(engine_error(e)),
                }
            }
        };
        self.ok(&self.node, level, write_reply_value(value))
    }

    async fn read(
        &self,
        level: Consistency,
        key: ObjectKey,
        replicas: &[NodeName],
        live: &[NodeName],
        needed: usize,
        timeout: Duration,
    ) -> Response {
        let value = match self.read_joined(key, replicas, live, needed, timeout).await {
            Ok(v) => v,
            Err(e) => return Response::Err(e),
        };
        // A set merges grew past what one reply carries is refused with a
        // clear error, after the read (and its repair) did its work.
        match read_reply_value(value) {
            Ok(r) => self.ok(&self.node, level, r),
            Err(e) => Response::Err(e),
        }
    }

    /// `Ttl`: whether the object is present and its next deadline, by
    /// this node's clock. At one replica, this replica's view. Above, the
    /// level's read of the object first (joined, and written back to the
    /// replicas that were behind, this one included, like any read): its
    /// presence is the join's, and the deadline this replica's once
    /// repaired.
    #[allow(clippy::too_many_arguments)]
    async fn ttl(
        &self,
        level: Consistency,
        key: ObjectKey,
        replicas: &[NodeName],
        live: &[NodeName],
        needed: usize,
        timeout: Duration,
    ) -> Response {
        let joined = if needed > 1 && replicas.len() > 1 {
            match self
                .read_joined(key.clone(), replicas, live, needed, timeout)
                .await
            {
                Ok(value) => Some(value_present(&value)),
                Err(e) => return Response::Err(e),
            }
        } else {
            None
        };
        match self.ttl_here(key, joined).await {
            Ok(reply) => self.ok(&self.node, level, reply),
            Err(e) => Response::Err(e),
        }
    }

    /// This replica's `Ttl` answer for `key` at the node's now; `exists`
    /// when the caller already knows whether the object is present (else
    /// this replica's point reads say).
    async fn ttl_here(
        &self,
        key: ObjectKey,
        exists: Option<bool>,
    ) -> Result<ReplyValue, WireError> {
        let (engine, clock) = (self.engine.clone(), self.clock.clone());
        self.pool
            .run(move || {
                let now = clock.now();
                let deadline = engine.ttl(&key, now)?;
                let exists = match exists {
                    Some(e) => e,
                    None => {
                        let seen = engine.inspect_fields_at(key.key(), &[], &[], now)?;
                        inspected_present(key.kind(), &seen)
                    }
                };
                Ok(ttl_reply(exists, deadline, now.unix_ms()))
            })
            .await
            .map_err(engine_error)
    }

    /// The value a read at a level sees: this node's own, or the join of
    /// `needed` replicas' states, written back (read repair) to those that
    /// were behind before returning. States of any size up to the
    /// merged-object bound travel in several frames (review C4).
    async fn read_joined(
        &self,
        key: ObjectKey,
        replicas: &[NodeName],
        live: &[NodeName],
        needed: usize,
        timeout: Duration,
    ) -> Result<Value, WireError> {
        if needed <= 1 || replicas.len() <= 1 {
            return self.read_value(&key).await.map_err(engine_error);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        // Gather copies (state and expiry): ours and every other live
        // replica's; the first `needed` (ours included) decide.
        let mine = self.read_copy(&key).await.map_err(engine_error)?;
        let mut responses: Vec<(NodeName, Option<ObjectState>, Option<Expiry>)> =
            vec![(self.node.clone(), mine.0, mine.1)];
        let mut pending = tokio::task::JoinSet::new();
        let request = PeerRequest::ReadState(key.clone()).encode();
        for peer in live.iter().filter(|p| **p != self.node) {
            let mesh = self.mesh.clone();
            let peer = peer.clone();
            let request = request.clone();
            pending.spawn(async move {
                let r = mesh.call(&peer, &request, timeout).await;
                (peer, r)
            });
        }
        while responses.len() < needed {
            let next = tokio::time::timeout_at(deadline, pending.join_next()).await;
            match next {
                Ok(Some(Ok((peer, Ok(bytes))))) => {
                    // A state may be megabytes: validate and decode it off
                    // the async workers.
                    let decoded = self
                        .pool
                        .compute(move || PeerResponse::decode(&bytes))
                        .await;
                    match decoded {
                        Some(Ok(PeerResponse::State(s, e))) => responses.push((peer, s, e)),
                        Some(Ok(other)) => tracing::debug!(%peer, ?other, "unexpected read answer"),
                        Some(Err(e)) => tracing::debug!(%peer, error = %e, "malformed read answer"),
                        None => {}
                    }
                }
                Ok(Some(Ok((peer, Err(e))))) => tracing::debug!(%peer, error = %e, "read failed"),
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        pending.abort_all();
        if responses.len() < needed {
            return Err(WireError::Timeout {
                acked: responses.len() as u32,
                needed: needed as u32,
            });
        }
        // Join what the quorum holds, find the replicas behind it, encode
        // the repair for them and filter the joined state by the joined
        // expiry (issue 15: a value one replica of the read set has
        // expired is not shown, whatever the others hold): CPU work
        // proportional to the object's size, on the pool.
        let (engine, clock, me) = (self.engine.clone(), self.clock.clone(), self.node.clone());
        let joined_key = key.clone();
        let joined = self
            .pool
            .run(move || {
                let key = joined_key;
                let answered = responses.len();
                let JoinedCopies {
                    state,
                    expiry,
                    behind,
                } = join_copies(&responses)?;
                drop(responses);
                let value = engine.visible(&key, state.as_ref(), expiry.as_ref(), clock.now())?;
                // Each replica gets the parts some replica lacks (one
                // encoding for all): a replica lacking only the expiry is
                // not sent a large state no replica lacks.
                let local = behind.iter().find(|b| b.node == me).map(|b| {
                    let s = if b.state { state.clone() } else { None };
                    let e = if b.expiry { expiry.clone() } else { None };
                    (s, e)
                });
                let others: Vec<Behind> = behind.into_iter().filter(|b| b.node != me).collect();
                let repair = if others.is_empty() {
                    Vec::new()
                } else {
                    let s = state.filter(|_| others.iter().any(|b| b.state));
                    let e = expiry.filter(|_| others.iter().any(|b| b.expiry));
                    PeerRequest::Repair(key, s, e).encode()
                };
                let others: Vec<NodeName> = others.into_iter().map(|b| b.node).collect();
                Ok((value, others, repair, local, answered))
            })
            .await;
        let (value, behind, repair, local, answered) = joined.map_err(engine_error)?;
        // Write the join back to the replicas that were behind, before
        // answering, so a later quorum read can't see less. Every copy
        // counted is durable (read repair waits for the fsync under either
        // durability mode).
        let mut repairs = tokio::task::JoinSet::new();
        let mut failed = 0usize;
        let repair = Arc::new(repair);
        for node in behind {
            let mesh = self.mesh.clone();
            let repair = repair.clone();
            repairs.spawn(async move {
                matches!(
                    mesh.call(&node, &repair, timeout)
                        .await
                        .map(|b| PeerResponse::decode(&b)),
                    Ok(Ok(PeerResponse::Repaired))
                )
            });
        }
        if let Some((state, expiry)) = local {
            match self.merge_copy(&key, state, expiry).await {
                Ok(Some(lsn)) => {
                    if self.durable(lsn, timeout).await.is_err() {
                        failed += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "local read repair failed");
                    failed += 1;
                }
            }
        }
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, repairs.join_next()).await {
            if !matches!(r, Ok(true)) {
                failed += 1;
            }
        }
        failed += repairs.len();
        repairs.abort_all();
        if failed > 0 {
            return Err(WireError::Timeout {
                acked: (answered - failed.min(answered)) as u32,
                needed: needed as u32,
            });
        }
        Ok(value)
    }

    /// Whether `peer` may be handed `key`'s state or hand us one: both
    /// nodes must replicate it (placement is data residency: an object's
    /// state never leaves its regions, and a node that does not replicate
    /// an object has no business repairing it).
    fn peer_may_share(&self, peer: &str, key: &ObjectKey) -> Result<(), String> {
        let group = self.placement.group_of(key.key());
        if !self.placement.is_replica(&self.node, group) {
            return Err(format!("{} does not replicate that key", self.node));
        }
        if !self.placement.is_replica(peer, group) {
            self.peer_refusals.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "peer refused: it does not replicate the key it asked about");
            return Err(format!("{peer} does not replicate that key"));
        }
        Ok(())
    }

    /// Serves a peer's RPC. Decoding, engine work and encoding run on the
    /// engine pool (a state may be megabytes).
    pub async fn serve_peer(self: &Arc<Self>, peer: NodeName, request: Vec<u8>) -> Vec<u8> {
        let decoded = self
            .pool
            .compute(move || PeerRequest::decode(&request))
            .await;
        let response = match decoded {
            None => PeerResponse::Failed("node shutting down".into()),
            Some(Err(e)) => {
                tracing::warn!(%peer, error = %e, "malformed peer request");
                PeerResponse::Failed(format!("malformed request: {e}"))
            }
            Some(Ok(PeerRequest::Forward(req))) => {
                PeerResponse::Forwarded(self.execute(req, Origin::Peer).await)
            }
            Some(Ok(PeerRequest::ReadState(key))) => match self.peer_may_share(&peer, &key) {
                Err(e) => PeerResponse::Failed(e),
                Ok(()) => {
                    let engine = self.engine.clone();
                    // Read and encode together: the state is not copied
                    // back to the async side.
                    return self
                        .pool
                        .run(move || {
                            let copy = engine
                                .state(&key)
                                .and_then(|s| Ok((s, engine.expiry(&key)?)));
                            Ok(match copy {
                                Ok((state, expiry)) => PeerResponse::State(state, expiry),
                                Err(e) => PeerResponse::Failed(e.to_string()),
                            }
                            .encode())
                        })
                        .await
                        .unwrap_or_else(|e| PeerResponse::Failed(e.to_string()).encode());
                }
            },
            Some(Ok(PeerRequest::Repair(key, state, expiry))) => {
                match self.peer_may_share(&peer, &key) {
                    Err(e) => PeerResponse::Failed(e),
                    Ok(()) => match self.merge_copy(&key, state, expiry).await {
                        Ok(Some(lsn)) => match self.durable(lsn, self.default_timeout).await {
                            Ok(()) => PeerResponse::Repaired,
                            Err(e) => PeerResponse::Failed(e.to_string()),
                        },
                        Ok(None) => PeerResponse::Repaired,
                        Err(e) => PeerResponse::Failed(e.to_string()),
                    },
                }
            }
        };
        response.encode()
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> NodeStatus {
        let m = self.engine.metrics();
        let peers = self
            .mesh
            .reports()
            .into_iter()
            .map(|r| PeerStatus {
                node: r.name.into_string(),
                region: r.region,
                connected: r.connected,
                lag_deltas: r.lag_deltas,
                lag_ms: r.lag_ms,
                clock_offset_ms: r.clock_offset_ms,
                deferred_deltas: r.deferred_deltas,
            })
            .collect();
        NodeStatus {
            node: self.node.to_string(),
            region: self.region.clone(),
            incarnation: self.engine.incarnation().0,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            log_bytes: m.log_retained_bytes,
            deltas_originated: m.writes,
            deltas_applied: m.merges,
            peers,
        }
    }
}

/// One replica's copy of an object: its state and its expiry state.
type ObjectCopy = (Option<ObjectState>, Option<Expiry>);

/// The join of several replicas' copies of one object.
#[derive(Debug)]
pub(crate) struct JoinedCopies {
    pub state: Option<ObjectState>,
    /// The joined expiry; `None` when no replica has a non-empty one.
    pub expiry: Option<Expiry>,
    /// The replicas whose copy lacks part of the join (read repair
    /// targets), in the order given.
    pub behind: Vec<Behind>,
}

/// A replica whose copy lacks part of a join, and which part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Behind {
    pub node: NodeName,
    pub state: bool,
    pub expiry: bool,
}

/// Joins replicas' copies (quorum and `all` reads): the states and, apart,
/// the expiries (issue 15), and finds the replicas behind either join. A
/// replica with no expiry is behind a non-empty joined one.
pub(crate) fn join_copies(
    copies: &[(NodeName, Option<ObjectState>, Option<Expiry>)],
) -> meridian_engine::Result<JoinedCopies> {
    let mut state: Option<ObjectState> = None;
    let mut expiry: Option<Expiry> = None;
    for (_, s, e) in copies {
        if let Some(s) = s {
            match &mut state {
                None => state = Some(s.clone()),
                Some(j) => {
                    j.join(s)?;
                }
            }
        }
        if let Some(e) = e.as_ref().filter(|e| !e.is_empty()) {
            expiry.get_or_insert_with(Expiry::new).merge(e);
        }
    }
    let behind = copies
        .iter()
        .map(|(node, s, e)| Behind {
            node: node.clone(),
            state: state.is_some() && s.as_ref() != state.as_ref(),
            expiry: expiry.as_ref().is_some_and(|j| e.as_ref() != Some(j)),
        })
        .filter(|b| b.state || b.expiry)
        .collect();
    Ok(JoinedCopies {
        state,
        expiry,
        behind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_replicas_refuses_counts_the_group_cannot_serve() {
        use Consistency::*;
        assert_eq!(required_replicas(Quorum, 3), Ok(2));
        assert_eq!(required_replicas(All, 5), Ok(5));
        assert_eq!(required_replicas(Local, 5), Ok(1));
        assert_eq!(required_replicas(Replicas(1), 3), Ok(1));
        assert_eq!(required_replicas(Replicas(3), 3), Ok(3));
        for bad in [Replicas(4), Replicas(0)] {
            let e = required_replicas(bad, 3).unwrap_err();
            assert!(e.is_definite());
            assert!(
                matches!(&e, WireError::InvalidArgument { message } if message.contains("has 3")),
                "{e}"
            );
        }
    }

    /// Issue 15: a quorum join takes the expiries along with the states,
    /// and a replica is behind (gets repaired) when it lacks either part.
    #[test]
    fn copies_join_states_and_expiries_and_find_who_lacks_either() {
        use meridian_engine::Incarnation;
        use meridian_engine::crdt::Counter;
        let (a, b) = (Incarnation(1), Incarnation(2));
        let counter = |incrs: &[(Incarnation, i64)]| {
            let mut c = Counter::new();
            for &(node, n) in incrs {
                c.incr(node, n).unwrap();
            }
            ObjectState::Counter(c)
        };
        let mut expiry = Expiry::new();
        expiry.expire_at(a, 1_000, 5_000);
        let node = |n: &str| NodeName::from(n);
        let copies = vec![
            (node("x"), Some(counter(&[(a, 2)])), Some(expiry.clone())),
            (node("y"), Some(counter(&[(a, 2), (b, 3)])), None),
            (
                node("z"),
                Some(counter(&[(a, 2), (b, 3)])),
                Some(Expiry::new()),
            ),
            (
                node("w"),
                Some(counter(&[(a, 2), (b, 3)])),
                Some(expiry.clone()),
            ),
        ];
        let joined = join_copies(&copies).unwrap();
        assert_eq!(joined.state, Some(counter(&[(a, 2), (b, 3)])));
        assert_eq!(joined.expiry.as_ref(), Some(&expiry));
        // x lacks b's increment; y and z lack the deadline; w has all.
        let behind = |n: &str, state, expiry| Behind {
            node: node(n),
            state,
            expiry,
        };
        assert_eq!(
            joined.behind,
            vec![
                behind("x", true, false),
                behind("y", false, true),
                behind("z", false, true)
            ]
        );

        // An expiry without content (the content was reclaimed): only
        // the expiry is joined and repaired.
        let mut fired = expiry.clone();
        fired.fire(6_000).unwrap();
        let copies = vec![
            (node("x"), None, Some(fired.clone())),
            (node("y"), None, Some(expiry.clone())),
            (node("z"), None, None),
        ];
        let joined = join_copies(&copies).unwrap();
        assert_eq!(joined.state, None);
        let mut want = expiry.clone();
        want.merge(&fired);
        assert_eq!(joined.expiry.as_ref(), Some(&want));
        assert_eq!(joined.expiry.as_ref().map(Expiry::floor_ms), Some(5_000));
        assert_eq!(
            joined.behind,
            vec![behind("y", false, true), behind("z", false, true)]
        );

        // Nothing to expire: empty expiries count as none, nobody behind.
        let copies = vec![
            (node("x"), Some(counter(&[(a, 1)])), Some(Expiry::new())),
            (node("y"), Some(counter(&[(a, 1)])), None),
        ];
        let joined = join_copies(&copies).unwrap();
        assert_eq!(joined.expiry, None);
        assert!(joined.behind.is_empty());
    }
}
