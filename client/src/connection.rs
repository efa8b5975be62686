//! One authenticated QUIC connection to one node, and the exchange of one
//! request on it.
//!
//! A connection is established in two steps, both bounded by
//! [`CONNECT_TIMEOUT`]: the QUIC/TLS handshake (the node's certificate must
//! chain to the cluster CA and be issued for the node's configured name; the
//! client presents its own certificate), then the `Hello` stream carrying the
//! access token. After that every request opens its own bidirectional stream:
//! write one frame, finish, read one frame. Nothing on the request path waits
//! for the peer to acknowledge stream data (`SendStream::stopped`), which
//! would add a delayed-ACK period (~25 ms) to every request.
//!
//! A failed exchange is classified by what the server may have seen
//! ([`ExchangeError`]): that is what lets the caller decide whether another
//! node may be tried.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Endpoint, IdleTimeout, RecvStream, TransportConfig, VarInt};

use crate::config::NodeEntry;
use crate::wire::{self, Hello, HelloReply, Response, WireError};

/// Bound on establishing one connection (QUIC handshake + `Hello`), per node.
/// A handshake is two round trips and `Hello` one more: well under a second
/// even between continents. 2 s bounds how long a caller waits before the
/// client moves past a node that is down (whose packets vanish: QUIC over
/// UDP gets no "connection refused").
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Interval of QUIC keep-alive pings on an idle connection, so that the idle
/// timeout below measures the peer's silence, not the application's.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// A connection that hears nothing from its node for this long is dead
/// (five missed keep-alives). Requests in flight on it fail with
/// `ConnectionLost` and the next request reconnects, possibly elsewhere.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Application close code the client uses when it closes a connection.
const CLOSE_NORMAL: u32 = 0;

/// The QUIC client configuration: the TLS identity plus the transport
/// settings above.
pub(crate) fn quic_config(crypto: QuicClientConfig) -> quinn::ClientConfig {
    let mut transport = TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    transport.max_idle_timeout(Some(
        IdleTimeout::try_from(IDLE_TIMEOUT).expect("5 s is a valid QUIC idle timeout"),
    ));
    // Servers never open streams towards a client.
    transport.max_concurrent_bidi_streams(VarInt::from_u32(0));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    config
}

/// Client endpoints (UDP sockets), created on first use, one per local
/// address: loopback for nodes on loopback (the tests, the local demo),
/// the unspecified address of the family otherwise. Many connections share
/// one endpoint.
#[derive(Debug, Default)]
pub(crate) struct Endpoints {
    bound: Mutex<Vec<(IpAddr, Endpoint)>>,
}

impl Endpoints {
    fn for_remote(&self, remote: SocketAddr) -> io::Result<Endpoint> {
        let local: IpAddr = match (remote.ip(), remote.ip().is_loopback()) {
            (IpAddr::V4(_), true) => Ipv4Addr::LOCALHOST.into(),
            (IpAddr::V4(_), false) => Ipv4Addr::UNSPECIFIED.into(),
            (IpAddr::V6(_), true) => Ipv6Addr::LOCALHOST.into(),
            (IpAddr::V6(_), false) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let mut bound = self.bound.lock().unwrap();
        if let Some((_, endpoint)) = bound.iter().find(|(ip, _)| *ip == local) {
            return Ok(endpoint.clone());
        }
        let endpoint = Endpoint::client(SocketAddr::new(local, 0))?;
        bound.push((local, endpoint.clone()));
        Ok(endpoint)
    }

    /// Every endpoint created so far.
    pub(crate) fn all(&self) -> Vec<Endpoint> {
        let bound = self.bound.lock().unwrap();
        bound.iter().map(|(_, e)| e.clone()).collect()
    }
}

/// Why a connection could not be established.
#[derive(Debug)]
pub(crate) enum ConnectFailure {
    /// The node answered the `Hello` with a refusal.
    Refused(WireError),
    /// The node could not be reached or its certificate was not acceptable.
    Unreachable(String),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Refused(e) => write!(f, "refused the connection: {e}"),
            ConnectFailure::Unreachable(message) => f.write_str(message),
        }
    }
}

