//! Network faults between nodes, behind one trait ([`NetFaults`]) with two
//! backends:
//!
//! * [`nft`]: the whole run lives in a private network namespace the harness
//!   creates ([`netns::Netns`]); nodes get `127.0.1.N`. A partition is one
//!   atomic `nft -f` transaction that flushes and refills a chain on the
//!   *input* hook (dropping on the receiver: an output drop would hand the
//!   sender `EPERM`, which real partitions never do), matching source address,
//!   destination address and the destination's peer port, so client traffic
//!   is never affected. Per-pair delay (the always-on WAN latency matrix) is
//!   done by an NFQUEUE daemon ([`nfqueue`]), fail-closed.
//! * [`proxy`]: no root needed. A user-space UDP relay per directed node pair;
//!   node X dials peer Y at the relay's address, which forwards to Y's real
//!   peer port and relays replies. Cuts and delays are per directed link.
//!
//! Semantics common to both (Jepsen's grudges): `partition(g)` replaces the
//! current partition, dropping every packet from `src` to `dst` for each
//! `dst → srcs` of `g`; `cut(a, b)` additionally drops `a → b`; `heal()`
//! removes every partition and cut (delays stay: they model the WAN).

pub mod netns;
pub mod nfqueue;
pub mod nft;
pub mod proxy;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use crate::grudge::Grudge;

/// A node as the network layer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    pub name: String,
    pub region: String,
    pub ip: Ipv4Addr,
    /// The node's QUIC peer port (node↔node traffic only).
    pub peer_port: u16,
}

/// One-way delay with uniform jitter: each packet waits
/// `mean ± U[0, jitter]` (never below zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Delay {
    pub mean: Duration,
    pub jitter: Duration,
}

impl Delay {
    pub const ZERO: Delay = Delay {
        mean: Duration::ZERO,
        jitter: Duration::ZERO,
    };

    pub fn ms(mean: u64, jitter: u64) -> Delay {
        Delay {
            mean: Duration::from_millis(mean),
            jitter: Duration::from_millis(jitter),
        }
    }

    pub fn is_zero(&self) -> bool {
        self.mean.is_zero() && self.jitter.is_zero()
    }

    /// One sample.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        if self.jitter.is_zero() {
            return self.mean;
        }
        let j = self.jitter.as_nanos() as i128;
        let off = rng.random_range(-j..=j);
        let ns = (self.mean.as_nanos() as i128 + off).max(0);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// The network fault interface the nemeses use.
pub trait NetFaults: Send + Sync {
    /// `nft` or `proxy`.
    fn backend(&self) -> &'static str;
    /// Replaces the current partition with `grudge` (atomically).
    fn partition(&self, grudge: &Grudge) -> anyhow::Result<()>;
    /// Drops every packet from `from` to `to`, on top of the partition.
    fn cut(&self, from: &str, to: &str) -> anyhow::Result<()>;
    /// Removes every partition and cut.
    fn heal(&self) -> anyhow::Result<()>;
    /// Sets the one-way delay of packets from `from` to `to`.
    fn set_delay(&self, from: &str, to: &str, delay: Delay) -> anyhow::Result<()>;
    /// Whether the backend is working (e.g. the NFQUEUE daemon is alive).
    fn healthy(&self) -> bool {
        true
    }
}

/// The links currently cut: partition edges plus extra cuts, as
/// `(src, dst)` pairs. Shared bookkeeping for both backends.
#[derive(Clone, Debug, Default)]
pub struct CutSet {
    pub grudge: Grudge,
    pub extra: std::collections::BTreeSet<(String, String)>,
}

impl CutSet {
    pub fn pairs(&self) -> std::collections::BTreeSet<(String, String)> {
        let mut s: std::collections::BTreeSet<(String, String)> =
            self.grudge.directed_pairs().into_iter().collect();
        s.extend(self.extra.iter().cloned());
        s
    }
    pub fn is_cut(&self, from: &str, to: &str) -> bool {
        self.grudge.drops(to, from) || self.extra.contains(&(from.to_string(), to.to_string()))
    }
}

/// The always-on WAN latency between regions: one-way delay for a pair of
/// regions. Same region: [`INTRA_REGION_DELAY`]; regions i and j (in
/// `--regions` order): [`INTER_REGION_BASE_MS`] · |i − j| with 20 % jitter,
/// so a three-region line is 20 ms / 40 ms apart.
pub fn wan_delay(regions: &[String], a: &str, b: &str) -> Delay {
    let pos = |r: &str| regions.iter().position(|x| x == r);
    match (pos(a), pos(b)) {
        (Some(i), Some(j)) if i != j => {
            let ms = INTER_REGION_BASE_MS * i.abs_diff(j) as u64;
            Delay::ms(ms, ms / 5)
        }
        _ => INTRA_REGION_DELAY,
    }
}

