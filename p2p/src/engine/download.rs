//! Downloading: what peers say they hold, pieces arriving, requests that time out or are
//! rejected, pieces written, and the whole blob committed.

use std::time::Instant;

use shoal_core::Digest;

use super::requests::{cancel, put_back, stream_ahead, take_in_flight, target_in_flight};
use super::swarm::{Phase, SwarmId};
use super::{Action, Blame, ConnId, Engine, SwarmError};
use crate::bitfield::Bitfield;
use crate::wire::{ErrorCode, Message};

/// Failed piece writes after which a download gives up.
const MAX_WRITE_FAILURES: u32 = 3;

impl Engine {
    pub(super) fn on_bitfield(&mut self, now: Instant, id: ConnId, bf: Bitfield) {
        let Some(c) = self.conns.get(id) else { return };
        let s = c.swarm;
        if c.has.is_some() {
            return self.violation(now, id, "second bitfield");
        }
        let sw = self.swarms.live(s);
        if bf.len() != sw.layout.pieces as usize {
            return self.violation(now, id, "bitfield of the wrong length");
        }
        match &mut sw.phase {
            Phase::Downloading(dl) => {
                let mut interesting = 0;
                for p in bf.ones() {
                    if !c.origin {
                        dl.picker.inc(p as u32);
                    }
                    if !sw.have.get(p) {
                        interesting += 1;
                    }
                    dl.holders.add(p, c.slot);
                }
                dl.holders.set_interesting(c.slot, interesting);
            }
            Phase::Seeding(Some(ss)) => ss.peer_has(&bf),
            Phase::Committing | Phase::Seeding(None) => {}
        }
        let both_complete = sw.phase.is_seeding() && bf.is_full();
        if let Some(c) = self.conns.get_mut(id) {
            c.has = Some(bf);
        }
        if both_complete {
            // Two seeds have nothing to say to each other; free the slot.
            self.drop_conn(now, id, Some(ErrorCode::Shutdown));
            return;
        }
        self.offer(s);
        self.fill(now, s);
    }

