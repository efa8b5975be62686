//! The thin tokio/quinn driver around the [`Replicator`] state machine:
//! the node's connection to the rest of the cluster.
//!
//! * One QUIC connection per pair of nodes, dialed by the node whose name
//!   sorts first, authenticated both ways by certificates from the cluster
//!   CA: a peer's identity is the node name in its certificate, never its
//!   address, and only the cluster's configured nodes are accepted.
//! * Each side sends on two unidirectional streams of its own: *control*
//!   (hello, realtime deltas, acks, pulls; high priority) and *bulk*
//!   (catch-up batches and full-state syncs), so bulk data never delays
//!   realtime traffic. Realtime deltas queued together are sent as one
//!   message (batching when busy); nothing waits for stream
//!   acknowledgements.
//! * Request/response RPC (quorum reads and writes, forwarded requests)
//!   uses one bidirectional stream per call, served by an [`RpcHandler`].
//! * Every frame is length-checked and validated; a peer that sends garbage
//!   is disconnected and logged, and the node keeps serving.
//! * The protocol state machine runs on its own thread (it calls the engine,
//!   which blocks on disk); tasks feed it inputs through a queue bounded in
//!   inputs and in bytes, as every queue of the mesh is (`queue`).
//!   Realtime pushes skip that thread: [`Mesh::push`] sends to the peers the
//!   machine published as targets, from the writing task.
//! * Demo link conditioning (off unless configured): a one-way delay per
//!   peer region and a switch that cuts a region off, applied in one stage
//!   in front of each writer.
//!
//! # Modules
//! * this file: the [`Mesh`] handle, its configuration and shared state;
//! * `driver`: the protocol thread and what it does with outputs;
//! * `connection`: accept, dial, a link's lifetime, the read side and the
//!   one frame reader;
//! * `rpc`: peer RPC ([`Mesh::call`] and serving calls);
//! * `writer`: the per-lane send loop and realtime-delta coalescing;
//! * `conditioning`: link conditioning ([`Link`], the writer's stage);
//! * `queue`: the byte-bounded queues (a link's lanes, the protocol input).

mod conditioning;
mod connection;
mod driver;
mod queue;
mod rpc;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use meridian_engine::{Dot, Engine, PhysicalTime, Record};
use quinn::{Connection, Endpoint, VarInt};
use tokio::sync::{oneshot, watch};

pub use self::conditioning::Link;
use self::conditioning::LinkConditions;
use self::queue::{Inputs, Writers};
pub use self::rpc::{MAX_RPC_BYTES, RpcHandler};
use crate::name::NodeName;
use crate::placement::Placement;
use crate::protocol::{
    Input, Now, PeerFlags, PeerReport, ProtocolConfig, PushTargets, Replicator, Waits,
};
use crate::tls::{self, TlsError};

/// Stream type tags: the first byte of every stream.
const STREAM_CONTROL: u8 = 1;
const STREAM_BULK: u8 = 2;
const STREAM_RPC: u8 = 3;

/// Application close codes.
const CLOSE_SHUTDOWN: u32 = 0;
const CLOSE_PROTOCOL: u32 = 2;
const CLOSE_REPLACED: u32 = 3;
const CLOSE_UNKNOWN: u32 = 4;

/// A peer is *live* (for leader choice and quorum checks) while connected
/// and heard from within this long. Heartbeats come every 250 ms, so three
/// missed in a row (plus scheduling slack) mark it suspect.
pub const LIVE_TIMEOUT: Duration = Duration::from_millis(1_500);

/// While a message is being read from a peer's bulk stream, the protocol
/// hears that its bytes are arriving ([`Input::Receiving`]) at most this
/// often, in ms: often enough that a pull's timeout (seconds) never runs
/// out while its answer flows, rare enough to cost nothing (ten small
/// inputs a second per stream, at most).
pub const RECEIVING_NOTE_MS: u64 = 100;

/// UDP receive (and send) buffer asked for on the peer socket, in bytes.
/// The kernel's default (about 208 KiB on Linux) holds ~150 packets: a
/// node that is not scheduled for a few milliseconds while a peer sends a
/// large message (a WAN relay releasing a burst, a loaded host) overflows
/// it, and every lost packet halves QUIC's congestion window. On a loaded
/// 2-vCPU host the harness measured 10 % loss and ~130 KB/s per link with
/// the default (issue 13). The kernel caps it at `net.core.rmem_max`
/// (`wmem_max`); less is logged, not an error.
pub const PEER_UDP_BUFFER_BYTES: usize = 4 << 20;

