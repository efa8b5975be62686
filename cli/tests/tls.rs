//! Tests of the node crate's `tls` module that need a cluster directory
//! made by the real `meridian init` code (which lives in this crate).

use std::sync::Arc;
use std::time::Duration;

use meridian_server::config::LimitsConfig;
use meridian_server::tls::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use meridian_replication::tls::mutual_tls_client_config;

/// Bound on every network wait in these tests.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

fn cluster(dir: &Path) {
    let args = meridian_cli::init::InitArgs::for_test(dir, &["us-east", "eu-west"]);
    meridian_cli::init::write_cluster(&args).unwrap();
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
            quinn::ConnectionError::ApplicationClosed(c) if c.error_code == 7u32.into() => Ok(()),
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
