//! Peer identity and the tracker's wire types, shared by the tracker (server) and the swarm's
//! tracker client.
//!
//! The tracker's HTTP API (see `tracker/API.md`):
//! - `POST /v1/announce` with an [`AnnounceRequest`] as JSON, answered by an
//!   [`AnnounceResponse`];
//! - `GET /v1/metainfo/<digest>`: the blob's encoded [`crate::Metainfo`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Digest;

/// A peer's id: 20 random bytes chosen at start-up, written as 40 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub [u8; 20]);

impl PeerId {
    pub fn random() -> Self {
        PeerId(rand::random())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer id must be 40 lowercase hex characters")]
pub struct PeerIdError;

impl FromStr for PeerId {
    type Err = PeerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 40 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(PeerIdError);
        }
        let mut id = [0u8; 20];
        hex::decode_to_slice(s, &mut id).map_err(|_| PeerIdError)?;
        Ok(PeerId(id))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight characters tell peers apart in logs.
        write!(f, "PeerId({})", &hex::encode(&self.0[..4]))
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A peer tells the tracker which blob it wants or has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceRequest {
    pub digest: Digest,
    pub peer_id: PeerId,
    /// The peer-protocol port the caller listens on.
    pub port: u16,
    /// Whether the caller holds the whole blob.
    pub complete: bool,
    /// An address to use instead of the request's source address; the tracker honours it
    /// only when configured to trust announced addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<std::net::IpAddr>,
}

/// One entry of a handout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: PeerId,
    pub addr: SocketAddr,
    pub complete: bool,
    /// An origin: a seed of last resort.
    #[serde(default)]
    pub origin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceResponse {
    pub peers: Vec<PeerInfo>,
    /// Seconds until the caller should announce again.
    pub interval_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_round_trip() {
        let id = PeerId::random();
        assert_eq!(id.to_string().parse::<PeerId>(), Ok(id));
        assert!("ab".parse::<PeerId>().is_err());
        assert!("AB".repeat(20).parse::<PeerId>().is_err());
        assert!("zz".repeat(20).parse::<PeerId>().is_err());
    }

    #[test]
    fn announce_json() {
        let req = AnnounceRequest {
            digest: Digest::sha256_of(b"x"),
            peer_id: PeerId([1; 20]),
            port: 7001,
            complete: false,
            addr: None,
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<AnnounceRequest>(&json).unwrap(), req);
        let extra = json.replace('}', ",\"x\":1}");
        assert!(serde_json::from_str::<AnnounceRequest>(&extra).is_err());
    }
}
