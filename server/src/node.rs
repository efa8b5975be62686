//! A running node: the engine, the peer mesh, the coordinator, the client
//! listener, the RESP listener (when `resp_listen` is set) and the metrics
//! endpoint, started in that order and stopped in the reverse one.
//!
//! Shutdown (SIGINT/SIGTERM in `meridian serve`, or [`Node::shutdown`]):
//! stop accepting clients, drain in-flight requests (bounded), close the
//! QUIC mesh and wait for it to go idle (bounded), then close the engine
//! (final checkpoint and fsync; the next start keeps the incarnation).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use meridian_engine::{Durability, Engine, EngineConfig};
use meridian_replication::mesh::{Link, Mesh, MeshConfig, PeerAddress, RpcHandler};
use meridian_replication::{NodeInfo, Placement, ProtocolConfig, Rule};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{self, NodeConfig};
use crate::coordinator::{Coordinator, NodeClock};
use crate::listener::{ClientListener, DRAIN_TIMEOUT};
use crate::metrics::RequestMetrics;
use crate::resp::RespServer;

/// Options `meridian serve` adds to the config file.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Accept a debug clock offset (`--allow-debug-clock`).
    pub allow_debug_clock: bool,
    /// Protocol timers; `None` for the defaults.
    pub protocol: Option<ProtocolConfig>,
    /// Test hook: every frame payload received from peers.
    pub tap: Option<meridian_replication::mesh::FrameTap>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("allow_debug_clock", &self.allow_debug_clock)
            .field("protocol", &self.protocol)
            .field("tap", &self.tap.is_some())
            .finish()
    }
}

/// Addresses a started node actually bound (ports may have been 0).
#[derive(Clone, Debug)]
pub struct NodeAddresses {
    pub peer: SocketAddr,
    pub client: SocketAddr,
    pub metrics: SocketAddr,
    /// The RESP (Redis protocol) listener, when `resp_listen` is set.
    pub resp: Option<SocketAddr>,
}

