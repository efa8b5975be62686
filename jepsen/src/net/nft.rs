//! The nftables backend (root, inside the run's network namespace).
//!
//! * Partitions: table `ip meridian_jepsen`, chain `partition` on the input
//!   hook at priority −150 (before iptables' filter table, so a dropped packet
//!   never reaches the delay queue). Every change is one `nft -f` transaction
//!   (`flush chain` + one `ip saddr S ip daddr D udp dport P drop` rule per
//!   cut link), so a partition switches atomically — unlike Jepsen's per-node
//!   iptables calls. Heal = flush.
//! * Delays: an iptables NFQUEUE rule per directed node pair (all of them, so
//!   any pair's delay can change at run time) feeding [`NfqDaemon`].
//!
//! Only the destination's *peer* port is matched: client traffic to a node's
//! client port is never cut or delayed (Maelstrom gives clients zero latency:
//! added latency tends to hide anomalies). Nodes must bind their peer
//! endpoint to their own 127.0.1.N address so that source addresses identify
//! them.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context as _, bail};

use super::netns::{Netns, run};
use super::nfqueue::{DelayTable, NfqDaemon};
use super::{CutSet, Delay, NetFaults, NodeAddr};
use crate::grudge::Grudge;

pub const TABLE: &str = "meridian_jepsen";
pub const CHAIN: &str = "partition";

/// The nft backend.
#[derive(Debug)]
pub struct NftNet {
    ns_name: String,
    nodes: Vec<NodeAddr>,
    cuts: Mutex<CutSet>,
    delays: DelayTable,
    daemon: Option<NfqDaemon>,
}

