//! The demo's output: headings, the cluster table, durations, values.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use meridian_client::WireHlc;
use meridian_client::wire::ReplyValue;

use super::cluster::DemoCluster;
use super::tour::Arrival;
use super::{CONVERGE_TIMEOUT, REGIONS, node_name, one_way_ms};

/// The opening: the regions, their nodes and client addresses, the delays.
pub(super) fn print_intro(cluster: &DemoCluster) {
    say!("Meridian demo: a three-region cluster on this machine, with simulated WAN latency.");
    say!();
    say!(
        "  {:<9} {:<11} {:<16} one-way delay to  {:>8} {:>8} {:>8}",
        "region",
        "node",
        "client address",
        REGIONS[0],
        REGIONS[1],
        REGIONS[2]
    );
    for region in REGIONS {
        let delays: Vec<String> = REGIONS
            .iter()
            .map(|r| {
                if *r == region {
                    "-".to_owned()
                } else {
                    format!("{} ms", one_way_ms(region, r))
                }
            })
            .collect();
        say!(
            "  {:<9} {:<11} {:<16} {:17} {:>8} {:>8} {:>8}",
            region,
            node_name(region),
            cluster
                .local
                .files()
                .node(&node_name(region))
                .client_listen
                .to_string(),
            "",
            delays[0],
            delays[1],
            delays[2]
        );
    }
    say!();
    say!(
        "The delay is added by each node to every message it sends to a peer in another \
         region; a client talks to the node of its own region over loopback (no added delay), \
         like an application running in that region."
    );
}

pub(super) fn print_connect_help(dir: &Path, temporary: bool) {
    let client = dir.join("client.toml");
    let client = client.display();
    header("The cluster keeps running (--serve)");
    say!(
        "Cluster directory: {} (node configs, certificates, and client.toml, which holds the \
         access token).",
        dir.display()
    );
    say!("Talk to it from another terminal:");
    say!("  meridian cli --config {client} count likes");
    say!("  meridian cli --config {client} --node ap-south-1 --consistency quorum incr likes 5");
    say!("  meridian cli --config {client} smembers cart");
    say!("  meridian cli --config {client} --node eu-west-1 get color");
    say!("  meridian status --config {client}");
    // Any Redis client works too: the access token is the password and the
    // user name picks the consistency level (docs/resp.md).
    if let Ok(config) = meridian_client::ClientConfig::load(dir.join("client.toml")) {
        say!("Or with redis-cli (user = consistency level: local, leader, quorum or all):");
        for node in &config.nodes {
            if let Some(resp) = node.resp.as_deref().and_then(|a| a.rsplit_once(':')) {
                say!(
                    "  {:<9} redis-cli -h {} -p {} --user local --pass {} --no-auth-warning",
                    node.region,
                    resp.0,
                    resp.1,
                    config.token
                );
            }
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        say!(
            "(`meridian` is {}; from the repository, `cargo run --release -- cli ...` works too.)",
            exe.display()
        );
    }
    if temporary {
        say!("Press Ctrl-C to stop the cluster (its temporary directory is removed then).");
    } else {
        say!(
            "Press Ctrl-C to stop the cluster (its files stay in {}).",
            dir.display()
        );
    }
}

pub(super) fn header(title: &str) {
    say!();
    say!("== {title} ==");
}

/// A value as the tour prints it: a counter's number, a set's members in
/// braces, a register's value quoted (or `(empty)`), a map's fields in
/// braces.
pub(super) fn show(value: &ReplyValue) -> String {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match value {
        ReplyValue::Counter { value } => value.to_string(),
        ReplyValue::Set { members, .. } => {
            let members: Vec<String> = members.iter().map(|m| text(m)).collect();
            format!("{{{}}}", members.join(", "))
        }
        ReplyValue::Register { value: None, .. } => "(empty)".to_owned(),
        ReplyValue::Register { value: Some(v), .. } => format!("{:?}", text(v)),
        ReplyValue::Map { fields, .. } => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(f, v)| format!("{}: {:?}", text(f), text(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        other => format!("{other:?}"),
    }
}

pub(super) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub(super) fn ms_bare(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// One region's line of a convergence wait: when it read `expected`
/// (timed from `since_what`), or that it did not.
pub(super) fn arrival_line(
    region: &str,
    expected: &ReplyValue,
    a: &Arrival,
    since_what: &str,
) -> String {
    match a {
        Ok(d) => format!(
            "  {region:<9} reads {} {} {since_what}",
            show(expected),
            ms(*d)
        ),
        Err(last) => format!(
            "  {region:<9} did NOT read {} within {} s (last read: {last})",
            show(expected),
            CONVERGE_TIMEOUT.as_secs()
        ),
    }
}

/// Nearest-rank percentile `p` (0..=1) of `samples` (sorted in place).
pub(super) fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// An HLC timestamp as a person reads it: UTC time of day with
/// microseconds, plus the raw 64-bit value (what is compared).
pub(super) fn hlc_text(hlc: &WireHlc) -> String {
    // NTP64: seconds since 1900 in the high half, a binary fraction below.
    const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;
    let secs = (hlc.time >> 32).saturating_sub(NTP_UNIX_OFFSET_SECS);
    let micros = ((hlc.time & 0xffff_ffff) * 1_000_000) >> 32;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06} UTC (0x{:016x})",
        day / 3600,
        (day / 60) % 60,
        day % 60,
        micros,
        hlc.time
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut t: Vec<Duration> = (1..=40).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut t, 0.5), Duration::from_millis(20));
        assert_eq!(percentile(&mut t, 0.99), Duration::from_millis(40));
        assert_eq!(percentile(&mut [], 0.5), Duration::ZERO);
    }

    #[test]
    fn hlc_reads_as_utc_time_of_day() {
        // 1970-01-01T00:00:01.5 UTC.
        let time = ((2_208_988_800u64 + 1) << 32) | (1 << 31);
        let text = hlc_text(&WireHlc { time, node: 7 });
        assert!(text.starts_with("00:00:01.500000 UTC"), "{text}");
    }

    #[test]
    fn values_print_as_before() {
        let set = ReplyValue::Set {
            members: vec![b"apple".to_vec(), b"bread".to_vec()],
            count: 2,
        };
        assert_eq!(show(&set), "{apple, bread}");
        assert_eq!(show(&ReplyValue::Counter { value: -3 }), "-3");
        let empty = ReplyValue::Register {
            value: None,
            hlc: None,
        };
        assert_eq!(show(&empty), "(empty)");
        let red = ReplyValue::Register {
            value: Some(b"red".to_vec()),
            hlc: None,
        };
        assert_eq!(show(&red), "\"red\"");
    }
}
