//! The thin tokio/quinn driver around the [`Replicator`] state machine.
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
//!   which blocks on disk); tasks feed it inputs through a bounded channel.
//! * Demo link conditioning (off unless configured): a one-way delay per
//!   peer region and a switch that cuts a region off.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use meridian_engine::{Dot, Engine, PhysicalTime};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::message::{MAX_PEER_FRAME_BYTES, PeerMessage, frame_len};
use crate::placement::Placement;
use crate::protocol::{Input, Lane, Now, Output, PeerReport, ProtocolConfig, Replicator};
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

/// Inputs queued for the protocol thread. Bounded so a flood of messages
/// pushes back on the network (QUIC flow control) instead of growing memory.
const INPUT_QUEUE: usize = 16_384;

/// Messages queued for one peer's writer. Realtime pushes past this are
/// dropped (the peer pulls them later); bulk senders wait.
const PEER_QUEUE: usize = 8_192;

/// Realtime deltas merged into one message, at most (bytes of deltas).
const COALESCE_BYTES: usize = 256 << 10;

/// RPC request and response size limit, in bytes.
pub const MAX_RPC_BYTES: usize = MAX_PEER_FRAME_BYTES;

/// Concurrent incoming RPCs served per connection; more wait (QUIC
/// stream limits apply beyond that).
const RPC_CONCURRENCY: usize = 512;

/// How often the protocol state machine ticks.
const TICK: Duration = Duration::from_millis(20);

/// A peer is *live* (for leader choice and quorum checks) while connected
/// and heard from within this long. Heartbeats come every 250 ms, so three
/// missed in a row (plus scheduling slack) mark it suspect.
pub const LIVE_TIMEOUT: Duration = Duration::from_millis(1_500);

/// Wait between dial attempts to an unreachable peer.
const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(100);
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// One way to reach a peer.
#[derive(Clone, Debug)]
pub struct PeerAddress {
    pub name: String,
    pub region: String,
    /// `host:port` of its peer listener.
    pub address: String,
}

/// Demo link conditioning towards one region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// One-way delay added to every message to that region.
    pub delay_ms: u64,
    /// Drop all traffic to that region.
    pub cut: bool,
}

