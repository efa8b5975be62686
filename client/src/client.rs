//! [`Client`]: the cloneable handle, its connection to the current node,
//! failover, deadlines and the retry rules.
//!
//! Shape: every clone shares one [`ClientState`], which holds the current
//! authenticated connection. A QUIC connection multiplexes streams, so
//! concurrent requests simply open one stream each on it; the request path
//! takes a short (never awaited-across) lock to clone the connection handle
//! and nothing else. Only (re)connecting is serialised, so that a burst of
//! requests after a failure makes one connection, not one each.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::Error;
use crate::config::ClientConfig;
use crate::connection::{self, CONNECT_TIMEOUT, ConnectFailure, Endpoints, ExchangeError};
use crate::object::{Counter, KeyPage, Map, Register, RequestBuilder, Set};
use crate::wire::{
    self, Consistency, Kind, NodeStatus, Operation, Reply, ReplyValue, Request, Response, WireError,
};

/// How much longer than the request's own (server-side) timeout the client
/// waits for an answer before giving up with `Timeout { acked: 0, needed: 0 }`.
/// The server answers `Timeout` itself at its deadline; the margin covers the
/// round trip of that answer, so the client's deadline only fires when the
/// node or the path to it is dead.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// A handle to a Meridian cluster.
///
/// Cheap to clone (an [`Arc`]); all clones share the connection, so make one
/// at start-up and clone it into tasks. Any number of requests may be in
/// flight at once: each uses its own QUIC stream, so a slow request never
/// delays a fast one.
///
/// The client talks to one node at a time: the preferred node (else the
/// first configured one) while it is reachable. When it is not, the client
/// moves to the next node (unless pinned) and stays there until that one
/// fails. Connections are (re)made lazily, by the first request that needs
/// one.
#[derive(Clone)]
pub struct Client {
    shared: Arc<ClientState>,
}

/// What every clone of a [`Client`] shares: its configuration and connection.
struct ClientState {
    config: ClientConfig,
    /// Node indices in the order to try them (preferred first; only it when
    /// pinned).
    order: Vec<usize>,
    quic: quinn::ClientConfig,
    default_timeout_ms: u32,
    endpoints: Endpoints,
    /// The connection requests use. Locked only to clone or replace it.
    current: Mutex<Option<NodeConnection>>,
    /// Held while (re)connecting, so only one connection attempt runs.
    connecting: tokio::sync::Mutex<()>,
}

/// An authenticated connection and the node at its other end.
#[derive(Clone)]
struct NodeConnection {
    connection: quinn::Connection,
    /// Index into `config.nodes`.
    index: usize,
    name: Arc<str>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<&str> = self
            .shared
            .config
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        f.debug_struct("Client")
            .field("nodes", &nodes)
            .field("current_node", &self.current_node())
            .field("failover", &self.shared.config.failover)
            .finish()
    }
}

