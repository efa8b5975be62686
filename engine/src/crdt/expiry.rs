//! Expiry: replicated time-to-live state, attachable to any object.
//!
//! State:
//! * `deadlines`: the surviving TTL settings, `dot → deadline_ms` (Unix
//!   milliseconds), with a causal context of every setting seen. A new
//!   setting (`EXPIRE`, `SET … EX`) or a `PERSIST` cancels the settings its
//!   replica observed, exactly like a field write in [`OrMap`](super::OrMap):
//!   causally later settings override earlier ones, as in Redis.
//! * `floor_ms`: "every write of this object stamped (HLC) before
//!   `floor_ms` is gone" — an expiry that has *happened*, joined by max.
//!
//! The join is the dot-store join for `deadlines` and max for the floor:
//! a product of join-semilattices, so commutative, associative and
//! idempotent; every delta is a small state of the same type.
//!
//! # Rules
//! * **Concurrent settings: every deadline fires.** A deadline `D` removes
//!   every write stamped before `D`, so of two concurrent `EXPIRE`s the
//!   *shorter* one is when the current value disappears, and a `PERSIST`
//!   does not cancel a TTL it had not seen. This is the reverse of Redis
//!   Active-Active (longest TTL wins, `PERSIST` beats any TTL), on purpose:
//!   it is the rule under which learning more can never un-expire a key
//!   (`cutoff_ms` is monotone in concurrent knowledge). Under Redis's rule a
//!   `PERSIST` or a longer TTL from a partitioned region, arriving after
//!   the deadline, brings a key every other replica had already hidden back
//!   to life — the Riak resurrection this design exists to prevent.
//! * **Writes vs. expiry, by HLC.** At time `t` the *cutoff* is the largest
//!   of `floor_ms` and every surviving deadline `≤ t`; the object's content
//!   is the writes stamped at or after the cutoff. A write after the
//!   deadline is a fresh value; a write concurrent with the expiry that is
//!   stamped before the deadline is expired with it, on every replica.
//! * **An expiry that happened is final.** [`Expiry::fire`] raises the
//!   floor to the cutoff; an operation issued on a replica whose cutoff has
//!   passed carries that floor in its delta. Once a replica's floor is
//!   raised, nothing it joins can lower its cutoff. (Without firing, a
//!   causally later extension delivered after the old deadline passed on a
//!   receiver would lower the receiver's cutoff: the engine fires as soon
//!   as a read or the reclamation worker finds a passed deadline, see
//!   docs/maps-and-expiry.md.)
//!
//! Nothing here does I/O or reads a clock: times are passed in.

use std::collections::BTreeMap;

use crate::causal::{CausalContext, Dot, Incarnation, StreamId};
use crate::clock::{Hlc, PhysicalTime};

/// Most surviving deadlines one object's expiry may hold. Every setting
/// cancels the ones its replica saw, so only settings concurrent with each
/// other survive together: one per region writing the key at once. A peer
/// sending more is refused (its state could not have come from operations
/// of a cluster of sane size) rather than held in memory.
pub const MAX_DEADLINES: usize = 256;

/// Replicated TTL state of one object (and the delta type: a delta is a
/// small `Expiry`).
#[derive(
    Clone, Default, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Expiry {
    deadlines: BTreeMap<Dot, u64>,
    context: CausalContext,
    floor_ms: u64,
}

impl Expiry {
    pub fn new() -> Expiry {
        Expiry::default()
    }

    pub fn deadlines(&self) -> &BTreeMap<Dot, u64> {
        &self.deadlines
    }

    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    pub fn floor_ms(&self) -> u64 {
        self.floor_ms
    }

    /// Refuses a state over [`MAX_DEADLINES`] (from a peer or a disk).
    pub fn check(&self) -> crate::error::Result<()> {
        if self.deadlines.len() > MAX_DEADLINES {
            return Err(crate::error::Error::InvalidArgument(format!(
                "an expiry with {} deadlines exceeds the limit of {MAX_DEADLINES}",
                self.deadlines.len()
            )));
        }
        Ok(())
    }

