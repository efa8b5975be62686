//! Tests of the node crate's `config` module that need a cluster directory
//! made by the real `meridian init` code (which lives in this crate).

use std::path::PathBuf;

use meridian_server::config::*;

/// A cluster directory made by the real `init` code, with one node's
/// config text to tweak.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let args = meridian_cli::init::InitArgs::for_test(dir.path(), &["us-east", "eu-west"]);
        meridian_cli::init::write_cluster(&args).unwrap();
        Fixture { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("us-east-1.toml")
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.path()).unwrap()
    }

    /// Writes `text` as the config and loads it; returns the error line.
    fn error_with(&self, text: &str) -> String {
        let path = self.dir.path().join("edited.toml");
        std::fs::write(&path, text).unwrap();
        let err = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(!err.contains('\n'), "multi-line error: {err}");
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        err
    }
}

#[test]
fn the_config_written_by_init_loads() {
    let fx = Fixture::new();
    let config = NodeConfig::load(fx.path()).unwrap();
    assert_eq!(config.node, "us-east-1");
    assert_eq!(config.region, "us-east");
    assert_eq!(config.cluster_regions(), ["eu-west", "us-east"]);
    assert_eq!(config.durability(), Durability::Sync);
    assert_eq!(config.data_dir, fx.dir.path().join("data/us-east-1"));
    assert_eq!(config.peer_listen.to_string(), "127.0.0.1:7100");
    assert_eq!(config.client_listen.to_string(), "127.0.0.1:7101");
    assert_eq!(config.metrics_listen.to_string(), "127.0.0.1:7102");
    let nodes: Vec<_> = config
        .all_nodes()
        .into_iter()
        .map(|n| (n.name, n.region, n.peer_address.to_string()))
        .collect();
    assert_eq!(
        nodes,
        [
            (
                "us-east-1".into(),
                "us-east".into(),
                "127.0.0.1:7100".into()
            ),
            (
                "eu-west-1".into(),
                "eu-west".into(),
                "127.0.0.1:7103".into()
            ),
        ]
    );
    assert!(!config.tls.key_pem.is_empty());
    assert!(!format!("{config:?}").contains("PRIVATE KEY"));
    assert_eq!(config.limits, LimitsConfig::default());
    assert_eq!(config.storage, StorageConfig::default());
}

#[test]
fn a_rewritten_file_round_trips() {
    let fx = Fixture::new();
    let mut file = NodeFile::read(&fx.path()).unwrap();
    file.peers[0].address = "127.0.0.1:9999".into();
    let text = file.to_toml();
    assert_eq!(NodeFile::parse(&fx.path(), &text).unwrap(), file);
    std::fs::write(fx.path(), text).unwrap();
    let config = NodeConfig::load(fx.path()).unwrap();
    assert_eq!(config.peers[0].address.to_string(), "127.0.0.1:9999");
}

