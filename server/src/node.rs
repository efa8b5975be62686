//! A running node: the engine, the peer mesh, the coordinator, the client
//! listener, the RESP listener (when `resp_listen` is set) and the metrics
//! endpoint, started in that order and stopped in the reverse one.
//!
//! Shutdown (SIGINT/SIGTERM in `meridian serve`, or [`Node::shutdown`]),
//! in a fixed order, each step awaited rather than polled:
//! 1. stop accepting: listeners stop taking connections and requests;
//! 2. drain: wait (bounded by [`DRAIN_TIMEOUT`]) for every tracked task —
//!    connections and the requests in flight, which still answer;
//! 3. close the client endpoint and wait for it to go idle (bounded);
//! 4. close the QUIC mesh (its links, writers and protocol thread);
//! 5. close the engine: final checkpoint and fsync (the next start keeps
//!    the incarnation).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use meridian_engine::Engine;
use meridian_replication::mesh::{Link, Mesh, MeshError, RpcHandler};
use meridian_replication::{NodeName, ProtocolConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::budget::ByteBudget;
use crate::clock::NodeClock;
use crate::config::{self, NodeConfig};
use crate::coordinator::Coordinator;
use crate::engine_pool::EnginePool;
use crate::exposition::Exposed;
use crate::listener::{
    ClientListener, DRAIN_TIMEOUT, ListenerStats, WARNING_INTERVAL, WARNINGS_PER_INTERVAL,
    WarnLimiter,
};
use crate::metrics::RequestMetrics;
use crate::resp::RespServer;
use crate::tasks::Tasks;

/// Why a node did not start or did not stop cleanly. One line each, naming
/// what failed (the cause follows in the error's source chain).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory could not be opened (locked, corrupt, unusable).
    #[error("opening the data directory {}", .dir.display())]
    Engine {
        dir: PathBuf,
        #[source]
        source: meridian_engine::Error,
    },
    /// The peer mesh did not start (its port is taken, bad TLS material).
    #[error("starting the peer mesh")]
    Mesh(#[source] MeshError),
    /// The client listener's TLS configuration was refused.
    #[error("client TLS")]
    ClientTls(#[source] meridian_replication::tls::TlsError),
    /// The RESP port's TLS configuration (`[resp] tls = true`) was refused.
    #[error("RESP TLS")]
    RespTls(#[source] meridian_replication::tls::TlsError),
    /// A listener could not bind its address.
    #[error("cannot listen for {what} on {addr}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The final checkpoint (engine close) failed: the next start replays
    /// the log instead.
    #[error("final checkpoint")]
    Close(#[source] meridian_engine::Error),
    /// A blocking engine task panicked or was cancelled.
    #[error("engine task: {0}")]
    Join(String),
}

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
    pub name: NodeName,
    pub region: String,
    pub addresses: NodeAddresses,
    pub data_dir: PathBuf,
    engine: Engine,
    mesh: Mesh,
    coordinator: Arc<Coordinator>,
    listener: Arc<ClientListener>,
    resp: Option<Arc<RespServer>>,
    stop: watch::Sender<bool>,
    /// Connections and requests of every listener (what shutdown drains).
    tasks: Tasks,
    /// The accept loops and the metrics endpoint.
    services: Vec<tokio::task::JoinHandle<()>>,
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
        peer: NodeName,
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

impl Node {
    /// Opens the engine and starts every service, in this order: engine,
    /// peer mesh, coordinator, client listener, RESP listener, metrics.
    /// Fails with one clear error if a port is taken or the data directory
    /// is unusable; whatever had started is stopped again.
    pub async fn start(config: NodeConfig, options: ServeOptions) -> Result<Node, NodeError> {
        match raise_descriptor_limit() {
            Ok(limit) => tracing::debug!(limit, "open descriptor limit"),
            Err(e) => tracing::warn!(error = %e, "could not raise the open descriptor limit"),
        }
        let placement = Arc::new(config.cluster_placement());
        let clock = NodeClock::default();

        let engine = {
            let engine_config = config.engine_config(&placement);
            let now = clock.now();
            tokio::task::spawn_blocking(move || Engine::open(engine_config, now))
                .await
                .map_err(|e| NodeError::Join(e.to_string()))?
                .map_err(|source| NodeError::Engine {
                    dir: config.data_dir.clone(),
                    source,
                })?
        };
        tracing::info!(
            node = %config.node,
            incarnation = %engine.incarnation(),
            data_dir = %config.data_dir.display(),
            "engine open"
        );

        let clock_fn = {
            let clock = clock.clone();
            Arc::new(move || clock.now())
        };
        let mesh_config = config.mesh_config(
            placement.clone(),
            options.protocol.clone(),
            clock_fn,
            options.tap.clone(),
        );
        let mesh = match Mesh::start(mesh_config, engine.clone()).await {
            Ok(m) => m,
            Err(e) => {
                let _ = engine.close();
                return Err(NodeError::Mesh(e));
            }
        };
        let peer_addr = match mesh.local_addr() {
            Ok(a) => a,
            Err(source) => {
                let e = NodeError::Listen {
                    what: "peers",
                    addr: config.peer_listen,
                    source,
                };
                return Err(stop_early(e, &mesh, &engine).await);
            }
        };

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
            pool: EnginePool::default(),
            peer_refusals: AtomicU64::new(0),
            expiry_metrics: crate::expiry::ExpiryMetrics::default(),
        });
        mesh.set_rpc_handler(Arc::new(Rpc(Arc::downgrade(&coordinator))));

        let resp_tls = match config.resp.tls {
            false => None,
            true => match crate::tls::resp_tls_config(&config.tls.cert_pem, &config.tls.key_pem) {
                Ok(tls) => Some(tls),
                Err(e) => return Err(stop_early(NodeError::RespTls(e), &mesh, &engine).await),
            },
        };
        let bound = match bind_listeners(&config).await {
            Ok(b) => b,
            Err(e) => return Err(stop_early(e, &mesh, &engine).await),
        };
        let addresses = NodeAddresses {
            peer: peer_addr,
            client: bound.client_addr,
            metrics: bound.metrics_addr,
            resp: bound.resp_addr,
        };

        let (stop, stop_rx) = watch::channel(false);
        let tasks = Tasks::new();
        // One byte budget for both client doors (`[limits]
        // client_memory_bytes`, less what QUIC buffers by itself).
        let budget = ByteBudget::new(
            usize::try_from(config.limits.client_buffer_bytes()).unwrap_or(usize::MAX),
        );
        let token_config = config.clone();
        let listener = Arc::new(ClientListener {
            endpoint: bound.endpoint,
            coordinator: coordinator.clone(),
            token_check: Arc::new(move |t: &[u8]| token_config.token_matches(t)),
            max_connections: config.limits.max_client_connections as u64,
            max_in_flight: config.limits.max_in_flight_per_connection as usize,
            stats: Arc::new(ListenerStats::default()),
            budget: budget.clone(),
            warnings: WarnLimiter::new(WARNINGS_PER_INTERVAL, WARNING_INTERVAL),
        });
        let mut services = vec![tokio::spawn(
            listener.clone().run(stop_rx.clone(), tasks.tracker()),
        )];
        let mut resp = None;
        if let (Some(l), Some(addr)) = (bound.resp, bound.resp_addr) {
            let resp_config = config.clone();
            let server = Arc::new(RespServer::new(
                coordinator.clone(),
                Arc::new(move |t: &[u8]| resp_config.token_matches(t)),
                config.resp.default_consistency,
                u64::from(config.resp.max_connections),
                addr,
                resp_tls.clone(),
                budget.clone(),
            ));
            services.push(tokio::spawn(server.clone().run(
                l,
                stop_rx.clone(),
                tasks.tracker(),
            )));
            resp = Some(server);
        }
        // Expired-key reclamation: stops with the listeners, before the
        // mesh and the engine close.
        services.push(tokio::spawn(
            crate::expiry::ExpiryWorker::new(coordinator.clone()).run(stop_rx.clone()),
        ));
        services.push(tokio::spawn(crate::exposition::serve(
            bound.metrics,
            Exposed {
                coordinator: coordinator.clone(),
                client: listener.stats.clone(),
                budget: budget.clone(),
                resp: resp.clone(),
            },
            stop_rx,
        )));
        tracing::info!(
            node = %config.node,
            region = %config.region,
            peer = %addresses.peer,
            client = %addresses.client,
            metrics = %addresses.metrics,
            resp = ?addresses.resp,
            "node serving"
        );
        Ok(Node {
            name: config.node.clone(),
            region: config.region.clone(),
            addresses,
            data_dir: config.data_dir.clone(),
            engine,
            mesh,
            coordinator,
            listener,
            resp,
            stop,
            tasks,
            services,
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

    /// What the metrics endpoint would serve right now.
    pub fn exposition(&self) -> String {
        crate::exposition::render(&Exposed {
            coordinator: self.coordinator.clone(),
            client: self.listener.stats.clone(),
            budget: self.listener.budget.clone(),
            resp: self.resp.clone(),
        })
    }

    /// The RESP listener, when `resp_listen` is set.
    pub fn resp(&self) -> Option<&Arc<RespServer>> {
        self.resp.as_ref()
    }

    /// Changes demo link conditioning towards `region`.
    pub fn set_link(&self, region: &str, link: Link) {
        self.mesh.set_link(region, link);
    }

    /// Stops in the order the module docs give: stop accepting, drain the
    /// requests in flight, close the client endpoint, the mesh, the engine.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        tracing::info!(node = %self.name, "shutting down");
        // 1. Stop accepting: the accept loops return; connections take no
        //    new requests. New QUIC connections are refused from here on.
        let _ = self.stop.send(true);
        self.listener.endpoint.set_server_config(None);
        for service in self.services {
            let _ = service.await;
        }
        // 2. Drain: every connection and request task ends on its own.
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                node = %self.name,
                timeout_ms = DRAIN_TIMEOUT.as_millis() as u64,
                "requests still in flight at the drain timeout; closing anyway"
            );
        }
        // 3. Close client connections and let the close reach the clients.
        self.listener
            .endpoint
            .close(0u32.into(), b"node shutting down");
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.listener.endpoint.wait_idle()).await;
        // 4. The mesh, 5. the engine.
        self.mesh.shutdown().await;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.close())
            .await
            .map_err(|e| NodeError::Join(e.to_string()))?
            .map_err(NodeError::Close)?;
        tracing::info!(node = %self.name, "stopped cleanly");
        Ok(())
    }
}

