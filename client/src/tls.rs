//! TLS for the client protocol: the cluster CA as the only trust root, the
//! client certificate presented to every node (mutual TLS), TLS 1.3 only,
//! ring as the crypto provider, ALPN [`wire::ALPN`].
//!
//! Parsing is strict: a PEM that holds no certificate (or no key) is an
//! error here, at configuration time, not a handshake failure later.

use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;
use crate::config::ClientConfig;
use crate::wire;

/// Parses the cluster CA certificate(s).
pub(crate) fn parse_roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in parse_chain(pem)? {
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// Parses a certificate chain (leaf first).
pub(crate) fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("malformed PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) found".into());
    }
    Ok(chain)
}

/// Parses a private key (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM private key found".to_owned(),
        other => format!("malformed private key PEM: {other}"),
    })
}

/// The QUIC crypto configuration for `config`: trust only the cluster CA,
/// present the client certificate.
pub(crate) fn client_crypto(config: &ClientConfig) -> Result<QuicClientConfig, Error> {
    let roots = parse_roots(&config.ca_pem).map_err(|e| Error::Config(format!("`ca_pem`: {e}")))?;
    let chain =
        parse_chain(&config.cert_pem).map_err(|e| Error::Config(format!("`cert_pem`: {e}")))?;
    let key = parse_key(&config.key_pem).map_err(|e| Error::Config(format!("`key_pem`: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            Error::Config(format!(
                "client certificate and key (`cert_pem`, `key_pem`) don't form a usable identity: {e}"
            ))
        })?;
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    QuicClientConfig::try_from(tls).map_err(|e| Error::Config(format!("TLS for QUIC: {e}")))
}
