//! Connections: admitting them, closing them, and holding their misdeeds against what this
//! node can verify of the peer (shunning).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use shoal_core::Digest;
use shoal_core::peer::{PeerId, PeerInfo};

use super::conn::{Conn, Rate, blame_for};
use super::known::{Known, KnownState};
use super::requests::put_back;
use super::swarm::{Phase, SwarmId};
use super::{Action, Blame, CloseReason, ConnId, Engine, Refusal, Remote};
use crate::bitfield::Bitfield;
use crate::wire::{ErrorCode, Message};

impl Engine {
    /// Whether a peer discovery lists at `addr` as `peer` is not to be dialled.
    pub(super) fn is_listed_shunned(&self, peer: &PeerId, addr: SocketAddr, now: Instant) -> bool {
        self.is_shunned(&Blame::Dialled(addr), now) || self.is_shunned(&Blame::Verified(*peer), now)
    }

    /// Admits a connection whose handshake named `blob`: an inbound one, or the result of an
    /// [`Action::Connect`] (`outbound`). On success the connection's first action, sending
    /// this node's bitfield, is queued.
    ///
    /// The connection is an origin's only if it is outbound and discovery listed the
    /// address dialled as an origin's; a connection made to this node never is (origins only
    /// seed, so they never dial).
    pub fn open(
        &mut self,
        now: Instant,
        blob: &Digest,
        remote: Remote,
        outbound: bool,
    ) -> Result<ConnId, Refusal> {
        let Some(s) = self.swarms.find(blob) else {
            return Err(Refusal::UnknownBlob);
        };
        let peer = remote.peer;
        if outbound {
            // The dial this answers is over, whatever happens next.
            self.dialing = self.dialing.saturating_sub(1);
            if let Some(sw) = self.swarms.get_mut(s) {
                sw.dialing = sw.dialing.saturating_sub(1);
            }
        }
        let result = self.admit(now, s, remote, outbound);
        if result.is_err() && outbound {
            let redial = now + self.cfg.redial_backoff;
            let sw = self.swarms.live(s);
            sw.outbound = sw.outbound.saturating_sub(1);
            if let Some(k) = sw.undial(&peer) {
                sw.known[k].next_try = redial;
            }
        }
        result
    }

