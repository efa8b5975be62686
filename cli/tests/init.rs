//! `meridian init`, run as the real binary: the files it writes, their
//! modes, that every config loads, that the certificates form a working
//! peer mesh, and that bad arguments fail with one clear line.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use meridian_client::config::ClientFile;
use meridian_replication::tls::{peer_client_config, peer_identity, peer_server_config};
use meridian_server::config::NodeConfig;

/// Bound on every network wait in these tests.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run meridian")
}

fn init(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["init", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    meridian(&args)
}

/// Asserts a failed run: exit code 1 and exactly one `error: ` line.
fn assert_one_line_error(output: &Output) -> String {
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    stderr
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

const NODES: [&str; 6] = [
    "us-east-1",
    "us-east-2",
    "eu-west-1",
    "eu-west-2",
    "ap-south-1",
    "ap-south-2",
];

#[test]
fn init_writes_a_cluster_whose_configs_all_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let output = init(
        &dir,
        &[
            "--regions",
            "us-east,eu-west,ap-south",
            "--nodes-per-region",
            "2",
            "--base-port",
            "9100",
        ],
    );
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(output.status.success(), "{output:?}");
    for node in NODES {
        let serve = format!(
            "meridian serve --config {}",
            dir.join(format!("{node}.toml")).display()
        );
        assert!(
            stdout.contains(&serve),
            "summary lacks {serve:?}:\n{stdout}"
        );
    }

    for name in ["ca.pem", "client.pem"] {
        assert!(dir.join(name).is_file(), "{name} missing");
    }
    for secret in ["ca.key", "client.key", "client.toml"] {
        assert_eq!(mode(&dir.join(secret)), 0o600, "{secret}");
    }
    for node in NODES {
        assert!(dir.join(format!("{node}.pem")).is_file());
        assert!(dir.join(format!("{node}.toml")).is_file());
        assert_eq!(mode(&dir.join(format!("{node}.key"))), 0o600, "{node}.key");
    }

    let client: ClientFile =
        toml::from_str(&std::fs::read_to_string(dir.join("client.toml")).unwrap()).unwrap();
    assert_eq!(
        (
            client.ca.as_str(),
            client.cert.as_str(),
            client.key.as_str()
        ),
        ("ca.pem", "client.pem", "client.key")
    );
    assert_eq!(client.token.len(), 64, "32 random bytes, hex");
    assert!(client.token.bytes().all(|b| b.is_ascii_hexdigit()));
    let names: Vec<_> = client.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, NODES);

    for (i, node) in NODES.iter().enumerate() {
        let config = NodeConfig::load(dir.join(format!("{node}.toml"))).unwrap();
        assert_eq!(config.node, *node);
        assert_eq!(config.region, client.nodes[i].region);
        let base = 9100 + 3 * i;
        assert_eq!(config.peer_listen.to_string(), format!("127.0.0.1:{base}"));
        assert_eq!(config.client_listen.to_string(), client.nodes[i].address);
        assert_eq!(config.client_listen.port() as usize, base + 1);
        assert_eq!(config.metrics_listen.port() as usize, base + 2);
        assert_eq!(config.cluster_regions(), ["ap-south", "eu-west", "us-east"]);
        let all: Vec<_> = config.all_nodes().into_iter().map(|n| n.name).collect();
        assert_eq!(all.len(), NODES.len());
        assert_eq!(all[0], *node);
        assert!(!config.peers.iter().any(|p| p.name == *node));
        assert!(config.token_matches(client.token.as_bytes()));
        assert!(!config.token_matches(b"guess"));
        // Only the token's digest is stored in node configs.
        let text = std::fs::read_to_string(&config.path).unwrap();
        assert!(!text.contains(&client.token));
    }
    assert!(!dir.join("data").exists(), "init does not create data dirs");
}

