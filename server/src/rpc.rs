//! Requests one node makes of another over the peer mesh's RPC streams.
//!
//! Encoded like every stored or transmitted payload (format version byte +
//! rkyv, validated before use). A malformed request is answered with
//! [`PeerResponse::Failed`]; the mesh disconnects peers whose framing is
//! broken.

use meridian_client::wire;
use meridian_engine::codec;
use meridian_engine::{Expiry, ObjectKey, ObjectState};

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PeerRequest {
    /// Serve a client request here: this node is the object's leader, or a
    /// replica when the forwarding node is not one. Never forwarded again.
    Forward(wire::Request),
    /// This node's full state of an object and its expiry state (quorum
    /// and `all` reads).
    ReadState(ObjectKey),
    /// Join this state and this expiry into the object and make them
    /// durable (read repair): either may be absent.
    Repair(ObjectKey, Option<ObjectState>, Option<Expiry>),
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PeerResponse {
    Forwarded(wire::Response),
    /// The answer to [`PeerRequest::ReadState`]: the object's state and
    /// its expiry state (TTL settings, and the floor of an expiry that
    /// happened, which outlives the content), each absent when there is
    /// none.
    State(Option<ObjectState>, Option<Expiry>),
    Repaired,
    Failed(String),
}

impl PeerRequest {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<PeerRequest, String> {
        codec::decode(bytes).map_err(|e| e.to_string())
    }
}

impl PeerResponse {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<PeerResponse, String> {
        codec::decode(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_engine::Kind;

    #[test]
    fn round_trip_and_garbage() {
        let req = PeerRequest::ReadState(ObjectKey::new(Kind::Set, b"cart".to_vec()).unwrap());
        assert_eq!(PeerRequest::decode(&req.encode()).unwrap(), req);
        assert!(PeerRequest::decode(b"\x01junk").is_err());
        let mut expiry = Expiry::new();
        expiry.expire_at(meridian_engine::Incarnation(3), 10, 20);
        let resp = PeerResponse::State(None, Some(expiry));
        assert_eq!(PeerResponse::decode(&resp.encode()).unwrap(), resp);
        assert!(PeerResponse::decode(&[]).is_err());
    }
}
