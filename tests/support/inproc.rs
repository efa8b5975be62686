//! Nodes started inside the test process, on real sockets.
//!
//! In-process nodes share the test's tokio runtime (use a multi-thread
//! runtime) and are the cheapest real cluster: engine, QUIC mesh, client
//! listener and coordinator all run for real. What they add over processes:
//! per-node protocol timers, link cuts from the test, direct access to each
//! node's engine, and a log of every frame a node receives from its peers.
//! Stopping one is a clean shutdown; a crash needs a process
//! ([`crate::process`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use meridian_cli::cluster::NodeSet;
use meridian_client::Client;
use meridian_engine::VersionVector;
use meridian_replication::ProtocolConfig;
use meridian_replication::mesh::{FrameTap, Link};
use meridian_server::node::{Node, ServeOptions};

use crate::CONVERGE;
use crate::cluster::{Spec, TestClusterFiles};

/// Upper bound on the frame bytes one node's log keeps (a test that needs
/// more is doing something else than the residency checks this is for).
const FRAME_LOG_BYTES: u64 = 256 << 20;

/// A received frame: the sending peer and the payload.
type Frame = (String, Vec<u8>);

/// Every frame payload one node received from its peers (replication
/// messages and RPC requests), in arrival order.
#[derive(Clone, Debug, Default)]
pub struct FrameLog {
    frames: Arc<Mutex<Vec<Frame>>>,
    bytes: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl FrameLog {
    fn tap(&self) -> FrameTap {
        let log = self.clone();
        Arc::new(move |peer: &str, payload: &[u8]| {
            let total = log.bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
            if total + payload.len() as u64 > FRAME_LOG_BYTES {
                log.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            log.frames
                .lock()
                .unwrap()
                .push((peer.to_owned(), payload.to_vec()));
        })
    }

    /// How many frames were received.
    pub fn len(&self) -> usize {
        self.frames.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frames not kept because the log was full (a residency check is only
    /// sound when this is 0).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The frames that contain `needle`, with their senders.
    pub fn matching(&self, needle: &[u8]) -> Vec<Frame> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| crate::contains(f, needle))
            .cloned()
            .collect()
    }

    /// The senders of the frames that contain `needle`.
    pub fn senders_of(&self, needle: &[u8]) -> Vec<String> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| crate::contains(f, needle))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The senders of every frame received.
    pub fn senders(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .frames
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Protocol timers for tests: faster anti-entropy and pull retries, a
/// heartbeat well inside the failure detector's window even on a loaded
/// machine, frequent truncation and small catch-up batches so the rare
/// paths (multi-batch catch-up, truncation) run.
pub fn test_protocol(node: &str) -> ProtocolConfig {
    let mut p = ProtocolConfig::new(node);
    p.anti_entropy_ms = 200;
    p.want_timeout_ms = 1_000;
    p.heartbeat_ms = 100;
    p.truncate_every_ms = 2_000;
    p.max_batch_records = 64;
    p
}

/// A cluster of in-process nodes: the launcher's [`NodeSet`] over a test's
/// [`TestClusterFiles`], each node with a [`FrameLog`] tap.
pub struct InProcessCluster {
    // Before `dir`: the nodes stop before the directory goes.
    nodes: NodeSet,
    frames: Vec<FrameLog>,
    pub dir: TestClusterFiles,
}

impl std::fmt::Debug for InProcessCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessCluster")
            .field("dir", &self.dir.path())
            .field("nodes", &self.dir.names())
            .finish_non_exhaustive()
    }
}

impl InProcessCluster {
    /// Creates `spec`'s cluster and starts every node with
    /// [`test_protocol`] timers.
    pub async fn start(spec: Spec) -> Result<InProcessCluster> {
        Self::start_with(TestClusterFiles::create(spec)?, test_protocol).await
    }

    /// Starts every node of `dir`, each with `protocol(node)` timers.
    pub async fn start_with(
        dir: TestClusterFiles,
        protocol: impl Fn(&str) -> ProtocolConfig,
    ) -> Result<InProcessCluster> {
        let mut cluster = Self::new(dir, protocol);
        cluster.nodes.start_all().await?;
        Ok(cluster)
    }

    /// Prepares `dir`'s nodes, each with `protocol(node)` timers, without
    /// starting any (start them with [`restart`](Self::restart)).
    pub fn new(
        dir: TestClusterFiles,
        protocol: impl Fn(&str) -> ProtocolConfig,
    ) -> InProcessCluster {
        crate::init_logging();
        let names = dir.names();
        let frames: Vec<FrameLog> = names.iter().map(|_| FrameLog::default()).collect();
        let nodes = NodeSet::new(&dir, |name| {
            let i = names.iter().position(|n| n == name).expect("a node of dir");
            ServeOptions {
                allow_debug_clock: false,
                protocol: Some(protocol(name)),
                tap: Some(frames[i].tap()),
            }
        });
        InProcessCluster { nodes, frames, dir }
    }

