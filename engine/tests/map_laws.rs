//! Property tests for the map (Redis hashes) and expiry CRDTs
//! (`engine/src/crdt/map.rs`, `engine/src/crdt/expiry.rs`,
//! docs/maps-and-expiry.md), in the style of `crdt_laws.rs`:
//!
//! * joins of full states are commutative, associative and idempotent,
//!   and so are joins of deltas (any order, any grouping, twice);
//! * `S ⊔ δ(op) == op(S)` for every operation, and re-joining changes
//!   nothing;
//! * random three-replica histories (local operations, deliveries of random
//!   subsets of the delta pool in random order with duplicates, full-state
//!   syncs) agree with an independent model at every step and converge
//!   once everything is delivered:
//!   - map: a field's entries are exactly the writes known here that no
//!     known `HSET`/`HINCRBY`/`HDEL`/delete observed (an `HINCRBY` observed
//!     every earlier increment of its field by its writer); the causal context is
//!     exactly the dots seen; a read is `max(hlc, dot)` of the `HSET`s plus
//!     the sum of the `HINCRBY` contributions;
//!   - expiry: the deadlines are the settings no known setting, `PERSIST`
//!     or fire observed, the floor is the largest floor known;
//! * map: once everything is delivered no increment chain is left and the
//!   context has no holes (removed fields leave nothing behind);
//! * map: add wins for a concurrent `HSET`/`HDEL` of one field, concurrent
//!   `HINCRBY`s add up, concurrent `HSET`s resolve by `(hlc, node)`, and a
//!   `Listed` delta needs only the fields it lists;
//! * expiry: once fired, nothing joined lowers the cutoff;
//! * differential: the map's `HSET`/`HDEL`/delete agree with `crdts::Map`
//!   of `MVReg`s (see `map_agrees_with_crdts_map`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use crdts::MVReg;
use meridian_engine::crdt::Expiry;
use meridian_engine::crdt::map::{Entries, Entry, MapDelta, OrMap, Scope, parse_int};
use meridian_engine::{Dot, Hlc, Incarnation, PhysicalTime, StreamId};
use proptest::prelude::*;

/// Fields are drawn from a small universe so histories collide.
const FIELDS: u8 = 4;

/// Field values: integers and a non-integer, so `HINCRBY` sometimes fails.
const VALUES: [&str; 4] = ["1", "7", "x", "-3"];

// ---------------------------------------------------------------------------
// The generic history runner (common/history.rs).

#[path = "common/history.rs"]
mod history;

use history::{History, REPLICAS, Replica, Step, context_dots, finish, node, run, steps};

#[path = "common/mirror.rs"]
mod mirror;

use mirror::{Mirror, Ours, Run, run_mirrored};

/// Map and expiry replicas keep no clock: what they receive does not
/// depend on the step it arrives at.
const ANY_STEP: u64 = 0;

/// A replica whose state is a lattice with a bottom, joinable as a delta:
/// what the join laws below need.
trait Lattice: Replica<State: Default> {
    fn as_delta(state: &Self::State) -> Self::Delta;
}

