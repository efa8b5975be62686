//! TLS for the peer mesh: mutually authenticated QUIC between the nodes of
//! one cluster (ALPN [`PEER_ALPN`]).
//!
//! Every node holds a certificate signed by the cluster CA that
//! `meridian init` created, with subject CN `node:<name>` and SAN DNS
//! `<name>`. Both ends of a peer link present their node certificate and
//! verify the other's against the CA:
//!
//! - the dialing side verifies the server certificate for the server name it
//!   dialed, which is the peer's node name (never its address: a node's
//!   identity is its certificate, the address may be a proxy);
//! - the accepting side requires a client certificate that chains to the CA,
//!   then [`peer_identity`] reads the node name from it. The cluster's client
//!   certificate (CN `client`) chains to the same CA, so the chain alone does
//!   not make a peer: only CN `node:<name>` does. The driver must call
//!   [`peer_identity`] before it trusts anything on a new connection.
//!
//! Crypto is always rustls' `ring` provider, passed explicitly: nothing here
//! reads or installs a process-global default provider. TLS 1.3 only (QUIC
//! requires it).
//!
//! Limits: certificates are not revoked (no CRL); a leaked node key is
//! handled by re-running `meridian init` with a new CA.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::name::NodeName;

/// ALPN protocol id of the peer protocol.
pub const PEER_ALPN: &[u8] = b"meridian-peer/1";

/// Subject CN prefix that marks a node certificate: `node:<name>`.
pub const NODE_CN_PREFIX: &str = "node:";

/// Keep-alive interval on a peer link, in milliseconds. An idle link still
/// carries a packet every second, so a dead peer (or a cut link) is noticed
/// within [`PEER_IDLE_TIMEOUT_MS`] even when no replication traffic flows,
/// and middleboxes keep their UDP state. The cost is a few bytes per second.
pub const PEER_KEEP_ALIVE_INTERVAL_MS: u64 = 1_000;

/// Idle timeout of a peer link, in milliseconds: five missed keep-alives.
/// Short, so a vanished peer is declared gone quickly (its connection
/// closes, the failure detector and the reconnect/catch-up logic take over,
/// quorum requests stop waiting on it); long enough that WAN jitter (a few
/// hundred ms) and a few lost packets do not tear down a healthy link.
/// QUIC uses the smaller of the two sides' values.
pub const PEER_IDLE_TIMEOUT_MS: u64 = 5_000;

/// Concurrent streams a peer may open towards us, per direction. Every peer
/// RPC (quorum write, forwarded read, catch-up batch) uses its own stream,
/// so this bounds the in-flight RPCs per link; 1024 is far above what a
/// quorum round needs yet bounds the per-stream state a peer can create.
pub const PEER_MAX_CONCURRENT_STREAMS: u32 = 1_024;

/// Receive window of one stream, in bytes: enough for ~40 MB/s per stream at
/// a 100 ms WAN round trip, so one catch-up stream can fill the link.
pub const PEER_STREAM_RECEIVE_WINDOW_BYTES: u32 = 4 << 20;

/// Receive window of a whole peer connection, in bytes: bounds how much
/// unread data one peer can make this node buffer, however many streams it
/// opens (quinn's default is unbounded).
pub const PEER_RECEIVE_WINDOW_BYTES: u32 = 64 << 20;

/// Send window of a peer connection, in bytes: how much unacknowledged data
/// we buffer towards one peer.
pub const PEER_SEND_WINDOW_BYTES: u64 = 64 << 20;

/// Packets that may arrive ahead of an earlier one before QUIC counts the
/// earlier one lost (the RFC 9002 default is 3). A WAN path whose delay
/// varies per packet (the harness's links: 20 ms ± 20 %) reorders dozens
/// of packets of a large message; at 3 each reordering was a "loss" that
/// halved the congestion window, and a peer link moved ~130 KB/s with
/// 10 % of its packets declared lost (issue 13). Loss is still detected by
/// time ([`PEER_REORDER_RTT_FACTOR`]) and by a packet this far behind.
pub const PEER_REORDER_PACKETS: u32 = 256;

