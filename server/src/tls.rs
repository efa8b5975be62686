//! TLS for the client listener (ALPN [`meridian_client::wire::ALPN`]).
//!
//! The node presents its own certificate (clients dial it by node name) and
//! requires a client certificate that chains to the cluster CA: the
//! cluster's client certificate, or a node certificate (a node may act as a
//! client, e.g. tools running next to it). The certificate only proves
//! membership of the cluster; the access token in the `Hello` frame is
//! checked before any request.
//!
//! Crypto is rustls' `ring` provider, passed explicitly (see
//! [`meridian_replication::tls`], whose PEM and verifier helpers this uses).

use std::sync::Arc;
use std::time::Duration;

use meridian_replication::tls::{TlsError, mutual_tls_server_config, server_config};

use crate::config::LimitsConfig;

/// Idle timeout of a client connection, in milliseconds. Clients send
/// keep-alives while they hold a connection open; one silent this long has
/// gone away, and its connection slot (see `max_client_connections`) is
/// freed. Longer than the peer link's: client networks are less reliable.
pub const CLIENT_IDLE_TIMEOUT_MS: u64 = 30_000;

/// Receive window of one client stream, in bytes. A request is at most
/// [`meridian_client::wire::MAX_FRAME_BYTES`]; flow control paces larger
/// ones instead of buffering them whole at once.
pub const CLIENT_STREAM_RECEIVE_WINDOW_BYTES: u32 = 1 << 20;

/// Receive window of a whole authenticated client connection, in bytes:
/// request data QUIC may buffer that the node has not read yet (a request
/// waiting for its connection's budget is not read), however many streams
/// the client opens. 1 MiB is 10 MiB/s of upload per connection at a
/// 100 ms round trip (clients talk to a node of their own region) and
/// bounds what a connection that withholds frames pins beyond its budget.
/// Before authentication the window is [`crate::listener::HELLO_RECEIVE_WINDOW_BYTES`].
pub const CLIENT_RECEIVE_WINDOW_BYTES: u32 = 1 << 20;

/// Send window of a client connection, in bytes: answers QUIC keeps until
/// the client acknowledges them. Bounds what a client that does not read
/// its answers pins in QUIC beyond the node's own (budgeted) buffers.
pub const CLIENT_SEND_WINDOW_BYTES: u32 = 1 << 20;

/// What one authenticated client connection may make QUIC buffer outside
/// the node's byte budgets, in bytes (its receive and send windows).
pub const CLIENT_CONNECTION_WINDOW_BYTES: u64 =
    CLIENT_RECEIVE_WINDOW_BYTES as u64 + CLIENT_SEND_WINDOW_BYTES as u64;

/// Most connection attempts QUIC queues for the accept loop, and the bytes
/// it buffers for them in all: the loop takes them at once, so these only
/// matter in a flood (then further attempts are refused by QUIC itself).
pub const MAX_CLIENT_INCOMING: usize = 1_024;
pub const CLIENT_INCOMING_BUFFER_BYTES: u64 = 4 << 20;

/// QUIC transport settings of client connections as they start: one
/// bidirectional stream (the `Hello`) and a receive window for it alone
/// ([`crate::listener::HELLO_RECEIVE_WINDOW_BYTES`]). The listener raises
/// both once the client has shown the token: up to
/// `max_in_flight_per_connection` streams and [`CLIENT_RECEIVE_WINDOW_BYTES`].
/// Clients open no unidirectional streams.
pub fn client_transport_config(_limits: &LimitsConfig) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_millis(CLIENT_IDLE_TIMEOUT_MS))
                .expect("the client idle timeout fits a QUIC varint"),
        ))
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(CLIENT_STREAM_RECEIVE_WINDOW_BYTES.into())
        .receive_window(crate::listener::HELLO_RECEIVE_WINDOW_BYTES.into())
        .send_window(CLIENT_SEND_WINDOW_BYTES.into());
    transport
}

/// The client listener's configuration: presents the node certificate,
/// requires a client certificate chaining to the cluster CA, and applies
/// the per-connection limits. (Handshake, pending and connection caps are
/// enforced by the accept loop: [`crate::listener`].)
pub fn client_listener_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    limits: &LimitsConfig,
) -> Result<quinn::ServerConfig, TlsError> {
    let tls = mutual_tls_server_config(ca_pem, cert_pem, key_pem, meridian_client::wire::ALPN)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config
        .transport_config(Arc::new(client_transport_config(limits)))
        .max_incoming(MAX_CLIENT_INCOMING)
        .incoming_buffer_size(CLIENT_INCOMING_BUFFER_BYTES / MAX_CLIENT_INCOMING as u64)
        .incoming_buffer_size_total(CLIENT_INCOMING_BUFFER_BYTES);
    Ok(config)
}

/// TLS of the RESP port (`[resp] tls = true`): the node presents its own
/// certificate (issued by the cluster CA for the node's name and host, so
/// `redis-cli --tls --cacert ca.pem` verifies it) and asks for no client
/// certificate: Redis clients authenticate with the access token (AUTH).
/// TLS 1.2 and 1.3, as Redis clients built on OpenSSL expect.
pub fn resp_tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    Ok(Arc::new(server_config(cert_pem, key_pem, &versions, None)?))
}
