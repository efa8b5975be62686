//! The object store: object states in one sled tree.
//!
//! Layout (keys sort so that each object's entries are contiguous):
//! * prefix = `[kind tag][key length: u32 BE][key]`;
//! * counter and register: one entry at `prefix`;
//! * set: a header at `prefix ++ [0]` (causal context, member count, size)
//!   and one entry per present member at `prefix ++ [1] ++ member` holding
//!   its dots. A one-member operation reads and writes two small entries,
//!   whatever the set's size; removed members have no entry at all.
//! * map: the same shape as a set: a header at `prefix ++ [0]` (causal
//!   context, field count, size) and one entry per present field at
//!   `prefix ++ [1] ++ field` holding its entries (`dot → write`). An
//!   `HSET` of one field reads and writes two small entries, whatever the
//!   map's size.
//!
//! Every value is `[format version][log position: u64 LE][rkyv archive]`.
//! The log position is that of the last log entry applied to the object;
//! after an unclean shutdown it tells recovery which objects hold effects
//! the surviving log no longer has.
//!
//! sled's own `flush` is not a real fsync ([`Store::flush_durable`] adds
//! one); nothing relies on sled for durability between checkpoints: the log
//! is replayed from the last checkpoint on open.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::causal::CausalContext;
use crate::codec::{self, DecodeError};
use crate::crdt::map::{self, Entries};
use crate::crdt::{Counter, DotSet, ObjectState, OrMap, OrSet, Register, set::entry_cost};
use crate::error::{Error, Result};
use crate::object::{Kind, ObjectKey};

const HEADER_SUFFIX: u8 = 0;
const MEMBER_SUFFIX: u8 = 1;

/// Per-set metadata.
#[derive(
    Clone, Default, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub(crate) struct SetHeader {
    pub(crate) context: CausalContext,
    /// Present members.
    pub(crate) count: u64,
    /// Estimated bytes of the members' entries (for the object size limit).
    pub(crate) bytes: u64,
}

/// Per-map metadata: a set's, plus the map's increment chains (see
/// [`map::Chains`]; empty once no delta is in flight out of order).
#[derive(
    Clone, Default, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub(crate) struct MapHeader {
    pub(crate) context: CausalContext,
    pub(crate) chains: map::Chains,
    /// Present fields.
    pub(crate) count: u64,
    /// Estimated bytes of the fields' entries (for the object size limit).
    pub(crate) bytes: u64,
}

/// What [`Store::load_parts`] loads of an object stored decomposed: its
/// header, what each asked-for name held (`None`: absent) and the present
/// parts by name.
type LoadedParts<H, T> = (H, BTreeMap<Vec<u8>, Option<T>>, BTreeMap<Vec<u8>, T>);

/// Members of a set loaded for one operation, with what they were.
pub(crate) struct SetView {
    pub(crate) set: OrSet,
    pub(crate) header: SetHeader,
    /// The loaded members' entries before the operation (`None`: absent).
    loaded: BTreeMap<Vec<u8>, Option<DotSet>>,
    /// Whether every member was loaded.
    full: bool,
}

impl SetView {
    /// Size after the operation, in bytes.
    pub(crate) fn bytes_after(&self) -> u64 {
        let mut bytes = self.header.bytes as i128;
        for (m, before) in &self.loaded {
            if let Some(d) = before {
                bytes -= entry_cost(m, d) as i128;
            }
            if let Some(d) = self.set.dots(m) {
                bytes += entry_cost(m, d) as i128;
            }
        }
        if self.full {
            // Members added that weren't loaded (none for a full view, but
            // keep the accounting honest).
            for (m, d) in self.set.entries() {
                if !self.loaded.contains_key(m) {
                    bytes += entry_cost(m, d) as i128;
                }
            }
        }
        bytes.max(0) as u64
    }
}

/// Fields of a map loaded for one operation, with what they were: the
/// map's counterpart of [`SetView`] (its header has the same shape).
pub(crate) struct MapView {
    pub(crate) map: OrMap,
    pub(crate) header: MapHeader,
    /// The loaded fields' entries before the operation (`None`: absent).
    loaded: BTreeMap<Vec<u8>, Option<Entries>>,
    /// Whether every field was loaded.
    full: bool,
}

impl MapView {
    /// Size after the operation, in bytes ([`map::entry_cost`]).
    pub(crate) fn bytes_after(&self) -> u64 {
        let mut bytes = self.header.bytes as i128;
        for (f, before) in &self.loaded {
            if let Some(e) = before {
                bytes -= map::entry_cost(f, e) as i128;
            }
            if let Some(e) = self.map.entries(f) {
                bytes += map::entry_cost(f, e) as i128;
            }
        }
        for (f, e) in self.unloaded() {
            bytes += map::entry_cost(f, e) as i128;
        }
        bytes.max(0) as u64
    }

