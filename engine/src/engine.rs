//! The engine: applies local operations and remote deltas, reads objects,
//! recovers after crashes, checkpoints and truncates the log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use crate::causal::{CausalContext, Dot, Incarnation, StreamId, VersionVector};
use crate::clock::{Clock, Hlc, PhysicalTime};
use crate::codec;
use crate::crdt::{Counter, Delta, Expiry, ObjectState, Register, map, register};
use crate::error::{Error, Result};
use crate::log::group::GroupCommit;
use crate::log::{self, Entry, Log, LogOptions, Record, Since};
use crate::object::{
    GroupFn, GroupId, Kind, MAX_MERGED_OBJECT_BYTES, MAX_OBJECT_BYTES, ObjectKey, Op,
    RegisterValue, Ttl, Value,
};
use crate::store::{MapView, ScanStep, SetView, Store, StoredExpiry};
use crate::vfs::{StdFs, Vfs, VfsLock};

/// What one key holds under each type ([`Engine::inspect`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection {
    /// The register's value (`None`: absent or deleted).
    pub register: Option<Vec<u8>>,
    /// The counter's value (0 when absent).
    pub counter: i64,
    /// How many members the set holds.
    pub set_count: u64,
    /// For each member asked about, whether the set holds it.
    pub members_present: Vec<bool>,
    /// How many fields the map holds.
    pub map_count: u64,
    /// For each field asked about, its value in the map (`None`: absent).
    pub map_values: Vec<Option<Vec<u8>>>,
}

/// One page of [`Engine::scan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// The present objects visited, in store order.
    pub objects: Vec<ObjectKey>,
    /// The opaque position the next page starts from; `None`: the scan
    /// is complete.
    pub next: Option<Vec<u8>>,
}

/// One page of [`Engine::set_page`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetPage {
    /// Members in ascending byte order.
    pub members: Vec<Vec<u8>>,
    /// The last member listed when more follow (the next page starts
    /// after it); `None`: this page ends the set.
    pub next: Option<Vec<u8>>,
}

/// The position of `object` in scan order ([`Engine::scan`]): a scan from
/// it lists `object` first if present, then what follows it. For a scan
/// that starts somewhere chosen (Redis `RANDOMKEY`).
pub fn scan_position(object: &ObjectKey) -> Vec<u8> {
    crate::store::prefix(object)
}

/// When a write counts as durable.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Durability {
    /// Acknowledge only after the log record is fdatasync'ed. Concurrent
    /// writes share one fdatasync (group commit). Nothing acknowledged is
    /// lost on power failure.
    Sync,
    /// fdatasync every interval; writes are acknowledged once handed to the
    /// OS. A process crash loses nothing; a power failure or kernel crash
    /// may lose up to one interval of acknowledged writes.
    Periodic(Duration),
}

/// Engine settings. [`EngineConfig::new`] gives the defaults.
#[derive(Clone)]
pub struct EngineConfig {
    /// The data directory (created if missing). One engine per directory.
    pub dir: PathBuf,
    pub durability: Durability,
    /// Remote timestamps further ahead of local physical time are refused.
    pub max_clock_offset: Duration,
    /// Log segment size, in bytes (the unit of truncation).
    pub segment_bytes: u64,
    /// sled page cache size, in bytes.
    pub cache_bytes: u64,
    /// The placement group of each object (default: all in group 0).
    pub group_of: GroupFn,
    /// The file layer the engine's own files go through (default: the
    /// real file system, [`StdFs`]); tests and simulations pass a
    /// [`crate::vfs::SimDisk`] mount.
    pub vfs: Arc<dyn Vfs>,
    /// Whether the engine runs its own log sync thread (the default).
    /// Without it the owner runs the group commit's fsyncs itself, when it
    /// chooses, with [`Engine::run_pending_sync`] and [`Engine::sync_now`];
    /// [`Engine::wait_durable`] (and what calls it: checkpoints, recovery)
    /// then syncs inline on the caller's thread, and `Periodic` durability
    /// syncs only when the owner calls [`Engine::sync_now`]. For a
    /// deterministic simulation, which must own every thread and every
    /// moment an fsync happens.
    pub sync_thread: bool,
    /// Where incarnation ids come from (a new data directory, and every
    /// unclean shutdown). `None` (the default): the OS's randomness. A
    /// simulation passes a seeded source so that a run replays exactly.
    /// Draws of 0 are skipped (0 is not a valid id).
    pub incarnations: Option<IncarnationSource>,
}

/// A source of incarnation ids (see [`EngineConfig::incarnations`]).
pub type IncarnationSource = Arc<dyn Fn() -> u64 + Send + Sync>;

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("max_clock_offset", &self.max_clock_offset)
            .field("segment_bytes", &self.segment_bytes)
            .field("cache_bytes", &self.cache_bytes)
            .field("vfs", &self.vfs)
            .field("sync_thread", &self.sync_thread)
            .field(
                "incarnations",
                &self.incarnations.as_ref().map(|_| "seeded"),
            )
            .finish_non_exhaustive()
    }
}

/// Default sled cache, in bytes (sled's own default): a ceiling, not an
/// allocation, so idle test clusters stay small. It holds about a million
/// small objects; the stored form of a register is ≈ 40 bytes larger than
/// its value (format byte, log position, HLC), and at 256 MiB a million
/// 100-byte registers no longer fit: puts read tree pages back from disk
/// (10.3 µs per put, vs 8.5 µs at 1 GiB: `cargo bench -p meridian --bench
/// engine`).
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

impl EngineConfig {
    pub fn new(dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            dir: dir.into(),
            durability: Durability::Sync,
            max_clock_offset: Clock::DEFAULT_MAX_OFFSET,
            segment_bytes: log::DEFAULT_SEGMENT_BYTES,
            cache_bytes: DEFAULT_CACHE_BYTES,
            group_of: Arc::new(|_| GroupId(0)),
            vfs: StdFs::shared(),
            sync_thread: true,
            incarnations: None,
        }
    }
}

/// The result of a local operation.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The delta as replicated: its dot, timestamp, key and delta.
    pub record: Record,
    /// Log position the write is durable at (see [`Engine::wait_durable`]).
    pub lsn: u64,
    /// The object's value after the operation, for counters and registers
    /// (sets: `None`, read them if needed; they may be large).
    pub value: Option<Value>,
    /// Records the same operation appended ahead of `record` (an expiry
    /// firing before a write to an expired object, the deadline of a
    /// `SET … EX`), in log order: replicate them first. `lsn` covers them.
    pub before: Vec<Record>,
}

/// What one [`Engine::expire_due`] pass did.
#[derive(Clone, Debug, Default)]
pub struct ExpiryPass {
    /// Deadline index entries visited (`max_keys`: there may be more due).
    pub visited: usize,
    /// Objects whose expiry fired.
    pub fired: usize,
    /// The records the firing appended, in log order: replicate them.
    pub records: Vec<Record>,
    /// The log position the last of them is durable at (0: none).
    pub lsn: u64,
}

/// What a read shows of `value` (the stored content of an object of
/// `kind`) under its expiry at `now_ms`.
fn visible_value(kind: Kind, value: Value, x: Option<&StoredExpiry>, now_ms: u64) -> Value {
    let Some(x) = x else { return value };
    let cutoff = x.expiry.cutoff_ms(now_ms);
    if cutoff == 0 {
        return value;
    }
    match value {
        Value::Register(Some(r)) if x.expiry.expired(r.hlc, now_ms) => Value::Register(None),
        Value::Register(r) => Value::Register(r),
        _ if cutoff > x.fired_ms => crate::crdt::empty_value(kind),
        v => v,
    }
}

/// The result of merging a remote delta.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Merged {
    /// Already applied here; nothing done.
    Duplicate,
    /// Logged and applied; `changed` says whether the object changed.
    Applied { changed: bool, lsn: u64 },
}

/// Counters for metrics. Monotonic unless noted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Local operations applied.
    pub writes: u64,
    /// Remote deltas applied (not duplicates).
    pub merges: u64,
    /// Remote deltas that were already applied.
    pub duplicates: u64,
    /// Remote deltas refused because their timestamp was too far ahead.
    pub clock_refusals: u64,
    /// Full-state joins (read repair, full sync) that changed something.
    pub state_merges: u64,
    /// fdatasync calls on the log.
    pub fsyncs: u64,
    /// Bytes appended to the log.
    pub log_bytes_written: u64,
    /// Bytes of log currently retained (gauge).
    pub log_retained_bytes: u64,
    /// Deltas currently retained in the log (gauge).
    pub log_retained_deltas: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Merges refused because the set or map would pass
    /// [`crate::MAX_MERGED_OBJECT_BYTES`] ([`Error::ObjectTooLarge`]), or
    /// the map [`crate::crdt::map::MAX_FIELDS_PER_MAP`]
    /// ([`Error::TooManyFields`]).
    pub oversized_merges: u64,
    /// Expiries this replica fired (made final and removed the content
    /// of: [`Engine::expire_due`], or a write to an expired object).
    pub expiry_fired: u64,
    /// Deadline index entries due and not yet visited by the worker
    /// (gauge, counted up to [`EXPIRY_BACKLOG_COUNT_LIMIT`]).
    pub expiry_backlog: u64,
}

/// Most due deadline entries [`Engine::metrics`] counts for
/// `expiry_backlog`: a bound on the cost of one metrics read (a backlog
/// that large is reported as this).
pub const EXPIRY_BACKLOG_COUNT_LIMIT: usize = 65_536;

#[derive(Default)]
struct Counters {
    expiry_fired: AtomicU64,
    writes: AtomicU64,
    merges: AtomicU64,
    duplicates: AtomicU64,
    clock_refusals: AtomicU64,
    state_merges: AtomicU64,
    oversized_merges: AtomicU64,
    fsyncs: AtomicU64,
    log_bytes_written: AtomicU64,
    checkpoints: AtomicU64,
}

/// Objects are locked in stripes: an operation holds its object's stripe
/// from reading the state to writing it back. 1024 stripes make collisions
/// between unrelated hot objects rare at negligible memory cost.
const STRIPES: usize = 1024;

/// Names of the files in the data directory.
const IDENTITY_FILE: &str = "IDENTITY";
const CHECKPOINT_FILE: &str = "CHECKPOINT";
const CLEAN_FILE: &str = "CLEAN";
const RELOG_FILE: &str = "RELOG";
const LOCK_FILE: &str = "LOCK";
const LOG_DIR: &str = "log";
const OBJECTS_DIR: &str = "objects";

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct IdentityFile {
    incarnation: Incarnation,
}

