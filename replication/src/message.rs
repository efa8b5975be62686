//! Messages between peers, and their framing.
//!
//! A message is `[format version][rkyv archive of PeerMessage]`, sent as
//! one frame `[length: u32 LE][message]` when it fits
//! [`MAX_PEER_FRAME_BYTES`], else as several (see [`to_frames`]): a
//! message may carry one whole object up to the merged-object bound
//! ([`MAX_PEER_MESSAGE_BYTES`]), which no single frame does (review C4).
//! Every length is checked before anything is allocated, and every
//! message is validated (bytecheck, then [`PeerMessage::validate`]) before
//! use: a peer that sends garbage is disconnected, never trusted. The
//! same framing carries peer RPCs.

use meridian_engine::codec::{self, DecodeError};
use meridian_engine::{
    CausalContext, Delta, Dot, Expiry, GroupId, Incarnation, MAX_KEY_BYTES, ObjectKey, ObjectState,
    Record, StreamId, VersionVector,
};

use crate::name::NodeName;

/// Largest dot counter (and version-vector entry) a peer may send. No
/// stream issues that many deltas (2^62 at a billion a second takes 146
/// years), and the headroom keeps every `+ 1` and sum over counters that
/// peers supply from overflowing: a larger one is refused as garbage.
pub const MAX_PEER_COUNTER: u64 = 1 << 62;

/// Largest peer frame, in bytes. Senders batch far below this; a larger
/// length prefix is treated as garbage.
pub const MAX_PEER_FRAME_BYTES: usize = 24 << 20;
const _: () = assert!(MAX_PEER_FRAME_BYTES > meridian_engine::MAX_OBJECT_BYTES + MAX_KEY_BYTES);

/// Largest peer message (or RPC request or response), in bytes, over all
/// its frames: the largest set a merge may make
/// ([`meridian_engine::MAX_MERGED_OBJECT_BYTES`]) plus room for its
/// context, key and the message around it. A receiver reassembles one
/// message per stream at a time, its bytes reserved up front from a
/// node-wide budget.
pub const MAX_PEER_MESSAGE_BYTES: usize = meridian_engine::MAX_MERGED_OBJECT_BYTES + (16 << 20);

/// Bit of a frame's length prefix: more frames of this message follow.
/// The first frame of a message of several starts with the message's
/// total length (u32 LE), so the receiver reserves it before reading on.
pub const CONTINUED: u32 = 1 << 31;

/// Message bytes per frame of a message sent in several.
pub const CHUNK_BYTES: usize = 8 << 20;

const _: () = assert!(MAX_PEER_MESSAGE_BYTES < CONTINUED as usize);
const _: () = assert!(CHUNK_BYTES + 4 <= MAX_PEER_FRAME_BYTES);

/// Frames `message` (an encoded message or RPC payload, at most
/// [`MAX_PEER_MESSAGE_BYTES`]) for the wire: `[len][message]` if it fits
/// one frame, else `[4 + c0 | CONTINUED][total][c0]`, `[ci | CONTINUED][ci]`
/// …, `[ck][ck]` in chunks of [`CHUNK_BYTES`]. `prefix` is written first.
pub fn to_frames(message: &[u8], prefix: &[u8]) -> Vec<u8> {
    assert!(
        message.len() <= MAX_PEER_MESSAGE_BYTES,
        "a peer message of {} bytes exceeds the message cap",
        message.len()
    );
    let mut out = Vec::with_capacity(prefix.len() + message.len() + 16);
    out.extend_from_slice(prefix);
    if message.len() <= MAX_PEER_FRAME_BYTES {
        out.extend_from_slice(&(message.len() as u32).to_le_bytes());
        out.extend_from_slice(message);
        return out;
    }
    let chunks: Vec<&[u8]> = message.chunks(CHUNK_BYTES).collect();
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let extra = if i == 0 { 4 } else { 0 };
        let mut len = (chunk.len() + extra) as u32;
        if i < last {
            len |= CONTINUED;
        }
        out.extend_from_slice(&len.to_le_bytes());
        if i == 0 {
            out.extend_from_slice(&(message.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(chunk);
    }
    out
}

/// First message on a link, each way.
#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Hello {
    /// The sender's node name (also proven by its certificate).
    pub node: NodeName,
    /// Its current incarnation.
    pub incarnation: Incarnation,
    /// Its [`crate::Placement::fingerprint`]: peers that disagree don't replicate.
    pub placement: u64,
    pub applied: CausalContext,
    pub durable: CausalContext,
    /// Its physical clock, ms since the Unix epoch (clock-offset estimate).
    pub wall_ms: u64,
    /// Whether the sender has received the receiver's hello; if not, the
    /// receiver answers with its own (a hello lost in transit is re-sent).
    pub seen_yours: bool,
    /// Whether the sender has completed a catch-up round from each of its
    /// live peers ([`crate::Replicator::caught_up`]): it may lead.
    pub caught_up: bool,
}

/// What the sender has applied and made durable.
#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Ack {
    pub applied: CausalContext,
    pub durable: CausalContext,
    pub wall_ms: u64,
    /// As [`Hello::caught_up`], now.
    pub caught_up: bool,
}