impl Client {
    /// Validates `config`, then connects and authenticates to the preferred
    /// (else first) node; if that fails, to the next one, and so on (unless
    /// pinned). Each node gets at most [`CONNECT_TIMEOUT`].
    ///
    /// Errors: [`Error::Config`] for an unusable configuration,
    /// [`Error::Unauthorized`] if the token is refused, [`Error::Connect`]
    /// (listing every node tried and why) if no node could be reached.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let prepared = config.prepare()?;
        let client = Client {
            shared: Arc::new(ClientState {
                order: prepared.order,
                quic: connection::quic_config(prepared.crypto),
                default_timeout_ms: prepared.default_timeout_ms,
                endpoints: Endpoints::default(),
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                config,
            }),
        };
        let attempts = u32::try_from(client.shared.order.len()).unwrap_or(u32::MAX);
        let deadline = Instant::now() + CONNECT_TIMEOUT.saturating_mul(attempts);
        client.shared.acquire(&[], deadline).await?;
        Ok(client)
    }

    /// A handle on the counter at `key`.
    pub fn counter(&self, key: impl Into<Vec<u8>>) -> Counter {
        Counter::new(self.clone(), key.into())
    }

    /// A handle on the set at `key`.
    pub fn set(&self, key: impl Into<Vec<u8>>) -> Set {
        Set::new(self.clone(), key.into())
    }

    /// A handle on the last-writer-wins register at `key`.
    pub fn register(&self, key: impl Into<Vec<u8>>) -> Register {
        Register::new(self.clone(), key.into())
    }

    /// One page of the keys the serving node stores whose key starts with
    /// `prefix` (empty: every key): start with `cursor` `None`, then pass
    /// each page's [`KeyPage::cursor`] until it is `None`. `count` bounds
    /// the objects the node visits for the page (0: 10; at most
    /// [`wire::MAX_SCAN_COUNT`]): a page may list fewer keys, even none,
    /// before the scan is complete.
    ///
    /// Every key present on the serving node from the first page to the
    /// last is listed at least once (keys added or removed meanwhile may or
    /// may not be). A node stores only the keys its placement gives it:
    /// keys pinned to other regions are listed only by their replicas. The
    /// consistency level does not change what is listed (one node's store,
    /// at every level). A cursor is a position in an order every node
    /// shares (type, then key length, then key bytes), so a scan that
    /// fails over continues on the next node in the same order.
    pub fn scan(
        &self,
        prefix: impl Into<Vec<u8>>,
        cursor: Option<Vec<u8>>,
        count: u32,
    ) -> RequestBuilder<KeyPage> {
        RequestBuilder::new(
            self,
            Operation::Scan {
                cursor: cursor.unwrap_or_default(),
                prefix: prefix.into(),
                count,
            },
        )
    }

    /// A handle on the map (Redis hash) at `key`.
    pub fn map(&self, key: impl Into<Vec<u8>>) -> Map {
        Map::new(self.clone(), key.into())
    }

    /// The serving node's view of the cluster (as `meridian status` shows
    /// it). A read: retried on another node if the connection fails.
    pub async fn status(&self) -> Result<NodeStatus, Error> {
        let reply = self
            .execute(Request {
                op: Operation::Status,
                consistency: Consistency::Local,
                timeout_ms: 0,
            })
            .await?;
        match reply.value {
            ReplyValue::Status(status) => Ok(status),
            // `execute` already checked the reply fits the request.
            other => unreachable!("status answered with {other:?}"),
        }
    }

    /// Shifts the serving node's physical clock by `offset_ms` (the partition
    /// harness's clock-skew fault). Only nodes started with
    /// `--allow-debug-clock` accept it; others answer
    /// [`Error::InvalidArgument`]. A write: never retried.
    pub async fn debug_clock_offset(&self, offset_ms: i64) -> Result<(), Error> {
        self.execute(Request {
            op: Operation::DebugClockOffset { offset_ms },
            consistency: Consistency::Local,
            timeout_ms: 0,
        })
        .await
        .map(drop)
    }

    /// Sends one raw request and returns the server's reply (used by the
    /// CLI and the load generator; applications use the typed handles).
    ///
    /// `timeout_ms == 0` means the configured default timeout. The request
    /// is checked against the limits before anything is sent, and the reply
    /// is checked to fit the request. Reads are retried on other nodes if
    /// the connection fails (each node at most once); writes never are once
    /// any of their bytes may have been sent.
    pub async fn execute(&self, mut request: Request) -> Result<Reply, Error> {
        if request.timeout_ms == 0 {
            request.timeout_ms = self.shared.default_timeout_ms;
        }
        check_request(&request.op)?;
        if !request.consistency.is_valid() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a level: replicas-N takes N from 1 to {}",
                request.consistency,
                wire::MAX_REPLICAS_LEVEL
            )));
        }
        let frame = wire::encode(&request);
        if frame.len() - 4 > wire::MAX_FRAME_BYTES {
            return Err(Error::InvalidArgument(format!(
                "request of {} bytes exceeds the {}-byte frame limit",
                frame.len() - 4,
                wire::MAX_FRAME_BYTES
            )));
        }
        let span = tracing::debug_span!(
            "request",
            op = op_name(&request.op),
            key_len = request.op.key().map(<[u8]>::len),
            consistency = %request.consistency,
            timeout_ms = request.timeout_ms,
            node = tracing::field::Empty,
        );
        self.shared.run(&request, &frame).instrument(span).await
    }

    /// The consistency level of requests that don't choose one.
    pub fn default_consistency(&self) -> Consistency {
        self.shared.config.default_consistency
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// Name of the node the client is connected to, if it is connected.
    pub fn current_node(&self) -> Option<String> {
        let current = self.shared.current.lock().unwrap();
        current
            .as_ref()
            .filter(|c| c.connection.close_reason().is_none())
            .map(|c| c.name.to_string())
    }

    /// Closes the connection now, so the node frees its resources at once,
    /// and waits (briefly) for the close to be sent. Requests still in flight
    /// fail with [`Error::ConnectionLost`]. The client stays usable: a later
    /// request reconnects.
    pub async fn close(&self) {
        /// Bound on waiting for the close to reach the node; after this the
        /// node's idle timeout cleans up.
        const CLOSE_WAIT: Duration = Duration::from_secs(1);
        if let Some(current) = self.shared.current.lock().unwrap().take() {
            connection::close(&current.connection);
        }
        for endpoint in self.shared.endpoints.all() {
            let _ = tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle()).await;
        }
    }
}

