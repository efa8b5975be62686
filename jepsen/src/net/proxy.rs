//! The user-space UDP relay backend (no root needed).
//!
//! For every directed node pair (X, Y) there is a relay: a *listen* socket,
//! whose address is what X's config names as peer Y, and an *upstream*
//! socket connected to Y's real peer address. Datagrams from X to the listen
//! socket go to Y through the upstream socket (link X→Y); Y's replies to the
//! upstream socket go back to X's last-seen address (link Y→X). So link X→Y
//! is carried by relay (X,Y) forwards and relay (Y,X) backwards, and a cut or
//! delay of X→Y is applied in both places.
//!
//! Costs (from the notes): one extra hop and copy per datagram; Y sees the
//! relay's address, not X's (QUIC copes as with a NAT; node identity comes
//! from certificates, never addresses); client traffic is never relayed.
//! Limits: [`MAX_DELAYED_PACKETS`] in flight on delay timers (more are
//! dropped), datagrams up to [`MAX_DATAGRAM_BYTES`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{CutSet, Delay, NetFaults, NodeAddr};
use crate::grudge::Grudge;

/// Datagrams on delay timers at once; past it packets are dropped, as by a
/// full router queue, instead of queueing without bound.
pub const MAX_DELAYED_PACKETS: usize = 65_536;
/// Largest datagram relayed (the UDP maximum).
pub const MAX_DATAGRAM_BYTES: usize = 65_535;

#[derive(Debug)]
struct State {
    cuts: CutSet,
    delays: BTreeMap<(String, String), Delay>,
    rng: ChaCha8Rng,
}

impl State {
    /// None = drop; Some(d) = deliver after d.
    fn verdict(&mut self, from: &str, to: &str) -> Option<std::time::Duration> {
        if self.cuts.is_cut(from, to) {
            return None;
        }
        let d = self
            .delays
            .get(&(from.to_string(), to.to_string()))
            .copied()
            .unwrap_or(Delay::ZERO);
        Some(d.sample(&mut self.rng))
    }
}

/// The proxy backend: relays for every directed pair.
#[derive(Debug)]
pub struct ProxyNet {
    state: Arc<Mutex<State>>,
    addrs: BTreeMap<(String, String), SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

async fn send_later(
    sock: Arc<UdpSocket>,
    buf: Vec<u8>,
    to: Option<SocketAddr>,
    delay: std::time::Duration,
    permits: &Arc<Semaphore>,
) {
    if delay.is_zero() {
        let _ = match to {
            Some(a) => sock.send_to(&buf, a).await,
            None => sock.send(&buf).await,
        };
        return;
    }
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        return; // too many in flight: drop
    };
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = match to {
            Some(a) => sock.send_to(&buf, a).await,
            None => sock.send(&buf).await,
        };
        drop(permit);
    });
}

