//! Phase B plugs in here: [`Db`] on top of `meridian-client`.
//!
//! Until then [`WIRED`] is false and `meridian-jepsen test` stops before
//! creating anything, saying so. The intended implementation (one client per
//! node, pinned, so a process's requests go where the history says):
//!
//! ```text
//! let client = Client::connect(ClientConfig::load(dir/"client.toml")?.pinned(node)).await?;
//! counter_add  → client.counter(key).incr(d).consistency(c).timeout(t).await
//! counter_read → client.counter(key).read()…            Read<i64>
//! set_add      → client.set(key).add([m])…;  set_remove → .remove([m])
//! set_read     → client.set(key).members()…             Read<SetValue{members, count}>
//! register_write → client.register(key).put(v)…  (Read.hlc → Meta.hlc)
//! register_read  → client.register(key).get()…  RegisterValue{value, hlc}
//! set_clock_offset → client.debug_clock_offset(ms)
//! Ok(read)  → Outcome::Ok(value, Meta { node: read.node, hlc })
//! Err(e) if e.is_definite() → Outcome::Fail(e.code()), except that a
//!           timeout or connection loss is never definite
//! Err(e)    → Outcome::Info(e.to_string())
//! ```

use std::path::Path;
use std::time::Duration;

use crate::db::{Db, Outcome};
use crate::history::Level;

/// Whether the client wiring exists (phase B sets this to true).
pub const WIRED: bool = false;

/// The `meridian-client` database (placeholder until phase B).
#[derive(Debug)]
pub struct ClientDb {
    _private: (),
}

impl ClientDb {
    /// Connects one pinned client per node from the cluster's `client.toml`.
    pub async fn connect(_client_config: &Path, _nodes: &[String]) -> anyhow::Result<ClientDb> {
        anyhow::bail!("meridian-client is not wired into the harness yet (phase B)")
    }
}

const NOT_WIRED: &str = "meridian-client not wired";

impl Db for ClientDb {
    async fn counter_add(&self, _: &str, _: &str, _: i64, _: Level, _: Duration) -> Outcome<i64> {
        Outcome::Info(NOT_WIRED.into())
    }
    async fn counter_read(&self, _: &str, _: &str, _: Level, _: Duration) -> Outcome<i64> {
        Outcome::Fail(NOT_WIRED.into())
    }
    async fn set_add(&self, _: &str, _: &str, _: &str, _: Level, _: Duration) -> Outcome<()> {
        Outcome::Info(NOT_WIRED.into())
    }
    async fn set_remove(&self, _: &str, _: &str, _: &str, _: Level, _: Duration) -> Outcome<()> {
        Outcome::Info(NOT_WIRED.into())
    }
    async fn set_read(&self, _: &str, _: &str, _: Level, _: Duration) -> Outcome<Vec<String>> {
        Outcome::Fail(NOT_WIRED.into())
    }
    async fn register_write(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Level,
        _: Duration,
    ) -> Outcome<()> {
        Outcome::Info(NOT_WIRED.into())
    }
    async fn register_read(
        &self,
        _: &str,
        _: &str,
        _: Level,
        _: Duration,
    ) -> Outcome<Option<String>> {
        Outcome::Fail(NOT_WIRED.into())
    }
    async fn set_clock_offset(&self, _: &str, _: i64) -> Result<(), String> {
        Err(NOT_WIRED.into())
    }
}