/// The peer listener: a UDP socket with [`PEER_UDP_BUFFER_BYTES`] of
/// buffers, under a QUIC endpoint.
fn peer_endpoint(server: quinn::ServerConfig, listen: SocketAddr) -> std::io::Result<Endpoint> {
    let socket = std::net::UdpSocket::bind(listen)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    let sized = state
        .set_recv_buffer_size((&socket).into(), PEER_UDP_BUFFER_BYTES)
        .and_then(|()| state.set_send_buffer_size((&socket).into(), PEER_UDP_BUFFER_BYTES))
        .and_then(|()| state.recv_buffer_size((&socket).into()));
    match sized {
        Ok(bytes) if bytes >= PEER_UDP_BUFFER_BYTES => {}
        Ok(bytes) => tracing::info!(
            bytes,
            wanted = PEER_UDP_BUFFER_BYTES,
            "peer UDP receive buffer capped by the kernel (net.core.rmem_max)"
        ),
        Err(e) => tracing::warn!(error = %e, "could not size the peer UDP buffers"),
    }
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for the peer endpoint"))?;
    Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        runtime,
    )
}

/// One way to reach a peer.
#[derive(Clone, Debug)]
pub struct PeerAddress {
    pub name: NodeName,
    pub region: String,
    /// `host:port` of its peer listener.
    pub address: String,
}

/// Everything the mesh needs.
#[derive(Clone)]
pub struct MeshConfig {
    pub node: NodeName,
    pub region: String,
    pub listen: SocketAddr,
    pub peers: Vec<PeerAddress>,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub protocol: ProtocolConfig,
    pub placement: Arc<Placement>,
    /// Initial link conditioning per region (empty: none).
    pub links: BTreeMap<String, Link>,
    /// The node's physical clock (the harness may skew it).
    pub clock: Arc<dyn Fn() -> PhysicalTime + Send + Sync>,
    /// Test hook: sees every frame payload received from a peer (messages
    /// and RPC requests), before validation. `None` in production.
    pub tap: Option<FrameTap>,
}

/// See [`MeshConfig::tap`]: called with the peer's name and the payload.
pub type FrameTap = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

impl std::fmt::Debug for MeshConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConfig")
            .field("node", &self.node)
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// (`source` is the error's source: not repeated in the message.)
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("peer {0} is not connected")]
    NotConnected(String),
    #[error("link to {0} is cut")]
    Cut(String),
    #[error("rpc to {peer} failed: {message}")]
    Rpc { peer: String, message: String },
    #[error("rpc to {0} timed out")]
    Timeout(String),
    #[error("mesh is shut down")]
    Shutdown,
}

/// Traffic counters of one peer link.
#[derive(Default, Debug)]
struct LinkCounters {
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    realtime_dropped: AtomicU64,
    garbage: AtomicU64,
}

struct PeerLink {
    name: NodeName,
    region: String,
    address: String,
    /// Current connection and its generation.
    conn: Mutex<Option<(u64, Connection)>>,
    writer: Mutex<Option<Writers>>,
    last_heard: AtomicU64,
    counters: LinkCounters,
    /// Signalled when the connection goes away (wakes the dialer).
    lost: tokio::sync::Notify,
    /// A full-state sync to this peer is streaming.
    full_sync_running: AtomicBool,
}

/// The mesh as its tasks and the protocol thread share it.
struct MeshState {
    node: NodeName,
    engine: Engine,
    placement: Arc<Placement>,
    peers: HashMap<NodeName, Arc<PeerLink>>,
    /// The protocol thread's input queue (bounded so a flood of messages
    /// pushes back on the network, QUIC flow control, instead of growing
    /// memory).
    inputs: Inputs,
    durable_pending: AtomicBool,
    /// Quorum waits in progress, by token.
    waits: Mutex<Waits<oneshot::Sender<usize>>>,
    /// Who takes realtime pushes (published by the protocol).
    push_targets: Arc<PushTargets>,
    /// Which peers agree on placement, may take forwarded requests and may
    /// lead, and whether this node may (published by the protocol).
    flags: Arc<PeerFlags>,
    next_token: AtomicU64,
    next_generation: AtomicU64,
    reports: RwLock<Vec<PeerReport>>,
    conditions: LinkConditions,
    rpc: OnceLock<Arc<dyn RpcHandler>>,
    clock: Arc<dyn Fn() -> PhysicalTime + Send + Sync>,
    started: Instant,
    shutdown: watch::Sender<bool>,
    tap: Option<FrameTap>,
    endpoint: Endpoint,
    client_config: quinn::ClientConfig,
    next_sync: AtomicU64,
    /// Bytes of messages being reassembled from several frames
    /// ([`connection::ASSEMBLY_BYTES`]).
    assembly: Arc<tokio::sync::Semaphore>,
}

/// A node's connection to the rest of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<MeshState>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("node", &self.shared.node)
            .finish_non_exhaustive()
    }
}

fn mono_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

impl MeshState {
    fn now(&self) -> Now {
        Now {
            mono_ms: mono_ms(self.started),
            physical: (self.clock)(),
        }
    }
}

