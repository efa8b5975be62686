//! PN-counter with an observed-reset delete.
//!
//! State: per origin, the running totals of its increments and decrements
//! (`entries`), plus a *reset floor* per origin (`reset`): the totals some
//! delete had observed. The value is
//! `Σ (inc − reset.inc) − (dec − reset.dec)` over origins. Merge is the
//! pointwise maximum of every component, so it is commutative, associative
//! and idempotent.
//!
//! A delete raises the floor to everything the deleting replica has seen,
//! so it removes exactly that: increments concurrent with the delete (not
//! yet seen by the deleter) survive, and two concurrent deletes of the same
//! observations remove them once, not twice.
//!
//! Deltas are counters too: an increment's delta is the origin's new entry;
//! a delete's delta carries both the observed entries and the floor, so a
//! replica receiving it never has a floor above its entries.

use std::collections::BTreeMap;

use crate::causal::Incarnation;
use crate::error::{Error, Result};

/// Running totals of one origin's increments and decrements.
#[derive(
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Debug,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Pn {
    pub inc: u64,
    pub dec: u64,
}

impl Pn {
    fn join(&mut self, other: Pn) -> bool {
        let before = *self;
        self.inc = self.inc.max(other.inc);
        self.dec = self.dec.max(other.dec);
        *self != before
    }
}

/// Joins one origin's totals; all-zero totals are never stored, so equal
/// meanings have equal representations.
fn join_entry(map: &mut BTreeMap<Incarnation, Pn>, node: Incarnation, pn: Pn) -> bool {
    if pn == Pn::default() {
        return false;
    }
    map.entry(node).or_default().join(pn)
}

#[derive(
    Clone, Default, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Counter {
    entries: BTreeMap<Incarnation, Pn>,
    reset: BTreeMap<Incarnation, Pn>,
}

impl Counter {
    pub fn new() -> Counter {
        Counter::default()
    }

    fn value_wide(&self) -> i128 {
        let mut total: i128 = 0;
        for (node, pn) in &self.entries {
            let floor = self.reset.get(node).copied().unwrap_or_default();
            total += pn.inc.saturating_sub(floor.inc) as i128;
            total -= pn.dec.saturating_sub(floor.dec) as i128;
        }
        total
    }

    /// The current value, saturated to the `i64` range (concurrent
    /// increments on different replicas can exceed it; local increments that
    /// would are refused).
    pub fn value(&self) -> i64 {
        self.value_wide().clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Adds `delta` on behalf of `node`; returns the delta state.
    pub fn incr(&mut self, node: Incarnation, delta: i64) -> Result<Counter> {
        let resulting = self.value_wide() + delta as i128;
        if resulting > i64::MAX as i128 || resulting < i64::MIN as i128 {
            return Err(Error::InvalidArgument(format!(
                "incrementing by {delta} would overflow the counter's 64-bit range"
            )));
        }
        if delta == 0 {
            // No effect, and no entry: states that mean the same must be equal.
            return Ok(Counter::new());
        }
        let mut entry = self.entries.get(&node).copied().unwrap_or_default();
        let total = if delta >= 0 {
            &mut entry.inc
        } else {
            &mut entry.dec
        };
        *total = total.checked_add(delta.unsigned_abs()).ok_or_else(|| {
            Error::InvalidArgument("the counter's per-replica running total is exhausted".into())
        })?;
        self.entries.insert(node, entry);
        let mut d = Counter::new();
        d.entries.insert(node, entry);
        Ok(d)
    }

    /// Per origin, the running totals of its increments and decrements
    /// (for checkers and simulations that model the counter).
    pub fn entries(&self) -> &BTreeMap<Incarnation, Pn> {
        &self.entries
    }

    /// Per origin, the totals some delete had observed (the reset floor).
    pub fn floors(&self) -> &BTreeMap<Incarnation, Pn> {
        &self.reset
    }

    /// Removes everything this replica has observed; returns the delta.
    pub fn delete(&mut self) -> Counter {
        for (node, pn) in &self.entries {
            join_entry(&mut self.reset, *node, *pn);
        }
        Counter {
            entries: self.entries.clone(),
            reset: self.reset.clone(),
        }
    }

    /// Joins `other` (a delta or a full state) into `self`; returns whether
    /// anything changed.
    pub fn merge(&mut self, other: &Counter) -> bool {
        let mut changed = false;
        for (node, pn) in &other.entries {
            changed |= join_entry(&mut self.entries, *node, *pn);
        }
        for (node, pn) in &other.reset {
            changed |= join_entry(&mut self.reset, *node, *pn);
        }
        changed
    }

    /// Number of origins with an entry (its size cost).
    pub fn origins(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Incarnation = Incarnation(1);
    const B: Incarnation = Incarnation(2);

    #[test]
    fn increments_and_decrements_sum() {
        let mut c = Counter::new();
        c.incr(A, 5).unwrap();
        c.incr(A, -2).unwrap();
        c.incr(B, 10).unwrap();
        assert_eq!(c.value(), 13);
    }

    #[test]
    fn delete_keeps_concurrent_increments() {
        let mut a = Counter::new();
        a.incr(A, 10).unwrap();
        let mut b = a.clone();
        let del = a.delete();
        assert_eq!(a.value(), 0);
        let inc = b.incr(B, 3).unwrap();
        a.merge(&inc);
        b.merge(&del);
        assert_eq!(a, b);
        assert_eq!(a.value(), 3);
    }

    #[test]
    fn concurrent_deletes_remove_once() {
        let mut a = Counter::new();
        a.incr(A, 10).unwrap();
        let mut b = a.clone();
        let da = a.delete();
        let db = b.delete();
        a.merge(&db);
        b.merge(&da);
        assert_eq!(a.value(), 0);
        assert_eq!(b.value(), 0);
    }

    #[test]
    fn delete_delta_arriving_first_never_goes_negative() {
        let mut a = Counter::new();
        let inc = a.incr(A, 4).unwrap();
        let del = a.delete();
        let mut c = Counter::new();
        c.merge(&del);
        assert_eq!(c.value(), 0);
        c.merge(&inc);
        assert_eq!(c.value(), 0);
    }

    #[test]
    fn zero_increment_leaves_no_trace() {
        let mut a = Counter::new();
        let d = a.incr(A, 0).unwrap();
        assert_eq!(a, Counter::new());
        let mut b = Counter::new();
        assert!(!b.merge(&d));
        assert_eq!(a, b);
    }

    #[test]
    fn overflow_is_refused_without_effect() {
        let mut c = Counter::new();
        c.incr(A, i64::MAX).unwrap();
        let before = c.clone();
        assert!(matches!(c.incr(B, 1), Err(Error::InvalidArgument(_))));
        assert_eq!(c, before);
        c.incr(A, i64::MIN + 1).unwrap();
        assert_eq!(c.value(), 0);
    }
}
