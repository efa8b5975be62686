//! Two real meshes over loopback QUIC: the production push and quorum-wait
//! path end to end (a write pushed by `Mesh::push` is acknowledged to
//! `Mesh::wait_durable`), through the link-conditioning stage: a delayed
//! link makes the wait take at least the emulated round trip (never
//! early), and a cut link makes it time out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_engine::{Engine, EngineConfig, Kind, ObjectKey, Op, PhysicalTime, Value};
use meridian_replication::mesh::{Link, Mesh, MeshConfig, PeerAddress};
use meridian_replication::{NodeInfo, Placement, ProtocolConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "test ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate, key) PEM of node `name`.
    fn node(&self, name: &str) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("node:{name}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct TestNode {
    mesh: Mesh,
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn start_pair(links_a: BTreeMap<String, Link>) -> (TestNode, TestNode) {
    let ca = Ca::new();
    let names = [("a", "us-east"), ("b", "eu-west")];
    let ports = [free_port(), free_port()];
    let placement = Arc::new(
        Placement::new(
            names
                .iter()
                .map(|(n, r)| NodeInfo {
                    name: (*n).into(),
                    region: r.to_string(),
                })
                .collect(),
            Vec::new(),
        )
        .unwrap(),
    );
    let mut nodes = Vec::new();
    for (i, (name, region)) in names.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EngineConfig::new(dir.path());
        config.group_of = placement.group_fn();
        let engine = Engine::open(config, PhysicalTime::system(0)).unwrap();
        let (cert, key) = ca.node(name);
        let (peer, peer_region) = names[1 - i];
        let mesh = Mesh::start(
            MeshConfig {
                node: (*name).into(),
                region: region.to_string(),
                listen: format!("127.0.0.1:{}", ports[i]).parse().unwrap(),
                peers: vec![PeerAddress {
                    name: (*peer).into(),
                    region: peer_region.to_string(),
                    address: format!("127.0.0.1:{}", ports[1 - i]),
                }],
                ca_pem: ca.pem.clone().into_bytes(),
                cert_pem: cert.into_bytes(),
                key_pem: key.into_bytes(),
                protocol: ProtocolConfig::new(*name),
                placement: placement.clone(),
                links: if i == 0 {
                    links_a.clone()
                } else {
                    BTreeMap::new()
                },
                clock: Arc::new(|| PhysicalTime::system(0)),
                tap: None,
            },
            engine.clone(),
        )
        .await
        .unwrap();
        nodes.push(TestNode {
            mesh,
            engine,
            _dir: dir,
        });
    }
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    // Connected, and hellos exchanged (reports refresh every tick).
    let start = Instant::now();
    while !a.mesh.reports().iter().any(|r| r.connected)
        || !b.mesh.reports().iter().any(|r| r.connected)
    {
        assert!(start.elapsed() < Duration::from_secs(10), "never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (a, b)
}

/// Applies an increment on `node`, pushes it and waits for `b`'s durable
/// ack; returns the acks and how long the wait took.
async fn quorum_incr(node: &TestNode, key: &ObjectKey, timeout: Duration) -> (usize, Duration) {
    let applied = node
        .engine
        .apply(key, Op::Incr(1), PhysicalTime::system(0))
        .unwrap();
    let dot = applied.record.dot;
    let start = Instant::now();
    node.mesh.push(applied.record);
    let acked = node
        .mesh
        .wait_durable(vec![dot], vec!["b".into()], 1, timeout)
        .await;
    (acked, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_write_is_acked_through_the_delay_stage_never_early_and_not_while_cut() {
    let delay = Duration::from_millis(30);
    let (a, b) = start_pair(BTreeMap::from([(
        "eu-west".to_string(),
        Link {
            delay_ms: delay.as_millis() as u64,
            cut: false,
        },
    )]))
    .await;
    let key = ObjectKey::new(Kind::Counter, "k").unwrap();

    // A's conditioning delays both the push out and (as seen by A) nothing
    // on the way back: at least one emulated hop.
    let (acked, took) = quorum_incr(&a, &key, Duration::from_secs(5)).await;
    assert_eq!(acked, 1);
    assert!(
        took >= delay,
        "acked after {took:?}, before the {delay:?} hop"
    );
    assert_eq!(b.engine.read(&key).unwrap(), Value::Counter(1));

    // Cut: the push is dropped in the stage and the wait times out.
    a.mesh.set_link(
        "eu-west",
        Link {
            delay_ms: 0,
            cut: true,
        },
    );
    let (acked, took) = quorum_incr(&a, &key, Duration::from_millis(400)).await;
    assert_eq!(acked, 0, "acked across a cut link");
    assert!(took >= Duration::from_millis(400));
    assert!(!a.mesh.is_live("b"));

    // Healed: catch-up brings the missed write.
    a.mesh.set_link("eu-west", Link::default());
    let start = Instant::now();
    while b.engine.read(&key).unwrap() != Value::Counter(2) {
        assert!(start.elapsed() < Duration::from_secs(10), "no catch-up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (acked, _) = quorum_incr(&a, &key, Duration::from_secs(5)).await;
    assert_eq!(acked, 1);
    a.mesh.shutdown().await;
    b.mesh.shutdown().await;
}