impl Mesh {
    /// Binds the peer listener, starts the protocol thread, the dialers and
    /// the accept loop.
    pub async fn start(config: MeshConfig, engine: Engine) -> Result<Mesh, MeshError> {
        let server = tls::peer_server_config(&config.ca_pem, &config.cert_pem, &config.key_pem)?;
        let client_config =
            tls::peer_client_config(&config.ca_pem, &config.cert_pem, &config.key_pem)?;
        let endpoint = peer_endpoint(server, config.listen).map_err(|source| MeshError::Bind {
            addr: config.listen,
            source,
        })?;
        let (inputs, input_rx) = Inputs::new();
        let (shutdown, _) = watch::channel(false);
        let peers = config
            .peers
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Arc::new(PeerLink {
                        name: p.name.clone(),
                        region: p.region.clone(),
                        address: p.address.clone(),
                        conn: Mutex::new(None),
                        writer: Mutex::new(None),
                        last_heard: AtomicU64::new(0),
                        counters: LinkCounters::default(),
                        lost: tokio::sync::Notify::new(),
                        full_sync_running: AtomicBool::new(false),
                    }),
                )
            })
            .collect();
        let started = Instant::now();
        let now = Now {
            mono_ms: 0,
            physical: (config.clock)(),
        };
        let replicator = Replicator::new(
            config.protocol.clone(),
            engine.clone(),
            config.placement.clone(),
            now,
        );
        let shared = Arc::new(MeshState {
            node: config.node.clone(),
            engine,
            placement: config.placement.clone(),
            peers,
            inputs,
            durable_pending: AtomicBool::new(false),
            waits: Mutex::new(Waits::default()),
            push_targets: replicator.push_targets(),
            flags: replicator.peer_flags(),
            next_token: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            reports: RwLock::new(Vec::new()),
            conditions: LinkConditions::new(config.links.clone()),
            rpc: OnceLock::new(),
            clock: config.clock.clone(),
            started,
            shutdown,
            tap: config.tap.clone(),
            endpoint,
            client_config,
            next_sync: AtomicU64::new(1),
            assembly: Arc::new(tokio::sync::Semaphore::new(connection::ASSEMBLY_BYTES)),
        });
        driver::start(shared.clone(), replicator, input_rx);
        tokio::spawn(connection::accept_loop(shared.clone()));
        for peer in shared.peers.values() {
            if shared.node < peer.name {
                tokio::spawn(connection::dial_loop(shared.clone(), peer.clone()));
            }
        }
        Ok(Mesh { shared })
    }

    /// The address the peer listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    pub fn placement(&self) -> &Arc<Placement> {
        &self.shared.placement
    }

    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Installs the RPC handler (once).
    pub fn set_rpc_handler(&self, handler: Arc<dyn RpcHandler>) {
        let _ = self.shared.rpc.set(handler);
    }

    /// Pushes a locally applied delta to its replicas (best effort: peers
    /// pull whatever push misses): to the peers the protocol published as
    /// targets ([`PushTargets`]), straight to their writers, without a hop
    /// through the protocol thread.
    pub fn push(&self, record: Record) {
        self.shared.push_targets.push(&record, |peer, msg| {
            let Some(link) = self.shared.peers.get(peer) else {
                return;
            };
            let writer = link
                .writer
                .lock()
                .unwrap()
                .as_ref()
                .map(|w| w.control.clone());
            if let Some(writer) = writer
                && writer.try_send(msg).is_err()
            {
                link.counters
                    .realtime_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Whether `peer` is connected, was heard from recently and has not
    /// said it disagrees on placement (an incompatible peer is not
    /// replicated with, so it cannot count towards a request's replicas).
    /// The coordinator's availability check.
    pub fn is_live(&self, peer: &str) -> bool {
        if peer == self.shared.node {
            return true;
        }
        let Some(link) = self.shared.peers.get(peer) else {
            return false;
        };
        if self.shared.conditions.is_cut(&link.region) || !self.shared.flags.is_compatible(peer) {
            return false;
        }
        let connected = link.conn.lock().unwrap().is_some();
        let heard = link.last_heard.load(Ordering::Relaxed);
        connected
            && mono_ms(self.shared.started).saturating_sub(heard) < LIVE_TIMEOUT.as_millis() as u64
    }

    /// Whether `peer` may take a forwarded request: live, hellos exchanged,
    /// same placement and not stalled (review C6). This node always may.
    pub fn is_usable(&self, peer: &str) -> bool {
        peer == self.shared.node || (self.is_live(peer) && self.shared.flags.is_usable(peer))
    }

    /// Whether `node` may serve as a key's leader, in this node's view
    /// (review C5). This node: it has completed a catch-up round from each
    /// of its live peers since (re)connecting to it, with nothing deferred
    /// ([`Replicator::caught_up`]). A peer: usable ([`Mesh::is_usable`]),
    /// it says the same of itself, and it has acknowledged everything this
    /// node had applied when their hellos were exchanged. `is_live` stays
    /// the availability check; this is the leader choice.
    pub fn is_caught_up(&self, node: &str) -> bool {
        if node == self.shared.node {
            return self.shared.flags.is_caught_up();
        }
        self.is_usable(node) && self.shared.flags.is_leader_eligible(node)
    }

    /// Waits until `needed` of `peers` hold every dot of `dots` (one
    /// operation's records) durably, or `timeout`; returns how many did.
    pub async fn wait_durable(
        &self,
        mut dots: Vec<Dot>,
        peers: Vec<NodeName>,
        needed: usize,
        timeout: Duration,
    ) -> usize {
        let Some(dot) = dots.pop() else {
            return 0;
        };
        if needed == 0 {
            return 0;
        }
        let token = self.shared.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared
            .waits
            .lock()
            .unwrap()
            .register(token, needed, tx);
        let deadline_ms = mono_ms(self.shared.started) + timeout.as_millis() as u64 + 1_000;
        if self
            .shared
            .inputs
            .send(Input::Wait {
                token,
                dot,
                also: dots,
                peers,
                needed,
                deadline_ms,
            })
            .await
            .is_err()
        {
            self.shared.waits.lock().unwrap().cancel(token);
            return 0;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(acked)) => acked,
            _ => {
                let _ = self.shared.inputs.try_send(Input::Cancel { token });
                self.shared.waits.lock().unwrap().cancel(token)
            }
        }
    }

    /// The latest per-peer reports (refreshed every tick).
    ///
    /// The protocol estimates a peer's clock offset as the peer's wall clock
    /// when it sent its last message minus ours when it arrived, which is
    /// short by the one-way transit time; half the round trip is added back.
    pub fn reports(&self) -> Vec<PeerReport> {
        let mut reports = self.shared.reports.read().unwrap().clone();
        for r in &mut reports {
            if let Some(rtt) = self.rtt(&r.name) {
                let half = i64::try_from(rtt.as_millis() / 2).unwrap_or(i64::MAX);
                r.clock_offset_ms = r.clock_offset_ms.saturating_add(half);
            }
        }
        reports
    }

    /// Per-peer traffic counters: (peer, sent msgs, received msgs, sent
    /// bytes, received bytes, realtime dropped, garbage frames).
    pub fn traffic(&self) -> Vec<(NodeName, [u64; 6])> {
        let mut out: Vec<_> = self
            .shared
            .peers
            .values()
            .map(|l| {
                let c = &l.counters;
                (
                    l.name.clone(),
                    [
                        c.messages_sent.load(Ordering::Relaxed),
                        c.messages_received.load(Ordering::Relaxed),
                        c.bytes_sent.load(Ordering::Relaxed),
                        c.bytes_received.load(Ordering::Relaxed),
                        c.realtime_dropped.load(Ordering::Relaxed),
                        c.garbage.load(Ordering::Relaxed),
                    ],
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Smoothed round-trip time to `peer`, if connected.
    pub fn rtt(&self, peer: &str) -> Option<Duration> {
        let link = self.shared.peers.get(peer)?;
        let extra = Duration::from_millis(2 * self.shared.conditions.get(&link.region).delay_ms);
        link.conn
            .lock()
            .unwrap()
            .as_ref()
            .map(|(_, c)| c.rtt() + extra)
    }

    /// Current link conditioning.
    pub fn links(&self) -> BTreeMap<String, Link> {
        self.shared.conditions.all()
    }

    /// Changes link conditioning towards `region` (the caller checks it is
    /// allowed).
    pub fn set_link(&self, region: &str, link: Link) {
        let was_cut = self.shared.conditions.set(region, link);
        if was_cut == link.cut {
            return;
        }
        // Tell the protocol, so a heal starts catch-up at once instead of
        // after the next pull timeout.
        for peer in self.shared.peers.values().filter(|p| p.region == region) {
            let up = peer.conn.lock().unwrap().is_some();
            let input = if link.cut {
                Input::Disconnected {
                    peer: peer.name.clone(),
                }
            } else if up {
                Input::Connected {
                    peer: peer.name.clone(),
                }
            } else {
                continue;
            };
            let _ = self.shared.inputs.try_send(input);
        }
    }

    /// Stops accepting, closes every connection and waits (bounded) for
    /// the close to reach peers, then stops the protocol thread.
    pub async fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
        self.shared
            .endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"shutting down");
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.shared.endpoint.wait_idle()).await;
        // The protocol thread checks the signal between inputs and the
        // ticker has stopped: wake it so that it exits (and lets go of the
        // engine).
        let _ = self.shared.inputs.try_send(Input::Tick);
    }
}
