//! Last-resort cleanup of what a run created: its node processes (by PID)
//! and its network namespace.
//!
//! Normal teardown is ordered and owned (the cluster's `Drop` kills its
//! children, the namespace guard deletes the namespace). This registry is for
//! when that cannot happen: `main` calls [`emergency`] on a second Ctrl-C or
//! before exiting with an internal error. Only PIDs this process spawned and
//! namespaces it created are ever registered; nothing is signalled by name.

use std::collections::BTreeSet;
use std::sync::Mutex;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[derive(Default)]
struct Registry {
    pids: BTreeSet<i32>,
    netns: BTreeSet<String>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: BTreeSet::new(),
    netns: BTreeSet::new(),
});

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    f(&mut REGISTRY.lock().unwrap_or_else(|e| e.into_inner()))
}

pub fn register_pid(pid: i32) {
    with(|r| r.pids.insert(pid));
}

pub fn unregister_pid(pid: i32) {
    with(|r| r.pids.remove(&pid));
}

pub fn register_netns(name: &str) {
    with(|r| r.netns.insert(name.to_string()));
}

pub fn unregister_netns(name: &str) {
    with(|r| r.netns.remove(name));
}

/// PIDs currently registered (tests, diagnostics).
pub fn registered_pids() -> Vec<i32> {
    with(|r| r.pids.iter().copied().collect())
}

/// Kills every registered child (SIGCONT first so a paused one can die)
/// and deletes every registered namespace.
pub fn emergency() {
    let (pids, netns) = with(|r| (std::mem::take(&mut r.pids), std::mem::take(&mut r.netns)));
    for pid in pids {
        let p = Pid::from_raw(pid);
        let _ = kill(p, Signal::SIGCONT);
        let _ = kill(p, Signal::SIGKILL);
    }
    for ns in netns {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .status();
    }
}