    pub(super) fn on_have(&mut self, now: Instant, id: ConnId, i: u32) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let s = c.swarm;
        let Some(has) = c.has.as_mut() else {
            return self.violation(now, id, "have before bitfield");
        };
        if !has.set(i as usize) {
            return;
        }
        let peer_complete = has.is_full();
        let origin = c.origin;
        let sw = self.swarms.live(s);
        if let Some(ss) = sw.phase.super_seed_mut() {
            ss.peer_got(i);
        }
        if sw.phase.is_seeding() && peer_complete {
            self.drop_conn(now, id, Some(ErrorCode::Shutdown));
            return;
        }
        if sw.phase.is_super_seeding() {
            self.offer_taken(id, i);
            return;
        }
        let ahead = stream_ahead(&self.cfg, &sw.layout);
        let Phase::Downloading(dl) = &mut sw.phase else {
            return;
        };
        if !origin {
            dl.picker.inc(i);
        }
        dl.holders.add(i as usize, c.slot);
        if sw.have.get(i as usize) {
            return;
        }
        dl.holders.more_interesting(c.slot);
        if !dl.picker.is_wanted(i) {
            // Arrived and being written.
            return;
        }
        if origin || dl.focus.is_some_and(|f| dl.picker.in_focus(i, f, ahead)) {
            // An origin offering a piece (super-seeding), or a piece a reader is about to
            // need: worth a look at once.
            self.fill(now, s);
            return;
        }
        // The cheap path: a newly announced piece nobody is fetching yet, from a connection
        // with room, while the blob is short of requests. Most haves end here or above.
        if dl.picker.requested(i) == 0
            && c.requests.len() < c.window
            && !c.backed_off(now)
            && dl.in_flight_to_peers < target_in_flight(&self.cfg, dl, &sw.layout, now)
        {
            take_in_flight(dl, c, id, i, now, &mut self.actions);
        }
    }

    pub(super) fn on_piece(&mut self, now: Instant, id: ConnId, index: u32, valid: bool) {
        let Some(c) = self.conns.get_mut(id) else {
            self.actions
                .push_back(Action::DropPiece { conn: id, index });
            return;
        };
        let s = c.swarm;
        let peer = c.peer;
        let origin = c.origin;
        let rate_window = self.cfg.rate_window;
        let asked = c.has_asked(index);
        let crossed = c.cancelled.iter().position(|&p| p == index);
        if !asked && crossed.is_none() {
            // Nobody asked for it: a protocol error on this connection, not evidence against
            // whoever the peer claims to be.
            self.actions
                .push_back(Action::DropPiece { conn: id, index });
            return self.violation(now, id, "piece never requested");
        }
        if let Some(pos) = crossed {
            c.cancelled.remove(pos);
        }
        let sw = self.swarms.live(s);
        let mut dl = sw.phase.download_mut();
        if let Some(dl) = dl.as_deref_mut() {
            put_back(dl, c, index);
        }
        if !valid {
            // A piece it was asked for, and it lied: what can be verified of the sender is
            // shunned (its address; its id only if something vouched for it).
            sw.stats.bad_pieces += 1;
            tracing::warn!(conn = %id, ?peer, addr = %c.addr, index, "peer sent a corrupt piece");
            self.actions
                .push_back(Action::DropPiece { conn: id, index });
            let blames: Vec<Blame> = c.blames().collect();
            for who in blames {
                self.shun(now, who, Some(ErrorCode::Protocol));
            }
            return;
        }
        let size = sw.layout.piece_size(index).unwrap_or(0) as u64;
        c.last_progress = now;
        c.last_useful = now;
        c.rate.add(now, size, rate_window);
        sw.last_active = now;
        if origin {
            sw.stats.bytes_from_origins += size;
        } else {
            sw.stats.bytes_from_peers += size;
        }
        match dl {
            Some(dl) if dl.picker.is_wanted(index) => {
                dl.rate.add(now, size, rate_window);
                dl.picker.remove(index);
                let outstanding = dl.picker.requested(index);
                self.actions.push_back(Action::WritePiece {
                    blob: sw.digest,
                    conn: id,
                    index,
                });
                if outstanding > 0 {
                    // Endgame: other copies are on their way; stop them.
                    for &other in &sw.conns {
                        if let Some(oc) = self.conns.get_mut(other) {
                            cancel(dl, oc, other, index, &mut self.actions);
                        }
                    }
                }
            }
            dl => {
                if let Some(dl) = dl {
                    dl.rate.add(now, size, rate_window);
                }
                sw.stats.duplicate_pieces += 1;
                self.actions
                    .push_back(Action::DropPiece { conn: id, index });
            }
        }
        self.update_window(now, id);
        self.fill(now, s);
    }

    /// The connection delivered nothing for `request_timeout`: its requests move to others.
    pub(super) fn on_stall(&mut self, now: Instant, id: ConnId) {
        let timeout = self.cfg.request_timeout;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let stalled = c.requested();
        c.window = 1;
        c.backoff_until = Some(now + timeout);
        let (s, peer, linked) = (c.swarm, c.peer, c.linked);
        tracing::info!(conn = %id, ?peer, addr = %c.addr, moved = stalled.len(), "requests timed out; moving them");
        let sw = self.swarms.live(s);
        sw.stats.timeouts += 1;
        self.totals.timeouts += 1;
        if let Some(dl) = sw.phase.download_mut() {
            for p in stalled {
                cancel(dl, c, id, p, &mut self.actions);
            }
        }
        self.fail_peer(now, s, peer, linked);
        if self.swarms.get(s).is_some() {
            self.fill(now, s);
        }
    }

    /// The peer turned a request down: ask someone else, and leave it alone a while.
    pub(super) fn on_reject(&mut self, now: Instant, id: ConnId, i: u32) {
        let backoff = self.cfg.reject_backoff;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if !c.has_asked(i) {
            return;
        }
        c.backoff_until = Some(now + backoff);
        let s = c.swarm;
        let sw = self.swarms.live(s);
        sw.stats.rejects_received += 1;
        self.totals.rejects_received += 1;
        if let Some(dl) = sw.phase.download_mut() {
            put_back(dl, c, i);
        }
        self.fill(now, s);
    }

    /// A connection's window follows its rate: enough requests to keep
    /// `request_queue_time` of its work queued.
    pub(super) fn update_window(&mut self, now: Instant, id: ConnId) {
        let cfg = &self.cfg;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let Some(sw) = self.swarms.get(c.swarm) else {
            return;
        };
        let rate = c.rate.decayed(now, cfg.rate_window);
        let ahead = rate * cfg.request_queue_time.as_secs_f64() / sw.layout.piece_length as f64;
        c.window = (1 + ahead.ceil() as usize).clamp(cfg.initial_window, cfg.max_window);
    }

    pub(super) fn on_written(&mut self, now: Instant, blob: &Digest, index: u32, ok: bool) {
        let Some(s) = self.swarms.find(blob) else {
            return;
        };
        let sw = self.swarms.live(s);
        let Phase::Downloading(dl) = &mut sw.phase else {
            return;
        };
        if sw.have.get(index as usize) {
            return;
        }
        if !ok {
            dl.write_failures += 1;
            if dl.write_failures >= MAX_WRITE_FAILURES {
                tracing::warn!(blob = %sw.digest, "pieces cannot be written; giving up");
                return self.fail(s, SwarmError::Storage);
            }
            dl.picker.insert(index);
            self.fill(now, s);
            return;
        }
        sw.have.set(index as usize);
        sw.stats.have = sw.have.count();
        // Once per piece per neighbour: the swarm's own tables say who holds it, so no
        // connection's state is touched.
        for (slot, id, origin) in sw.slots.iter() {
            let holds = dl.holders.written(index as usize, slot);
            // Peers that hold the piece learn nothing from hearing of it, except origins:
            // a super-seeding origin may show a piece it holds as offered and needs the have
            // to offer the next.
            if origin || !holds {
                self.actions.push_back(Action::Send {
                    conn: id,
                    msg: Message::Have(index),
                });
            }
        }
        if sw.have.is_full() {
            // Every request was answered or cancelled when its piece arrived; only a driver
            // reporting writes nobody asked for leaves any, and they end with the download.
            for &id in &sw.conns {
                if let Some(c) = self.conns.get_mut(id) {
                    for p in c.requested() {
                        cancel(dl, c, id, p, &mut self.actions);
                    }
                }
            }
            sw.phase = Phase::Committing;
            let blob = sw.digest;
            self.actions.push_back(Action::Commit { blob });
        }
    }

    /// The download failed for good: say why, and forget the blob.
    fn fail(&mut self, s: SwarmId, error: SwarmError) {
        if let Some(sw) = self.swarms.get(s) {
            let blob = sw.digest;
            self.actions.push_back(Action::Failed { blob, error });
        }
        self.retire(s, ErrorCode::Shutdown);
    }

    pub(super) fn on_committed(&mut self, now: Instant, blob: &Digest, ok: bool) {
        let Some(s) = self.swarms.find(blob) else {
            return;
        };
        let sw = self.swarms.live(s);
        if !matches!(sw.phase, Phase::Committing) {
            return;
        }
        let blob = sw.digest;
        if !ok {
            tracing::warn!(%blob, "every piece verified but the blob did not");
            return self.fail(s, SwarmError::BlobMismatch);
        }
        sw.phase = Phase::Seeding(None);
        sw.stats.complete = true;
        sw.last_active = now;
        sw.announce.again_now(now);
        self.actions.push_back(Action::Completed { blob });
        let seeds: Vec<ConnId> = sw
            .conns
            .iter()
            .copied()
            .filter(|&c| {
                // Seeds, and origins (which never download), have nothing left to say.
                self.conns
                    .get(c)
                    .is_some_and(|c| c.origin || c.has.as_ref().is_some_and(Bitfield::is_full))
            })
            .collect();
        for c in seeds {
            self.drop_conn(now, c, Some(ErrorCode::Shutdown));
        }
        self.announce_if_due(s, now);
    }
}
