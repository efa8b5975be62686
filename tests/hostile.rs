//! A hostile client against one in-process node (issue 13, "What it must
//! show"; review S1, S4): frames withheld mid-body on 256 streams, answers
//! never read on 256 more, and a flood of handshakes (some with a
//! certificate of another cluster) leave the process's resident memory
//! under a bound computed from the node's documented limits, while another
//! client's requests keep succeeding. Before that, a 20 MiB set add of
//! empty members is refused without being decoded.
//!
//! Memory is the test process's RSS (`/proc/self/status`: the node runs in
//! it, and so do the hostile clients, whose own buffers are kept small).
//! Every load is bounded in count and time, and stops early if the bound
//! is passed (the test then fails rather than exhaust the machine).
//!
//! Address blocks (`127.31.<block>.x`): 60 the node, 69 another cluster's
//! certificates (files only, no node).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use meridian::raw::{Identity, RawConnection, client_config};
use meridian::{CONVERGE, InProcessCluster, Spec, TestClusterFiles, eventually};
use meridian_client::wire::{
    self, Consistency, MAX_FRAME_BYTES, Operation, Request, Response, WireError,
};
use meridian_client::{Client, Error};
use meridian_server::budget::CONNECTION_BUFFER_BYTES;
use meridian_server::config::PENDING_CONNECTION_BYTES;
use meridian_server::exposition::sample;
use meridian_server::listener::{MAX_CLIENT_HANDSHAKES, MAX_PENDING_CLIENT_CONNECTIONS};
use meridian_server::tls::CLIENT_CONNECTION_WINDOW_BYTES;

const US: &str = "us-east-1";
const MIB: u64 = 1 << 20;

/// Streams the hostile client opens on each of its two connections: the
/// node's default `max_in_flight_per_connection`.
const HOSTILE_STREAMS: usize = 256;

/// Connection attempts in the handshake flood, spread over this many
/// client sockets; every fourth presents another cluster's certificate.
const FLOOD_HANDSHAKES: usize = 400;
const FLOOD_SOCKETS: usize = 8;

/// How long the attack lasts: shorter than the node's request deadlines
/// (30 s), so everything the hostile client can pin is pinned while RSS is
/// measured.
const ATTACK: Duration = Duration::from_secs(12);

/// The large set whose reads the hostile client never collects: 4096
/// members of 1 KiB (4 MiB), written in 1 MiB adds.
const BIG_SET_MEMBERS: usize = 4096;
const BIG_MEMBER_BYTES: usize = 1024;

/// Chunk the withholding streams write at a time.
const CHUNK_BYTES: usize = 64 << 10;

/// The node's engine pool runs at most this many calls at once on this
/// machine (`EnginePool::default()`); each may hold a read set and its
/// encoded answer before the budget refuses it.
fn engine_calls() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * meridian_server::engine_pool::ENGINE_CALLS_PER_CORE).clamp(
        meridian_server::engine_pool::MIN_ENGINE_CALLS,
        meridian_server::engine_pool::MAX_ENGINE_CALLS,
    ) as u64
}

/// The documented bound (listener module docs, README "Known limits") on
/// what the attack may add to the process's RSS:
/// * each hostile authenticated connection: its byte budget
///   ([`CONNECTION_BUFFER_BYTES`]) and its QUIC windows;
/// * reads in progress on the engine pool: the set and its encoded answer;
/// * handshakes and connections waiting to authenticate: at most
///   [`MAX_CLIENT_HANDSHAKES`] + [`MAX_PENDING_CLIENT_CONNECTIONS`], each
///   counted at [`PENDING_CONNECTION_BYTES`] (node side), and as much again
///   for the flooding clients' side, which lives in this process too;
/// * 64 MiB of slack: allocator fragmentation, tasks, the test's clients.
fn rss_bound() -> u64 {
    let hostile_connections = 2;
    let per_connection = CONNECTION_BUFFER_BYTES as u64 + CLIENT_CONNECTION_WINDOW_BYTES;
    let pool = engine_calls() * 2 * (BIG_SET_MEMBERS * BIG_MEMBER_BYTES) as u64;
    let flood = 2
        * (MAX_CLIENT_HANDSHAKES + MAX_PENDING_CLIENT_CONNECTIONS) as u64
        * PENDING_CONNECTION_BYTES;
    hostile_connections * per_connection + pool + flood + 64 * MIB
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    status_kib("VmRSS:") * 1024
}