/// Full-state joins: commutative, associative, idempotent; delta joins:
/// any order, any grouping, twice.
fn assert_laws<R: Lattice>(h: &History<R>) {
    let join = |a: &R::State, b: &R::State| {
        let mut out = a.clone();
        R::merge(&mut out, &R::as_delta(b));
        out
    };
    let states: Vec<R::State> = h
        .replicas
        .iter()
        .map(|r| r.state().clone())
        .chain(std::iter::once(R::State::default()))
        .collect();
    for a in &states {
        assert_eq!(&join(a, a), a, "join is not idempotent");
        for b in &states {
            assert_eq!(join(a, b), join(b, a), "join is not commutative");
            for c in &states {
                assert_eq!(
                    join(&join(a, b), c),
                    join(a, &join(b, c)),
                    "join is not associative"
                );
            }
        }
    }
    let deltas: Vec<&R::Delta> = h.pool.iter().take(8).map(|(d, _)| d).collect();
    let apply = |s: &R::State, ds: &[&R::Delta]| {
        let mut out = s.clone();
        for d in ds {
            R::merge(&mut out, d);
        }
        out
    };
    for base in &states {
        for (i, d1) in deltas.iter().enumerate() {
            let once = apply(base, &[d1]);
            let mut twice = once.clone();
            assert!(
                !R::merge(&mut twice, d1),
                "re-joining a delta reported a change"
            );
            assert_eq!(twice, once, "a delta joined twice differs from once");
            for d2 in &deltas[i + 1..] {
                assert_eq!(
                    apply(base, &[d1, d2]),
                    apply(base, &[d2, d1]),
                    "delta joins are not commutative"
                );
                let group = apply(&R::State::default(), &[d1, d2]);
                assert_eq!(
                    apply(base, &[&R::as_delta(&group)]),
                    apply(base, &[d1, d2]),
                    "joining a delta group differs from joining its deltas"
                );
                for d3 in deltas.iter().skip(i + 2).take(3) {
                    let right = apply(&R::State::default(), &[d2, d3]);
                    assert_eq!(
                        apply(base, &[d1, &R::as_delta(&right)]),
                        apply(base, &[d1, d2, d3]),
                        "delta joins are not associative"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Map.

#[derive(Clone, Debug)]
enum MapOp {
    /// `HSET` of `(field, value index)` pairs.
    Set(Vec<(u8, u8)>),
    Incr(u8, i64),
    Remove(Vec<u8>),
    Delete,
}

thread_local! {
    /// Every map write made in the current history, by dot: its field and
    /// whether it is an increment (what a chain can cover). Cleared when a
    /// history starts (its first replica is made).
    static WRITTEN: std::cell::RefCell<BTreeMap<Dot, (u8, bool)>> =
        const { std::cell::RefCell::new(BTreeMap::new()) };
}

fn record_write(dot: Dot, field: u8, entry: &Entry) {
    WRITTEN.with(|w| {
        w.borrow_mut()
            .insert(dot, (field, matches!(entry, Entry::Incr { .. })))
    });
}

/// What cancelling the `live` entries of `field` observes: their dots,
/// and for an increment every earlier increment of the field by its
/// writer (its total includes them).
fn cancelled(live: &Entries, field: u8) -> Vec<Dot> {
    let mut out: Vec<Dot> = live.keys().copied().collect();
    for (dot, e) in live {
        if matches!(e, Entry::Incr { .. }) {
            out.extend(earlier_increments(*dot, field));
        }
    }
    out
}

/// The increments of `field` by `dot`'s writer made before it.
fn earlier_increments(dot: Dot, field: u8) -> Vec<Dot> {
    WRITTEN.with(|w| {
        w.borrow()
            .iter()
            .filter(|&(d, &(f, incr))| {
                incr && f == field && d.stream == dot.stream && d.counter < dot.counter
            })
            .map(|(d, _)| *d)
            .collect()
    })
}

/// Whether `map` has seen `dot` (its context, or a chain covering an
/// increment), by the write it names.
fn map_sees(map: &OrMap, dot: Dot) -> bool {
    map.context().contains(dot)
        || WRITTEN.with(|w| match w.borrow().get(&dot) {
            Some(&(f, true)) => map
                .chains()
                .get(&vec![f])
                .is_some_and(|vv| vv.contains(dot)),
            _ => false,
        })
}

/// The map model, in dots: every write known here and every dot a known
/// operation observed (cancelled).
#[derive(Clone, Debug, Default)]
struct MapKnowledge {
    writes: BTreeMap<Dot, (u8, Entry)>,
    observed: BTreeSet<Dot>,
}

impl MapKnowledge {
    fn live(&self, field: u8) -> Entries {
        self.writes
            .iter()
            .filter(|&(d, (f, _))| *f == field && !self.observed.contains(d))
            .map(|(d, (_, e))| (*d, e.clone()))
            .collect()
    }

    fn join(&mut self, other: &MapKnowledge) {
        for (d, w) in &other.writes {
            let prev = self.writes.insert(*d, w.clone());
            assert!(
                prev.is_none() || prev.as_ref() == Some(w),
                "a dot named two writes"
            );
        }
        self.observed.extend(other.observed.iter().copied());
    }
}

/// The model's read of a field: the `HSET` with the largest `(hlc, dot)`,
/// plus every `HINCRBY` contribution; a non-integer `HSET` value reads as
/// itself.
fn model_value(live: &Entries) -> Option<Vec<u8>> {
    let mut best: Option<(Hlc, Dot, Vec<u8>)> = None;
    let mut sum: Option<i128> = None;
    for (dot, e) in live {
        match e {
            Entry::Set { hlc, value } => {
                if best
                    .as_ref()
                    .is_none_or(|(h, d, _)| (*hlc, *dot) > (*h, *d))
                {
                    best = Some((*hlc, *dot, value.clone()));
                }
            }
            Entry::Incr { total } => *sum.get_or_insert(0) += *total as i128,
        }
    }
    match (best, sum) {
        (None, None) => None,
        (Some((_, _, v)), None) => Some(v),
        (best, Some(sum)) => {
            let base = match &best {
                None => 0,
                Some((_, _, v)) => match std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    Some(n) if n.to_string().as_bytes() == v.as_slice() => n as i128,
                    _ => return best.map(|b| b.2),
                },
            };
            let total = (base + sum).clamp(i64::MIN as i128, i64::MAX as i128);
            Some(total.to_string().into_bytes())
        }
    }
}

#[derive(Clone, Debug)]
struct MapReplica {
    index: usize,
    map: OrMap,
    model: MapKnowledge,
}

fn hlc_at(step: u64, index: usize) -> Hlc {
    Hlc {
        time: step,
        node: node(index),
    }
}

impl Replica for MapReplica {
    type Op = MapOp;
    type State = OrMap;
    type Delta = MapDelta;
    type Note = MapKnowledge;

    fn new(index: usize) -> Self {
        if index == 0 {
            // A new history: no write is made yet.
            WRITTEN.with(|w| w.borrow_mut().clear());
        }
        MapReplica {
            index,
            map: OrMap::new(),
            model: MapKnowledge::default(),
        }
    }

    fn state(&self) -> &OrMap {
        &self.map
    }

    fn apply(&mut self, op: &MapOp, step: u64) -> Option<(MapDelta, MapKnowledge)> {
        let me = node(self.index);
        let mut note = MapKnowledge::default();
        let delta = match op {
            MapOp::Set(pairs) => {
                let pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs
                    .iter()
                    .map(|&(f, v)| {
                        (
                            vec![f],
                            VALUES[v as usize % VALUES.len()].as_bytes().to_vec(),
                        )
                    })
                    .collect();
                let delta = self.map.set(me, hlc_at(step, self.index), &pairs).unwrap();
                let fields: BTreeSet<u8> = pairs.iter().map(|(f, _)| f[0]).collect();
                assert_eq!(delta.fields.len(), fields.len());
                for f in fields {
                    let entries = &delta.fields[&vec![f]];
                    assert_eq!(entries.len(), 1, "an HSET makes one entry per field");
                    let (&dot, entry) = entries.iter().next().unwrap();
                    assert_eq!(dot.stream, StreamId::from(me));
                    assert!(!self.model.writes.contains_key(&dot), "HSET reused a dot");
                    let last = pairs.iter().rev().find(|(pf, _)| pf[0] == f).unwrap();
                    assert_eq!(
                        entry,
                        &Entry::Set {
                            hlc: hlc_at(step, self.index),
                            value: last.1.clone()
                        }
                    );
                    note.observed.extend(cancelled(&self.model.live(f), f));
                    note.writes.insert(dot, (f, entry.clone()));
                    record_write(dot, f, entry);
                }
                delta
            }
            MapOp::Incr(f, by) => {
                let live = self.model.live(*f);
                let current = match model_value(&live) {
                    None => Some(0),
                    Some(v) => parse_int(&v),
                };
                let result = self.map.incr(me, &[*f], *by);
                let Some(current) = current else {
                    assert!(result.is_err(), "HINCRBY of a non-integer must fail");
                    return None;
                };
                let (delta, value) = result.expect("integer field");
                assert_eq!(value, current + by);
                let stream = StreamId::from(me);
                let mine: Vec<(Dot, i64)> = live
                    .iter()
                    .filter_map(|(d, e)| match e {
                        Entry::Incr { total } if d.stream == stream => Some((*d, *total)),
                        _ => None,
                    })
                    .collect();
                assert!(mine.len() <= 1, "a writer holds one increment of a field");
                let total = mine.iter().map(|(_, t)| t).sum::<i64>() + by;
                let (&dot, entry) = delta.fields[&vec![*f]].iter().next().unwrap();
                assert_eq!(entry, &Entry::Incr { total });
                assert_eq!(dot.stream, stream, "increments use the writer's stream");
                // An increment observed every earlier increment of the field
                // by its writer (the one it holds, in `mine`, and those it
                // saw cancelled).
                note.observed.extend(earlier_increments(dot, *f));
                note.writes.insert(dot, (*f, entry.clone()));
                record_write(dot, *f, entry);
                delta
            }
            MapOp::Remove(fs) => {
                let fields: Vec<Vec<u8>> = fs.iter().map(|&f| vec![f]).collect();
                let delta = self.map.remove(&fields);
                for &f in fs {
                    note.observed.extend(cancelled(&self.model.live(f), f));
                }
                delta
            }
            MapOp::Delete => {
                let delta = self.map.delete();
                assert!(delta.fields.is_empty(), "a delete is context-only");
                assert_eq!(delta.scope, Scope::Full);
                for f in 0..FIELDS {
                    note.observed.extend(cancelled(&self.model.live(f), f));
                }
                delta
            }
        };
        if !matches!(op, MapOp::Delete) {
            assert_eq!(delta.scope, Scope::Listed, "operation deltas are listed");
        }
        self.model.join(&note);
        Some((delta, note))
    }

    fn receive(&mut self, delta: &MapDelta, note: &MapKnowledge, _step: u64) {
        self.map.merge(delta);
        self.model.join(note);
    }

    fn check(&self) {
        for f in 0..FIELDS {
            let live = self.model.live(f);
            let got = self.map.entries(&[f]).cloned().unwrap_or_default();
            assert_eq!(got, live, "entries of field {f} differ from the model");
            assert_eq!(self.map.get(&[f]), model_value(&live), "read of field {f}");
            assert_eq!(self.map.exists(&[f]), !live.is_empty());
        }
        let expected: BTreeSet<Dot> = self
            .model
            .writes
            .keys()
            .chain(self.model.observed.iter())
            .copied()
            .collect();
        // What the map has seen is its context plus what its increment
        // chains cover: exactly the dots the model has seen.
        let in_context = context_dots(self.map.context());
        assert!(
            in_context.is_subset(&expected),
            "the causal context holds dots the model has not seen: {:?}",
            in_context.difference(&expected).collect::<Vec<_>>()
        );
        for &dot in &expected {
            assert!(
                map_sees(&self.map, dot),
                "the map has not seen {dot:?}, which the model has"
            );
        }
        WRITTEN.with(|w| {
            for (&dot, &(f, incr)) in w.borrow().iter() {
                let chained = incr
                    && self
                        .map
                        .chains()
                        .get(&vec![f])
                        .is_some_and(|vv| vv.contains(dot));
                assert!(
                    !chained || expected.contains(&dot),
                    "replica {}: a chain covers {dot:?}, which the model has not seen; chains {:?}, context {:?}, model {:?}",
                    self.index,
                    self.map.chains(),
                    self.map.context(),
                    self.model
                );
            }
        });
        // Chains are kept only while the context does not cover them.
        for vv in self.map.chains().values() {
            for (stream, n) in vv.iter() {
                assert!(
                    self.map.context().vector().get(stream) < n,
                    "a chain the context covers was kept"
                );
            }
        }
        assert_eq!(self.map.len(), self.map.keys().count());
        assert_eq!(self.map.values().len(), self.map.len());
        assert!(self.map.check_limits().is_ok());
    }

    fn full(&self) -> Option<(MapDelta, MapKnowledge)> {
        Some((self.map.to_delta(), self.model.clone()))
    }

    fn merge(state: &mut OrMap, delta: &MapDelta) -> bool {
        state.merge(delta)
    }
}

impl Lattice for MapReplica {
    fn as_delta(state: &OrMap) -> MapDelta {
        state.to_delta()
    }
}

fn field_list() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0..FIELDS, 1..3)
}

fn map_op() -> impl Strategy<Value = MapOp> {
    prop_oneof![
        5 => proptest::collection::vec((0..FIELDS, any::<u8>()), 1..3).prop_map(MapOp::Set),
        4 => (0..FIELDS, -20i64..=20).prop_map(|(f, by)| MapOp::Incr(f, by)),
        3 => field_list().prop_map(MapOp::Remove),
        1 => Just(MapOp::Delete),
    ]
}

/// A converged three-replica map after a random history.
fn converged(steps: &[Step<MapOp>], seed: u64) -> History<MapReplica> {
    let mut h = run::<MapReplica>(steps);
    finish(&mut h, seed);
    h
}

/// Delivers `delta` made by `from` to every other replica.
fn broadcast(h: &mut History<MapReplica>, from: usize, delta: &MapDelta, note: &MapKnowledge) {
    for (i, r) in h.replicas.iter_mut().enumerate() {
        if i != from {
            r.receive(delta, note, ANY_STEP);
        }
    }
}

// ---------------------------------------------------------------------------
// Expiry.

#[derive(Clone, Debug)]
enum ExpiryOp {
    /// `EXPIRE` with a deadline this many ms after now (0: at once).
    ExpireIn(u64),
    Persist,
    Fire,
}

#[derive(Clone, Debug, Default)]
struct ExpiryKnowledge {
    settings: BTreeMap<Dot, u64>,
    observed: BTreeSet<Dot>,
    floor_ms: u64,
}

impl ExpiryKnowledge {
    fn live(&self) -> BTreeMap<Dot, u64> {
        self.settings
            .iter()
            .filter(|(d, _)| !self.observed.contains(d))
            .map(|(d, t)| (*d, *t))
            .collect()
    }

    fn cutoff(&self, now_ms: u64) -> u64 {
        self.live()
            .values()
            .copied()
            .filter(|&t| t <= now_ms)
            .max()
            .unwrap_or(0)
            .max(self.floor_ms)
    }

    fn join(&mut self, other: &ExpiryKnowledge) {
        self.settings
            .extend(other.settings.iter().map(|(d, t)| (*d, *t)));
        self.observed.extend(other.observed.iter().copied());
        self.floor_ms = self.floor_ms.max(other.floor_ms);
    }
}

/// Milliseconds at step `step`: every step is 5 ms.
fn ms_at(step: u64) -> u64 {
    1_000 + step * 5
}

#[derive(Clone, Debug)]
struct ExpiryReplica {
    index: usize,
    expiry: Expiry,
    model: ExpiryKnowledge,
}

impl Replica for ExpiryReplica {
    type Op = ExpiryOp;
    type State = Expiry;
    type Delta = Expiry;
    type Note = ExpiryKnowledge;

    fn new(index: usize) -> Self {
        ExpiryReplica {
            index,
            expiry: Expiry::new(),
            model: ExpiryKnowledge::default(),
        }
    }

    fn state(&self) -> &Expiry {
        &self.expiry
    }

    fn apply(&mut self, op: &ExpiryOp, step: u64) -> Option<(Expiry, ExpiryKnowledge)> {
        let now = ms_at(step);
        let cutoff = self.model.cutoff(now);
        assert_eq!(
            self.expiry.cutoff_ms(now),
            cutoff,
            "cutoff differs from the model"
        );
        let mut note = ExpiryKnowledge {
            floor_ms: cutoff,
            ..ExpiryKnowledge::default()
        };
        let delta = match op {
            ExpiryOp::ExpireIn(after) => {
                let delta = self.expiry.expire_at(node(self.index), now, now + after);
                note.observed.extend(self.model.live().keys().copied());
                let (&dot, &t) = delta.deadlines().iter().next().expect("one new deadline");
                assert_eq!(delta.deadlines().len(), 1);
                assert_eq!(t, now + after);
                assert!(!self.model.settings.contains_key(&dot), "a dot was reused");
                note.settings.insert(dot, t);
                delta
            }
            ExpiryOp::Persist => {
                note.observed.extend(self.model.live().keys().copied());
                self.expiry.persist(now)
            }
            ExpiryOp::Fire => {
                let spent: Vec<Dot> = self
                    .model
                    .live()
                    .iter()
                    .filter(|&(_, &t)| t <= cutoff)
                    .map(|(d, _)| *d)
                    .collect();
                let fired = self.expiry.fire(now);
                if cutoff == self.model.floor_ms && spent.is_empty() {
                    assert!(fired.is_none(), "nothing to fire, yet fire made a delta");
                    return None;
                }
                note.observed.extend(spent);
                fired.expect("a passed deadline fires")
            }
        };
        self.model.join(&note);
        Some((delta, note))
    }

    fn receive(&mut self, delta: &Expiry, note: &ExpiryKnowledge, _step: u64) {
        self.expiry.merge(delta);
        self.model.join(note);
    }

    fn check(&self) {
        assert_eq!(
            self.expiry.deadlines(),
            &self.model.live(),
            "deadlines differ"
        );
        assert_eq!(self.expiry.floor_ms(), self.model.floor_ms, "floor differs");
        let expected: BTreeSet<Dot> = self
            .model
            .settings
            .keys()
            .chain(self.model.observed.iter())
            .copied()
            .collect();
        assert_eq!(context_dots(self.expiry.context()), expected);
    }

    fn full(&self) -> Option<(Expiry, ExpiryKnowledge)> {
        Some((self.expiry.clone(), self.model.clone()))
    }

    fn merge(state: &mut Expiry, delta: &Expiry) -> bool {
        state.merge(delta)
    }
}

impl Lattice for ExpiryReplica {
    fn as_delta(state: &Expiry) -> Expiry {
        state.clone()
    }
}

fn expiry_op() -> impl Strategy<Value = ExpiryOp> {
    prop_oneof![
        4 => (0u64..60).prop_map(ExpiryOp::ExpireIn),
        2 => Just(ExpiryOp::Persist),
        2 => Just(ExpiryOp::Fire),
    ]
}

fn hlc_ms(ms: u64) -> Hlc {
    Hlc {
        time: PhysicalTime::from_unix_ms(ms).0,
        node: Incarnation(9),
    }
}

// ---------------------------------------------------------------------------
// Differential against `crdts::Map<u8, MVReg<u8, u64>, u64>`.
//
// | ours | `crdts` |
// |---|---|
// | `OrMap::set(node, hlc, [(f, v)])` | `Map::update(f, read_ctx().derive_add_ctx(node), \|r, c\| r.write(v, c))` |
// | `OrMap::remove([f..])` | `Op::Rm { clock: read_ctx().derive_rm_ctx().clock, keyset: {f..} }` |
// | `OrMap::delete()` | the same `Rm` with every present key |
// | full state joined with `merge` | the sender's ops, in causal order |
// | field present (`exists`) | key present |
// | the values of the field's `Set` entries | `MVReg::read().val` (concurrent values) |
// | `get` | the value of the largest `(hlc, dot)` among them |
//
// `HINCRBY` has no counterpart (`crdts` has no causal counter). As in
// `crdt_differential.rs`, `crdts` ops are applied in causal order (buffered
// until their causal past is applied), ours at once in any order, and the
// two are compared only at sync points; operations are issued only there.

#[derive(Clone, Debug)]
enum DiffOp {
    Set(u8, u8),
    Remove(Vec<u8>),
    Delete,
}

type TheirMap = crdts::Map<u8, MVReg<u8, u64>, u64>;

impl Ours for OrMap {
    type Delta = MapDelta;
    fn join(&mut self, delta: &MapDelta) {
        self.merge(delta);
    }
    fn full(&self) -> MapDelta {
        self.to_delta()
    }
}

type DiffReplica = Mirror<OrMap, TheirMap>;

fn compare_maps(replicas: &[DiffReplica]) -> usize {
    let mut compared = 0;
    for (i, r) in replicas.iter().enumerate() {
        if !r.at_sync_point() {
            continue;
        }
        for f in 0..FIELDS {
            let theirs: Option<Vec<u8>> = r.theirs.get(&f).val.map(|reg| {
                let mut vals = reg.read().val;
                vals.sort_unstable();
                vals
            });
            let ours: Option<Vec<u8>> = r.ours.entries(&[f]).map(|entries| {
                let mut vals: Vec<u8> = entries
                    .values()
                    .map(|e| match e {
                        Entry::Set { value, .. } => value[0],
                        Entry::Incr { .. } => unreachable!("no HINCRBY here"),
                    })
                    .collect();
                vals.sort_unstable();
                vals
            });
            assert_eq!(
                ours, theirs,
                "replica {i} field {f}: our map and crdts::Map disagree after {:?}",
                r.ours_known
            );
            if let (Some(got), Some(vals)) = (r.ours.get(&[f]), &ours) {
                assert!(
                    vals.contains(&got[0]),
                    "the read is not one of the concurrent values"
                );
            }
        }
        compared += 1;
    }
    compared
}

fn run_diff(steps: &[Step<DiffOp>], seed: u64) {
    run_mirrored(
        Run {
            new: &|| Mirror::new(OrMap::new(), TheirMap::new()),
            issue: &|r: &mut DiffReplica, replica, step, op: &DiffOp| {
                let me = replica as u64 + 1;
                let rm = |r: &DiffReplica, keys: BTreeSet<u8>| crdts::map::Op::Rm {
                    clock: r.theirs.read_ctx().derive_rm_ctx().clock,
                    keyset: keys,
                };
                match op {
                    DiffOp::Set(f, v) => {
                        let d = r
                            .ours
                            .set(
                                Incarnation(me),
                                hlc_at(step, replica),
                                &[(vec![*f], vec![*v])],
                            )
                            .unwrap();
                        let ctx = r.theirs.read_ctx().derive_add_ctx(me);
                        (d, r.theirs.update(*f, ctx, |reg, c| reg.write(*v, c)))
                    }
                    DiffOp::Remove(fs) => {
                        let fields: Vec<Vec<u8>> = fs.iter().map(|&f| vec![f]).collect();
                        (r.ours.remove(&fields), rm(r, fs.iter().copied().collect()))
                    }
                    DiffOp::Delete => {
                        let keys: BTreeSet<u8> = r.ours.keys().map(|k| k[0]).collect();
                        (r.ours.delete(), rm(r, keys))
                    }
                }
            },
            sync: &|src, dst, ops| {
                // Ours joins the full state; `crdts` gets the sender's ops
                // (causally closed), applied in causal order. (Its `CvRDT`
                // merge of a `Map` of `MVReg`s is not used: its reset-remove
                // can leave an `MVReg` holding a value whose clock a
                // sibling's dominates — {2:1} beside {2:2} — which the
                // register's own invariant calls obsolete.)
                dst.ours.join(&src.ours.full());
                dst.ours_known.extend(src.ours_known.iter().copied());
                dst.buffer.extend(src.theirs_applied.iter().copied());
                dst.drain(ops);
            },
            compare: &compare_maps,
        },
        steps,
        seed,
    );
}

fn diff_op() -> impl Strategy<Value = DiffOp> {
    prop_oneof![
        4 => (0..FIELDS, 0u8..4).prop_map(|(f, v)| DiffOp::Set(f, v)),
        2 => field_list().prop_map(DiffOp::Remove),
        1 => Just(DiffOp::Delete),
    ]
}

// ---------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn map_histories_converge_and_match_the_model(
        steps in steps(map_op(), 60),
        seed in any::<u64>(),
    ) {
        let mut h = run::<MapReplica>(&steps);
        assert_laws(&h);
        finish(&mut h, seed);
        // At the end: every write no known operation observed is present.
        let mut all = MapKnowledge::default();
        for (_, note) in &h.pool {
            all.join(note);
        }
        for r in &h.replicas {
            for f in 0..FIELDS {
                prop_assert_eq!(r.map.get(&[f]), model_value(&all.live(f)));
            }
        }
    }

    #[test]
    fn expiry_histories_converge_and_match_the_model(
        steps in steps(expiry_op(), 60),
        seed in any::<u64>(),
    ) {
        let mut h = run::<ExpiryReplica>(&steps);
        assert_laws(&h);
        finish(&mut h, seed);
        let floor = h.pool.iter().map(|(_, n)| n.floor_ms).max().unwrap_or(0);
        for r in &h.replicas {
            prop_assert_eq!(r.expiry.floor_ms(), floor);
        }
    }

    /// Once a replica has fired its expiry at `now`, nothing it joins —
    /// any delta, any replica's full state — lowers its cutoff at `now`,
    /// so a write it hid stays hidden (no resurrection through read
    /// repair, catch-up or full sync).
    #[test]
    fn a_fired_expiry_is_never_undone(
        steps in steps(expiry_op(), 60),
        target in 0..REPLICAS,
        at_step in 0u64..80,
    ) {
        let h = run::<ExpiryReplica>(&steps);
        let now = ms_at(at_step);
        let mut fired = h.replicas[target].expiry.clone();
        fired.fire(now);
        let cutoff = fired.cutoff_ms(now);
        let hidden = hlc_ms(cutoff.saturating_sub(1));
        let others = h.pool.iter().map(|(d, _)| d.clone())
            .chain(h.replicas.iter().map(|r| r.expiry.clone()));
        for d in others {
            let mut after = fired.clone();
            after.merge(&d);
            prop_assert!(after.cutoff_ms(now) >= cutoff, "a join lowered a fired cutoff");
            if cutoff > 0 {
                prop_assert!(after.expired(hidden, now), "a hidden write came back");
            }
        }
    }

    /// Add wins: one replica removes a field while another concurrently
    /// sets it; everywhere the field ends with exactly the concurrent
    /// write's entry.
    #[test]
    fn hset_wins_over_a_concurrent_hdel(
        steps in steps(map_op(), 30),
        seed in any::<u64>(),
        field in 0..FIELDS,
        value in any::<u8>(),
        remover in 0..REPLICAS,
        adder_offset in 1..REPLICAS,
        whole_map in any::<bool>(),
    ) {
        let mut h = converged(&steps, seed);
        let adder = (remover + adder_offset) % REPLICAS;
        let (d0, n0) = h.replicas[0].apply(&MapOp::Set(vec![(field, 0)]), 1_000).unwrap();
        broadcast(&mut h, 0, &d0, &n0);
        let rm_op = if whole_map { MapOp::Delete } else { MapOp::Remove(vec![field]) };
        let (rm, rm_note) = h.replicas[remover].apply(&rm_op, 1_001).unwrap();
        let (add, add_note) =
            h.replicas[adder].apply(&MapOp::Set(vec![(field, value)]), 1_002).unwrap();
        let new_dot = *add.fields[&vec![field]].keys().next().unwrap();
        h.replicas[adder].receive(&rm, &rm_note, ANY_STEP);
        h.replicas[remover].receive(&add, &add_note, ANY_STEP);
        for i in 0..REPLICAS {
            if i != remover && i != adder {
                h.replicas[i].receive(&add, &add_note, ANY_STEP);
                h.replicas[i].receive(&rm, &rm_note, ANY_STEP);
            }
        }
        let expected = VALUES[value as usize % VALUES.len()].as_bytes().to_vec();
        for r in &h.replicas {
            r.check();
            prop_assert_eq!(r.map.get(&[field]), Some(expected.clone()), "HSET lost to HDEL");
            let dots: Vec<Dot> = r.map.entries(&[field]).unwrap().keys().copied().collect();
            prop_assert_eq!(dots, vec![new_dot]);
        }
    }

    /// Once every delta has arrived, in any order, a map keeps no
    /// increment chain and its context is one vector entry per writer:
    /// removed fields, counters included, leave nothing behind.
    #[test]
    fn settled_maps_keep_no_chains(steps in steps(map_op(), 60), seed in any::<u64>()) {
        let h = converged(&steps, seed);
        for r in &h.replicas {
            prop_assert!(r.map.chains().is_empty(), "chains kept: {:?}", r.map.chains());
            prop_assert_eq!(r.map.context().cloud().count(), 0);
        }
    }

    /// Concurrent `HINCRBY`s of one field on every replica add up.
    #[test]
    fn concurrent_hincrby_adds_up(
        steps in steps(map_op(), 30),
        seed in any::<u64>(),
        field in 0..FIELDS,
        by in proptest::collection::vec(-1000i64..=1000, REPLICAS),
    ) {
        let mut h = converged(&steps, seed);
        // Start from a known integer: "7".
        let (d0, n0) = h.replicas[0].apply(&MapOp::Set(vec![(field, 1)]), 1_000).unwrap();
        broadcast(&mut h, 0, &d0, &n0);
        let mut made = Vec::new();
        for (i, &k) in by.iter().enumerate() {
            made.push((i, h.replicas[i].apply(&MapOp::Incr(field, k), 1_001).unwrap()));
        }
        for (from, (d, n)) in &made {
            broadcast(&mut h, *from, d, n);
        }
        let expected = 7 + by.iter().sum::<i64>();
        for r in &h.replicas {
            r.check();
            prop_assert_eq!(r.map.get(&[field]), Some(expected.to_string().into_bytes()));
        }
    }

    /// Concurrent `HSET`s of one field resolve by `(hlc, node)` everywhere.
    #[test]
    fn concurrent_hsets_resolve_by_hlc_then_node(
        steps in steps(map_op(), 30),
        seed in any::<u64>(),
        field in 0..FIELDS,
        writes in proptest::collection::vec((0u64..3, any::<u8>()), REPLICAS),
    ) {
        let mut h = converged(&steps, seed);
        let mut made = Vec::new();
        for (i, &(t, v)) in writes.iter().enumerate() {
            let hlc = Hlc { time: 10_000 + t, node: node(i) };
            let value = vec![v];
            let delta = h.replicas[i].map.set(node(i), hlc, &[(vec![field], value.clone())]).unwrap();
            made.push((i, hlc, value, delta));
        }
        for (from, _, _, d) in &made {
            for (j, r) in h.replicas.iter_mut().enumerate() {
                if j != *from {
                    r.map.merge(d);
                }
            }
        }
        let winner = made.iter().max_by_key(|(_, hlc, _, _)| *hlc).unwrap();
        for r in &h.replicas {
            prop_assert_eq!(r.map.get(&[field]), Some(winner.2.clone()));
            prop_assert_eq!(&r.map, &h.replicas[0].map);
        }
    }

    /// A `Listed` delta joined into a partial view (the listed fields plus
    /// the context) gives those fields the same entries, and the same
    /// context, as joining it into the full map, which keeps every other
    /// field as it was.
    #[test]
    fn listed_deltas_only_need_the_listed_fields(
        steps in steps(map_op(), 60),
        target in 0..REPLICAS,
        origin in 0..REPLICAS,
        op in map_op(),
    ) {
        let mut h = run::<MapReplica>(&steps);
        let before = h.replicas[target].map.clone();
        let Some((delta, _)) = h.replicas[origin].apply(&op, 1_000) else {
            return Ok(());
        };
        if delta.scope == Scope::Full {
            return Ok(());
        }
        let listed: BTreeSet<Vec<u8>> = delta.field_names().map(<[u8]>::to_vec).collect();
        let mut full = before.clone();
        let full_changed = full.merge(&delta);
        let (fields, context, chains) = before.clone().into_parts();
        let partial = fields.into_iter().filter(|(f, _)| listed.contains(f)).collect();
        let mut view = OrMap::from_parts(partial, context, chains);
        prop_assert_eq!(full_changed, view.merge(&delta));
        prop_assert_eq!(view.context(), full.context());
        for (f, entries) in full.fields() {
            if listed.contains(f) {
                prop_assert_eq!(view.entries(f), Some(entries));
            } else {
                prop_assert_eq!(before.entries(f), Some(entries), "an unlisted field changed");
            }
        }
        for f in before.keys() {
            prop_assert!(listed.contains(f) || full.exists(f), "an unlisted field vanished");
        }
    }

    #[test]
    fn map_agrees_with_crdts_map(steps in steps(diff_op(), 80), seed in any::<u64>()) {
        run_diff(&steps, seed);
    }
}

/// A full state used as a delta cancels fields the sender removed but
/// never a write the sender had not seen.
#[test]
fn full_state_cancels_only_what_the_sender_saw() {
    let (a, b) = (Incarnation(1), Incarnation(2));
    let hlc = |t| Hlc { time: t, node: a };
    let mut x = OrMap::new();
    x.set(
        a,
        hlc(1),
        &[
            (b"k".to_vec(), b"1".to_vec()),
            (b"gone".to_vec(), b"2".to_vec()),
        ],
    )
    .unwrap();
    let mut y = x.clone();
    y.remove(&[b"gone".to_vec()]);
    x.set(a, hlc(2), &[(b"new".to_vec(), b"3".to_vec())])
        .unwrap();
    let mut z = OrMap::new();
    let (dz, _) = z.incr(b, b"zeta", 5).unwrap();
    x.merge(&dz);
    x.merge(&y.to_delta());
    let keys: Vec<&[u8]> = x.keys().collect();
    assert_eq!(keys, vec![&b"k"[..], b"new", b"zeta"]);
    assert_eq!(x.get(b"zeta"), Some(b"5".to_vec()));
}