    fn admit(
        &mut self,
        now: Instant,
        s: SwarmId,
        remote: Remote,
        outbound: bool,
    ) -> Result<ConnId, Refusal> {
        let Remote {
            peer,
            addr,
            verified,
        } = remote;
        if peer == self.me || verified == Some(self.me) {
            return Err(Refusal::SelfConnection);
        }
        if self.is_shunned(&blame_for(outbound, addr), now)
            || verified.is_some_and(|v| self.is_shunned(&Blame::Verified(v), now))
        {
            return Err(Refusal::Shunned);
        }
        let me = self.me;
        let total = self.conns.len() + self.dialing;
        let sw = self.swarms.live(s);
        // The known peer this connection is: for a dial, the entry dialled; for a connection
        // made to this node, the entry of the id it claims, but only from that peer's own host
        // and never an origin's, so a stranger cannot take another peer's place by naming it.
        let known = sw.known.find(&peer).filter(|&k| {
            let info = &sw.known[k].info;
            if outbound {
                info.addr == addr
            } else {
                !info.origin && info.addr.ip() == addr.ip()
            }
        });
        let origin = outbound && known.is_some_and(|k| sw.known[k].info.origin);
        let listed_addr = known.map(|k| sw.known[k].info.addr);
        if let Some(a) = listed_addr
            && self.is_listed_shunned(&peer, a, now)
        {
            return Err(Refusal::Shunned);
        }
        let sw = self.swarms.live(s);
        let mut replace = None;
        if let Some(k) = known
            && let KnownState::Connected(existing) = sw.known[k].state
        {
            // Both ends may dial each other at once. Both keep the connection dialled by the
            // larger peer id, so they agree on which one survives.
            let existing_out = self.conns.get(existing).is_some_and(|c| c.outbound);
            if existing_out == outbound {
                return Err(Refusal::Duplicate);
            }
            let initiator = |out: bool| if out { me } else { peer };
            if initiator(outbound) < initiator(existing_out) {
                return Err(Refusal::Duplicate);
            }
            replace = Some(existing);
        }
        if !outbound && replace.is_none() {
            // Connections made to this node may take any free slot; while it downloads,
            // those beyond their share that turn out useless give theirs back when a peer
            // discovery named waits to be dialled (see `dial`).
            let full = sw.conns.len() + sw.dialing >= self.cfg.max_conns_per_blob;
            // And in all, at least one blob's dialling share is kept.
            let kept = self.cfg.max_outbound_per_blob.min(self.cfg.max_conns / 2);
            if full || total >= self.cfg.max_conns || self.inbound >= self.cfg.max_conns - kept {
                return Err(Refusal::Busy);
            }
            if !sw.phase.is_seeding()
                && known.is_some_and(|k| sw.known[k].state == KnownState::Dialing && peer < me)
            {
                // Our own dial to this peer is under way and will be the one kept.
                return Err(Refusal::Duplicate);
            }
        }
        if let Some(old) = replace {
            self.drop_conn(now, old, Some(ErrorCode::Refused));
        }
        let sw = self.swarms.live(s);
        let Some(slot) = sw.slots.free() else {
            return Err(Refusal::Busy);
        };
        let conn = Conn {
            swarm: s,
            peer,
            addr,
            verified,
            origin,
            outbound,
            linked: known.is_some(),
            cancelled: VecDeque::new(),
            has: None,
            slot,
            requests: Vec::new(),
            uploads: Vec::new(),
            window: self.cfg.initial_window,
            offered: Vec::new(),
            backoff_until: None,
            last_progress: now,
            last_useful: now,
            rate: Rate::new(),
        };
        let id = self.conns.insert(conn);
        if !outbound {
            self.inbound += 1;
        }
        let sw = self.swarms.live(s);
        sw.conns.push(id);
        sw.slots.fill(slot, id, origin);
        if let Some(dl) = sw.phase.download_mut() {
            dl.holders.set_interesting(slot, 0);
        }
        sw.last_active = now;
        if let Some(k) = known {
            // An outbound origin connection was counted when its dial began.
            let counted = outbound && sw.known[k].state == KnownState::Dialing;
            if origin && !counted {
                sw.origin_conns += 1;
            }
            sw.known[k].state = KnownState::Connected(id);
        } else if outbound && sw.known.len() < self.cfg.max_known_peers {
            // Dialled without being listed (a driver's own choice): known from now on.
            let info = PeerInfo {
                peer_id: peer,
                addr,
                complete: false,
                origin: false,
            };
            sw.known
                .push(Known::new(info, KnownState::Connected(id), now));
            if let Some(c) = self.conns.get_mut(id) {
                c.linked = true;
            }
        }
        // A super-seed shows nothing at first; it offers pieces once it knows what the peer
        // holds.
        let shown = if sw.phase.is_super_seeding() {
            Bitfield::new(sw.have.len())
        } else {
            sw.have.clone()
        };
        self.actions.push_back(Action::Send {
            conn: id,
            msg: Message::Bitfield(shown),
        });
        tracing::debug!(conn = %id, peer = ?peer, %addr, outbound, origin, "peer connected");
        Ok(id)
    }

    pub(super) fn on_closed(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let (s, peer, linked) = (c.swarm, c.peer, c.linked);
        tracing::debug!(%conn, ?peer, ?reason, "connection closed");
        self.drop_conn(now, conn, None);
        match reason {
            CloseReason::Protocol => self.fail_peer(now, s, peer, linked),
            CloseReason::Remote(ErrorCode::Protocol) | CloseReason::Disconnected => {
                // Not necessarily the peer's fault (it may have stopped seeding), so no
                // failure is counted; the redial back-off in `drop_conn` applies.
            }
            CloseReason::Remote(_) => {}
        }
        if self.swarms.get(s).is_some() {
            self.dial(now, s);
            self.fill(now, s);
        }
    }