impl ProxyNet {
    /// Binds a relay for every directed pair of `nodes` on `bind_ip` (any
    /// free port) and starts relaying. Must run inside a tokio runtime.
    pub async fn start(
        nodes: &[NodeAddr],
        bind_ip: IpAddr,
        delays: BTreeMap<(String, String), Delay>,
        seed: u64,
    ) -> anyhow::Result<ProxyNet> {
        let state = Arc::new(Mutex::new(State {
            cuts: CutSet::default(),
            delays,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }));
        let permits = Arc::new(Semaphore::new(MAX_DELAYED_PACKETS));
        let mut addrs = BTreeMap::new();
        let mut tasks = Vec::new();
        for x in nodes {
            for y in nodes {
                if x.name == y.name {
                    continue;
                }
                let listen = Arc::new(
                    UdpSocket::bind((bind_ip, 0))
                        .await
                        .context("binding a relay socket")?,
                );
                let upstream = Arc::new(UdpSocket::bind((bind_ip, 0)).await?);
                upstream
                    .connect(SocketAddr::from((y.ip, y.peer_port)))
                    .await?;
                addrs.insert((x.name.clone(), y.name.clone()), listen.local_addr()?);
                let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));

                // X -> Y
                let (st, l, u, c, p) = (
                    state.clone(),
                    listen.clone(),
                    upstream.clone(),
                    client.clone(),
                    permits.clone(),
                );
                let (xn, yn) = (x.name.clone(), y.name.clone());
                tasks.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
                    loop {
                        let Ok((n, from)) = l.recv_from(&mut buf).await else {
                            continue;
                        };
                        *c.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                        let v = st
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .verdict(&xn, &yn);
                        if let Some(d) = v {
                            send_later(u.clone(), buf[..n].to_vec(), None, d, &p).await;
                        }
                    }
                }));
                // Y -> X (replies)
                let (st, l, u, c, p) = (
                    state.clone(),
                    listen.clone(),
                    upstream.clone(),
                    client.clone(),
                    permits.clone(),
                );
                let (xn, yn) = (x.name.clone(), y.name.clone());
                tasks.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
                    loop {
                        // recv() errors (e.g. ICMP refused while Y is down) are transient.
                        let Ok(n) = u.recv(&mut buf).await else {
                            continue;
                        };
                        let to = *c.lock().unwrap_or_else(|e| e.into_inner());
                        let Some(to) = to else { continue };
                        let v = st
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .verdict(&yn, &xn);
                        if let Some(d) = v {
                            send_later(l.clone(), buf[..n].to_vec(), Some(to), d, &p).await;
                        }
                    }
                }));
            }
        }
        Ok(ProxyNet {
            state,
            addrs,
            tasks,
        })
    }

    /// The address node `from` must use to reach peer `to`.
    pub fn addr(&self, from: &str, to: &str) -> Option<SocketAddr> {
        self.addrs.get(&(from.to_string(), to.to_string())).copied()
    }

    /// Every relay address, `(from, to) → address`.
    pub fn addrs(&self) -> &BTreeMap<(String, String), SocketAddr> {
        &self.addrs
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl NetFaults for ProxyNet {
    fn backend(&self) -> &'static str {
        "proxy"
    }

    fn partition(&self, grudge: &Grudge) -> anyhow::Result<()> {
        self.with(|s| s.cuts.grudge = grudge.clone());
        Ok(())
    }

    fn cut(&self, from: &str, to: &str) -> anyhow::Result<()> {
        self.with(|s| s.cuts.extra.insert((from.to_string(), to.to_string())));
        Ok(())
    }

    fn heal(&self) -> anyhow::Result<()> {
        self.with(|s| s.cuts = CutSet::default());
        Ok(())
    }

    fn set_delay(&self, from: &str, to: &str, delay: Delay) -> anyhow::Result<()> {
        self.with(|s| s.delays.insert((from.to_string(), to.to_string()), delay));
        Ok(())
    }

    fn healthy(&self) -> bool {
        self.tasks.iter().all(|t| !t.is_finished())
    }
}