/// How late, as a factor of the round trip, a packet may arrive after a
/// later one before QUIC counts it lost (RFC 9002: 9/8). 3/2 tolerates a
/// one-way delay that varies by up to half a round trip, at the cost of
/// noticing a real loss a quarter of a round trip later.
pub const PEER_REORDER_RTT_FACTOR: f32 = 1.5;

/// Errors building TLS configurations or reading identities.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input could not be read (a configuration error: wrong file).
    #[error("{what}: invalid PEM: {source}")]
    Pem {
        what: &'static str,
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM input holds no certificate (a configuration error: wrong file).
    #[error("{what}: no certificate found in the PEM data")]
    NoCertificate { what: &'static str },
    /// rustls refused the certificates or key (e.g. the key does not match
    /// the certificate, or the CA certificate is malformed).
    #[error("{what}: {source}")]
    Rustls {
        what: &'static str,
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The crypto provider lacks QUIC's initial cipher suite (a bug: the ring
    /// provider always has it).
    #[error("QUIC crypto configuration: {0}")]
    Quic(String),
    /// The connection carries no peer certificate (a bug: every Meridian
    /// listener requires one).
    #[error("the connection has no peer certificate")]
    NoPeerCertificate,
    /// The peer's certificate could not be parsed.
    #[error("certificate cannot be parsed: {0}")]
    BadCertificate(String),
    /// The peer's certificate chains to the CA but is not a node certificate
    /// (for example the cluster's client certificate): refuse the peer.
    #[error("not a node certificate (subject CN {cn:?}, expected \"node:<name>\")")]
    NotANode { cn: String },
}

/// The crypto provider every Meridian TLS configuration uses: rustls' ring
/// provider, explicitly (never the process-global default).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate in `pem`; `what` names the input in errors.
pub fn parse_certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) in `pem`.
pub fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| TlsError::Pem {
        what: "private key",
        source,
    })
}

/// A root store holding the cluster CA certificate(s) in `ca_pem`.
pub fn root_store(ca_pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certificates(ca_pem, "CA certificate")? {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            what: "CA certificate",
            source,
        })?;
    }
    Ok(Arc::new(roots))
}

/// A verifier that requires a client certificate chaining to the cluster CA
/// (anonymous clients are refused).
pub fn client_cert_verifier(ca_pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    Ok(
        WebPkiClientVerifier::builder_with_provider(root_store(ca_pem)?, crypto_provider())
            .build()?,
    )
}

/// A rustls server configuration that presents `cert_pem` / `key_pem`
/// with the given TLS `versions`, verifying clients with `verifier` (`None`:
/// no client certificate asked for). The one builder every listener's TLS
/// goes through.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(versions)
        .map_err(|source| TlsError::Rustls {
            what: "TLS versions",
            source,
        })?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(
            parse_certificates(cert_pem, "certificate")?,
            parse_private_key(key_pem)?,
        )
        .map_err(|source| TlsError::Rustls {
            what: "certificate and key",
            source,
        })
}

/// A rustls server configuration for `alpn` that presents `cert_pem` /
/// `key_pem` and requires a client certificate chaining to `ca_pem`.
/// Shared by the peer listener and the server's client listener.
pub fn mutual_tls_server_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = client_cert_verifier(ca_pem)?;
    let mut config = server_config(
        cert_pem,
        key_pem,
        &[&rustls::version::TLS13],
        Some(verifier),
    )?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// A rustls client configuration for `alpn` that presents `cert_pem` /
/// `key_pem` and verifies the server against `ca_pem`.
pub fn mutual_tls_client_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls {
            what: "TLS versions",
            source,
        })?
        .with_root_certificates(root_store(ca_pem)?)
        .with_client_auth_cert(
            parse_certificates(cert_pem, "certificate")?,
            parse_private_key(key_pem)?,
        )
        .map_err(|source| TlsError::Rustls {
            what: "certificate and key",
            source,
        })?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// QUIC transport settings of a peer link (see the `PEER_*` constants).
