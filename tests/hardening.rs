//! The node's defences from the close review (issue 13), one test per
//! item, on in-process nodes: engine work off the async workers and
//! bounded set write replies (S2), `periodic` durability under `quorum`
//! (C7), residency of peer state reads and the debug clock (S10), clients
//! without a token (S4), the metrics endpoint's connection cap (S5).
//! The hostile-client test (S1) is `tests/hostile.rs`.
//!
//! Address blocks (`127.31.<block>.x`): 61 engine offload, 62 periodic
//! quorum, 63 peer state reads, 64 clients without a token, 65 metrics
//! endpoint, 66 debug clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use meridian::{InProcessCluster, Spec};
use meridian_client::wire::{Consistency, Operation, ReplyValue, Request, Response};
use meridian_server::metrics::Origin;

const US: &str = "us-east-1";

/// A one-node cluster (one region): the node is every key's only replica.
fn single_node(block: u8) -> Spec {
    let mut spec = Spec::new(block);
    spec.regions = vec!["us-east".to_owned()];
    spec
}

fn request(op: Operation, consistency: Consistency) -> Request {
    Request {
        op,
        consistency,
        timeout_ms: 30_000,
    }
}

/// Members in the large set of the offload test, written in batches of
/// [`BATCH`]: reading a set this size takes the engine long enough (well
/// over a second in a debug build) that a read run on an async worker
/// would visibly stall everything else on it.
const LARGE_SET_MEMBERS: usize = 100_000;
const BATCH: usize = 10_000;

/// Concurrent full reads of the large set in the offload test.
const READERS: usize = 2;

/// Engine work runs off the async workers (S2): on a current-thread
/// runtime (one thread for the node's QUIC drivers, timers and every
/// request), full reads of a 100 000-member set leave a ticking task
/// running; had the reads run on the runtime's thread, the ticker would
/// stop for each read's whole duration. And a set write answers with the
/// count, not the members, once the set is large.
#[tokio::test(flavor = "current_thread")]
async fn engine_work_leaves_the_async_thread_free_and_set_writes_answer_bounded() -> Result<()> {
    let cluster = InProcessCluster::start(single_node(61)).await?;
    let coordinator = cluster.node(US).coordinator().clone();
    let key = b"offload-set".to_vec();
    for batch in 0..LARGE_SET_MEMBERS / BATCH {
        let members = (0..BATCH)
            .map(|i| format!("{:08}", batch * BATCH + i).into_bytes())
            .collect();
        let response = coordinator
            .execute(
                request(
                    Operation::SetAdd {
                        key: key.clone(),
                        members,
                    },
                    Consistency::Local,
                ),
                Origin::Quic,
            )
            .await;
        // A write's answer about a large set is its count alone.
        match response {
            Response::Ok(reply) => match reply.value {
                ReplyValue::Set { members, count } => {
                    assert_eq!(count as usize, (batch + 1) * BATCH);
                    assert!(
                        members.is_empty(),
                        "{} members in a write's answer",
                        members.len()
                    );
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    // A ticker on the runtime's only thread, recording its longest gap.
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let now = Instant::now();
                longest = longest.max(now - last);
                last = now;
            }
            longest
        })
    };
    // Let the ticker start before the reads do.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let reads = (0..READERS).map(|_| {
        let coordinator = coordinator.clone();
        let key = key.clone();
        async move {
            let read = Instant::now();
            let response = coordinator
                .execute(
                    request(Operation::SetRead { key }, Consistency::Local),
                    Origin::Quic,
                )
                .await;
            match response {
                Response::Ok(reply) => match reply.value {
                    ReplyValue::Set { members, count } => {
                        assert_eq!(members.len(), LARGE_SET_MEMBERS);
                        assert_eq!(count as usize, LARGE_SET_MEMBERS);
                    }
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
            read.elapsed()
        }
    });
    let durations = futures_join_all(reads).await;
    let total = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let longest_gap = ticker.await?;
    let shortest_read = durations.iter().min().copied().unwrap_or_default();
    eprintln!(
        "{READERS} reads of {LARGE_SET_MEMBERS} members: {total:?} in all, shortest {shortest_read:?}; \
         longest ticker gap {longest_gap:?}"
    );
    // Had the reads run on the runtime's thread, the ticker would have
    // missed every one of them (a gap of at least the reads' sum). Half the
    // shortest read is far above scheduling noise, yet far below that.
    assert!(
        longest_gap < shortest_read / 2,
        "the ticker stalled for {longest_gap:?} while reads took {shortest_read:?}: engine work ran on the async thread"
    );
    cluster.shutdown().await
}