fn nft_script(cmds: &str, ns_name: &str) -> anyhow::Result<()> {
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns_name, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(cmds.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f failed: {}\n--- script ---\n{cmds}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl NftNet {
    /// Sets up the table, the NFQUEUE rules and the delay daemon (queue
    /// `queue_num`) inside `ns`, with the given initial per-pair delays.
    pub fn setup(
        ns: &Netns,
        nodes: Vec<NodeAddr>,
        queue_num: u16,
        delays: &std::collections::BTreeMap<(String, String), Delay>,
        seed: u64,
    ) -> anyhow::Result<NftNet> {
        nft_script(
            &format!(
                "add table ip {TABLE}\n\
                 add chain ip {TABLE} {CHAIN} {{ type filter hook input priority -150; policy accept; }}\n\
                 flush chain ip {TABLE} {CHAIN}\n"
            ),
            ns.name(),
        )?;
        let table: DelayTable = Arc::new(RwLock::new(HashMap::new()));
        let net = NftNet {
            ns_name: ns.name().to_string(),
            nodes,
            cuts: Mutex::new(CutSet::default()),
            delays: table.clone(),
            daemon: None,
        };
        for ((a, b), d) in delays {
            net.set_delay(a, b, *d)?;
        }
        // Bind the queue before any packet is steered to it.
        let daemon = NfqDaemon::start(ns.path(), queue_num, table, seed)?;
        for a in &net.nodes {
            for b in &net.nodes {
                if a.name == b.name {
                    continue;
                }
                run(ns.command("iptables").args([
                    "-w",
                    "-A",
                    "INPUT",
                    "-s",
                    &format!("{}/32", a.ip),
                    "-d",
                    &format!("{}/32", b.ip),
                    "-p",
                    "udp",
                    "--dport",
                    &b.peer_port.to_string(),
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    &queue_num.to_string(),
                ]))?;
            }
        }
        Ok(NftNet {
            daemon: Some(daemon),
            ..net
        })
    }

    fn node(&self, name: &str) -> anyhow::Result<&NodeAddr> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("unknown node {name}"))
    }

    /// The rules for a set of cuts, as one transaction.
    fn script(&self, cuts: &CutSet) -> anyhow::Result<String> {
        let mut s = format!("flush chain ip {TABLE} {CHAIN}\n");
        for (src, dst) in cuts.pairs() {
            let (a, b) = (self.node(&src)?, self.node(&dst)?);
            s.push_str(&format!(
                "add rule ip {TABLE} {CHAIN} ip saddr {} ip daddr {} udp dport {} drop\n",
                a.ip, b.ip, b.peer_port
            ));
        }
        Ok(s)
    }

    fn apply(&self, cuts: CutSet) -> anyhow::Result<()> {
        let script = self.script(&cuts)?;
        nft_script(&script, &self.ns_name)?;
        *self.cuts.lock().unwrap_or_else(|e| e.into_inner()) = cuts;
        Ok(())
    }

    /// The current rules (`nft list chain`), for diagnostics and tests.
    pub fn list(&self) -> anyhow::Result<String> {
        run(std::process::Command::new("ip").args([
            "netns",
            "exec",
            &self.ns_name,
            "nft",
            "list",
            "chain",
            "ip",
            TABLE,
            CHAIN,
        ]))
    }

    fn current(&self) -> CutSet {
        self.cuts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl NetFaults for NftNet {
    fn backend(&self) -> &'static str {
        "nft"
    }

    fn partition(&self, grudge: &Grudge) -> anyhow::Result<()> {
        let mut c = self.current();
        c.grudge = grudge.clone();
        self.apply(c)
    }

    fn cut(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let mut c = self.current();
        c.extra.insert((from.to_string(), to.to_string()));
        self.apply(c)
    }

    fn heal(&self) -> anyhow::Result<()> {
        self.apply(CutSet::default())
    }

    fn set_delay(&self, from: &str, to: &str, delay: Delay) -> anyhow::Result<()> {
        let key: (Ipv4Addr, Ipv4Addr) = (self.node(from)?.ip, self.node(to)?.ip);
        let mut t = self
            .delays
            .write()
            .map_err(|_| anyhow::anyhow!("delay table poisoned"))?;
        if delay.is_zero() {
            t.remove(&key);
        } else {
            t.insert(key, delay);
        }
        Ok(())
    }

    fn healthy(&self) -> bool {
        self.daemon.as_ref().is_some_and(NfqDaemon::alive)
    }
}

#[cfg(test)]
mod tests {
    //! These tests need root, `ip`, `nft` and `iptables`; without them they
    //! print why and return (skip), they do not fail.
    use super::*;
    use crate::net::nft_unavailable_reason;
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};

    const PEER_PORT: u16 = 17_000;
    const CLIENT_PORT: u16 = 18_000;

    fn skip() -> bool {
        if let Some(r) = nft_unavailable_reason() {
            eprintln!("SKIP: {r}");
            return true;
        }
        false
    }

    fn nodes() -> Vec<NodeAddr> {
        (1..=3u8)
            .map(|i| NodeAddr {
                name: format!("n{i}"),
                region: "r1".into(),
                ip: Ipv4Addr::new(127, 0, 1, i),
                peer_port: PEER_PORT,
            })
            .collect()
    }

    /// Sends one datagram per ordered pair and returns the pairs delivered
    /// (waiting a fixed grace period for stragglers).
    fn delivered(socks: &[UdpSocket], ns: &[NodeAddr]) -> BTreeSet<(String, String)> {
        for (i, s) in socks.iter().enumerate() {
            for (j, n) in ns.iter().enumerate() {
                if i != j {
                    let to = SocketAddr::from((n.ip, n.peer_port));
                    s.send_to(format!("{}>{}", ns[i].name, n.name).as_bytes(), to)
                        .unwrap();
                }
            }
        }
        let mut got = BTreeSet::new();
        let mut buf = [0u8; 64];
        for s in socks {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let (a, b) = m.split_once('>').unwrap();
                got.insert((a.to_string(), b.to_string()));
            }
        }
        got
    }

    fn all_pairs(ns: &[NodeAddr]) -> BTreeSet<(String, String)> {
        let mut s = BTreeSet::new();
        for a in ns {
            for b in ns {
                if a.name != b.name {
                    s.insert((a.name.clone(), b.name.clone()));
                }
            }
        }
        s
    }

    #[test]
    fn partitions_drop_exactly_the_grudge_and_heal_restores() {
        if skip() {
            return;
        }
        let ns = Netns::create(&format!("mj-t{}-part", std::process::id())).unwrap();
        let path = ns.path();
        let net = Arc::new(NftNet::setup(&ns, nodes(), 11, &BTreeMap::new(), 1).unwrap());
        let n2 = net.clone();
        ns.spawn_inside(move || {
            let ns_ = nodes();
            let socks: Vec<UdpSocket> = ns_
                .iter()
                .map(|n| UdpSocket::bind((n.ip, n.peer_port)).unwrap())
                .collect();
            let client = UdpSocket::bind((Ipv4Addr::new(127, 0, 1, 2), CLIENT_PORT)).unwrap();
            assert_eq!(delivered(&socks, &ns_), all_pairs(&ns_));

            // One-way: n2 drops n1; plus n3 isolated both ways... as a grudge.
            let mut g = Grudge::default();
            g.0.insert("n2".into(), ["n1".to_string()].into_iter().collect());
            g.0.insert(
                "n3".into(),
                ["n1".to_string(), "n2".to_string()].into_iter().collect(),
            );
            g.0.insert("n1".into(), ["n3".to_string()].into_iter().collect());
            n2.partition(&g).unwrap();
            let expected: BTreeSet<(String, String)> = all_pairs(&ns_)
                .into_iter()
                .filter(|(s, d)| !g.drops(d, s))
                .collect();
            assert_eq!(delivered(&socks, &ns_), expected);
            assert!(n2.list().unwrap().contains("drop"));

            // Client traffic (another port) is not affected.
            socks[0]
                .send_to(b"client", (Ipv4Addr::new(127, 0, 1, 2), CLIENT_PORT))
                .unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 16];
            assert_eq!(client.recv_from(&mut buf).unwrap().0, 6);

            // A new partition replaces the old one; an extra cut adds to it.
            let mut g2 = Grudge::default();
            g2.0.insert("n1".into(), ["n2".to_string()].into_iter().collect());
            n2.partition(&g2).unwrap();
            n2.cut("n3", "n2").unwrap();
            let expected: BTreeSet<(String, String)> = all_pairs(&ns_)
                .into_iter()
                .filter(|p| *p != ("n2".into(), "n1".into()) && *p != ("n3".into(), "n2".into()))
                .collect();
            assert_eq!(delivered(&socks, &ns_), expected);

            n2.heal().unwrap();
            assert_eq!(delivered(&socks, &ns_), all_pairs(&ns_));
            assert!(n2.healthy());
            Ok(())
        })
        .unwrap();
        drop(net);
        ns.delete().unwrap();
        assert!(!path.exists(), "namespace removed");
    }

    #[test]
    fn delay_holds_packets_for_at_least_the_configured_time() {
        if skip() {
            return;
        }
        let ns = Netns::create(&format!("mj-t{}-delay", std::process::id())).unwrap();
        let path = ns.path();
        let mut initial = BTreeMap::new();
        initial.insert(("n1".to_string(), "n2".to_string()), Delay::ms(120, 0));
        let net = Arc::new(NftNet::setup(&ns, nodes(), 12, &initial, 2).unwrap());
        let n2 = net.clone();
        ns.spawn_inside(move || {
            let ns_ = nodes();
            let a = UdpSocket::bind((ns_[0].ip, PEER_PORT)).unwrap();
            let b = UdpSocket::bind((ns_[1].ip, PEER_PORT)).unwrap();
            b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 8];
            for _ in 0..3 {
                let t = Instant::now();
                a.send_to(b"x", (ns_[1].ip, PEER_PORT)).unwrap();
                b.recv_from(&mut buf).unwrap();
                assert!(
                    t.elapsed() >= Duration::from_millis(120),
                    "{:?}",
                    t.elapsed()
                );
            }
            // Change at run time: 200 ms with 50 ms jitter -> at least 150 ms.
            n2.set_delay("n1", "n2", Delay::ms(200, 50)).unwrap();
            let t = Instant::now();
            a.send_to(b"y", (ns_[1].ip, PEER_PORT)).unwrap();
            b.recv_from(&mut buf).unwrap();
            assert!(
                t.elapsed() >= Duration::from_millis(150),
                "{:?}",
                t.elapsed()
            );
            // The reverse direction still gets through (no delay configured).
            b.send_to(b"z", (ns_[0].ip, PEER_PORT)).unwrap();
            a.recv_from(&mut buf).unwrap();
            assert!(n2.healthy());
            Ok(())
        })
        .unwrap();
        drop(net);
        drop(ns);
        assert!(!path.exists(), "namespace removed by Drop");
    }

    #[test]
    fn namespace_is_removed_even_when_the_run_inside_panics() {
        if skip() {
            return;
        }
        let ns = Netns::create(&format!("mj-t{}-panic", std::process::id())).unwrap();
        let path = ns.path();
        let r: anyhow::Result<()> = ns.spawn_inside(|| panic!("the test blew up"));
        assert!(format!("{:#}", r.unwrap_err()).contains("blew up"));
        drop(ns);
        assert!(!path.exists());
    }
}
