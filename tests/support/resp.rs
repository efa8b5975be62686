//! RESP (Redis protocol) connections for end-to-end tests, made with the
//! `redis` crate: one way to connect, run a command given as words, and
//! print an error the way the server wrote it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;

/// Bound on every socket wait of a RESP test connection (generous: the
/// machine is shared and noisy; a healthy node answers at once).
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection to the RESP door at `addr` as `user` (a level name, or
/// `default`) with `token`; RESP3 when `resp3`, else RESP2.
pub fn connect(
    addr: SocketAddr,
    user: &str,
    token: &str,
    resp3: bool,
) -> Result<redis::Connection> {
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    let client = redis::Client::open(format!("redis://{user}:{token}@{addr}/{proto}"))?;
    Ok(client.get_connection_with_timeout(IO_TIMEOUT)?)
}

/// Runs one command given as words.
pub fn q<T: redis::FromRedisValue>(
    con: &mut redis::Connection,
    words: &[&str],
) -> redis::RedisResult<T> {
    let mut c = redis::cmd(words[0]);
    for w in &words[1..] {
        c.arg(*w);
    }
    c.query(con)
}

/// An error as the server wrote it: its code, a space, its detail.
pub fn code(e: &redis::RedisError) -> String {
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

/// Runs `f` with a `local` RESP2 connection to `addr`, off the async
/// workers (the `redis` crate's connection blocks).
pub async fn with_resp<T: Send + 'static>(
    addr: SocketAddr,
    token: &str,
    f: impl FnOnce(&mut redis::Connection) -> Result<T> + Send + 'static,
) -> Result<T> {
    let token = token.to_owned();
    tokio::task::spawn_blocking(move || f(&mut connect(addr, "local", &token, false)?)).await?
}
