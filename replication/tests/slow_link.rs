//! Catch-up over a slow link (issue 13): the protocol with real engines,
//! driven over a simulated link whose bulk lane has a fixed bandwidth, so
//! that one catch-up answer of a 1 MiB value takes longer to cross than a
//! pull's timeout. The driver does what the mesh does: control messages
//! (hellos, acks, pulls) arrive after the latency, bulk messages one after
//! another at the link's rate, and while bytes of a bulk message arrive
//! the receiver's protocol hears [`Input::Receiving`] every
//! [`RECEIVING_NOTE_MS`].
//!
//! Before the fix a pull was re-sent every `want_timeout_ms` however busy
//! the link was, and each re-sent pull queued one more copy of the answer
//! in front of the next one: the link carried copies faster than it
//! delivered answers, and the node fell further behind the longer it
//! tried (the `large` harness workload's "peer is behind and not
//! advancing").

use std::collections::VecDeque;
use std::sync::Arc;

use meridian_engine::{Durability, Engine, EngineConfig, Kind, ObjectKey, Op, PhysicalTime};
use meridian_replication::mesh::RECEIVING_NOTE_MS;
use meridian_replication::message::PeerMessage;
use meridian_replication::{
    Input, Lane, NodeInfo, NodeName, Now, Output, Placement, ProtocolConfig, Replicator,
};

const BASE_UNIX_MS: u64 = 1_800_000_000_000;

/// Values the source holds that the other node lacks.
const VALUES: usize = 12;

/// Bulk lane bandwidth, bytes per ms (100 KB/s): a 1 MiB answer takes
/// about 10.5 s, twice the default pull timeout (5 s).
const BULK_BYTES_PER_MS: u64 = 100;

/// One-way latency of both lanes, ms.
const LATENCY_MS: u64 = 20;

/// The protocol's tick (as the mesh's driver).
const TICK_MS: u64 = 20;

struct Node {
    name: NodeName,
    replicator: Replicator,
    engine: Engine,
    _dir: tempfile::TempDir,
}

/// A message on its way: when it arrives, and (bulk) when its first byte
/// does.
struct Wire {
    from: usize,
    to: usize,
    starts: u64,
    arrives: u64,
    msg: PeerMessage,
}

struct Link {
    now: u64,
    nodes: Vec<Node>,
    control: VecDeque<Wire>,
    /// Bulk messages in order; one lane per direction, at the link's rate.
    bulk: Vec<VecDeque<Wire>>,
    /// When each direction's bulk lane is free again.
    bulk_free: Vec<u64>,
    /// When each node last heard `Receiving` for its peer's bulk stream.
    noted: Vec<u64>,
    /// Bytes of catch-up answers each node sent.
    catch_up_bytes: Vec<u64>,
}

fn node(name: &str, placement: &Arc<Placement>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.durability = Durability::Periodic(std::time::Duration::from_millis(1));
    config.group_of = placement.group_fn();
    let physical = PhysicalTime::from_unix_ms(BASE_UNIX_MS);
    let engine = Engine::open(config, physical).unwrap();
    // The production timers (5 s pull timeout, 1 MiB catch-up batches); no
    // truncation, so every answer comes from the log.
    let mut protocol = ProtocolConfig::new(name);
    protocol.truncate_every_ms = u64::MAX / 4;
    let now = Now {
        mono_ms: 0,
        physical,
    };
    Node {
        name: name.into(),
        replicator: Replicator::new(protocol, engine.clone(), placement.clone(), now),
        engine,
        _dir: dir,
    }
}

impl Link {
    fn new() -> Link {
        let infos = vec![
            NodeInfo {
                name: "us-east-1".into(),
                region: "us-east".into(),
            },
            NodeInfo {
                name: "eu-west-1".into(),
                region: "eu-west".into(),
            },
        ];
        let placement = Arc::new(Placement::new(infos.clone(), Vec::new()).unwrap());
        let nodes = infos.iter().map(|i| node(&i.name, &placement)).collect();
        Link {
            now: 0,
            nodes,
            control: VecDeque::new(),
            bulk: vec![VecDeque::new(), VecDeque::new()],
            bulk_free: vec![0, 0],
            noted: vec![0, 0],
            catch_up_bytes: vec![0, 0],
        }
    }