impl ClientState {
    /// Runs one request to completion under its deadline, moving to other
    /// nodes as far as the retry rules allow:
    ///
    /// - a failure to even open the stream (nothing sent) may move any
    ///   request, a lost connection after sending only a read;
    /// - each node is tried at most once per call, except that a connection
    ///   this call found already open (it may have died unnoticed, e.g. the
    ///   node restarted) earns its node one retry on a fresh connection,
    ///   after every other node;
    /// - answers from a server are final.
    async fn run(&self, request: &Request, frame: &[u8]) -> Result<Reply, Error> {
        let deadline =
            Instant::now() + Duration::from_millis(u64::from(request.timeout_ms)) + DEADLINE_MARGIN;
        let write = request.op.is_write();
        let mut tried: Vec<usize> = Vec::with_capacity(1);
        let mut second_chance: Option<usize> = None;
        let mut failed: Option<Error> = None;
        loop {
            if let Some(previous) = &failed
                && self.order.iter().all(|i| tried.contains(i))
            {
                match second_chance.take() {
                    Some(index) => tried.retain(|&i| i != index),
                    None => return Err(previous.clone()),
                }
            }
            let (node, reused) = match self.acquire(&tried, deadline).await {
                Ok(acquired) => acquired,
                Err(Error::Connect { node, message }) if failed.is_some() => {
                    let previous = failed.take().unwrap();
                    return Err(Error::Connect {
                        node,
                        message: format!("{message} (after: {previous})"),
                    });
                }
                Err(e) => return Err(e),
            };
            tried.push(node.index);
            tracing::Span::current().record("node", &*node.name);
            let outcome =
                tokio::time::timeout_at(deadline, connection::exchange(&node.connection, frame))
                    .await;
            let failure = match outcome {
                Err(_elapsed) => {
                    tracing::debug!("client deadline expired");
                    return Err(Error::Timeout {
                        acked: 0,
                        needed: 0,
                    });
                }
                Ok(Ok(Response::Ok(reply))) => {
                    check_reply(&request.op, &reply)?;
                    return Ok(reply);
                }
                Ok(Ok(Response::Err(e))) => {
                    tracing::debug!(error = %e, "server refused the request");
                    return Err(e.into());
                }
                Ok(Err(ExchangeError::Protocol(message))) => {
                    return Err(Error::Protocol(format!("{}: {message}", node.name)));
                }
                Ok(Err(ExchangeError::NotSent(message))) => Error::Connect {
                    node: node.name.to_string(),
                    message,
                },
                Ok(Err(ExchangeError::Lost(message))) => {
                    self.forget(&node);
                    let lost = Error::ConnectionLost(format!("{}: {message}", node.name));
                    if write {
                        // Bytes may have reached the node: never re-send.
                        tracing::debug!(error = %lost, "write's connection lost; not retried");
                        return Err(lost);
                    }
                    lost
                }
            };
            self.forget(&node);
            if reused && failed.is_none() {
                second_chance = Some(node.index);
            }
            tracing::debug!(error = %failure, "connection failed; trying another node if allowed");
            failed = Some(failure);
        }
    }

    /// The current connection if it is alive and to a node not in `tried`.
    fn live(&self, tried: &[usize]) -> Option<NodeConnection> {
        let current = self.current.lock().unwrap();
        current
            .as_ref()
            .filter(|c| c.connection.close_reason().is_none() && !tried.contains(&c.index))
            .cloned()
    }