/// Everything the mesh needs.
#[derive(Clone)]
pub struct MeshConfig {
    pub node: String,
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

/// Serves RPCs from peers: `request` bytes in, response bytes out.
pub trait RpcHandler: Send + Sync + 'static {
    fn handle(
        &self,
        peer: String,
        request: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;
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

/// The two send queues of a link (one writer task each, so a bulk stream
/// waiting on flow control never holds up control messages).
#[derive(Clone)]
struct Writers {
    control: mpsc::Sender<PeerMessage>,
    bulk: mpsc::Sender<PeerMessage>,
}

impl Writers {
    fn lane(&self, lane: Lane) -> &mpsc::Sender<PeerMessage> {
        match lane {
            Lane::Control => &self.control,
            Lane::Bulk => &self.bulk,
        }
    }
}

struct PeerLink {
    name: String,
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
    /// The protocol says it takes realtime pushes ([`Output::PeerReady`]).
    ready: AtomicBool,
}

struct Waiter {
    acked: usize,
    done: Option<oneshot::Sender<usize>>,
}

struct Shared {
    node: String,
    engine: Engine,
    placement: Arc<Placement>,
    peers: HashMap<String, Arc<PeerLink>>,
    inputs: mpsc::Sender<Input>,
    durable_pending: AtomicBool,
    waiters: Mutex<HashMap<u64, Waiter>>,
    next_token: AtomicU64,
    next_generation: AtomicU64,
    reports: RwLock<Vec<PeerReport>>,
    links: RwLock<BTreeMap<String, Link>>,
    rpc: OnceLock<Arc<dyn RpcHandler>>,
    clock: Arc<dyn Fn() -> PhysicalTime + Send + Sync>,
    started: Instant,
    shutdown: watch::Sender<bool>,
    tap: Option<FrameTap>,
    endpoint: Endpoint,
    client_config: quinn::ClientConfig,
    next_sync: AtomicU64,
}

/// A node's connection to the rest of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
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

impl Shared {
    fn now(&self) -> Now {
        Now {
            mono_ms: mono_ms(self.started),
            physical: (self.clock)(),
        }
    }

    fn link_to(&self, region: &str) -> Link {
        self.links
            .read()
            .unwrap()
            .get(region)
            .copied()
            .unwrap_or_default()
    }
}

impl Mesh {
    /// Binds the peer listener, starts the protocol thread, the dialers and
    /// the accept loop.
    pub async fn start(config: MeshConfig, engine: Engine) -> Result<Mesh, MeshError> {
        let server = tls::peer_server_config(&config.ca_pem, &config.cert_pem, &config.key_pem)?;
        let client_config =
            tls::peer_client_config(&config.ca_pem, &config.cert_pem, &config.key_pem)?;
        let endpoint =
            Endpoint::server(server, config.listen).map_err(|source| MeshError::Bind {
                addr: config.listen,
                source,
            })?;
        let (inputs, input_rx) = mpsc::channel(INPUT_QUEUE);
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
                        ready: AtomicBool::new(false),
                    }),
                )
            })
            .collect();
        let shared = Arc::new(Shared {
            node: config.node.clone(),
            engine: engine.clone(),
            placement: config.placement.clone(),
            peers,
            inputs,
            durable_pending: AtomicBool::new(false),
            waiters: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            reports: RwLock::new(Vec::new()),
            links: RwLock::new(config.links.clone()),
            rpc: OnceLock::new(),
            clock: config.clock.clone(),
            started: Instant::now(),
            shutdown,
            tap: config.tap.clone(),
            endpoint,
            client_config,
            next_sync: AtomicU64::new(1),
        });

        let replicator = Replicator::new(
            config.protocol.clone(),
            engine,
            config.placement.clone(),
            shared.now(),
        );
        let runtime = tokio::runtime::Handle::current();
        {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("meridian-replication".into())
                .spawn(move || protocol_thread(shared, replicator, input_rx, runtime))
                .expect("spawning the replication thread");
        }
        {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut stop = shared.shutdown.subscribe();
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if shared.inputs.try_send(Input::Tick).is_err() && shared.inputs.is_closed() {
                                break;
                            }
                        }
                        _ = stop.changed() => break,
                    }
                }
            });
        }
        tokio::spawn(accept_loop(shared.clone()));
        for peer in shared.peers.values() {
            if shared.node < peer.name {
                tokio::spawn(dial_loop(shared.clone(), peer.clone()));
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
    /// pull whatever push misses). Straight to the peers' writers, without a
    /// hop through the protocol thread, to the peers the protocol reported
    /// ready, exactly those its own push would choose.
    pub fn push(&self, record: meridian_engine::Record) {
        let group = self.shared.placement.group_of(record.key.key());
        for link in self.shared.peers.values() {
            if !link.ready.load(Ordering::Acquire)
                || !self.shared.placement.is_replica(&link.name, group)
                || self.shared.link_to(&link.region).cut
            {
                continue;
            }
            let Some(writer) = link
                .writer
                .lock()
                .unwrap()
                .as_ref()
                .map(|w| w.control.clone())
            else {
                continue;
            };
            let msg = PeerMessage::Deltas {
                records: vec![record.clone()],
                catch_up: false,
                more: false,
            };
            if writer.try_send(msg).is_err() {
                link.counters
                    .realtime_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether `peer` is connected and was heard from recently.
    pub fn is_live(&self, peer: &str) -> bool {
        if peer == self.shared.node {
            return true;
        }
        let Some(link) = self.shared.peers.get(peer) else {
            return false;
        };
        if self.shared.link_to(&link.region).cut {
            return false;
        }
        let connected = link.conn.lock().unwrap().is_some();
        let heard = link.last_heard.load(Ordering::Relaxed);
        connected
            && mono_ms(self.shared.started).saturating_sub(heard) < LIVE_TIMEOUT.as_millis() as u64
    }

    /// Waits until `needed` of `peers` hold `dot` durably, or `timeout`;
    /// returns how many did.
    pub async fn wait_durable(
        &self,
        dot: Dot,
        peers: Vec<String>,
        needed: usize,
        timeout: Duration,
    ) -> usize {
        if needed == 0 {
            return 0;
        }
        let token = self.shared.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared.waiters.lock().unwrap().insert(
            token,
            Waiter {
                acked: 0,
                done: Some(tx),
            },
        );
        let deadline_ms = mono_ms(self.shared.started) + timeout.as_millis() as u64 + 1_000;
        if self
            .shared
            .inputs
            .send(Input::Wait {
                token,
                dot,
                peers,
                needed,
                deadline_ms,
            })
            .await
            .is_err()
        {
            self.shared.waiters.lock().unwrap().remove(&token);
            return 0;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(acked)) => acked,
            _ => {
                let _ = self.shared.inputs.try_send(Input::Cancel { token });
                self.shared
                    .waiters
                    .lock()
                    .unwrap()
                    .remove(&token)
                    .map_or(0, |w| w.acked)
            }
        }
    }

    /// Calls `peer`'s RPC handler.
    pub async fn call(
        &self,
        peer: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, MeshError> {
        let link = self
            .shared
            .peers
            .get(peer)
            .ok_or_else(|| MeshError::NotConnected(peer.to_string()))?;
        let conditioning = self.shared.link_to(&link.region);
        if conditioning.cut {
            return Err(MeshError::Cut(peer.to_string()));
        }
        let conn = link
            .conn
            .lock()
            .unwrap()
            .as_ref()
            .map(|(_, c)| c.clone())
            .ok_or_else(|| MeshError::NotConnected(peer.to_string()))?;
        let fut = async {
            if conditioning.delay_ms > 0 {
                sleep_until_precise(Instant::now() + Duration::from_millis(conditioning.delay_ms))
                    .await;
            }
            let rpc_err = |message: String| MeshError::Rpc {
                peer: peer.to_string(),
                message,
            };
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| rpc_err(e.to_string()))?;
            let mut frame = Vec::with_capacity(5 + request.len());
            frame.push(STREAM_RPC);
            frame.extend_from_slice(&(request.len() as u32).to_le_bytes());
            frame.extend_from_slice(request);
            send.write_all(&frame)
                .await
                .map_err(|e| rpc_err(e.to_string()))?;
            // Finish without waiting for acknowledgement (no `stopped()`).
            let _ = send.finish();
            let payload = read_frame(&mut recv, MAX_RPC_BYTES)
                .await
                .map_err(rpc_err)?
                .ok_or_else(|| rpc_err("stream closed without a response".into()))?;
            Ok(payload)
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(MeshError::Timeout(peer.to_string())),
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
                r.clock_offset_ms += (rtt.as_millis() / 2) as i64;
            }
        }
        reports
    }

    /// Per-peer traffic counters: (peer, sent msgs, received msgs, sent
    /// bytes, received bytes, realtime dropped, garbage frames).
    pub fn traffic(&self) -> Vec<(String, [u64; 6])> {
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
        let extra = Duration::from_millis(2 * self.shared.link_to(&link.region).delay_ms);
        link.conn
            .lock()
            .unwrap()
            .as_ref()
            .map(|(_, c)| c.rtt() + extra)
    }

    /// Current link conditioning.
    pub fn links(&self) -> BTreeMap<String, Link> {
        self.shared.links.read().unwrap().clone()
    }

    /// Changes link conditioning towards `region` (the caller checks it is
    /// allowed).
    pub fn set_link(&self, region: &str, link: Link) {
        let was_cut = self
            .shared
            .links
            .write()
            .unwrap()
            .insert(region.to_string(), link)
            .is_some_and(|l| l.cut);
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

fn protocol_thread(
    shared: Arc<Shared>,
    mut replicator: Replicator,
    mut inputs: mpsc::Receiver<Input>,
    runtime: tokio::runtime::Handle,
) {
    let mut stop = shared.shutdown.subscribe();
    while let Some(input) = inputs.blocking_recv() {
        if *stop.borrow_and_update() {
            break;
        }
        let tick = matches!(input, Input::Tick);
        if matches!(input, Input::Durable) {
            shared.durable_pending.store(false, Ordering::Release);
        }
        let outputs = replicator.handle(input, shared.now());
        for out in outputs {
            dispatch(&shared, out, &runtime);
        }
        if tick {
            *shared.reports.write().unwrap() = replicator.report(shared.now());
        }
    }
    tracing::debug!("replication thread stopped");
}

fn dispatch(shared: &Arc<Shared>, out: Output, runtime: &tokio::runtime::Handle) {
    match out {
        Output::Send { peer, msg, lane } => {
            let Some(link) = shared.peers.get(&peer) else {
                return;
            };
            let writer = link.writer.lock().unwrap().clone();
            if let Some(w) = writer
                && w.lane(lane).try_send(msg).is_err()
            {
                link.counters
                    .realtime_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        Output::StartFullSync { peer, groups } => {
            let Some(link) = shared.peers.get(&peer).cloned() else {
                return;
            };
            let Some(writer) = link.writer.lock().unwrap().clone().map(|w| w.bulk) else {
                return;
            };
            // One full sync per peer at a time: a pull repeated while one
            // streams (a slow link) must not start a second copy.
            if link.full_sync_running.swap(true, Ordering::AcqRel) {
                return;
            }
            let engine = shared.engine.clone();
            let sync = shared.next_sync.fetch_add(1, Ordering::Relaxed);
            std::thread::Builder::new()
                .name("meridian-full-sync".into())
                .spawn(move || {
                    let result = crate::protocol::full_sync_messages(
                        &engine,
                        &groups,
                        sync,
                        256 << 10,
                        |msg| writer.blocking_send(msg).is_ok(),
                    );
                    if let Err(e) = result {
                        tracing::error!(peer = %link.name, error = %e, "full-state sync failed");
                    }
                    link.full_sync_running.store(false, Ordering::Release);
                })
                .expect("spawning a full-sync thread");
        }
        Output::WatchDurable { lsn } => {
            let s = shared.clone();
            shared.engine.on_durable(lsn, move |r| {
                if r.is_ok() && !s.durable_pending.swap(true, Ordering::AcqRel) {
                    let _ = s.inputs.try_send(Input::Durable);
                }
            });
        }
        Output::Truncate { stable } => {
            let engine = shared.engine.clone();
            runtime.spawn_blocking(move || {
                if let Err(e) = engine.truncate(&|g| stable.get(&g).cloned().unwrap_or_default()) {
                    tracing::error!(error = %e, "log truncation failed");
                }
            });
        }
        Output::Disconnect { peer, reason } => {
            if let Some(link) = shared.peers.get(&peer)
                && let Some((_, c)) = link.conn.lock().unwrap().as_ref()
            {
                c.close(VarInt::from_u32(CLOSE_PROTOCOL), reason.as_bytes());
            }
        }
        Output::PeerReady { peer, ready } => {
            if let Some(link) = shared.peers.get(&peer) {
                link.ready.store(ready, Ordering::Release);
            }
        }
        Output::WaitProgress { token, acked, done } => {
            let mut waiters = shared.waiters.lock().unwrap();
            if let Some(w) = waiters.get_mut(&token) {
                w.acked = acked;
                if done {
                    if let Some(tx) = w.done.take() {
                        let _ = tx.send(acked);
                    }
                    waiters.remove(&token);
                }
            }
        }
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        let incoming = tokio::select! {
            i = shared.endpoint.accept() => i,
            _ = stop.changed() => return,
        };
        let Some(incoming) = incoming else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "peer handshake failed");
                    return;
                }
            };
            match tls::peer_identity(&conn) {
                Ok(name) if shared.peers.contains_key(&name) => {
                    let link = shared.peers[&name].clone();
                    run_link(shared, link, conn).await;
                }
                Ok(name) => {
                    tracing::warn!(peer = %name, "refusing a node that is not in this cluster");
                    conn.close(VarInt::from_u32(CLOSE_UNKNOWN), b"unknown node");
                }
                Err(e) => {
                    tracing::warn!(error = %e, remote = %conn.remote_address(), "refusing a peer without a node certificate");
                    conn.close(VarInt::from_u32(CLOSE_UNKNOWN), b"not a node");
                }
            }
        });
    }
}

async fn dial_loop(shared: Arc<Shared>, link: Arc<PeerLink>) {
    let mut stop = shared.shutdown.subscribe();
    let mut backoff = DIAL_BACKOFF_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        let connected = link.conn.lock().unwrap().is_some();
        if connected {
            tokio::select! {
                _ = link.lost.notified() => {}
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        if shared.link_to(&link.region).cut {
            tokio::select! {
                _ = tokio::time::sleep(DIAL_BACKOFF_MIN) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        match dial(&shared, &link).await {
            Ok(conn) => {
                backoff = DIAL_BACKOFF_MIN;
                let shared = shared.clone();
                let link2 = link.clone();
                tokio::spawn(async move { run_link(shared, link2, conn).await });
                // Give the link time to register before checking again.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                tracing::debug!(peer = %link.name, error = %e, "dial failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(DIAL_BACKOFF_MAX);
            }
        }
    }
}

async fn dial(shared: &Shared, link: &PeerLink) -> Result<Connection, String> {
    let addr = tokio::net::lookup_host(&link.address)
        .await
        .map_err(|e| format!("resolving {}: {e}", link.address))?
        .next()
        .ok_or_else(|| format!("{} resolves to nothing", link.address))?;
    let connecting = shared
        .endpoint
        .connect_with(shared.client_config.clone(), addr, &link.name)
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(Duration::from_secs(3), connecting)
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let name = tls::peer_identity(&conn).map_err(|e| e.to_string())?;
    if name != link.name {
        conn.close(VarInt::from_u32(CLOSE_UNKNOWN), b"wrong node");
        return Err(format!("{} answered as {name}", link.address));
    }
    Ok(conn)
}

/// Runs one connection until it closes.
async fn run_link(shared: Arc<Shared>, link: Arc<PeerLink>, conn: Connection) {
    let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
    let (control_tx, control_rx) = mpsc::channel(PEER_QUEUE);
    let (bulk_tx, bulk_rx) = mpsc::channel(PEER_QUEUE);
    let replaced = {
        let mut slot = link.conn.lock().unwrap();
        let old = slot.replace((generation, conn.clone()));
        *link.writer.lock().unwrap() = Some(Writers {
            control: control_tx,
            bulk: bulk_tx,
        });
        old
    };
    if let Some((_, old)) = replaced {
        old.close(
            VarInt::from_u32(CLOSE_REPLACED),
            b"replaced by a newer connection",
        );
        let _ = shared
            .inputs
            .send(Input::Disconnected {
                peer: link.name.clone(),
            })
            .await;
    }
    tracing::info!(peer = %link.name, remote = %conn.remote_address(), "peer connected");
    link.last_heard
        .store(mono_ms(shared.started), Ordering::Relaxed);
    let writers = [
        tokio::spawn(write_loop(
            shared.clone(),
            link.clone(),
            conn.clone(),
            Lane::Control,
            control_rx,
        )),
        tokio::spawn(write_loop(
            shared.clone(),
            link.clone(),
            conn.clone(),
            Lane::Bulk,
            bulk_rx,
        )),
    ];
    let _ = shared
        .inputs
        .send(Input::Connected {
            peer: link.name.clone(),
        })
        .await;
    let reason = tokio::select! {
        r = read_loop(shared.clone(), link.clone(), conn.clone()) => r,
        e = conn.closed() => e.to_string(),
    };
    for w in writers {
        w.abort();
    }
    let still_current = {
        let mut slot = link.conn.lock().unwrap();
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
            *link.writer.lock().unwrap() = None;
            true
        } else {
            false
        }
    };
    conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"link closed");
    if still_current {
        tracing::info!(peer = %link.name, %reason, "peer disconnected");
        let _ = shared
            .inputs
            .send(Input::Disconnected {
                peer: link.name.clone(),
            })
            .await;
        link.lost.notify_waiters();
    }
}

/// Accepts the peer's streams and feeds their messages to the protocol.
/// Returns why the link ended.
async fn read_loop(shared: Arc<Shared>, link: Arc<PeerLink>, conn: Connection) -> String {
    let rpc_slots = Arc::new(tokio::sync::Semaphore::new(RPC_CONCURRENCY));
    let (fail_tx, mut fail_rx) = mpsc::channel::<String>(4);
    loop {
        tokio::select! {
            uni = conn.accept_uni() => {
                let recv = match uni {
                    Ok(r) => r,
                    Err(e) => return e.to_string(),
                };
                let (shared, link, fail) = (shared.clone(), link.clone(), fail_tx.clone());
                tokio::spawn(async move {
                    if let Err(reason) = read_messages(&shared, &link, recv).await {
                        let _ = fail.send(reason).await;
                    }
                });
            }
            bi = conn.accept_bi() => {
                let (send, recv) = match bi {
                    Ok(s) => s,
                    Err(e) => return e.to_string(),
                };
                let permit = match rpc_slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return "shutting down".into(),
                };
                let (shared, link, fail) = (shared.clone(), link.clone(), fail_tx.clone());
                tokio::spawn(async move {
                    if let Err(reason) = serve_rpc(&shared, &link, send, recv).await {
                        let _ = fail.send(reason).await;
                    }
                    drop(permit);
                });
            }
            reason = fail_rx.recv() => {
                let reason = reason.unwrap_or_else(|| "reader stopped".into());
                link.counters.garbage.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %link.name, %reason, "disconnecting peer that sent garbage");
                conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"protocol violation");
                return reason;
            }
        }
    }
}