    /// A protocol violation the engine sees (a message out of order): the peer is dropped
    /// and the failure counted.
    pub(super) fn violation(&mut self, now: Instant, id: ConnId, what: &'static str) {
        let Some(c) = self.conns.get(id) else { return };
        let (s, peer, linked) = (c.swarm, c.peer, c.linked);
        tracing::info!(conn = %id, ?peer, addr = %c.addr, what, "protocol violation");
        self.drop_conn(now, id, Some(ErrorCode::Protocol));
        self.fail_peer(now, s, peer, linked);
        if self.swarms.get(s).is_some() {
            self.dial(now, s);
            self.fill(now, s);
        }
    }

    /// Counts a failure against the known peer of a linked connection (the address this
    /// node dials it at) and shuns that address once it has failed too often. Connections
    /// that are no known peer's are only closed: their claimed id is nobody's to blame.
    pub(super) fn fail_peer(&mut self, now: Instant, s: SwarmId, peer: PeerId, linked: bool) {
        if !linked {
            return;
        }
        let max = self.cfg.max_peer_failures;
        let Some(sw) = self.swarms.get_mut(s) else {
            return;
        };
        let Some(k) = sw.known.find(&peer) else {
            return;
        };
        sw.known[k].failures += 1;
        if sw.known[k].failures >= max {
            let addr = sw.known[k].info.addr;
            self.shun(now, Blame::Dialled(addr), Some(ErrorCode::Protocol));
        }
    }

    /// Drops every connection `who` covers and refuses it for `shun_for`.
    pub(super) fn shun(&mut self, now: Instant, who: Blame, code: Option<ErrorCode>) {
        tracing::info!(?who, for_s = self.cfg.shun_for.as_secs(), "shunning");
        let until = now + self.cfg.shun_for;
        self.shunned.insert(who, until);
        self.actions.push_back(Action::Shunned { who, until });
        let ids: Vec<ConnId> = self
            .conns
            .ids()
            .filter(|&c| {
                self.conns
                    .get(c)
                    .is_some_and(|c| c.blames().any(|b| b == who))
            })
            .collect();
        let mut touched = Vec::new();
        for c in ids {
            if let Some(conn) = self.conns.get(c) {
                touched.push(conn.swarm);
            }
            self.drop_conn(now, c, Some(code.unwrap_or(ErrorCode::Refused)));
        }
        for s in touched {
            if self.swarms.get(s).is_some() {
                self.fill(now, s);
            }
        }
    }

    /// Forgets a connection; with `code`, the engine is the one closing it and tells the
    /// driver to.
    pub(super) fn drop_conn(&mut self, now: Instant, id: ConnId, code: Option<ErrorCode>) {
        let Some(mut c) = self.conns.remove(id) else {
            return;
        };
        if code.is_some() {
            self.actions.push_back(Action::Close { conn: id, code });
        }
        if !c.outbound {
            self.inbound = self.inbound.saturating_sub(1);
        }
        let backoff = self.cfg.redial_backoff;
        let Some(sw) = self.swarms.get_mut(c.swarm) else {
            return;
        };
        if let Some(pos) = sw.conns.iter().position(|&x| x == id) {
            sw.conns.swap_remove(pos);
        }
        sw.uploads = sw.uploads.saturating_sub(c.uploads.len());
        match &mut sw.phase {
            Phase::Downloading(dl) => {
                for p in c.requested() {
                    put_back(dl, &mut c, p);
                }
                if let Some(has) = &c.has {
                    if !c.origin {
                        for p in has.ones() {
                            dl.picker.dec(p as u32);
                        }
                    }
                    dl.holders.remove_slot(c.slot, has.ones());
                }
            }
            Phase::Seeding(Some(ss)) => ss.conn_gone(&c, sw.conns.len()),
            Phase::Committing | Phase::Seeding(None) => {}
        }
        sw.slots.clear(c.slot);
        if c.origin {
            sw.origin_conns = sw.origin_conns.saturating_sub(1);
        }
        if c.outbound {
            sw.outbound = sw.outbound.saturating_sub(1);
        }
        if let Some(k) = sw.known.find(&c.peer)
            && sw.known[k].state == KnownState::Connected(id)
        {
            sw.known[k].state = KnownState::Idle;
            sw.known[k].next_try = now + backoff;
            sw.known[k].heard = now;
        }
        if !c.offered.is_empty() {
            self.offer(c.swarm);
        }
    }
}
