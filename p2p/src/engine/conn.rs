//! One connection's state, what it is held against, and the byte rate both connections and
//! downloads keep.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_core::peer::PeerId;

use super::swarm::SwarmId;
use super::types::Blame;
use crate::bitfield::Bitfield;

/// Cancelled requests remembered per connection; a piece arriving for an older one is
/// one nobody asked for.
const MAX_CANCELLED: usize = 64;

#[derive(Debug)]
pub(super) struct Conn {
    pub swarm: SwarmId,
    /// The id the peer claims (see [`super::Remote`]).
    pub peer: PeerId,
    pub addr: SocketAddr,
    /// The id something vouched for, if anything did.
    pub verified: Option<PeerId>,
    /// Discovery listed the address this node dialled as an origin's.
    pub origin: bool,
    pub outbound: bool,
    /// The connection is the known peer of its claimed id (dialled, or made to this node
    /// from that peer's host); its failures count there.
    pub linked: bool,
    /// Pieces this node cancelled here: one may still arrive, having crossed the cancel.
    pub cancelled: VecDeque<u32>,
    /// The peer's pieces; `None` until its bitfield arrives.
    pub has: Option<Bitfield>,
    /// The connection's place in its swarm's slot table.
    pub slot: usize,
    /// Pieces requested from the peer and not yet arrived. Only
    /// [`super::requests::take_in_flight`] and [`super::requests::put_back`] change it.
    pub requests: Vec<Req>,
    /// Pieces the peer requested and this node has queued or is sending.
    pub uploads: Vec<u32>,
    pub window: usize,
    /// Super-seeding: pieces offered to the peer that it does not hold yet.
    pub offered: Vec<u32>,
    pub backoff_until: Option<Instant>,
    /// When the peer last delivered, or when it was last given work while idle.
    pub last_progress: Instant,
    /// When the peer last sent a piece or asked for one (or connected).
    pub last_useful: Instant,
    pub rate: Rate,
}

/// A request out to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Req {
    pub piece: u32,
    pub at: Instant,
}

/// What a connection is held against by its address: the address dialled, or the host a
/// connection made to this node comes from.
pub(super) fn blame_for(outbound: bool, addr: SocketAddr) -> Blame {
    if outbound {
        Blame::Dialled(addr)
    } else {
        Blame::Source(addr.ip())
    }
}

impl Conn {
    /// What the connection is held against if it misbehaves.
    pub fn blames(&self) -> impl Iterator<Item = Blame> + use<> {
        std::iter::once(blame_for(self.outbound, self.addr))
            .chain(self.verified.map(Blame::Verified))
    }

    /// Whether a reject told this node to leave the connection alone until after `now`.
    pub fn backed_off(&self, now: Instant) -> bool {
        self.backoff_until.is_some_and(|t| t > now)
    }

    /// The pieces asked of the peer, in the order asked.
    pub fn requested(&self) -> Vec<u32> {
        self.requests.iter().map(|r| r.piece).collect()
    }

    pub fn has_asked(&self, piece: u32) -> bool {
        self.requests.iter().any(|r| r.piece == piece)
    }

    /// A request of `piece` is being cancelled: the piece may still come, having crossed
    /// the cancel, and is then no protocol error.
    pub fn remember_cancel(&mut self, piece: u32) {
        if self.cancelled.len() >= MAX_CANCELLED {
            self.cancelled.pop_front();
        }
        self.cancelled.push_back(piece);
    }
}

/// A byte rate averaged with exponential decay over a window: cheap to update per piece.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rate {
    value: f64,
    at: Option<Instant>,
}

impl Rate {
    pub const fn new() -> Self {
        Rate {
            value: 0.0,
            at: None,
        }
    }

    pub fn decayed(&self, now: Instant, window: Duration) -> f64 {
        match self.at {
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                self.value * (-dt / window.as_secs_f64()).exp()
            }
            None => 0.0,
        }
    }

    pub fn add(&mut self, now: Instant, bytes: u64, window: Duration) {
        self.value = self.decayed(now, window) + bytes as f64 / window.as_secs_f64();
        self.at = Some(now);
    }
}
