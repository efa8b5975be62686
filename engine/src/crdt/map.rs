//! Add-wins observed-remove map (Redis hashes) without tombstones.
//!
//! State: each present field maps to its *entries*, `dot → Entry`, and a
//! causal context holds every dot the replica has seen (present or
//! removed), as in [`OrSet`](super::OrSet). A field is present iff it has
//! an entry. Removing a field drops its entries; the removed dots live on
//! only inside the context, which compacts to one version-vector entry per
//! writer (plus one per writer and field it incremented, see
//! [`increment_stream`]), so a removed field costs zero bytes (a removed
//! counter field: one vector entry per writer that incremented it).
//!
//! An entry is one of:
//! * [`Entry::Set`] — an `HSET`: the value and its HLC. An `HSET` cancels
//!   every entry of the field it observed, so a field written only by
//!   `HSET` normally has one entry; writes concurrent with each other both
//!   survive as entries and a read picks the largest `(hlc, dot)` — the
//!   register rule of [`Register`](super::Register) (HLC, then node).
//!   Keeping the losers (until the next write of the field cancels them) is
//!   what makes the join associative: dropping a loser at merge time would
//!   let a later `HDEL` that observed only the winner resurrect the loser
//!   on some replicas and not others.
//! * [`Entry::Incr`] — an `HINCRBY`: the incrementing replica's whole
//!   contribution to the field (a causal counter, Almeida et al., *Delta
//!   state replicated data types*, 2018, §7.2). A replica's increment
//!   replaces its own previous entry (its dot goes into the context) and
//!   leaves the other replicas' entries alone, so concurrent increments add
//!   up and a field holds at most one `Incr` entry per writer.
//!
//! # The value of a field with both kinds of entries
//! The value is `base + Σ contributions`, where `base` is the winning
//! `Set` entry's value (0 when there is none). This is Redis's own
//! sequential behaviour (`HSET f 5; HINCRBY f 1` gives 6, and an `HSET`
//! after increments overwrites them, since it cancels the entries it
//! observed), and under concurrency no increment is lost: an `HINCRBY`
//! concurrent with an `HSET` is applied on top of the new value. When the
//! winning `Set` value is not an integer, the field reads as that string
//! (increments concurrent with it are invisible, and a later `HINCRBY`
//! fails as in Redis); when the sum leaves the `i64` range it saturates.
//!
//! # Deletes
//! `HDEL` cancels exactly the entries it observed: an `HSET` or `HINCRBY`
//! concurrent with it survives (add wins). For a counter field the
//! surviving increment carries its writer's whole contribution, earlier
//! increments included (the causal counter's known imprecision; it is the
//! price of holding no per-field floors after a delete — see
//! docs/maps-and-expiry.md). Deleting the whole map is a context-only
//! delta of [`Scope::Full`]: it cancels every entry it observed.
//!
//! # Deltas
//! An operation's delta lists the fields it touched, each with only its
//! new entry (or none, for a delete), and a context with the new dot and
//! the dots it cancelled — dots of listed fields only, so it is
//! [`Scope::Listed`] and joining it visits only those fields.
//!
//! Dots are per object, numbered like the set's
//! (`StreamId::from(incarnation)`, this map's n-th write by that writer),
//! except increments: a writer's increments of one field have a stream of
//! their own ([`increment_stream`]), so an increment's delta cancels all
//! the writer's earlier increments of the field, whatever order deltas
//! arrive in.
//!
//! Nothing here does I/O or reads a clock: HLCs are passed in.

use std::collections::BTreeMap;

use crate::causal::{CausalContext, Dot, Incarnation, StreamId, VersionVector};
use crate::clock::Hlc;
use crate::error::Error;

pub use super::set::Scope;

/// Most fields one map may hold: bounds a full-state transfer and a
/// `HGETALL` reply independently of field sizes (Redis has no such limit;
/// 1 Mi fields of a few bytes each stay well under [`MAX_MAP_BYTES`]).
pub const MAX_FIELDS_PER_MAP: usize = 1 << 20;

