//! What the load generator talks to, and how one operation is sent.
//!
//! A [`Target`] names a system: a Meridian cluster by its `client.toml`, a
//! Redis server by `redis://HOST:PORT`, or an in-process Meridian cluster
//! (`local:N`). [`Backend`] is a target made ready (the in-process cluster
//! started), and [`Conn`] is one worker's connection to it: everything the
//! two systems do not share is in [`Conn::execute`], the codec. Keys,
//! values, pacing, timing and statistics are common code.
//!
//! Targets are loopback only: the benchmark is a tool for this machine's
//! nodes, never a load generator aimed at another host.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result};
use meridian_client::wire::{Operation, Request};
use meridian_client::{Client, ClientConfig, Consistency};

use super::resp::{RedisConn, Reply};

/// Largest in-process cluster `local:N` starts (every node is a full
/// replica with its own engine and QUIC endpoints on this machine).
pub const MAX_LOCAL_NODES: usize = 9;

/// A system to benchmark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `meridian:PATH`: a running cluster, by its `client.toml`.
    Meridian(PathBuf),
    /// `redis://HOST:PORT` (loopback).
    Redis(SocketAddr),
    /// `local:N`: an in-process N-node cluster in a temporary directory,
    /// one region per node.
    Local(usize),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        if let Some(path) = s.strip_prefix("meridian:") {
            if path.is_empty() {
                return Err("meridian: needs the path of a client.toml".into());
            }
            return Ok(Target::Meridian(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("redis://") {
            let rest = rest.trim_end_matches('/');
            let addr = rest
                .to_socket_addrs()
                .map_err(|e| format!("{s}: {e}"))?
                .next()
                .ok_or_else(|| format!("{s}: no address"))?;
            check_loopback(addr.ip()).map_err(|e| format!("{s}: {e}"))?;
            return Ok(Target::Redis(addr));
        }
        if let Some(n) = s.strip_prefix("local:") {
            let n: usize = n
                .parse()
                .map_err(|_| format!("{s}: local:N needs a node count"))?;
            if n == 0 || n > MAX_LOCAL_NODES {
                return Err(format!("{s}: local:N takes 1 to {MAX_LOCAL_NODES} nodes"));
            }
            return Ok(Target::Local(n));
        }
        Err(format!(
            "{s:?} is not a target: use meridian:PATH/client.toml, redis://HOST:PORT or local:N"
        ))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Meridian(path) => write!(f, "meridian:{}", path.display()),
            Target::Redis(addr) => write!(f, "redis://{addr}"),
            Target::Local(n) => write!(f, "local:{n}"),
        }
    }
}

/// Refuses anything but a loopback address.
pub fn check_loopback(ip: IpAddr) -> Result<(), String> {
    if ip.is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{ip} is not a loopback address; the benchmark only targets this machine"
        ))
    }
}

/// Checks that every node of a client config is on loopback.
pub fn check_config_loopback(config: &ClientConfig) -> Result<()> {
    for node in &config.nodes {
        let addr = node
            .address
            .to_socket_addrs()
            .with_context(|| format!("node {} address {}", node.name, node.address))?
            .next()
            .with_context(|| {
                format!(
                    "node {} address {} resolves to nothing",
                    node.name, node.address
                )
            })?;
        check_loopback(addr.ip()).map_err(|e| anyhow::anyhow!("node {}: {e}", node.name))?;
    }
    Ok(())
}

/// The operation mix.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Register put / Redis SET.
    Set,
    /// Register get / Redis GET.
    Get,
    /// Counter increment / Redis INCR.
    Incr,
    /// `--read-percent` gets, the rest sets.
    Mixed,
}

/// One operation to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Set,
    Get,
    Incr,
}

/// Fixed-width keys `key:000000000042` (prefix, then the zero-padded index
/// filling the requested width), so every key has exactly `key_bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpace {
    pub keys: u64,
    pub key_bytes: usize,
    prefix: String,
}

impl KeySpace {
    /// `keys` distinct keys of `key_bytes` bytes each, starting with
    /// `prefix` (which must leave room for the digits).
    pub fn new(prefix: &str, keys: u64, key_bytes: usize) -> Result<KeySpace, String> {
        if keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if key_bytes > meridian_client::wire::MAX_KEY_BYTES {
            return Err(format!(
                "--key-bytes {key_bytes} exceeds the {}-byte key limit",
                meridian_client::wire::MAX_KEY_BYTES
            ));
        }
        let digits = (keys - 1).to_string().len();
        if prefix.len() + digits > key_bytes {
            return Err(format!(
                "--key-bytes {key_bytes} is too short for {keys} keys with prefix {prefix:?} \
                 (needs {})",
                prefix.len() + digits
            ));
        }
        Ok(KeySpace {
            keys,
            key_bytes,
            prefix: prefix.to_owned(),
        })
    }

    /// Writes key number `i` (taken modulo the key count) into `out`.
    pub fn key_into(&self, i: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.prefix.as_bytes());
        let width = self.key_bytes - self.prefix.len();
        let digits = (i % self.keys).to_string();
        out.resize(out.len() + width - digits.len(), b'0');
        out.extend_from_slice(digits.as_bytes());
    }
}

