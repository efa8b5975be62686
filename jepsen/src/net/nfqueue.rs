//! The NFQUEUE delay daemon: holds node↔node packets for their pair's delay.
//!
//! `iptables -A INPUT -s A -d B -p udp --dport P_B -j NFQUEUE --queue-num Q`
//! sends every node-to-node packet to this daemon (the notes verified that
//! iptables' NFQUEUE target works here while nft's native `queue` does not).
//! The daemon looks up the (source, destination) address pair, draws the
//! delay (mean ± jitter), keeps the packet in a timer heap and accepts it when
//! due. Verdicts may be issued out of order, so jitter reorders packets, as a
//! WAN does.
//!
//! **Fail-closed**: the rules have no `--queue-bypass` and fail-open is off,
//! so if the daemon dies or its queue overflows, packets are dropped instead
//! of silently losing the WAN latency; [`NfqDaemon::alive`] reports it and the
//! harness checks it. Limits: [`MAX_HELD_PACKETS`] held at once (more are
//! dropped and counted), kernel queue [`QUEUE_MAX_LEN`].

use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Delay;

/// Packets held for delay at once: 200 ms of a few thousand packets/s
/// between five nodes fits with a wide margin; past it, drop (as a full
/// router queue would) rather than grow without bound.
pub const MAX_HELD_PACKETS: usize = 65_536;
/// Kernel-side queue length for packets awaiting a verdict.
pub const QUEUE_MAX_LEN: u32 = 8_192;
/// Bytes of each packet copied to user space: the IPv4 header is enough
/// (only addresses are read; the verdict needs just the packet id).
const COPY_RANGE: u16 = 64;
/// Longest sleep between polls: bounds the error on short delays.
const POLL: Duration = Duration::from_micros(500);

/// Delay per (source, destination) address.
pub type DelayTable = Arc<RwLock<HashMap<(Ipv4Addr, Ipv4Addr), Delay>>>;

/// A running daemon thread.
#[derive(Debug)]
pub struct NfqDaemon {
    stop: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

struct Held {
    due: Instant,
    seq: u64,
    msg: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Min-heap on (due, seq).
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

fn addrs(payload: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if payload.len() < 20 || payload[0] >> 4 != 4 {
        return None;
    }
    let src = Ipv4Addr::new(payload[12], payload[13], payload[14], payload[15]);
    let dst = Ipv4Addr::new(payload[16], payload[17], payload[18], payload[19]);
    Some((src, dst))
}

impl NfqDaemon {
    /// Starts the daemon on a thread inside the namespace at `netns_path`,
    /// bound to queue `queue_num`. Returns once the queue is bound.
    pub fn start(
        netns_path: PathBuf,
        queue_num: u16,
        table: DelayTable,
        seed: u64,
    ) -> anyhow::Result<NfqDaemon> {
        let stop = Arc::new(AtomicBool::new(false));
        let alive = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (s, a, d) = (stop.clone(), alive.clone(), dropped.clone());
        let handle = std::thread::Builder::new()
            .name("nfqueue-delay".into())
            .spawn(move || {
                let setup = || -> anyhow::Result<nfq::Queue> {
                    let fd = std::fs::File::open(&netns_path)?;
                    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
                    let mut q = nfq::Queue::open().context("opening NFQUEUE")?;
                    q.bind(queue_num).context("binding NFQUEUE")?;
                    q.set_copy_range(queue_num, COPY_RANGE)?;
                    q.set_fail_open(queue_num, false)?;
                    q.set_queue_max_len(queue_num, QUEUE_MAX_LEN)?;
                    q.set_nonblocking(true);
                    Ok(q)
                };
                let mut q = match setup() {
                    Ok(q) => q,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                a.store(true, Ordering::SeqCst);
                let _ = ready_tx.send(Ok(()));
                if let Err(e) = run_loop(&mut q, &table, &s, &d, seed) {
                    eprintln!("nfqueue delay daemon stopped: {e:#} (node traffic is now dropped)");
                }
                a.store(false, Ordering::SeqCst);
            })?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(NfqDaemon {
                stop,
                alive,
                dropped,
                handle: Some(handle),
            }),
            Ok(Err(e)) => anyhow::bail!("nfqueue daemon: {e}"),
            Err(_) => anyhow::bail!("nfqueue daemon did not start"),
        }
    }

    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Packets dropped because too many were held.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

fn run_loop(
    q: &mut nfq::Queue,
    table: &DelayTable,
    stop: &AtomicBool,
    dropped: &AtomicU64,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut heap: BinaryHeap<Held> = BinaryHeap::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        // Take everything waiting.
        loop {
            match q.recv() {
                Ok(mut msg) => {
                    let delay = addrs(msg.get_payload())
                        .and_then(|k| table.read().ok().and_then(|t| t.get(&k).copied()))
                        .unwrap_or(Delay::ZERO)
                        .sample(&mut rng);
                    if delay.is_zero() {
                        msg.set_verdict(nfq::Verdict::Accept);
                        q.verdict(msg)?;
                    } else if heap.len() >= MAX_HELD_PACKETS {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        msg.set_verdict(nfq::Verdict::Drop);
                        q.verdict(msg)?;
                    } else {
                        seq += 1;
                        heap.push(Held {
                            due: Instant::now() + delay,
                            seq,
                            msg,
                        });
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|h| h.due <= now) {
            if let Some(mut h) = heap.pop() {
                h.msg.set_verdict(nfq::Verdict::Accept);
                q.verdict(h.msg)?;
            }
        }
        let wait = heap.peek().map_or(POLL, |h| {
            h.due.saturating_duration_since(Instant::now()).min(POLL)
        });
        std::thread::sleep(wait);
    }
    // Let held packets go on shutdown.
    while let Some(mut h) = heap.pop() {
        h.msg.set_verdict(nfq::Verdict::Accept);
        let _ = q.verdict(h.msg);
    }
    Ok(())
}

impl Drop for NfqDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ipv4_addresses_from_the_header() {
        let mut p = [0u8; 28];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&[127, 0, 1, 1]);
        p[16..20].copy_from_slice(&[127, 0, 1, 2]);
        assert_eq!(
            addrs(&p),
            Some((Ipv4Addr::new(127, 0, 1, 1), Ipv4Addr::new(127, 0, 1, 2)))
        );
        p[0] = 0x60;
        assert_eq!(addrs(&p), None, "not IPv4");
        assert_eq!(addrs(&p[..10]), None);
    }
}