/// Connects to `node`, checks its certificate and authenticates with `token`.
/// Not bounded in time by itself: the caller wraps it in a timeout.
pub(crate) async fn establish(
    endpoints: &Endpoints,
    config: &quinn::ClientConfig,
    node: &NodeEntry,
    token: &[u8],
) -> Result<quinn::Connection, ConnectFailure> {
    let unreachable =
        |what: &str, e: &dyn std::fmt::Display| ConnectFailure::Unreachable(format!("{what}: {e}"));
    // Prefer IPv4 when a name resolves to both families ("localhost"): the
    // nodes' listeners are configured with IPv4 addresses by default.
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(node.address.as_str())
        .await
        .map_err(|e| unreachable("cannot resolve address", &e))?
        .collect();
    let remote = resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| ConnectFailure::Unreachable("address resolves to nothing".into()))?;
    let endpoint = endpoints
        .for_remote(remote)
        .map_err(|e| unreachable("cannot open a UDP socket", &e))?;
    let connection = endpoint
        .connect_with(config.clone(), remote, &node.name)
        .map_err(|e| unreachable("cannot start the QUIC handshake", &e))?
        .await
        .map_err(|e| unreachable("QUIC/TLS handshake failed", &e))?;

    // The Hello exchange: one stream, one frame each way.
    let hello = wire::encode(&Hello {
        version: wire::PROTOCOL_VERSION,
        token: token.to_vec(),
    });
    let lost = |e: &dyn std::fmt::Display| unreachable("connection lost during Hello", e);
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(&e))?;
    send.write_all(&hello).await.map_err(|e| lost(&e))?;
    send.finish().map_err(|e| lost(&e))?;
    let payload = read_frame(&mut recv).await.map_err(|e| match e {
        ExchangeError::Protocol(m) => unreachable("bad Hello reply", &m),
        ExchangeError::NotSent(m) | ExchangeError::Lost(m) => lost(&m),
    })?;
    match wire::decode::<HelloReply>(&payload) {
        Ok(HelloReply::Ok { node: name, region }) => {
            if name != node.name {
                // The certificate was issued for `node.name`; a differing
                // self-description is a misconfiguration worth a warning,
                // not a reason to refuse a node the CA vouches for.
                tracing::warn!(configured = %node.name, reported = %name, %region,
                    "node reports a different name than configured");
            }
            Ok(connection)
        }
        Ok(HelloReply::Refused(e)) => {
            connection.close(VarInt::from_u32(CLOSE_NORMAL), b"refused");
            Err(ConnectFailure::Refused(e))
        }
        Err(e) => {
            connection.close(VarInt::from_u32(CLOSE_NORMAL), b"bad hello reply");
            Err(unreachable("bad Hello reply", &e))
        }
    }
}

/// Closes `connection` politely (the node frees its state at once instead
/// of waiting for the idle timeout).
pub(crate) fn close(connection: &quinn::Connection) {
    connection.close(VarInt::from_u32(CLOSE_NORMAL), b"client closed");
}

/// How one exchange failed, by what the server may have seen.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// The stream could not be opened: no byte of the request left the
    /// client. Safe to try elsewhere, even for a write.
    NotSent(String),
    /// The connection broke after the request was (possibly) sent.
    Lost(String),
    /// The server's answer was malformed, truncated or abandoned.
    Protocol(String),
}

/// Sends one request `frame` on a new stream of `connection` and reads the
/// response. Not bounded in time by itself: the caller applies the deadline.
pub(crate) async fn exchange(
    connection: &quinn::Connection,
    frame: &[u8],
) -> Result<Response, ExchangeError> {
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| ExchangeError::NotSent(format!("cannot open a stream: {e}")))?;
    match send.write_all(frame).await {
        Ok(()) => {
            // Only fails on a stream already finished or reset, which this
            // one is not; if the connection is gone, reading says so.
            let _ = send.finish();
        }
        // The server stopped reading (e.g. it refused the frame): its answer,
        // if any, explains why.
        Err(quinn::WriteError::Stopped(_)) => {}
        Err(e) => {
            return Err(ExchangeError::Lost(format!(
                "while sending the request: {e}"
            )));
        }
    }
    let payload = read_frame(&mut recv).await?;
    wire::decode::<Response>(&payload)
        .map_err(|e| ExchangeError::Protocol(format!("undecodable response: {e}")))
}

/// Reads one response frame (at most [`wire::MAX_FRAME_BYTES`]).
async fn read_frame(recv: &mut RecvStream) -> Result<Vec<u8>, ExchangeError> {
    wire::read_frame(recv, wire::MAX_FRAME_BYTES)
        .await
        .map_err(|e| match e {
            wire::ReadFrameError::Read(e) => read_failure(e),
            wire::ReadFrameError::Length(e) => ExchangeError::Protocol(e.to_string()),
        })
}

fn read_failure(e: quinn::ReadExactError) -> ExchangeError {
    use quinn::{ReadError, ReadExactError};
    match e {
        ReadExactError::FinishedEarly(n) => ExchangeError::Protocol(format!(
            "the server ended the stream after {n} bytes, without a complete response"
        )),
        ReadExactError::ReadError(ReadError::Reset(code)) => ExchangeError::Protocol(format!(
            "the server abandoned the request (stream reset, code {code})"
        )),
        ReadExactError::ReadError(ReadError::ConnectionLost(e)) => {
            ExchangeError::Lost(format!("while waiting for the response: {e}"))
        }
        ReadExactError::ReadError(e) => ExchangeError::Lost(format!("while reading: {e}")),
    }
}