/// Largest map, in estimated stored bytes (see [`entry_cost`]): the same
/// bound as every other object (`MAX_OBJECT_BYTES`), for the same reason:
/// it bounds full-state transfers and quorum-read joins.
pub const MAX_MAP_BYTES: u64 = meridian_limits::MAX_OBJECT_BYTES as u64;

/// Largest field name and largest field value, in bytes: the engine's key
/// and value limits, so a field is never larger than a key or a register.
pub const MAX_FIELD_BYTES: usize = meridian_limits::MAX_KEY_BYTES;
pub const MAX_FIELD_VALUE_BYTES: usize = meridian_limits::MAX_VALUE_BYTES;

/// Why a map (or an operation on it) breaks a limit. Converts into
/// [`Error::InvalidArgument`]: nothing was changed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum MapLimitError {
    #[error("the map would hold {fields} fields, over the {MAX_FIELDS_PER_MAP}-field limit")]
    TooManyFields { fields: usize },
    #[error("the map would grow to {bytes} bytes, over the {MAX_MAP_BYTES}-byte limit")]
    TooLarge { bytes: u64 },
    #[error("field name of {bytes} bytes exceeds the {MAX_FIELD_BYTES}-byte limit")]
    FieldTooLarge { bytes: usize },
    #[error("field value of {bytes} bytes exceeds the {MAX_FIELD_VALUE_BYTES}-byte limit")]
    ValueTooLarge { bytes: usize },
}

impl From<MapLimitError> for Error {
    fn from(e: MapLimitError) -> Error {
        Error::InvalidArgument(e.to_string())
    }
}

/// One write of a field.
#[derive(Clone, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Entry {
    /// An `HSET`: LWW by `(hlc, dot)` among concurrent `Set` entries.
    Set { hlc: Hlc, value: Vec<u8> },
    /// An `HINCRBY`: the writer's whole contribution to the field.
    Incr { total: i64 },
}

/// The surviving writes of one field, by dot (empty in a delta = removed).
pub type Entries = BTreeMap<Dot, Entry>;

/// A map delta: listed fields with their new entries (empty = removed), a
/// causal context, and its [`Scope`].
#[derive(Clone, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MapDelta {
    pub fields: BTreeMap<Vec<u8>, Entries>,
    pub context: CausalContext,
    pub scope: Scope,
}

impl MapDelta {
    fn listed() -> MapDelta {
        MapDelta {
            fields: BTreeMap::new(),
            context: CausalContext::new(),
            scope: Scope::Listed,
        }
    }

    /// The largest HLC of the delta's `Set` entries: receivers hold it to
    /// the same clock guard as a register's timestamp (reads order by it).
    pub fn max_hlc(&self) -> Option<Hlc> {
        self.fields
            .values()
            .flat_map(|entries| entries.values())
            .filter_map(|e| match e {
                Entry::Set { hlc, .. } => Some(*hlc),
                Entry::Incr { .. } => None,
            })
            .max()
    }

    /// Fields the delta names (the only ones a `Listed` delta can affect).
    pub fn field_names(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.fields.keys().map(Vec::as_slice)
    }
}

/// The join of one field's entries: `(s ∩ d) ∪ (s \ dc) ∪ (d \ sc)` by dot.
/// A dot names one write, so for `s ∩ d` our copy is kept (a peer's
/// disagreeing copy, a bug, is ignored rather than crashing the node).
pub fn join_entries(s: &Entries, sc: &CausalContext, d: &Entries, dc: &CausalContext) -> Entries {
    let mut out: Entries = s
        .iter()
        .filter(|&(dot, _)| d.contains_key(dot) || !dc.contains(*dot))
        .map(|(dot, e)| (*dot, e.clone()))
        .collect();
    for (dot, e) in d {
        if !sc.contains(*dot) {
            // Our entries' dots are all in our context, so this is new.
            out.insert(*dot, e.clone());
        }
    }
    out
}

