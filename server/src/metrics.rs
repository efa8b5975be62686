//! The request metrics registry: counters and latency histograms by the
//! door a request came in by ([`Origin`]), operation (read or write) and
//! consistency level. Lock-free (atomics); rendered in the Prometheus text
//! format by [`crate::exposition`], which also reports the engine and the
//! peers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meridian_client::wire::Consistency;

/// Latency histogram bucket bounds, in microseconds: from loopback round
/// trips to WAN quorum writes.
const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The `level` label's values: [`Consistency::family`]. Every
/// `replicas-N` is one `replicas` series, so the label's values stay five
/// whatever counts clients ask for (N is up to 251: one series per N would
/// multiply the exposition by as many).
const LEVELS: [&str; 5] = ["local", "leader", "quorum", "all", "replicas"];

#[derive(Default)]
struct Series {
    ok: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// Where a request came in. It labels the request's metrics
/// (`protocol`), and a request a peer forwarded is never forwarded again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The native client protocol (QUIC).
    Quic,
    /// A Redis client (RESP).
    Resp,
    /// A RESP command's type check: the reads that find which types a key
    /// holds before the command itself (docs/resp.md), counted apart so
    /// that `resp` counts commands.
    RespProbe,
    /// Forwarded by a peer (placement or `leader`).
    Peer,
}

impl Origin {
    const ALL: [Origin; 4] = [Origin::Quic, Origin::Resp, Origin::RespProbe, Origin::Peer];

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Quic => "quic",
            Origin::Resp => "resp",
            Origin::RespProbe => "resp_probe",
            Origin::Peer => "peer",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Request counters by (origin, read|write, level).
#[derive(Default)]
pub struct RequestMetrics {
    series: [[[Series; LEVELS.len()]; 2]; Origin::ALL.len()],
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestMetrics")
    }
}

fn level_index(level: Consistency) -> usize {
    LEVELS
        .iter()
        .position(|l| *l == level.family())
        .unwrap_or(0)
}

impl RequestMetrics {
    pub fn record(
        &self,
        origin: Origin,
        write: bool,
        level: Consistency,
        ok: bool,
        took: Duration,
    ) {
        let s = &self.series[origin.index()][usize::from(write)][level_index(level)];
        if ok {
            s.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            s.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = took.as_micros() as u64;
        let bucket = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        s.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        s.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Appends the request families to a text exposition.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP meridian_requests_total Client requests served, by operation, level and outcome.\n");
        out.push_str("# TYPE meridian_requests_total counter\n");
        for origin in Origin::ALL {
            let protocol = origin.as_str();
            for (w, op) in ["read", "write"].iter().enumerate() {
                for (l, level) in LEVELS.iter().enumerate() {
                    let s = &self.series[origin.index()][w][l];
                    for (outcome, v) in [("ok", &s.ok), ("error", &s.errors)] {
                        let _ = writeln!(
                            out,
                            "meridian_requests_total{{protocol=\"{protocol}\",op=\"{op}\",level=\"{level}\",outcome=\"{outcome}\"}} {}",
                            v.load(Ordering::Relaxed)
                        );
                    }
                }
            }
        }
        out.push_str("# HELP meridian_request_duration_seconds Client request latency.\n");
        out.push_str("# TYPE meridian_request_duration_seconds histogram\n");
        for origin in Origin::ALL {
            let protocol = origin.as_str();
            for (w, op) in ["read", "write"].iter().enumerate() {
                for (l, level) in LEVELS.iter().enumerate() {
                    let s = &self.series[origin.index()][w][l];
                    let mut cumulative = 0;
                    for (i, bound) in BUCKETS_US.iter().enumerate() {
                        cumulative += s.buckets[i].load(Ordering::Relaxed);
                        let _ = writeln!(
                            out,
                            "meridian_request_duration_seconds_bucket{{protocol=\"{protocol}\",op=\"{op}\",level=\"{level}\",le=\"{}\"}} {cumulative}",
                            *bound as f64 / 1e6
                        );
                    }
                    cumulative += s.buckets[BUCKETS_US.len()].load(Ordering::Relaxed);
                    let _ = writeln!(
                        out,
                        "meridian_request_duration_seconds_bucket{{protocol=\"{protocol}\",op=\"{op}\",level=\"{level}\",le=\"+Inf\"}} {cumulative}"
                    );
                    let _ = writeln!(
                        out,
                        "meridian_request_duration_seconds_sum{{protocol=\"{protocol}\",op=\"{op}\",level=\"{level}\"}} {}",
                        s.sum_us.load(Ordering::Relaxed) as f64 / 1e6
                    );
                    let _ = writeln!(
                        out,
                        "meridian_request_duration_seconds_count{{protocol=\"{protocol}\",op=\"{op}\",level=\"{level}\"}} {cumulative}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_protocol_operation_level_and_outcome() {
        let m = RequestMetrics::default();
        m.record(
            Origin::Resp,
            true,
            Consistency::Quorum,
            true,
            Duration::from_micros(300),
        );
        m.record(
            Origin::Resp,
            true,
            Consistency::Quorum,
            false,
            Duration::from_millis(3),
        );
        m.record(
            Origin::Quic,
            false,
            Consistency::Local,
            true,
            Duration::from_micros(50),
        );
        let mut out = String::new();
        m.render(&mut out);
        let line = |needle: &str| {
            out.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{out}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let resp = "meridian_requests_total{protocol=\"resp\",op=\"write\",level=\"quorum\"";
        assert_eq!(line(&format!("{resp},outcome=\"ok\"}}")), "1");
        assert_eq!(line(&format!("{resp},outcome=\"error\"}}")), "1");
        let quic = "meridian_requests_total{protocol=\"quic\",op=\"read\",level=\"local\"";
        assert_eq!(line(&format!("{quic},outcome=\"ok\"}}")), "1");
        // Nothing leaks into another protocol's series.
        let peer = "meridian_requests_total{protocol=\"peer\",op=\"write\",level=\"quorum\"";
        assert_eq!(line(&format!("{peer},outcome=\"ok\"}}")), "0");
        // The histogram: the 300 µs write is in the 0.0005 s bucket, both
        // writes by 0.005 s.
        let hist = "meridian_request_duration_seconds_bucket{protocol=\"resp\",op=\"write\",level=\"quorum\"";
        assert_eq!(line(&format!("{hist},le=\"0.00025\"}}")), "0");
        assert_eq!(line(&format!("{hist},le=\"0.0005\"}}")), "1");
        assert_eq!(line(&format!("{hist},le=\"0.005\"}}")), "2");
    }

    #[test]
    fn every_replicas_count_is_one_series() {
        let m = RequestMetrics::default();
        for n in [1, 2, 3, 200] {
            m.record(
                Origin::Quic,
                true,
                Consistency::Replicas(n),
                true,
                Duration::from_micros(50),
            );
        }
        let mut out = String::new();
        m.render(&mut out);
        let needle = "meridian_requests_total{protocol=\"quic\",op=\"write\",level=\"replicas\",outcome=\"ok\"} 4";
        assert!(out.lines().any(|l| l == needle), "{out}");
        assert!(!out.contains("replicas-"), "{out}");
        // Nothing was counted as another level.
        let quorum = "meridian_requests_total{protocol=\"quic\",op=\"write\",level=\"quorum\",outcome=\"ok\"} 0";
        assert!(out.lines().any(|l| l == quorum), "{out}");
    }
}
