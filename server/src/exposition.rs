//! The node's Prometheus endpoint (`GET /metrics`, text exposition
//! format): the request metrics ([`crate::metrics`]), the engine and every
//! peer: connection state, replication lag in deltas and milliseconds,
//! deferred deltas, clock offset, traffic.
//!
//! The endpoint is a deliberately tiny HTTP/1.1 responder (one GET route,
//! bounded request size, short timeouts, at most
//! [`MAX_METRICS_CONNECTIONS`] connections, a growing pause after failed
//! accepts) rather than a web framework: Prometheus scrapes need nothing
//! more, and it keeps the node's dependencies few. It is plain HTTP without
//! authentication: `meridian init` binds it to loopback unless every node
//! is on a loopback address, and a node whose `metrics_listen` is not a
//! loopback address says so at start (WARN).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::budget::ByteBudget;
use crate::coordinator::Coordinator;
use crate::listener::ListenerStats;

/// What the endpoint reports on.
#[derive(Clone, Debug)]
pub struct Exposed {
    pub coordinator: Arc<Coordinator>,
    /// The QUIC client door.
    pub client: Arc<ListenerStats>,
    /// The client byte budget (both doors).
    pub budget: ByteBudget,
    /// The RESP door, when served.
    pub resp: Option<Arc<crate::resp::RespServer>>,
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// The whole exposition for one node.
pub fn render(exposed: &Exposed) -> String {
    let coordinator = &exposed.coordinator;
    let mut out = String::with_capacity(8 << 10);
    let m = coordinator.engine.metrics();
    let one = |v: u64| vec![(String::new(), v as f64)];
    metric(
        &mut out,
        "meridian_deltas_originated_total",
        "counter",
        "Local writes applied on this node.",
        &one(m.writes),
    );
    metric(
        &mut out,
        "meridian_deltas_applied_total",
        "counter",
        "Deltas from peers applied on this node (not duplicates).",
        &one(m.merges),
    );
    metric(
        &mut out,
        "meridian_deltas_duplicate_total",
        "counter",
        "Deltas from peers that were already applied.",
        &one(m.duplicates),
    );
    metric(
        &mut out,
        "meridian_deltas_deferred_total",
        "counter",
        "Deltas from peers deferred because their timestamp was too far ahead.",
        &one(m.clock_refusals),
    );
    metric(
        &mut out,
        "meridian_state_merges_total",
        "counter",
        "Full-state joins (read repair, full sync) that changed an object.",
        &one(m.state_merges),
    );
    metric(
        &mut out,
        "meridian_oversized_merges_total",
        "counter",
        "Merges refused because the set or map would pass the merged-object bound (MAX_MERGED_OBJECT_BYTES) or a map its field limit (MAX_FIELDS_PER_MAP).",
        &one(m.oversized_merges),
    );
    metric(
        &mut out,
        "meridian_log_fsyncs_total",
        "counter",
        "fdatasync calls on the log.",
        &one(m.fsyncs),
    );
    metric(
        &mut out,
        "meridian_log_written_bytes_total",
        "counter",
        "Bytes appended to the log.",
        &one(m.log_bytes_written),
    );
    metric(
        &mut out,
        "meridian_log_bytes",
        "gauge",
        "Bytes of log retained.",
        &one(m.log_retained_bytes),
    );
    metric(
        &mut out,
        "meridian_log_deltas",
        "gauge",
        "Deltas retained in the log.",
        &one(m.log_retained_deltas),
    );
    metric(
        &mut out,
        "meridian_checkpoints_total",
        "counter",
        "Checkpoints taken.",
        &one(m.checkpoints),
    );
    metric(
        &mut out,
        "meridian_expiry_fired_total",
        "counter",
        "Expiries this node fired (made final, removing the object's content).",
        &one(m.expiry_fired),
    );
    metric(
        &mut out,
        "meridian_expiry_backlog",
        "gauge",
        "Deadlines passed and not yet visited by the reclamation worker (counted up to a bound).",
        &one(m.expiry_backlog),
    );
    let x = &coordinator.expiry_metrics;
    metric(
        &mut out,
        "meridian_expiry_passes_total",
        "counter",
        "Reclamation worker passes run.",
        &one(x.passes.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "meridian_expiry_full_passes_total",
        "counter",
        "Reclamation passes that reached their key limit (another followed at once).",
        &one(x.full_passes.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "meridian_expiry_failed_passes_total",
        "counter",
        "Reclamation passes that failed (retried).",
        &one(x.failed_passes.load(Ordering::Relaxed)),
    );
    render_client_door(&mut out, &exposed.client, &exposed.budget);
    if let Some(resp) = &exposed.resp {
        metric(
            &mut out,
            "meridian_resp_over_budget_total",
            "counter",
            "RESP connections closed because the client memory budget had no room for their buffers.",
            &one(resp.over_budget.load(Ordering::Relaxed)),
        );
    }
    metric(
        &mut out,
        "meridian_peer_requests_refused_total",
        "counter",
        "Peer state reads and repairs refused because the asking peer does not replicate the key.",
        &one(coordinator.peer_refusals.load(Ordering::Relaxed)),
    );
    metric(
        &mut out,
        "meridian_engine_pool_busy",
        "gauge",
        "Engine calls running on the engine pool right now.",
        &one(coordinator.pool.busy() as u64),
    );
    metric(
        &mut out,
        "meridian_debug_clock_offset_ms",
        "gauge",
        "Debug clock offset applied to this node (0 in production).",
        &[(String::new(), coordinator.clock.offset_ms() as f64)],
    );
    metric(
        &mut out,
        "meridian_uptime_seconds",
        "gauge",
        "Seconds since the node started.",
        &[(String::new(), coordinator.started.elapsed().as_secs_f64())],
    );

    let reports = coordinator.mesh.reports();
    let per_peer = |f: &dyn Fn(&meridian_replication::PeerReport) -> f64| -> Vec<(String, f64)> {
        reports
            .iter()
            .map(|r| (format!("peer=\"{}\",region=\"{}\"", r.name, r.region), f(r)))
            .collect()
    };
    metric(
        &mut out,
        "meridian_peer_connected",
        "gauge",
        "1 if the peer link is up.",
        &per_peer(&|r| f64::from(u8::from(r.connected))),
    );
    metric(
        &mut out,
        "meridian_peer_lag_deltas",
        "gauge",
        "Deltas this node has that the peer has not acknowledged.",
        &per_peer(&|r| r.lag_deltas as f64),
    );
    metric(
        &mut out,
        "meridian_peer_lag_ms",
        "gauge",
        "How long the peer has been behind this node, in ms.",
        &per_peer(&|r| r.lag_ms as f64),
    );
    metric(
        &mut out,
        "meridian_peer_deferred_deltas_total",
        "counter",
        "Deltas from the peer deferred because their timestamp was too far ahead.",
        &per_peer(&|r| r.deferred_deltas as f64),
    );
    metric(
        &mut out,
        "meridian_peer_clock_offset_ms",
        "gauge",
        "The peer's clock minus ours, from its last message, in ms.",
        &per_peer(&|r| r.clock_offset_ms as f64),
    );
    metric(
        &mut out,
        "meridian_peer_deltas_applied_total",
        "counter",
        "Deltas received from the peer and applied.",
        &per_peer(&|r| r.deltas_applied as f64),
    );
    metric(
        &mut out,
        "meridian_peer_full_syncs_sent_total",
        "counter",
        "Full-state syncs sent to the peer.",
        &per_peer(&|r| r.full_syncs_sent as f64),
    );
    metric(
        &mut out,
        "meridian_peer_full_syncs_received_total",
        "counter",
        "Full-state syncs received from the peer.",
        &per_peer(&|r| r.full_syncs_received as f64),
    );
    let traffic = coordinator.mesh.traffic();
    let names = [
        (
            "meridian_peer_messages_sent_total",
            "Messages sent to the peer.",
        ),
        (
            "meridian_peer_messages_received_total",
            "Messages received from the peer.",
        ),
        ("meridian_peer_bytes_sent_total", "Bytes sent to the peer."),
        (
            "meridian_peer_bytes_received_total",
            "Bytes received from the peer.",
        ),
        (
            "meridian_peer_realtime_dropped_total",
            "Realtime messages dropped because the peer's queue was full (it pulls them later).",
        ),
        (
            "meridian_peer_garbage_total",
            "Malformed frames received from the peer (each closes the link).",
        ),
    ];
    for (i, (name, help)) in names.iter().enumerate() {
        let samples: Vec<(String, f64)> = traffic
            .iter()
            .map(|(peer, c)| (format!("peer=\"{peer}\""), c[i] as f64))
            .collect();
        metric(&mut out, name, "counter", help, &samples);
    }
    coordinator.metrics.render(&mut out);
    out
}

/// The QUIC client door's admission and budget metrics.
fn render_client_door(out: &mut String, stats: &ListenerStats, budget: &ByteBudget) {
    let one = |v: &AtomicU64| vec![(String::new(), v.load(Ordering::Relaxed) as f64)];
    let families: [(&str, &str, &str, &AtomicU64); 13] = [
        (
            "meridian_client_connections",
            "gauge",
            "Authenticated client connections.",
            &stats.connections,
        ),
        (
            "meridian_client_handshakes",
            "gauge",
            "Client QUIC handshakes in progress.",
            &stats.handshakes,
        ),
        (
            "meridian_client_pending_connections",
            "gauge",
            "Client connections handshaken but not yet authenticated.",
            &stats.pending,
        ),
        (
            "meridian_client_requests_in_flight",
            "gauge",
            "Client requests being served (QUIC).",
            &stats.in_flight,
        ),
        (
            "meridian_client_handshakes_refused_total",
            "counter",
            "Client connection attempts refused: too many handshakes in progress.",
            &stats.handshakes_refused,
        ),
        (
            "meridian_client_handshakes_retried_total",
            "counter",
            "Client connection attempts answered with a QUIC Retry (address validation under load).",
            &stats.handshakes_retried,
        ),
        (
            "meridian_client_handshake_failures_total",
            "counter",
            "Client handshakes that failed or timed out.",
            &stats.handshake_failures,
        ),
        (
            "meridian_client_pending_refused_total",
            "counter",
            "Client connections closed: too many waiting to authenticate.",
            &stats.pending_refused,
        ),
        (
            "meridian_client_refused_total",
            "counter",
            "Client connections refused after the handshake (bad hello, wrong token, version, too many connections).",
            &stats.refused,
        ),
        (
            "meridian_client_request_timeouts_total",
            "counter",
            "Client requests whose frame did not arrive in time.",
            &stats.request_timeouts,
        ),
        (
            "meridian_client_response_timeouts_total",
            "counter",
            "Client answers not written in time (the client did not read them).",
            &stats.response_timeouts,
        ),
        (
            "meridian_client_over_budget_total",
            "counter",
            "Client requests or answers refused for want of memory budget.",
            &stats.over_budget,
        ),
        (
            "meridian_client_warnings_suppressed_total",
            "counter",
            "Client door warnings counted but not logged (rate limit).",
            &stats.warnings_suppressed,
        ),
    ];
    for (name, kind, help, v) in families {
        metric(out, name, kind, help, &one(v));
    }
    metric(
        out,
        "meridian_client_buffer_bytes",
        "gauge",
        "Client request and response bytes reserved from the node's budget (QUIC and RESP).",
        &[(String::new(), budget.in_use() as f64)],
    );
    metric(
        out,
        "meridian_client_buffer_limit_bytes",
        "gauge",
        "The node's client byte budget (limits.client_memory_bytes less QUIC windows).",
        &[(String::new(), budget.total() as f64)],
    );
}

/// Largest HTTP request head accepted, in bytes.
const MAX_HTTP_REQUEST_BYTES: usize = 8 << 10;

/// Most connections the endpoint serves at once. A scrape is one short
/// connection; a few Prometheus servers and an operator's curl need far
/// fewer. One more is closed at once, so idle or slow connections cannot
/// pile up (each holds a descriptor and a buffer for up to
/// [`HTTP_TIMEOUT`]).
pub const MAX_METRICS_CONNECTIONS: u64 = 16;

/// How long reading a request, and writing its answer, may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// First pause after a failed accept (out of descriptors, say): retrying at
/// once would spin a core, as in tokio-rs/tokio#3529.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Longest pause between failed accepts: the pause doubles from
/// [`ACCEPT_BACKOFF_MIN`] up to this while accepts keep failing.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The endpoint's own counters.
#[derive(Debug, Default)]
struct EndpointStats {
    connections: AtomicU64,
    refused: AtomicU64,
    accept_errors: AtomicU64,
}

/// Serves `GET /metrics` until `stop` fires, at most
/// [`MAX_METRICS_CONNECTIONS`] connections at once, backing off after
/// failed accepts.
pub async fn serve(
    listener: TcpListener,
    exposed: Exposed,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr()
        && !addr.ip().is_loopback()
    {
        tracing::warn!(
            %addr,
            "the metrics endpoint (plain HTTP, no authentication) is reachable beyond this host; \
             bind metrics_listen to 127.0.0.1 unless a scraper elsewhere needs it, and firewall it"
        );
    }
    let stats = Arc::new(EndpointStats::default());
    let warnings = crate::listener::WarnLimiter::new(
        crate::listener::WARNINGS_PER_INTERVAL,
        crate::listener::WARNING_INTERVAL,
    );
    let suppressed = AtomicU64::new(0);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let mut stream = match accepted {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                stream
            }
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if warnings.allow(&suppressed) {
                    tracing::warn!(error = %e, pause_ms = backoff.as_millis() as u64, "metrics endpoint: accept failed; pausing");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let admitted = stats
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_METRICS_CONNECTIONS).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let exposed = exposed.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            answer(&mut stream, &exposed, &stats).await;
            stats.connections.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Reads one request (bounded in size and time) and answers it.
async fn answer(stream: &mut tokio::net::TcpStream, exposed: &Exposed, stats: &EndpointStats) {
    let mut buf = vec![0u8; MAX_HTTP_REQUEST_BYTES];
    let mut len = 0;
    let read = tokio::time::timeout(HTTP_TIMEOUT, async {
        while len < buf.len() {
            let n = stream.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                return None;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(());
            }
        }
        None
    })
    .await;
    if !matches!(read, Ok(Some(()))) {
        return;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let (status, body) = if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?") {
        let mut body = render(exposed);
        let one = |v: &AtomicU64| vec![(String::new(), v.load(Ordering::Relaxed) as f64)];
        metric(
            &mut body,
            "meridian_metrics_connections_refused_total",
            "counter",
            "Metrics endpoint connections closed at once: too many open.",
            &one(&stats.refused),
        );
        metric(
            &mut body,
            "meridian_metrics_accept_errors_total",
            "counter",
            "Failed accepts on the metrics endpoint (each followed by a pause).",
            &one(&stats.accept_errors),
        );
        ("200 OK", body)
    } else if head.starts_with("GET / ") {
        ("200 OK", "meridian node: see /metrics\n".to_string())
    } else {
        ("404 Not Found", "not found\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(HTTP_TIMEOUT, stream.write_all(response.as_bytes())).await;
}

/// Parses a value out of an exposition (tests, `meridian status`).
pub fn sample(exposition: &str, name_and_labels: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(name_and_labels)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