/// The clean-shutdown marker: written last by [`Engine::close`], after the
/// final sync, and removed by the next open once the log checked out. An
/// empty file (older builds) is a clean shutdown of unknown log end.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CleanFile {
    /// Where the retained log started.
    log_start: u64,
    /// Where the log ended, every byte before it synced.
    log_end: u64,
}

/// Written before re-issuing lost effects ([`Engine::open`] after an
/// unclean shutdown) and removed once they are durable: the objects being
/// re-issued. The re-issued records reuse the log positions of the lost
/// ones, so after a crash part way the stored positions no longer tell
/// which objects still need it; this file does.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct RelogFile {
    keys: Vec<ObjectKey>,
}

#[derive(Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CheckpointFile {
    /// Every entry before this position is in the object store.
    lsn: u64,
    /// Applied dots as of the checkpoint (entries after `lsn` add to it on replay).
    applied: CausalContext,
    /// Per group, the deltas truncation deleted.
    truncated: BTreeMap<GroupId, VersionVector>,
    /// The group of every stream seen.
    streams: BTreeMap<StreamId, GroupId>,
    /// A timestamp at least as late as every one the clock had issued or
    /// observed: restored on open so a restart never issues earlier ones.
    clock_high: Hlc,
}

/// A Meridian storage engine. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.inner.dir)
            .field("incarnation", &self.inner.incarnation)
            .finish()
    }
}

struct Inner {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    config: EngineConfig,
    incarnation: Incarnation,
    clock: Clock,
    log: Arc<Log>,
    store: Store,
    stripes: Box<[Mutex<()>]>,
    /// Next sequence number per own stream; held across appends so each
    /// stream's numbers are dense and in log order.
    seqs: Mutex<HashMap<StreamId, u64>>,
    applied: Mutex<CausalContext>,
    durable: Arc<Mutex<CausalContext>>,
    streams: Mutex<BTreeMap<StreamId, GroupId>>,
    /// Start positions of entries appended but not yet in the object store
    /// and the applied dots. An entry joins it in the same critical section
    /// as its append and leaves it in the same one as its dots are
    /// published, so a checkpoint that reads the log end, this set and the
    /// applied dots under this lock sees a consistent cut.
    in_flight: Mutex<BTreeSet<u64>>,
    checkpoint_lock: Mutex<()>,
    counters: Arc<Counters>,
    syncer: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Set when an object-store write failed after its log append.
    store_failed: Mutex<Option<String>>,
    /// Whether recovery cut a torn tail off the log.
    torn_tail: bool,
    _lock: VfsLock,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.log.group.shutdown();
        if let Some(h) = self.syncer.lock().take() {
            let _ = h.join();
        }
    }
}

/// The stream id of `group` for an incarnation: the incarnation itself for
/// group 0, a fixed mix of both otherwise. Deterministic, so peers can work
/// out each other's streams.
pub fn stream_id(incarnation: Incarnation, group: GroupId) -> StreamId {
    if group.0 == 0 {
        return StreamId::from(incarnation);
    }
    // splitmix64 finaliser over the pair; never returns 0 in practice, and
    // 0 is mapped away to keep ids nonzero.
    let mut z = incarnation.0 ^ ((group.0 as u64) << 48) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    StreamId(z.max(1))
}

/// The log's fsync as the group commit runs it (on the sync thread, or on
/// the owner's with [`EngineConfig::sync_thread`] off), counted.
fn log_sync(
    log: &Arc<Log>,
    counters: &Arc<Counters>,
) -> impl FnMut(u64) -> std::io::Result<()> + Send + use<> {
    let log = log.clone();
    let counters = counters.clone();
    move |target| {
        counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        log.sync_to(target)
    }
}

fn read_small_file<T>(vfs: &dyn Vfs, path: &Path, what: &'static str) -> Result<Option<T>>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let bytes = match vfs.read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    if bytes.len() < 4 {
        return Err(Error::corruption(path, format!("{what} file too short")));
    }
    let crc = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    if crc32fast::hash(&bytes[4..]) != crc {
        return Err(Error::corruption(path, format!("{what} checksum mismatch")));
    }
    codec::decode::<T>(&bytes[4..])
        .map(Some)
        .map_err(|e| e.into_error(what, path))
}

/// Writes `[crc][payload]` to `path` atomically (temp file, fsync, rename,
/// fsync of the directory). A failed fsync poisons `group` if given (after
/// open: the engine refuses writes rather than guess what is durable).
fn write_small_file<T: codec::Encode>(
    vfs: &dyn Vfs,
    dir: &Path,
    name: &str,
    value: &T,
    group: Option<&GroupCommit>,
) -> Result<()> {
    let payload = codec::encode(value);
    let mut bytes = crc32fast::hash(&payload).to_le_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let synced = |path: &Path, e: std::io::Error| -> Error {
        match group {
            Some(g) => {
                let reason = format!("fsync of {} failed: {e}", path.display());
                tracing::error!(path = %path.display(), error = %e, "fsync failed; refusing further writes");
                g.poison(reason.clone());
                Error::Poisoned(reason)
            }
            None => Error::io(path, e),
        }
    };
    let file = vfs.open(&tmp, true).map_err(|e| Error::io(&tmp, e))?;
    file.set_len(0)
        .and_then(|_| file.append(&bytes))
        .map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| synced(&tmp, e))?;
    vfs.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    vfs.sync_dir(dir).map_err(|e| synced(dir, e))
}

