//! `meridian status --config DIR/client.toml`: every node, its region, and
//! its links to its peers (connection state, replication lag, clock offset,
//! deferred deltas), in a table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use meridian_client::{Client, ClientConfig, NodeStatus};

use crate::request::DEFAULT_CLIENT_CONFIG;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The client config written by `meridian init`.
    #[arg(long, default_value = DEFAULT_CLIENT_CONFIG)]
    pub config: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// How long to wait for each node.
const NODE_TIMEOUT: Duration = Duration::from_secs(3);

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Renders the tables.
pub fn render(results: &[(String, String, Result<NodeStatus, String>)]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<16} {:<12} {:<6} {:>8} {:>10} {:>10} {:>10}\n",
        "NODE", "REGION", "STATE", "UPTIME", "LOG", "WRITES", "APPLIED"
    ));
    for (name, region, r) in results {
        match r {
            Ok(s) => out.push_str(&format!(
                "{:<16} {:<12} {:<6} {:>8} {:>10} {:>10} {:>10}\n",
                name,
                region,
                "up",
                human_duration(s.uptime_ms),
                human_bytes(s.log_bytes),
                s.deltas_originated,
                s.deltas_applied
            )),
            Err(e) => out.push_str(&format!(
                "{:<16} {:<12} {:<6}  ({e})\n",
                name, region, "DOWN"
            )),
        }
    }
    out.push('\n');
    out.push_str(&format!(
        "{:<30} {:<13} {:>11} {:>9} {:>10} {:>9}\n",
        "LINK", "STATE", "LAG(deltas)", "LAG(ms)", "CLOCK(ms)", "DEFERRED"
    ));
    for (name, _, r) in results {
        let Ok(s) = r else { continue };
        for p in &s.peers {
            out.push_str(&format!(
                "{:<30} {:<13} {:>11} {:>9} {:>10} {:>9}\n",
                format!("{name} -> {}", p.node),
                if p.connected {
                    "connected"
                } else {
                    "DISCONNECTED"
                },
                p.lag_deltas,
                p.lag_ms,
                p.clock_offset_ms,
                p.deferred_deltas
            ));
        }
    }
    out
}

pub fn run(args: StatusArgs) -> ExitCode {
    let config = match ClientConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let results = runtime.block_on(async {
        let mut tasks = Vec::new();
        for node in &config.nodes {
            let c = config.clone().pinned(&node.name);
            tasks.push((
                node.name.clone(),
                node.region.clone(),
                tokio::spawn(async move {
                    let work = async {
                        let client = Client::connect(c).await?;
                        let s = client.status().await;
                        client.close().await;
                        s
                    };
                    match tokio::time::timeout(NODE_TIMEOUT, work).await {
                        Ok(Ok(s)) => Ok(s),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("timed out".to_string()),
                    }
                }),
            ));
        }
        let mut out = Vec::new();
        for (name, region, t) in tasks {
            let r = t.await.unwrap_or_else(|e| Err(e.to_string()));
            out.push((name, region, r));
        }
        out
    });
    if args.json {
        let nodes: Vec<serde_json::Value> = results
            .iter()
            .map(|(name, region, r)| match r {
                Ok(s) => serde_json::json!({
                    "node": name, "region": region, "up": true,
                    "incarnation": format!("{:016x}", s.incarnation),
                    "uptime_ms": s.uptime_ms, "log_bytes": s.log_bytes,
                    "writes": s.deltas_originated, "applied": s.deltas_applied,
                    "peers": s.peers.iter().map(|p| serde_json::json!({
                        "node": p.node, "region": p.region, "connected": p.connected,
                        "lag_deltas": p.lag_deltas, "lag_ms": p.lag_ms,
                        "clock_offset_ms": p.clock_offset_ms, "deferred_deltas": p.deferred_deltas,
                    })).collect::<Vec<_>>(),
                }),
                Err(e) => {
                    serde_json::json!({"node": name, "region": region, "up": false, "error": e})
                }
            })
            .collect();
        println!("{}", serde_json::json!({ "nodes": nodes }));
    } else {
        print!("{}", render(&results));
    }
    if results.iter().all(|(_, _, r)| r.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