#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PeerMessage {
    Hello(Hello),
    /// Deltas: realtime push (`catch_up: false`) or the answer to a
    /// [`PeerMessage::Want`] (`catch_up: true`; `more`: ask again).
    Deltas {
        records: Vec<Record>,
        catch_up: bool,
        more: bool,
    },
    Ack(Ack),
    /// "Send me the deltas I lack": the sender's applied dots.
    Want {
        have: CausalContext,
    },
    /// Batch `seq` (from 0) of full-state sync `sync`: whole objects, and
    /// whole expiry states (TTL settings and the floors of expiries that
    /// happened, which outlive the content they removed), joined on the
    /// receiver with [`meridian_engine::Engine::merge_expiry`]. A key may
    /// have an expiry and no object (its content was reclaimed): that
    /// expiry is what keeps a receiver holding old content from serving
    /// it again (issue 15).
    FullSync {
        sync: u64,
        seq: u32,
        objects: Vec<(ObjectKey, ObjectState)>,
        expiries: Vec<(ObjectKey, Expiry)>,
    },
    /// End of full-state sync `sync`, which had `batches` batches: once the
    /// receiver has applied all of them it may count `vector` as applied.
    FullSyncDone {
        sync: u64,
        batches: u32,
        vector: VersionVector,
        streams: Vec<(StreamId, GroupId)>,
    },
}

