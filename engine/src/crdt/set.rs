//! Add-wins observed-remove set without tombstones (a delta ORSWOT).
//!
//! State: each present member maps to the dots of the adds that produced it
//! (normally one), and a causal context holds every dot the replica has
//! seen, present or removed. A member is present iff it has a dot. Removing
//! a member drops its entry: the removed dots live on only inside the
//! context, which compacts to one version-vector entry per node once its
//! gaps fill, so a removed member costs zero bytes.
//!
//! Join of `(S, Sc)` with `(D, Dc)`, per member:
//! `(S ∩ D) ∪ (S \ Dc) ∪ (D \ Sc)`, and the contexts are unioned. A remove
//! cancels only the dots it observed, so an add concurrent with a remove
//! (a dot the remover had not seen) survives: add wins.
//!
//! Dots here are per object: `(StreamId::from(incarnation), n)` is that
//! incarnation's n-th add to this set, so the context of a set touched by a
//! few nodes stays a few entries.
//!
//! Deltas: an operation's delta lists the members it touched (an add: the
//! new dot, and in the context the member's previous dots; a remove: no dot,
//! and the removed dots in the context). Its context covers only dots of
//! listed members, so joining it visits only those members ([`Scope::Listed`]);
//! merging a one-member delta costs the same in a set of ten or ten million.
//! A full state used as a delta ([`Scope::Full`]) can cancel any member and
//! is joined against every member.

use std::collections::BTreeMap;

use crate::causal::{CausalContext, Dot, Incarnation, StreamId};

/// Dots of one member, sorted and without duplicates (normally one).
#[derive(
    Clone, Default, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct DotSet(Vec<Dot>);

impl DotSet {
    pub fn one(dot: Dot) -> DotSet {
        DotSet(vec![dot])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = Dot> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, dot: Dot) -> bool {
        self.0.binary_search(&dot).is_ok()
    }

    fn from_unsorted(mut dots: Vec<Dot>) -> DotSet {
        dots.sort_unstable();
        dots.dedup();
        DotSet(dots)
    }
}

/// Which members a delta may affect.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum Scope {
    /// Only the members listed in the delta (operation deltas).
    Listed,
    /// Any member (a full state used as a delta).
    Full,
}

/// A set delta: listed members with their dots (empty = removed), a causal
/// context, and its [`Scope`].
#[derive(Clone, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SetDelta {
    pub entries: BTreeMap<Vec<u8>, DotSet>,
    pub context: CausalContext,
    pub scope: Scope,
}

impl SetDelta {
    /// Members the delta names (the only ones a `Listed` delta can affect).
    pub fn members(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.entries.keys().map(Vec::as_slice)
    }
}

/// The join of one member's dots: `(s ∩ d) ∪ (s \ dc) ∪ (d \ sc)`.
pub fn join_member(s: &DotSet, sc: &CausalContext, d: &DotSet, dc: &CausalContext) -> DotSet {
    let mut out: Vec<Dot> = s
        .iter()
        .filter(|&dot| d.contains(dot) || !dc.contains(dot))
        .collect();
    out.extend(d.iter().filter(|&dot| !sc.contains(dot)));
    DotSet::from_unsorted(out)
}

/// Storage cost estimate of one member entry, in bytes (for the object size limit).
pub fn entry_cost(member: &[u8], dots: &DotSet) -> u64 {
    (member.len() + 16 * dots.len() + 8) as u64
}

/// An add-wins set, or a partial view of one (some members plus the whole
/// context), which is all an operation or a `Listed` delta needs.
#[derive(
    Clone, Default, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct OrSet {
    entries: BTreeMap<Vec<u8>, DotSet>,
    context: CausalContext,
}

impl OrSet {
    pub fn new() -> OrSet {
        OrSet::default()
    }

    /// Builds a set (or a partial view) from stored parts.
    pub fn from_parts(entries: BTreeMap<Vec<u8>, DotSet>, context: CausalContext) -> OrSet {
        OrSet { entries, context }
    }

    pub fn into_parts(self) -> (BTreeMap<Vec<u8>, DotSet>, CausalContext) {
        (self.entries, self.context)
    }

    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    pub fn entries(&self) -> &BTreeMap<Vec<u8>, DotSet> {
        &self.entries
    }

    pub fn dots(&self, member: &[u8]) -> Option<&DotSet> {
        self.entries.get(member)
    }

    pub fn contains(&self, member: &[u8]) -> bool {
        self.entries.contains_key(member)
    }

