//! Causality: node identities, dots, version vectors and causal contexts.
//!
//! * A [`NodeId`] names one *incarnation* of a replica: it is drawn at random
//!   when a data directory is created (and again after an unclean shutdown,
//!   see the engine docs), so a wiped or rebuilt node can never reuse an old
//!   identity's sequence numbers.
//! * A [`Dot`] `(node, counter)` names one event: a log record (counter = the
//!   origin's log sequence number) or, inside a set, one add (counter = the
//!   origin's per-object event counter).
//! * A [`VersionVector`] summarises a downward-closed set of dots: for each
//!   node, every counter `1..=vv[node]`.
//! * A [`CausalContext`] is a version vector plus a "cloud" of dots seen out
//!   of order; it compacts into the vector as gaps fill.
//!
//! Nothing here reads a clock or does I/O.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Identity of one replica incarnation. Never zero.
#[derive(
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash))]
pub struct NodeId(pub u64);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{:016x}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One event: the `counter`-th event of `node` in some numbering (log
/// sequence numbers, or a set's per-object add counter). Counters start at 1.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Debug,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct Dot {
    pub node: NodeId,
    pub counter: u64,
}

impl Dot {
    pub fn new(node: NodeId, counter: u64) -> Self {
        Dot { node, counter }
    }
}

/// How two version vectors relate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Causality {
    /// Every dot of the left side is in the right side, and the right has more.
    Before,
    /// The left side has every dot of the right side, and more.
    After,
    Equal,
    /// Each side has a dot the other lacks.
    Concurrent,
}

/// For each node, the highest counter `c` such that every dot `(node, 1..=c)`
/// is included. Absent nodes mean 0. Zero entries are never stored, so two
/// vectors describing the same set are equal as values.
#[derive(
    Clone, Default, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct VersionVector(BTreeMap<NodeId, u64>);

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter for `node` (0 when absent).
    pub fn get(&self, node: NodeId) -> u64 {
        self.0.get(&node).copied().unwrap_or(0)
    }

    /// Sets the counter for `node`; 0 removes the entry.
    pub fn set(&mut self, node: NodeId, counter: u64) {
        if counter == 0 {
            self.0.remove(&node);
        } else {
            self.0.insert(node, counter);
        }
    }

    /// Raises `node`'s entry to `counter` if it is lower.
    pub fn raise(&mut self, node: NodeId, counter: u64) {
        if counter > self.get(node) {
            self.0.insert(node, counter);
        }
    }

    /// Whether `dot` is included.
    pub fn contains(&self, dot: Dot) -> bool {
        dot.counter != 0 && dot.counter <= self.get(dot.node)
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        for (&node, &counter) in &other.0 {
            self.raise(node, counter);
        }
    }

    /// Pointwise minimum (what both sides have): the causal-stability bound
    /// of a set of replicas is the meet of their vectors.
    pub fn meet(&self, other: &VersionVector) -> VersionVector {
        let mut out = VersionVector::new();
        for (&node, &counter) in &self.0 {
            out.set(node, counter.min(other.get(node)));
        }
        out
    }

    /// Whether every dot of `other` is included in `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(&n, &c)| self.get(n) >= c)
    }

    pub fn compare(&self, other: &VersionVector) -> Causality {
        match (self.dominates(other), other.dominates(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.0.iter().map(|(&n, &c)| (n, c))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total number of dots summarised (sum of the entries).
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// How many dots `self` has that `other` lacks.
    pub fn dots_ahead_of(&self, other: &VersionVector) -> u64 {
        self.0
            .iter()
            .map(|(&n, &c)| c.saturating_sub(other.get(n)))
            .sum()
    }
}

impl PartialOrd for VersionVector {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.compare(other) {
            Causality::Before => Some(Ordering::Less),
            Causality::After => Some(Ordering::Greater),
            Causality::Equal => Some(Ordering::Equal),
            Causality::Concurrent => None,
        }
    }
}

impl FromIterator<(NodeId, u64)> for VersionVector {
    fn from_iter<T: IntoIterator<Item = (NodeId, u64)>>(iter: T) -> Self {
        let mut vv = VersionVector::new();
        for (n, c) in iter {
            vv.raise(n, c);
        }
        vv
    }
}

/// A set of dots that need not be downward closed: a [`VersionVector`] for
/// the contiguous prefix plus a cloud of dots above it. Inserting the missing
/// dot of a gap compacts the cloud into the vector, so a context whose gaps
/// have all filled costs one vector entry per node.
#[derive(
    Clone, Default, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct CausalContext {
    vv: VersionVector,
    cloud: BTreeSet<Dot>,
}

impl fmt::Debug for CausalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cloud.is_empty() {
            write!(f, "{:?}", self.vv)
        } else {
            write!(f, "{:?}+{:?}", self.vv, self.cloud)
        }
    }
}

