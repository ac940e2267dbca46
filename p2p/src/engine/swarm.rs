//! One blob's swarm, the state of each phase of its life, and the engine's table of swarms.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use shoal_core::Digest;

use super::ConnId;
use super::announce::Announcing;
use super::conn::Rate;
use super::holders::{Holders, Slots};
use super::known::KnownPeers;
use super::picker::Picker;
use super::types::SwarmStats;
use super::upload::SuperSeed;
use crate::bitfield::Bitfield;
use crate::wire::Layout;

/// A swarm's place in the engine, for as long as the swarm lives.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct SwarmId(usize);

impl fmt::Debug for SwarmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "swarm#{}", self.0)
    }
}

/// Every swarm of the engine, by id and by digest.
#[derive(Debug, Default)]
pub(super) struct Swarms {
    slots: Vec<Option<Swarm>>,
    by_digest: HashMap<Digest, SwarmId>,
}

impl Swarms {
    pub fn find(&self, digest: &Digest) -> Option<SwarmId> {
        self.by_digest.get(digest).copied()
    }

    pub fn of(&self, digest: &Digest) -> Option<&Swarm> {
        self.find(digest).and_then(|s| self.get(s))
    }

    pub fn get(&self, s: SwarmId) -> Option<&Swarm> {
        self.slots.get(s.0).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, s: SwarmId) -> Option<&mut Swarm> {
        self.slots.get_mut(s.0).and_then(Option::as_mut)
    }

    /// The swarm `s`, which is alive: callers hold an id taken from [`Swarms::find`] or a
    /// live connection within the same call, and swarms leave only through
    /// [`Swarms::remove`], which the engine calls only after closing their connections.
    pub fn live(&mut self, s: SwarmId) -> &mut Swarm {
        self.get_mut(s)
            .unwrap_or_else(|| unreachable!("{s:?} is stale"))
    }

    /// Adds a swarm in the lowest free place.
    pub fn insert(&mut self, swarm: Swarm) -> SwarmId {
        let digest = swarm.digest;
        let s = match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(swarm);
                SwarmId(i)
            }
            None => {
                self.slots.push(Some(swarm));
                SwarmId(self.slots.len() - 1)
            }
        };
        self.by_digest.insert(digest, s);
        s
    }

    pub fn remove(&mut self, s: SwarmId) -> Option<Swarm> {
        let sw = self.slots.get_mut(s.0)?.take()?;
        self.by_digest.remove(&sw.digest);
        Some(sw)
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Every place a swarm may be in, taken now: swarms retired while a caller walks them
    /// are then missing from [`Swarms::get`].
    pub fn ids(&self) -> impl Iterator<Item = SwarmId> + use<> {
        (0..self.slots.len()).map(SwarmId)
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &Swarm> {
        self.slots.iter().flatten()
    }
}

#[derive(Debug)]
pub(super) struct Swarm {
    pub digest: Digest,
    pub layout: Layout,
    pub have: Bitfield,
    pub phase: Phase,
    pub conns: Vec<ConnId>,
    pub slots: Slots,
    pub known: KnownPeers,
    /// Dials under way.
    pub dialing: usize,
    /// Connections this node dialled, open or being dialled.
    pub outbound: usize,
    /// Origin connections, open or being dialled.
    pub origin_conns: usize,
    /// Uploads queued or being sent, all connections together.
    pub uploads: usize,
    pub announce: Announcing,
    /// When a piece last came or went, or a connection opened.
    pub last_active: Instant,
    pub stats: SwarmStats,
}

/// Where a blob is in its life, with what only that part of it needs. It moves only
/// forward: downloading, committing, seeding (a seed added as one starts there).
#[derive(Debug)]
pub(super) enum Phase {
    Downloading(Download),
    /// Every piece is written; the driver checks the whole blob.
    Committing,
    /// Complete. `Some` while super-seeding (see [`super::Config::super_seed_offers`]):
    /// only blobs added as seeds do.
    Seeding(Option<SuperSeed>),
}

impl Phase {
    pub fn download(&self) -> Option<&Download> {
        match self {
            Phase::Downloading(d) => Some(d),
            _ => None,
        }
    }

    pub fn download_mut(&mut self) -> Option<&mut Download> {
        match self {
            Phase::Downloading(d) => Some(d),
            _ => None,
        }
    }

    pub fn super_seed_mut(&mut self) -> Option<&mut SuperSeed> {
        match self {
            Phase::Seeding(Some(s)) => Some(s),
            _ => None,
        }
    }

    pub fn is_super_seeding(&self) -> bool {
        matches!(self, Phase::Seeding(Some(_)))
    }

    pub fn is_seeding(&self) -> bool {
        matches!(self, Phase::Seeding(_))
    }
}

/// What a swarm keeps while it downloads.
#[derive(Debug)]
pub(super) struct Download {
    /// The pieces still wanted, and how often each is requested and held.
    pub picker: Picker,
    pub holders: Holders,
    /// Requests out, and of those the ones to peers (not origins). Only
    /// [`super::requests::take_in_flight`] and [`super::requests::put_back`] change them.
    pub in_flight: usize,
    pub in_flight_to_peers: usize,
    /// The blob's download rate.
    pub rate: Rate,
    pub write_failures: u32,
    /// Where the next round of requests starts among the connections.
    pub cursor: usize,
    /// Streaming: the lowest piece a reader waits for.
    pub focus: Option<u32>,
}

impl Download {
    pub fn new(have: &Bitfield, slots: &Slots) -> Self {
        Download {
            picker: Picker::new(have),
            holders: Holders::new(have.len(), slots),
            in_flight: 0,
            in_flight_to_peers: 0,
            rate: Rate::new(),
            write_failures: 0,
            cursor: 0,
            focus: None,
        }
    }
}