pub fn peer_transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(Duration::from_millis(PEER_KEEP_ALIVE_INTERVAL_MS)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_millis(PEER_IDLE_TIMEOUT_MS))
                .expect("the peer idle timeout fits a QUIC varint"),
        ))
        .max_concurrent_bidi_streams(PEER_MAX_CONCURRENT_STREAMS.into())
        .max_concurrent_uni_streams(PEER_MAX_CONCURRENT_STREAMS.into())
        .stream_receive_window(PEER_STREAM_RECEIVE_WINDOW_BYTES.into())
        .receive_window(PEER_RECEIVE_WINDOW_BYTES.into())
        .send_window(PEER_SEND_WINDOW_BYTES)
        .packet_threshold(PEER_REORDER_PACKETS)
        .time_threshold(PEER_REORDER_RTT_FACTOR)
        // BBR paces to the measured bottleneck bandwidth instead of halving
        // the window on every loss: on the harness's jittery, CPU-starved
        // WAN emulation Cubic (the default) kept a peer link at a 10-70 KB
        // window, ~130 KB/s; BBR held ~1.5 MB and the `large` workload
        // converged in 6 s instead of never (issue 13). quinn marks its BBR
        // experimental: the harness matrix is its test here.
        .congestion_controller_factory(
            std::sync::Arc::new(quinn::congestion::BbrConfig::default()),
        );
    transport
}

/// The peer listener's configuration: presents this node's certificate and
/// requires a client certificate chaining to the cluster CA. Call
/// [`peer_identity`] on every accepted connection to learn (and check) who
/// the peer is.
pub fn peer_server_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<quinn::ServerConfig, TlsError> {
    let tls = mutual_tls_server_config(ca_pem, cert_pem, key_pem, PEER_ALPN)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(peer_transport_config()));
    Ok(config)
}

/// The dialing side of a peer link: presents this node's certificate and
/// verifies the server against the cluster CA. Connect with the peer's node
/// name as the server name (`endpoint.connect_with(config, addr, name)`),
/// so the certificate must be issued for that node.
pub fn peer_client_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let tls = mutual_tls_client_config(ca_pem, cert_pem, key_pem, PEER_ALPN)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(peer_transport_config()));
    Ok(config)
}

/// The node name of the other end of a peer connection, from its
/// (already CA-verified) certificate. Refuses certificates whose subject CN
/// is not `node:<name>`, such as the cluster's client certificate.
pub fn peer_identity(conn: &quinn::Connection) -> Result<NodeName, TlsError> {
    let identity = conn.peer_identity().ok_or(TlsError::NoPeerCertificate)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoPeerCertificate)?;
    let leaf = chain.first().ok_or(TlsError::NoPeerCertificate)?;
    node_name_from_certificate(leaf)
}

/// The node name in a certificate whose subject CN is `node:<name>`.
pub fn node_name_from_certificate(der: &CertificateDer<'_>) -> Result<NodeName, TlsError> {
    let cn = subject_common_name(der)?;
    match cn.strip_prefix(NODE_CN_PREFIX) {
        Some(name) if is_valid_server_name(name) => Ok(name.into()),
        _ => Err(TlsError::NotANode { cn }),
    }
}

/// The single subject CN of a DER certificate.
fn subject_common_name(der: &CertificateDer<'_>) -> Result<String, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let mut cns = cert.subject().iter_common_name();
    let cn = cns
        .next()
        .ok_or_else(|| TlsError::BadCertificate("no subject common name".into()))?;
    if cns.next().is_some() {
        return Err(TlsError::BadCertificate(
            "more than one subject common name".into(),
        ));
    }
    let cn = cn
        .as_str()
        .map_err(|e| TlsError::BadCertificate(format!("subject common name: {e}")))?;
    Ok(cn.to_owned())
}