/// Awaits every future, concurrently, on the current task.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// `periodic` durability (C7): a `quorum` (or `replicas-N`) write counts
/// this node's own copy only once it is on disk (with a one-minute fsync
/// interval, the ack comes after an fsync the write asked for), while a
/// `local` write is acknowledged at once, its fsync left to the interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_quorum_writes_count_only_durable_copies() -> Result<()> {
    use meridian_server::config::{DurabilityMode, MAX_PERIODIC_MS};
    let dir =
        meridian::TestClusterFiles::create(single_node(62).durability(DurabilityMode::Periodic))?;
    dir.edit(US, |f| f.storage.periodic_ms = MAX_PERIODIC_MS)?;
    // No checkpoint (which fsyncs the log) during the test.
    let cluster = InProcessCluster::start_with(dir, |node| {
        let mut protocol = meridian::inproc::test_protocol(node);
        protocol.truncate_every_ms = 600_000;
        protocol
    })
    .await?;
    let engine = cluster.node(US).engine().clone();
    let client = cluster.client(US).await?;
    let durable_covers_applied =
        |e: &meridian_engine::Engine| e.durable().vector().dominates(e.applied().vector());

    client
        .counter("periodic-local")
        .incr(1)
        .consistency(Consistency::Local)
        .await?;
    assert!(
        !durable_covers_applied(&engine),
        "a local write under periodic durability was fsynced at once (it need not be)"
    );

    client
        .counter("periodic-quorum")
        .incr(1)
        .consistency(Consistency::Quorum)
        .await?;
    // The sync that made the write durable published it as durable before
    // releasing the coordinator's wait (callbacks run in the order they
    // were registered); the next periodic fsync is a minute away.
    assert!(
        durable_covers_applied(&engine),
        "a quorum write was acknowledged before this node's copy was on disk"
    );

    // replicas-1 is `local` made durable: the same one replica, but its
    // copy counts only once fsynced, as quorum's does.
    client
        .counter("periodic-local-2")
        .incr(1)
        .consistency(Consistency::Local)
        .await?;
    assert!(!durable_covers_applied(&engine));
    client
        .counter("periodic-replicas-1")
        .incr(1)
        .consistency(Consistency::Replicas(1))
        .await?;
    assert!(
        durable_covers_applied(&engine),
        "a replicas-1 write was acknowledged before this node's copy was on disk"
    );
    cluster.shutdown().await
}

/// Peer state reads and repairs respect placement (S10): a node that does
/// not replicate a key can neither read its state from a replica nor
/// repair it there; a replica can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_state_reads_stay_within_the_keys_regions() -> Result<()> {
    use meridian_engine::{Kind, ObjectKey};
    use meridian_server::rpc::{PeerRequest, PeerResponse};
    const EU: &str = "eu-west-1";
    const AP: &str = "ap-south-1";
    let cluster =
        InProcessCluster::start(Spec::new(63).placement("eu/", &["eu-west", "ap-south"])).await?;
    cluster.wait_connected().await;
    let client = cluster.client(EU).await?;
    client
        .set("eu/residents")
        .add(["secret"])
        .consistency(Consistency::All)
        .await?;
    let key = ObjectKey::new(Kind::Set, b"eu/residents".to_vec())?;
    let call = |from: &str, to: &str, request: PeerRequest| {
        let mesh = cluster.node(from).mesh().clone();
        let to = to.to_owned();
        async move {
            let bytes = mesh
                .call(&to, &request.encode(), Duration::from_secs(10))
                .await?;
            anyhow::Ok(PeerResponse::decode(&bytes).map_err(anyhow::Error::msg)?)
        }
    };
    // A replica asking a replica: served.
    match call(AP, EU, PeerRequest::ReadState(key.clone())).await? {
        PeerResponse::State(Some(_), _) => {}
        other => panic!("a replica's state read was not served: {other:?}"),
    }
    // us-east does not replicate eu/: refused, the state never leaves.
    let state = cluster.node(EU).engine().state(&key)?.expect("written");
    for request in [
        PeerRequest::ReadState(key.clone()),
        PeerRequest::Repair(key.clone(), Some(state), None),
    ] {
        match call(US, EU, request).await? {
            PeerResponse::Failed(message) => {
                assert!(message.contains("does not replicate"), "{message}")
            }
            other => panic!("a non-replica's state read or repair was served: {other:?}"),
        }
    }
    let exposition = cluster.node(EU).exposition();
    assert_eq!(
        meridian_server::exposition::sample(&exposition, "meridian_peer_requests_refused_total"),
        Some(2.0)
    );
    cluster.shutdown().await
}