    /// Fields present now that were not loaded: only a full view (a
    /// full-state join) can gain them.
    fn unloaded(&self) -> impl Iterator<Item = (&Vec<u8>, &Entries)> + '_ {
        self.map
            .fields()
            .iter()
            .filter(|(f, _)| self.full && !self.loaded.contains_key(*f))
    }

    /// Fields present after the operation.
    pub(crate) fn count_after(&self) -> u64 {
        let mut count = self.header.count as i128;
        for (f, before) in &self.loaded {
            count -= i128::from(before.is_some());
            count += i128::from(self.map.exists(f));
        }
        count += self.unloaded().count() as i128;
        count.max(0) as u64
    }

    /// The present fields among those loaded, with their values.
    pub(crate) fn loaded_values(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.loaded
            .keys()
            .filter_map(|f| self.map.get(f).map(|v| (f.clone(), v)))
            .collect()
    }
}

pub(crate) struct Store {
    db: sled::Db,
    objects: sled::Tree,
    /// Per-object expiry entries (`prefix` → [`StoredExpiry`]).
    expiry: sled::Tree,
    /// The reclamation worker's index: `[deadline ms: u64 BE] ++ prefix` →
    /// nothing. An entry may be stale (the deadline was cancelled or has
    /// fired); the worker drops those as it meets them.
    deadlines: sled::Tree,
    path: PathBuf,
}

/// One object's expiry as this replica stores it.
#[derive(
    Clone, Default, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub(crate) struct StoredExpiry {
    /// The replicated state.
    pub(crate) expiry: crate::crdt::Expiry,
    /// The cutoff this replica last fired (local, never replicated): while
    /// the cutoff is above it, the object's counter, set and map content
    /// reads as absent and the worker fires.
    pub(crate) fired_ms: u64,
}

pub(crate) fn prefix(key: &ObjectKey) -> Vec<u8> {
    let k = key.key();
    let mut p = Vec::with_capacity(5 + k.len() + 1);
    p.push(key.kind().tag());
    p.extend_from_slice(&(k.len() as u32).to_be_bytes());
    p.extend_from_slice(k);
    p
}

fn header_key(prefix: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.push(HEADER_SUFFIX);
    k
}

fn member_key(prefix: &[u8], member: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 1 + member.len());
    k.extend_from_slice(prefix);
    k.push(MEMBER_SUFFIX);
    k.extend_from_slice(member);
    k
}

/// The deadline index key of `deadline_ms` for the object at `prefix`.
fn deadline_key(deadline_ms: u64, prefix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + prefix.len());
    k.extend_from_slice(&deadline_ms.to_be_bytes());
    k.extend_from_slice(prefix);
    k
}

fn encode_value<T: codec::Encode>(lsn: u64, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    out.push(codec::FORMAT_VERSION);
    out.extend_from_slice(&lsn.to_le_bytes());
    codec::archive_into(value, &mut out);
    out
}

/// Splits `[version][lsn][archive]` into the lsn and `[version][archive]`-
/// equivalent decode.
fn decode_value<T>(bytes: &[u8]) -> std::result::Result<(u64, T), DecodeError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    if bytes.len() < 9 {
        return Err(DecodeError::Malformed("stored value too short".into()));
    }
    let version = bytes[0];
    if version > codec::FORMAT_VERSION {
        return Err(DecodeError::Unsupported(version));
    }
    let lsn = u64::from_le_bytes(bytes[1..9].try_into().unwrap());
    let value = rkyv::from_bytes::<T, rkyv::rancor::Error>(&bytes[9..])
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok((lsn, value))
}

fn stored_lsn(bytes: &[u8]) -> Option<u64> {
    bytes
        .get(1..9)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
}

/// An object-store key parsed: the object and, for set entries, the suffix
/// kind and member.
type ParsedKey<'a> = (ObjectKey, Option<(u8, &'a [u8])>);

/// The entries of a decomposed object read so far.
enum Parts {
    Set(BTreeMap<Vec<u8>, DotSet>),
    Map(BTreeMap<Vec<u8>, Entries>, map::Chains),
}

/// A set or map being assembled from its header and member entries.
type Partial = Option<(ObjectKey, Parts, CausalContext)>;

/// Parses an object-store key into the object it belongs to and, for set
/// entries, the suffix kind and member.
fn parse_key(raw: &[u8]) -> Option<ParsedKey<'_>> {
    let kind = Kind::from_tag(*raw.first()?)?;
    let len = u32::from_be_bytes(raw.get(1..5)?.try_into().ok()?) as usize;
    let key = raw.get(5..5 + len)?;
    let rest = &raw[5 + len..];
    let object = ObjectKey::new(kind, key.to_vec()).ok()?;
    if rest.is_empty() {
        return Some((object, None));
    }
    Some((object, Some((rest[0], &rest[1..]))))
}

/// What one step of a key scan found ([`Store::scan_step`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanStep {
    /// Nothing at or after the position.
    End,
    /// No key with the prefix until this position.
    Seek(Vec<u8>),
    /// An object with the prefix, whether it is present, and the position
    /// after its last entry.
    Object {
        object: ObjectKey,
        present: bool,
        next: Vec<u8>,
    },
}

/// The smallest byte string greater than every string starting with `p`
/// (`p` with its trailing 0xFF bytes dropped and its last byte
/// incremented). Every store position starts with a kind tag below 0xFF,
/// so one exists for every prefix the store makes.
fn successor(p: &[u8]) -> Vec<u8> {
    let mut out = p.to_vec();
    while let Some(last) = out.pop() {
        if last < u8::MAX {
            out.push(last + 1);
            return out;
        }
    }
    // All 0xFF: no such string exists, and none is asked for (every store
    // position starts with a kind tag below 0xFF); `p ++ [0]` at least
    // moves forward.
    let mut out = p.to_vec();
    out.push(0);
    out
}

