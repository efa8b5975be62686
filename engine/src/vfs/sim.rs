//! A simulated disk that loses power.
//!
//! [`SimDisk`] holds files and directories in memory and gives engines a
//! [`Vfs`] view of them ([`SimDisk::mount`]). It is shared: clone it, hand
//! one mount to an engine, and keep a clone to cut the power, arm
//! failpoints and look at the bytes.
//!
//! # The power-loss model
//! Each file has live contents (what reads see) and durable contents (what
//! survives a power cut): a successful `sync_data`/`sync_all` makes the
//! durable contents equal to the live ones. Each directory's names
//! likewise: creating, renaming and removing a file change the live names,
//! and `sync_dir` of its directory makes them durable. Directories made by
//! `create_dir_all` are durable at once (the [`Vfs`] contract: it fsyncs
//! their parents).
//!
//! [`SimDisk::power_cut`] turns the machine off: every file goes back to
//! its durable contents and every directory to its durable names, per
//! [`Keep`] (nothing unsynced kept, everything kept — what a process crash
//! leaves — or a seeded random choice: a random prefix of each file's
//! unsynced appends, each directory's unsynced changes kept or not). Every
//! mount and open file from before the cut fails from then on with `EIO`,
//! so an engine that was running cannot touch the disk after its power
//! went out; mount again to "reboot".
//!
//! A failed fsync ([`FailAction::Errno`] on [`FailOp::Sync`]) models Linux
//! writeback errors: the dirty pages are dropped (marked clean without
//! being written), so a later successful fsync of the same file does not
//! write them: those bytes read back as zeros after a power cut, while
//! reads before the cut still see them.
//!
//! # What it does not cover
//! * sled, the object store, does its own I/O with `std::fs`:
//!   [`Vfs::host_dir`] places its directory under the host directory given
//!   to [`SimDisk::new`], and a power cut does not touch it. A test can
//!   copy that directory after a checkpoint and put it back after a cut to
//!   model sled reverting to its last flush (the engine's power-loss test
//!   does, in one of its modes); leaving it alone models sled having
//!   written everything. Both must recover, since the log, not sled, is
//!   the durability point.
//! * Torn sectors inside synced data, reordering of writes within a file,
//!   and metadata other than names and sizes are not modelled.
//! * Time: an fsync delay ([`SimDisk::set_sync_delay`]) sleeps on the
//!   calling thread. The deterministic simulation (`replication/tests/dsim`)
//!   leaves it at zero and times fsyncs itself, running each group-commit
//!   round as an event (`EngineConfig::sync_thread` off).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{Vfs, VfsFile, VfsLock};

/// Linux `EIO`: what every operation returns after a power cut, and a
/// failed fsync's usual error.
pub const EIO: i32 = 5;
/// Linux `ENOSPC`: a full disk.
pub const ENOSPC: i32 = 28;

/// Which operations a failpoint matches.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FailOp {
    /// [`VfsFile::append`].
    Append,
    /// [`VfsFile::set_len`].
    SetLen,
    /// [`VfsFile::sync_data`] and [`VfsFile::sync_all`].
    Sync,
    /// [`Vfs::sync_dir`] (matched against the directory's path).
    SyncDir,
    /// [`Vfs::open`] creating a file that did not exist.
    Create,
    /// [`Vfs::rename`] (matched against either path).
    Rename,
    /// [`Vfs::remove_file`].
    Remove,
}

/// What a triggered failpoint does instead of the operation.
#[derive(Clone, Debug)]
pub enum FailAction {
    /// Fail with this OS error number ([`EIO`], [`ENOSPC`], ...), changing
    /// nothing (a failed fsync also drops the dirty pages, see the module
    /// docs).
    Errno(i32),
    /// Cut the power just before the operation (it fails with `EIO`).
    PowerCut(Keep),
    /// Panic on the calling thread.
    Panic,
}

/// What of the unsynced state a power cut keeps.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Keep {
    /// Nothing: every file and directory as of its last sync.
    Synced,
    /// Everything written so far (what a process crash leaves).
    All,
    /// Per file a random prefix of its unsynced appends and per directory
    /// all or none of its unsynced changes, drawn from this seed.
    Random(u64),
}

