//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use meridian_engine::{
    CausalContext, Durability, Engine, EngineConfig, GroupFn, GroupId, Kind, Merged, ObjectKey, Op,
    PhysicalTime, Value,
};

/// The wall clock (tests that need to control time pass their own).
pub fn now() -> PhysicalTime {
    PhysicalTime::system(0)
}

pub fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey::new(kind, name.as_bytes().to_vec()).unwrap()
}

pub fn counter_key(name: &str) -> ObjectKey {
    key(Kind::Counter, name)
}

pub fn set_key(name: &str) -> ObjectKey {
    key(Kind::Set, name)
}

pub fn register_key(name: &str) -> ObjectKey {
    key(Kind::Register, name)
}

pub fn config(dir: &Path) -> EngineConfig {
    EngineConfig::new(dir)
}

pub fn open(dir: &Path) -> Engine {
    Engine::open(config(dir), now()).unwrap()
}

pub fn open_with(dir: &Path, f: impl FnOnce(&mut EngineConfig)) -> Engine {
    let mut c = config(dir);
    f(&mut c);
    Engine::open(c, now()).unwrap()
}

/// Placement: keys starting with `eu/` are group 1, the rest group 0.
pub fn eu_placement() -> GroupFn {
    Arc::new(|k: &ObjectKey| {
        if k.key().starts_with(b"eu/") {
            GroupId(1)
        } else {
            GroupId(0)
        }
    })
}

/// Applies and waits until durable.
pub fn apply(e: &Engine, k: &ObjectKey, op: Op) -> meridian_engine::Applied {
    let a = e.apply(k, op, now()).unwrap();
    if e.durability() == Durability::Sync {
        e.wait_durable(a.lsn).unwrap();
    }
    a
}

pub fn members(ms: &[&str]) -> Vec<Vec<u8>> {
    ms.iter().map(|m| m.as_bytes().to_vec()).collect()
}

pub fn counter(e: &Engine, k: &ObjectKey) -> i64 {
    match e.read(k).unwrap() {
        Value::Counter(v) => v,
        other => panic!("{other:?}"),
    }
}

pub fn set(e: &Engine, k: &ObjectKey) -> Vec<Vec<u8>> {
    match e.read(k).unwrap() {
        Value::Set(v) => v,
        other => panic!("{other:?}"),
    }
}

pub fn register(e: &Engine, k: &ObjectKey) -> Option<Vec<u8>> {
    match e.read(k).unwrap() {
        Value::Register(v) => v.and_then(|r| r.value),
        other => panic!("{other:?}"),
    }
}

/// Pulls every delta `from` has (of the groups `wants` admits) that `to`
/// lacks, in small batches; returns how many were applied (not
/// duplicates). Panics if `from` says a full sync is needed.
pub fn pull(to: &Engine, from: &Engine, wants: &dyn Fn(GroupId) -> bool) -> usize {
    let mut applied = 0;
    for _ in 0..10_000 {
        let have: CausalContext = to.applied();
        let since = from
            .deltas_since(&have, wants, 7, 1 << 20)
            .unwrap()
            .expect("no full sync needed");
        for r in &since.records {
            if let Merged::Applied { lsn, .. } = to.merge(r, now()).unwrap() {
                applied += 1;
                to.wait_durable(lsn).unwrap();
            }
        }
        if !since.more {
            return applied;
        }
    }
    panic!("pull did not finish");
}

pub fn all_groups(_: GroupId) -> bool {
    true
}

/// A node on a simulated disk ([`meridian_engine::vfs::SimDisk`]): the
/// data directory is `/node` on the disk, sled's files live under a real
/// temp dir.
pub struct SimNode {
    pub disk: meridian_engine::vfs::SimDisk,
    pub host: tempfile::TempDir,
}

/// The data directory of a [`SimNode`].
pub const SIM_DIR: &str = "/node";

impl SimNode {
    pub fn new() -> SimNode {
        let host = tempfile::tempdir().unwrap();
        SimNode {
            disk: meridian_engine::vfs::SimDisk::new(host.path()),
            host,
        }
    }

    /// A config for the node's disk as of now (mounted: valid until the
    /// next power cut), with a small sled cache.
    pub fn config(&self) -> EngineConfig {
        let mut c = EngineConfig::new(SIM_DIR);
        c.vfs = self.disk.mount();
        c.cache_bytes = 16 << 20;
        c
    }

    pub fn open(
        &self,
        f: impl FnOnce(&mut EngineConfig),
    ) -> Result<Engine, meridian_engine::Error> {
        let mut c = self.config();
        f(&mut c);
        Engine::open(c, now())
    }

    /// sled's directory on the host.
    pub fn store_dir(&self) -> std::path::PathBuf {
        self.disk.host_path(&Path::new(SIM_DIR).join("objects"))
    }
}

/// Copies a directory tree (sled's, between runs of an engine).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A fresh engine on the real file system that pulls every delta `from`
/// has: what any replica would converge on from `from`'s log alone.
pub fn replica_of(from: &Engine) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    pull(&e, from, &all_groups);
    (dir, e)
}
