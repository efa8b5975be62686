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

use meridian_replication::tls::{TlsError, mutual_tls_server_config};

use crate::config::LimitsConfig;

/// Idle timeout of a client connection, in milliseconds. Clients send
/// keep-alives while they hold a connection open; one silent this long has
/// gone away, and its connection slot (see `max_client_connections`) is
/// freed. Longer than the peer link's: client networks are less reliable.
pub const CLIENT_IDLE_TIMEOUT_MS: u64 = 30_000;

/// Receive window of one client stream, in bytes. A request is at most
/// [`meridian_client::wire::MAX_FRAME_BYTES`]; flow control paces larger
/// ones instead of buffering them whole at once.
pub const CLIENT_STREAM_RECEIVE_WINDOW_BYTES: u32 = 4 << 20;

/// Receive window of a whole client connection, in bytes: bounds what one
/// client can make the node buffer, however many streams it opens.
pub const CLIENT_RECEIVE_WINDOW_BYTES: u32 = 32 << 20;

/// QUIC transport settings of client connections: one bidirectional stream
/// per request, at most `max_in_flight_per_connection` at once; clients
/// open no unidirectional streams.
pub fn client_transport_config(limits: &LimitsConfig) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_millis(CLIENT_IDLE_TIMEOUT_MS))
                .expect("the client idle timeout fits a QUIC varint"),
        ))
        .max_concurrent_bidi_streams(limits.max_in_flight_per_connection.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(CLIENT_STREAM_RECEIVE_WINDOW_BYTES.into())
        .receive_window(CLIENT_RECEIVE_WINDOW_BYTES.into());
    transport
}

/// The client listener's configuration: presents the node certificate,
/// requires a client certificate chaining to the cluster CA, and applies
/// the per-connection limits. (`max_client_connections` is enforced by the
/// accept loop, which refuses connections past it.)
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
    config.transport_config(Arc::new(client_transport_config(limits)));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::Path;

    use meridian_replication::tls::mutual_tls_client_config;

    /// Bound on every network wait in these tests.
    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    fn cluster(dir: &Path) {
        let args = crate::init::InitArgs::for_test(dir, &["us-east", "eu-west"]);
        crate::init::write_cluster(&args).unwrap();
    }

    fn read(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    /// Connects to a client listener of `us-east-1` with the given client
    /// certificate, opens a stream and waits for the server to read it.
    /// Returns the outcome on each side.
    async fn connect(
        server_dir: &Path,
        client_dir: &Path,
        client_cert: &str,
    ) -> (Result<(), String>, Result<(), String>) {
        let limits = LimitsConfig::default();
        let server_config = client_listener_config(
            &read(server_dir, "ca.pem"),
            &read(server_dir, "us-east-1.pem"),
            &read(server_dir, "us-east-1.key"),
            &limits,
        )
        .unwrap();
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let server = quinn::Endpoint::server(server_config, loopback).unwrap();
        let tls = mutual_tls_client_config(
            &read(server_dir, "ca.pem"),
            &read(client_dir, &format!("{client_cert}.pem")),
            &read(client_dir, &format!("{client_cert}.key")),
            meridian_client::wire::ALPN,
        )
        .unwrap();
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut client = quinn::Endpoint::client(loopback).unwrap();
        client.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let addr = server.local_addr().unwrap();

        let dial = async {
            let conn = client
                .connect(addr, "us-east-1")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let (mut send, _recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(b"hello").await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            match conn.closed().await {
                quinn::ConnectionError::ApplicationClosed(c) if c.error_code == 7u32.into() => {
                    Ok(())
                }
                e => Err(e.to_string()),
            }
        };
        let accept = async {
            let incoming = server.accept().await.ok_or("endpoint closed")?;
            let conn = incoming.await.map_err(|e| e.to_string())?;
            let (_send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            recv.read_to_end(16).await.map_err(|e| e.to_string())?;
            conn.close(7u32.into(), b"done");
            Ok(())
        };
        tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(dial, accept) })
            .await
            .expect("connection attempt timed out")
    }

    #[tokio::test]
    async fn client_and_node_certificates_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        cluster(dir.path());
        for cert in ["client", "eu-west-1"] {
            let (client, server) = connect(dir.path(), dir.path(), cert).await;
            client.unwrap();
            server.unwrap();
        }
    }

    #[tokio::test]
    async fn a_client_certificate_from_another_cluster_is_refused() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        cluster(ours.path());
        cluster(theirs.path());
        let (client, server) = connect(ours.path(), theirs.path(), "client").await;
        let err = server.unwrap_err();
        assert!(err.contains("invalid peer certificate"), "{err}");
        assert!(client.is_err());
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        cluster(dir.path());
        let limits = LimitsConfig {
            max_in_flight_per_connection: 1,
            ..LimitsConfig::default()
        };
        client_listener_config(
            &read(dir.path(), "ca.pem"),
            &read(dir.path(), "us-east-1.pem"),
            &read(dir.path(), "us-east-1.key"),
            &limits,
        )
        .unwrap();
        let err = client_listener_config(
            &read(dir.path(), "ca.pem"),
            &read(dir.path(), "us-east-1.pem"),
            &read(dir.path(), "client.key"),
            &limits,
        )
        .unwrap_err();
        assert!(err.to_string().contains("certificate and key"), "{err}");
    }
}