/// Fails the `skip`+1-th operation of kind `op` on a path containing
/// `path_contains`, and the following ones up to `times` in all.
#[derive(Clone, Debug)]
pub struct Failpoint {
    pub op: FailOp,
    pub path_contains: String,
    /// Matching operations let through before the first failure.
    pub skip: u64,
    /// Failures before the failpoint disarms itself (`None`: never).
    pub times: Option<u64>,
    pub action: FailAction,
}

impl Failpoint {
    /// Fails the next matching operation, once.
    pub fn new(op: FailOp, path_contains: impl Into<String>, action: FailAction) -> Failpoint {
        Failpoint {
            op,
            path_contains: path_contains.into(),
            skip: 0,
            times: Some(1),
            action,
        }
    }

    /// Lets `skip` matching operations through first.
    pub fn after(mut self, skip: u64) -> Failpoint {
        self.skip = skip;
        self
    }

    /// Fails every matching operation from then on.
    pub fn always(mut self) -> Failpoint {
        self.times = None;
        self
    }
}

/// One file's bytes.
#[derive(Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Live was cut below the durable length since the last sync, so the
    /// durable bytes are no longer a prefix of the live ones.
    cut_below_durable: bool,
    /// Byte ranges whose writeback failed: a later sync writes zeros there.
    holes: Vec<(usize, usize)>,
}

impl Inode {
    fn sync(&mut self) {
        if !self.cut_below_durable && self.holes.is_empty() {
            let from = self.durable.len().min(self.live.len());
            let tail = self.live[from..].to_vec();
            self.durable.truncate(from);
            self.durable.extend_from_slice(&tail);
        } else {
            let mut d = self.live.clone();
            for &(a, b) in &self.holes {
                let b = b.min(d.len());
                if a < b {
                    d[a..b].fill(0);
                }
            }
            self.durable = d;
        }
        self.cut_below_durable = false;
        self.holes.clear();
    }

    /// A failed fsync: the unsynced bytes are dropped from writeback.
    fn fail_sync(&mut self) {
        let from = if self.cut_below_durable {
            0
        } else {
            self.durable.len()
        };
        if self.live.len() > from {
            self.holes.push((from, self.live.len()));
        }
    }

    /// After a power cut that keeps `keep` of the unsynced appended bytes.
    fn revert(&mut self, keep: KeepBytes) {
        let mut d = std::mem::take(&mut self.durable);
        if !self.cut_below_durable && self.live.len() > d.len() {
            let unsynced = self.live.len() - d.len();
            let extra = match keep {
                KeepBytes::None => 0,
                KeepBytes::All => unsynced,
                KeepBytes::Some(draw) => (draw % (unsynced as u64 + 1)) as usize,
            };
            let from = d.len();
            d.extend_from_slice(&self.live[from..from + extra]);
            for &(a, b) in &self.holes {
                let b = b.min(d.len());
                if a < b {
                    d[a..b].fill(0);
                }
            }
        }
        self.live = d.clone();
        self.durable = d;
        self.cut_below_durable = false;
        self.holes.clear();
    }
}

#[derive(Clone, Copy)]
enum KeepBytes {
    None,
    All,
    /// A random number: keeps `draw % (unsynced + 1)` bytes.
    Some(u64),
}

struct State {
    /// Incremented by every power cut; mounts and files of an older one are dead.
    boot: u64,
    next_inode: u64,
    inodes: HashMap<u64, Inode>,
    files: BTreeMap<PathBuf, u64>,
    durable_files: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    failpoints: Vec<Failpoint>,
    /// Bytes left before appends fail with `ENOSPC` (`None`: unlimited).
    free_bytes: Option<u64>,
    sync_delay: Duration,
    /// File syncs per path (successful or not).
    syncs: BTreeMap<PathBuf, u64>,
    power_cuts: u64,
}

/// The one simulated disk every [`SimDisk`] handle points at.
struct Disk {
    state: Mutex<State>,
    host_root: PathBuf,
}

/// A simulated disk; see the module docs. Cheap to clone (shared).
#[derive(Clone)]
pub struct SimDisk {
    shared: Arc<Disk>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDisk")
            .field("host_root", &self.shared.host_root)
            .finish_non_exhaustive()
    }
}

fn errno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