impl CausalContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// A context holding exactly the dots of `vv`.
    pub fn from_vector(vv: VersionVector) -> Self {
        CausalContext {
            vv,
            cloud: BTreeSet::new(),
        }
    }

    pub fn contains(&self, dot: Dot) -> bool {
        self.vv.contains(dot) || self.cloud.contains(&dot)
    }

    /// Adds one dot; returns whether it was new.
    pub fn insert(&mut self, dot: Dot) -> bool {
        if dot.counter == 0 || self.contains(dot) {
            return false;
        }
        if dot.counter == self.vv.get(dot.node) + 1 {
            self.vv.set(dot.node, dot.counter);
            self.compact_node(dot.node);
        } else {
            self.cloud.insert(dot);
        }
        true
    }

    /// Moves cloud dots of `node` that now extend the prefix into the vector.
    fn compact_node(&mut self, node: NodeId) {
        loop {
            let next = Dot::new(node, self.vv.get(node) + 1);
            if self.cloud.remove(&next) {
                self.vv.set(node, next.counter);
            } else {
                break;
            }
        }
        // Dots at or below the prefix are redundant.
        let prefix = self.vv.get(node);
        let stale: Vec<Dot> = self
            .cloud
            .range(Dot::new(node, 0)..=Dot::new(node, prefix))
            .copied()
            .collect();
        for d in stale {
            self.cloud.remove(&d);
        }
    }

    /// Set union; returns whether `self` gained a dot. Cost is proportional
    /// to `other`'s size, not `self`'s.
    pub fn join(&mut self, other: &CausalContext) -> bool {
        let mut touched: BTreeSet<NodeId> = BTreeSet::new();
        for (node, counter) in other.vv.iter() {
            if counter > self.vv.get(node) {
                self.vv.set(node, counter);
                touched.insert(node);
            }
        }
        for &dot in &other.cloud {
            if !self.vv.contains(dot) && self.cloud.insert(dot) {
                touched.insert(dot.node);
            }
        }
        let changed = !touched.is_empty();
        for node in touched {
            self.compact_node(node);
        }
        changed
    }

    /// The highest counter of `node` present anywhere in the context.
    pub fn max_counter(&self, node: NodeId) -> u64 {
        let in_cloud = self
            .cloud
            .range(Dot::new(node, 0)..=Dot::new(node, u64::MAX))
            .next_back()
            .map(|d| d.counter)
            .unwrap_or(0);
        in_cloud.max(self.vv.get(node))
    }

    /// The next dot `node` should use for a new event in this context.
    pub fn next_dot(&self, node: NodeId) -> Dot {
        Dot::new(node, self.max_counter(node) + 1)
    }

    /// The contiguous prefix.
    pub fn vector(&self) -> &VersionVector {
        &self.vv
    }

    /// Dots above the prefix, in order.
    pub fn cloud(&self) -> impl Iterator<Item = Dot> + '_ {
        self.cloud.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// Number of stored entries (vector entries + cloud dots): its size cost.
    pub fn entries(&self) -> usize {
        self.vv.len() + self.cloud.len()
    }
}

impl FromIterator<Dot> for CausalContext {
    fn from_iter<T: IntoIterator<Item = Dot>>(iter: T) -> Self {
        let mut cc = CausalContext::new();
        for d in iter {
            cc.insert(d);
        }
        cc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(x: u64) -> NodeId {
        NodeId(x)
    }

    #[test]
    fn compare_covers_all_four_relations() {
        let a: VersionVector = [(n(1), 2), (n(2), 1)].into_iter().collect();
        let b: VersionVector = [(n(1), 2), (n(2), 3)].into_iter().collect();
        let c: VersionVector = [(n(1), 3)].into_iter().collect();
        assert_eq!(a.compare(&b), Causality::Before);
        assert_eq!(b.compare(&a), Causality::After);
        assert_eq!(a.compare(&a.clone()), Causality::Equal);
        assert_eq!(b.compare(&c), Causality::Concurrent);
        assert_eq!(a.partial_cmp(&c), None);
    }

    #[test]
    fn join_meet_and_contains() {
        let mut a: VersionVector = [(n(1), 2)].into_iter().collect();
        let b: VersionVector = [(n(1), 1), (n(2), 4)].into_iter().collect();
        assert_eq!(a.meet(&b), [(n(1), 1)].into_iter().collect());
        a.join(&b);
        assert_eq!(a, [(n(1), 2), (n(2), 4)].into_iter().collect());
        assert!(a.contains(Dot::new(n(2), 4)));
        assert!(!a.contains(Dot::new(n(2), 5)));
        assert!(!a.contains(Dot::new(n(3), 1)));
        assert!(!a.contains(Dot::new(n(1), 0)));
        assert_eq!(a.dots_ahead_of(&b), 1);
    }

    #[test]
    fn zero_entries_are_not_stored() {
        let mut a = VersionVector::new();
        a.set(n(1), 0);
        assert_eq!(a, VersionVector::new());
        assert!(a.is_empty());
    }

    #[test]
    fn context_compacts_when_gaps_fill() {
        let mut cc = CausalContext::new();
        assert!(cc.insert(Dot::new(n(1), 3)));
        assert!(cc.insert(Dot::new(n(1), 2)));
        assert_eq!(cc.entries(), 2);
        assert!(cc.insert(Dot::new(n(1), 1)));
        assert_eq!(cc.entries(), 1);
        assert_eq!(cc.vector().get(n(1)), 3);
        assert!(!cc.insert(Dot::new(n(1), 2)));
        assert_eq!(cc.next_dot(n(1)), Dot::new(n(1), 4));
    }

    #[test]
    fn context_join_is_union() {
        let a: CausalContext = [Dot::new(n(1), 1), Dot::new(n(1), 3)].into_iter().collect();
        let b: CausalContext = [Dot::new(n(1), 2), Dot::new(n(2), 5)].into_iter().collect();
        let mut ab = a.clone();
        ab.join(&b);
        let mut ba = b.clone();
        ba.join(&a);
        assert_eq!(ab, ba);
        for d in [(1, 1), (1, 2), (1, 3), (2, 5)] {
            assert!(ab.contains(Dot::new(n(d.0), d.1)));
        }
        assert!(!ab.contains(Dot::new(n(2), 4)));
        assert_eq!(ab.vector().get(n(1)), 3);
        assert_eq!(ab.max_counter(n(2)), 5);
    }
}