/// Peak resident memory since the last [`reset_peak`], in bytes.
fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS");
}

fn request(op: Operation) -> Request {
    Request {
        op,
        consistency: Consistency::Local,
        timeout_ms: 20_000,
    }
}

/// A set add of as many empty members as a frame holds (each archived
/// member is 8 bytes: 2.6 million of them, ~63 MiB once decoded).
fn empty_members_frame() -> Vec<u8> {
    let members = vec![Vec::new(); (MAX_FRAME_BYTES - 64) / 8];
    wire::encode(&request(Operation::SetAdd {
        key: b"hostile-empty".to_vec(),
        members,
    }))
}

/// Samples RSS until `stop`; raises `tripped` (and stops) as soon as it
/// has grown past `bound` over `baseline`. Returns the largest growth.
fn watch_rss(
    baseline: u64,
    bound: u64,
    stop: Arc<AtomicBool>,
    tripped: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut most = 0;
        while !stop.load(Ordering::Relaxed) {
            let grown = rss().saturating_sub(baseline);
            most = most.max(grown);
            if grown > bound {
                tripped.store(true, Ordering::Relaxed);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        most
    })
}

/// Client transport of the withholding connection: a small send window,
/// so its own side buffers little.
fn withholding_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.send_window(MIB);
    t
}