fn powered_off() -> io::Error {
    io::Error::new(
        errno(EIO).kind(),
        "simulated power loss: this machine is off (mount the disk again)",
    )
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

/// splitmix64: a tiny seeded generator, enough for power-cut choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// What an operation should do after the failpoints had their say.
enum Verdict {
    Proceed,
    Fail(io::Error),
    Panic(String),
}

impl State {
    fn parent_exists(&self, path: &Path) -> bool {
        match path.parent() {
            None => true,
            Some(p) if p.as_os_str().is_empty() || p == Path::new("/") => true,
            Some(p) => self.dirs.contains(p),
        }
    }

    /// Consults the failpoints for one operation on `paths`.
    fn check(&mut self, op: FailOp, paths: &[&Path]) -> Verdict {
        let names: Vec<String> = paths.iter().map(|p| p.to_string_lossy().into()).collect();
        let mut hit = None;
        for (i, fp) in self.failpoints.iter_mut().enumerate() {
            if fp.op != op || !names.iter().any(|n| n.contains(&fp.path_contains)) {
                continue;
            }
            if fp.skip > 0 {
                fp.skip -= 1;
                continue;
            }
            hit = Some(i);
            break;
        }
        let Some(i) = hit else {
            return Verdict::Proceed;
        };
        let action = self.failpoints[i].action.clone();
        match &mut self.failpoints[i].times {
            Some(1) => {
                self.failpoints.remove(i);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        match action {
            FailAction::Errno(n) => Verdict::Fail(errno(n)),
            FailAction::PowerCut(keep) => {
                self.power_cut(keep);
                Verdict::Fail(powered_off())
            }
            FailAction::Panic => Verdict::Panic(format!(
                "simulated failpoint: panic in {op:?} on {}",
                names.join(", ")
            )),
        }
    }

    fn power_cut(&mut self, keep: Keep) {
        let mut rng = match keep {
            Keep::Random(seed) => Some(Rng(seed)),
            _ => None,
        };
        // Names: per directory, the durable ones (or, kept, the live ones).
        let mut parents: BTreeSet<PathBuf> = BTreeSet::new();
        for p in self.files.keys().chain(self.durable_files.keys()) {
            if let Some(parent) = p.parent() {
                parents.insert(parent.to_path_buf());
            }
        }
        for dir in parents {
            let keep_live = match (&mut rng, keep) {
                (_, Keep::All) => true,
                (Some(r), _) => r.below(2) == 0,
                _ => false,
            };
            if keep_live {
                self.durable_files.retain(|p, _| p.parent() != Some(&dir));
                for (p, &ino) in &self.files {
                    if p.parent() == Some(&dir) {
                        self.durable_files.insert(p.clone(), ino);
                    }
                }
            }
        }
        self.files = self.durable_files.clone();
        let live: BTreeSet<u64> = self.files.values().copied().collect();
        self.inodes.retain(|ino, _| live.contains(ino));
        let mut inos: Vec<u64> = self.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let bytes = match (&mut rng, keep) {
                (_, Keep::All) => KeepBytes::All,
                (Some(r), _) => match r.below(3) {
                    0 => KeepBytes::None,
                    1 => KeepBytes::All,
                    _ => KeepBytes::Some(r.next()),
                },
                _ => KeepBytes::None,
            };
            self.inodes.get_mut(&ino).expect("listed").revert(bytes);
        }
        self.locks.clear();
        self.boot += 1;
        self.power_cuts += 1;
    }

    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::other("simulated inode vanished"))
    }
}

impl SimDisk {
    /// An empty disk. sled's directories go under `host_root` (a real
    /// directory, e.g. a temp dir), at the same relative paths.
    pub fn new(host_root: impl Into<PathBuf>) -> SimDisk {
        SimDisk {
            shared: Arc::new(Disk {
                state: Mutex::new(State {
                    boot: 0,
                    next_inode: 1,
                    inodes: HashMap::new(),
                    files: BTreeMap::new(),
                    durable_files: BTreeMap::new(),
                    dirs: BTreeSet::new(),
                    locks: BTreeSet::new(),
                    failpoints: Vec::new(),
                    free_bytes: None,
                    sync_delay: Duration::ZERO,
                    syncs: BTreeMap::new(),
                    power_cuts: 0,
                }),
                host_root: host_root.into(),
            }),
        }
    }