/// splitmix64: a tiny, seedable generator for key choice (statistical
/// quality is ample for picking keys; determinism makes runs repeatable).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0), by multiply-shift (no modulo bias worth
    /// speaking of for n ≤ 2^32).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A target made ready to connect to.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A Meridian cluster: the client config, and the nodes workers are
    /// spread over (worker i is pinned to `nodes[i % len]`).
    Meridian {
        config: ClientConfig,
        nodes: Vec<String>,
    },
    Redis(SocketAddr),
}

impl Backend {
    pub fn is_redis(&self) -> bool {
        matches!(self, Backend::Redis(_))
    }

    /// Connects worker `i`'s connection.
    pub async fn connect(&self, i: usize, level: Consistency, timeout_ms: u32) -> Result<Conn> {
        match self {
            Backend::Meridian { config, nodes } => {
                let node = &nodes[i % nodes.len()];
                let client = Client::connect(config.clone().pinned(node))
                    .await
                    .with_context(|| format!("connecting to {node}"))?;
                Ok(Conn::Meridian {
                    client,
                    level,
                    timeout_ms,
                })
            }
            Backend::Redis(addr) => {
                let conn = RedisConn::connect(*addr)
                    .await
                    .with_context(|| format!("connecting to redis at {addr}"))?;
                Ok(Conn::Redis(conn))
            }
        }
    }
}

/// One worker's connection.
#[derive(Debug)]
pub enum Conn {
    /// One Meridian client (one QUIC connection), all requests at `level`.
    Meridian {
        client: Client,
        level: Consistency,
        timeout_ms: u32,
    },
    Redis(RedisConn),
}

/// A failed operation: a short kind for counting and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    pub kind: String,
    pub message: String,
}

impl Conn {
    pub fn is_redis(&self) -> bool {
        matches!(self, Conn::Redis(_))
    }

    /// Sends one operation and waits for its answer.
    pub async fn execute(&mut self, op: OpKind, key: &[u8], value: &[u8]) -> Result<(), OpError> {
        match self {
            Conn::Meridian {
                client,
                level,
                timeout_ms,
            } => {
                let key = key.to_vec();
                let op = match op {
                    OpKind::Set => Operation::RegisterPut {
                        key,
                        value: value.to_vec(),
                    },
                    OpKind::Get => Operation::RegisterGet { key },
                    OpKind::Incr => Operation::CounterIncr { key, delta: 1 },
                };
                let request = Request {
                    op,
                    consistency: *level,
                    timeout_ms: *timeout_ms,
                };
                client
                    .execute(request)
                    .await
                    .map(drop)
                    .map_err(|e| OpError {
                        kind: e.code().to_owned(),
                        message: e.to_string(),
                    })
            }
            Conn::Redis(conn) => {
                let reply = match op {
                    OpKind::Set => conn.call(&[b"SET", key, value]).await,
                    OpKind::Get => conn.call(&[b"GET", key]).await,
                    OpKind::Incr => conn.call(&[b"INCR", key]).await,
                };
                let failed = |kind: &str, message: String| OpError {
                    kind: kind.to_owned(),
                    message,
                };
                match (op, reply) {
                    (OpKind::Set, Ok(Reply::Simple(_)))
                    | (OpKind::Get, Ok(Reply::Bulk(_)))
                    | (OpKind::Incr, Ok(Reply::Integer(_))) => Ok(()),
                    (_, Ok(Reply::Error(e))) => Err(failed("redis", e)),
                    (_, Ok(other)) => {
                        Err(failed("protocol", format!("unexpected reply {other:?}")))
                    }
                    (_, Err(e)) => Err(failed("io", e.to_string())),
                }
            }
        }
    }

    /// Closes the connection (Meridian: tells the node at once).
    pub async fn close(self) {
        if let Conn::Meridian { client, .. } = self {
            client.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_stay_on_loopback() {
        assert_eq!(
            "meridian:/tmp/c/client.toml".parse::<Target>().unwrap(),
            Target::Meridian("/tmp/c/client.toml".into())
        );
        assert_eq!(
            "redis://127.0.0.1:6390".parse::<Target>().unwrap(),
            Target::Redis("127.0.0.1:6390".parse().unwrap())
        );
        assert_eq!("local:3".parse::<Target>().unwrap(), Target::Local(3));
        for bad in [
            "local:0",
            "local:x",
            "meridian:",
            "redis://10.0.0.1:6379",
            "redis://127.0.0.1",
            "http://x",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        assert_eq!(Target::Local(3).to_string(), "local:3");
    }

    #[test]
    fn keys_have_the_requested_width() {
        let ks = KeySpace::new("key:", 1_000_000, 16).unwrap();
        let mut k = Vec::new();
        ks.key_into(42, &mut k);
        assert_eq!(k, b"key:000000000042");
        ks.key_into(1_000_000 + 7, &mut k);
        assert_eq!(k, b"key:000000000007");
        assert!(KeySpace::new("key:", 1_000_000, 9).is_err());
        assert!(KeySpace::new("key:", 0, 16).is_err());
        assert!(KeySpace::new("key:", 10, 5000).is_err());
        let tight = KeySpace::new("k", 100, 3).unwrap();
        tight.key_into(99, &mut k);
        assert_eq!(k, b"k99");
    }

    #[test]
    fn the_generator_is_seeded_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x < 10));
        // Every value turns up in a few hundred draws.
        let mut seen = [false; 10];
        for _ in 0..500 {
            seen[a.below(10) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