/// Removes `path` (if present) durably.
fn remove_small_file(vfs: &dyn Vfs, dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    match vfs.remove_file(&path) {
        Ok(()) => vfs.sync_dir(dir).map_err(|e| Error::io(dir, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Reads the clean-shutdown marker: `None` if absent (the last shutdown was
/// not clean), else the log's `(start, end)` it recorded (`None` for the
/// empty marker of an older build).
fn read_clean_marker(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Option<(u64, u64)>>> {
    let path = dir.join(CLEAN_FILE);
    match vfs.read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
        Ok(b) if b.is_empty() => Ok(Some(None)),
        Ok(_) => {
            let marker: CleanFile = read_small_file(vfs, &path, "clean-shutdown marker")?
                .ok_or_else(|| Error::corruption(&path, "clean-shutdown marker vanished"))?;
            Ok(Some(Some((marker.log_start, marker.log_end))))
        }
    }
}

fn new_incarnation(source: Option<&IncarnationSource>) -> Incarnation {
    loop {
        let id: u64 = match source {
            Some(draw) => draw(),
            None => rand::random(),
        };
        if id != 0 {
            return Incarnation(id);
        }
    }
}

impl Engine {
    /// Opens (or creates) the engine in `config.dir`, recovering from the
    /// log. `now` stamps any deltas recovery has to re-issue.
    pub fn open(config: EngineConfig, now: PhysicalTime) -> Result<Engine> {
        let dir = config.dir.clone();
        let vfs = config.vfs.clone();
        // Owner-only (0700) when created here; an existing directory keeps
        // its mode, but what is inside is owner-only either way.
        vfs.create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = vfs.lock(&lock_path).map_err(|e| Error::io(&lock_path, e))?;

        let identity: Option<IdentityFile> =
            read_small_file(&*vfs, &dir.join(IDENTITY_FILE), "identity")?;
        // Removed only once the log checked out: a failed open leaves it, so
        // damage found now is still judged as after a clean shutdown.
        let clean = read_clean_marker(&*vfs, &dir)?;
        let (incarnation, unclean) = match &identity {
            Some(id) if clean.is_some() => (id.incarnation, false),
            Some(old) => {
                let new = new_incarnation(config.incarnations.as_ref());
                tracing::warn!(
                    old = %old.incarnation, %new,
                    "previous shutdown was not clean; starting a new incarnation"
                );
                (new, true)
            }
            None => (new_incarnation(config.incarnations.as_ref()), false),
        };
        if identity.as_ref().map(|c| c.incarnation) != Some(incarnation) {
            write_small_file(
                &*vfs,
                &dir,
                IDENTITY_FILE,
                &IdentityFile { incarnation },
                None,
            )?;
        }

        let objects = dir.join(OBJECTS_DIR);
        let objects = vfs.host_dir(&objects).map_err(|e| Error::io(&objects, e))?;
        let store = Store::open(&objects, config.cache_bytes)?;
        let cp: CheckpointFile =
            read_small_file(&*vfs, &dir.join(CHECKPOINT_FILE), "checkpoint")?.unwrap_or_default();
        let mut applied = cp.applied.clone();
        let mut streams = cp.streams.clone();
        let group_of = config.group_of.clone();
        let mut clock_high = cp.clock_high;
        let recovered = Log::open(
            LogOptions {
                vfs: vfs.clone(),
                dir: dir.join(LOG_DIR),
                segment_bytes: config.segment_bytes,
                group_of: config.group_of.clone(),
                truncated: cp.truncated.clone(),
                replay_from: cp.lsn,
                clean: clean.is_some(),
                clean_bounds: clean.flatten(),
            },
            |pos, entry| {
                match entry {
                    Entry::Delta(r) => {
                        if let Delta::Register(reg) = &r.delta {
                            clock_high = clock_high.max(reg.hlc);
                        }
                        merge_into_store(&store, &r.key, &r.delta, pos)?;
                        applied.insert(r.dot);
                        streams.insert(r.dot.stream, group_of(&r.key));
                        clock_high = clock_high.max(r.hlc);
                    }
                    Entry::Merge { key, delta } => {
                        if let Delta::Register(reg) = &delta {
                            clock_high = clock_high.max(reg.hlc);
                        }
                        merge_into_store(&store, &key, &delta, pos)?;
                    }
                    Entry::Vector(vv) => {
                        applied.join(&CausalContext::from_vector(vv));
                    }
                }
                Ok(())
            },
        )?;
        let torn_tail = recovered.truncated_tail;
        let log = Arc::new(recovered.log);
        // What recovery read may sit only in the page cache: make it durable
        // before reporting it as such.
        log.sync_to(log.end()).map_err(|e| Error::io(&dir, e))?;
        if clean.is_some() {
            remove_small_file(&*vfs, &dir, CLEAN_FILE)?;
        }

        let counters = Arc::new(Counters::default());
        let clock = Clock::new(incarnation, config.max_clock_offset);
        // Our own history is never "too far ahead": restore the clock past
        // everything it had issued or accepted before the restart.
        if clock_high.time > 0 {
            let _ = clock.observe(clock_high, PhysicalTime(clock_high.time));
        }
        let inner = Arc::new(Inner {
            dir: dir.clone(),
            vfs: vfs.clone(),
            clock,
            incarnation,
            log: log.clone(),
            store,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            seqs: Mutex::new(HashMap::new()),
            durable: Arc::new(Mutex::new(applied.clone())),
            applied: Mutex::new(applied),
            streams: Mutex::new(streams),
            in_flight: Mutex::new(BTreeSet::new()),
            checkpoint_lock: Mutex::new(()),
            counters: counters.clone(),
            syncer: Mutex::new(None),
            closed: AtomicBool::new(false),
            store_failed: Mutex::new(None),
            torn_tail,
            config,
            _lock: lock,
        });
        let periodic = match inner.config.durability {
            Durability::Sync => None,
            Durability::Periodic(d) => Some(d),
        };
        if inner.config.sync_thread {
            // A panic on this thread (in the file layer, or in a durability
            // callback) is caught by `run_syncer`, which poisons the engine:
            // every waiter and later write fails instead of hanging.
            let sync = log_sync(&log, &counters);
            let handle = std::thread::Builder::new()
                .name("meridian-log-sync".into())
                .spawn(move || log.group.run_syncer(sync, periodic))
                .map_err(|e| Error::io(&dir, e))?;
            *inner.syncer.lock() = Some(handle);
        }
        let engine = Engine { inner };
        engine.relog_lost_tail(now, unclean)?;
        Ok(engine)
    }

    /// After an unclean shutdown (`scan`) the object store may hold effects
    /// of log entries that did not survive (written to the OS, not yet
    /// synced, when power failed). Re-issue such objects' full states as
    /// new deltas so every replica converges on them instead of diverging
    /// silently. Also finishes a re-issue a crash interrupted (`RELOG`).
    fn relog_lost_tail(&self, now: PhysicalTime, scan: bool) -> Result<()> {
        let inner = &self.inner;
        let vfs = &*inner.vfs;
        let end = inner.log.end();
        let mut keys = if scan {
            inner.store.objects_written_since(end)?
        } else {
            Vec::new()
        };
        let pending: Option<RelogFile> =
            read_small_file(vfs, &inner.dir.join(RELOG_FILE), "re-issue list")?;
        if let Some(p) = &pending {
            keys.extend(p.keys.iter().cloned());
            keys.sort();
            keys.dedup();
        }
        if keys.is_empty() {
            if pending.is_some() {
                remove_small_file(vfs, &inner.dir, RELOG_FILE)?;
            }
            return Ok(());
        }
        tracing::warn!(
            objects = keys.len(),
            "object store holds effects the log lost; re-issuing their states"
        );
        // The new records take the lost ones' positions: once one is
        // durable, the stored positions of objects not yet re-issued may
        // fall below the log end and no longer mark them. Record the list
        // durably first, so a crash part way resumes it.
        write_small_file(
            vfs,
            &inner.dir,
            RELOG_FILE,
            &RelogFile { keys: keys.clone() },
            Some(&inner.log.group),
        )?;
        let mut last = end;
        for key in keys {
            let _g = self.stripe(&key);
            if let Some(state) = inner.store.read_state(&key)? {
                // The state may hold a register timestamp from the lost
                // tail, which the clock (restored from the surviving log)
                // never saw: observe it, or a later local put could be
                // stamped below it and lose on every other replica while
                // winning here. Our own history: never "too far ahead".
                if let ObjectState::Register(r) = &state {
                    let _ = inner.clock.observe(r.hlc, PhysicalTime(r.hlc.time));
                }
                let hlc = inner.clock.now(now);
                let (_, lsn) = self.append_local(&key, hlc, state.to_delta(), |lsn| {
                    write_state(&inner.store, &key, &state, lsn)
                })?;
                last = lsn;
            }
            if let Some(x) = inner.store.read_expiry(&key)? {
                let hlc = inner.clock.now(now);
                let (_, lsn) =
                    self.append_local(&key, hlc, Delta::Expiry(x.expiry.clone()), |lsn| {
                        inner.store.write_expiry(&key, &x, &[], lsn)
                    })?;
                last = lsn;
            }
        }
        self.wait_durable(last)?;
        remove_small_file(vfs, &inner.dir, RELOG_FILE)
    }

    /// Whether opening cut a torn (partially written) tail off the log.
    pub fn recovered_torn_tail(&self) -> bool {
        self.inner.torn_tail
    }

    /// This incarnation's id (changes after an unclean shutdown).
    pub fn incarnation(&self) -> Incarnation {
        self.inner.incarnation
    }

    /// The stream this node numbers `group`'s deltas in.
    pub fn stream(&self, group: GroupId) -> StreamId {
        stream_id(self.inner.incarnation, group)
    }

    /// The placement group of `key`.
    pub fn group_of(&self, key: &ObjectKey) -> GroupId {
        (self.inner.config.group_of)(key)
    }

    /// The group of a stream this node has seen deltas of.
    pub fn stream_group(&self, stream: StreamId) -> Option<GroupId> {
        self.inner.streams.lock().get(&stream).copied()
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    pub fn durability(&self) -> Durability {
        self.inner.config.durability
    }

    fn stripe(&self, key: &ObjectKey) -> MutexGuard<'_, ()> {
        // Spreading keys over the stripes needs no DoS-resistant hash (the
        // worst case is two keys sharing a lock); CRC32 is one instruction
        // per 8 bytes, SipHash was 2% of a put.
        let mut h = crc32fast::Hasher::new();
        h.update(&[key.kind().tag()]);
        h.update(key.key());
        self.inner.stripes[(h.finalize() as usize) % STRIPES].lock()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        if let Some(reason) = self.inner.store_failed.lock().clone() {
            return Err(Error::Poisoned(reason));
        }
        self.inner.log.group.check().map_err(Error::Poisoned)
    }

    /// Applies a local operation: computes its delta against the current
    /// state, appends it to the log, applies it. The write is durable once
    /// [`Engine::wait_durable`] (or [`Engine::on_durable`]) for the returned
    /// position succeeds; callers acknowledge only then. On error nothing
    /// changed.
    pub fn apply(&self, key: &ObjectKey, op: Op, now: PhysicalTime) -> Result<Applied> {
        op.validate(key.kind())?;
        self.check_open()?;
        let inner = &self.inner;
        let _g = self.stripe(key);
        let now_ms = now.unix_ms();
        // A deadline already passed deletes the object (Redis: `EXPIRE`
        // with a past time, `SET … PXAT <past>`). Expiring "at a past
        // time" would remove only writes stamped before it, and a register
        // written after its own deadline would live on with no TTL.
        let op = match op {
            Op::Expire(d) | Op::PutTtl(_, Ttl::Expire(d)) if d.unix_ms(now_ms) <= now_ms => {
                Op::Delete
            }
            op => op,
        };
        let mut out = Appended::default();
        let mut x = inner.store.read_expiry(key)?;
        // An expired object is first made final here (its content
        // removed), so the operation sees a fresh object.
        if let Some(stored) = &mut x
            && stored.expiry.cutoff_ms(now_ms) > stored.fired_ms
        {
            self.fire_locked(key, stored, now, &mut out)?;
        }
        let value = match op {
            Op::Expire(deadline) => {
                let stored = x.get_or_insert_with(StoredExpiry::default);
                let at = deadline.unix_ms(now_ms);
                let delta = stored.expiry.expire_at(inner.incarnation, now_ms, at);
                out.push(self.append_expiry(key, stored, delta, &[at], now)?);
                None
            }
            Op::Persist => {
                let stored = x.get_or_insert_with(StoredExpiry::default);
                let delta = stored.expiry.persist(now_ms);
                out.push(self.append_expiry(key, stored, delta, &[], now)?);
                None
            }
            Op::Put(v) => self.put_with_ttl(key, v, Ttl::Persist, &mut x, now, &mut out)?,
            Op::PutTtl(v, ttl) => self.put_with_ttl(key, v, ttl, &mut x, now, &mut out)?,
            op => {
                let deletes = op == Op::Delete;
                let hlc = inner.clock.now(now);
                let (record, lsn, value) = self.apply_content(key, op, hlc)?;
                out.push((record, lsn));
                // `DEL` removes the TTL too (Redis): a later write to the
                // key starts without one. Logged after the delete, so a
                // crash between them leaves a shorter life, not a longer.
                if deletes
                    && let Some(stored) = &mut x
                    && !stored.expiry.deadlines().is_empty()
                {
                    let delta = stored.expiry.persist(now_ms);
                    out.push(self.append_expiry(key, stored, delta, &[], now)?);
                }
                value
            }
        };
        let (record, lsn) = out.last.expect("every operation appends a record");
        inner.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(Applied {
            record,
            lsn,
            value,
            before: out.before,
        })
    }

    /// A register write with its effect on the expiry, as records in an
    /// order that a crash between them cannot turn into a longer life: a
    /// new deadline before the value, a removal of deadlines after it.
    fn put_with_ttl(
        &self,
        key: &ObjectKey,
        value: Vec<u8>,
        ttl: Ttl,
        x: &mut Option<StoredExpiry>,
        now: PhysicalTime,
        out: &mut Appended,
    ) -> Result<Option<Value>> {
        let now_ms = now.unix_ms();
        if let Ttl::Expire(deadline) = ttl {
            let stored = x.get_or_insert_with(StoredExpiry::default);
            let at = deadline.unix_ms(now_ms);
            let delta = stored.expiry.expire_at(self.inner.incarnation, now_ms, at);
            out.push(self.append_expiry(key, stored, delta, &[at], now)?);
        }
        let hlc = self.inner.clock.now(now);
        let (record, lsn, shown) = self.apply_content(key, Op::Put(value), hlc)?;
        out.push((record, lsn));
        if ttl == Ttl::Persist
            && let Some(stored) = x
            && !stored.expiry.deadlines().is_empty()
        {
            let delta = stored.expiry.persist(now_ms);
            out.push(self.append_expiry(key, stored, delta, &[], now)?);
        }
        Ok(shown)
    }

    /// Logs and stores an expiry delta already applied to `stored`, indexing
    /// `due` for the reclamation worker.
    fn append_expiry(
        &self,
        key: &ObjectKey,
        stored: &StoredExpiry,
        delta: Expiry,
        due: &[u64],
        now: PhysicalTime,
    ) -> Result<(Record, u64)> {
        let hlc = self.inner.clock.now(now);
        self.append_local(key, hlc, Delta::Expiry(delta), |lsn| {
            self.inner.store.write_expiry(key, stored, due, lsn)
        })
    }

    /// Makes the expiry that has happened at `now` final on this replica:
    /// removes the content it holds (the type's observed-remove delete;
    /// a register gets a tombstone stamped just before the cutoff, so a
    /// write stamped after it still wins) and fires the expiry, logging
    /// both into `out` (nothing when the replica holds nothing and a peer
    /// already fired: only the local mark moves).
    fn fire_locked(
        &self,
        key: &ObjectKey,
        stored: &mut StoredExpiry,
        now: PhysicalTime,
        out: &mut Appended,
    ) -> Result<()> {
        let inner = &self.inner;
        let now_ms = now.unix_ms();
        let cutoff = stored.expiry.cutoff_ms(now_ms);
        if let Some(delta) = self.removal(key, cutoff)? {
            let hlc = inner.clock.now(now);
            out.push(match delta {
                Removal::Counter(state, d) => {
                    self.append_local(key, hlc, Delta::Counter(d), |lsn| {
                        inner.store.write_counter(key, &state, lsn)
                    })?
                }
                Removal::Register(state) => {
                    let d = state.clone();
                    self.append_local(key, hlc, Delta::Register(d), |lsn| {
                        inner.store.write_register(key, &state, lsn)
                    })?
                }
                Removal::Set(view, d) => self.append_local(key, hlc, Delta::Set(d), |lsn| {
                    inner.store.write_set(key, &view, lsn)
                })?,
                Removal::Map(view, d) => self.append_local(key, hlc, Delta::Map(d), |lsn| {
                    inner.store.write_map(key, &view, lsn)
                })?,
            });
        }
        let fired = stored.expiry.fire(now_ms);
        stored.fired_ms = cutoff;
        match fired {
            Some(delta) => out.push(self.append_expiry(key, stored, delta, &[], now)?),
            // A floor raised by a peer: nothing to replicate, the local
            // mark alone moves (unlogged: lost in a crash, the worker
            // fires again, removing nothing new that was seen before).
            None => inner.store.write_expiry(key, stored, &[], 0)?,
        }
        inner.counters.expiry_fired.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The delete an expiry at `cutoff_ms` makes of what this replica holds
    /// of `key`, applied to a loaded state; `None` when it holds nothing.
    fn removal(&self, key: &ObjectKey, cutoff_ms: u64) -> Result<Option<Removal>> {
        let store = &self.inner.store;
        Ok(match key.kind() {
            Kind::Counter => match store.read_counter(key)? {
                Some(mut c) if c.value() != 0 => {
                    let d = c.delete();
                    Some(Removal::Counter(c, d))
                }
                _ => None,
            },
            Kind::Register => {
                let mut r = store.read_register(key)?;
                let tombstone = Register::write(
                    Hlc {
                        time: PhysicalTime::from_unix_ms(cutoff_ms).0.saturating_sub(1),
                        node: self.inner.incarnation,
                    },
                    None,
                );
                match &r {
                    Some(old) if old.value.is_some() && old.hlc < tombstone.hlc => {
                        register::merge_into(&mut r, &tombstone);
                        Some(Removal::Register(r.expect("merged")))
                    }
                    _ => None,
                }
            }
            Kind::Set => {
                let mut view = store.load_set(key, None)?;
                if view.set.is_empty() {
                    None
                } else {
                    let d = view.set.delete();
                    Some(Removal::Set(view, d))
                }
            }
            Kind::Map => {
                let mut view = store.load_map(key, None)?;
                if view.map.is_empty() {
                    None
                } else {
                    let d = view.map.delete();
                    Some(Removal::Map(view, d))
                }
            }
        })
    }

    /// Applies a content operation (not an expiry change): computes its
    /// delta, logs it, stores the new state. The caller holds the stripe.
    fn apply_content(
        &self,
        key: &ObjectKey,
        op: Op,
        hlc: Hlc,
    ) -> Result<(Record, u64, Option<Value>)> {
        let inner = &self.inner;
        Ok(match key.kind() {
            Kind::Counter => {
                let mut state = inner.store.read_counter(key)?.unwrap_or_default();
                let delta = match op {
                    Op::Incr(d) => state.incr(inner.incarnation, d)?,
                    Op::Delete => state.delete(),
                    _ => unreachable!("validated"),
                };
                let value = Value::Counter(state.value());
                let (record, lsn) = self.append_local(key, hlc, Delta::Counter(delta), |lsn| {
                    inner.store.write_counter(key, &state, lsn)
                })?;
                (record, lsn, Some(value))
            }
            Kind::Register => {
                let value = match op {
                    Op::Put(v) => Some(v),
                    Op::Delete => None,
                    _ => unreachable!("validated"),
                };
                let write = Register::write(hlc, value);
                // A local write always wins: every register timestamp the
                // store holds came through this clock (issued, or observed
                // on merge, repair and replay), so `hlc` is larger. No need
                // to read the current state; debug builds check it.
                debug_assert!(
                    inner
                        .store
                        .read_register(key)?
                        .is_none_or(|old| old.hlc < write.hlc),
                    "a local register write must be newer than the stored state"
                );
                let state = write.clone();
                let shown = Value::Register(Some(RegisterValue {
                    value: state.value.clone(),
                    hlc: state.hlc,
                }));
                let (record, lsn) = self.append_local(key, hlc, Delta::Register(write), |lsn| {
                    inner.store.write_register(key, &state, lsn)
                })?;
                (record, lsn, Some(shown))
            }
            Kind::Set => {
                let mut view = match &op {
                    Op::Add(ms) | Op::Remove(ms) => {
                        let list: Vec<&[u8]> = ms.iter().map(Vec::as_slice).collect();
                        inner.store.load_set(key, Some(&list))?
                    }
                    Op::Delete => inner.store.load_set(key, None)?,
                    _ => unreachable!("validated"),
                };
                let delta = match &op {
                    Op::Add(ms) => view.set.add(inner.incarnation, ms),
                    Op::Remove(ms) => view.set.remove(ms),
                    Op::Delete => view.set.delete(),
                    _ => unreachable!("validated"),
                };
                if matches!(op, Op::Add(_)) && view.bytes_after() > MAX_OBJECT_BYTES as u64 {
                    return Err(Error::InvalidArgument(format!(
                        "the set would grow to {} bytes, over the {MAX_OBJECT_BYTES}-byte object limit",
                        view.bytes_after()
                    )));
                }
                let (record, lsn) = self.append_local(key, hlc, Delta::Set(delta), |lsn| {
                    inner.store.write_set(key, &view, lsn)
                })?;
                (record, lsn, None)
            }
            Kind::Map => {
                let mut view = match &op {
                    Op::HSet(pairs) => {
                        let list: Vec<&[u8]> = pairs.iter().map(|(f, _)| f.as_slice()).collect();
                        inner.store.load_map(key, Some(&list))?
                    }
                    Op::HIncr(f, _) => inner.store.load_map(key, Some(&[f.as_slice()]))?,
                    Op::HDel(fs) => {
                        let list: Vec<&[u8]> = fs.iter().map(Vec::as_slice).collect();
                        inner.store.load_map(key, Some(&list))?
                    }
                    Op::Delete => inner.store.load_map(key, None)?,
                    _ => unreachable!("validated"),
                };
                // The CRDT checks the limits against the fields it was
                // given (a lower bound); the header's totals decide below.
                let grows = matches!(op, Op::HSet(_) | Op::HIncr(..));
                let delta = match op {
                    Op::HSet(pairs) => view.map.set(inner.incarnation, hlc, &pairs)?,
                    Op::HIncr(f, by) => view.map.incr(inner.incarnation, &f, by)?.0,
                    Op::HDel(fs) => view.map.remove(&fs),
                    Op::Delete => view.map.delete(),
                    _ => unreachable!("validated"),
                };
                let (count, bytes) = (view.count_after(), view.bytes_after());
                if grows {
                    map::check_totals(count as usize, bytes)?;
                }
                let value = Value::Map {
                    fields: view.loaded_values(),
                    count,
                };
                let (record, lsn) = self.append_local(key, hlc, Delta::Map(delta), |lsn| {
                    inner.store.write_map(key, &view, lsn)
                })?;
                (record, lsn, Some(value))
            }
        })
    }

    /// Numbers, logs and stores one locally made delta. `store(lsn)` writes
    /// the new state. Holds the sequence lock across the append so each
    /// stream's numbers are dense: a failed append leaves no gap.
    fn append_local(
        &self,
        key: &ObjectKey,
        hlc: Hlc,
        delta: Delta,
        store: impl FnOnce(u64) -> Result<()>,
    ) -> Result<(Record, u64)> {
        let inner = &self.inner;
        let group = self.group_of(key);
        let stream = self.stream(group);
        let (record, start, end) = {
            let mut seqs = inner.seqs.lock();
            let next = match seqs.get(&stream) {
                Some(&n) => n,
                None => inner.applied.lock().max_counter(stream) + 1,
            };
            // Dense numbering: the next dot of our own stream is never one
            // this replica already holds (a gap or a reuse would let two
            // deltas share a dot, and peers would drop one of them).
            debug_assert!(
                next > inner.applied.lock().max_counter(stream),
                "local dot {next} of {stream} is already applied"
            );
            let record = Record {
                dot: Dot::new(stream, next),
                hlc,
                key: key.clone(),
                delta,
            };
            let entry = Entry::Delta(record);
            let (start, end) = self.append_entry(&entry)?;
            seqs.insert(stream, next + 1);
            let Entry::Delta(record) = entry else {
                unreachable!()
            };
            (record, start, end)
        };
        inner.streams.lock().insert(stream, group);
        self.finish_append(start, end, Some(Publish::Dot(record.dot)), store)?;
        Ok((record, end))
    }

    /// Appends `entry` to the log and marks it in flight, in one critical
    /// section (see `Inner::in_flight`).
    fn append_entry(&self, entry: &Entry) -> Result<(u64, u64)> {
        let mut in_flight = self.inner.in_flight.lock();
        let (start, end) = self.inner.log.append(entry)?;
        in_flight.insert(start);
        Ok((start, end))
    }

    /// After an append ([`Engine::append_entry`]): write the object store,
    /// then publish what the entry adds to the applied dots (`dots`) and
    /// take it out of flight, together.
    fn finish_append(
        &self,
        start: u64,
        end: u64,
        dots: Option<Publish>,
        store: impl FnOnce(u64) -> Result<()>,
    ) -> Result<()> {
        let inner = &self.inner;
        inner
            .counters
            .log_bytes_written
            .fetch_add(end - start, Ordering::Relaxed);
        let stored = store(start);
        if let Err(e) = stored {
            // The entry is in the log, so replay on the next open applies it;
            // until then this process can't vouch for the object. Keep the
            // entry in flight (no checkpoint may move past it) and refuse
            // further writes.
            tracing::error!(error = %e, "object store write failed after the log append; refusing writes until reopened");
            *inner.store_failed.lock() = Some(format!(
                "an object store write failed after its log append: {e}"
            ));
            return Err(e);
        }
        {
            let mut in_flight = inner.in_flight.lock();
            if let Some(dots) = &dots {
                dots.add_to(&mut inner.applied.lock());
            }
            in_flight.remove(&start);
        }
        if let Some(dots) = dots {
            let durable = inner.durable.clone();
            let record: log::group::Callback = Box::new(move |r| {
                if r.is_ok() {
                    dots.add_to(&mut durable.lock());
                }
            });
            match inner.config.durability {
                // Every write is about to be waited for: ask for the sync now.
                Durability::Sync => inner.log.group.on_durable(end, record),
                // The periodic sync will cover it; asking would turn
                // periodic durability into an fsync per write.
                Durability::Periodic(_) => inner.log.group.on_durable_passive(end, record),
            }
        }
        Ok(())
    }

    /// Merges a delta from a peer. Idempotent: a delta already applied is
    /// reported as [`Merged::Duplicate`] and changes nothing. A delta
    /// stamped too far in the future is refused with [`Error::ClockAhead`]
    /// (retry later). Once applied, the delta is durable at the returned
    /// position.
    pub fn merge(&self, record: &Record, now: PhysicalTime) -> Result<Merged> {
        record.key.validate()?;
        if !record.delta.fits(record.key.kind()) {
            return Err(Error::WrongType(format!(
                "{} delta for a {} key",
                record.delta.what(),
                record.key.kind()
            )));
        }
        self.check_open()?;
        let inner = &self.inner;
        if inner.applied.lock().contains(record.dot) {
            inner.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(Merged::Duplicate);
        }
        if let Err(e) = inner.clock.observe(record.hlc, now) {
            inner
                .counters
                .clock_refusals
                .fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        let _g = self.stripe(&record.key);
        // Re-check under the object's lock: two peers may deliver the same
        // delta at once.
        if inner.applied.lock().contains(record.dot) {
            inner.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(Merged::Duplicate);
        }
        let prepared = prepare_merge(&inner.store, &record.key, &record.delta)?;
        self.check_merged_size(&prepared)?;
        let (start, end) = self.append_entry(&Entry::Delta(record.clone()))?;
        inner
            .streams
            .lock()
            .insert(record.dot.stream, self.group_of(&record.key));
        let changed = prepared.changed();
        self.finish_append(start, end, Some(Publish::Dot(record.dot)), |lsn| {
            prepared.write(&inner.store, &record.key, lsn)
        })?;
        inner.counters.merges.fetch_add(1, Ordering::Relaxed);
        Ok(Merged::Applied { changed, lsn: end })
    }

    /// Joins a full object state (read repair, full-state sync). Logged for
    /// durability, never replicated. Returns whether the object changed and
    /// the position it is durable at (`None` if nothing changed).
    pub fn merge_state(
        &self,
        key: &ObjectKey,
        state: &ObjectState,
        now: PhysicalTime,
    ) -> Result<Option<u64>> {
        key.validate()?;
        if key.kind() != state.kind() {
            return Err(Error::WrongType(format!(
                "{} state for a {} key",
                state.kind(),
                key.kind()
            )));
        }
        self.check_open()?;
        if let ObjectState::Register(r) = state {
            self.inner.clock.observe(r.hlc, now)?;
        }
        let inner = &self.inner;
        let _g = self.stripe(key);
        let delta = state.to_delta();
        if let Delta::Map(m) = &delta
            && let Some(hlc) = m.max_hlc()
        {
            inner.clock.observe(hlc, now)?;
        }
        let prepared = prepare_merge(&inner.store, key, &delta)?;
        if !prepared.changed() {
            return Ok(None);
        }
        self.check_merged_size(&prepared)?;
        let (start, end) = self.append_entry(&Entry::Merge {
            key: key.clone(),
            delta,
        })?;
        self.finish_append(start, end, None, |lsn| {
            prepared.write(&inner.store, key, lsn)
        })?;
        inner.counters.state_merges.fetch_add(1, Ordering::Relaxed);
        Ok(Some(end))
    }

    /// Refuses a merge that would grow a set or map past
    /// [`MAX_MERGED_OBJECT_BYTES`], or a map past
    /// [`map::MAX_FIELDS_PER_MAP`] fields (counted). A merge that leaves
    /// the object no larger than it was is always taken.
    fn check_merged_size(&self, prepared: &PendingMerge) -> Result<()> {
        let (after, before) = match prepared {
            PendingMerge::Set(view, true) => (view.bytes_after(), view.header.bytes),
            PendingMerge::Map(view, true) => {
                let count = view.count_after();
                if count > map::MAX_FIELDS_PER_MAP as u64 && count > view.header.count {
                    self.inner
                        .counters
                        .oversized_merges
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        fields = count,
                        limit = map::MAX_FIELDS_PER_MAP,
                        "merge refused: the map would pass its field limit"
                    );
                    return Err(Error::TooManyFields {
                        fields: count,
                        limit: map::MAX_FIELDS_PER_MAP as u64,
                    });
                }
                (view.bytes_after(), view.header.bytes)
            }
            _ => return Ok(()),
        };
        {
            if after > MAX_MERGED_OBJECT_BYTES as u64 && after > before {
                self.inner
                    .counters
                    .oversized_merges
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    bytes = after,
                    limit = MAX_MERGED_OBJECT_BYTES,
                    "merge refused: the set would pass the merged-object bound"
                );
                return Err(Error::ObjectTooLarge {
                    bytes: after,
                    limit: MAX_MERGED_OBJECT_BYTES as u64,
                });
            }
        }
        Ok(())
    }

    /// After a full-state sync whose objects were joined with
    /// [`Engine::merge_state`]: records that everything in `vector` is now
    /// applied here. Returns the position it is durable at.
    pub fn join_vector(
        &self,
        vector: &VersionVector,
        groups: &[(StreamId, GroupId)],
    ) -> Result<u64> {
        self.check_open()?;
        let inner = &self.inner;
        let (start, end) = self.append_entry(&Entry::Vector(vector.clone()))?;
        inner.streams.lock().extend(groups.iter().copied());
        let ctx = CausalContext::from_vector(vector.clone());
        self.finish_append(start, end, Some(Publish::Vector(ctx)), |_| Ok(()))?;
        Ok(end)
    }

    /// Blocks until everything up to `lsn` is durable. Without a sync
    /// thread ([`EngineConfig::sync_thread`]) it runs the fsync itself.
    pub fn wait_durable(&self, lsn: u64) -> Result<()> {
        let group = &self.inner.log.group;
        if self.inner.config.sync_thread {
            return group.wait(lsn).map_err(Error::Poisoned);
        }
        loop {
            if group.poll(lsn).map_err(Error::Poisoned)? {
                return Ok(());
            }
            // `poll` asked for a sync covering `lsn`: this round runs it.
            let synced = self.sync_round(false)?;
            assert!(synced, "a requested log sync did not run");
        }
    }

    /// Without a sync thread ([`EngineConfig::sync_thread`] off): whether
    /// someone waits for a log fsync that has not run yet (a `Sync` write's
    /// durability callback, [`Engine::on_durable`], [`Engine::request_sync`]).
    /// A simulation schedules its next [`Engine::run_pending_sync`] on it.
    pub fn sync_wanted(&self) -> bool {
        self.inner.log.group.sync_wanted()
    }

    /// Without a sync thread: runs the log fsync the group commit has
    /// pending, on this thread — one round of what the sync thread does:
    /// fdatasync everything written, run the durability callbacks that
    /// covers, release waiters. `Ok(false)`: nobody asked for one.
    /// [`Error::Poisoned`] if the fsync failed (now or before: the engine
    /// then refuses writes until reopened, and every callback has failed).
    ///
    /// # Panics
    /// If the engine runs its own sync thread (two syncers would race).
    pub fn run_pending_sync(&self) -> Result<bool> {
        self.sync_round(false)
    }

    /// Without a sync thread: like [`Engine::run_pending_sync`], but syncs
    /// whatever is written even if nobody asked (the periodic sync of
    /// [`Durability::Periodic`], which the owner times itself).
    pub fn sync_now(&self) -> Result<bool> {
        self.sync_round(true)
    }

    fn sync_round(&self, all: bool) -> Result<bool> {
        let inner = &self.inner;
        assert!(
            !inner.config.sync_thread,
            "the owner runs log syncs only without the engine's sync thread"
        );
        inner
            .log
            .group
            .run_round(all, log_sync(&inner.log, &inner.counters))
            .map_err(Error::Poisoned)
    }

    /// Why the engine refuses writes until it is reopened (a failed fsync,
    /// a failed object-store write or flush, a panic on the sync thread),
    /// or `None` while it is healthy. A node stops on this (a supervisor
    /// restarts it); a simulation crashes the node.
    pub fn poisoned(&self) -> Option<String> {
        if let Some(reason) = self.inner.store_failed.lock().clone() {
            return Some(reason);
        }
        self.inner.log.group.check().err()
    }

    /// Calls `f` once everything up to `lsn` is durable (possibly at once,
    /// on this thread; otherwise on the log's sync thread: keep it short).
    pub fn on_durable(&self, lsn: u64, f: impl FnOnce(Result<()>) + Send + 'static) {
        self.inner
            .log
            .group
            .on_durable(lsn, Box::new(move |r| f(r.map_err(Error::Poisoned))));
    }

    /// Asks for an fsync of everything written so far, without waiting.
    pub fn request_sync(&self) {
        self.inner.log.group.request_all();
    }

    /// Reads an object's value at the system clock's now (an absent or
    /// expired object reads as empty). Nodes use [`Engine::read_at`] with
    /// their own clock.
    pub fn read(&self, key: &ObjectKey) -> Result<Value> {
        self.read_at(key, PhysicalTime::system(0))
    }

    /// Reads an object's value as seen at `now` (an absent or expired
    /// object reads as empty): a register written before the cutoff of
    /// its expiry is hidden; a counter, set or map whose expiry has passed
    /// here and not yet fired reads as empty.
    pub fn read_at(&self, key: &ObjectKey, now: PhysicalTime) -> Result<Value> {
        let value = self.read_stored(key)?;
        let x = self.inner.store.read_expiry(key)?;
        Ok(visible_value(key.kind(), value, x.as_ref(), now.unix_ms()))
    }

    /// The value a joined quorum state shows at `now` under a joined
    /// expiry (`expiry`, this replica's own included) — what a quorum or
    /// `all` read replies. A counter, set or map is hidden while the
    /// joined cutoff is past what this replica fired.
    pub fn visible(
        &self,
        key: &ObjectKey,
        state: Option<&ObjectState>,
        expiry: Option<&Expiry>,
        now: PhysicalTime,
    ) -> Result<Value> {
        let value = match state {
            Some(s) => s.value(),
            None => crate::crdt::empty_value(key.kind()),
        };
        let fired_ms = self.inner.store.read_expiry(key)?.map_or(0, |x| x.fired_ms);
        let x = expiry.map(|e| StoredExpiry {
            expiry: e.clone(),
            fired_ms,
        });
        Ok(visible_value(key.kind(), value, x.as_ref(), now.unix_ms()))
    }

    /// The next deadline (Unix ms) of `key` after `now`, if it has one
    /// (`TTL`). Says nothing of whether the object exists.
    pub fn ttl(&self, key: &ObjectKey, now: PhysicalTime) -> Result<Option<u64>> {
        Ok(self
            .inner
            .store
            .read_expiry(key)?
            .and_then(|x| x.expiry.next_deadline_ms(now.unix_ms())))
    }

    /// `key`'s replicated expiry state, if it ever had one (quorum reads,
    /// read repair).
    pub fn expiry(&self, key: &ObjectKey) -> Result<Option<Expiry>> {
        let _g = self.stripe(key);
        Ok(self.inner.store.read_expiry(key)?.map(|x| x.expiry))
    }

    /// Joins an expiry state (read repair, full-state sync). Logged for
    /// durability, never replicated. The log position to wait for when it
    /// changed anything.
    pub fn merge_expiry(
        &self,
        key: &ObjectKey,
        expiry: &Expiry,
        _now: PhysicalTime,
    ) -> Result<Option<u64>> {
        key.validate()?;
        self.check_open()?;
        let inner = &self.inner;
        let _g = self.stripe(key);
        let delta = Delta::Expiry(expiry.clone());
        let prepared = prepare_merge(&inner.store, key, &delta)?;
        if !prepared.changed() {
            return Ok(None);
        }
        let (start, end) = self.append_entry(&Entry::Merge {
            key: key.clone(),
            delta,
        })?;
        self.finish_append(start, end, None, |lsn| {
            prepared.write(&inner.store, key, lsn)
        })?;
        inner.counters.state_merges.fetch_add(1, Ordering::Relaxed);
        Ok(Some(end))
    }

    /// Visits every expiry state of the groups `wants` admits (a
    /// full-state sync sends them beside the objects), stopping when `f`
    /// returns `false`.
    pub fn for_each_expiry(
        &self,
        wants: &dyn Fn(GroupId) -> bool,
        f: impl FnMut(ObjectKey, Expiry) -> Result<bool>,
    ) -> Result<()> {
        let group_of = self.inner.config.group_of.clone();
        self.inner.store.for_each_expiry(&|k| wants(group_of(k)), f)
    }

    /// One pass of expired-key reclamation: fires the expiry of at most
    /// `max_keys` objects whose deadline has passed at `now` (removing
    /// their content, which frees its storage; the small expiry entry
    /// stays as the tombstone that keeps late copies from coming back).
    /// Returns the records to replicate, in log order. A pass that visited
    /// `max_keys` index entries may have left more: call again.
    pub fn expire_due(&self, now: PhysicalTime, max_keys: usize) -> Result<ExpiryPass> {
        self.check_open()?;
        let inner = &self.inner;
        let now_ms = now.unix_ms();
        let due = inner.store.due(now_ms, max_keys)?;
        let mut pass = ExpiryPass {
            visited: due.len(),
            ..ExpiryPass::default()
        };
        for (key, raw) in due {
            let _g = self.stripe(&key);
            if let Some(mut stored) = inner.store.read_expiry(&key)?
                && stored.expiry.cutoff_ms(now_ms) > stored.fired_ms
            {
                let mut out = Appended::default();
                self.fire_locked(&key, &mut stored, now, &mut out)?;
                pass.records.extend(out.before);
                if let Some((r, lsn)) = out.last {
                    pass.records.push(r);
                    pass.lsn = lsn;
                }
                pass.fired += 1;
            }
            inner.store.drop_due(&raw)?;
        }
        Ok(pass)
    }

    fn read_stored(&self, key: &ObjectKey) -> Result<Value> {
        let store = &self.inner.store;
        Ok(match key.kind() {
            Kind::Counter => Value::Counter(store.read_counter(key)?.map_or(0, |c| c.value())),
            Kind::Register => Value::Register(store.read_register(key)?.map(|r| RegisterValue {
                value: r.value,
                hlc: r.hlc,
            })),
            Kind::Set => Value::Set(store.read_set_members(key)?),
            Kind::Map => {
                let _g = self.stripe(key);
                let map = store.load_map(key, None)?.map;
                Value::Map {
                    count: map.len() as u64,
                    fields: map.get_all(),
                }
            }
        })
    }

    /// What `key` holds under each type, read cheaply from this replica:
    /// the register's value, the counter's value, the set's member count and
    /// which of `members` the set holds. Costs one read per type plus one
    /// per member asked about, whatever the set's size (a set read would
    /// load every member).
    pub fn inspect(&self, key: &[u8], members: &[Vec<u8>]) -> Result<Inspection> {
        self.inspect_fields(key, members, &[])
    }

    /// [`Engine::inspect_fields`] as seen at `now`: what an expiry hides
    /// (see [`Engine::read_at`]) reads as absent.
    pub fn inspect_fields_at(
        &self,
        key: &[u8],
        members: &[Vec<u8>],
        fields: &[Vec<u8>],
        now: PhysicalTime,
    ) -> Result<Inspection> {
        let mut seen = self.inspect_fields(key, members, fields)?;
        let store = &self.inner.store;
        let now_ms = now.unix_ms();
        let hidden = |kind: Kind| -> Result<bool> {
            let k = ObjectKey::new(kind, key.to_vec())?;
            Ok(store
                .read_expiry(&k)?
                .is_some_and(|x| x.expiry.cutoff_ms(now_ms) > x.fired_ms))
        };
        if seen.register.is_some() {
            let k = ObjectKey::new(Kind::Register, key.to_vec())?;
            if let Some(x) = store.read_expiry(&k)?
                && let Some(r) = store.read_register(&k)?
                && x.expiry.expired(r.hlc, now_ms)
            {
                seen.register = None;
            }
        }
        if seen.counter != 0 && hidden(Kind::Counter)? {
            seen.counter = 0;
        }
        if seen.set_count != 0 && hidden(Kind::Set)? {
            seen.set_count = 0;
            seen.members_present.iter_mut().for_each(|p| *p = false);
        }
        if seen.map_count != 0 && hidden(Kind::Map)? {
            seen.map_count = 0;
            seen.map_values.iter_mut().for_each(|v| *v = None);
        }
        Ok(seen)
    }

    /// [`Engine::inspect`], and also the map's field count and the values
    /// of `fields` in it: one header read plus one read per field asked
    /// about, whatever the map's size.
    pub fn inspect_fields(
        &self,
        key: &[u8],
        members: &[Vec<u8>],
        fields: &[Vec<u8>],
    ) -> Result<Inspection> {
        let store = &self.inner.store;
        let register_key = ObjectKey::new(Kind::Register, key.to_vec())?;
        let counter_key = ObjectKey::new(Kind::Counter, key.to_vec())?;
        let set_key = ObjectKey::new(Kind::Set, key.to_vec())?;
        let register = {
            let _g = self.stripe(&register_key);
            store.read_register(&register_key)?.and_then(|r| r.value)
        };
        let counter = {
            let _g = self.stripe(&counter_key);
            store.read_counter(&counter_key)?.map_or(0, |c| c.value())
        };
        let (set_count, members_present) = {
            let _g = self.stripe(&set_key);
            let asked: Vec<&[u8]> = members.iter().map(Vec::as_slice).collect();
            let view = store.load_set(&set_key, Some(&asked))?;
            let present = members.iter().map(|m| view.set.contains(m)).collect();
            (view.header.count, present)
        };
        let map_key = ObjectKey::new(Kind::Map, key.to_vec())?;
        let (map_count, map_values) = {
            let _g = self.stripe(&map_key);
            let asked: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
            let view = store.load_map(&map_key, Some(&asked))?;
            let values = fields.iter().map(|f| view.map.get(f)).collect();
            (view.header.count, values)
        };
        Ok(Inspection {
            register,
            counter,
            set_count,
            members_present,
            map_count,
            map_values,
        })
    }

    /// One page of a scan of the objects this replica stores, in store
    /// order (by kind, then key length, then key bytes), from the opaque
    /// position `from` (empty: the start): the present objects whose key
    /// starts with `prefix` among at most `steps` visited (objects or seeks
    /// over keys without the prefix; at least one), and where the next page
    /// starts (`None`: the scan is complete).
    ///
    /// Positions are places in that fixed order, not offsets: an object
    /// present from the first page to the last is in exactly one page,
    /// whatever is added or removed meanwhile (the Redis `SCAN` guarantee).
    /// Absent objects (deleted: their context alone, a counter at 0) are
    /// not listed. One user key present under two kinds is listed once per
    /// kind. A page's cost is bounded by `steps` point reads and seeks.
    pub fn scan(&self, from: &[u8], prefix: &[u8], steps: usize) -> Result<KeyPage> {
        let store = &self.inner.store;
        let mut position = from.to_vec();
        let mut objects = Vec::new();
        for _ in 0..steps.max(1) {
            match store.scan_step(&position, prefix)? {
                ScanStep::End => {
                    return Ok(KeyPage {
                        objects,
                        next: None,
                    });
                }
                ScanStep::Seek(to) => position = to,
                ScanStep::Object {
                    object,
                    present,
                    next,
                } => {
                    if present {
                        objects.push(object);
                    }
                    position = next;
                }
            }
        }
        Ok(KeyPage {
            objects,
            next: Some(position),
        })
    }

    /// A page of a set's members on this replica, in ascending byte order,
    /// after `after` (from the first with `None`): at most `max_members`,
    /// and no more than `max_bytes` of members unless the first alone is
    /// larger. A page costs what it lists, whatever the set's size.
    pub fn set_page(
        &self,
        key: &ObjectKey,
        after: Option<&[u8]>,
        max_members: usize,
        max_bytes: usize,
    ) -> Result<SetPage> {
        if key.kind() != Kind::Set {
            return Err(Error::WrongType(format!(
                "a page of members of a {}",
                key.kind()
            )));
        }
        let (members, more) =
            self.inner
                .store
                .set_members_after(key, after, max_members, max_bytes)?;
        let next = if more { members.last().cloned() } else { None };
        Ok(SetPage { members, next })
    }

    /// An object's full CRDT state (for joins across replicas), consistent
    /// with respect to concurrent writes. `None` if it is absent or has
    /// never been changed by any operation.
    pub fn state(&self, key: &ObjectKey) -> Result<Option<ObjectState>> {
        let _g = self.stripe(key);
        Ok(self.inner.store.read_state(key)?.filter(|s| !s.is_empty()))
    }

    /// Dots applied here (including not-yet-durable ones).
    pub fn applied(&self) -> CausalContext {
        self.inner.applied.lock().clone()
    }

    /// Dots applied here durably: what this node may acknowledge.
    pub fn durable(&self) -> CausalContext {
        let durable = self.inner.durable.lock().clone();
        // durable ⊆ applied: a dot is published as durable only after it was
        // applied (the fsync callback is registered after the apply).
        #[cfg(debug_assertions)]
        {
            let applied = self.applied();
            debug_assert!(
                durable.cloud().all(|d| applied.contains(d))
                    && applied.vector().dominates(durable.vector()),
                "durable dots not applied"
            );
        }
        durable
    }

    /// Deltas of the groups `wants` admits that `have` lacks, in batches.
    /// `Ok(None)`: some were already truncated; the peer needs a full sync.
    pub fn deltas_since(
        &self,
        have: &CausalContext,
        wants: &dyn Fn(GroupId) -> bool,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<Since>> {
        self.inner
            .log
            .deltas_since(have, wants, max_records, max_bytes)
    }

    /// Visits every object of the groups `wants` admits (a full-state sync),
    /// stopping when `f` returns `false`. Returns the applied vector, limited
    /// to those groups, taken before the visit: every delta it covers is
    /// reflected in the visited states.
    pub fn full_state(
        &self,
        wants: &dyn Fn(GroupId) -> bool,
        f: impl FnMut(ObjectKey, ObjectState) -> Result<bool>,
    ) -> Result<(VersionVector, Vec<(StreamId, GroupId)>)> {
        let applied = self.applied();
        let streams = self.inner.streams.lock().clone();
        let mut vector = VersionVector::new();
        let mut groups = Vec::new();
        for (stream, counter) in applied.vector().iter() {
            if let Some(&g) = streams.get(&stream)
                && wants(g)
            {
                vector.set(stream, counter);
                groups.push((stream, g));
            }
        }
        let group_of = self.inner.config.group_of.clone();
        self.inner
            .store
            .for_each_object(&|k| wants(group_of(k)), f)?;
        Ok((vector, groups))
    }

    /// Makes the object store durable up to a log position and records it,
    /// so recovery replays only what follows. Returns that position.
    pub fn checkpoint(&self) -> Result<u64> {
        let inner = &self.inner;
        let _cp = inner.checkpoint_lock.lock();
        let truncated = inner.log.truncated();
        self.checkpoint_locked(truncated)
    }

    fn checkpoint_locked(&self, truncated: BTreeMap<GroupId, VersionVector>) -> Result<u64> {
        let inner = &self.inner;
        // One consistent cut: every entry below `lsn` is in the object store
        // and its dots are in `applied`; every dot in `applied` has its entry
        // below `end`.
        let (end, lsn, applied) = {
            let in_flight = inner.in_flight.lock();
            let end = inner.log.end();
            let lsn = in_flight.first().copied().unwrap_or(end).min(end);
            (end, lsn, self.applied())
        };

        // Streams are recorded before their dots are published.
        let streams = inner.streams.lock().clone();
        // A timestamp no earlier than any issued or observed so far (a
        // physical time of 0 just steps the logical clock).
        let clock_high = inner.clock.now(PhysicalTime(0));
        // Make every entry of `applied` durable.
        self.wait_durable(end)?;
        if let Err(e) = inner.store.flush_durable() {
            // sled's files may have lost pages a later flush would not
            // rewrite: no later checkpoint could vouch for the store.
            let reason = format!("flushing the object store failed: {e}");
            tracing::error!(error = %e, "object store flush failed; refusing further writes");
            inner.log.group.poison(reason.clone());
            return Err(Error::Poisoned(reason));
        }
        write_small_file(
            &*inner.vfs,
            &inner.dir,
            CHECKPOINT_FILE,
            &CheckpointFile {
                lsn,
                applied,
                truncated,
                streams,
                clock_high,
            },
            Some(&inner.log.group),
        )?;
        inner.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(lsn)
    }

    /// Checkpoints, then deletes log segments whose deltas every replica has:
    /// `stable(group)` is the meet of the applied vectors of the group's
    /// replicas. Returns the bytes reclaimed.
    pub fn truncate(&self, stable: &dyn Fn(GroupId) -> VersionVector) -> Result<u64> {
        let inner = &self.inner;
        let _cp = inner.checkpoint_lock.lock();
        let lsn = self.checkpoint_locked(inner.log.truncated())?;
        let (count, truncated) = inner.log.plan_truncation(lsn, stable);
        if count == 0 {
            return Ok(0);
        }
        // Persist the new truncation bounds before deleting anything, so a
        // crash in between errs towards full syncs, never towards silently
        // missing deltas.
        self.checkpoint_locked(truncated.clone())?;
        inner.log.drop_front(count, truncated)
    }

    /// Per group, the deltas truncation deleted.
    pub fn truncated(&self) -> BTreeMap<GroupId, VersionVector> {
        self.inner.log.truncated()
    }

    pub fn metrics(&self) -> Metrics {
        let c = &self.inner.counters;
        Metrics {
            writes: c.writes.load(Ordering::Relaxed),
            merges: c.merges.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            clock_refusals: c.clock_refusals.load(Ordering::Relaxed),
            state_merges: c.state_merges.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            log_bytes_written: c.log_bytes_written.load(Ordering::Relaxed),
            log_retained_bytes: self.inner.log.retained_bytes(),
            log_retained_deltas: self.inner.log.retained_deltas() as u64,
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            oversized_merges: c.oversized_merges.load(Ordering::Relaxed),
            expiry_fired: c.expiry_fired.load(Ordering::Relaxed),
            expiry_backlog: self
                .inner
                .store
                .due_count(
                    PhysicalTime::system(0).unix_ms(),
                    EXPIRY_BACKLOG_COUNT_LIMIT,
                )
                .unwrap_or(0),
        }
    }

    /// Stops accepting writes, checkpoints, syncs, and marks the shutdown
    /// clean (the next open keeps this incarnation).
    ///
    /// A write that passed its checks before `close` but reaches the log
    /// after it is refused ([`Error::Shutdown`]): the log is sealed first,
    /// so the final sync covers every record ever appended, and the clean
    /// marker (which lets the next open reuse this incarnation's sequence
    /// numbers) is written only if that sync succeeded.
    pub fn close(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        inner.log.seal();
        self.checkpoint()?;
        if !inner.config.sync_thread {
            // What the sync thread does when it is shut down: sync
            // everything written.
            self.sync_now()?;
        }
        inner.log.group.shutdown();
        if let Some(h) = inner.syncer.lock().take() {
            let _ = h.join();
        }
        if !inner.log.group.all_synced() {
            let reason = inner
                .log
                .group
                .check()
                .err()
                .unwrap_or_else(|| "the final log sync did not cover the log".into());
            return Err(Error::Poisoned(reason));
        }
        write_small_file(
            &*inner.vfs,
            &inner.dir,
            CLEAN_FILE,
            &CleanFile {
                log_start: inner.log.start(),
                log_end: inner.log.end(),
            },
            Some(&inner.log.group),
        )
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Position of the end of the log.
    pub fn log_end(&self) -> u64 {
        self.inner.log.end()
    }

    /// Position of the first retained log entry.
    pub fn log_start(&self) -> u64 {
        self.inner.log.start()
    }
}

/// A merge computed against the current state, not yet written.
enum PendingMerge {
    Counter(Counter, bool),
    Register(Register, bool),
    Set(SetView, bool),
    Map(MapView, bool),
    /// The joined expiry and the deadlines to index for the worker.
    Expiry(StoredExpiry, Vec<u64>, bool),
}

/// The records one operation appended, in log order: all but the last in
/// `before`.
#[derive(Default)]
struct Appended {
    before: Vec<Record>,
    last: Option<(Record, u64)>,
}

impl Appended {
    fn push(&mut self, r: (Record, u64)) {
        if let Some((prev, _)) = self.last.replace(r) {
            self.before.push(prev);
        }
    }
}

/// What an expiry removes of an object's content: the new state and the
/// delta to log ([`Engine::removal`]).
enum Removal {
    Counter(Counter, Counter),
    Register(Register),
    Set(SetView, crate::crdt::SetDelta),
    Map(MapView, crate::crdt::MapDelta),
}

impl PendingMerge {
    fn changed(&self) -> bool {
        match self {
            PendingMerge::Counter(_, c)
            | PendingMerge::Register(_, c)
            | PendingMerge::Set(_, c)
            | PendingMerge::Map(_, c)
            | PendingMerge::Expiry(_, _, c) => *c,
        }
    }

    fn write(&self, store: &Store, key: &ObjectKey, lsn: u64) -> Result<()> {
        if !self.changed() {
            return Ok(());
        }
        match self {
            PendingMerge::Counter(c, _) => store.write_counter(key, c, lsn),
            PendingMerge::Register(r, _) => store.write_register(key, r, lsn),
            PendingMerge::Set(v, _) => store.write_set(key, v, lsn),
            PendingMerge::Map(v, _) => store.write_map(key, v, lsn),
            PendingMerge::Expiry(x, due, _) => store.write_expiry(key, x, due, lsn),
        }
    }
}

fn prepare_merge(store: &Store, key: &ObjectKey, delta: &Delta) -> Result<PendingMerge> {
    Ok(match delta {
        Delta::Counter(d) => {
            let mut c = store.read_counter(key)?.unwrap_or_default();
            let changed = c.merge(d);
            PendingMerge::Counter(c, changed)
        }
        Delta::Register(d) => {
            let mut r = store.read_register(key)?;
            let changed = register::merge_into(&mut r, d);
            PendingMerge::Register(r.expect("merged"), changed)
        }
        Delta::Set(d) => {
            let mut view = match d.scope {
                crate::crdt::Scope::Listed => {
                    let list: Vec<&[u8]> = d.members().collect();
                    store.load_set(key, Some(&list))?
                }
                crate::crdt::Scope::Full => store.load_set(key, None)?,
            };
            let changed = view.set.merge(d);
            PendingMerge::Set(view, changed)
        }
        Delta::Map(d) => {
            let mut view = match d.scope {
                crate::crdt::Scope::Listed => {
                    let list: Vec<&[u8]> = d.field_names().collect();
                    store.load_map(key, Some(&list))?
                }
                crate::crdt::Scope::Full => store.load_map(key, None)?,
            };
            let changed = view.map.merge(d);
            PendingMerge::Map(view, changed)
        }
        Delta::Expiry(d) => {
            d.check()?;
            let mut x = store.read_expiry(key)?.unwrap_or_default();
            let known: Vec<u64> = x.expiry.deadlines().values().copied().collect();
            let changed = x.expiry.merge(d);
            x.expiry.check()?;
            // The worker visits every new deadline, and at once a floor
            // raised past what this replica fired (it must remove what it
            // holds that the firing replica had not seen).
            let mut due: Vec<u64> = x
                .expiry
                .deadlines()
                .values()
                .copied()
                .filter(|d| !known.contains(d))
                .collect();
            if x.expiry.floor_ms() > x.fired_ms {
                due.push(x.expiry.floor_ms());
            }
            PendingMerge::Expiry(x, due, changed)
        }
    })
}

/// What a log entry adds to the applied (and, once durable, the durable) dots.
enum Publish {
    Dot(Dot),
    Vector(CausalContext),
}

impl Publish {
    fn add_to(&self, cc: &mut CausalContext) {
        match self {
            Publish::Dot(d) => {
                cc.insert(*d);
            }
            Publish::Vector(v) => {
                cc.join(v);
            }
        }
    }
}

/// Joins a delta into the stored object (recovery replay).
fn merge_into_store(store: &Store, key: &ObjectKey, delta: &Delta, lsn: u64) -> Result<()> {
    if !delta.fits(key.kind()) {
        return Err(Error::corruption(
            "<log>",
            format!("{} delta for {key:?}", delta.what()),
        ));
    }
    prepare_merge(store, key, delta)?.write(store, key, lsn)
}

/// Overwrites the stored object with `state` (it already contains it).
fn write_state(store: &Store, key: &ObjectKey, state: &ObjectState, lsn: u64) -> Result<()> {
    match state {
        ObjectState::Counter(c) => store.write_counter(key, c, lsn),
        ObjectState::Register(r) => store.write_register(key, r, lsn),
        ObjectState::Set(_) => {
            let view = store.load_set(key, None)?;
            store.write_set(key, &view, lsn)
        }
        ObjectState::Map(_) => {
            let view = store.load_map(key, None)?;
            store.write_map(key, &view, lsn)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::{Keep, SimDisk};

    fn now() -> PhysicalTime {
        PhysicalTime::system(0)
    }

    /// A peer's delta that would take a map past `MAX_FIELDS_PER_MAP` is
    /// refused (counted, nothing stored); one that does not add a field is
    /// taken. The count is faked in the header: a million real fields
    /// would make the test slow, and the check reads only the header.
    #[test]
    fn merges_hold_maps_to_the_field_limit() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = Engine::open(EngineConfig::new(da.path()), now()).unwrap();
        let b = Engine::open(EngineConfig::new(db.path()), now()).unwrap();
        let k = ObjectKey::new(Kind::Map, b"h".to_vec()).unwrap();
        let first = a
            .apply(&k, Op::HSet(vec![(b"f".to_vec(), b"1".to_vec())]), now())
            .unwrap();
        b.merge(&first.record, now()).unwrap();
        {
            let store = &b.inner.store;
            let mut view = store.load_map(&k, Some(&[])).unwrap();
            view.header.count = map::MAX_FIELDS_PER_MAP as u64;
            store.write_map(&k, &view, 0).unwrap();
        }
        let grow = a
            .apply(&k, Op::HSet(vec![(b"g".to_vec(), b"2".to_vec())]), now())
            .unwrap();
        assert!(matches!(
            b.merge(&grow.record, now()),
            Err(Error::TooManyFields { .. })
        ));
        assert_eq!(b.metrics().oversized_merges, 1);
        assert_eq!(
            b.inspect_fields(b"h", &[], &[b"g".to_vec()])
                .unwrap()
                .map_values,
            vec![None]
        );
        // Same field count after it: taken.
        let overwrite = a
            .apply(&k, Op::HSet(vec![(b"f".to_vec(), b"3".to_vec())]), now())
            .unwrap();
        assert!(matches!(
            b.merge(&overwrite.record, now()),
            Ok(Merged::Applied { .. })
        ));
    }

    /// Without a sync thread the owner decides when the log is fsynced: a
    /// `Sync` write's durability callback waits for `run_pending_sync`, a
    /// power cut before it loses the write, `wait_durable` and `close`
    /// sync inline, a failed fsync poisons (reported by `poisoned`), and
    /// incarnations come from the seeded source.
    #[test]
    fn the_owner_drives_syncs_and_incarnations_without_a_sync_thread() {
        use crate::vfs::{FailAction, FailOp, Failpoint, sim::EIO};
        use std::sync::atomic::AtomicU64;
        let host = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(host.path());
        let draws = Arc::new(AtomicU64::new(0));
        let config = || {
            let mut c = EngineConfig::new("/node");
            c.vfs = disk.mount();
            c.cache_bytes = 16 << 20;
            c.sync_thread = false;
            let draws = draws.clone();
            // 0 first: skipped, never an id.
            c.incarnations = Some(Arc::new(move || draws.fetch_add(1, Ordering::SeqCst) * 7));
            c
        };
        let e = Engine::open(config(), now()).unwrap();
        assert_eq!(e.incarnation(), Incarnation(7));
        assert!(e.inner.syncer.lock().is_none(), "no sync thread");
        let k = ObjectKey::new(Kind::Counter, b"k".to_vec()).unwrap();
        let a = e.apply(&k, Op::Incr(1), now()).unwrap();
        let told = Arc::new(Mutex::new(None));
        let t = told.clone();
        e.on_durable(a.lsn, move |r| *t.lock() = Some(r.is_ok()));
        assert!(e.sync_wanted());
        assert_eq!(*told.lock(), None, "durable before any fsync ran");
        assert!(!e.durable().contains(a.record.dot));
        assert!(e.run_pending_sync().unwrap());
        assert_eq!(*told.lock(), Some(true));
        assert!(e.durable().contains(a.record.dot));
        assert!(!e.sync_wanted());
        assert!(!e.run_pending_sync().unwrap(), "nothing asked for");
        // Unsynced and unwaited: lost at a power cut (a new incarnation).
        let lost = e.apply(&k, Op::Incr(10), now()).unwrap();
        drop(e);
        disk.power_cut(Keep::Synced);
        let e = Engine::open(config(), now()).unwrap();
        assert_eq!(
            e.incarnation(),
            Incarnation(14),
            "unclean: the next seeded id"
        );
        assert!(!e.applied().contains(lost.record.dot));
        // wait_durable syncs on the caller's thread.
        let b = e.apply(&k, Op::Incr(100), now()).unwrap();
        e.wait_durable(b.lsn).unwrap();
        assert!(e.durable().contains(b.record.dot));
        // A failed fsync poisons; the callback learns it.
        let c = e.apply(&k, Op::Incr(1000), now()).unwrap();
        let t = told.clone();
        e.on_durable(c.lsn, move |r| *t.lock() = Some(r.is_ok()));
        disk.add_failpoint(Failpoint::new(FailOp::Sync, ".seg", FailAction::Errno(EIO)));
        assert!(matches!(e.run_pending_sync(), Err(Error::Poisoned(_))));
        assert_eq!(*told.lock(), Some(false));
        assert!(e.poisoned().is_some());
        assert!(matches!(
            e.apply(&k, Op::Incr(1), now()),
            Err(Error::Poisoned(_))
        ));
        drop(e);
        disk.power_cut(Keep::Synced);
        let e = Engine::open(config(), now()).unwrap();
        assert!(e.poisoned().is_none());
        assert!(e.applied().contains(b.record.dot));
        // A clean close syncs inline and keeps the incarnation.
        let id = e.incarnation();
        e.apply(&k, Op::Incr(1), now()).unwrap();
        e.close().unwrap();
        drop(e);
        disk.power_cut(Keep::Synced);
        let e = Engine::open(config(), now()).unwrap();
        assert_eq!(e.incarnation(), id);
        // sled kept the unsynced increments' effects (10, 1000): the
        // opens after the cuts re-issued them under new dots.
        assert_eq!(e.read(&k).unwrap(), Value::Counter(1112));
    }

    /// C11: a write that passed `apply`'s checks before `close` (here: one
    /// stalled on its object's lock) reaches the log after close's final
    /// sync. Appended then, it would sit unsynced behind a clean-shutdown
    /// marker: a power cut loses it, the next open keeps the incarnation
    /// (clean), and the write's sequence number is handed out again for a
    /// different delta, which peers holding the first one drop as a
    /// duplicate. Close seals the log first, so the late append is refused.
    #[test]
    fn an_append_racing_close_is_refused_not_lost() {
        let host = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(host.path());
        let config = || {
            let mut c = EngineConfig::new("/node");
            c.vfs = disk.mount();
            c.cache_bytes = 16 << 20;
            c
        };
        let e = Engine::open(config(), now()).unwrap();
        let k = ObjectKey::new(Kind::Counter, b"k".to_vec()).unwrap();
        let a = e.apply(&k, Op::Incr(1), now()).unwrap();
        e.wait_durable(a.lsn).unwrap();
        e.close().unwrap();
        // What `apply` does after its checks, run after `close` returned.
        let mut state = e.inner.store.read_counter(&k).unwrap().unwrap_or_default();
        let delta = state.incr(e.inner.incarnation, 10).unwrap();
        let late = e.append_local(&k, e.inner.clock.now(now()), Delta::Counter(delta), |lsn| {
            e.inner.store.write_counter(&k, &state, lsn)
        });
        let node = e.incarnation();
        drop(e);
        disk.power_cut(Keep::Synced);
        let e = Engine::open(config(), now()).unwrap();
        match late {
            Err(Error::Shutdown) => {}
            Ok((record, _)) => {
                // Not refused: then it must have survived, or its dot is
                // free to be reused under the same incarnation.
                assert!(
                    e.incarnation() != node || e.applied().contains(record.dot),
                    "a write appended after close was lost under a kept incarnation \
                     ({:?}): its dot will be reused",
                    record.dot
                );
            }
            Err(other) => panic!("expected Shutdown, got {other:?}"),
        }
        assert_eq!(e.incarnation(), node, "the close was clean");
        let next = e.apply(&k, Op::Incr(100), now()).unwrap();
        assert_eq!(next.record.dot.counter, a.record.dot.counter + 1);
    }
}
