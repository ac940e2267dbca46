//! The swarm engine: a sans-IO state machine for every blob a node downloads or seeds.
//!
//! The engine never reads a clock, a socket or a disk. A driver feeds it [`Event`]s with the
//! time they happened, calls [`Engine::handle_timeout`] when [`Engine::poll_timeout`] says,
//! and carries out the [`Action`]s it pops with [`Engine::poll_action`]. The tokio driver in
//! [`crate::node`] and the simulator in [`crate::sim`] are two such drivers.
//!
//! What it decides:
//! - whom to dial, and whom to accept: connection limits per blob and in all (connections
//!   peers open to this node that turn out useless give up the slots kept for dialling the
//!   peers discovery named), no duplicate connection to one peer, no connection to a shunned address; a
//!   bounded list of known peers per blob that forgets those not heard of for a while;
//! - what to request from whom: rarest first with random ties ([`picker`]); a target number
//!   of requests in flight to peers, sized from the blob's download rate so that links stay
//!   full (requests stuck behind a slow peer's queue stop counting), spread over
//!   connections with a per-connection window sized from that connection's rate; origins
//!   asked only for what no other peer holds, within their own connection windows; endgame
//!   duplicates for the last pieces and a cancel as soon as one copy arrives;
//! - what origins offer: a super-seeding seed shows each downloader a couple of pieces at a
//!   time, those it has sent least, so its upload goes to distinct pieces first;
//! - what to do when things go wrong: a connection that delivers nothing for
//!   `request_timeout` has its requests moved to others; a peer that sends a corrupt piece
//!   it was asked for is dropped and shunned; one that breaks the protocol (a piece nobody
//!   asked for among others) is dropped, and shunned once it has failed
//!   `max_peer_failures` times;
//! - what to serve: requests are queued for upload up to a bound and rejected beyond it, so
//!   that a downloader asks someone less busy instead of waiting in a long queue;
//! - when to announce, when the blob is complete (all pieces written: commit it), and when
//!   a complete blob has been idle long enough to stop seeding it.
//!
//! Pieces are verified by the driver before the engine hears of them (hashing is work, not
//! a decision); the engine only says whether a verified piece is still wanted
//! ([`Action::WritePiece`]) or not ([`Action::DropPiece`]).
//!
//! Identity: a hello's peer id and origin flag are claims anyone can make. The engine
//! blames and shuns only what it can check ([`Blame`]): the address it dialled, the source
//! address of a connection made to it, and an id only when the driver vouches for it
//! ([`Remote::verified`]). A peer is an origin only if discovery said so for the address
//! this node dialled; over TLS the driver also refuses such a dial unless the peer's
//! certificate names an origin, and a connection made to this node is never an origin's.
//! The driver vouches for an id when the peer protocol runs over TLS: the certificate names
//! it, and a hello naming another is refused before the engine hears of it.
//!
//! Where each part lives:
//! - [`Engine`] itself, adding and removing blobs, and feeding events and time: here;
//! - the knobs ([`Config`]) and what crosses the boundary ([`Event`], [`Action`], [`Remote`],
//!   [`Blame`], errors, counters): `config.rs`, `types.rs`;
//! - a swarm and the state of each phase of its life, one connection's state: `swarm.rs`,
//!   `conn.rs`;
//! - connections opened, admitted, closed and shunned: `peers.rs`; the known peers and whom
//!   to dial: `known.rs`; announces: `announce.rs`;
//! - downloading (bitfields, haves, pieces, time-outs, writes, the commit): `download.rs`;
//!   what to request from whom, and the one place a request is taken in flight or put back:
//!   `requests.rs`; rarest first: `picker.rs`; who holds which piece: `holders.rs`;
//! - uploading and super-seeding: `upload.rs`;
//! - the invariants tests check after every step: `check.rs`.

mod announce;
#[cfg(test)]
mod check;
mod config;
mod conn;
mod download;
mod holders;
mod known;
mod peers;
mod picker;
mod requests;
mod slab;
mod swarm;
#[cfg(test)]
mod tests;
mod types;
mod upload;

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use shoal_core::Digest;
use shoal_core::peer::PeerId;

use crate::bitfield::Bitfield;
use crate::wire::{ErrorCode, Layout, Message};
use announce::Announcing;
use conn::{Conn, Req};
use holders::Slots;
use known::KnownPeers;
use slab::Slab;
use swarm::{Download, Phase, Swarm, SwarmId, Swarms};
use upload::SuperSeed;

pub use config::Config;
pub use requests::MIN_STREAM_AHEAD;
pub use slab::ConnId;
pub use types::{
    Action, Blame, CloseReason, EngineError, Event, Refusal, Remote, SwarmError, SwarmStats, Totals,
};

/// The engine: every swarm of one node.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    me: PeerId,
    rng: SmallRng,
    swarms: Swarms,
    conns: Slab<Conn>,
    /// Dials under way, all blobs together.
    dialing: usize,
    /// Open connections made to this node, all blobs together.
    inbound: usize,
    shunned: HashMap<Blame, Instant>,
    actions: VecDeque<Action>,
    next_tick: Option<Instant>,
    totals: Totals,
}