#[test]
fn unknown_field_is_named() {
    let fx = Fixture::new();
    let text = fx
        .text()
        .replace("[storage]\n", "[storage]\nfsync_everything = true\n");
    let err = fx.error_with(&text);
    assert!(err.contains("storage.fsync_everything"), "{err}");
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn wrong_type_is_named_with_its_table() {
    let fx = Fixture::new();
    let text = fx
        .text()
        .replace("request_timeout_ms = 5000", "request_timeout_ms = \"soon\"");
    let err = fx.error_with(&text);
    assert!(err.contains("limits.request_timeout_ms"), "{err}");
    let text = fx.text().replace("region = \"eu-west\"", "region = 7");
    let err = fx.error_with(&text);
    assert!(err.contains("peers[0].region"), "{err}");
}

#[test]
fn bad_address_is_named() {
    let fx = Fixture::new();
    let text = fx.text().replace(
        "client_listen = \"127.0.0.1:7101\"",
        "client_listen = \"127.0.0.1\"",
    );
    let err = fx.error_with(&text);
    assert!(err.contains(": client_listen: "), "{err}");
    let text = fx.text().replace(
        "address = \"127.0.0.1:7103\"",
        "address = \"not an address:1\"",
    );
    let err = fx.error_with(&text);
    assert!(err.contains(": peers[0].address: "), "{err}");
}

#[test]
fn missing_certificate_is_named() {
    let fx = Fixture::new();
    std::fs::remove_file(fx.dir.path().join("us-east-1.pem")).unwrap();
    let err = NodeConfig::load(fx.path()).unwrap_err().to_string();
    assert!(err.contains(": tls.cert: cannot read "), "{err}");
    assert!(err.contains("us-east-1.pem"), "{err}");
    assert!(!err.contains('\n'));
}

#[test]
fn a_certificate_of_another_node_is_refused() {
    let fx = Fixture::new();
    let text = fx
        .text()
        .replace("cert = \"us-east-1.pem\"", "cert = \"eu-west-1.pem\"");
    let err = fx.error_with(&text);
    assert!(err.contains(": tls.cert: "), "{err}");
    assert!(err.contains("\"eu-west-1\""), "{err}");
    let text = fx
        .text()
        .replace("cert = \"us-east-1.pem\"", "cert = \"client.pem\"");
    let err = fx.error_with(&text);
    assert!(err.contains("not a node certificate"), "{err}");
}

#[test]
fn debug_link_needs_link_conditioning() {
    let fx = Fixture::new();
    let link = "\n[debug]\n[[debug.link]]\nregion = \"eu-west\"\ndelay_ms = 40\n";
    let err = fx.error_with(&format!("{}{link}", fx.text()));
    assert!(err.contains(": debug.link: "), "{err}");
    assert!(err.contains("allow_link_conditioning"), "{err}");
    let allowed = link.replace("[debug]\n", "[debug]\nallow_link_conditioning = true\n");
    std::fs::write(fx.path(), format!("{}{allowed}", fx.text())).unwrap();
    let config = NodeConfig::load(fx.path()).unwrap();
    assert_eq!(config.debug.link[0].delay_ms, 40);
    assert!(!config.debug.clock_offset_allowed(false));
    assert!(config.debug.clock_offset_allowed(true));
}

#[test]
fn placement_must_name_cluster_regions() {
    let fx = Fixture::new();
    let rule = "\n[[placement]]\nprefix = \"eu/\"\nregions = [\"eu-central\"]\n";
    let err = fx.error_with(&format!("{}{rule}", fx.text()));
    assert!(err.contains(": placement[0].regions: "), "{err}");
    assert!(err.contains("eu-central"), "{err}");
}

#[test]
fn placement_rules_are_checked_and_longest_prefix_wins() {
    let fx = Fixture::new();
    let original = fx.text();
    let rules = "\n[[placement]]\nprefix = \"eu/\"\nregions = [\"eu-west\"]\nhome = \"eu-west\"\n\
                 [[placement]]\nprefix = \"eu/shared/\"\nregions = [\"eu-west\", \"us-east\"]\n";
    std::fs::write(fx.path(), format!("{}{rules}", original)).unwrap();
    let config = NodeConfig::load(fx.path()).unwrap();
    assert_eq!(config.placement_for(b"eu/x").unwrap().prefix, "eu/");
    assert_eq!(
        config.placement_for(b"eu/shared/x").unwrap().prefix,
        "eu/shared/"
    );
    assert!(config.placement_for(b"us/x").is_none());

    let dup = "\n[[placement]]\nprefix = \"eu/\"\nregions = [\"eu-west\"]\n".repeat(2);
    let err = fx.error_with(&format!("{}{dup}", original));
    assert!(err.contains(": placement[1].prefix: "), "{err}");
    let bad_home =
        "\n[[placement]]\nprefix = \"eu/\"\nregions = [\"eu-west\"]\nhome = \"us-east\"\n";
    let err = fx.error_with(&format!("{}{bad_home}", original));
    assert!(err.contains(": placement[0].home: "), "{err}");
}

#[test]
fn peers_are_checked() {
    let fx = Fixture::new();
    let itself = fx
        .text()
        .replace("name = \"eu-west-1\"", "name = \"us-east-1\"");
    let err = fx.error_with(&itself);
    assert!(err.contains(": peers[0].name: "), "{err}");
    assert!(err.contains("this node itself"), "{err}");
    let twice = format!(
        "{}\n[[peers]]\nname = \"eu-west-1\"\nregion = \"eu-west\"\naddress = \"127.0.0.1:7200\"\n",
        fx.text()
    );
    let err = fx.error_with(&twice);
    assert!(err.contains(": peers[1].name: "), "{err}");
}

#[test]
fn ports_must_be_distinct() {
    let fx = Fixture::new();
    let text = fx.text().replace(
        "metrics_listen = \"127.0.0.1:7102\"",
        "metrics_listen = \"0.0.0.0:7101\"",
    );
    let err = fx.error_with(&text);
    assert!(err.contains(": metrics_listen: "), "{err}");
}

#[test]
fn resp_settings_are_optional_and_checked() {
    let fx = Fixture::new();
    let config = NodeConfig::load(fx.path()).unwrap();
    // init puts RESP ports after every node's three.
    assert_eq!(config.resp_listen.unwrap().to_string(), "127.0.0.1:7106");
    assert_eq!(config.resp, RespSettings::default());
    // A config from before the RESP front door still loads: no listener.
    let old: String = fx
        .text()
        .lines()
        .take_while(|l| !l.starts_with("[resp]"))
        .filter(|l| !l.starts_with("resp_listen"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = fx.dir.path().join("old.toml");
    std::fs::write(&path, old).unwrap();
    let config = NodeConfig::load(&path).unwrap();
    assert_eq!(config.resp_listen, None);
    // TLS on the RESP port is a setting of its own.
    let path = fx.dir.path().join("tls.toml");
    std::fs::write(&path, fx.text().replace("tls = false", "tls = true")).unwrap();
    assert!(NodeConfig::load(&path).unwrap().resp.tls);
    let err = fx.error_with(&fx.text().replace(
        "resp_listen = \"127.0.0.1:7106\"",
        "resp_listen = \"127.0.0.1:7101\"",
    ));
    assert!(err.contains(": resp_listen: "), "{err}");
    let err = fx.error_with(&fx.text().replace(
        "default_consistency = \"local\"",
        "default_consistency = \"eventual\"",
    ));
    assert!(err.contains("resp.default_consistency"), "{err}");
}

#[test]
fn durability_settings_are_checked() {
    let fx = Fixture::new();
    let text = fx
        .text()
        .replace("durability = \"sync\"", "durability = \"periodic\"");
    std::fs::write(fx.path(), &text).unwrap();
    let config = NodeConfig::load(fx.path()).unwrap();
    assert_eq!(
        config.durability(),
        Durability::Periodic { interval_ms: 10 }
    );
    let err = fx.error_with(&text.replace("periodic_ms = 10", "periodic_ms = 0"));
    assert!(err.contains(": storage.periodic_ms: "), "{err}");
    let err = fx.error_with(&text.replace("durability = \"periodic\"", "durability = \"never\""));
    assert!(err.contains("storage.durability"), "{err}");
    let err = fx.error_with(
        &fx.text()
            .replace("max_clock_offset_ms = 500", "max_clock_offset_ms = 0"),
    );
    assert!(err.contains(": storage.max_clock_offset_ms: "), "{err}");
}

/// `[replication] retention_ms` (review C1: truncation testable in
/// seconds): optional with the protocol's default, bounded, and what the
/// mesh's protocol gets.
#[test]
fn replication_retention_is_optional_checked_and_reaches_the_protocol() {
    use std::sync::Arc;
    let fx = Fixture::new();
    let protocol = |config: &NodeConfig| {
        let placement = Arc::new(config.cluster_placement());
        let clock = Arc::new(|| meridian_engine::PhysicalTime::system(0));
        config.mesh_config(placement, None, clock, None).protocol
    };
    let config = NodeConfig::load(fx.path()).unwrap();
    assert_eq!(config.replication, ReplicationConfig::default());
    assert_eq!(protocol(&config).retention_ms, DEFAULT_RETENTION_MS);
    assert_eq!(DEFAULT_RETENTION_MS, 3_600_000);

    let original = fx.text();
    let with = |ms: u64| format!("{original}\n[replication]\nretention_ms = {ms}\n");
    std::fs::write(fx.path(), with(5_000)).unwrap();
    let config = NodeConfig::load(fx.path()).unwrap();
    assert_eq!(config.replication.retention_ms, 5_000);
    assert_eq!(protocol(&config).retention_ms, 5_000);
    for bad in [MIN_RETENTION_MS - 1, MAX_RETENTION_MS + 1] {
        let err = fx.error_with(&with(bad));
        assert!(err.contains(": replication.retention_ms: "), "{err}");
    }
}

/// Review item S10: more placement rules than group ids fail the load with
/// one line (they used to wrap the group id).
#[test]
fn more_placement_rules_than_group_ids_are_refused() {
    let fx = Fixture::new();
    let rules: String = (0..=meridian_replication::MAX_PLACEMENT_RULES)
        .map(|i| format!("[[placement]]\nprefix = \"p{i}/\"\nregions = [\"eu-west\"]\n"))
        .collect();
    let err = fx.error_with(&format!("{}\n{rules}", fx.text()));
    assert!(err.contains(": placement: "), "{err}");
    assert!(err.contains("at most 65535"), "{err}");
}

#[test]
fn token_is_compared_by_digest() {
    let fx = Fixture::new();
    let config = NodeConfig::load(fx.path()).unwrap();
    let client = std::fs::read_to_string(fx.dir.path().join("client.toml")).unwrap();
    let client: meridian_client::config::ClientFile = toml::from_str(&client).unwrap();
    assert!(config.token_matches(client.token.as_bytes()));
    assert!(!config.token_matches(b""));
    assert!(!config.token_matches(&client.token.as_bytes()[1..]));
    let err = fx.error_with(
        &fx.text()
            .replace("token_sha256 = \"", "token_sha256 = \"zz"),
    );
    assert!(err.contains(": auth.token_sha256: "), "{err}");
}

#[test]
fn host_port_parsing() {
    for ok in [
        "127.0.0.1:7100",
        "[::1]:7100",
        "db-1.example:80",
        "localhost:1",
    ] {
        assert_eq!(HostPort::parse(ok).unwrap().to_string(), ok);
    }
    for bad in [
        "127.0.0.1",
        ":80",
        "a b:80",
        "::1:80",
        "host:99999",
        "-a:1",
        "[x]:1",
    ] {
        assert!(HostPort::parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn names_are_dns_labels() {
    for ok in ["us-east", "us-east-1", "a", "eu2"] {
        validate_name(ok).unwrap();
    }
    for bad in ["", "US", "1a", "a-", "a_b", "a.b", &"a".repeat(64)] {
        assert!(validate_name(bad).is_err(), "{bad} accepted");
    }
}