/// Raises this process's open-descriptor limit (`RLIMIT_NOFILE`) from its
/// soft value to its hard one, and returns the new soft limit. Every client
/// connection, peer link, log segment and sled file is a descriptor; the
/// usual soft default (1024) is below what `max_client_connections` and
/// `resp.max_connections` admit, and running out does not only refuse
/// connections: it breaks log rolls and checkpoints. The hard limit is the
/// administrator's choice; the soft one is only a default. Idempotent.
pub fn raise_descriptor_limit() -> Result<u64, std::io::Error> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    Ok(soft)
}

/// The client-facing sockets, bound before anything is served.
struct Bound {
    endpoint: quinn::Endpoint,
    client_addr: SocketAddr,
    metrics: TcpListener,
    metrics_addr: SocketAddr,
    resp: Option<TcpListener>,
    resp_addr: Option<SocketAddr>,
}

/// Binds the client endpoint, the metrics endpoint and the RESP listener.
async fn bind_listeners(config: &NodeConfig) -> Result<Bound, NodeError> {
    let listen = |what: &'static str, addr: SocketAddr| {
        move |source: std::io::Error| NodeError::Listen { what, addr, source }
    };
    let server_config = crate::tls::client_listener_config(
        &config.tls.ca_pem,
        &config.tls.cert_pem,
        &config.tls.key_pem,
        &config.limits,
    )
    .map_err(NodeError::ClientTls)?;
    let endpoint = quinn::Endpoint::server(server_config, config.client_listen)
        .map_err(listen("clients", config.client_listen))?;
    let close = |endpoint: &quinn::Endpoint| endpoint.close(0u32.into(), b"");
    let client_addr = endpoint
        .local_addr()
        .map_err(listen("clients", config.client_listen))?;
    let metrics = match TcpListener::bind(config.metrics_listen).await {
        Ok(l) => l,
        Err(e) => {
            close(&endpoint);
            return Err(listen("metrics", config.metrics_listen)(e));
        }
    };
    let metrics_addr = metrics
        .local_addr()
        .map_err(listen("metrics", config.metrics_listen))?;
    let (resp, resp_addr) = match config.resp_listen {
        None => (None, None),
        Some(addr) => {
            let bound = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    close(&endpoint);
                    return Err(listen("RESP clients", addr)(e));
                }
            };
            let local = bound.local_addr().map_err(listen("RESP clients", addr))?;
            (Some(bound), Some(local))
        }
    };
    Ok(Bound {
        endpoint,
        client_addr,
        metrics,
        metrics_addr,
        resp,
        resp_addr,
    })
}

/// Stops what a failed start had started (the mesh, the engine) and
/// returns the start's error.
async fn stop_early(error: NodeError, mesh: &Mesh, engine: &Engine) -> NodeError {
    mesh.shutdown().await;
    let _ = engine.close();
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The descriptor limit is raised to the hard limit at start (S5).
    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // Lower the soft limit first (to the usual default), so that the
        // raise has something to do whatever this machine's settings.
        let lowered = hard.min(1024);
        setrlimit(Resource::RLIMIT_NOFILE, lowered, hard).unwrap();
        assert_eq!(raise_descriptor_limit().unwrap(), hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