/// Reads `[len][payload]`; `Ok(None)` at a clean end of stream.
async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Option<Vec<u8>>, String> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = u32::from_le_bytes(prefix) as usize;
    if len == 0 || len > max {
        return Err(format!("frame length {len} outside 1..={max}"));
    }
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(payload))
}

async fn read_messages(
    shared: &Shared,
    link: &PeerLink,
    mut recv: RecvStream,
) -> Result<(), String> {
    let mut tag = [0u8; 1];
    recv.read_exact(&mut tag)
        .await
        .map_err(|e| format!("stream header: {e}"))?;
    if tag[0] != STREAM_CONTROL && tag[0] != STREAM_BULK {
        return Err(format!("unknown stream type {}", tag[0]));
    }
    loop {
        let mut prefix = [0u8; 4];
        match recv.read_exact(&mut prefix).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(()),
            Err(quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(_))) => {
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        }
        let len = frame_len(prefix)?;
        let mut payload = vec![0u8; len];
        recv.read_exact(&mut payload)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(tap) = &shared.tap {
            tap(&link.name, &payload);
        }
        let msg = PeerMessage::from_payload(&payload)?;
        link.counters
            .messages_received
            .fetch_add(1, Ordering::Relaxed);
        link.counters
            .bytes_received
            .fetch_add(4 + len as u64, Ordering::Relaxed);
        link.last_heard
            .store(mono_ms(shared.started), Ordering::Relaxed);
        if shared.link_to(&link.region).cut {
            continue;
        }
        if shared
            .inputs
            .send(Input::Message {
                peer: link.name.clone(),
                msg,
            })
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}