    /// Present members, ascending.
    pub fn members(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.entries.keys().map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `members` on behalf of `incarnation`; returns the delta.
    pub fn add(&mut self, incarnation: Incarnation, members: &[Vec<u8>]) -> SetDelta {
        let numbering = StreamId::from(incarnation);
        let mut delta = SetDelta {
            entries: BTreeMap::new(),
            context: CausalContext::new(),
            scope: Scope::Listed,
        };
        for member in members {
            if delta.entries.contains_key(member) {
                continue;
            }
            let dot = self.context.next_dot(numbering);
            if let Some(old) = self.entries.get(member) {
                for d in old.iter() {
                    delta.context.insert(d);
                }
            }
            delta.context.insert(dot);
            delta.entries.insert(member.clone(), DotSet::one(dot));
            self.entries.insert(member.clone(), DotSet::one(dot));
            self.context.insert(dot);
        }
        delta
    }

    /// Removes the observed adds of `members`; returns the delta. Members
    /// not present are ignored (removing them has no effect anywhere).
    pub fn remove(&mut self, members: &[Vec<u8>]) -> SetDelta {
        let mut delta = SetDelta {
            entries: BTreeMap::new(),
            context: CausalContext::new(),
            scope: Scope::Listed,
        };
        for member in members {
            if let Some(old) = self.entries.remove(member.as_slice()) {
                for d in old.iter() {
                    delta.context.insert(d);
                }
                delta.entries.insert(member.clone(), DotSet::default());
            }
        }
        delta
    }

    /// Removes every observed member; returns the delta. Needs the full set.
    pub fn delete(&mut self) -> SetDelta {
        let all: Vec<Vec<u8>> = self.entries.keys().cloned().collect();
        self.remove(&all)
    }

    /// Joins a delta (or a full state, see [`OrSet::to_delta`]); returns
    /// whether anything changed. A `Listed` delta may be joined into a
    /// partial view holding at least the listed members.
    pub fn merge(&mut self, delta: &SetDelta) -> bool {
        let mut changed = false;
        for (member, ddots) in &delta.entries {
            let empty = DotSet::default();
            let sdots = self.entries.get(member).unwrap_or(&empty);
            let joined = join_member(sdots, &self.context, ddots, &delta.context);
            if &joined != sdots {
                changed = true;
                if joined.is_empty() {
                    self.entries.remove(member);
                } else {
                    self.entries.insert(member.clone(), joined);
                }
            }
        }
        if delta.scope == Scope::Full {
            // Members the full state doesn't list lose every dot it has seen.
            let mut updates: Vec<(Vec<u8>, DotSet)> = Vec::new();
            for (member, dots) in &self.entries {
                if delta.entries.contains_key(member) {
                    continue;
                }
                if dots.iter().any(|d| delta.context.contains(d)) {
                    let kept = dots
                        .iter()
                        .filter(|&d| !delta.context.contains(d))
                        .collect();
                    updates.push((member.clone(), DotSet::from_unsorted(kept)));
                }
            }
            changed |= !updates.is_empty();
            for (member, kept) in updates {
                if kept.is_empty() {
                    self.entries.remove(&member);
                } else {
                    self.entries.insert(member, kept);
                }
            }
        }
        changed |= self.context.join(&delta.context);
        changed
    }

    /// The whole state as a delta that can be joined anywhere.
    pub fn to_delta(&self) -> SetDelta {
        SetDelta {
            entries: self.entries.clone(),
            context: self.context.clone(),
            scope: Scope::Full,
        }
    }

    /// Estimated storage cost of the members, in bytes.
    pub fn cost(&self) -> u64 {
        self.entries.iter().map(|(m, d)| entry_cost(m, d)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Incarnation = Incarnation(1);
    const B: Incarnation = Incarnation(2);

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn add_then_remove() {
        let mut s = OrSet::new();
        s.add(A, &[v("x"), v("y")]);
        assert_eq!(s.len(), 2);
        s.remove(&[v("x"), v("missing")]);
        assert_eq!(s.members().collect::<Vec<_>>(), vec![b"y".as_slice()]);
    }

    #[test]
    fn add_wins_over_concurrent_remove() {
        let mut a = OrSet::new();
        let add1 = a.add(A, &[v("e")]);
        let mut b = OrSet::new();
        b.merge(&add1);
        let rm = a.remove(&[v("e")]);
        let add2 = b.add(B, &[v("e")]);
        a.merge(&add2);
        b.merge(&rm);
        assert_eq!(a, b);
        assert!(a.contains(b"e"));
    }

    #[test]
    fn removed_members_leave_no_trace_beyond_the_context() {
        let mut s = OrSet::new();
        for i in 0..100 {
            s.add(A, &[format!("m{i}").into_bytes()]);
        }
        let all: Vec<Vec<u8>> = (0..100).map(|i| format!("m{i}").into_bytes()).collect();
        s.remove(&all);
        assert!(s.is_empty());
        assert_eq!(s.context().entries(), 1, "context compacted to one entry");
    }

    #[test]
    fn full_state_merge_cancels_members_the_peer_removed() {
        let mut a = OrSet::new();
        a.add(A, &[v("x"), v("y")]);
        let mut b = a.clone();
        b.remove(&[v("x")]);
        a.merge(&b.to_delta());
        assert_eq!(a.members().collect::<Vec<_>>(), vec![b"y".as_slice()]);
        assert_eq!(a, b);
    }

    #[test]
    fn listed_delta_merges_into_a_partial_view() {
        let mut full = OrSet::new();
        full.add(A, &[v("a"), v("b"), v("c")]);
        let mut other = full.clone();
        let delta = other.remove(&[v("b")]);
        // A view with only member b and the context.
        let mut view = OrSet::from_parts(
            full.entries()
                .iter()
                .filter(|(m, _)| m.as_slice() == b"b")
                .map(|(m, d)| (m.clone(), d.clone()))
                .collect(),
            full.context().clone(),
        );
        view.merge(&delta);
        full.merge(&delta);
        assert!(!view.contains(b"b"));
        assert_eq!(view.context(), full.context());
    }
}