    /// A live connection to a node not in `tried`: the current one (then
    /// `true`: reused), or a new one to the first node (in preference order)
    /// that answers.
    async fn acquire(
        &self,
        tried: &[usize],
        deadline: Instant,
    ) -> Result<(NodeConnection, bool), Error> {
        if let Some(node) = self.live(tried) {
            return Ok((node, true));
        }
        let _connecting = tokio::time::timeout_at(deadline, self.connecting.lock())
            .await
            .map_err(|_| Error::Connect {
                node: self.names(tried),
                message: "deadline passed while another request was connecting".into(),
            })?;
        // Someone may have connected while this request waited.
        if let Some(node) = self.live(tried) {
            return Ok((node, false));
        }
        let mut names = Vec::new();
        let mut failures = Vec::new();
        for &index in self.order.iter().filter(|i| !tried.contains(i)) {
            let node = &self.config.nodes[index];
            let budget = deadline
                .saturating_duration_since(Instant::now())
                .min(CONNECT_TIMEOUT);
            if budget.is_zero() {
                failures.push((
                    "(others)",
                    "deadline passed before the remaining nodes were tried".to_owned(),
                ));
                break;
            }
            names.push(node.name.as_str());
            let span = tracing::debug_span!("connect", node = %node.name, address = %node.address);
            let attempt = connection::establish(
                &self.endpoints,
                &self.quic,
                node,
                self.config.token.as_bytes(),
            )
            .instrument(span);
            let failure = match tokio::time::timeout(budget, attempt).await {
                Ok(Ok(connection)) => {
                    tracing::debug!(node = %node.name, "connected");
                    let node = NodeConnection {
                        connection,
                        index,
                        name: node.name.as_str().into(),
                    };
                    *self.current.lock().unwrap() = Some(node.clone());
                    return Ok((node, false));
                }
                Ok(Err(ConnectFailure::Refused(WireError::Unauthorized { message }))) => {
                    // The token is cluster-wide: other nodes would refuse too.
                    return Err(Error::Unauthorized(message));
                }
                Ok(Err(failure)) => failure.to_string(),
                Err(_elapsed) => format!("no answer within {} ms", budget.as_millis()),
            };
            tracing::warn!(node = %node.name, address = %node.address, error = %failure,
                "cannot connect to node");
            failures.push((
                node.name.as_str(),
                format!("{failure} (address {})", node.address),
            ));
        }
        let message = match failures.as_slice() {
            [(_, only)] => only.clone(),
            _ => {
                let each: Vec<String> = failures
                    .iter()
                    .map(|(name, failure)| format!("{name}: {failure}"))
                    .collect();
                each.join("; ")
            }
        };
        if names.is_empty() {
            names.push("no node");
        }
        Err(Error::Connect {
            node: names.join(", "),
            message,
        })
    }

    /// Drops `node`'s connection if it is still the current one, so the next
    /// request reconnects.
    fn forget(&self, node: &NodeConnection) {
        let mut current = self.current.lock().unwrap();
        if current
            .as_ref()
            .is_some_and(|c| c.connection.stable_id() == node.connection.stable_id())
        {
            *current = None;
        }
    }

    fn names(&self, indices: &[usize]) -> String {
        let names: Vec<&str> = self
            .order
            .iter()
            .filter(|i| !indices.contains(i))
            .map(|&i| self.config.nodes[i].name.as_str())
            .collect();
        names.join(", ")
    }
}

/// Checks a request against the limits, so that nothing oversized is sent.
fn check_request(op: &Operation) -> Result<(), Error> {
    wire::check(op).map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// Checks that the reply's value is the kind the operation produces.
fn check_reply(op: &Operation, reply: &Reply) -> Result<(), Error> {
    let expected = match op {
        Operation::CounterIncr { .. } | Operation::CounterRead { .. } => "counter",
        Operation::SetAdd { .. } | Operation::SetRemove { .. } | Operation::SetRead { .. } => "set",
        Operation::RegisterPut { .. }
        | Operation::RegisterGet { .. }
        | Operation::RegisterPutTtl { .. } => "register",
        Operation::Delete { kind, .. } => kind.as_str(),
        Operation::Status => "status",
        Operation::DebugClockOffset { .. } => "empty",
        Operation::Inspect { .. } => "inspection",
        Operation::Scan { .. } => "keys",
        Operation::SetPage { .. } => "set page",
        Operation::MapSet { .. }
        | Operation::MapIncr { .. }
        | Operation::MapRemove { .. }
        | Operation::MapRead { .. } => "map",
        Operation::Probe { .. } => "probe",
        Operation::Expire { .. } | Operation::Persist { .. } | Operation::Ttl { .. } => "ttl",
    };
    let got = match &reply.value {
        ReplyValue::Counter { .. } => "counter",
        ReplyValue::Set { .. } => "set",
        ReplyValue::Register { .. } => "register",
        ReplyValue::Status(_) => "status",
        ReplyValue::Done => "empty",
        ReplyValue::Inspect { .. } => "inspection",
        ReplyValue::Keys { .. } => "keys",
        ReplyValue::SetPage { .. } => "set page",
        ReplyValue::Map { .. } => "map",
        ReplyValue::Probe { .. } => "probe",
        ReplyValue::Ttl { .. } => "ttl",
    };
    if got == expected {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "{} answered {} with a {got} value",
            reply.node,
            op_name(op)
        )))
    }
}

