//! Causality: replica identities, dots, version vectors and causal contexts.
//!
//! * An [`Incarnation`] names one *incarnation* of a replica: it is drawn at
//!   random when a data directory is created (and again after an unclean
//!   shutdown, see the engine docs), so a wiped or rebuilt node can never
//!   reuse an old identity's sequence numbers. Counters and clocks are keyed
//!   by it.
//! * A [`StreamId`] names one numbering of events: one of an incarnation's
//!   log streams (one per placement group, see `stream_id`), or, inside a
//!   set, an incarnation's own numbering of its adds
//!   (`StreamId::from(incarnation)`, which is also its group-0 stream).
//! * A [`Dot`] `(stream, counter)` names one event: a log record (counter =
//!   the stream's log sequence number) or, inside a set, one add (counter =
//!   the origin's per-object event counter).
//! * A [`VersionVector`] summarises a downward-closed set of dots: for each
//!   stream, every counter `1..=vv[stream]`.
//! * A [`CausalContext`] is a version vector plus a "cloud" of dots seen out
//!   of order; it compacts into the vector as gaps fill.
//!
//! Both ids are 64-bit newtypes with the same archived layout as a bare
//! `u64`, so data directories and frames are the same bytes as before the
//! two were told apart.
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
pub struct Incarnation(pub u64);

/// Identity of one numbering of events: the key of [`Dot`]s and
/// [`VersionVector`]s. Never zero.
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
pub struct StreamId(pub u64);

/// An incarnation's own numbering: its group-0 log stream, and the id its
/// adds to a set are numbered under.
impl From<Incarnation> for StreamId {
    fn from(incarnation: Incarnation) -> StreamId {
        StreamId(incarnation.0)
    }
}

/// Both ids print as 16 hex digits (`Debug` with an `n` in front), as the
/// one id type they were split from did: logs and traces read the same.
macro_rules! hex_id_formats {
    ($id:ty) => {
        impl fmt::Debug for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "n{:016x}", self.0)
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }
    };
}

hex_id_formats!(Incarnation);
hex_id_formats!(StreamId);

/// One event: the `counter`-th event of `stream` (log sequence numbers, or
/// a set's per-object add counter). Counters start at 1.
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
    pub stream: StreamId,
    pub counter: u64,
}

impl Dot {
    pub fn new(stream: StreamId, counter: u64) -> Self {
        Dot { stream, counter }
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

/// For each stream, the highest counter `c` such that every dot `(stream, 1..=c)`
/// is included. Absent streams mean 0. Zero entries are never stored, so two
/// vectors describing the same set are equal as values.
#[derive(
    Clone, Default, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct VersionVector(BTreeMap<StreamId, u64>);

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter for `stream` (0 when absent).
    pub fn get(&self, stream: StreamId) -> u64 {
        self.0.get(&stream).copied().unwrap_or(0)
    }

    /// Sets the counter for `stream`; 0 removes the entry.
    pub fn set(&mut self, stream: StreamId, counter: u64) {
        if counter == 0 {
            self.0.remove(&stream);
        } else {
            self.0.insert(stream, counter);
        }
    }

    /// Raises `stream`'s entry to `counter` if it is lower.
    pub fn raise(&mut self, stream: StreamId, counter: u64) {
        if counter > self.get(stream) {
            self.0.insert(stream, counter);
        }
    }

    /// Whether `dot` is included.
    pub fn contains(&self, dot: Dot) -> bool {
        dot.counter != 0 && dot.counter <= self.get(dot.stream)
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(StreamId, u64) -> bool) {
        self.0.retain(|&stream, &mut counter| keep(stream, counter));
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        for (&stream, &counter) in &other.0 {
            self.raise(stream, counter);
        }
    }

    /// Pointwise minimum (what both sides have): the causal-stability bound
    /// of a set of replicas is the meet of their vectors.
    pub fn meet(&self, other: &VersionVector) -> VersionVector {
        let mut out = VersionVector::new();
        for (&stream, &counter) in &self.0 {
            out.set(stream, counter.min(other.get(stream)));
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

    pub fn iter(&self) -> impl Iterator<Item = (StreamId, u64)> + '_ {
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

impl FromIterator<(StreamId, u64)> for VersionVector {
    fn from_iter<T: IntoIterator<Item = (StreamId, u64)>>(iter: T) -> Self {
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
/// have all filled costs one vector entry per stream.
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
        if dot.counter == self.vv.get(dot.stream) + 1 {
            self.vv.set(dot.stream, dot.counter);
            self.compact_stream(dot.stream);
        } else {
            self.cloud.insert(dot);
        }
        true
    }

    /// Moves cloud dots of `stream` that now extend the prefix into the vector.
    fn compact_stream(&mut self, stream: StreamId) {
        loop {
            let next = Dot::new(stream, self.vv.get(stream) + 1);
            if self.cloud.remove(&next) {
                self.vv.set(stream, next.counter);
            } else {
                break;
            }
        }
        // Dots at or below the prefix are redundant.
        let prefix = self.vv.get(stream);
        let stale: Vec<Dot> = self
            .cloud
            .range(Dot::new(stream, 0)..=Dot::new(stream, prefix))
            .copied()
            .collect();
        for d in stale {
            self.cloud.remove(&d);
        }
    }

    /// Set union; returns whether `self` gained a dot. Cost is proportional
    /// to `other`'s size, not `self`'s.
    pub fn join(&mut self, other: &CausalContext) -> bool {
        let mut touched: BTreeSet<StreamId> = BTreeSet::new();
        for (stream, counter) in other.vv.iter() {
            if counter > self.vv.get(stream) {
                self.vv.set(stream, counter);
                touched.insert(stream);
            }
        }
        for &dot in &other.cloud {
            if !self.vv.contains(dot) && self.cloud.insert(dot) {
                touched.insert(dot.stream);
            }
        }
        let changed = !touched.is_empty();
        for stream in touched {
            self.compact_stream(stream);
        }
        changed
    }

    /// The highest counter of `stream` present anywhere in the context.
    pub fn max_counter(&self, stream: StreamId) -> u64 {
        let in_cloud = self
            .cloud
            .range(Dot::new(stream, 0)..=Dot::new(stream, u64::MAX))
            .next_back()
            .map(|d| d.counter)
            .unwrap_or(0);
        in_cloud.max(self.vv.get(stream))
    }

    /// The next dot `stream` should use for a new event in this context.
    pub fn next_dot(&self, stream: StreamId) -> Dot {
        Dot::new(stream, self.max_counter(stream) + 1)
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

    fn n(x: u64) -> StreamId {
        StreamId(x)
    }

    /// Data directories and frames written while both ids were one type
    /// (a `u64` newtype) read the same: each archives as its `u64`.
    #[test]
    fn ids_archive_as_their_u64() {
        use rkyv::rancor::Error;
        let raw = rkyv::to_bytes::<Error>(&0x1234_5678_9abc_def0u64).unwrap();
        let inc = rkyv::to_bytes::<Error>(&Incarnation(0x1234_5678_9abc_def0)).unwrap();
        let stream = rkyv::to_bytes::<Error>(&StreamId(0x1234_5678_9abc_def0)).unwrap();
        assert_eq!(&raw[..], &inc[..]);
        assert_eq!(&raw[..], &stream[..]);
        assert_eq!(format!("{:?}", StreamId(10)), "n000000000000000a");
        assert_eq!(Incarnation(10).to_string(), "000000000000000a");
        assert_eq!(StreamId::from(Incarnation(10)), StreamId(10));
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