    /// A file system view for one engine, valid until the next power cut.
    pub fn mount(&self) -> Arc<dyn Vfs> {
        let boot = self.shared.state.lock().boot;
        Arc::new(SimFs {
            shared: self.shared.clone(),
            boot,
        })
    }

    /// Cuts the power now (see the module docs).
    pub fn power_cut(&self, keep: Keep) {
        self.shared.state.lock().power_cut(keep);
    }

    /// Power cuts so far (by [`SimDisk::power_cut`] or a failpoint).
    pub fn power_cuts(&self) -> u64 {
        self.shared.state.lock().power_cuts
    }

    pub fn add_failpoint(&self, fp: Failpoint) {
        self.shared.state.lock().failpoints.push(fp);
    }

    pub fn clear_failpoints(&self) {
        self.shared.state.lock().failpoints.clear();
    }

    /// Failpoints armed and not yet spent.
    pub fn armed_failpoints(&self) -> usize {
        self.shared.state.lock().failpoints.len()
    }

    /// Leaves `bytes` free: an append past them writes what fits and fails
    /// with `ENOSPC`, creating a file fails with `ENOSPC` once none are
    /// left. `None`: unlimited.
    pub fn set_free_bytes(&self, bytes: Option<u64>) {
        self.shared.state.lock().free_bytes = bytes;
    }

    /// How long every file sync takes (slept on the calling thread, without
    /// holding the disk's lock).
    pub fn set_sync_delay(&self, d: Duration) {
        self.shared.state.lock().sync_delay = d;
    }

    /// File syncs so far on paths containing `path_contains`.
    pub fn syncs(&self, path_contains: &str) -> u64 {
        self.shared
            .state
            .lock()
            .syncs
            .iter()
            .filter(|(p, _)| p.to_string_lossy().contains(path_contains))
            .map(|(_, n)| n)
            .sum()
    }

    /// A file's live contents.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.shared.state.lock();
        let ino = st.files.get(path)?;
        Some(st.inodes[ino].live.clone())
    }

    /// A file's durable contents, if its name is durable.
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.shared.state.lock();
        let ino = st.durable_files.get(path)?;
        Some(st.inodes[ino].durable.clone())
    }

    /// Replaces a file's contents on the platter (live and durable, name
    /// durable): for damaging files in tests.
    pub fn set_contents(&self, path: &Path, bytes: Vec<u8>) {
        let mut st = self.shared.state.lock();
        let ino = match st.files.get(path) {
            Some(&i) => i,
            None => {
                let i = st.next_inode;
                st.next_inode += 1;
                st.inodes.insert(i, Inode::default());
                st.files.insert(path.to_path_buf(), i);
                i
            }
        };
        st.durable_files.insert(path.to_path_buf(), ino);
        let inode = st.inodes.get_mut(&ino).expect("just made");
        inode.live = bytes.clone();
        inode.durable = bytes;
        inode.cut_below_durable = false;
        inode.holes.clear();
    }

    /// Removes a file, durably (damage in tests).
    pub fn delete(&self, path: &Path) {
        let mut st = self.shared.state.lock();
        st.files.remove(path);
        st.durable_files.remove(path);
    }

    /// Live names in `dir`, sorted.
    pub fn list(&self, dir: &Path) -> Vec<String> {
        let st = self.shared.state.lock();
        list_dir(&st, dir)
    }

    /// The real directory sled's files go under.
    pub fn host_root(&self) -> &Path {
        &self.shared.host_root
    }

    /// Where [`Vfs::host_dir`] puts `dir` (whether or not it exists yet).
    pub fn host_path(&self, dir: &Path) -> PathBuf {
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        self.shared.host_root.join(rel)
    }
}

fn list_dir(st: &State, dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = st
        .files
        .keys()
        .chain(st.dirs.iter())
        .filter(|p| p.parent() == Some(dir))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// One boot's view of a [`SimDisk`].
struct SimFs {
    shared: Arc<Disk>,
    boot: u64,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFs").field("boot", &self.boot).finish()
    }
}