async fn serve_rpc(
    shared: &Shared,
    link: &PeerLink,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), String> {
    let mut tag = [0u8; 1];
    recv.read_exact(&mut tag)
        .await
        .map_err(|e| format!("rpc header: {e}"))?;
    if tag[0] != STREAM_RPC {
        return Err(format!("unknown stream type {}", tag[0]));
    }
    let request = read_frame(&mut recv, MAX_RPC_BYTES)
        .await?
        .ok_or("rpc stream closed without a request")?;
    if let Some(tap) = &shared.tap {
        tap(&link.name, &request);
    }
    link.last_heard
        .store(mono_ms(shared.started), Ordering::Relaxed);
    let conditioning = shared.link_to(&link.region);
    if conditioning.cut {
        let _ = send.reset(VarInt::from_u32(1));
        return Ok(());
    }
    let Some(handler) = shared.rpc.get().cloned() else {
        let _ = send.reset(VarInt::from_u32(1));
        return Ok(());
    };
    let response = handler.handle(link.name.clone(), request).await;
    if conditioning.delay_ms > 0 {
        sleep_until_precise(Instant::now() + Duration::from_millis(conditioning.delay_ms)).await;
    }
    let mut frame = Vec::with_capacity(4 + response.len());
    frame.extend_from_slice(&(response.len() as u32).to_le_bytes());
    frame.extend_from_slice(&response);
    if send.write_all(&frame).await.is_ok() {
        let _ = send.finish();
    }
    Ok(())
}