/// How long opening the object store waits for sled's own file lock, in
/// milliseconds. The engine holds the data directory's lock first, so the
/// only other holder can be this process's previous store of the same
/// directory, whose background writes keep sled's file open for a moment
/// after it is dropped (sled's own tests block on this lock for the same
/// reason). An in-process reopen (a test, a simulated restart) waits for
/// them instead of failing; 10 s is far beyond any such write.
const STORE_LOCK_WAIT_MS: u64 = 10_000;

/// Whether sled refused to open because its file lock is held.
fn is_lock_contention(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

impl Store {
    pub(crate) fn open(path: &Path, cache_bytes: u64) -> Result<Store> {
        drop_unfinished_snapshots(path)?;
        let config = || {
            sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                .mode(sled::Mode::HighThroughput)
                // The log, not sled, is the durability point; sled's
                // background flush only shortens replay after a crash.
                .flush_every_ms(Some(1000))
        };
        let started = std::time::Instant::now();
        let db = loop {
            match config().open() {
                Err(e)
                    if is_lock_contention(&e)
                        && started.elapsed().as_millis() < u128::from(STORE_LOCK_WAIT_MS) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other?,
            }
        };
        let objects = db.open_tree("objects")?;
        let expiry = db.open_tree("expiry")?;
        let deadlines = db.open_tree("deadlines")?;
        restrict_tree(path)?;
        Ok(Store {
            db,
            objects,
            expiry,
            deadlines,
            path: path.to_path_buf(),
        })
    }

    fn corrupt(&self, what: &'static str, e: DecodeError) -> Error {
        e.into_error(what, &self.path)
    }

    pub(crate) fn read_counter(&self, key: &ObjectKey) -> Result<Option<Counter>> {
        match self.objects.get(prefix(key))? {
            None => Ok(None),
            Some(v) => decode_value::<Counter>(&v)
                .map(|(_, c)| Some(c))
                .map_err(|e| self.corrupt("counter", e)),
        }
    }

    pub(crate) fn read_register(&self, key: &ObjectKey) -> Result<Option<Register>> {
        match self.objects.get(prefix(key))? {
            None => Ok(None),
            Some(v) => decode_value::<Register>(&v)
                .map(|(_, r)| Some(r))
                .map_err(|e| self.corrupt("register", e)),
        }
    }

    pub(crate) fn write_counter(&self, key: &ObjectKey, c: &Counter, lsn: u64) -> Result<()> {
        self.objects.insert(prefix(key), encode_value(lsn, c))?;
        Ok(())
    }

    pub(crate) fn write_register(&self, key: &ObjectKey, r: &Register, lsn: u64) -> Result<()> {
        self.objects.insert(prefix(key), encode_value(lsn, r))?;
        Ok(())
    }

    fn read_header<H>(&self, p: &[u8]) -> Result<Option<H>>
    where
        H: rkyv::Archive,
        H::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<H, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        match self.objects.get(header_key(p))? {
            None => Ok(None),
            Some(v) => decode_value::<H>(&v)
                .map(|(_, h)| Some(h))
                .map_err(|e| self.corrupt("header", e)),
        }
    }

    /// Present members of a set, ascending.
    pub(crate) fn read_set_members(&self, key: &ObjectKey) -> Result<Vec<Vec<u8>>> {
        let mut start = prefix(key);
        start.push(MEMBER_SUFFIX);
        let skip = start.len();
        let mut out = Vec::new();
        for item in self.objects.scan_prefix(&start) {
            let (k, _) = item?;
            out.push(k[skip..].to_vec());
        }
        Ok(out)
    }

    /// Loads the header and the given members (or, with `members = None`,
    /// every member) of a set.
    pub(crate) fn load_set(&self, key: &ObjectKey, members: Option<&[&[u8]]>) -> Result<SetView> {
        let (header, loaded, entries) =
            self.load_parts::<SetHeader, DotSet>(key, members, "set member")?;
        Ok(SetView {
            set: OrSet::from_parts(entries, header.context.clone()),
            header,
            loaded,
            full: members.is_none(),
        })
    }

    /// The header and the given parts (members of a set, fields of a map;
    /// with `names = None`, every part) of an object stored decomposed:
    /// what each name held before (`None`: absent), and the present parts.
    fn load_parts<H, T>(
        &self,
        key: &ObjectKey,
        names: Option<&[&[u8]]>,
        what: &'static str,
    ) -> Result<LoadedParts<H, T>>
    where
        H: rkyv::Archive + Default,
        H::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<H, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
        T: rkyv::Archive + Clone,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        let p = prefix(key);
        let header = self.read_header::<H>(&p)?.unwrap_or_default();
        let mut loaded = BTreeMap::new();
        let mut present = BTreeMap::new();
        match names {
            Some(list) => {
                for &name in list {
                    if loaded.contains_key(name) {
                        continue;
                    }
                    let part = match self.objects.get(member_key(&p, name))? {
                        None => None,
                        Some(v) => {
                            Some(decode_value::<T>(&v).map_err(|e| self.corrupt(what, e))?.1)
                        }
                    };
                    if let Some(part) = &part {
                        present.insert(name.to_vec(), part.clone());
                    }
                    loaded.insert(name.to_vec(), part);
                }
            }
            None => {
                let mut start = p.clone();
                start.push(MEMBER_SUFFIX);
                let skip = start.len();
                for item in self.objects.scan_prefix(&start) {
                    let (k, v) = item?;
                    let (_, part) = decode_value::<T>(&v).map_err(|e| self.corrupt(what, e))?;
                    let name = k[skip..].to_vec();
                    present.insert(name.clone(), part.clone());
                    loaded.insert(name, Some(part));
                }
            }
        }
        Ok((header, loaded, present))
    }

    /// Writes back what an operation changed in a loaded set, atomically.
    pub(crate) fn write_set(&self, key: &ObjectKey, view: &SetView, lsn: u64) -> Result<()> {
        let p = prefix(key);
        let mut batch = sled::Batch::default();
        let mut count = view.header.count as i64;
        let bytes = view.bytes_after();
        for (m, before) in &view.loaded {
            let after = view.set.dots(m);
            match (before, after) {
                (Some(b), Some(a)) if b == a => {}
                (_, Some(a)) => {
                    if before.is_none() {
                        count += 1;
                    }
                    batch.insert(member_key(&p, m), encode_value(lsn, a));
                }
                (Some(_), None) => {
                    count -= 1;
                    batch.remove(member_key(&p, m));
                }
                (None, None) => {}
            }
        }
        if view.full {
            for (m, d) in view.set.entries() {
                if !view.loaded.contains_key(m) {
                    count += 1;
                    batch.insert(member_key(&p, m), encode_value(lsn, d));
                }
            }
        }
        let header = SetHeader {
            context: view.set.context().clone(),
            count: count.max(0) as u64,
            bytes,
        };
        batch.insert(header_key(&p), encode_value(lsn, &header));
        self.objects.apply_batch(batch)?;
        Ok(())
    }

    /// Loads the header and the given fields (or, with `fields = None`,
    /// every field) of a map.
    pub(crate) fn load_map(&self, key: &ObjectKey, fields: Option<&[&[u8]]>) -> Result<MapView> {
        let (header, loaded, present) =
            self.load_parts::<MapHeader, Entries>(key, fields, "map field")?;
        Ok(MapView {
            map: OrMap::from_parts(present, header.context.clone(), header.chains.clone()),
            header,
            loaded,
            full: fields.is_none(),
        })
    }

    /// Writes back what an operation changed in a loaded map, atomically.
    /// Fields the operation did not load are never touched.
    pub(crate) fn write_map(&self, key: &ObjectKey, view: &MapView, lsn: u64) -> Result<()> {
        let p = prefix(key);
        let mut batch = sled::Batch::default();
        for (f, before) in &view.loaded {
            match (before, view.map.entries(f)) {
                (Some(b), Some(a)) if b == a => {}
                (_, Some(a)) => batch.insert(member_key(&p, f), encode_value(lsn, a)),
                (Some(_), None) => batch.remove(member_key(&p, f)),
                (None, None) => {}
            }
        }
        for (f, e) in view.unloaded() {
            batch.insert(member_key(&p, f), encode_value(lsn, e));
        }
        debug_assert!(
            view.full
                || view
                    .map
                    .fields()
                    .keys()
                    .all(|f| view.loaded.contains_key(f)),
            "a map operation or merge added a field it had not loaded"
        );
        let header = MapHeader {
            context: view.map.context().clone(),
            chains: view.map.chains().clone(),
            count: view.count_after(),
            bytes: view.bytes_after(),
        };
        batch.insert(header_key(&p), encode_value(lsn, &header));
        self.objects.apply_batch(batch)?;
        Ok(())
    }

    /// An object's expiry entry, if it has one.
    pub(crate) fn read_expiry(&self, key: &ObjectKey) -> Result<Option<StoredExpiry>> {
        match self.expiry.get(prefix(key))? {
            None => Ok(None),
            Some(v) => {
                let (_, x) =
                    decode_value::<StoredExpiry>(&v).map_err(|e| self.corrupt("expiry", e))?;
                Ok(Some(x))
            }
        }
    }

    /// Writes an object's expiry entry and indexes `due` (deadlines the
    /// worker must visit) for it.
    pub(crate) fn write_expiry(
        &self,
        key: &ObjectKey,
        x: &StoredExpiry,
        due: &[u64],
        lsn: u64,
    ) -> Result<()> {
        let p = prefix(key);
        for &d in due {
            self.deadlines.insert(deadline_key(d, &p), &[][..])?;
        }
        self.expiry.insert(p, encode_value(lsn, x))?;
        Ok(())
    }

    /// Up to `max` index entries due at `now_ms`, oldest first: the
    /// objects and the raw index keys (to [`Store::drop_due`]).
    pub(crate) fn due(&self, now_ms: u64, max: usize) -> Result<Vec<(ObjectKey, Vec<u8>)>> {
        let mut out = Vec::new();
        let end = (now_ms.saturating_add(1)).to_be_bytes();
        for item in self.deadlines.range(..end.as_slice()) {
            if out.len() >= max {
                break;
            }
            let (raw, _) = item?;
            let Some((object, None)) = raw.get(8..).and_then(parse_key) else {
                return Err(Error::corruption(
                    &self.path,
                    "unparseable deadline index key",
                ));
            };
            out.push((object, raw.to_vec()));
        }
        Ok(out)
    }

    /// How many index entries are due at `now_ms` (counted up to `limit`).
    pub(crate) fn due_count(&self, now_ms: u64, limit: usize) -> Result<u64> {
        let end = (now_ms.saturating_add(1)).to_be_bytes();
        let mut n = 0;
        for item in self.deadlines.range(..end.as_slice()).take(limit) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Drops a visited index entry.
    pub(crate) fn drop_due(&self, raw: &[u8]) -> Result<()> {
        self.deadlines.remove(raw)?;
        Ok(())
    }

    /// Every expiry entry, in key order (full-state sync).
    pub(crate) fn for_each_expiry(
        &self,
        accept: &dyn Fn(&ObjectKey) -> bool,
        mut f: impl FnMut(ObjectKey, crate::crdt::Expiry) -> Result<bool>,
    ) -> Result<()> {
        for item in self.expiry.iter() {
            let (raw, v) = item?;
            let Some((object, None)) = parse_key(&raw) else {
                return Err(Error::corruption(&self.path, "unparseable expiry key"));
            };
            if !accept(&object) {
                continue;
            }
            let (_, x) = decode_value::<StoredExpiry>(&v).map_err(|e| self.corrupt("expiry", e))?;
            if !f(object, x.expiry)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The full state of an object, if it exists.
    pub(crate) fn read_state(&self, key: &ObjectKey) -> Result<Option<ObjectState>> {
        Ok(match key.kind() {
            Kind::Counter => self.read_counter(key)?.map(ObjectState::Counter),
            Kind::Register => self.read_register(key)?.map(ObjectState::Register),
            Kind::Set => {
                let p = prefix(key);
                if self.read_header::<SetHeader>(&p)?.is_none() {
                    None
                } else {
                    Some(ObjectState::Set(self.load_set(key, None)?.set))
                }
            }
            Kind::Map => {
                if self.read_header::<MapHeader>(&prefix(key))?.is_none() {
                    None
                } else {
                    Some(ObjectState::Map(self.load_map(key, None)?.map))
                }
            }
        })
    }

    /// Every object, in key order, for a full-state sync or a consistency
    /// check. Objects whose key `accept` refuses are skipped.
    pub(crate) fn for_each_object(
        &self,
        accept: &dyn Fn(&ObjectKey) -> bool,
        mut f: impl FnMut(ObjectKey, ObjectState) -> Result<bool>,
    ) -> Result<()> {
        // The decomposed object (set or map) being assembled, if any.
        let mut current: Partial = None;
        let flush = |cur: &mut Partial,
                     f: &mut dyn FnMut(ObjectKey, ObjectState) -> Result<bool>|
         -> Result<bool> {
            match cur.take() {
                Some((k, Parts::Set(entries), ctx)) => {
                    f(k, ObjectState::Set(OrSet::from_parts(entries, ctx)))
                }
                Some((k, Parts::Map(fields, chains), ctx)) => {
                    f(k, ObjectState::Map(OrMap::from_parts(fields, ctx, chains)))
                }
                None => Ok(true),
            }
        };
        for item in self.objects.iter() {
            let (raw, v) = item?;
            let Some((object, suffix)) = parse_key(&raw) else {
                return Err(Error::corruption(&self.path, "unparseable object key"));
            };
            if !accept(&object) {
                continue;
            }
            match (object.kind(), suffix) {
                (Kind::Counter, None) => {
                    if !flush(&mut current, &mut f)? {
                        return Ok(());
                    }
                    let (_, c) =
                        decode_value::<Counter>(&v).map_err(|e| self.corrupt("counter", e))?;
                    if !f(object, ObjectState::Counter(c))? {
                        return Ok(());
                    }
                }
                (Kind::Register, None) => {
                    if !flush(&mut current, &mut f)? {
                        return Ok(());
                    }
                    let (_, r) =
                        decode_value::<Register>(&v).map_err(|e| self.corrupt("register", e))?;
                    if !f(object, ObjectState::Register(r))? {
                        return Ok(());
                    }
                }
                (kind @ (Kind::Set | Kind::Map), Some((HEADER_SUFFIX, []))) => {
                    if !flush(&mut current, &mut f)? {
                        return Ok(());
                    }
                    current = Some(if kind == Kind::Set {
                        let (_, h) = decode_value::<SetHeader>(&v)
                            .map_err(|e| self.corrupt("set header", e))?;
                        (object, Parts::Set(BTreeMap::new()), h.context)
                    } else {
                        let (_, h) = decode_value::<MapHeader>(&v)
                            .map_err(|e| self.corrupt("map header", e))?;
                        (object, Parts::Map(BTreeMap::new(), h.chains), h.context)
                    });
                }
                (Kind::Set | Kind::Map, Some((MEMBER_SUFFIX, name))) => match &mut current {
                    Some((k, Parts::Set(entries), _)) if *k == object => {
                        let (_, dots) = decode_value::<DotSet>(&v)
                            .map_err(|e| self.corrupt("set member", e))?;
                        entries.insert(name.to_vec(), dots);
                    }
                    Some((k, Parts::Map(fields, _), _)) if *k == object => {
                        let (_, entries) = decode_value::<Entries>(&v)
                            .map_err(|e| self.corrupt("map field", e))?;
                        fields.insert(name.to_vec(), entries);
                    }
                    _ => {
                        return Err(Error::corruption(
                            &self.path,
                            format!("member or field without a header in {object:?}"),
                        ));
                    }
                },
                _ => return Err(Error::corruption(&self.path, "unexpected object entry")),
            }
        }
        flush(&mut current, &mut f)?;
        Ok(())
    }

    /// Objects whose last applied log position is at or after `lsn`.
    pub(crate) fn objects_written_since(&self, lsn: u64) -> Result<Vec<ObjectKey>> {
        let mut out: Vec<ObjectKey> = Vec::new();
        for item in self.objects.iter() {
            let (raw, v) = item?;
            let Some((object, _)) = parse_key(&raw) else {
                return Err(Error::corruption(&self.path, "unparseable object key"));
            };
            if stored_lsn(&v).is_some_and(|at| at >= lsn) && out.last() != Some(&object) {
                out.push(object);
            }
        }
        for item in self.expiry.iter() {
            let (raw, v) = item?;
            let Some((object, _)) = parse_key(&raw) else {
                return Err(Error::corruption(&self.path, "unparseable expiry key"));
            };
            if stored_lsn(&v).is_some_and(|at| at >= lsn) {
                out.push(object);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// One step of a key scan ([`crate::Engine::scan`]): the first object
    /// at or after the store position `from` whose key starts with
    /// `prefix`, seeking over keys that cannot (keys sort by kind, then
    /// length, then bytes, so each length's keys with the prefix are one
    /// range). `None` at the end of the store.
    pub(crate) fn scan_step(&self, from: &[u8], prefix_bytes: &[u8]) -> Result<ScanStep> {
        let Some(item) = self.objects.range(from..).next() else {
            return Ok(ScanStep::End);
        };
        let (raw, _) = item?;
        let Some((object, _)) = parse_key(&raw) else {
            return Err(Error::corruption(&self.path, "unparseable object key"));
        };
        let key = object.key();
        let n = prefix_bytes.len();
        let seek_length = |len: usize| {
            if len > crate::object::MAX_KEY_BYTES {
                // No longer key of this kind can exist: the next kind.
                return successor(&[object.kind().tag()]);
            }
            let mut to = vec![object.kind().tag()];
            to.extend_from_slice(&(len as u32).to_be_bytes());
            to.extend_from_slice(prefix_bytes);
            to
        };
        if key.len() < n {
            return Ok(ScanStep::Seek(seek_length(n)));
        }
        match key[..n].cmp(prefix_bytes) {
            std::cmp::Ordering::Less => Ok(ScanStep::Seek(seek_length(key.len()))),
            std::cmp::Ordering::Greater => Ok(ScanStep::Seek(seek_length(key.len() + 1))),
            std::cmp::Ordering::Equal => {
                let present = self.present(&object)?;
                let next = successor(&prefix(&object));
                Ok(ScanStep::Object {
                    object,
                    present,
                    next,
                })
            }
        }
    }

    /// Whether an object is present as the RESP door's type rule sees it
    /// (`server/src/resp/data.rs`): a register with a value, a counter not
    /// at 0, a set with a member, a map with a field. A deleted object (its context alone)
    /// is not.
    pub(crate) fn present(&self, object: &ObjectKey) -> Result<bool> {
        Ok(match object.kind() {
            Kind::Counter => self.read_counter(object)?.is_some_and(|c| c.value() != 0),
            Kind::Register => self
                .read_register(object)?
                .is_some_and(|r| r.value.is_some()),
            Kind::Set => self
                .read_header::<SetHeader>(&prefix(object))?
                .is_some_and(|h| h.count > 0),
            Kind::Map => self
                .read_header::<MapHeader>(&prefix(object))?
                .is_some_and(|h| h.count > 0),
        })
    }

    /// Up to `max_members` members of a set in ascending order, after
    /// `after` (from the first with `None`), stopping before the member that
    /// would take the page past `max_bytes` (a page holds at least one
    /// member). Also whether more members follow.
    pub(crate) fn set_members_after(
        &self,
        key: &ObjectKey,
        after: Option<&[u8]>,
        max_members: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Vec<u8>>, bool)> {
        use std::ops::Bound;
        let mut start = prefix(key);
        start.push(MEMBER_SUFFIX);
        let skip = start.len();
        let lower = match after {
            Some(m) => {
                let mut k = start.clone();
                k.extend_from_slice(m);
                Bound::Excluded(k)
            }
            None => Bound::Included(start.clone()),
        };
        let upper = Bound::Excluded(successor(&start));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in self.objects.range::<Vec<u8>, _>((lower, upper)) {
            let (k, _) = item?;
            let member = &k[skip..];
            if out.len() >= max_members.max(1)
                || (!out.is_empty() && bytes + member.len() > max_bytes)
            {
                return Ok((out, true));
            }
            bytes += member.len();
            out.push(member.to_vec());
        }
        Ok((out, false))
    }

    /// Makes everything written so far durable: sled's flush, then an
    /// fsync of every file sled uses (its flush alone is not one). Files
    /// sled created since are made owner-only on the way.
    pub(crate) fn flush_durable(&self) -> Result<()> {
        self.db.flush()?;
        restrict_tree(&self.path)?;
        sync_tree(&self.path)
    }
}

/// Removes sled snapshot files a kill left half-written. sled 0.34 writes a
/// snapshot to `snap.<lsn>.generating`, syncs it and renames it to
/// `snap.<lsn>`, but on open it takes the largest name starting with
/// `snap.` — which is the unfinished `.generating` file when a process died
/// before the rename — and refuses to open on its checksum ("corruption";
/// sled issues #1527, #1533; seen here after a SIGKILL in
/// `engine/tests/crash.rs`). The finished snapshot before it is still
/// there (sled deletes old ones only after the rename), and sled replays
/// its own log from it, so dropping the unfinished file loses nothing.
fn drop_unfinished_snapshots(path: &Path) -> Result<()> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut removed = false;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, "removing a sled snapshot left unfinished by a crash");
            fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            removed = true;
        }
    }
    if removed {
        fs::File::open(path)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// sled creates its files with the process umask (0644 typically): make
/// its directories 0700 and files 0600, like everything else the engine
/// keeps. (The data directory is 0700 already, so this is a second wall.)
fn restrict_tree(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |path: &Path, mode: u32| -> Result<()> {
        let result = fs::metadata(path).and_then(|meta| {
            if meta.permissions().mode() & 0o777 == mode {
                return Ok(());
            }
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
        });
        match result {
            // sled removed it meanwhile (an old snapshot): nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(|e| Error::io(path, e)),
        }
    };
    set(dir, crate::vfs::DIR_MODE)?;
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if ft.is_dir() {
            restrict_tree(&path)?;
        } else if ft.is_file() {
            set(&path, crate::vfs::FILE_MODE)?;
        }
    }
    Ok(())
}

fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if ft.is_dir() {
            sync_tree(&path)?;
        } else if ft.is_file() {
            match fs::File::open(&path).and_then(|f| f.sync_all()) {
                // sled removed it meanwhile (an old snapshot).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other.map_err(|e| Error::io(&path, e))?,
            }
        }
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::Incarnation;

    fn k(kind: Kind, s: &str) -> ObjectKey {
        ObjectKey::new(kind, s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn decomposed_set_round_trips_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let key = k(Kind::Set, "s");
        let mut view = store.load_set(&key, Some(&[b"a", b"b"])).unwrap();
        view.set
            .add(Incarnation(1), &[b"a".to_vec(), b"b".to_vec()]);
        store.write_set(&key, &view, 10).unwrap();
        let mut view = store.load_set(&key, Some(&[b"a"])).unwrap();
        assert_eq!(view.header.count, 2);
        view.set.remove(&[b"a".to_vec()]);
        store.write_set(&key, &view, 20).unwrap();
        assert_eq!(store.read_set_members(&key).unwrap(), vec![b"b".to_vec()]);
        let full = store.load_set(&key, None).unwrap();
        assert_eq!(full.header.count, 1);
        assert_eq!(
            full.header.bytes,
            entry_cost(b"b", full.set.dots(b"b").unwrap())
        );
        assert_eq!(store.objects_written_since(15).unwrap(), vec![key.clone()]);
        assert!(store.objects_written_since(21).unwrap().is_empty());
    }

    #[test]
    fn iteration_assembles_objects_and_keeps_similar_keys_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut c = Counter::new();
        c.incr(Incarnation(1), 3).unwrap();
        store.write_counter(&k(Kind::Counter, "x"), &c, 1).unwrap();
        for name in ["s", "s\u{1}", "sa"] {
            let key = k(Kind::Set, name);
            let mut view = store.load_set(&key, Some(&[b"m"])).unwrap();
            view.set.add(Incarnation(1), &[b"m".to_vec()]);
            store.write_set(&key, &view, 2).unwrap();
        }
        let mut seen = Vec::new();
        store
            .for_each_object(&|_| true, |k, s| {
                seen.push((k, s));
                Ok(true)
            })
            .unwrap();
        assert_eq!(seen.len(), 4);
        for (key, state) in &seen[1..] {
            match state {
                ObjectState::Set(s) => assert_eq!(s.len(), 1, "{key:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Every present object of the store by repeated steps from the start.
    fn scan_all(store: &Store, prefix_bytes: &[u8]) -> (Vec<ObjectKey>, usize) {
        let mut position = Vec::new();
        let mut found = Vec::new();
        let mut steps = 0;
        loop {
            steps += 1;
            match store.scan_step(&position, prefix_bytes).unwrap() {
                ScanStep::End => return (found, steps),
                ScanStep::Seek(to) => {
                    assert!(to > position, "a seek moves forward");
                    position = to;
                }
                ScanStep::Object {
                    object,
                    present,
                    next,
                } => {
                    assert!(next > position, "a step moves forward");
                    if present {
                        found.push(object);
                    }
                    position = next;
                }
            }
        }
    }

    #[test]
    fn scan_steps_list_present_objects_once_and_seek_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut c = Counter::new();
        c.incr(Incarnation(1), 3).unwrap();
        for name in [
            "a",
            "ab",
            "abc",
            "b",
            "user:1",
            "user:22",
            "usex",
            "\u{ff}\u{ff}",
        ] {
            store.write_counter(&k(Kind::Counter, name), &c, 1).unwrap();
        }
        // A counter back at 0 and a set whose members were all removed:
        // stored, not present.
        let mut zero = Counter::new();
        zero.incr(Incarnation(1), 1).unwrap();
        zero.incr(Incarnation(1), -1).unwrap();
        store
            .write_counter(&k(Kind::Counter, "zero"), &zero, 1)
            .unwrap();
        let set = k(Kind::Set, "user:set");
        let mut view = store.load_set(&set, Some(&[b"m", b"n"])).unwrap();
        view.set
            .add(Incarnation(1), &[b"m".to_vec(), b"n".to_vec()]);
        store.write_set(&set, &view, 2).unwrap();
        let gone = k(Kind::Set, "gone");
        let mut view = store.load_set(&gone, Some(&[b"m"])).unwrap();
        view.set.add(Incarnation(1), &[b"m".to_vec()]);
        store.write_set(&gone, &view, 3).unwrap();
        let mut view = store.load_set(&gone, Some(&[b"m"])).unwrap();
        view.set.remove(&[b"m".to_vec()]);
        store.write_set(&gone, &view, 4).unwrap();
        assert!(!store.present(&gone).unwrap());
        assert!(!store.present(&k(Kind::Counter, "zero")).unwrap());

        let (all, _) = scan_all(&store, b"");
        let names: Vec<String> = all.iter().map(|o| format!("{o:?}")).collect();
        assert_eq!(all.len(), 9, "{names:?}");
        // A set's members are skipped in one step, not visited.
        assert!(names.contains(&"set:user:set".to_owned()));

        let (users, steps) = scan_all(&store, b"user:");
        let users: Vec<&[u8]> = users.iter().map(ObjectKey::key).collect();
        assert_eq!(users, [&b"user:1"[..], b"user:22", b"user:set"]);
        // Seeks jump over whole lengths: far fewer steps than objects
        // would be visited one by one as the store grows.
        assert!(steps <= 16, "{steps} steps");
    }

    #[test]
    fn set_pages_cover_every_member_within_their_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let key = k(Kind::Set, "s");
        let members: Vec<Vec<u8>> = (0..50u32)
            .map(|i| format!("m{i:03}").into_bytes())
            .collect();
        let asked: Vec<&[u8]> = members.iter().map(Vec::as_slice).collect();
        let mut view = store.load_set(&key, Some(&asked)).unwrap();
        view.set.add(Incarnation(1), &members);
        store.write_set(&key, &view, 1).unwrap();
        // A neighbouring set's members never leak into the page.
        let other = k(Kind::Set, "t");
        let mut view = store.load_set(&other, Some(&[b"zz"])).unwrap();
        view.set.add(Incarnation(1), &[b"zz".to_vec()]);
        store.write_set(&other, &view, 1).unwrap();

        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (page, more) = store
                .set_members_after(&key, after.as_deref(), 7, 20)
                .unwrap();
            assert!(!page.is_empty() && page.len() <= 7);
            // 20 bytes: five 4-byte members (and never a sixth).
            assert!(page.iter().map(Vec::len).sum::<usize>() <= 20);
            seen.extend(page.iter().cloned());
            if !more {
                break;
            }
            after = page.last().cloned();
        }
        assert_eq!(seen, members);
        // A member larger than the byte bound still makes a page of one.
        let (page, more) = store.set_members_after(&key, None, 10, 1).unwrap();
        assert_eq!((page.len(), more), (1, true));
        let (page, more) = store
            .set_members_after(&k(Kind::Set, "none"), None, 10, 10)
            .unwrap();
        assert!(page.is_empty() && !more);
    }

    #[test]
    fn successor_is_past_every_extension() {
        assert_eq!(successor(&[1, 2, 3]), vec![1, 2, 4]);
        assert_eq!(successor(&[1, 0xff, 0xff]), vec![2]);
        for ext in [&[][..], &[0][..], &[0xff, 0xff, 0xff][..]] {
            let mut extended = vec![1, 0xff];
            extended.extend_from_slice(ext);
            assert!(successor(&[1, 0xff]) > extended);
        }
    }

    #[test]
    fn corrupt_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let key = k(Kind::Counter, "x");
        store
            .objects
            .insert(prefix(&key), &[1u8, 0, 0][..])
            .unwrap();
        assert!(matches!(
            store.read_counter(&key),
            Err(Error::Corruption { .. })
        ));
        let mut newer = encode_value(0, &Counter::new());
        newer[0] = codec::FORMAT_VERSION + 1;
        store.objects.insert(prefix(&key), newer).unwrap();
        assert!(matches!(
            store.read_counter(&key),
            Err(Error::UnsupportedFormat { .. })
        ));
    }
}
