//! A private network namespace for one run (`ip netns add mj-<seed>`).
//!
//! Created with loopback up; removed by `Drop` (and by
//! [`crate::cleanup::emergency`] on a second Ctrl-C), so a run never leaves a
//! namespace behind, even after a failure. Code gets inside with
//! [`Netns::spawn_inside`]: a new thread that `setns`es into the namespace
//! before running its closure. Every thread and process it starts inherits
//! the namespace, so the harness runs its whole test (tokio runtime, node
//! processes, `nft`) from that thread, while the main thread, outside, keeps
//! the guard and cleans up after it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

/// Runs a command, failing with its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An owned network namespace.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// True once deleted, or for a handle that does not own the namespace.
    deleted: bool,
}

impl Netns {
    /// Creates the namespace and brings loopback up. A stale namespace of
    /// the same name (a previous run killed with SIGKILL) is replaced:
    /// the `mj-` prefix is this harness's.
    pub fn create(name: &str) -> anyhow::Result<Netns> {
        anyhow::ensure!(
            name.starts_with("mj-")
                && name.len() < 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "bad namespace name {name:?}"
        );
        if PathBuf::from("/run/netns").join(name).exists() {
            let _ = run(Command::new("ip").args(["netns", "del", name]));
        }
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_string(),
            deleted: false,
        };
        crate::cleanup::register_netns(name);
        run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// A handle to a namespace owned by someone else (e.g. the main thread's
    /// guard): usable for commands, never deletes it.
    pub fn attach(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            deleted: true,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Moves the calling thread into the namespace.
    pub fn enter_current_thread(&self) -> anyhow::Result<()> {
        let f = std::fs::File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("setns into {}", self.name))?;
        Ok(())
    }

    /// Runs `f` on a new thread inside the namespace and returns its result
    /// (a panic in `f` is returned as an error).
    pub fn spawn_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let path = self.path();
        let name = self.name.clone();
        let h = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || -> anyhow::Result<T> {
                let fd = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into {name}"))?;
                f()
            })?;
        match h.join() {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                bail!("the run inside {} panicked: {msg}", self.name)
            }
        }
    }

    /// Deletes the namespace now (also done on drop).
    pub fn delete(mut self) -> anyhow::Result<()> {
        self.deleted = true;
        crate::cleanup::unregister_netns(&self.name);
        run(Command::new("ip").args(["netns", "del", &self.name])).map(|_| ())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.deleted {
            crate::cleanup::unregister_netns(&self.name);
            if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
                eprintln!(
                    "warning: could not remove network namespace {}: {e:#}",
                    self.name
                );
            }
        }
    }
}
