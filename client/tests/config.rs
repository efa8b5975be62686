//! `ClientConfig::load` on good and broken `client.toml` files.

mod support;

use std::path::Path;
use std::time::Duration;

use meridian_client::{ClientConfig, Consistency, Error};
use support::Pki;

/// Writes a cluster directory (CA, client certificate and key) and returns it.
fn cluster_dir(pki: &Pki) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let id = pki.client();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.path().join("certs/client.pem"), &id.cert_pem).unwrap();
    std::fs::write(dir.path().join("certs/client.key"), &id.key_pem).unwrap();
    dir
}

const GOOD: &str = r#"
token = "3f9a0c"
ca = "certs/ca.pem"
cert = "certs/client.pem"
key = "certs/client.key"
default_consistency = "quorum"
default_timeout_ms = 1500

[[nodes]]
name = "us-east-1"
region = "us-east"
address = "127.0.0.1:7101"

[[nodes]]
name = "eu-west-1"
region = "eu-west"
address = "127.0.0.2:7101"
"#;

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("client.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn config_error(result: Result<ClientConfig, Error>) -> String {
    match result {
        Err(Error::Config(message)) => message,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn a_sample_client_toml_loads() {
    let pki = Pki::new("test CA");
    let dir = cluster_dir(&pki);
    let config = ClientConfig::load(write(dir.path(), GOOD)).unwrap();
    assert_eq!(config.token, "3f9a0c");
    assert_eq!(config.default_consistency, Consistency::Quorum);
    assert_eq!(config.default_timeout, Duration::from_millis(1500));
    assert_eq!(config.nodes.len(), 2);
    assert_eq!(config.nodes[1].name, "eu-west-1");
    assert_eq!(config.ca_pem, pki.ca_pem.as_bytes());
    assert!(config.failover);
    assert_eq!(config.preferred_node, None);

    let pinned = config.clone().pinned("eu-west-1");
    assert_eq!(pinned.preferred_node.as_deref(), Some("eu-west-1"));
    assert!(!pinned.failover);
    pinned.validate().unwrap();

    // Debug output never shows the token or the key.
    let debug = format!("{config:?}");
    assert!(!debug.contains("3f9a0c"), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn optional_fields_default() {
    let pki = Pki::new("test CA");
    let dir = cluster_dir(&pki);
    let text = GOOD
        .replace("default_consistency = \"quorum\"\n", "")
        .replace("default_timeout_ms = 1500\n", "");
    let config = ClientConfig::load(write(dir.path(), &text)).unwrap();
    assert_eq!(config.default_consistency, Consistency::Local);
    assert_eq!(
        config.default_timeout,
        meridian_client::config::DEFAULT_TIMEOUT
    );
}

#[test]
fn a_missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let message = config_error(ClientConfig::load(&path));
    assert!(message.contains("nope.toml"), "{message}");
}

#[test]
fn broken_files_give_clear_errors() {
    let pki = Pki::new("test CA");
    let dir = cluster_dir(&pki);
    let cases: &[(&str, String, &[&str])] = &[
        (
            "missing token",
            GOOD.replace("token = \"3f9a0c\"\n", ""),
            &["client.toml", "token"],
        ),
        (
            "unknown field",
            GOOD.replace("token =", "tokn = \"x\"\ntoken ="),
            &["client.toml", "tokn"],
        ),
        (
            "bad consistency",
            GOOD.replace("\"quorum\"", "\"strong\""),
            &["client.toml", "strong"],
        ),
        (
            "missing CA file",
            GOOD.replace("certs/ca.pem", "certs/missing.pem"),
            &["client.toml", "`ca`", "missing.pem"],
        ),
        (
            "key is not a key",
            GOOD.replace("certs/client.key", "certs/ca.pem"),
            &["client.toml", "`key`", "ca.pem", "no PEM private key"],
        ),
        (
            "cert is not a certificate",
            GOOD.replace("certs/client.pem", "certs/client.key"),
            &["`cert`", "client.key", "no PEM certificate"],
        ),
        (
            "zero timeout",
            GOOD.replace("1500", "0"),
            &["default_timeout_ms"],
        ),
        (
            "no nodes",
            GOOD.split("[[nodes]]").next().unwrap().to_owned() + "nodes = []\n",
            &["nodes"],
        ),
        (
            "duplicate node",
            GOOD.replace("eu-west-1", "us-east-1"),
            &["us-east-1", "twice"],
        ),
        (
            "address without port",
            GOOD.replace("127.0.0.2:7101", "127.0.0.2"),
            &["eu-west-1", "host:port"],
        ),
    ];
    for (what, text, needles) in cases {
        let message = config_error(ClientConfig::load(write(dir.path(), text)));
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{what}: {needle:?} not in {message:?}"
            );
        }
    }
}

#[test]
fn from_file_resolves_paths_against_the_base_dir() {
    let pki = Pki::new("test CA");
    let dir = cluster_dir(&pki);
    let file: meridian_client::ClientFile = toml::from_str(GOOD).unwrap();
    let config = ClientConfig::from_file(file.clone(), dir.path()).unwrap();
    assert_eq!(config.nodes, file.nodes);
    let message = config_error(ClientConfig::from_file(file, Path::new("/nonexistent")));
    assert!(message.contains("/nonexistent/certs/ca.pem"), "{message}");
}