/// The operation's key, if it has one.
/// A short name of the operation, for logs and errors.
fn op_name(op: &Operation) -> &'static str {
    match op {
        Operation::CounterIncr { .. } => "counter.incr",
        Operation::CounterRead { .. } => "counter.read",
        Operation::SetAdd { .. } => "set.add",
        Operation::SetRemove { .. } => "set.remove",
        Operation::SetRead { .. } => "set.members",
        Operation::RegisterPut { .. } => "register.put",
        Operation::RegisterGet { .. } => "register.get",
        Operation::Delete {
            kind: Kind::Counter,
            ..
        } => "counter.delete",
        Operation::Delete {
            kind: Kind::Set, ..
        } => "set.delete",
        Operation::Delete {
            kind: Kind::Register,
            ..
        } => "register.delete",
        Operation::Delete {
            kind: Kind::Map, ..
        } => "map.delete",
        Operation::Status => "status",
        Operation::DebugClockOffset { .. } => "debug_clock_offset",
        Operation::Inspect { .. } => "inspect",
        Operation::Scan { .. } => "scan",
        Operation::SetPage { .. } => "set.page",
        Operation::MapSet { .. } => "map.set",
        Operation::MapIncr { .. } => "map.incr",
        Operation::MapRemove { .. } => "map.remove",
        Operation::MapRead { .. } => "map.read",
        Operation::Probe { .. } => "probe",
        Operation::RegisterPutTtl { .. } => "register.put",
        Operation::Expire { .. } => "expire",
        Operation::Persist { .. } => "persist",
        Operation::Ttl { .. } => "ttl",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_locally() {
        let big_key = vec![0u8; wire::MAX_KEY_BYTES + 1];
        let ok_key = vec![0xffu8; wire::MAX_KEY_BYTES];
        assert!(
            check_request(&Operation::CounterRead {
                key: ok_key.clone()
            })
            .is_ok()
        );
        let e = check_request(&Operation::CounterRead { key: big_key }).unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        let e = check_request(&Operation::SetAdd {
            key: ok_key.clone(),
            members: vec![b"a".to_vec(), vec![1; wire::MAX_VALUE_BYTES + 1]],
        })
        .unwrap_err();
        assert!(e.to_string().contains("member #2"), "{e}");
        let e = check_request(&Operation::RegisterPut {
            key: ok_key.clone(),
            value: vec![1; wire::MAX_VALUE_BYTES + 1],
        })
        .unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        let e = check_request(&Operation::SetAdd {
            key: ok_key,
            members: vec![
                vec![1; wire::MAX_VALUE_BYTES];
                wire::MAX_OBJECT_BYTES / wire::MAX_VALUE_BYTES + 1
            ],
        })
        .unwrap_err();
        assert!(e.to_string().contains("object limit"), "{e}");
    }

    #[test]
    fn replies_must_fit_the_request() {
        let reply = |value| Reply {
            node: "n".into(),
            consistency: Consistency::Local,
            value,
        };
        let counter = reply(ReplyValue::Counter { value: 1 });
        let key = b"k".to_vec();
        assert!(check_reply(&Operation::CounterRead { key: key.clone() }, &counter).is_ok());
        assert!(
            check_reply(
                &Operation::Delete {
                    kind: Kind::Counter,
                    key: key.clone()
                },
                &counter
            )
            .is_ok()
        );
        let e = check_reply(&Operation::SetRead { key }, &counter).unwrap_err();
        assert_eq!(e.code(), "protocol");
        assert!(check_reply(&Operation::Status, &reply(ReplyValue::Done)).is_err());
    }
}
