//! A client-protocol connection made with quinn directly: the same TLS as
//! the real client (cluster CA, client certificate, ALPN `meridian/2`) but
//! no validation of what is sent, so a test can send what the client never
//! would: oversized keys and values, frames over the limit, garbage, a
//! `Hello` without a token.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use meridian_client::ClientConfig;
use meridian_client::wire::{self, Hello, HelloReply, Request, Response};
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Bound on one raw exchange: the server answers bad input at once.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(20);

/// A raw QUIC connection to one node's client listener.
#[derive(Debug)]
pub struct RawConnection {
    pub connection: quinn::Connection,
    endpoint: quinn::Endpoint,
}

/// TLS material for a raw connection.
#[derive(Clone, Debug)]
pub struct Identity {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl Identity {
    /// The identity in a client config (the cluster's client certificate).
    pub fn of(config: &ClientConfig) -> Identity {
        Identity {
            ca_pem: config.ca_pem.clone(),
            cert_pem: config.cert_pem.clone(),
            key_pem: config.key_pem.clone(),
        }
    }
}

fn crypto(identity: &Identity) -> Result<QuicClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&identity.ca_pem) {
        roots.add(cert?)?;
    }
    let chain =
        CertificateDer::pem_slice_iter(&identity.cert_pem).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    Ok(QuicClientConfig::try_from(tls)?)
}

/// A quinn client configuration presenting `identity`, with `transport`
/// (flow-control windows, stream limits) chosen by the caller: a test that
/// plays a hostile client keeps its own side's buffers small.
pub fn client_config(
    identity: &Identity,
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig> {
    let mut config = quinn::ClientConfig::new(Arc::new(crypto(identity)?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

impl RawConnection {
    /// Like [`RawConnection::authenticated`], with the client's QUIC
    /// `transport` settings chosen by the caller.
    pub async fn authenticated_with(
        address: SocketAddr,
        server_name: &str,
        identity: &Identity,
        token: &[u8],
        transport: quinn::TransportConfig,
    ) -> Result<RawConnection> {
        let endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let config = client_config(identity, transport)?;
        let connecting = endpoint.connect_with(config, address, server_name)?;
        let connection = tokio::time::timeout(EXCHANGE_LIMIT, connecting)
            .await
            .context("handshake timed out")?
            .context("handshake")?;
        let raw = RawConnection {
            connection,
            endpoint,
        };
        match raw.hello(token).await? {
            HelloReply::Ok { .. } => Ok(raw),
            HelloReply::Refused(e) => bail!("hello refused: {e:?}"),
        }
    }

    /// QUIC + TLS handshake with `server_name` at `address`; no `Hello`.
    pub async fn connect(
        address: SocketAddr,
        server_name: &str,
        identity: &Identity,
    ) -> Result<RawConnection> {
        let endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let config = quinn::ClientConfig::new(Arc::new(crypto(identity)?));
        let connecting = endpoint.connect_with(config, address, server_name)?;
        let connection = tokio::time::timeout(EXCHANGE_LIMIT, connecting)
            .await
            .context("handshake timed out")?
            .context("handshake")?;
        Ok(RawConnection {
            connection,
            endpoint,
        })
    }

    /// Connects and authenticates with `token`; fails unless the node
    /// answers `HelloReply::Ok`.
    pub async fn authenticated(
        address: SocketAddr,
        server_name: &str,
        identity: &Identity,
        token: &[u8],
    ) -> Result<RawConnection> {
        let raw = RawConnection::connect(address, server_name, identity).await?;
        match raw.hello(token).await? {
            HelloReply::Ok { .. } => Ok(raw),
            HelloReply::Refused(e) => bail!("hello refused: {e:?}"),
        }
    }

    /// Sends a `Hello` with `token` and returns the node's answer.
    pub async fn hello(&self, token: &[u8]) -> Result<HelloReply> {
        let frame = wire::encode(&Hello {
            version: wire::PROTOCOL_VERSION,
            token: token.to_vec(),
        });
        let payload = self.exchange(&frame).await?;
        Ok(wire::decode(&payload)?)
    }

    /// Sends `frame` (length prefix included, or not: it is sent as is) on
    /// a new stream, finishes it and returns the payload of the one frame
    /// the node answers.
    pub async fn exchange(&self, frame: &[u8]) -> Result<Vec<u8>> {
        let fut = async {
            let (mut send, mut recv) = self.connection.open_bi().await?;
            // The node may stop reading once it has refused the frame.
            match send.write_all(frame).await {
                Ok(()) => {
                    let _ = send.finish();
                }
                Err(quinn::WriteError::Stopped(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let mut prefix = [0u8; 4];
            recv.read_exact(&mut prefix).await?;
            let len = wire::frame_len(prefix, wire::MAX_FRAME_BYTES)?;
            let mut payload = vec![0u8; len];
            recv.read_exact(&mut payload).await?;
            anyhow::Ok(payload)
        };
        tokio::time::timeout(EXCHANGE_LIMIT, fut)
            .await
            .context("no answer in time")?
    }

    /// Sends a request frame as is and decodes the response.
    pub async fn request_frame(&self, frame: &[u8]) -> Result<Response> {
        Ok(wire::decode(&self.exchange(frame).await?)?)
    }

    /// Encodes `request` without any validation and sends it.
    pub async fn request(&self, request: &Request) -> Result<Response> {
        self.request_frame(&wire::encode(request)).await
    }

    /// Closes the connection and waits (bounded) for the close to go out.
    pub async fn close(self) {
        self.connection.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}