/// Sends one of this side's streams (control: high priority, realtime
/// deltas merged into single messages; bulk: catch-up and full syncs),
/// applying link conditioning.
async fn write_loop(
    shared: Arc<Shared>,
    link: Arc<PeerLink>,
    conn: Connection,
    lane: Lane,
    mut rx: mpsc::Receiver<PeerMessage>,
) {
    let (tag, priority) = match lane {
        Lane::Control => (STREAM_CONTROL, 1),
        Lane::Bulk => (STREAM_BULK, 0),
    };
    let Ok(mut stream) = conn.open_uni().await else {
        return;
    };
    let _ = stream.set_priority(priority);
    if stream.write_all(&[tag]).await.is_err() {
        return;
    }
    let mut delayed: VecDeque<(Instant, PeerMessage)> = VecDeque::new();
    // The pending wake-up for the head of the delay queue, kept across
    // loop turns so that messages arriving meanwhile don't restart it.
    let mut timer: Option<(Instant, Wakeup)> = None;
    // When delayed messages were last sent: when busy, sends are spaced at
    // least FLUSH_GAP apart (everything due by then goes together), as the
    // undelayed path batches whatever is queued.
    let mut last_flush = Instant::now();
    loop {
        // Wait for a message, or for the head of the delay queue to come due.
        let due = delayed.front().map(|(at, _)| *at);
        let wake = due.map(|at| at.max(last_flush + FLUSH_GAP));
        if timer.as_ref().map(|(at, _)| *at) != wake {
            timer = wake.map(|at| {
                // Precisely for a message on an idle link; on a busy one
                // (the gap sets the time) tokio's coarse timer, which costs
                // no thread wake-up and lets more messages gather.
                let sleep: Wakeup = if Some(at) == due {
                    Box::pin(sleep_until_precise(at))
                } else {
                    Box::pin(tokio::time::sleep_until(at.into()))
                };
                (at, sleep)
            });
        }
        let incoming = match timer.as_mut() {
            None => match rx.recv().await {
                Some(m) => Some(m),
                None => return, // the link is gone
            },
            Some((_, sleep)) => tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => Some(m),
                    None => return,
                },
                _ = sleep.as_mut() => {
                    timer = None;
                    None
                }
            },
        };
        // The conditioning in force now (it may have changed while waiting).
        let conditioning = shared.link_to(&link.region);
        let timer_fired = incoming.is_none();
        if let Some(m) = incoming {
            let due = Instant::now() + Duration::from_millis(conditioning.delay_ms);
            delayed.push_back((due, m));
            // Take whatever else is already queued (batching when busy).
            while delayed.len() < 1024 {
                match rx.try_recv() {
                    Ok(m) => delayed.push_back((due, m)),
                    Err(_) => break,
                }
            }
        }
        // Send what is due when the timer fires (it honours FLUSH_GAP), or
        // at once on an undelayed link; a delayed message is never due on
        // arrival.
        let now = Instant::now();
        let mut batch: Vec<PeerMessage> = Vec::new();
        if timer_fired || conditioning.delay_ms == 0 {
            while delayed.front().is_some_and(|(at, _)| *at <= now) {
                batch.push(delayed.pop_front().unwrap().1);
            }
        }
        if !batch.is_empty() {
            last_flush = now;
        }
        if conditioning.cut {
            continue;
        }
        let batch = if lane == Lane::Control {
            coalesce(batch)
        } else {
            batch
        };
        for msg in batch {
            let frame = msg.to_frame();
            if stream.write_all(&frame).await.is_err() {
                return;
            }
            link.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
            link.counters
                .bytes_sent
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
    }
}