impl Drop for ProxyNet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::net::{Ipv4Addr, UdpSocket as StdUdp};
    use std::time::{Duration, Instant};

    type Pairs = BTreeSet<(String, String)>;

    struct Fixture {
        rt: tokio::runtime::Runtime,
        net: Option<ProxyNet>,
        nodes: Vec<NodeAddr>,
        socks: Vec<StdUdp>,
    }

    fn fixture(n: usize) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let socks: Vec<StdUdp> = (0..n)
            .map(|_| StdUdp::bind("127.0.0.1:0").unwrap())
            .collect();
        let nodes: Vec<NodeAddr> = socks
            .iter()
            .enumerate()
            .map(|(i, s)| NodeAddr {
                name: format!("n{}", i + 1),
                region: "r1".into(),
                ip: Ipv4Addr::LOCALHOST,
                peer_port: s.local_addr().unwrap().port(),
            })
            .collect();
        let net = rt
            .block_on(ProxyNet::start(
                &nodes,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                BTreeMap::new(),
                3,
            ))
            .unwrap();
        Fixture {
            rt,
            net: Some(net),
            nodes,
            socks,
        }
    }

    impl Fixture {
        fn net(&self) -> &ProxyNet {
            self.net.as_ref().unwrap()
        }
        /// Every node sends to every other through its relay; the receiver
        /// answers each datagram once, back through the relay. Returns the
        /// delivered requests and replies as (from, to) pairs.
        fn exchange(&self) -> (Pairs, Pairs) {
            let net = self.net();
            for (i, s) in self.socks.iter().enumerate() {
                for (j, n) in self.nodes.iter().enumerate() {
                    if i != j {
                        let to = net.addr(&self.nodes[i].name, &n.name).unwrap();
                        s.send_to(
                            format!("req {} {}", self.nodes[i].name, n.name).as_bytes(),
                            to,
                        )
                        .unwrap();
                    }
                }
            }
            let mut reqs = BTreeSet::new();
            let mut reps = BTreeSet::new();
            let mut buf = [0u8; 64];
            // Two rounds: requests (answered), then replies.
            for _ in 0..2 {
                for s in &self.socks {
                    s.set_read_timeout(Some(Duration::from_millis(300)))
                        .unwrap();
                    while let Ok((n, from)) = s.recv_from(&mut buf) {
                        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let parts: Vec<&str> = m.split(' ').collect();
                        if parts[0] == "req" {
                            reqs.insert((parts[1].to_string(), parts[2].to_string()));
                            s.send_to(format!("rep {} {}", parts[2], parts[1]).as_bytes(), from)
                                .unwrap();
                        } else {
                            reps.insert((parts[1].to_string(), parts[2].to_string()));
                        }
                    }
                }
            }
            (reqs, reps)
        }
        fn all_pairs(&self) -> BTreeSet<(String, String)> {
            let mut s = BTreeSet::new();
            for a in &self.nodes {
                for b in &self.nodes {
                    if a.name != b.name {
                        s.insert((a.name.clone(), b.name.clone()));
                    }
                }
            }
            s
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _g = self.rt.enter();
            self.net.take();
        }
    }

    #[test]
    fn relays_deliver_requests_and_replies() {
        let f = fixture(3);
        let (reqs, reps) = f.exchange();
        assert_eq!(reqs, f.all_pairs());
        assert_eq!(reps, f.all_pairs());
        assert!(f.net().healthy());
    }

    #[test]
    fn partition_drops_exactly_the_grudge_pairs_in_both_relays() {
        let f = fixture(3);
        // One-way: n2 drops n1. n1->n2 requests die; n2->n1 requests pass,
        // and n1's replies to them (link n1->n2, carried backwards by relay
        // (n2,n1)) die too.
        let mut g = Grudge::default();
        g.0.insert("n2".into(), ["n1".to_string()].into_iter().collect());
        f.net().partition(&g).unwrap();
        let (reqs, reps) = f.exchange();
        let expected: BTreeSet<(String, String)> = f
            .all_pairs()
            .into_iter()
            .filter(|(s, d)| !g.drops(d, s))
            .collect();
        assert_eq!(reqs, expected);
        // A reply b->a exists iff the request a->b arrived and b->a is not cut.
        let expected_reps: BTreeSet<(String, String)> = expected
            .iter()
            .map(|(a, b)| (b.clone(), a.clone()))
            .filter(|(s, d)| !g.drops(d, s))
            .collect();
        assert_eq!(reps, expected_reps);
        assert!(!reps.contains(&("n1".to_string(), "n2".to_string())));

        // A complete grudge isolating n3, then an extra cut n1->n2.
        let g =
            crate::grudge::complete_grudge(&[vec!["n1".into(), "n2".into()], vec!["n3".into()]]);
        f.net().partition(&g).unwrap();
        f.net().cut("n1", "n2").unwrap();
        let (reqs, _) = f.exchange();
        let expected: BTreeSet<(String, String)> =
            [("n2".to_string(), "n1".to_string())].into_iter().collect();
        assert_eq!(reqs, expected);

        f.net().heal().unwrap();
        let (reqs, reps) = f.exchange();
        assert_eq!(reqs, f.all_pairs());
        assert_eq!(reps, f.all_pairs());
    }

    #[test]
    fn delay_is_at_least_the_configured_time() {
        let f = fixture(2);
        f.net().set_delay("n1", "n2", Delay::ms(150, 30)).unwrap();
        let to = f.net().addr("n1", "n2").unwrap();
        let mut buf = [0u8; 8];
        f.socks[1]
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        f.socks[0]
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for _ in 0..3 {
            let t = Instant::now();
            f.socks[0].send_to(b"x", to).unwrap();
            let (_, from) = f.socks[1].recv_from(&mut buf).unwrap();
            assert!(
                t.elapsed() >= Duration::from_millis(120),
                "{:?}",
                t.elapsed()
            );
            // Reply path (n2 -> n1) has no delay configured, but still works.
            f.socks[1].send_to(b"y", from).unwrap();
            f.socks[0].recv_from(&mut buf).unwrap();
        }
        let _ = &f.rt;
    }
}