    /// Whether the state means "never set, never expired".
    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty() && self.context.is_empty() && self.floor_ms == 0
    }

    /// The cutoff at `now_ms`: writes stamped before it are gone.
    pub fn cutoff_ms(&self, now_ms: u64) -> u64 {
        self.deadlines
            .values()
            .copied()
            .filter(|&d| d <= now_ms)
            .fold(self.floor_ms, u64::max)
    }

    /// Whether a write stamped `hlc` is gone at `now_ms`.
    pub fn expired(&self, hlc: Hlc, now_ms: u64) -> bool {
        hlc.time < PhysicalTime::from_unix_ms(self.cutoff_ms(now_ms)).0
    }

    /// Whether a write stamped `hlc` is gone on *every* replica whose clock
    /// is within `bound_ms` of `now_ms` (and stays gone): what reclamation
    /// waits for before it drops the content.
    pub fn expired_everywhere(&self, hlc: Hlc, now_ms: u64, bound_ms: u64) -> bool {
        self.expired(hlc, now_ms.saturating_sub(bound_ms))
    }

    /// The next deadline after `now_ms` (what `TTL` reports), if any.
    pub fn next_deadline_ms(&self, now_ms: u64) -> Option<u64> {
        self.deadlines
            .values()
            .copied()
            .filter(|&d| d > now_ms)
            .min()
    }

    /// Sets a deadline (`EXPIRE`, `SET … EX`, `GETEX … EX`) at `now_ms` on
    /// behalf of `incarnation`: cancels the settings observed and fires
    /// what has passed; returns the delta.
    pub fn expire_at(&mut self, incarnation: Incarnation, now_ms: u64, deadline_ms: u64) -> Expiry {
        let mut delta = self.replace_observed(now_ms);
        let dot = self.context.next_dot(StreamId::from(incarnation));
        self.context.insert(dot);
        self.deadlines.insert(dot, deadline_ms);
        delta.context.insert(dot);
        delta.deadlines.insert(dot, deadline_ms);
        delta
    }

    /// Removes every observed deadline (`PERSIST`, `SET` without
    /// `KEEPTTL`, a write to an expired key) at `now_ms`, firing what has
    /// passed; returns the delta.
    pub fn persist(&mut self, now_ms: u64) -> Expiry {
        self.replace_observed(now_ms)
    }

    /// Makes the expiry that has happened by `now_ms` final: raises the
    /// floor to the cutoff and drops the deadlines it spent. Returns the
    /// delta, or `None` when nothing has passed.
    pub fn fire(&mut self, now_ms: u64) -> Option<Expiry> {
        let cutoff = self.cutoff_ms(now_ms);
        let spent: Vec<Dot> = self
            .deadlines
            .iter()
            .filter(|&(_, &d)| d <= cutoff)
            .map(|(dot, _)| *dot)
            .collect();
        if cutoff == self.floor_ms && spent.is_empty() {
            return None;
        }
        let mut delta = Expiry::new();
        self.floor_ms = cutoff;
        delta.floor_ms = cutoff;
        for dot in spent {
            self.deadlines.remove(&dot);
            delta.context.insert(dot);
        }
        Some(delta)
    }

    fn replace_observed(&mut self, now_ms: u64) -> Expiry {
        let cutoff = self.cutoff_ms(now_ms);
        let mut delta = Expiry::new();
        for dot in std::mem::take(&mut self.deadlines).into_keys() {
            delta.context.insert(dot);
        }
        self.floor_ms = cutoff;
        delta.floor_ms = cutoff;
        delta
    }

    /// Joins a delta or a full state; returns whether anything changed.
    pub fn merge(&mut self, other: &Expiry) -> bool {
        let before = self.deadlines.len();
        let mut changed = false;
        self.deadlines
            .retain(|dot, _| other.deadlines.contains_key(dot) || !other.context.contains(*dot));
        changed |= self.deadlines.len() != before;
        for (dot, &d) in &other.deadlines {
            if !self.context.contains(*dot) {
                // Our deadlines' dots are all in our context: this is new.
                self.deadlines.insert(*dot, d);
                changed = true;
            }
        }
        changed |= self.context.join(&other.context);
        if other.floor_ms > self.floor_ms {
            self.floor_ms = other.floor_ms;
            changed = true;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Incarnation = Incarnation(1);
    const B: Incarnation = Incarnation(2);

    fn at(ms: u64) -> Hlc {
        Hlc {
            time: PhysicalTime::from_unix_ms(ms).0,
            node: A,
        }
    }

    #[test]
    fn deadline_hides_older_writes_only() {
        let mut e = Expiry::new();
        e.expire_at(A, 0, 100);
        assert_eq!(e.next_deadline_ms(50), Some(100));
        assert!(!e.expired(at(10), 99));
        assert!(e.expired(at(10), 100));
        assert!(!e.expired(at(100), 100), "a write at the deadline is fresh");
        assert!(!e.expired_everywhere(at(10), 100, 20));
        assert!(e.expired_everywhere(at(10), 120, 20));
    }

    #[test]
    fn shorter_concurrent_ttl_and_ttl_beats_concurrent_persist() {
        let mut a = Expiry::new();
        let mut b = Expiry::new();
        let da = a.expire_at(A, 0, 100);
        let db = b.expire_at(B, 0, 50);
        a.merge(&db);
        b.merge(&da);
        assert_eq!(a, b);
        assert_eq!(a.next_deadline_ms(0), Some(50));
        let mut c = a.clone();
        let p = c.persist(10);
        let dl = a.expire_at(A, 10, 30);
        c.merge(&dl);
        a.merge(&p);
        assert_eq!(a, c);
        assert_eq!(a.next_deadline_ms(10), Some(30));
    }

    #[test]
    fn fired_expiry_is_final() {
        let mut a = Expiry::new();
        a.expire_at(A, 0, 100);
        let mut b = a.clone();
        // b extends before the deadline; a fires before hearing of it.
        let ext = b.expire_at(B, 90, 1000);
        a.fire(150).unwrap();
        assert!(a.fire(150).is_none());
        a.merge(&ext);
        assert_eq!(a.cutoff_ms(150), 100);
        assert!(a.expired(at(99), 150));
    }
}