/// `write_loop`'s pending wake-up: a [`sleep_until_precise`] or tokio's
/// coarse sleep.
type Wakeup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The least time between two sends of delayed (link-conditioned) messages
/// on one lane. Without it a busy link woke and wrote once per message
/// (each comes due a little after the last): thousands of timer wake-ups
/// and stream writes a second, which slowed the node's local writes by a
/// third in `meridian bench geo`. A lone message is not held back.
const FLUSH_GAP: Duration = Duration::from_micros(500);

/// Sleeps until `at`, to within a fraction of a millisecond, for link
/// conditioning. tokio's timer wheel has 1 ms ticks and rounds every
/// deadline up, so an emulated 40 ms hop took 40.5–42 ms: over a quorum
/// round trip (two hops) that was ≈ 2 ms of the ≈ 3.7 ms measured above
/// the emulated RTT (`meridian bench geo`). The last stretch is slept on a
/// blocking-pool thread instead, which the kernel's high-resolution timers
/// wake on time. Dropping the future early (a `select!` taking another
/// branch) leaves at most that short sleep running, harmlessly.
async fn sleep_until_precise(at: Instant) {
    /// More than the timer wheel's worst lateness.
    const COARSE_MARGIN: Duration = Duration::from_millis(2);
    if let Some(early) = at.checked_sub(COARSE_MARGIN) {
        tokio::time::sleep_until(early.into()).await;
    }
    let now = Instant::now();
    if at > now {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(at - now)).await;
    }
}

/// Merges consecutive realtime delta messages into one (up to
/// [`COALESCE_BYTES`] of deltas per message).
fn coalesce(batch: Vec<PeerMessage>) -> Vec<PeerMessage> {
    let mut out: Vec<PeerMessage> = Vec::with_capacity(batch.len());
    let mut bytes = 0usize;
    for msg in batch {
        let PeerMessage::Deltas {
            records,
            catch_up: false,
            ..
        } = msg
        else {
            out.push(msg);
            continue;
        };
        let size: usize = records.iter().map(|r| r.key.key().len() + 128).sum();
        if let Some(PeerMessage::Deltas {
            records: acc,
            catch_up: false,
            ..
        }) = out.last_mut()
            && bytes + size <= COALESCE_BYTES
        {
            bytes += size;
            acc.extend(records);
            continue;
        }
        bytes = size;
        out.push(PeerMessage::Deltas {
            records,
            catch_up: false,
            more: false,
        });
    }
    out
}