    fn index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    fn input(&mut self, i: usize, input: Input) {
        let now = Now {
            mono_ms: self.now,
            physical: PhysicalTime::from_unix_ms(BASE_UNIX_MS + self.now),
        };
        let outputs = self.nodes[i].replicator.handle(input, now);
        for out in outputs {
            let Output::Send { peer, msg, lane } = out else {
                continue; // durability, readiness, truncation: not needed here
            };
            let to = self.index(&peer);
            match lane {
                Lane::Control => self.control.push_back(Wire {
                    from: i,
                    to,
                    starts: self.now,
                    arrives: self.now + LATENCY_MS,
                    msg,
                }),
                Lane::Bulk => {
                    let bytes = meridian_engine::codec::encode(&msg).len() as u64;
                    if matches!(msg, PeerMessage::Deltas { catch_up: true, .. }) {
                        self.catch_up_bytes[i] += bytes;
                    }
                    let starts = self.bulk_free[i].max(self.now) + LATENCY_MS;
                    let arrives = starts + bytes.div_ceil(BULK_BYTES_PER_MS);
                    self.bulk_free[i] = arrives - LATENCY_MS;
                    self.bulk[i].push_back(Wire {
                        from: i,
                        to,
                        starts,
                        arrives,
                        msg,
                    });
                }
            }
        }
    }

    /// One tick: deliver what arrived, note bulk bytes arriving, tick.
    fn step(&mut self) {
        self.now += TICK_MS;
        while let Some(w) = self.control.front()
            && w.arrives <= self.now
        {
            let w = self.control.pop_front().unwrap();
            let peer = self.nodes[w.from].name.clone();
            self.input(w.to, Input::Message { peer, msg: w.msg });
        }
        for from in 0..2 {
            while let Some(w) = self.bulk[from].front()
                && w.arrives <= self.now
            {
                let w = self.bulk[from].pop_front().unwrap();
                let peer = self.nodes[w.from].name.clone();
                self.input(w.to, Input::Message { peer, msg: w.msg });
            }
            // As the mesh's stream reader: bytes of the head message are
            // arriving.
            if let Some(w) = self.bulk[from].front()
                && w.starts <= self.now
                && self.now - self.noted[w.to] >= RECEIVING_NOTE_MS
            {
                let to = w.to;
                self.noted[to] = self.now;
                let peer = self.nodes[from].name.clone();
                self.input(to, Input::Receiving { peer });
            }
        }
        for i in 0..2 {
            self.input(i, Input::Tick);
        }
    }

    fn caught_up(&self, to: usize, from: usize) -> bool {
        self.nodes[to]
            .engine
            .applied()
            .vector()
            .dominates(self.nodes[from].engine.applied().vector())
    }
}

/// A node that lacks a dozen 1 MiB values catches up over a link on which
/// each answer takes twice the pull timeout to cross, in about the time
/// the bytes need, and the source sends each value about once: no copies
/// pile up in front of the answers.
#[test]
fn catch_up_over_a_link_slower_than_the_pull_timeout() {
    let mut link = Link::new();
    let value_bytes = meridian_engine::MAX_VALUE_BYTES;
    let physical = PhysicalTime::from_unix_ms(BASE_UNIX_MS);
    for i in 0..VALUES {
        let key = ObjectKey::new(Kind::Register, format!("big-{i}")).unwrap();
        let value = vec![b'a' + i as u8; value_bytes];
        link.nodes[0]
            .engine
            .apply(&key, Op::Put(value), physical)
            .unwrap();
    }
    let needed = (VALUES * value_bytes) as u64;
    for (i, peer) in [(0, 1), (1, 0)] {
        let peer = link.nodes[peer].name.clone();
        link.input(i, Input::Connected { peer });
    }
    // What the bytes need at the link's rate, and four times that as the
    // bound (virtual time: the simulation is deterministic).
    let transfer_ms = needed / BULK_BYTES_PER_MS;
    let limit_ms = 4 * transfer_ms;
    while !link.caught_up(1, 0) && link.now < limit_ms {
        link.step();
    }
    let sent = link.catch_up_bytes[0];
    assert!(
        link.caught_up(1, 0),
        "not caught up after {} s of virtual time ({} s of transfer): {} of {} MiB \
         answered, {:?} applied",
        link.now / 1000,
        transfer_ms / 1000,
        sent >> 20,
        needed >> 20,
        link.nodes[1].engine.applied()
    );
    // Each value crosses about once (answers racing the last pulls may
    // repeat one or two).
    assert!(
        sent <= needed + needed / 4,
        "{} MiB of catch-up answers sent for {} MiB of values",
        sent >> 20,
        needed >> 20
    );
}