/// The debug clock offset (S10): refused without the switch, bounded with
/// it, and gone after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debug_clock_offset_is_switched_bounded_and_reset_by_a_restart() -> Result<()> {
    use meridian_client::Error;
    use meridian_server::clock::MAX_DEBUG_CLOCK_OFFSET_MS;
    let dir = meridian::TestClusterFiles::create(single_node(66))?;
    let mut cluster = InProcessCluster::start_with(dir, meridian::inproc::test_protocol).await?;
    let offset = |cluster: &InProcessCluster| {
        let exposition = cluster.node(US).exposition();
        meridian_server::exposition::sample(&exposition, "meridian_debug_clock_offset_ms")
    };
    let client = cluster.client(US).await?;
    let e = client.debug_clock_offset(1_000).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("allow-debug-clock")),
        "{e:?}"
    );
    drop(client);
    cluster.stop(US).await?;

    cluster
        .dir
        .edit(US, |f| f.debug.allow_clock_offset = true)?;
    cluster.restart(US).await?;
    let client = cluster.client(US).await?;
    for too_far in [
        MAX_DEBUG_CLOCK_OFFSET_MS + 1,
        -MAX_DEBUG_CLOCK_OFFSET_MS - 1,
        i64::MAX,
        i64::MIN,
    ] {
        let e = client.debug_clock_offset(too_far).await.unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("at most")),
            "{too_far}: {e:?}"
        );
    }
    assert_eq!(offset(&cluster), Some(0.0));
    client.debug_clock_offset(1_500).await?;
    assert_eq!(offset(&cluster), Some(1_500.0));
    drop(client);

    cluster.stop(US).await?;
    cluster.restart(US).await?;
    assert_eq!(offset(&cluster), Some(0.0), "the offset outlived a restart");
    cluster.shutdown().await
}

/// Clients without the token (S4): connections that finished the QUIC
/// handshake with the cluster's client certificate but never send a hello
/// do not count against `max_client_connections`; a real client connects
/// and is served while they hang, and the cap still holds for
/// authenticated connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_the_token_cannot_lock_out_real_clients() -> Result<()> {
    use meridian::raw::{Identity, RawConnection};
    use meridian_client::{Client, Error};
    const MAX_CONNECTIONS: u32 = 3;
    const TOKENLESS: usize = 8;
    let dir = meridian::TestClusterFiles::create(single_node(64))?;
    dir.edit(US, |f| f.limits.max_client_connections = MAX_CONNECTIONS)?;
    let cluster = InProcessCluster::start_with(dir, meridian::inproc::test_protocol).await?;
    let config = cluster.dir.client_config()?.pinned(US);
    let identity = Identity::of(&config);
    let address = cluster.node(US).addresses.client;
    let mut silent = Vec::new();
    for _ in 0..TOKENLESS {
        silent.push(RawConnection::connect(address, US, &identity).await?);
    }
    let mut clients = Vec::new();
    for i in 0..MAX_CONNECTIONS {
        let client = Client::connect(config.clone()).await?;
        client.counter("lockout").incr(1).await?;
        assert_eq!(
            client.counter("lockout").read().await?.value,
            i64::from(i) + 1
        );
        clients.push(client);
    }
    // Authenticated connections are still capped.
    let e = Client::connect(config.clone()).await.unwrap_err();
    assert!(
        matches!(&e, Error::Connect { message, .. } if message.contains("at most 3 client connections")),
        "{e:?}"
    );
    let exposition = cluster.node(US).exposition();
    let sample = |name: &str| meridian_server::exposition::sample(&exposition, name);
    assert_eq!(
        sample("meridian_client_connections"),
        Some(f64::from(MAX_CONNECTIONS))
    );
    assert_eq!(
        sample("meridian_client_pending_connections"),
        Some(TOKENLESS as f64)
    );
    for raw in silent {
        raw.close().await;
    }
    drop(clients);
    cluster.shutdown().await
}

/// The metrics endpoint (S5): connections past its cap are closed at once
/// (idle ones cannot pile up), a scrape still works once they are gone, and
/// the node raised the process's descriptor limit when it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_caps_its_connections() -> Result<()> {
    use meridian_server::exposition::MAX_METRICS_CONNECTIONS;
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;
    // The usual soft default; starting a node raises it to the hard limit.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(1024), hard)?;
    let cluster = InProcessCluster::start(single_node(65)).await?;
    assert_eq!(getrlimit(Resource::RLIMIT_NOFILE)?, (hard, hard));
    let address = cluster.node(US).addresses.metrics;

    // Idle connections up to the cap are held (each for up to 5 s).
    let mut idle = Vec::new();
    for _ in 0..MAX_METRICS_CONNECTIONS {
        idle.push(TcpStream::connect(address).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One more is closed at once: its read ends well before the 5 s an
    // admitted connection would be given.
    let mut extra = TcpStream::connect(address).await?;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a connection past the cap was held open: {closed:?}"
    );
    drop(idle);

    let body = meridian::eventually("a scrape is served", Duration::from_secs(10), || {
        scrape(address)
    })
    .await;
    let refused =
        meridian_server::exposition::sample(&body, "meridian_metrics_connections_refused_total");
    assert!(refused >= Some(1.0), "{refused:?}");
    cluster.shutdown().await
}