/// The dot stream of `incarnation`'s increments of `field`: a stream of its
/// own, so that an increment's delta can cancel every earlier increment of
/// the field by the same writer with one version-vector entry (see
/// [`OrMap::incr`]), without touching the writer's dots of other fields.
/// Cost: the map's context keeps one vector entry per (writer, counter
/// field) ever incremented, removed fields included. The id is a fixed
/// hash (dots are stored and replicated): FNV-1a of the field mixed with
/// the incarnation by the SplitMix64 finalizer; 64 bits make a collision
/// with another writer's stream negligible, as for group streams.
pub fn increment_stream(incarnation: Incarnation, field: &[u8]) -> StreamId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in field {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = incarnation.0 ^ h.rotate_left(29) ^ 0x6869_6e63_7262_7900;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    StreamId(z ^ (z >> 31))
}

/// Storage cost estimate of one field, in bytes (for [`MAX_MAP_BYTES`]):
/// the name, and per entry its dot (16), tag and HLC (24) and value.
pub fn entry_cost(field: &[u8], entries: &Entries) -> u64 {
    let values: usize = entries
        .values()
        .map(|e| match e {
            Entry::Set { value, .. } => 40 + value.len(),
            Entry::Incr { .. } => 32,
        })
        .sum();
    (field.len() + 8 + values) as u64
}

/// The value a field's entries read as (see the module docs).
pub fn resolve(entries: &Entries) -> Option<Vec<u8>> {
    let base = entries
        .iter()
        .filter_map(|(dot, e)| match e {
            Entry::Set { hlc, value } => Some(((*hlc, *dot), value)),
            Entry::Incr { .. } => None,
        })
        .max_by_key(|(order, _)| *order)
        .map(|(_, v)| v);
    let mut incrs = entries
        .values()
        .filter_map(|e| match e {
            Entry::Incr { total } => Some(*total as i128),
            Entry::Set { .. } => None,
        })
        .peekable();
    if incrs.peek().is_none() {
        return base.cloned();
    }
    let start: i128 = match base {
        None => 0,
        Some(v) => match parse_int(v) {
            Some(n) => n as i128,
            None => return Some(v.clone()),
        },
    };
    let sum = incrs.fold(start, |acc, x| acc + x);
    let clamped = sum.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    Some(clamped.to_string().into_bytes())
}

