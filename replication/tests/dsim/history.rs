//! What the simulated clients did: every operation, where and when it was
//! issued, the delta the engine made of it, and what the client was told.

use meridian_engine::{Delta, Dot, Hlc, ObjectKey, Op};

/// Consistency level of a write, as the coordinator takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Acknowledged once the origin holds it (durably under `Sync`; under
    /// `Periodic` at once, before any fsync).
    Local,
    /// A majority of the replicas hold it durably.
    Quorum,
    /// Every replica holds it durably.
    All,
}

impl Level {
    /// Replicas that must hold the write, of `n` (the coordinator's
    /// `required_replicas`).
    pub fn needed(self, n: usize) -> usize {
        match self {
            Level::Local => 1.min(n),
            Level::Quorum => n / 2 + 1,
            Level::All => n,
        }
    }
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still waiting.
    Pending,
    /// Acknowledged at its level (sim ms).
    Acked { at_ms: u64 },
    /// Refused before the engine applied anything (too few live replicas,
    /// a full disk, a poisoned engine): it took no effect.
    Refused(String),
    /// Applied at the origin, then no acknowledgement: the wait timed out,
    /// the origin crashed, or its fsync failed. It may or may not survive.
    Indeterminate(String),
}

/// One client operation.
#[derive(Clone, Debug)]
pub struct OpRecord {
    pub id: usize,
    /// Index of the node it was sent to.
    pub node: usize,
    pub at_ms: u64,
    pub key: ObjectKey,
    pub op: Op,
    pub level: Level,
    /// Whether the origin ran `Periodic` durability (a `local` ack there
    /// precedes the fsync).
    pub periodic: bool,
    /// The origin's boot when it was issued (a crash ends what it owes).
    pub boot: u64,
    /// Set once the engine applied it.
    pub dot: Option<Dot>,
    pub hlc: Option<Hlc>,
    pub delta: Option<Delta>,
    pub outcome: Outcome,
    /// Acknowledged under `Periodic` before it was durable anywhere, and
    /// its origin then crashed while it still was not: it may be lost.
    pub may_be_lost: bool,
    /// Known durable on some node (nothing can lose it any more).
    pub durable_somewhere: bool,
    // Progress of the acknowledgement.
    pub local_ok: bool,
    pub remote_done: bool,
    pub token: Option<u64>,
}

impl OpRecord {
    pub fn acked(&self) -> bool {
        matches!(self.outcome, Outcome::Acked { .. })
    }

    pub fn pending(&self) -> bool {
        self.outcome == Outcome::Pending
    }
}