#[test]
fn hosts_give_each_node_its_own_address() {
    let tmp = tempfile::tempdir().unwrap();
    let output = init(
        tmp.path(),
        &[
            "--regions",
            "us-east,eu-west",
            "--hosts",
            "127.0.0.2,127.0.0.3",
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let config = NodeConfig::load(tmp.path().join("eu-west-1.toml")).unwrap();
    assert_eq!(config.peer_listen.to_string(), "127.0.0.3:7103");
    assert_eq!(config.peers[0].address.to_string(), "127.0.0.2:7100");
}

#[test]
fn hosts_with_the_wrong_count_fail_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let output = init(
        tmp.path(),
        &[
            "--regions",
            "us-east,eu-west,ap-south",
            "--hosts",
            "127.0.0.1,127.0.0.2",
        ],
    );
    let stderr = assert_one_line_error(&output);
    assert!(
        stderr.contains("--hosts names 2 host(s) but the cluster has 3 node(s)"),
        "{stderr}"
    );
    assert!(!tmp.path().join("ca.pem").exists(), "nothing is written");
}

#[test]
fn init_refuses_to_overwrite_a_cluster_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--regions", "us-east,eu-west"];
    assert!(init(tmp.path(), &args).status.success());
    let ca = std::fs::read(tmp.path().join("ca.pem")).unwrap();

    let stderr = assert_one_line_error(&init(tmp.path(), &args));
    assert!(stderr.contains("already holds a cluster"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(tmp.path().join("ca.pem")).unwrap(), ca);

    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(init(tmp.path(), &forced).status.success());
    assert_ne!(
        std::fs::read(tmp.path().join("ca.pem")).unwrap(),
        ca,
        "a new CA"
    );
    assert_eq!(mode(&tmp.path().join("client.toml")), 0o600);
    NodeConfig::load(tmp.path().join("us-east-1.toml")).unwrap();
}

#[test]
fn a_missing_client_config_fails_with_one_line() {
    let stderr = assert_one_line_error(&meridian(&[
        "cli",
        "--config",
        "/nonexistent/client.toml",
        "count",
        "k",
    ]));
    assert!(stderr.contains("/nonexistent/client.toml"), "{stderr}");
}

/// The certificates init writes form a working peer mesh: nodes learn each
/// other's names, and the client certificate is no peer identity.
#[tokio::test]
async fn init_certificates_authenticate_the_peer_mesh() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(
        init(tmp.path(), &["--regions", "us-east,eu-west"])
            .status
            .success()
    );
    let east = NodeConfig::load(tmp.path().join("us-east-1.toml")).unwrap();
    let west = NodeConfig::load(tmp.path().join("eu-west-1.toml")).unwrap();
    let client_pem = std::fs::read(tmp.path().join("client.pem")).unwrap();
    let client_key = std::fs::read(tmp.path().join("client.key")).unwrap();

    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let listener = quinn::Endpoint::server(
        peer_server_config(&west.tls.ca_pem, &west.tls.cert_pem, &west.tls.key_pem).unwrap(),
        loopback,
    )
    .unwrap();
    let addr = listener.local_addr().unwrap();

    for (cert, key, expected) in [
        (&east.tls.cert_pem, &east.tls.key_pem, Some("us-east-1")),
        (&client_pem, &client_key, None),
    ] {
        let mut dialer = quinn::Endpoint::client(loopback).unwrap();
        dialer.set_default_client_config(peer_client_config(&east.tls.ca_pem, cert, key).unwrap());
        let (dialed, accepted) = tokio::time::timeout(TEST_TIMEOUT, async {
            let dial = async { dialer.connect(addr, &west.node).unwrap().await.unwrap() };
            let accept = async { listener.accept().await.unwrap().await.unwrap() };
            tokio::join!(dial, accept)
        })
        .await
        .expect("handshake timed out");
        assert_eq!(peer_identity(&dialed).unwrap(), "eu-west-1");
        match expected {
            Some(name) => assert_eq!(peer_identity(&accepted).unwrap(), name),
            None => assert!(peer_identity(&accepted).is_err()),
        }
        dialed.close(0u32.into(), b"");
        dialer.wait_idle().await;
    }
}