impl Engine {
    /// An engine for the node `me`; `seed` seeds its random choices (a simulator passes a
    /// fixed one to be deterministic).
    pub fn new(cfg: Config, me: PeerId, seed: u64) -> Self {
        Engine {
            cfg,
            me,
            rng: SmallRng::seed_from_u64(seed),
            swarms: Swarms::default(),
            conns: Slab::default(),
            dialing: 0,
            inbound: 0,
            shunned: HashMap::new(),
            actions: VecDeque::new(),
            next_tick: None,
            totals: Totals::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    /// Starts downloading a blob, which begins with an announce.
    pub fn download(
        &mut self,
        now: Instant,
        digest: Digest,
        layout: Layout,
    ) -> Result<(), EngineError> {
        let have = Bitfield::new(layout.pieces as usize);
        self.add(now, digest, layout, have, true, true)
    }

    /// Starts seeding a complete blob; `announce` says whether to tell discovery about it
    /// (an origin need not: trackers know the origins).
    pub fn seed(
        &mut self,
        now: Instant,
        digest: Digest,
        layout: Layout,
        announce: bool,
    ) -> Result<(), EngineError> {
        let have = Bitfield::full(layout.pieces as usize);
        self.add(now, digest, layout, have, announce, false)
    }

    fn add(
        &mut self,
        now: Instant,
        digest: Digest,
        layout: Layout,
        have: Bitfield,
        announce: bool,
        downloading: bool,
    ) -> Result<(), EngineError> {
        if self.swarms.find(&digest).is_some() {
            return Err(EngineError::AlreadyPresent);
        }
        let slots = Slots::new(self.cfg.max_conns_per_blob);
        let phase = if !downloading {
            let super_seed = self.cfg.super_seed_offers > 0;
            Phase::Seeding(super_seed.then(|| SuperSeed::new(layout.pieces as usize)))
        } else if have.is_full() {
            // A blob of no pieces goes straight to the whole-blob check.
            Phase::Committing
        } else {
            Phase::Downloading(Download::new(&have, &slots))
        };
        let commit_now = matches!(phase, Phase::Committing);
        let swarm = Swarm {
            digest,
            layout,
            stats: SwarmStats {
                pieces: layout.pieces as usize,
                have: have.count(),
                complete: !downloading,
                ..SwarmStats::default()
            },
            have,
            phase,
            conns: Vec::new(),
            slots,
            known: KnownPeers::default(),
            dialing: 0,
            outbound: 0,
            origin_conns: 0,
            uploads: 0,
            announce: Announcing::new(announce, now),
            last_active: now,
        };
        let s = self.swarms.insert(swarm);
        if commit_now {
            self.actions.push_back(Action::Commit { blob: digest });
        }
        if self.next_tick.is_none() {
            self.next_tick = Some(now);
        }
        self.announce_if_due(s, now);
        Ok(())
    }

    /// Forgets a blob: closes its connections and reports [`Action::Retired`].
    pub fn remove(&mut self, digest: &Digest) {
        if let Some(s) = self.swarms.find(digest) {
            self.retire(s, ErrorCode::Shutdown);
        }
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.swarms.find(digest).is_some()
    }

    /// Streaming: `piece` is the lowest piece a reader of the blob waits for (or is reading);
    /// `None`: nobody reads in order. The missing pieces just ahead of it
    /// ([`Config::stream_ahead`]) are then requested before anything else, so a reader's
    /// first bytes wait for a piece or two rather than for rarest first to reach them.
    pub fn set_focus(&mut self, now: Instant, digest: &Digest, piece: Option<u32>) {
        let Some(s) = self.swarms.find(digest) else {
            return;
        };
        let sw = self.swarms.live(s);
        let piece = piece.filter(|&p| p < sw.layout.pieces);
        let Some(dl) = sw.phase.download_mut() else {
            return;
        };
        if dl.focus == piece {
            return;
        }
        dl.focus = piece;
        if piece.is_some() {
            self.fill(now, s);
        }
    }

    /// Super-seeding: offer a blob's pieces in index order from `start`, wrapping around,
    /// rather than the first few and then the rest at random. An origin that is owner `k`
    /// of `r` of a blob starts at piece `k * n / r`: the origins then send disjoint runs,
    /// and the run from piece 0 reaches in-order readers early.
    pub fn set_offer_start(&mut self, digest: &Digest, start: u32) {
        let Some(s) = self.swarms.find(digest) else {
            return;
        };
        let sw = self.swarms.live(s);
        let n = sw.layout.pieces as usize;
        if let Some(ss) = sw.phase.super_seed_mut() {
            ss.start_at(start, n);
        }
    }

    /// The pieces held of a blob in the engine.
    pub fn have(&self, digest: &Digest) -> Option<&Bitfield> {
        self.swarms.of(digest).map(|s| &s.have)
    }

    pub fn stats(&self, digest: &Digest) -> Option<SwarmStats> {
        self.swarms.of(digest).map(|s| SwarmStats {
            connections: s.conns.len(),
            in_flight: s.phase.download().map_or(0, |d| d.in_flight),
            known_peers: s.known.len(),
            ..s.stats.clone()
        })
    }

    /// The peers at the other end of a blob's connections.
    pub fn peers(&self, digest: &Digest) -> Vec<PeerId> {
        self.swarms
            .of(digest)
            .map(|s| {
                s.conns
                    .iter()
                    .filter_map(|&c| self.conns.get(c).map(|c| c.peer))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    pub fn is_shunned(&self, who: &Blame, now: Instant) -> bool {
        self.shunned.get(who).is_some_and(|&until| until > now)
    }

    /// Open connections, all blobs together.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the engine next wants [`Engine::handle_timeout`]; `None` while it holds no blob.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.swarms.is_empty() {
            None
        } else {
            self.next_tick
        }
    }

    /// Feeds one event.
    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::Announced {
                blob,
                peers,
                interval,
            } => self.on_announced(now, &blob, peers, interval),
            Event::AnnounceFailed { blob } => self.on_announce_failed(now, &blob),
            Event::DialFailed { blob, peer, code } => self.on_dial_failed(now, &blob, peer, code),
            Event::Closed { conn, reason } => self.on_closed(now, conn, reason),
            Event::Message { conn, msg } => self.on_message(now, conn, msg),
            Event::PieceReceived { conn, index, valid } => self.on_piece(now, conn, index, valid),
            Event::PieceWritten { blob, index, ok } => self.on_written(now, &blob, index, ok),
            Event::Uploaded { conn, index } => self.on_uploaded(now, conn, index),
            Event::Committed { blob, ok } => self.on_committed(now, &blob, ok),
        }
    }

    fn on_message(&mut self, now: Instant, id: ConnId, msg: Message) {
        if self.conns.get(id).is_none() {
            return;
        }
        match msg {
            Message::KeepAlive => {}
            Message::Bitfield(bf) => self.on_bitfield(now, id, bf),
            Message::Have(i) => self.on_have(now, id, i),
            Message::Request(i) => self.on_request(now, id, i),
            Message::Cancel(i) => self.on_cancel(id, i),
            Message::Reject(i) => self.on_reject(now, id, i),
            Message::Error { code, message } => {
                tracing::debug!(conn = %id, ?code, %message, "peer closed with an error");
                self.on_closed(now, id, CloseReason::Remote(code));
            }
            Message::Piece { index, .. } => {
                // Pieces reach the engine as `PieceReceived`, after verification; a piece
                // here is a driver bug, not the peer's fault.
                tracing::warn!(conn = %id, index, "unverified piece handed to the engine; ignored");
            }
        }
    }

    /// Runs periodic work: request time-outs, dialling, announcing, the end of seeding.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.next_tick else { return };
        if now < due {
            return;
        }
        self.next_tick = Some(now + self.cfg.tick);
        self.shunned.retain(|_, until| *until > now);
        for s in self.swarms.ids() {
            let Some(sw) = self.swarms.get(s) else {
                continue;
            };
            let timeout = self.cfg.request_timeout;
            let stalled: Vec<ConnId> = sw
                .conns
                .iter()
                .copied()
                .filter(|&c| {
                    self.conns.get(c).is_some_and(|c| {
                        !c.requests.is_empty()
                            && now.saturating_duration_since(c.last_progress) >= timeout
                    })
                })
                .collect();
            for c in stalled {
                self.on_stall(now, c);
            }
            let Some(sw) = self.swarms.get(s) else {
                continue;
            };
            if sw.phase.is_seeding()
                && sw.uploads == 0
                && self
                    .cfg
                    .seed_idle
                    .is_some_and(|idle| now.saturating_duration_since(sw.last_active) >= idle)
            {
                tracing::debug!(blob = %sw.digest, "seeding idle; retiring");
                self.retire(s, ErrorCode::Shutdown);
                continue;
            }
            // Connection windows follow each connection's rate.
            let ids = sw.conns.clone();
            for c in ids {
                self.update_window(now, c);
            }
            self.forget_stale(now, s);
            self.announce_if_due(s, now);
            self.dial(now, s);
            self.fill(now, s);
        }
    }

    fn retire(&mut self, s: SwarmId, code: ErrorCode) {
        let Some(sw) = self.swarms.remove(s) else {
            return;
        };
        self.dialing = self.dialing.saturating_sub(sw.dialing);
        for c in sw.conns {
            if let Some(conn) = self.conns.remove(c) {
                if !conn.outbound {
                    self.inbound = self.inbound.saturating_sub(1);
                }
                self.actions.push_back(Action::Close {
                    conn: c,
                    code: Some(code),
                });
            }
        }
        self.actions.push_back(Action::Retired { blob: sw.digest });
    }
}