/// Runs `f` on the state if the machine is still up and no failpoint
/// fires; panics (without the lock held) for a panic failpoint.
fn with_state<T>(
    shared: &Disk,
    boot: u64,
    op: Option<(FailOp, &[&Path])>,
    f: impl FnOnce(&mut State) -> io::Result<T>,
) -> io::Result<T> {
    let verdict = {
        let mut st = shared.state.lock();
        if st.boot != boot {
            return Err(powered_off());
        }
        let verdict = match op {
            Some((op, paths)) => st.check(op, paths),
            None => Verdict::Proceed,
        };
        match verdict {
            Verdict::Proceed => return f(&mut st),
            Verdict::Fail(e) => return Err(e),
            Verdict::Panic(msg) => msg,
        }
    };
    panic!("{verdict}");
}

impl Vfs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        with_state(&self.shared, self.boot, None, |st| {
            let mut cur = Some(dir);
            while let Some(d) = cur {
                if d.as_os_str().is_empty() || d == Path::new("/") {
                    break;
                }
                if st.files.contains_key(d) {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is a file", d.display()),
                    ));
                }
                st.dirs.insert(d.to_path_buf());
                cur = d.parent();
            }
            Ok(())
        })
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        with_state(&self.shared, self.boot, None, |st| {
            if !st.dirs.contains(dir) {
                return Err(not_found(dir));
            }
            Ok(list_dir(st, dir))
        })
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>> {
        let exists = {
            let st = self.shared.state.lock();
            st.files.contains_key(path)
        };
        let paths = [path];
        let op = (!exists && create).then_some((FailOp::Create, &paths[..]));
        let ino = with_state(&self.shared, self.boot, op, |st| {
            if let Some(&ino) = st.files.get(path) {
                return Ok(ino);
            }
            if !create || !st.parent_exists(path) {
                return Err(not_found(path));
            }
            if st.free_bytes == Some(0) {
                return Err(errno(ENOSPC));
            }
            let ino = st.next_inode;
            st.next_inode += 1;
            st.inodes.insert(ino, Inode::default());
            st.files.insert(path.to_path_buf(), ino);
            Ok(ino)
        })?;
        Ok(Arc::new(SimFile {
            shared: self.shared.clone(),
            boot: self.boot,
            ino,
            path: path.to_path_buf(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        with_state(&self.shared, self.boot, None, |st| {
            let ino = *st.files.get(path).ok_or_else(|| not_found(path))?;
            Ok(st.inode(ino)?.live.clone())
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        with_state(
            &self.shared,
            self.boot,
            Some((FailOp::Rename, &[from, to][..])),
            |st| {
                let ino = st.files.remove(from).ok_or_else(|| not_found(from))?;
                if !st.parent_exists(to) {
                    st.files.insert(from.to_path_buf(), ino);
                    return Err(not_found(to));
                }
                st.files.insert(to.to_path_buf(), ino);
                Ok(())
            },
        )
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        with_state(
            &self.shared,
            self.boot,
            Some((FailOp::Remove, &[path][..])),
            |st| {
                st.files
                    .remove(path)
                    .map(|_| ())
                    .ok_or_else(|| not_found(path))
            },
        )
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        with_state(
            &self.shared,
            self.boot,
            Some((FailOp::SyncDir, &[dir][..])),
            |st| {
                if !st.dirs.contains(dir) {
                    return Err(not_found(dir));
                }
                st.durable_files.retain(|p, _| p.parent() != Some(dir));
                let live: Vec<(PathBuf, u64)> = st
                    .files
                    .iter()
                    .filter(|(p, _)| p.parent() == Some(dir))
                    .map(|(p, &i)| (p.clone(), i))
                    .collect();
                st.durable_files.extend(live);
                Ok(())
            },
        )
    }

    fn lock(&self, path: &Path) -> io::Result<VfsLock> {
        with_state(&self.shared, self.boot, None, |st| {
            if !st.locks.insert(path.to_path_buf()) {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the data directory is in use by another process",
                ));
            }
            Ok(())
        })?;
        Ok(VfsLock::new(SimLock {
            shared: self.shared.clone(),
            boot: self.boot,
            path: path.to_path_buf(),
        }))
    }

    fn host_dir(&self, dir: &Path) -> io::Result<PathBuf> {
        with_state(&self.shared, self.boot, None, |_| Ok(()))?;
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        let host = self.shared.host_root.join(rel);
        // Owner-only, like everything the engine makes.
        super::StdFs.create_dir_all(&host)?;
        Ok(host)
    }
}

struct SimLock {
    shared: Arc<Disk>,
    boot: u64,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        if st.boot == self.boot {
            st.locks.remove(&self.path);
        }
    }
}

/// An open simulated file.
struct SimFile {
    shared: Arc<Disk>,
    boot: u64,
    ino: u64,
    path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile").field("path", &self.path).finish()
    }
}

impl SimFile {
    fn sync(&self) -> io::Result<()> {
        let delay = {
            let mut st = self.shared.state.lock();
            *st.syncs.entry(self.path.clone()).or_default() += 1;
            st.sync_delay
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let ino = self.ino;
        let paths = [self.path.as_path()];
        let result = with_state(
            &self.shared,
            self.boot,
            Some((FailOp::Sync, &paths[..])),
            |st| {
                st.inode(ino)?.sync();
                Ok(())
            },
        );
        if let Err(e) = &result
            && e.raw_os_error().is_some()
        {
            // A failed writeback: the dirty pages are dropped.
            let mut st = self.shared.state.lock();
            if st.boot == self.boot
                && let Ok(inode) = st.inode(ino)
            {
                inode.fail_sync();
            }
        }
        result
    }
}

impl VfsFile for SimFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        let paths = [self.path.as_path()];
        with_state(
            &self.shared,
            self.boot,
            Some((FailOp::Append, &paths[..])),
            |st| {
                let fits = match st.free_bytes {
                    None => buf.len(),
                    Some(free) => buf.len().min(free as usize),
                };
                if let Some(free) = &mut st.free_bytes {
                    *free -= fits as u64;
                }
                st.inode(self.ino)?.live.extend_from_slice(&buf[..fits]);
                if fits < buf.len() {
                    return Err(errno(ENOSPC));
                }
                Ok(())
            },
        )
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        with_state(&self.shared, self.boot, None, |st| {
            let live = &st.inode(self.ino)?.live;
            let start = offset as usize;
            let end = start.checked_add(buf.len()).filter(|&e| e <= live.len());
            match end {
                Some(end) => {
                    buf.copy_from_slice(&live[start..end]);
                    Ok(())
                }
                None => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                )),
            }
        })
    }

    fn size(&self) -> io::Result<u64> {
        with_state(&self.shared, self.boot, None, |st| {
            Ok(st.inode(self.ino)?.live.len() as u64)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let paths = [self.path.as_path()];
        with_state(
            &self.shared,
            self.boot,
            Some((FailOp::SetLen, &paths[..])),
            |st| {
                let inode = st.inode(self.ino)?;
                let len = len as usize;
                if len < inode.durable.len() {
                    inode.cut_below_durable = true;
                }
                inode.live.resize(len, 0);
                Ok(())
            },
        )
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> (SimDisk, tempfile::TempDir) {
        let host = tempfile::tempdir().unwrap();
        (SimDisk::new(host.path()), host)
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn a_power_cut_keeps_only_what_was_synced() {
        let (disk, _host) = disk();
        let fs = disk.mount();
        fs.create_dir_all(&p("/d")).unwrap();
        let f = fs.open(&p("/d/a"), true).unwrap();
        f.append(b"hello").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        f.append(b" world").unwrap();
        // Unsynced: a new file, a rename, a removal.
        let g = fs.open(&p("/d/b"), true).unwrap();
        g.append(b"new").unwrap();
        g.sync_data().unwrap();
        let h = fs.open(&p("/d/c"), true).unwrap();
        h.sync_all().unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        fs.rename(&p("/d/c"), &p("/d/c2")).unwrap();
        fs.remove_file(&p("/d/a")).unwrap();
        fs.open(&p("/d/e"), true).unwrap();
        assert_eq!(fs.read(&p("/d/b")).unwrap(), b"new");
        disk.power_cut(Keep::Synced);
        // The old mount and its files are dead.
        assert!(fs.read(&p("/d/a")).is_err());
        assert!(f.append(b"x").is_err());
        let fs = disk.mount();
        assert_eq!(fs.read(&p("/d/a")).unwrap(), b"hello");
        assert_eq!(
            fs.read_dir(&p("/d")).unwrap(),
            vec!["a".to_string(), "b".into(), "c".into()]
        );
        assert_eq!(fs.read(&p("/d/b")).unwrap(), b"new");
    }

    #[test]
    fn keep_all_is_a_process_crash_and_random_keeps_a_prefix() {
        let (disk, _host) = disk();
        let fs = disk.mount();
        fs.create_dir_all(&p("/d")).unwrap();
        let f = fs.open(&p("/d/a"), true).unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        f.append(b"synced").unwrap();
        f.sync_data().unwrap();
        f.append(b"-unsynced").unwrap();
        disk.power_cut(Keep::All);
        let fs = disk.mount();
        assert_eq!(fs.read(&p("/d/a")).unwrap(), b"synced-unsynced");
        let mut lens = BTreeSet::new();
        for seed in 0..40 {
            let fs = disk.mount();
            let f = fs.open(&p("/d/a"), false).unwrap();
            f.set_len(6).unwrap();
            f.sync_data().unwrap();
            f.append(b"-more").unwrap();
            disk.power_cut(Keep::Random(seed));
            let got = disk.mount().read(&p("/d/a")).unwrap();
            assert!(
                b"synced-more".starts_with(&got) && got.len() >= 6,
                "{got:?}"
            );
            lens.insert(got.len());
        }
        assert!(
            lens.len() >= 3,
            "random cuts keep varied prefixes: {lens:?}"
        );
    }

    #[test]
    fn a_failed_fsync_drops_the_dirty_bytes_even_after_a_later_good_one() {
        let (disk, _host) = disk();
        let fs = disk.mount();
        fs.create_dir_all(&p("/d")).unwrap();
        let f = fs.open(&p("/d/a"), true).unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        f.append(b"aaaa").unwrap();
        disk.add_failpoint(Failpoint::new(FailOp::Sync, "/d/a", FailAction::Errno(EIO)));
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(EIO));
        f.append(b"bb").unwrap();
        f.sync_data().unwrap();
        assert_eq!(fs.read(&p("/d/a")).unwrap(), b"aaaabb");
        disk.power_cut(Keep::Synced);
        assert_eq!(disk.mount().read(&p("/d/a")).unwrap(), b"\0\0\0\0bb");
    }

    #[test]
    fn a_full_disk_writes_what_fits_and_refuses_new_files() {
        let (disk, _host) = disk();
        let fs = disk.mount();
        fs.create_dir_all(&p("/d")).unwrap();
        let f = fs.open(&p("/d/a"), true).unwrap();
        disk.set_free_bytes(Some(3));
        let e = f.append(b"hello").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(fs.read(&p("/d/a")).unwrap(), b"hel");
        assert_eq!(
            fs.open(&p("/d/b"), true).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        disk.set_free_bytes(None);
        f.set_len(0).unwrap();
        f.append(b"ok").unwrap();
    }

    #[test]
    fn failpoints_skip_trigger_and_disarm_and_power_cuts_fire_from_them() {
        let (disk, _host) = disk();
        let fs = disk.mount();
        fs.create_dir_all(&p("/d")).unwrap();
        for n in ["/d/x.seg", "/d/y.seg", "/d/z.seg"] {
            fs.open(&p(n), true).unwrap();
        }
        fs.sync_dir(&p("/d")).unwrap();
        disk.add_failpoint(
            Failpoint::new(FailOp::Remove, ".seg", FailAction::PowerCut(Keep::All)).after(1),
        );
        fs.remove_file(&p("/d/x.seg")).unwrap();
        assert!(fs.remove_file(&p("/d/y.seg")).is_err());
        assert_eq!(disk.armed_failpoints(), 0);
        assert_eq!(disk.power_cuts(), 1);
        // Keep::All kept the first (unsynced) removal; the second never ran.
        assert_eq!(
            disk.list(&p("/d")),
            vec!["y.seg".to_string(), "z.seg".into()]
        );
    }

    #[test]
    fn a_lock_is_exclusive_until_dropped_or_the_power_goes() {
        let (disk, _host) = disk();
        let fs = disk.mount();
        fs.create_dir_all(&p("/d")).unwrap();
        let l = fs.lock(&p("/d/LOCK")).unwrap();
        assert!(fs.lock(&p("/d/LOCK")).is_err());
        drop(l);
        let _l = fs.lock(&p("/d/LOCK")).unwrap();
        disk.power_cut(Keep::Synced);
        let _l2 = disk.mount().lock(&p("/d/LOCK")).unwrap();
    }
}