impl PeerMessage {
    pub fn name(&self) -> &'static str {
        match self {
            PeerMessage::Hello(_) => "hello",
            PeerMessage::Deltas { .. } => "deltas",
            PeerMessage::Ack(_) => "ack",
            PeerMessage::Want { .. } => "want",
            PeerMessage::FullSync { .. } => "full-sync",
            PeerMessage::FullSyncDone { .. } => "full-sync-done",
        }
    }

    /// Semantic checks beyond the archive's structure, including the
    /// bound on every counter a peer supplies ([`MAX_PEER_COUNTER`]).
    pub fn validate(&self) -> Result<(), String> {
        let check_key = |k: &ObjectKey| {
            if k.key().len() > MAX_KEY_BYTES {
                Err(format!("key of {} bytes", k.key().len()))
            } else {
                Ok(())
            }
        };
        match self {
            PeerMessage::Hello(h) => {
                check_context(&h.applied)?;
                check_context(&h.durable)?;
            }
            PeerMessage::Ack(a) => {
                check_context(&a.applied)?;
                check_context(&a.durable)?;
            }
            PeerMessage::Want { have } => check_context(have)?,
            PeerMessage::FullSyncDone { vector, .. } => check_vector(vector)?,
            PeerMessage::Deltas { .. } | PeerMessage::FullSync { .. } => {}
        }
        match self {
            PeerMessage::Deltas { records, .. } => {
                for r in records {
                    check_key(&r.key)?;
                    check_dot(r.dot)?;
                    check_delta(&r.delta)?;
                    if !r.delta.fits(r.key.kind()) {
                        return Err(format!(
                            "{} delta for a {} key",
                            r.delta.what(),
                            r.key.kind()
                        ));
                    }
                    if r.dot.counter == 0 || r.dot.stream.0 == 0 {
                        return Err("zero dot".into());
                    }
                }
            }
            PeerMessage::FullSync {
                objects, expiries, ..
            } => {
                for (k, e) in expiries {
                    check_key(k)?;
                    check_expiry(e)?;
                }
                for (k, s) in objects {
                    check_key(k)?;
                    if k.kind() != s.kind() {
                        return Err(format!("{} state for a {} key", s.kind(), k.kind()));
                    }
                    if let ObjectState::Set(set) = s {
                        check_context(set.context())?;
                        for dots in set.entries().values() {
                            dots.iter().try_for_each(check_dot)?;
                        }
                    }
                    if let ObjectState::Map(map) = s {
                        check_context(map.context())?;
                        check_map_fields(map.fields())?;
                    }
                }
            }
            PeerMessage::Hello(h) if h.incarnation.0 == 0 => {
                return Err("zero incarnation".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// About how many bytes the message encodes to, without encoding it
    /// (for batching and queue bounds). An estimate: the archive adds
    /// small per-field overheads this only approximates; values, keys and
    /// members, which dominate large messages, are counted exactly.
    pub fn estimated_bytes(&self) -> usize {
        let context = |c: &CausalContext| 16 * c.entries();
        16 + match self {
            PeerMessage::Hello(h) => 64 + h.node.len() + context(&h.applied) + context(&h.durable),
            PeerMessage::Deltas { records, .. } => records.iter().map(record_bytes).sum(),
            PeerMessage::Ack(a) => 16 + context(&a.applied) + context(&a.durable),
            PeerMessage::Want { have } => context(have),
            PeerMessage::FullSync {
                objects, expiries, ..
            } => {
                objects
                    .iter()
                    .map(|(k, s)| state_bytes(k, s))
                    .sum::<usize>()
                    + expiries
                        .iter()
                        .map(|(k, e)| 64 + k.key().len() + expiry_bytes(e))
                        .sum::<usize>()
            }
            PeerMessage::FullSyncDone {
                vector, streams, ..
            } => 16 + 16 * vector.len() + 16 * streams.len(),
        }
    }

    /// The frame(s) for this message (see [`to_frames`]).
    pub fn to_frame(&self) -> Vec<u8> {
        to_frames(&codec::encode(self), &[])
    }

    /// Decodes and validates one frame's payload.
    pub fn from_payload(payload: &[u8]) -> Result<PeerMessage, String> {
        if payload.len() > MAX_PEER_MESSAGE_BYTES {
            return Err(format!("message of {} bytes", payload.len()));
        }
        let msg: PeerMessage = codec::decode(payload).map_err(|e| match e {
            DecodeError::Unsupported(v) => format!("unsupported format version {v}"),
            DecodeError::Malformed(m) => format!("malformed message: {m}"),
        })?;
        msg.validate()?;
        Ok(msg)
    }
}

fn check_dot(dot: Dot) -> Result<(), String> {
    if dot.counter > MAX_PEER_COUNTER {
        return Err(format!("dot counter {} over the bound", dot.counter));
    }
    Ok(())
}

fn check_vector(vector: &VersionVector) -> Result<(), String> {
    match vector.iter().find(|&(_, c)| c > MAX_PEER_COUNTER) {
        Some((node, c)) => Err(format!("counter {c} of {node} over the bound")),
        None => Ok(()),
    }
}

fn check_context(context: &CausalContext) -> Result<(), String> {
    check_vector(context.vector())?;
    context.cloud().try_for_each(check_dot)
}

/// An expiry state or delta: its own bounds, and its dots (deadlines' and
/// context's).
fn check_expiry(expiry: &Expiry) -> Result<(), String> {
    check_context(expiry.context())?;
    expiry.check().map_err(|e| e.to_string())?;
    expiry.deadlines().keys().copied().try_for_each(check_dot)
}

fn check_delta(delta: &Delta) -> Result<(), String> {
    match delta {
        Delta::Set(s) => {
            check_context(&s.context)?;
            for dots in s.entries.values() {
                dots.iter().try_for_each(check_dot)?;
            }
        }
        Delta::Map(m) => {
            check_context(&m.context)?;
            check_map_fields(&m.fields)?;
            for (field, chain) in &m.chains {
                check_field_name(field)?;
                check_vector(chain)?;
            }
        }
        Delta::Expiry(e) => check_expiry(e)?,
        Delta::Counter(_) | Delta::Register(_) => {}
    }
    Ok(())
}

/// A map's field names and the dots of their entries.
fn check_map_fields(
    fields: &std::collections::BTreeMap<Vec<u8>, meridian_engine::crdt::map::Entries>,
) -> Result<(), String> {
    for (field, entries) in fields {
        check_field_name(field)?;
        entries.keys().copied().try_for_each(check_dot)?;
    }
    Ok(())
}

fn check_field_name(field: &[u8]) -> Result<(), String> {
    if field.len() > meridian_engine::crdt::map::MAX_FIELD_BYTES {
        return Err(format!(
            "map field of {} bytes over the {}-byte limit",
            field.len(),
            meridian_engine::crdt::map::MAX_FIELD_BYTES
        ));
    }
    Ok(())
}

/// About how many bytes one record (a delta) encodes to.
pub fn record_bytes(r: &Record) -> usize {
    64 + r.key.key().len()
        + match &r.delta {
            Delta::Counter(c) => 48 * c.origins(),
            Delta::Set(s) => {
                s.entries
                    .iter()
                    .map(|(m, d)| m.len() + 16 * d.len() + 8)
                    .sum::<usize>()
                    + 16 * s.context.entries()
            }
            Delta::Register(r) => r.value.as_ref().map_or(0, Vec::len),
            Delta::Expiry(e) => expiry_bytes(e),
            Delta::Map(m) => m.estimated_bytes(),
        }
}

/// About how many bytes an expiry state (or delta) encodes to: a dot and
/// a deadline per setting, a context, a floor.
pub fn expiry_bytes(expiry: &Expiry) -> usize {
    8 + 24 * expiry.deadlines().len() + 16 * expiry.context().entries()
}

/// About how many bytes one object's full state encodes to.
pub fn state_bytes(key: &ObjectKey, state: &ObjectState) -> usize {
    64 + key.key().len()
        + match state {
            ObjectState::Counter(c) => 48 * c.origins(),
            ObjectState::Set(s) => s.cost() as usize + 16 * s.context().entries(),
            ObjectState::Register(r) => r.value.as_ref().map_or(0, Vec::len),
            ObjectState::Map(m) => m.estimated_bytes(),
        }
}

/// Checks a frame's length prefix.
pub fn frame_len(prefix: [u8; 4]) -> Result<(usize, bool), String> {
    let raw = u32::from_le_bytes(prefix);
    let continued = raw & CONTINUED != 0;
    let len = (raw & !CONTINUED) as usize;
    if len == 0 || len > MAX_PEER_FRAME_BYTES || (continued && len <= 4) {
        return Err(format!(
            "frame length {len} outside 1..={MAX_PEER_FRAME_BYTES}"
        ));
    }
    Ok((len, continued))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let msg = PeerMessage::Want {
            have: CausalContext::new(),
        };
        let frame = msg.to_frame();
        let (len, _) = frame_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(PeerMessage::from_payload(&frame[4..4 + len]).unwrap(), msg);
        assert!(PeerMessage::from_payload(b"\x01garbage").is_err());
        assert!(PeerMessage::from_payload(&[]).is_err());
        assert!(frame_len(((MAX_PEER_FRAME_BYTES + 1) as u32).to_le_bytes()).is_err());
        assert!(frame_len([0; 4]).is_err());
    }

    /// Review item C4: a message larger than one frame is framed as
    /// several, every frame under the frame cap, the top bit set on all
    /// but the last, the first naming the total; the chunks concatenate to
    /// the message. A message that fits one frame is framed as before.
    #[test]
    fn messages_larger_than_a_frame_go_in_several_frames() {
        let small = vec![7u8; 1000];
        let framed = to_frames(&small, &[9]);
        assert_eq!(framed[0], 9);
        assert_eq!(
            frame_len(framed[1..5].try_into().unwrap()),
            Ok((1000, false))
        );
        assert_eq!(&framed[5..], &small[..]);

        let message: Vec<u8> = (0..MAX_PEER_FRAME_BYTES + CHUNK_BYTES + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let framed = to_frames(&message, &[]);
        let (mut at, mut out, mut frames) = (0usize, Vec::new(), 0);
        loop {
            let (len, more) = frame_len(framed[at..at + 4].try_into().unwrap()).unwrap();
            assert!(len <= MAX_PEER_FRAME_BYTES);
            let mut body = &framed[at + 4..at + 4 + len];
            if frames == 0 {
                assert!(more);
                let total = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
                assert_eq!(total, message.len());
                body = &body[4..];
            }
            out.extend_from_slice(body);
            at += 4 + len;
            frames += 1;
            if !more {
                break;
            }
        }
        assert_eq!(at, framed.len());
        assert_eq!(frames, message.len().div_ceil(CHUNK_BYTES));
        assert_eq!(out, message);
        // A continued frame too short to carry the total is garbage.
        assert!(frame_len((4 | CONTINUED).to_le_bytes()).is_err());
    }

    /// Review item S6: counters a peer supplies are bounded, so that no
    /// `+ 1` or sum over them downstream can overflow.
    #[test]
    fn counters_over_the_bound_are_garbage() {
        use meridian_engine::{Dot, StreamId};
        let stream = StreamId(7);
        let at = |c: u64| CausalContext::from_vector([(stream, c)].into_iter().collect());
        let want = |have| PeerMessage::Want { have }.to_frame();
        for (counter, ok) in [
            (MAX_PEER_COUNTER, true),
            (MAX_PEER_COUNTER + 1, false),
            (u64::MAX, false),
        ] {
            let frame = want(at(counter));
            assert_eq!(
                PeerMessage::from_payload(&frame[4..]).is_ok(),
                ok,
                "{counter}"
            );
        }
        let mut cloud = CausalContext::new();
        cloud.insert(Dot::new(stream, u64::MAX));
        let frame = want(cloud);
        assert!(PeerMessage::from_payload(&frame[4..]).is_err());
        let ack = PeerMessage::Ack(Ack {
            applied: at(u64::MAX),
            durable: CausalContext::new(),
            wall_ms: u64::MAX,
            caught_up: true,
        });
        assert!(PeerMessage::from_payload(&ack.to_frame()[4..]).is_err());
    }
}
