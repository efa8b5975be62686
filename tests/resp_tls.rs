//! TLS on the RESP port (`[resp] tls = true`, docs/resp.md): a client that
//! trusts the cluster CA (what `redis-cli --tls --cacert ca.pem` does)
//! verifies the node's certificate and is served; a plaintext client on
//! the TLS port gets nothing served.
//!
//! Address block (`127.31.<block>.x`): 43.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use meridian::inproc::test_protocol;
use meridian::{InProcessCluster, Spec, TestClusterFiles};
use rustls_pki_types::ServerName;

/// Bound on every socket wait in this test.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn tcp(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_resp_port_serves_tls_with_the_node_certificate() -> Result<()> {
    let dir = TestClusterFiles::create(Spec::new(43))?;
    let names = dir.names();
    dir.edit(&names[0], |f| f.resp.tls = true)?;
    let ca_pem = std::fs::read(dir.path().join("ca.pem"))?;
    let cluster = InProcessCluster::start_with(dir, test_protocol).await?;
    let token = cluster.dir.client_config()?.token.clone();
    let addr = cluster.node(&names[0]).addresses.resp.context("resp")?;

    let scenario = tokio::task::spawn_blocking(move || -> Result<()> {
        // A client that trusts the cluster CA and checks the node's address.
        let roots = meridian_replication::tls::root_store(&ca_pem)?;
        let config = rustls::ClientConfig::builder_with_provider(
            meridian_replication::tls::crypto_provider(),
        )
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::IpAddress(addr.ip().into());
        let session = rustls::ClientConnection::new(Arc::new(config), name)?;
        let mut tls = BufReader::new(rustls::StreamOwned::new(session, tcp(addr)?));
        let mut call = |inline: &str| -> Result<String> {
            tls.get_mut()
                .write_all(format!("{inline}\r\n").as_bytes())?;
            tls.get_mut().flush()?;
            let mut line = String::new();
            ensure!(tls.read_line(&mut line)? > 0, "connection closed");
            Ok(line.trim_end().to_owned())
        };
        ensure!(call("PING")?.starts_with("-NOAUTH"));
        ensure!(call(&format!("AUTH quorum {token}"))? == "+OK");
        ensure!(call("PING")? == "+PONG");
        ensure!(call("INCRBY over-tls 7")? == ":7");

        // Plaintext on the TLS port: the handshake fails, nothing is served.
        let mut plain = tcp(addr)?;
        plain.write_all(format!("AUTH {token}\r\nPING\r\n").as_bytes())?;
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        ensure!(
            !String::from_utf8_lossy(&answer).contains("PONG"),
            "a plaintext client was served on the TLS port"
        );
        Ok(())
    });
    scenario.await??;
    cluster.shutdown().await
}