/// Parses a field value as Redis does for `HINCRBY` (a canonical decimal
/// `i64`: no `+`, no leading zeros, no spaces).
pub fn parse_int(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let n: i64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

/// An add-wins map, or a partial view of one (some fields plus the whole
/// context), which is all an operation or a `Listed` delta needs.
#[derive(
    Clone, Default, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct OrMap {
    fields: BTreeMap<Vec<u8>, Entries>,
    context: CausalContext,
}

impl OrMap {
    pub fn new() -> OrMap {
        OrMap::default()
    }

    /// Builds a map (or a partial view) from stored parts.
    pub fn from_parts(fields: BTreeMap<Vec<u8>, Entries>, context: CausalContext) -> OrMap {
        OrMap { fields, context }
    }

    pub fn into_parts(self) -> (BTreeMap<Vec<u8>, Entries>, CausalContext) {
        (self.fields, self.context)
    }

    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    /// Present fields with their entries, ascending.
    pub fn fields(&self) -> &BTreeMap<Vec<u8>, Entries> {
        &self.fields
    }

    pub fn entries(&self, field: &[u8]) -> Option<&Entries> {
        self.fields.get(field)
    }

    // ----- reads -----------------------------------------------------------

    /// `HGET`.
    pub fn get(&self, field: &[u8]) -> Option<Vec<u8>> {
        self.fields.get(field).and_then(resolve)
    }

    /// `HGETALL`: present fields and values, ascending by field.
    pub fn get_all(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.fields
            .iter()
            .filter_map(|(f, e)| resolve(e).map(|v| (f.clone(), v)))
            .collect()
    }

    /// `HEXISTS`.
    pub fn exists(&self, field: &[u8]) -> bool {
        self.fields.contains_key(field)
    }

    /// `HLEN`.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// `HKEYS`, ascending.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.fields.keys().map(Vec::as_slice)
    }

    /// `HVALS`, in field order.
    pub fn values(&self) -> Vec<Vec<u8>> {
        self.fields.values().filter_map(resolve).collect()
    }

    /// `HSTRLEN` (0 for an absent field).
    pub fn strlen(&self, field: &[u8]) -> usize {
        self.get(field).map_or(0, |v| v.len())
    }

    // ----- operations ------------------------------------------------------

    /// `HSET` of `pairs` (a repeated field takes its last value) at `hlc`
    /// on behalf of `incarnation`; returns the delta. Nothing changes on
    /// error.
    pub fn set(
        &mut self,
        incarnation: Incarnation,
        hlc: Hlc,
        pairs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<MapDelta, MapLimitError> {
        let mut last: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
        for (f, v) in pairs {
            check_field(f)?;
            if v.len() > MAX_FIELD_VALUE_BYTES {
                return Err(MapLimitError::ValueTooLarge { bytes: v.len() });
            }
            last.insert(f, v);
        }
        // Limits are checked on the result before anything is applied.
        let mut fields = self.len();
        let mut bytes = self.cost();
        let mut writes: Vec<(Vec<u8>, Entries)> = Vec::with_capacity(last.len());
        let mut numbering = self.context.clone();
        let stream = StreamId::from(incarnation);
        for (f, v) in last {
            let dot = numbering.next_dot(stream);
            numbering.insert(dot);
            let new: Entries = [(
                dot,
                Entry::Set {
                    hlc,
                    value: v.to_vec(),
                },
            )]
            .into_iter()
            .collect();
            match self.fields.get(f) {
                Some(old) => bytes -= entry_cost(f, old),
                None => fields += 1,
            }
            bytes += entry_cost(f, &new);
            writes.push((f.to_vec(), new));
        }
        check_totals(fields, bytes)?;
        let mut delta = MapDelta::listed();
        for (f, new) in writes {
            self.cancel_into(&f, &mut delta.context, |_| true);
            for dot in new.keys() {
                delta.context.insert(*dot);
                self.context.insert(*dot);
            }
            delta.fields.insert(f.clone(), new.clone());
            self.fields.insert(f, new);
        }
        Ok(delta)
    }

    /// `HINCRBY field by` on behalf of `incarnation`; returns the delta and
    /// the new value. Nothing changes on error: a value that is not an
    /// integer, or a result outside `i64`, is refused.
    pub fn incr(
        &mut self,
        incarnation: Incarnation,
        field: &[u8],
        by: i64,
    ) -> Result<(MapDelta, i64), Error> {
        check_field(field)?;
        let current = match self.get(field) {
            None => 0,
            Some(v) => parse_int(&v)
                .ok_or_else(|| Error::InvalidArgument("hash value is not an integer".into()))?,
        };
        let value = current.checked_add(by).ok_or_else(|| {
            Error::InvalidArgument("increment or decrement would overflow".into())
        })?;
        let stream = increment_stream(incarnation, field);
        let entries = self.fields.get(field);
        let mine: i128 = entries
            .into_iter()
            .flatten()
            .filter_map(|(dot, e)| match e {
                Entry::Incr { total } if dot.stream == stream => Some(*total as i128),
                _ => None,
            })
            .sum();
        let total = i64::try_from(mine + by as i128).map_err(|_| {
            Error::InvalidArgument("this replica's contribution to the field is exhausted".into())
        })?;
        let dot = self.context.next_dot(stream);
        let new: Entries = [(dot, Entry::Incr { total })].into_iter().collect();
        let mut after = entries.cloned().unwrap_or_default();
        after.retain(|d, e| !(d.stream == stream && matches!(e, Entry::Incr { .. })));
        after.insert(dot, Entry::Incr { total });
        let fields = self.len() + usize::from(entries.is_none());
        let bytes =
            self.cost() - entries.map_or(0, |e| entry_cost(field, e)) + entry_cost(field, &after);
        check_totals(fields, bytes)?;
        let mut delta = MapDelta::listed();
        self.cancel_into(field, &mut delta.context, |(d, e)| {
            d.stream == stream && matches!(e, Entry::Incr { .. })
        });
        // The delta cancels the writer's whole chain of increments of this
        // field, not only the entry it held: every dot of `stream` up to
        // this one is an increment of this field by this writer, which this
        // one replaces (held: its total is included; not held: already
        // cancelled). Cancelling only the held entry (the previous
        // increment) let a replica that got this delta before an older one
        // (deltas arrive in any order: a coordinator's push, a pull from
        // another peer, a deferred delta), or a quorum read joining a state
        // holding only the older entry with one holding only this one, keep
        // both and count the writer's contribution twice (the jepsen map
        // workload, seed 304, pause run).
        let mut chain = VersionVector::new();
        chain.set(stream, dot.counter);
        delta.context.join(&CausalContext::from_vector(chain));
        self.context.insert(dot);
        self.fields
            .entry(field.to_vec())
            .or_default()
            .insert(dot, Entry::Incr { total });
        delta.fields.insert(field.to_vec(), new);
        Ok((delta, value))
    }

    /// `HDEL`: removes `fields` (absent ones are not listed in the delta:
    /// removing them has no effect anywhere); returns the delta.
    pub fn remove(&mut self, fields: &[Vec<u8>]) -> MapDelta {
        let mut delta = MapDelta::listed();
        for f in fields {
            if self.fields.contains_key(f.as_slice()) {
                self.cancel_into(f, &mut delta.context, |_| true);
                delta.fields.insert(f.clone(), Entries::new());
            }
        }
        delta
    }

    /// Deletes the whole map (`DEL`): a context-only, full-scope delta
    /// cancelling every entry observed. Needs the full map.
    pub fn delete(&mut self) -> MapDelta {
        let mut observed = CausalContext::new();
        for entries in self.fields.values() {
            for dot in entries.keys() {
                observed.insert(*dot);
            }
        }
        self.fields.clear();
        MapDelta {
            fields: BTreeMap::new(),
            context: observed,
            scope: Scope::Full,
        }
    }

    /// Moves the entries of `field` matching `which` into `cancelled`
    /// (dropping the field when nothing is left).
    fn cancel_into(
        &mut self,
        field: &[u8],
        cancelled: &mut CausalContext,
        which: impl Fn((&Dot, &Entry)) -> bool,
    ) {
        let Some(entries) = self.fields.get_mut(field) else {
            return;
        };
        entries.retain(|d, e| {
            if which((d, e)) {
                cancelled.insert(*d);
                false
            } else {
                true
            }
        });
        if entries.is_empty() {
            self.fields.remove(field);
        }
    }

    // ----- join ------------------------------------------------------------

    /// Joins a delta (or a full state, see [`OrMap::to_delta`]); returns
    /// whether anything changed. A `Listed` delta may be joined into a
    /// partial view holding at least the listed fields.
    pub fn merge(&mut self, delta: &MapDelta) -> bool {
        let mut changed = false;
        let empty = Entries::new();
        for (field, dentries) in &delta.fields {
            let sentries = self.fields.get(field).unwrap_or(&empty);
            let joined = join_entries(sentries, &self.context, dentries, &delta.context);
            if &joined != sentries {
                changed = true;
                if joined.is_empty() {
                    self.fields.remove(field);
                } else {
                    self.fields.insert(field.clone(), joined);
                }
            }
        }
        if delta.scope == Scope::Full {
            // Fields the full state doesn't list lose every entry it has seen.
            let mut emptied: Vec<Vec<u8>> = Vec::new();
            for (field, entries) in self.fields.iter_mut() {
                if delta.fields.contains_key(field) {
                    continue;
                }
                let before = entries.len();
                entries.retain(|d, _| !delta.context.contains(*d));
                changed |= entries.len() != before;
                if entries.is_empty() {
                    emptied.push(field.clone());
                }
            }
            for field in emptied {
                self.fields.remove(&field);
            }
        }
        changed |= self.context.join(&delta.context);
        changed
    }

    /// The whole state as a delta that can be joined anywhere.
    pub fn to_delta(&self) -> MapDelta {
        MapDelta {
            fields: self.fields.clone(),
            context: self.context.clone(),
            scope: Scope::Full,
        }
    }

    /// The state produced by joining `delta` into an empty map.
    pub fn from_delta(delta: &MapDelta) -> OrMap {
        let mut m = OrMap::new();
        m.merge(delta);
        m
    }

    /// Estimated storage cost of the fields, in bytes.
    pub fn cost(&self) -> u64 {
        self.fields.iter().map(|(f, e)| entry_cost(f, e)).sum()
    }

    /// Checks the map against [`MAX_FIELDS_PER_MAP`] and [`MAX_MAP_BYTES`].
    /// Local operations check before applying; a merge path joins into a
    /// copy (or a partial view) and checks it before storing, refusing the
    /// delta (and leaving the stored state unchanged) when it fails.
    pub fn check_limits(&self) -> Result<(), MapLimitError> {
        check_totals(self.len(), self.cost())
    }
}

fn check_field(field: &[u8]) -> Result<(), MapLimitError> {
    if field.len() > MAX_FIELD_BYTES {
        return Err(MapLimitError::FieldTooLarge { bytes: field.len() });
    }
    Ok(())
}

/// Checks a map's totals against [`MAX_FIELDS_PER_MAP`] and
/// [`MAX_MAP_BYTES`] (the engine checks a decomposed map's header totals
/// with it after a local operation).
pub fn check_totals(fields: usize, bytes: u64) -> Result<(), MapLimitError> {
    if fields > MAX_FIELDS_PER_MAP {
        return Err(MapLimitError::TooManyFields { fields });
    }
    if bytes > MAX_MAP_BYTES {
        return Err(MapLimitError::TooLarge { bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Incarnation = Incarnation(1);
    const B: Incarnation = Incarnation(2);

    fn hlc(time: u64, node: Incarnation) -> Hlc {
        Hlc { time, node }
    }

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn set_get_delete() {
        let mut m = OrMap::new();
        m.set(
            A,
            hlc(1, A),
            &[(v("f"), v("1")), (v("g"), v("x")), (v("f"), v("2"))],
        )
        .unwrap();
        assert_eq!(m.get(b"f"), Some(v("2")));
        assert_eq!(m.len(), 2);
        assert_eq!(m.strlen(b"g"), 1);
        m.remove(&[v("f"), v("missing")]);
        assert!(!m.exists(b"f"));
        assert_eq!(m.get_all(), vec![(v("g"), v("x"))]);
        let d = m.delete();
        assert!(d.fields.is_empty() && d.scope == Scope::Full);
        assert!(m.is_empty());
    }

    #[test]
    fn hincrby_on_hset_value_and_hset_overwrites() {
        let mut m = OrMap::new();
        m.set(A, hlc(1, A), &[(v("f"), v("5"))]).unwrap();
        assert_eq!(m.incr(A, b"f", 2).unwrap().1, 7);
        assert_eq!(m.get(b"f"), Some(v("7")));
        m.set(A, hlc(2, A), &[(v("f"), v("10"))]).unwrap();
        assert_eq!(m.incr(A, b"f", 1).unwrap().1, 11);
        assert_eq!(m.entries(b"f").unwrap().len(), 2);
        m.set(A, hlc(3, A), &[(v("f"), v("abc"))]).unwrap();
        let before = m.clone();
        assert!(matches!(m.incr(A, b"f", 1), Err(Error::InvalidArgument(_))));
        assert_eq!(m, before);
    }

    #[test]
    fn concurrent_increments_add_up_and_ride_on_a_concurrent_set() {
        let mut a = OrMap::new();
        a.set(A, hlc(1, A), &[(v("f"), v("5"))]).unwrap();
        let mut b = a.clone();
        let (da, _) = a.incr(A, b"f", 1).unwrap();
        let (db, _) = b.incr(B, b"f", 1).unwrap();
        a.merge(&db);
        b.merge(&da);
        assert_eq!(a, b);
        assert_eq!(a.get(b"f"), Some(v("7")));
        let mut c = a.clone();
        let ds = a.set(A, hlc(5, A), &[(v("f"), v("100"))]).unwrap();
        let (dc, _) = c.incr(B, b"f", 3).unwrap();
        a.merge(&dc);
        c.merge(&ds);
        assert_eq!(a, c);
        // The concurrent increment rides on the new value and carries B's
        // whole contribution (its earlier +1 included): 100 + 4.
        assert_eq!(a.get(b"f"), Some(v("104")));
    }

    #[test]
    fn overflow_and_limits_change_nothing() {
        let mut m = OrMap::new();
        m.incr(A, b"f", i64::MAX).unwrap();
        let before = m.clone();
        assert!(m.incr(B, b"f", 1).is_err());
        assert!(
            m.set(A, hlc(1, A), &[(vec![0; MAX_FIELD_BYTES + 1], v("x"))])
                .is_err()
        );
        assert!(
            m.set(
                A,
                hlc(1, A),
                &[(v("g"), vec![0; MAX_FIELD_VALUE_BYTES + 1])]
            )
            .is_err()
        );
        assert_eq!(m, before);
        assert!(m.check_limits().is_ok());
        assert_eq!(
            check_totals(MAX_FIELDS_PER_MAP + 1, 0),
            Err(MapLimitError::TooManyFields {
                fields: MAX_FIELDS_PER_MAP + 1
            })
        );
        assert!(matches!(
            check_totals(1, MAX_MAP_BYTES + 1),
            Err(MapLimitError::TooLarge { .. })
        ));
    }

    #[test]
    fn removed_fields_leave_no_trace_beyond_the_context() {
        let mut m = OrMap::new();
        let all: Vec<Vec<u8>> = (0..100).map(|i| format!("f{i}").into_bytes()).collect();
        for (i, f) in all.iter().enumerate() {
            m.set(A, hlc(i as u64, A), &[(f.clone(), v("x"))]).unwrap();
            m.incr(A, f, 1).unwrap_err();
        }
        m.remove(&all);
        assert!(m.is_empty());
        assert_eq!(m.context().entries(), 1, "context compacted to one entry");
    }

    /// The cost of exact increments under any delivery order: one context
    /// entry per (writer, field incremented), however many increments.
    #[test]
    fn increments_cost_one_context_entry_per_writer_and_field() {
        let mut m = OrMap::new();
        let all: Vec<Vec<u8>> = (0..10).map(|i| format!("c{i}").into_bytes()).collect();
        for _ in 0..5 {
            for f in &all {
                m.incr(A, f, 1).unwrap();
                m.incr(B, f, 2).unwrap();
            }
        }
        assert_eq!(m.get(b"c3"), Some(v("15")));
        m.remove(&all);
        assert!(m.is_empty());
        assert_eq!(m.context().entries(), 2 * all.len());
    }

    /// A writer's increment delivered before its earlier ones cancels them
    /// all: they never count again, in a delta join or a full-state join.
    #[test]
    fn an_increment_cancels_its_writers_earlier_increments_of_the_field() {
        let mut a = OrMap::new();
        let (d1, _) = a.incr(A, b"f", 1).unwrap();
        let (dg, _) = a.incr(A, b"g", 10).unwrap();
        a.incr(A, b"f", 2).unwrap();
        let (d3, _) = a.incr(A, b"f", 4).unwrap();
        let mut late = OrMap::from_delta(&d3);
        late.merge(&d1);
        assert_eq!(late.get(b"f"), Some(v("7")));
        let old = OrMap::from_delta(&d1);
        let mut joined = old.clone();
        joined.merge(&OrMap::from_delta(&d3).to_delta());
        assert_eq!(joined.get(b"f"), Some(v("7")));
        // The chain covers only `f`: `g`'s increment, delivered after it,
        // still counts.
        late.merge(&dg);
        assert_eq!(late.get(b"g"), Some(v("10")));
    }
}
