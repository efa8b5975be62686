//! The Prometheus endpoint serves every metric the README's "Metrics"
//! section lists, with values that follow the traffic (README "## Metrics";
//! docs/architecture.md section 8 "Metrics"; docs/resp.md "Errors" for the
//! `resp` / `resp_probe` labels).
//!
//! Address block (`127.31.<block>.x`): 83.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use meridian::inproc::DETECT;
use meridian::metrics::{Exposition, scrape_parsed};
use meridian::{CONVERGE, InProcessCluster, Spec, eventually};
use meridian_client::Consistency;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-south-1";

const PROTOCOLS: [&str; 4] = ["quic", "resp", "resp_probe", "peer"];
const OPS: [&str; 2] = ["read", "write"];
const LEVELS: [&str; 4] = ["local", "leader", "quorum", "all"];

/// Every family the README lists, with its Prometheus type.
const FAMILIES: [(&str, &str); 21] = [
    ("meridian_requests_total", "counter"),
    ("meridian_request_duration_seconds", "histogram"),
    ("meridian_deltas_originated_total", "counter"),
    ("meridian_deltas_applied_total", "counter"),
    ("meridian_deltas_duplicate_total", "counter"),
    ("meridian_deltas_deferred_total", "counter"),
    ("meridian_peer_connected", "gauge"),
    ("meridian_peer_lag_deltas", "gauge"),
    ("meridian_peer_lag_ms", "gauge"),
    ("meridian_peer_deferred_deltas_total", "counter"),
    ("meridian_peer_clock_offset_ms", "gauge"),
    ("meridian_peer_messages_sent_total", "counter"),
    ("meridian_peer_messages_received_total", "counter"),
    ("meridian_peer_bytes_sent_total", "counter"),
    ("meridian_peer_bytes_received_total", "counter"),
    ("meridian_log_bytes", "gauge"),
    ("meridian_log_written_bytes_total", "counter"),
    ("meridian_log_deltas", "gauge"),
    ("meridian_log_fsyncs_total", "counter"),
    ("meridian_checkpoints_total", "counter"),
    ("meridian_debug_clock_offset_ms", "gauge"),
];

fn requests(m: &Exposition, protocol: &str, op: &str, level: &str, outcome: &str) -> Result<f64> {
    m.value(
        "meridian_requests_total",
        &[
            ("protocol", protocol),
            ("op", op),
            ("level", level),
            ("outcome", outcome),
        ],
    )
}

/// The exposition's shape: every listed family with its type and help,
/// every request series (protocol × op × level × outcome), and a latency
/// histogram per (protocol, op, level) that is cumulative, ends in `+Inf`
/// = `_count` = the requests counted for those labels, and has a sum that
/// is 0 exactly when the count is.
fn check_shape(node: &str, m: &Exposition) -> Result<()> {
    for (family, kind) in FAMILIES {
        ensure!(
            m.types.get(family).map(String::as_str) == Some(kind),
            "{node}: family {family} has type {:?}, the README promises it as a {kind}",
            m.types.get(family)
        );
        ensure!(
            m.help.get(family).is_some_and(|h| !h.is_empty()),
            "{node}: {family} has no help"
        );
        let samples = m
            .samples
            .iter()
            .filter(|s| s.name == family || s.name.starts_with(&format!("{family}_")))
            .count();
        ensure!(samples > 0, "{node}: no samples of {family}");
    }
    for s in &m.samples {
        ensure!(
            s.value.is_finite() && (s.value >= 0.0 || s.name.ends_with("clock_offset_ms")),
            "{node}: a negative or non-finite sample {s:?}"
        );
    }
    for protocol in PROTOCOLS {
        for op in OPS {
            for level in LEVELS {
                let ok = requests(m, protocol, op, level, "ok")?;
                let error = requests(m, protocol, op, level, "error")?;
                let labels = [("protocol", protocol), ("op", op), ("level", level)];
                let buckets: Vec<(f64, f64)> = m
                    .matching("meridian_request_duration_seconds_bucket", &labels)
                    .map(|s| {
                        let le = &s.labels["le"];
                        let bound = if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap_or(f64::NAN)
                        };
                        (bound, s.value)
                    })
                    .collect();
                ensure!(buckets.len() >= 2, "{node} {labels:?}: buckets {buckets:?}");
                ensure!(
                    buckets
                        .windows(2)
                        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                    "{node} {labels:?}: buckets not increasing and cumulative: {buckets:?}"
                );
                let (last_bound, inf) = *buckets.last().unwrap();
                ensure!(
                    last_bound.is_infinite(),
                    "{node} {labels:?}: no +Inf bucket"
                );
                let count = m.value("meridian_request_duration_seconds_count", &labels)?;
                let sum = m.value("meridian_request_duration_seconds_sum", &labels)?;
                ensure!(
                    inf == count && count == ok + error,
                    "{node} {labels:?}: +Inf bucket {inf}, count {count}, requests {ok} ok + {error} errors"
                );
                ensure!(
                    (count == 0.0) == (sum == 0.0) && sum <= count * 600.0,
                    "{node} {labels:?}: {count} requests took {sum} s in all"
                );
            }
        }
    }
    Ok(())
}