    fn index(&self, name: &str) -> usize {
        self.dir
            .nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this cluster"))
    }

    pub fn names(&self) -> Vec<String> {
        self.dir.names()
    }

    /// The running node `name` (panics if it is stopped).
    pub fn node(&self, name: &str) -> &Node {
        self.nodes.node(name)
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.nodes.is_running(name)
    }

    /// What `name` received from its peers so far (across restarts).
    pub fn frames(&self, name: &str) -> &FrameLog {
        &self.frames[self.index(name)]
    }

    /// Shuts `name` down cleanly (stops accepting, drains, closes the mesh,
    /// final checkpoint).
    pub async fn stop(&mut self, name: &str) -> Result<()> {
        self.nodes.stop(name).await
    }

    /// Starts `name` (again) with the options it was first started with.
    pub async fn restart(&mut self, name: &str) -> Result<()> {
        self.nodes.start(name).await
    }

    fn set_links(&self, a: &str, b: &str, link: Link) {
        let (region_a, region_b) = (self.dir.region_of(a), self.dir.region_of(b));
        assert_ne!(region_a, region_b, "links are per region");
        self.node(a).set_link(region_b, link);
        self.node(b).set_link(region_a, link);
    }

    /// Blocks all traffic between `a`'s and `b`'s regions, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        self.set_links(
            a,
            b,
            Link {
                delay_ms: 0,
                cut: true,
            },
        );
    }

    /// Undoes [`cut`](Self::cut).
    pub fn heal(&self, a: &str, b: &str) {
        self.set_links(a, b, Link::default());
    }

    /// Cuts `name`'s region off from every other region.
    pub fn isolate(&self, name: &str) {
        for other in self.others(name) {
            self.cut(name, &other);
        }
    }

    /// Undoes [`isolate`](Self::isolate).
    pub fn rejoin(&self, name: &str) {
        for other in self.others(name) {
            self.heal(name, &other);
        }
    }

    fn others(&self, name: &str) -> Vec<String> {
        let region = self.dir.region_of(name).to_owned();
        self.names()
            .into_iter()
            .filter(|n| self.dir.region_of(n) != region)
            .collect()
    }

    /// Waits until every running node sees every other running node live
    /// and handshaken (so pushes flow and quorums count it); panics after
    /// [`CONVERGE`].
    pub async fn wait_connected(&self) {
        if let Err(e) = self.nodes.wait_connected(CONVERGE).await {
            panic!("every running node connected to every other: {e:#}");
        }
    }

    /// Waits until each of `names` has truncated deltas that `past` (the
    /// vector a stopped node had) lacks, so that node can only catch up
    /// by full-state sync; panics after [`CONVERGE`]. Any truncation is
    /// not enough: a segment holding only what every node had acked may
    /// go first.
    pub async fn wait_truncated(&self, names: &[&str], past: &VersionVector) {
        crate::eventually(
            "the nodes truncate their logs past what the stopped node has",
            CONVERGE,
            || async {
                for name in names {
                    let mut deleted = VersionVector::new();
                    for vector in self.node(name).engine().truncated().values() {
                        deleted.join(vector);
                    }
                    if past.dominates(&deleted) {
                        return Err(format!(
                            "{name} has truncated only what the stopped node has: {deleted:?}"
                        ));
                    }
                }
                Ok(())
            },
        )
        .await;
    }

    /// Waits until `name` has completed a full-state sync from a peer;
    /// panics after `within`. The sync's completion message follows its
    /// objects: a node may read converged before it counts the sync.
    pub async fn wait_full_sync_received(&self, name: &str, within: Duration) {
        crate::eventually("a full-state sync completes", within, || async {
            let syncs: u64 = self
                .node(name)
                .mesh()
                .reports()
                .iter()
                .map(|r| r.full_syncs_received)
                .sum();
            if syncs == 0 {
                return Err(format!("{name} has completed no full-state sync"));
            }
            Ok(())
        })
        .await;
    }

    /// A client pinned to `name`.
    pub async fn client(&self, name: &str) -> Result<Client> {
        self.dir.client(name).await
    }

    /// Shuts every running node down cleanly, all at once.
    pub async fn shutdown(mut self) -> Result<()> {
        self.nodes.shutdown().await
    }
}

/// How long a partitioned node's peers take, at most, to stop counting it
/// live: a cut link is not live at once; a silent one after
/// [`meridian_replication::mesh::LIVE_TIMEOUT`].
pub const DETECT: Duration = Duration::from_secs(10);