/// Client transport of the connection that never reads: small receive
/// windows, so the node's answers stay on the node's side.
fn unread_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(16 << 10))
        .receive_window(quinn::VarInt::from_u32(256 << 10));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_client_leaves_memory_bounded_and_others_served() -> Result<()> {
    let mut spec = Spec::new(60);
    spec.regions = vec!["us-east".to_owned()];
    let cluster = InProcessCluster::start(spec).await?;
    let node = cluster.node(US);
    let address = node.addresses.client;
    let config = cluster.dir.client_config()?;
    let identity = Identity::of(&config);
    let token = config.token.clone().into_bytes();
    let good = Client::connect(
        config
            .clone()
            .pinned(US)
            .with_timeout(Duration::from_secs(20)),
    )
    .await?;

    // The set whose reads the hostile client will never collect.
    for batch in 0..BIG_SET_MEMBERS * BIG_MEMBER_BYTES / MIB as usize {
        let members: Vec<Vec<u8>> = (0..MIB as usize / BIG_MEMBER_BYTES)
            .map(|i| {
                let mut m = vec![b'x'; BIG_MEMBER_BYTES];
                m[..8].copy_from_slice(&((batch * 1024 + i) as u64).to_be_bytes());
                m
            })
            .collect();
        good.set("hostile-big").add(members).await?;
    }

    // 1. A frame of 2.6 million empty members is refused from its archive:
    //    the node never holds more than the frame itself.
    let frame = empty_members_frame();
    let raw = RawConnection::authenticated(address, US, &identity, &token).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss();
    reset_peak();
    let answer = raw.request_frame(&frame).await?;
    let peak = peak_rss().saturating_sub(before);
    match &answer {
        Response::Err(WireError::InvalidArgument { message }) => {
            assert!(message.contains("members"), "{message}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    raw.close().await;
    drop(frame);
    eprintln!(
        "a {} MiB frame of empty members: peak RSS +{} MiB",
        MAX_FRAME_BYTES as u64 / MIB,
        peak / MIB
    );
    // The frame (20 MiB) and what QUIC buffers of it on either side; its
    // decoded form alone would be ~63 MiB.
    assert!(
        peak < 48 * MIB,
        "refusing a frame of empty members took {} MiB: it was decoded",
        peak / MIB
    );

    // 2. The attack.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss();
    let bound = rss_bound();
    let stop = Arc::new(AtomicBool::new(false));
    let tripped = Arc::new(AtomicBool::new(false));
    let watcher = watch_rss(baseline, bound, stop.clone(), tripped.clone());
    let attack_ends = tokio::time::Instant::now() + ATTACK;
    let halt = {
        let stop = stop.clone();
        let tripped = tripped.clone();
        move || {
            stop.load(Ordering::Relaxed)
                || tripped.load(Ordering::Relaxed)
                || tokio::time::Instant::now() >= attack_ends
        }
    };

    // 2a. Frames withheld mid-body: each stream declares the largest frame
    //     and sends all of it but the last byte, as fast as the node takes
    //     it, then waits.
    let withholding =
        RawConnection::authenticated_with(address, US, &identity, &token, withholding_transport())
            .await?;
    let chunk: Arc<[u8]> = vec![0u8; CHUNK_BYTES].into();
    let sent = Arc::new(AtomicU64::new(0));
    let mut held_streams = Vec::new();
    let mut withholders = tokio::task::JoinSet::new();
    for _ in 0..HOSTILE_STREAMS {
        let conn = withholding.connection.clone();
        let chunk = chunk.clone();
        let sent = sent.clone();
        let halt = halt.clone();
        withholders.spawn(async move {
            let opened = tokio::time::timeout_at(attack_ends, conn.open_bi()).await;
            let Ok(Ok((mut send, recv))) = opened else {
                return None;
            };
            let _ = send
                .write_all(&(MAX_FRAME_BYTES as u32).to_le_bytes())
                .await;
            let mut left = MAX_FRAME_BYTES - 1;
            while left > 0 && !halt() {
                let n = left.min(CHUNK_BYTES);
                // `write` writes nothing if cancelled, so `left` stays exact.
                match tokio::time::timeout(Duration::from_millis(200), send.write(&chunk[..n]))
                    .await
                {
                    Ok(Ok(n)) => {
                        left -= n;
                        sent.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Ok(Err(_)) => break,
                    // Flow control: the node is not reading; keep waiting.
                    Err(_) => {}
                }
            }
            // Never finish: the streams stay open, mid-body.
            Some((send, recv))
        });
    }

    // 2b. Answers never read: 256 reads of the 4 MiB set, sent and
    //     finished, their answers left on the wire.
    let unread =
        RawConnection::authenticated_with(address, US, &identity, &token, unread_transport())
            .await?;
    let read_frame = wire::encode(&request(Operation::SetRead {
        key: b"hostile-big".to_vec(),
    }));
    let mut unread_streams = tokio::task::JoinSet::new();
    for _ in 0..HOSTILE_STREAMS {
        let conn = unread.connection.clone();
        let read_frame = read_frame.clone();
        unread_streams.spawn(async move {
            let opened = tokio::time::timeout_at(attack_ends, conn.open_bi()).await;
            let Ok(Ok((mut send, recv))) = opened else {
                return None;
            };
            let _ = tokio::time::timeout_at(attack_ends, send.write_all(&read_frame)).await;
            let _ = send.finish();
            Some((send, recv))
        });
    }

    // 2c. A flood of handshakes that never authenticate; every fourth with
    //     another cluster's certificate (refused in the handshake).
    let foreign = TestClusterFiles::create(Spec::new(69))?;
    let foreign_identity = Identity::of(&foreign.client_config()?);
    let mut sockets = Vec::new();
    for _ in 0..FLOOD_SOCKETS {
        sockets.push(quinn::Endpoint::client("127.0.0.1:0".parse()?)?);
    }
    let small = || {
        let mut t = quinn::TransportConfig::default();
        t.stream_receive_window(quinn::VarInt::from_u32(16 << 10))
            .receive_window(quinn::VarInt::from_u32(64 << 10))
            .send_window(64 << 10);
        t
    };
    let ours = client_config(&identity, small())?;
    let theirs = client_config(&foreign_identity, small())?;
    let handshaken = Arc::new(AtomicU64::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..FLOOD_HANDSHAKES {
        let socket = sockets[i % FLOOD_SOCKETS].clone();
        let config = if i % 4 == 3 {
            theirs.clone()
        } else {
            ours.clone()
        };
        let handshaken = handshaken.clone();
        flood.spawn(async move {
            let connecting = socket.connect_with(config, address, US).ok()?;
            let conn = tokio::time::timeout_at(attack_ends, connecting)
                .await
                .ok()?
                .ok()?;
            handshaken.fetch_add(1, Ordering::Relaxed);
            // Hold it without a hello until the node gives up on it.
            let _ = tokio::time::timeout_at(attack_ends, conn.closed()).await;
            Some(conn)
        });
    }

    // 2d. Meanwhile, another client's requests keep succeeding.
    let mut served = 0u64;
    let mut slowest = Duration::ZERO;
    while tokio::time::Instant::now() < attack_ends && !tripped.load(Ordering::Relaxed) {
        let started = Instant::now();
        let value = good
            .counter("good-client")
            .incr(1)
            .await
            .context("the good client's write failed during the attack")?;
        assert_eq!(value.value as u64, served + 1);
        let read = good
            .register("good-register")
            .get()
            .await
            .context("the good client's read failed during the attack")?;
        assert!(read.value.value.is_none());
        served += 1;
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep_until(attack_ends).await;
    let exposition = node.exposition();
    stop.store(true, Ordering::Relaxed);
    let grown = watcher.await?;
    let metric = |name: &str| sample(&exposition, name).unwrap_or(-1.0);
    eprintln!(
        "attack: RSS grew by at most {} MiB (bound {} MiB); {} MiB of withheld frames sent; \
         {} handshakes completed; good client: {served} rounds, slowest {slowest:?}; \
         node: budget in use {} MiB, handshakes retried {}, refused {}, failed {}, \
         pending refused {}, over budget {}, warnings suppressed {}",
        grown / MIB,
        bound / MIB,
        sent.load(Ordering::Relaxed) / MIB,
        handshaken.load(Ordering::Relaxed),
        metric("meridian_client_buffer_bytes") / MIB as f64,
        metric("meridian_client_handshakes_retried_total"),
        metric("meridian_client_handshakes_refused_total"),
        metric("meridian_client_handshake_failures_total"),
        metric("meridian_client_pending_refused_total"),
        metric("meridian_client_over_budget_total"),
        metric("meridian_client_warnings_suppressed_total"),
    );
    assert!(
        !tripped.load(Ordering::Relaxed) && grown <= bound,
        "the hostile client grew the process's RSS by {} MiB, over the {} MiB bound",
        grown / MIB,
        bound / MIB
    );
    assert!(served > 0, "the good client was never served");
    // The attack did reach the node: frames were being read, answers were
    // refused for want of budget, handshakes failed.
    assert!(sent.load(Ordering::Relaxed) >= MAX_FRAME_BYTES as u64 / 2);
    assert!(metric("meridian_client_over_budget_total") > 0.0);
    assert!(metric("meridian_client_handshake_failures_total") > 0.0);

    // 3. The hostile client goes away: everything it held is given back,
    //    and a new client is served.
    held_streams.extend(withholders.join_all().await.into_iter().flatten());
    drop(held_streams);
    withholding.close().await;
    drop(unread_streams.join_all().await);
    unread.close().await;
    drop(flood.join_all().await);
    for socket in &sockets {
        socket.close(0u32.into(), b"done");
    }
    eventually(
        "the hostile client's budget is given back",
        CONVERGE,
        || {
            let exposition = node.exposition();
            async move {
                let held = sample(&exposition, "meridian_client_buffer_bytes");
                let pending = sample(&exposition, "meridian_client_pending_connections");
                if held == Some(0.0) && pending == Some(0.0) {
                    Ok(())
                } else {
                    Err(format!(
                        "budget in use {held:?}, pending connections {pending:?}"
                    ))
                }
            }
        },
    )
    .await;
    let fresh = Client::connect(config.pinned(US)).await?;
    match fresh.counter("good-client").read().await {
        Ok(r) => assert_eq!(r.value as u64, served),
        Err(e @ Error::Overloaded(_)) => panic!("still overloaded after the attack: {e}"),
        Err(e) => return Err(e.into()),
    }
    drop(fresh);
    drop(good);
    cluster.shutdown().await
}
