//! Add-wins observed-remove map (Redis hashes) without tombstones.
//!
//! State: each present field maps to its *entries*, `dot → Entry`, and a
//! causal context holds every dot the replica has seen (present or
//! removed), as in [`OrSet`](super::OrSet). A field is present iff it has
//! an entry. Removing a field drops its entries; the removed dots live on
//! only inside the context, which compacts to one version-vector entry per
//! writer, so a removed field costs zero bytes, counter fields included.
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
//!   replaces its own previous entry and leaves the other replicas'
//!   entries alone, so concurrent increments add up and a field holds at
//!   most one `Incr` entry per writer.
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
//! increments included.
//!
//! # Increment chains
//! Deltas arrive in any order (a coordinator's push, a pull relayed by
//! another peer, a deferred delta), so a writer's third increment of a
//! field can reach a replica before its first. The third's total includes
//! the first, so it must cancel it, and every increment of the field by
//! that writer before it, held or not — but those dots are scattered among
//! the writer's writes of other fields, which a context range would cancel
//! too. So a delta carries, besides its context, [`Chains`]: per field,
//! per writer, "every increment of this field by this writer numbered up to
//! n is seen". A chain is part of the context for `Incr` entries of its
//! field only ([`seen`]), and is dropped as soon as the context's vector
//! covers it (every dot of the writer up to n seen: the chain says nothing
//! more), which happens once the writer's earlier writes have arrived. So
//! chains exist only while deltas are in flight out of order, and a
//! removed counter field leaves nothing behind once they have landed.
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

/// Increment chains (see the module docs): `field → writer → n`, every
/// `Incr` entry of the field by the writer (its dot's stream) numbered up
/// to `n` is seen. Only chains the context's vector does not cover are
/// kept, so a settled map has none.
pub type Chains = BTreeMap<Vec<u8>, VersionVector>;

/// Whether the write `dot` (an `entry` of `field`) is seen by a context
/// with its chains: in the context, or an increment its field's chain
/// for the writer covers.
pub fn seen(
    context: &CausalContext,
    chains: &Chains,
    field: &[u8],
    dot: Dot,
    entry: &Entry,
) -> bool {
    context.contains(dot)
        || (matches!(entry, Entry::Incr { .. })
            && chains.get(field).is_some_and(|vv| vv.contains(dot)))
}

/// About how many bytes `chains` encode to: per field its name, per
/// writer a stream and a count.
fn chains_bytes(chains: &Chains) -> usize {
    chains
        .iter()
        .map(|(f, vv)| f.len() + 8 + 16 * vv.len())
        .sum()
}

/// About how many bytes fields, a context and chains encode to.
fn estimated_bytes(
    fields: &BTreeMap<Vec<u8>, Entries>,
    context: &CausalContext,
    chains: &Chains,
) -> usize {
    fields
        .iter()
        .map(|(f, e)| entry_cost(f, e) as usize)
        .sum::<usize>()
        + 16 * context.entries()
        + chains_bytes(chains)
}

/// Raises `chains[field][dot.stream]` to `dot.counter`.
fn raise_chain(chains: &mut Chains, field: &[u8], dot: Dot) {
    chains
        .entry(field.to_vec())
        .or_default()
        .raise(dot.stream, dot.counter);
}

/// Whether `context`'s vector covers the chain of `stream` up to `n`
/// (every dot of the writer up to `n` seen: the chain says nothing more).
fn covered(context: &CausalContext, stream: StreamId, n: u64) -> bool {
    context.vector().get(stream) >= n
}

/// Joins into `chains` the parts of `other` that `context` does not
/// cover (per field, per writer, the larger count); whether any rose.
fn join_chains(chains: &mut Chains, other: &Chains, context: &CausalContext) -> bool {
    let mut raised = false;
    for (field, vv) in other {
        let mut fresh = vv
            .iter()
            .filter(|&(stream, n)| !covered(context, stream, n))
            .peekable();
        if fresh.peek().is_none() {
            continue;
        }
        // One lookup (and one copy of the name) per field, not per writer.
        let mine = chains.entry(field.clone()).or_default();
        for (stream, n) in fresh {
            raised |= mine.get(stream) < n;
            mine.raise(stream, n);
        }
    }
    raised
}

/// Drops what `context` covers; whether anything was dropped.
fn prune_chains(chains: &mut Chains, context: &CausalContext) -> bool {
    let before: usize = chains.values().map(VersionVector::len).sum();
    chains.retain(|_, vv| {
        vv.retain(|stream, n| !covered(context, stream, n));
        !vv.is_empty()
    });
    chains.values().map(VersionVector::len).sum::<usize>() != before
}

/// A map delta: listed fields with their new entries (empty = removed), a
/// causal context, and its [`Scope`].
#[derive(Clone, PartialEq, Eq, Hash, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MapDelta {
    pub fields: BTreeMap<Vec<u8>, Entries>,
    /// Archived boxed, so that the chains fit in the archived size the
    /// `Delta` enum had before maps (old logs decode unchanged).
    #[rkyv(with = rkyv::with::AsBox)]
    pub context: CausalContext,
    /// Increment chains: part of the context for `Incr` entries. A
    /// `Listed` delta's chains name listed fields only.
    pub chains: Chains,
    pub scope: Scope,
}