/// Whether `name` is usable as a TLS server name (what a node name must be,
/// since peers dial each other by node name).
fn is_valid_server_name(name: &str) -> bool {
    !name.is_empty() && matches!(ServerName::try_from(name), Ok(ServerName::DnsName(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    /// A CA and PEM material for certificates it signs.
    struct TestCa {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    /// A certificate and key, PEM.
    struct Leaf {
        cert: String,
        key: String,
    }

    impl TestCa {
        fn new(name: &str) -> TestCa {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            TestCa {
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        fn leaf(&self, cn: &str, dns: &str, ekus: Vec<ExtendedKeyUsagePurpose>) -> Leaf {
            let mut params = CertificateParams::new(vec![dns.to_owned()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = ekus;
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Leaf {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        }

        fn node(&self, name: &str) -> Leaf {
            self.leaf(
                &format!("node:{name}"),
                name,
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            )
        }
    }

    /// Bound on every network wait in these tests.
    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    fn loopback() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    fn server(ca: &TestCa, leaf: &Leaf) -> quinn::Endpoint {
        let config =
            peer_server_config(ca.pem.as_bytes(), leaf.cert.as_bytes(), leaf.key.as_bytes())
                .unwrap();
        quinn::Endpoint::server(config, loopback()).unwrap()
    }

    fn client(ca: &TestCa, leaf: &Leaf) -> quinn::Endpoint {
        let config =
            peer_client_config(ca.pem.as_bytes(), leaf.cert.as_bytes(), leaf.key.as_bytes())
                .unwrap();
        let mut endpoint = quinn::Endpoint::client(loopback()).unwrap();
        endpoint.set_default_client_config(config);
        endpoint
    }

    /// Outcome of one connection attempt, seen from both sides.
    struct Attempt {
        client: Result<quinn::Connection, String>,
        server: Result<quinn::Connection, String>,
    }

    /// Dials `server` from `client` as `server_name`. A refusal on one side
    /// may reach the other only as a closed connection, so for each side
    /// this waits for the handshake and then for either a stream (success:
    /// the client opens one) or the connection closing.
    async fn attempt(client: &quinn::Endpoint, server: &quinn::Endpoint, name: &str) -> Attempt {
        let addr = server.local_addr().unwrap();
        let dial = async {
            let conn = client
                .connect(addr, name)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
            send.write_all(b"hi").await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            // Wait until the server has read it (it closes with code 7) or
            // refused us.
            match conn.closed().await {
                quinn::ConnectionError::ApplicationClosed(c) if c.error_code == 7u32.into() => {
                    Ok(conn)
                }
                e => Err(e.to_string()),
            }
        };
        let accept = async {
            let incoming = server.accept().await.ok_or("endpoint closed")?;
            let conn = incoming.await.map_err(|e| e.to_string())?;
            let mut recv = conn.accept_uni().await.map_err(|e| e.to_string())?;
            recv.read_to_end(16).await.map_err(|e| e.to_string())?;
            conn.close(7u32.into(), b"done");
            Ok(conn)
        };
        let (client, server) =
            tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(dial, accept) })
                .await
                .expect("connection attempt timed out");
        Attempt { client, server }
    }

    #[tokio::test]
    async fn peers_with_cluster_certificates_learn_each_others_names() {
        let ca = TestCa::new("cluster");
        let a = ca.node("us-east-1");
        let b = ca.node("eu-west-1");
        let listener = server(&ca, &b);
        let dialer = client(&ca, &a);
        let attempt = attempt(&dialer, &listener, "eu-west-1").await;
        let (client, server) = (attempt.client.unwrap(), attempt.server.unwrap());
        assert_eq!(peer_identity(&server).unwrap(), "us-east-1");
        assert_eq!(peer_identity(&client).unwrap(), "eu-west-1");
        for conn in [client, server] {
            assert_eq!(
                conn.handshake_data().map(|d| {
                    d.downcast::<quinn::crypto::rustls::HandshakeData>()
                        .unwrap()
                        .protocol
                }),
                Some(Some(PEER_ALPN.to_vec()))
            );
        }
    }

    #[tokio::test]
    async fn a_peer_certificate_from_another_ca_is_refused_by_the_listener() {
        let ca = TestCa::new("cluster");
        let other = TestCa::new("cluster");
        let listener = server(&ca, &ca.node("eu-west-1"));
        // The intruder trusts our CA (so it accepts our server) but presents
        // a certificate from its own CA with a legitimate-looking name.
        let intruder_cert = other.node("us-east-1");
        let config = peer_client_config(
            ca.pem.as_bytes(),
            intruder_cert.cert.as_bytes(),
            intruder_cert.key.as_bytes(),
        )
        .unwrap();
        let mut dialer = quinn::Endpoint::client(loopback()).unwrap();
        dialer.set_default_client_config(config);
        let attempt = attempt(&dialer, &listener, "eu-west-1").await;
        let err = attempt
            .server
            .expect_err("listener accepted a foreign peer");
        assert!(err.contains("invalid peer certificate"), "{err}");
        assert!(attempt.client.is_err(), "foreign peer got a working link");
    }

    #[tokio::test]
    async fn a_listener_with_a_certificate_from_another_ca_is_refused_by_the_dialer() {
        let ca = TestCa::new("cluster");
        let other = TestCa::new("cluster");
        // The impostor trusts our CA (so it would accept us) but presents a
        // certificate from its own CA for the node we dial.
        let impostor = other.node("eu-west-1");
        let config = peer_server_config(
            ca.pem.as_bytes(),
            impostor.cert.as_bytes(),
            impostor.key.as_bytes(),
        )
        .unwrap();
        let listener = quinn::Endpoint::server(config, loopback()).unwrap();
        let dialer = client(&ca, &ca.node("us-east-1"));
        let attempt = attempt(&dialer, &listener, "eu-west-1").await;
        let err = attempt
            .client
            .expect_err("dialer accepted a foreign server");
        assert!(err.contains("invalid peer certificate"), "{err}");
        assert!(attempt.server.is_err());
    }

    #[tokio::test]
    async fn a_node_certificate_for_another_name_is_refused_by_the_dialer() {
        let ca = TestCa::new("cluster");
        let listener = server(&ca, &ca.node("ap-south-1"));
        let dialer = client(&ca, &ca.node("us-east-1"));
        let attempt = attempt(&dialer, &listener, "eu-west-1").await;
        let err = attempt.client.expect_err("dialer accepted the wrong node");
        assert!(err.contains("not valid for name"), "{err}");
    }

    #[tokio::test]
    async fn the_client_certificate_is_not_a_peer_identity() {
        let ca = TestCa::new("cluster");
        let listener = server(&ca, &ca.node("eu-west-1"));
        let client_cert = ca.leaf(
            "client",
            "client",
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let dialer = client(&ca, &client_cert);
        let attempt = attempt(&dialer, &listener, "eu-west-1").await;
        // The chain is valid, so TLS completes; the identity check refuses.
        let server = attempt.server.unwrap();
        match peer_identity(&server) {
            Err(TlsError::NotANode { cn }) => assert_eq!(cn, "client"),
            other => panic!("client certificate accepted as a peer: {other:?}"),
        }
    }

    #[test]
    fn node_names_come_only_from_node_common_names() {
        let ca = TestCa::new("cluster");
        let der =
            |leaf: &Leaf| parse_certificates(leaf.cert.as_bytes(), "test").unwrap()[0].clone();
        let node = ca.node("us-east-1");
        assert_eq!(
            node_name_from_certificate(&der(&node)).unwrap(),
            "us-east-1"
        );
        for cn in [
            "client",
            "node:",
            "us-east-1",
            "Node:us-east-1",
            "node:bad name",
        ] {
            let leaf = ca.leaf(cn, "x", vec![ExtendedKeyUsagePurpose::ClientAuth]);
            assert!(
                matches!(
                    node_name_from_certificate(&der(&leaf)),
                    Err(TlsError::NotANode { .. })
                ),
                "{cn} accepted"
            );
        }
    }

    #[test]
    fn bad_pem_inputs_are_errors_naming_the_input() {
        let ca = TestCa::new("cluster");
        let node = ca.node("us-east-1");
        let err =
            peer_server_config(b"not pem", node.cert.as_bytes(), node.key.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("CA certificate"), "{err}");
        let err = peer_client_config(ca.pem.as_bytes(), node.key.as_bytes(), node.key.as_bytes())
            .unwrap_err();
        assert!(err.to_string().starts_with("certificate"), "{err}");
        let other = ca.node("eu-west-1");
        let err = peer_server_config(
            ca.pem.as_bytes(),
            node.cert.as_bytes(),
            other.key.as_bytes(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("certificate and key"), "{err}");
    }
}