async fn metrics_of(cluster: &InProcessCluster, node: &str) -> Result<Exposition> {
    let addr: SocketAddr = cluster.node(node).addresses.metrics;
    let m = scrape_parsed(addr).await?;
    check_shape(node, &m)?;
    Ok(m)
}

fn peer<'a>(peer: &'a str, region: &'a str) -> [(&'a str, &'a str); 2] {
    [("peer", peer), ("region", region)]
}

/// Writes through the native client at every level, a write forwarded by
/// placement, reads, a Redis client's `INCR` (as the `quorum` user), then a
/// write that fails; scraped on each node:
/// * every family the README lists is there, typed and explained; every
///   (protocol, op, level, outcome) request series exists, and the latency
///   histogram of each agrees with it ([`check_shape`]);
/// * the counts follow the traffic: the native writes under
///   `protocol="quic"` by level, the RESP command under `protocol="resp"`
///   (its type-check reads under `resp_probe`, not `resp`), the forwarded
///   write under `protocol="peer"` on the replica that served it, the failed
///   write under `outcome="error"`;
/// * deltas: originated = the writes the node applied; each peer applies
///   exactly the others' deltas (duplicates are counted apart); nothing is
///   deferred without clock skew;
/// * per peer: connected, no lag once converged but lag in deltas and ms
///   while a peer is cut off, no deferrals, a small clock offset on one
///   machine, traffic both ways;
/// * log bytes and deltas, fsyncs (`sync` durability), checkpoints.
///
/// What would make this fail: a family missing, renamed or mistyped, a
/// series or label missing (a protocol's requests counted under another,
/// or not at all), a histogram whose buckets disagree with its count,
/// deltas counted twice (duplicates as applied) or not at all, lag that
/// never rises (or never falls), counters that stay at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_listed_metric_is_served_and_follows_the_traffic() -> Result<()> {
    // Keys under `eu/` live in eu-west only: us-east-1 forwards them.
    let cluster = InProcessCluster::start(Spec::new(83).placement("eu/", &["eu-west"])).await?;
    cluster.wait_connected().await;
    let us = cluster.client(US).await?;
    let token = cluster.dir.client_config()?.token;

    // Native writes at each level, served by us-east-1.
    let c = || us.counter("m-counter");
    c().incr(1).consistency(Consistency::Local).await?;
    c().incr(1).consistency(Consistency::Local).await?;
    c().incr(1).consistency(Consistency::Quorum).await?;
    us.set("m-set")
        .add(["a", "b"])
        .consistency(Consistency::Quorum)
        .await?;
    us.register("m-register")
        .put("v")
        .consistency(Consistency::All)
        .await?;
    // Reads.
    assert_eq!(c().read().consistency(Consistency::Quorum).await?.value, 3);
    c().read().consistency(Consistency::All).await?;
    c().read().consistency(Consistency::Local).await?;
    // A pinned key: us-east-1 forwards it to eu-west-1, which applies it.
    us.counter("eu/pinned")
        .incr(1)
        .consistency(Consistency::Local)
        .await?;
    // A Redis client, as the `quorum` user.
    let resp_addr = cluster
        .node(US)
        .addresses
        .resp
        .context("meridian init writes resp_listen")?;
    let resp_value = tokio::task::spawn_blocking(move || -> Result<i64> {
        let client = redis::Client::open(format!("redis://quorum:{token}@{resp_addr}/"))?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(20))?;
        Ok(redis::cmd("INCR").arg("resp-counter").query(&mut con)?)
    })
    .await??;
    assert_eq!(resp_value, 1);

    // Writes us-east-1 applied itself (the pinned one was applied on eu-west-1).
    let us_writes = 6.0;
    let m = eventually("the deltas reach every replica", CONVERGE, || async {
        let m = metrics_of(&cluster, US)
            .await
            .map_err(|e| format!("{e:#}"))?;
        for name in [EU, AP] {
            let other = metrics_of(&cluster, name)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let applied = other
                .value("meridian_deltas_applied_total", &[])
                .map_err(|e| e.to_string())?;
            // eu-west-1's own write (the pinned key) is not applied by anyone:
            // it is the only replica. ap-south-1 wrote nothing.
            if applied != us_writes {
                return Err(format!(
                    "{name} applied {applied} deltas, expected {us_writes}"
                ));
            }
        }
        let lag: f64 = m.sum("meridian_peer_lag_deltas", &[]);
        if lag != 0.0 {
            return Err(format!("{US} still reports a lag of {lag} deltas"));
        }
        Ok(m)
    })
    .await;

    // Requests, by protocol, op, level and outcome.
    let quic_writes = [
        ("local", 3.0),
        ("leader", 0.0),
        ("quorum", 2.0),
        ("all", 1.0),
    ];
    for (level, n) in quic_writes {
        assert_eq!(
            requests(&m, "quic", "write", level, "ok")?,
            n,
            "quic writes at {level}"
        );
        assert_eq!(requests(&m, "quic", "write", level, "error")?, 0.0);
    }
    for level in ["quorum", "all"] {
        assert!(
            requests(&m, "quic", "read", level, "ok")? >= 1.0,
            "quic reads at {level}"
        );
    }
    assert_eq!(
        requests(&m, "resp", "write", "quorum", "ok")?,
        1.0,
        "the RESP INCR as one write at the connection's level (quorum)"
    );
    for level in LEVELS {
        if level != "quorum" {
            assert_eq!(requests(&m, "resp", "write", level, "ok")?, 0.0);
        }
        // Only eu-west-1 serves forwarded requests.
        for op in OPS {
            assert_eq!(requests(&m, "peer", op, level, "ok")?, 0.0);
        }
    }
    let probes: f64 = m.sum(
        "meridian_requests_total",
        &[("protocol", "resp_probe"), ("op", "read")],
    );
    assert!(
        probes >= 1.0,
        "INCR's type check is counted under resp_probe"
    );
    let eu_metrics = metrics_of(&cluster, EU).await?;
    assert_eq!(
        requests(&eu_metrics, "peer", "write", "local", "ok")?,
        1.0,
        "the forwarded write, on the replica that served it"
    );
    assert_eq!(
        eu_metrics.value("meridian_deltas_originated_total", &[])?,
        1.0
    );
    // Latency: the quorum writes are in the histogram.
    let write_quorum = [("protocol", "quic"), ("op", "write"), ("level", "quorum")];
    assert_eq!(
        m.value("meridian_request_duration_seconds_count", &write_quorum)?,
        2.0
    );
    assert!(m.value("meridian_request_duration_seconds_sum", &write_quorum)? > 0.0);

    // Deltas.
    assert_eq!(m.value("meridian_deltas_originated_total", &[])?, us_writes);
    // Nobody else wrote a key us-east-1 replicates.
    assert_eq!(m.value("meridian_deltas_applied_total", &[])?, 0.0);
    assert_eq!(m.value("meridian_deltas_deferred_total", &[])?, 0.0);
    m.value("meridian_deltas_duplicate_total", &[])?;

    // Per peer.
    for (name, region) in [(EU, "eu-west"), (AP, "ap-south")] {
        let labels = peer(name, region);
        assert_eq!(m.value("meridian_peer_connected", &labels)?, 1.0, "{name}");
        assert_eq!(m.value("meridian_peer_lag_deltas", &labels)?, 0.0, "{name}");
        assert_eq!(m.value("meridian_peer_lag_ms", &labels)?, 0.0, "{name}");
        assert_eq!(
            m.value("meridian_peer_deferred_deltas_total", &labels)?,
            0.0
        );
        let offset = m.value("meridian_peer_clock_offset_ms", &labels)?;
        assert!(
            offset.abs() < 1_000.0,
            "{name}: clock offset {offset} ms on one machine"
        );
        let traffic = [("peer", name)];
        for family in [
            "meridian_peer_messages_sent_total",
            "meridian_peer_messages_received_total",
            "meridian_peer_bytes_sent_total",
            "meridian_peer_bytes_received_total",
        ] {
            assert!(m.value(family, &traffic)? > 0.0, "{family} for {name}");
        }
        assert!(
            m.value("meridian_peer_bytes_sent_total", &traffic)?
                >= m.value("meridian_peer_messages_sent_total", &traffic)?,
            "fewer bytes than messages sent to {name}"
        );
    }
    // The log.
    assert!(m.value("meridian_log_bytes", &[])? > 0.0);
    assert!(m.value("meridian_log_written_bytes_total", &[])? > 0.0);
    assert!(m.value("meridian_log_deltas", &[])? >= us_writes);
    assert!(
        m.value("meridian_log_fsyncs_total", &[])? >= 1.0,
        "sync durability fsyncs"
    );
    assert_eq!(m.value("meridian_debug_clock_offset_ms", &[])?, 0.0);
    // Checkpoints run before every truncation (every 2 s with the test
    // protocol timers) and every 10 s.
    eventually("a checkpoint is counted", CONVERGE, || async {
        let m = metrics_of(&cluster, US)
            .await
            .map_err(|e| format!("{e:#}"))?;
        match m.value("meridian_checkpoints_total", &[]) {
            Ok(n) if n >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // ap-south-1 cut off: us-east-1's writes pile up as lag, in deltas and
    // in ms, and an `all` write fails (an error outcome).
    cluster.isolate(AP);
    let ap_labels = peer(AP, "ap-south");
    for _ in 0..3 {
        c().incr(1).consistency(Consistency::Local).await?;
    }
    eventually(
        "ap-south-1's lag shows, in deltas and ms",
        DETECT + CONVERGE,
        || async {
            let m = metrics_of(&cluster, US)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let deltas = m
                .value("meridian_peer_lag_deltas", &ap_labels)
                .map_err(|e| e.to_string())?;
            let ms = m
                .value("meridian_peer_lag_ms", &ap_labels)
                .map_err(|e| e.to_string())?;
            if deltas >= 3.0 && ms > 0.0 {
                Ok(())
            } else {
                Err(format!("lag {deltas} deltas, {ms} ms"))
            }
        },
    )
    .await;
    let failed = c()
        .incr(1)
        .consistency(Consistency::All)
        .timeout(Duration::from_millis(500))
        .await;
    assert!(
        failed.is_err(),
        "an `all` write with a replica cut off: {failed:?}"
    );
    let m = metrics_of(&cluster, US).await?;
    assert_eq!(requests(&m, "quic", "write", "all", "error")?, 1.0);
    assert_eq!(requests(&m, "quic", "write", "all", "ok")?, 1.0);

    // Healed: the lag drains.
    cluster.rejoin(AP);
    eventually("ap-south-1 catches up", DETECT + CONVERGE, || async {
        let m = metrics_of(&cluster, US)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let lag = m.sum("meridian_peer_lag_deltas", &[]);
        let connected = m.sum("meridian_peer_connected", &[]);
        if lag == 0.0 && connected == 2.0 {
            Ok(())
        } else {
            Err(format!("lag {lag} deltas, {connected} peers connected"))
        }
    })
    .await;
    cluster.shutdown().await
}