/// A running node.
pub struct Node {
    pub name: String,
    pub region: String,
    pub addresses: NodeAddresses,
    pub data_dir: PathBuf,
    engine: Engine,
    mesh: Mesh,
    coordinator: Arc<Coordinator>,
    listener: Arc<ClientListener>,
    resp: Option<Arc<RespServer>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

/// Weak: the mesh holds its RPC handler and the coordinator holds the
/// mesh; a strong reference would keep both (and the engine, with its data
/// directory lock) alive after shutdown.
struct Rpc(std::sync::Weak<Coordinator>);

impl RpcHandler for Rpc {
    fn handle(
        &self,
        peer: String,
        request: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send>> {
        let c = self.0.upgrade();
        Box::pin(async move {
            match c {
                Some(c) => c.serve_peer(peer, request).await,
                None => crate::rpc::PeerResponse::Failed("node shutting down".into()).encode(),
            }
        })
    }
}

/// The cluster's placement, as every node must see it.
pub fn placement_of(config: &NodeConfig) -> Placement {
    let nodes = config
        .all_nodes()
        .into_iter()
        .map(|n| NodeInfo {
            name: n.name,
            region: n.region,
        })
        .collect();
    let rules = config
        .placement
        .iter()
        .map(|r| Rule {
            prefix: r.prefix.as_bytes().to_vec(),
            regions: r.regions.clone(),
            home: r.home.clone(),
        })
        .collect();
    Placement::new(nodes, rules)
}

impl Node {
    /// Opens the engine and starts every service. Fails with one clear
    /// error if a port is taken or the data directory is unusable.
    pub async fn start(config: NodeConfig, options: ServeOptions) -> Result<Node> {
        let placement = Arc::new(placement_of(&config));
        let clock = NodeClock::default();
        let mut engine_config = EngineConfig::new(&config.data_dir);
        engine_config.durability = match config.durability() {
            config::Durability::Sync => Durability::Sync,
            config::Durability::Periodic { interval_ms } => {
                Durability::Periodic(Duration::from_millis(interval_ms))
            }
        };
        engine_config.max_clock_offset = Duration::from_millis(config.storage.max_clock_offset_ms);
        engine_config.segment_bytes = config.storage.log_segment_bytes;
        engine_config.group_of = placement.group_fn();
        let engine = {
            let engine_config = engine_config.clone();
            let now = clock.now();
            tokio::task::spawn_blocking(move || Engine::open(engine_config, now))
                .await
                .context("opening the engine")?
                .with_context(|| {
                    format!("opening the data directory {}", config.data_dir.display())
                })?
        };
        tracing::info!(
            node = %config.node,
            incarnation = %engine.node_id(),
            data_dir = %config.data_dir.display(),
            "engine open"
        );

        let links: BTreeMap<String, Link> = if config.debug.allow_link_conditioning {
            config
                .debug
                .link
                .iter()
                .map(|l| {
                    (
                        l.region.clone(),
                        Link {
                            delay_ms: l.delay_ms,
                            cut: l.cut,
                        },
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        let clock_fn = {
            let clock = clock.clone();
            Arc::new(move || clock.now())
        };
        let mesh_config = MeshConfig {
            node: config.node.clone(),
            region: config.region.clone(),
            listen: config.peer_listen,
            peers: config
                .peers
                .iter()
                .map(|p| PeerAddress {
                    name: p.name.clone(),
                    region: p.region.clone(),
                    address: p.address.to_string(),
                })
                .collect(),
            ca_pem: config.tls.ca_pem.clone(),
            cert_pem: config.tls.cert_pem.clone(),
            key_pem: config.tls.key_pem.clone(),
            protocol: options
                .protocol
                .clone()
                .unwrap_or_else(|| ProtocolConfig::new(config.node.clone())),
            placement: placement.clone(),
            links,
            clock: clock_fn,
            tap: options.tap.clone(),
        };
        let mesh = match Mesh::start(mesh_config, engine.clone()).await {
            Ok(m) => m,
            Err(e) => {
                let _ = engine.close();
                return Err(e).context("starting the peer mesh");
            }
        };
        let peer_addr = mesh.local_addr().context("peer listener address")?;

        let coordinator = Arc::new(Coordinator {
            node: config.node.clone(),
            region: config.region.clone(),
            engine: engine.clone(),
            mesh: mesh.clone(),
            placement,
            clock,
            allow_debug_clock: config.debug.clock_offset_allowed(options.allow_debug_clock),
            default_timeout: Duration::from_millis(config.limits.request_timeout_ms),
            max_timeout: Duration::from_millis(config::MAX_REQUEST_TIMEOUT_MS),
            metrics: Arc::new(RequestMetrics::default()),
            started: Instant::now(),
        });
        mesh.set_rpc_handler(Arc::new(Rpc(Arc::downgrade(&coordinator))));

        let fail = |e: anyhow::Error, mesh: Mesh, engine: Engine| async move {
            mesh.shutdown().await;
            let _ = engine.close();
            Err(e)
        };
        let server_config = match crate::tls::client_listener_config(
            &config.tls.ca_pem,
            &config.tls.cert_pem,
            &config.tls.key_pem,
            &config.limits,
        ) {
            Ok(c) => c,
            Err(e) => return fail(anyhow::anyhow!(e).context("client TLS"), mesh, engine).await,
        };
        let endpoint = match quinn::Endpoint::server(server_config, config.client_listen) {
            Ok(e) => e,
            Err(e) => {
                let e = anyhow::anyhow!(e).context(format!(
                    "cannot listen for clients on {}",
                    config.client_listen
                ));
                return fail(e, mesh, engine).await;
            }
        };
        let client_addr = endpoint.local_addr()?;
        let metrics_listener = match TcpListener::bind(config.metrics_listen).await {
            Ok(l) => l,
            Err(e) => {
                endpoint.close(0u32.into(), b"");
                let e = anyhow::anyhow!(e).context(format!(
                    "cannot listen for metrics on {}",
                    config.metrics_listen
                ));
                return fail(e, mesh, engine).await;
            }
        };
        let metrics_addr = metrics_listener.local_addr()?;
        let resp_listener = match config.resp_listen {
            None => None,
            Some(addr) => match TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    endpoint.close(0u32.into(), b"");
                    let e = anyhow::anyhow!(e)
                        .context(format!("cannot listen for RESP clients on {addr}"));
                    return fail(e, mesh, engine).await;
                }
            },
        };

        let token_config = config.clone();
        let connections = Arc::new(AtomicU64::new(0));
        let listener = Arc::new(ClientListener {
            endpoint,
            coordinator: coordinator.clone(),
            token_check: Arc::new(move |t: &[u8]| token_config.token_matches(t)),
            max_connections: config.limits.max_client_connections as u64,
            max_in_flight: config.limits.max_in_flight_per_connection as usize,
            connections: connections.clone(),
            in_flight: Arc::new(AtomicU64::new(0)),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(listener.clone().run(stop_rx.clone()))];
        let mut resp = None;
        let mut resp_addr = None;
        if let Some(l) = resp_listener {
            let addr = l.local_addr()?;
            let resp_config = config.clone();
            let server = Arc::new(RespServer::new(
                coordinator.clone(),
                Arc::new(move |t: &[u8]| resp_config.token_matches(t)),
                config.resp.default_consistency,
                u64::from(config.resp.max_connections),
                addr,
            ));
            tasks.push(tokio::spawn(server.clone().run(l, stop_rx.clone())));
            resp = Some(server);
            resp_addr = Some(addr);
        }
        tasks.extend([tokio::spawn(crate::metrics::serve(
            metrics_listener,
            coordinator.clone(),
            connections,
            stop_rx.clone(),
        ))]);
        tracing::info!(
            node = %config.node,
            region = %config.region,
            peer = %peer_addr,
            client = %client_addr,
            metrics = %metrics_addr,
            resp = ?resp_addr,
            "node serving"
        );
        Ok(Node {
            name: config.node.clone(),
            region: config.region.clone(),
            addresses: NodeAddresses {
                peer: peer_addr,
                client: client_addr,
                metrics: metrics_addr,
                resp: resp_addr,
            },
            data_dir: config.data_dir.clone(),
            engine,
            mesh,
            coordinator,
            listener,
            resp,
            stop,
            tasks,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// Changes demo link conditioning towards `region`.
    pub fn set_link(&self, region: &str, link: Link) {
        self.mesh.set_link(region, link);
    }

    /// Stops in order: clients, in-flight requests, the mesh, the engine.
    pub async fn shutdown(self) -> Result<()> {
        tracing::info!(node = %self.name, "shutting down");
        let _ = self.stop.send(true);
        self.listener
            .endpoint
            .close(0u32.into(), b"node shutting down");
        let drain_until = Instant::now() + DRAIN_TIMEOUT;
        let resp_in_flight = || self.resp.as_ref().map_or(0, |r| r.in_flight());
        while (self.listener.in_flight.load(Ordering::Acquire) > 0 || resp_in_flight() > 0)
            && Instant::now() < drain_until
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for t in self.tasks {
            t.abort();
        }
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.listener.endpoint.wait_idle()).await;
        self.mesh.shutdown().await;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.close())
            .await
            .context("closing the engine")?
            .context("final checkpoint")?;
        tracing::info!(node = %self.name, "stopped cleanly");
        Ok(())
    }
}
