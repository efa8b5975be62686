//! The file layer: every file the engine writes itself goes through a
//! [`Vfs`], so tests (and a whole-node simulation) can swap the real file
//! system for a simulated disk that loses power.
//!
//! What goes through it: the data directory and its `log/` directory, the
//! log segments, the small files (`IDENTITY`, `CHECKPOINT`, `CLEAN`,
//! `RELOG`, each written as temp file, fsync, rename, directory fsync) and
//! the `LOCK` file. What does not: sled, the object store, which does its
//! own I/O through `std::fs`; the engine asks the layer where sled's
//! directory lives on the host ([`Vfs::host_dir`]).
//!
//! Two implementations:
//! * [`StdFs`], the real one (the default in [`crate::EngineConfig`]):
//!   `std::fs`, with every file created 0600 and every directory 0700,
//!   set with `fchmod`/`chmod` after creation so the umask cannot widen
//!   them.
//! * [`SimDisk`] ([`sim`]), a simulated disk in memory: it remembers what
//!   of each file and directory is synced, cuts everything back to that on
//!   [`SimDisk::power_cut`], and has failpoints (an fsync error, a full
//!   disk, a power cut or a panic at the n-th matching operation). It is
//!   public so a simulation of whole nodes can give each node one; see its
//!   docs for the power-loss model and what it does not cover (sled).

pub mod sim;

use std::any::Any;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use sim::{FailAction, FailOp, Failpoint, Keep, SimDisk};

/// Mode of every file the engine creates: owner read/write only.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the engine creates: owner only.
pub const DIR_MODE: u32 = 0o700;

/// The file operations the engine needs. Paths are those the engine was
/// configured with (`EngineConfig::dir` and below).
///
/// Durability contract (what the engine relies on, and what [`SimDisk`]
/// enforces on a power cut): file contents are durable up to the last
/// successful [`VfsFile::sync_data`]/[`VfsFile::sync_all`]; a created,
/// renamed or removed name is durable once [`Vfs::sync_dir`] of its
/// directory succeeded; directories made by [`Vfs::create_dir_all`] are
/// durable when it returns.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Creates `dir` and any missing parent, owner-only, and makes the new
    /// entries durable (fsyncs each new entry's parent directory).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`, in no particular order.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for reading and appending. With `create`, a missing
    /// file is created (owner-only); its name is durable after
    /// [`Vfs::sync_dir`] of its directory.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>>;
    /// The whole contents of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable (creates, renames, removes).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock named by `path` (a lock file), held while
    /// the returned guard lives; fails at once if someone else holds it.
    fn lock(&self, path: &Path) -> io::Result<VfsLock>;
    /// Where a library that does its own I/O with `std::fs` (sled) keeps
    /// the directory the engine calls `dir`. Created if missing.
    fn host_dir(&self, dir: &Path) -> io::Result<PathBuf>;
}

/// One open file.
pub trait VfsFile: Send + Sync + fmt::Debug {
    /// Appends all of `buf` at the end of the file. On an error some prefix
    /// of `buf` may have been written (a full disk); the caller undoes it
    /// with [`VfsFile::set_len`].
    fn append(&self, buf: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset`; an error if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The file's current size, in bytes.
    fn size(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: the contents (and the size) become durable.
    fn sync_data(&self) -> io::Result<()>;
    /// fsync: contents and metadata.
    fn sync_all(&self) -> io::Result<()>;
}

/// A held lock (see [`Vfs::lock`]); dropping it releases the lock.
pub struct VfsLock(#[allow(dead_code)] Box<dyn Any + Send + Sync>);

impl VfsLock {
    /// Wraps whatever keeps the lock held.
    pub fn new(guard: impl Any + Send + Sync) -> VfsLock {
        VfsLock(Box::new(guard))
    }
}

impl fmt::Debug for VfsLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VfsLock")
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

impl StdFs {
    /// As a shareable [`Vfs`].
    pub fn shared() -> Arc<dyn Vfs> {
        Arc::new(StdFs)
    }
}

/// fsync of a directory.
fn sync_std_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Vfs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d.as_os_str().is_empty() || d.exists() {
                break;
            }
            missing.push(d);
            cur = d.parent();
        }
        for d in missing.into_iter().rev() {
            match DirBuilder::new().mode(DIR_MODE).create(d) {
                Ok(()) => {}
                // Someone else made it meanwhile: theirs, leave its mode.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
            // The umask may have narrowed the mode, never widened it; set it
            // exactly anyway, so the directory is usable and private.
            fs::set_permissions(d, Permissions::from_mode(DIR_MODE))?;
            if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_std_dir(parent)?;
            }
        }
        Ok(())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            out.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn VfsFile>> {
        let mut opts = OpenOptions::new();
        opts.read(true).append(true);
        if create {
            match opts.clone().create_new(true).mode(FILE_MODE).open(path) {
                Ok(file) => {
                    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
                    return Ok(Arc::new(StdFile(file)));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Arc::new(StdFile(opts.open(path)?)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_std_dir(dir)
    }

    fn lock(&self, path: &Path) -> io::Result<VfsLock> {
        /// How long a held lock is waited for before the directory counts
        /// as in use (see below).
        const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)?;
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
        // A lock held by another process is refused — after a short wait:
        // a process of ours that forks (to exec a child) shares the lock's
        // open file until the child's exec closes it, so a lock released a
        // moment ago can still look held for a few milliseconds.
        let give_up = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(VfsLock::new(file)),
                Err(_) if std::time::Instant::now() < give_up => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "the data directory is in use by another process",
                    ));
                }
            }
        }
    }

    fn host_dir(&self, dir: &Path) -> io::Result<PathBuf> {
        Ok(dir.to_path_buf())
    }
}

/// A real file.
#[derive(Debug)]
struct StdFile(File);

impl VfsFile for StdFile {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        (&self.0).write_all(buf)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}