impl MapDelta {
    fn listed() -> MapDelta {
        MapDelta {
            fields: BTreeMap::new(),
            context: CausalContext::new(),
            chains: Chains::new(),
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

    /// About how many bytes the delta encodes to (batching and chunking
    /// limits): its entries, context and chains.
    pub fn estimated_bytes(&self) -> usize {
        estimated_bytes(&self.fields, &self.context, &self.chains)
    }

    /// Fields the delta names, in its entries or its chains (the only ones
    /// a `Listed` delta can affect), each once: the listed fields, then
    /// any field only a chain names.
    pub fn field_names(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let chained_only = self.chains.keys().filter(|f| !self.fields.contains_key(*f));
        self.fields.keys().chain(chained_only).map(Vec::as_slice)
    }
}

/// The join of one field's entries: `(s ∩ d) ∪ (s \ dc) ∪ (d \ sc)` by
/// dot, where a context includes its chains for the field's increments
/// ([`seen`]). A dot names one write, so for `s ∩ d` our copy is kept (a
/// peer's disagreeing copy, a bug, is ignored rather than crashing the
/// node).
pub fn join_entries(
    field: &[u8],
    (s, sc, schains): (&Entries, &CausalContext, &Chains),
    (d, dc, dchains): (&Entries, &CausalContext, &Chains),
) -> Entries {
    let mut out: Entries = s
        .iter()
        .filter(|&(dot, e)| d.contains_key(dot) || !seen(dc, dchains, field, *dot, e))
        .map(|(dot, e)| (*dot, e.clone()))
        .collect();
    for (dot, e) in d {
        if !seen(sc, schains, field, *dot, e) {
            // Our entries' dots are all in our context, so this is new.
            out.insert(*dot, e.clone());
        }
    }
    out
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
    /// Archived boxed, as [`MapDelta::context`] (for `ObjectState`).
    #[rkyv(with = rkyv::with::AsBox)]
    context: CausalContext,
    /// Chains the context does not cover yet (see the module docs).
    chains: Chains,
}

impl OrMap {
    pub fn new() -> OrMap {
        OrMap::default()
    }

    /// Builds a map (or a partial view: some fields, the whole context and
    /// every chain) from stored parts.
    pub fn from_parts(
        fields: BTreeMap<Vec<u8>, Entries>,
        context: CausalContext,
        mut chains: Chains,
    ) -> OrMap {
        prune_chains(&mut chains, &context);
        OrMap {
            fields,
            context,
            chains,
        }
    }

    pub fn into_parts(self) -> (BTreeMap<Vec<u8>, Entries>, CausalContext, Chains) {
        (self.fields, self.context, self.chains)
    }

    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    /// The increment chains the context does not cover yet (empty once
    /// every delta has arrived).
    pub fn chains(&self) -> &Chains {
        &self.chains
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
            self.cancel_into(&f, &mut delta, |_| true);
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
        let stream = StreamId::from(incarnation);
        let entries = self.fields.get(field);
        // The writer's contribution: its latest `Incr` entry (a state
        // holds at most one per writer; the latest decides regardless).
        let mine: i128 = entries
            .into_iter()
            .flatten()
            .filter(|(dot, e)| dot.stream == stream && matches!(e, Entry::Incr { .. }))
            .max_by_key(|(dot, _)| dot.counter)
            .map_or(0, |(_, e)| match e {
                Entry::Incr { total } => *total as i128,
                Entry::Set { .. } => 0,
            });
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
        self.cancel_into(field, &mut delta, |(d, e)| {
            d.stream == stream && matches!(e, Entry::Incr { .. })
        });
        // The delta's chain cancels the writer's every earlier increment
        // of this field, not only the entry it held: this one's total
        // includes them. Cancelling only the held entry let a replica that
        // got this delta before an older one, or a quorum read joining a
        // state holding only the older entry with one holding only this
        // one, keep both and count the writer's contribution twice (the
        // jepsen map workload, seed 304, pause run).
        delta.context.insert(dot);
        raise_chain(&mut delta.chains, field, dot);
        self.context.insert(dot);
        self.fields
            .entry(field.to_vec())
            .or_default()
            .insert(dot, Entry::Incr { total });
        // Nothing to prune: the writer's next dot covers no other writer's
        // chain, and its own dots leave no hole in its own context.
        delta.fields.insert(field.to_vec(), new);
        Ok((delta, value))
    }

    /// `HDEL`: removes `fields` (absent ones are not listed in the delta:
    /// removing them has no effect anywhere); returns the delta.
    pub fn remove(&mut self, fields: &[Vec<u8>]) -> MapDelta {
        let mut delta = MapDelta::listed();
        for f in fields {
            if self.fields.contains_key(f.as_slice()) {
                self.cancel_into(f, &mut delta, |_| true);
                delta.fields.insert(f.clone(), Entries::new());
            }
        }
        delta
    }

    /// Deletes the whole map (`DEL`): a context-only, full-scope delta
    /// cancelling every entry observed. Needs the full map.
    pub fn delete(&mut self) -> MapDelta {
        let mut delta = MapDelta {
            scope: Scope::Full,
            ..MapDelta::listed()
        };
        for (field, entries) in std::mem::take(&mut self.fields) {
            for (dot, e) in entries {
                cancel(&mut delta, &field, dot, &e);
            }
        }
        delta
    }

    /// Moves the entries of `field` matching `which` into `delta`'s
    /// context (dropping the field when nothing is left).
    fn cancel_into(
        &mut self,
        field: &[u8],
        delta: &mut MapDelta,
        which: impl Fn((&Dot, &Entry)) -> bool,
    ) {
        let Some(entries) = self.fields.get_mut(field) else {
            return;
        };
        entries.retain(|d, e| {
            if which((d, e)) {
                cancel(delta, field, *d, e);
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
        // A chain can cancel entries of a field the delta lists no entry of.
        for field in delta.field_names() {
            let dentries = delta.fields.get(field).unwrap_or(&empty);
            let sentries = self.fields.get(field).unwrap_or(&empty);
            let joined = join_entries(
                field,
                (sentries, &self.context, &self.chains),
                (dentries, &delta.context, &delta.chains),
            );
            if &joined != sentries {
                changed = true;
                if joined.is_empty() {
                    self.fields.remove(field);
                } else {
                    self.fields.insert(field.to_vec(), joined);
                }
            }
        }
        if delta.scope == Scope::Full {
            // Fields the full state doesn't name lose every entry it has seen.
            let mut emptied: Vec<Vec<u8>> = Vec::new();
            for (field, entries) in self.fields.iter_mut() {
                if delta.fields.contains_key(field) || delta.chains.contains_key(field) {
                    continue;
                }
                let before = entries.len();
                entries.retain(|d, e| !seen(&delta.context, &delta.chains, field, *d, e));
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
        changed |= prune_chains(&mut self.chains, &self.context);
        changed |= join_chains(&mut self.chains, &delta.chains, &self.context);
        changed
    }

    /// The whole state as a delta that can be joined anywhere.
    pub fn to_delta(&self) -> MapDelta {
        MapDelta {
            fields: self.fields.clone(),
            context: self.context.clone(),
            chains: self.chains.clone(),
            scope: Scope::Full,
        }
    }

    /// The state produced by joining `delta` into an empty map.
    pub fn from_delta(delta: &MapDelta) -> OrMap {
        let mut m = OrMap::new();
        m.merge(delta);
        m
    }

    /// About how many bytes the whole state encodes to (as
    /// [`MapDelta::estimated_bytes`] of [`OrMap::to_delta`]).
    pub fn estimated_bytes(&self) -> usize {
        estimated_bytes(&self.fields, &self.context, &self.chains)
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

/// Records in `delta` that it cancels the entry `dot` of `field`: its dot,
/// and for an increment the chain up to it (an increment's total includes
/// its writer's earlier increments of the field, which this cancels too).
fn cancel(delta: &mut MapDelta, field: &[u8], dot: Dot, entry: &Entry) {
    delta.context.insert(dot);
    if matches!(entry, Entry::Incr { .. }) {
        raise_chain(&mut delta.chains, field, dot);
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

    /// Removed counter fields leave nothing behind: the context compacts
    /// to one entry per writer, as for `HSET` fields, and no chain is kept.
    #[test]
    fn removed_counter_fields_leave_one_context_entry_per_writer() {
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
        assert_eq!(m.context().entries(), 2);
        assert!(m.chains().is_empty());
    }

    /// Out of order: a writer's third increment, then an `HDEL` of it,
    /// then its first increment: the first stays cancelled (the chain the
    /// third brought covers it) until the second arrives and the chain,
    /// covered by the context, is dropped.
    #[test]
    fn a_late_increment_does_not_undo_a_delete_and_chains_go_once_settled() {
        let mut a = OrMap::new();
        let (d1, _) = a.incr(A, b"f", 1).unwrap();
        let (d2, _) = a.incr(A, b"f", 2).unwrap();
        let (d3, _) = a.incr(A, b"f", 4).unwrap();
        let mut r = OrMap::from_delta(&d3);
        assert_eq!(r.get(b"f"), Some(v("7")));
        assert!(!r.chains().is_empty(), "the chain waits for dots 1 and 2");
        let del = r.remove(&[v("f")]);
        assert!(
            !del.chains.is_empty(),
            "the HDEL carries the chain it cancelled"
        );
        r.merge(&d1);
        assert!(
            !r.exists(b"f"),
            "the first increment came back after the HDEL"
        );
        // A replica that got only the first, then the HDEL: cancelled too.
        let mut s = OrMap::from_delta(&d1);
        s.merge(&del);
        assert!(!s.exists(b"f"));
        for x in [&mut r, &mut s] {
            for d in [&d1, &d2, &d3, &del] {
                x.merge(d);
            }
        }
        assert_eq!(r, s);
        assert!(r.chains().is_empty(), "{:?}", r.chains());
        assert_eq!(r.context().entries(), 1);
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