/// One-way delay between regions next to each other: a continental WAN hop.
pub const INTER_REGION_BASE_MS: u64 = 20;
/// Within a region: no added delay; loopback is already sub-millisecond,
/// like a data centre's network.
pub const INTRA_REGION_DELAY: Delay = Delay::ZERO;

/// The WAN matrix for every directed node pair.
pub fn wan_matrix(nodes: &[NodeAddr], regions: &[String]) -> BTreeMap<(String, String), Delay> {
    let mut m = BTreeMap::new();
    for a in nodes {
        for b in nodes {
            if a.name != b.name {
                m.insert(
                    (a.name.clone(), b.name.clone()),
                    wan_delay(regions, &a.region, &b.region),
                );
            }
        }
    }
    m
}

/// `--net`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    Auto,
    Nft,
    Proxy,
}

impl std::str::FromStr for NetMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(NetMode::Auto),
            "nft" => Ok(NetMode::Nft),
            "proxy" => Ok(NetMode::Proxy),
            o => Err(format!("unknown net mode {o:?} (auto|nft|proxy)")),
        }
    }
}

/// Whether a program is on `PATH` (or an absolute path that exists).
pub fn have_tool(name: &str) -> bool {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(name).is_file())
}

/// Why the nft backend cannot be used here, if it cannot (one line).
pub fn nft_unavailable_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the nft backend needs root".into());
    }
    let missing: Vec<&str> = ["ip", "nft", "iptables"]
        .into_iter()
        .filter(|t| !have_tool(t))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "the nft backend needs {} (apt-get install -y nftables iptables iproute2)",
            missing.join(", ")
        ));
    }
    None
}

/// Resolves `--net`: `auto` picks nft when running as root with `ip`, `nft`
/// and `iptables` present, else proxy (saying why in one line). An explicit
/// `nft` that cannot work is an error.
pub fn resolve(mode: NetMode) -> Result<(NetMode, Option<String>), String> {
    match mode {
        NetMode::Proxy => Ok((NetMode::Proxy, None)),
        NetMode::Nft => match nft_unavailable_reason() {
            None => Ok((NetMode::Nft, None)),
            Some(r) => Err(r),
        },
        NetMode::Auto => match nft_unavailable_reason() {
            None => Ok((NetMode::Nft, None)),
            Some(r) => Ok((
                NetMode::Proxy,
                Some(format!("{r}; using the proxy backend")),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delay_samples_stay_within_jitter() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let d = Delay::ms(10, 2);
        for _ in 0..1000 {
            let s = d.sample(&mut rng);
            assert!(s >= Duration::from_millis(8) && s <= Duration::from_millis(12));
        }
        let z = Delay::ms(1, 5);
        assert!((0..1000).all(|_| z.sample(&mut rng) <= Duration::from_millis(6)));
        assert_eq!(Delay::ZERO.sample(&mut rng), Duration::ZERO);
    }

    #[test]
    fn wan_matrix_by_region_distance() {
        let regions: Vec<String> = vec!["us".into(), "eu".into(), "ap".into()];
        assert_eq!(wan_delay(&regions, "us", "us"), Delay::ZERO);
        assert_eq!(wan_delay(&regions, "us", "eu"), Delay::ms(20, 4));
        assert_eq!(wan_delay(&regions, "ap", "us"), Delay::ms(40, 8));
        let nodes: Vec<NodeAddr> = ["us", "eu"]
            .iter()
            .enumerate()
            .map(|(i, r)| NodeAddr {
                name: format!("n{}", i + 1),
                region: r.to_string(),
                ip: Ipv4Addr::new(127, 0, 1, i as u8 + 1),
                peer_port: 7000,
            })
            .collect();
        let m = wan_matrix(&nodes, &regions);
        assert_eq!(m.len(), 2);
        assert_eq!(m[&("n1".to_string(), "n2".to_string())], Delay::ms(20, 4));
    }

    #[test]
    fn cut_set_combines_grudge_and_extra_cuts() {
        let mut c = CutSet::default();
        c.grudge
            .0
            .insert("n2".into(), ["n1".to_string()].into_iter().collect());
        c.extra.insert(("n3".into(), "n1".into()));
        assert!(c.is_cut("n1", "n2"));
        assert!(!c.is_cut("n2", "n1"));
        assert!(c.is_cut("n3", "n1"));
        assert_eq!(c.pairs().len(), 2);
    }

    #[test]
    fn explicit_modes_parse() {
        assert_eq!("nft".parse::<NetMode>().unwrap(), NetMode::Nft);
        assert!("iptables".parse::<NetMode>().is_err());
        assert_eq!(resolve(NetMode::Proxy).unwrap(), (NetMode::Proxy, None));
    }
}
