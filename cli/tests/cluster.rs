//! The in-process cluster launcher (`meridian_cli::cluster`): write, edit,
//! start on free ports, stop, remove.

use meridian_cli::cluster::{LocalCluster, Ports, Spec, Workdir};
use meridian_server::config::{Durability, DurabilityMode};

/// Two clusters started at the same moment on the same candidate port
/// blocks both start, on different blocks; configs carry the edits; the
/// temporary directories are gone after shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clusters_take_different_blocks_and_clean_up() {
    let bases = vec![23_100, 23_400, 23_700, 24_000];
    let spec = Spec::new(["us-east", "eu-west"])
        .ports(Ports::Loopback(bases.clone()))
        .durability(DurabilityMode::Periodic)
        .link_delays(|a, b| if a == b { 0 } else { 5 });
    let (a, b) = tokio::join!(LocalCluster::start(&spec), LocalCluster::start(&spec));
    let (a, b) = (a.unwrap(), b.unwrap());
    let port = |c: &LocalCluster| c.files().nodes[0].peer_listen.to_string();
    assert_ne!(port(&a), port(&b));
    for c in [&a, &b] {
        assert_eq!(c.node_names(), ["us-east-1", "eu-west-1"]);
        assert!(c.nodes().not_connected().is_empty());
        let config = c.files().config("us-east-1").unwrap();
        assert!(matches!(config.durability(), Durability::Periodic { .. }));
        let file = std::fs::read_to_string(c.files().config_path("us-east-1")).unwrap();
        assert!(file.contains("delay_ms = 5"), "{file}");
    }
    let dirs = [a.path().to_owned(), b.path().to_owned()];
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    for d in dirs {
        assert!(!d.exists(), "{} still exists", d.display());
    }
}

#[test]
fn a_named_directory_must_be_new_or_empty_and_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("notes.txt"), "keep me").unwrap();
    let err = Workdir::new_or_empty(&full).unwrap_err().to_string();
    assert!(err.contains("is not empty"), "{err}");

    let fresh = tmp.path().join("fresh");
    let dir = Workdir::new_or_empty(&fresh).unwrap();
    assert!(!dir.is_temporary());
    drop(dir);
    assert!(fresh.exists());

    let temp = Workdir::temporary("meridian-launcher-test").unwrap();
    let path = temp.path().to_owned();
    assert!(temp.is_temporary());
    drop(temp);
    assert!(!path.exists());
}