/// `GET /metrics` from `address`: the whole HTTP response.
async fn scrape(address: std::net::SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    if body.starts_with("HTTP/1.1 200") {
        Ok(body)
    } else {
        Err(format!("answered {body:?}"))
    }
}

/// The RESP door counts against the node's client byte budget (S1):
/// authenticated connections that each hold a 19 MiB request, its end
/// withheld, fill the budget; past it a connection is told so and closed,
/// instead of the node buffering 20 MiB for each of up to 1024
/// connections. A stranger (no AUTH) cannot make it buffer more than
/// 192 KiB. When the connections go, the budget is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_buffers_count_against_the_node_budget() -> Result<()> {
    use meridian_server::config::MIN_CLIENT_BUFFER_BYTES;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    const CONNECTIONS: usize = 10;
    const MEMBERS: usize = 19;
    const MEMBER_BYTES: usize = 1 << 20;
    let dir = meridian::TestClusterFiles::create(single_node(67))?;
    // The smallest budget the node accepts for 8 QUIC connections.
    dir.edit(US, |f| {
        f.limits.max_client_connections = 8;
        f.limits.client_memory_bytes = 0;
        f.limits.client_memory_bytes = f.limits.client_transport_bytes() + MIN_CLIENT_BUFFER_BYTES;
    })?;
    let cluster = InProcessCluster::start_with(dir, meridian::inproc::test_protocol).await?;
    let address = cluster.node(US).addresses.resp.expect("RESP is served");
    let token = cluster.dir.client_config()?.token;
    let budget = || {
        meridian_server::exposition::sample(
            &cluster.node(US).exposition(),
            "meridian_client_buffer_bytes",
        )
    };

    // A stranger's large request: refused past 192 KiB.
    let mut stranger = TcpStream::connect(address).await?;
    let mut large = b"*2\r\n$4\r\nECHO\r\n$1000000\r\n".to_vec();
    large.extend_from_slice(&vec![b'x'; 512 << 10]);
    let _ = stranger.write_all(&large).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stranger.read_to_end(&mut answer)).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("NOAUTH"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    let mut head = format!("*{}\r\n$4\r\nSADD\r\n$1\r\nk\r\n", MEMBERS + 2).into_bytes();
    let member = vec![b'm'; MEMBER_BYTES];
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..CONNECTIONS {
        let mut c = TcpStream::connect(address).await?;
        c.write_all(format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{token}\r\n", token.len()).as_bytes())
            .await?;
        let mut ok = [0u8; 5];
        c.read_exact(&mut ok).await?;
        assert_eq!(&ok, b"+OK\r\n");
        // All but the last byte of the request.
        let mut sent = c.write_all(&head).await.is_ok();
        for i in 0..MEMBERS {
            if !sent {
                break;
            }
            let mut piece = format!("${MEMBER_BYTES}\r\n").into_bytes();
            piece.extend_from_slice(&member);
            piece.extend_from_slice(b"\r\n");
            if i == MEMBERS - 1 {
                piece.pop();
            }
            sent = tokio::time::timeout(Duration::from_secs(10), c.write_all(&piece))
                .await
                .is_ok_and(|r| r.is_ok());
        }
        // Give the node time to read what was sent (or refuse it).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut answer = [0u8; 128];
        match tokio::time::timeout(Duration::from_millis(200), c.read(&mut answer)).await {
            Ok(Ok(n)) if n > 0 => {
                let text = String::from_utf8_lossy(&answer[..n]);
                assert!(text.contains("memory budget"), "{text}");
                refused += 1;
            }
            Ok(_) => refused += 1,
            Err(_) => held.push(c),
        }
    }
    head.clear();
    let in_use = budget().unwrap_or(-1.0);
    eprintln!(
        "{} RESP connections hold {} MiB of the {} MiB budget; {refused} refused",
        held.len(),
        in_use / (1 << 20) as f64,
        MIN_CLIENT_BUFFER_BYTES >> 20
    );
    assert!(refused > 0, "every connection buffered its 19 MiB request");
    assert!(in_use <= MIN_CLIENT_BUFFER_BYTES as f64);
    drop(held);
    meridian::eventually("the budget is given back", Duration::from_secs(10), || {
        let b = budget();
        async move {
            if b == Some(0.0) {
                Ok(())
            } else {
                Err(format!("{b:?} bytes still held"))
            }
        }
    })
    .await;
    cluster.shutdown().await
}
