//! Uploading: which requests to serve, and super-seeding (what a seed offers to whom).

use std::time::Instant;

use rand::RngExt;

use super::conn::Conn;
use super::requests::MIN_STREAM_AHEAD;
use super::swarm::SwarmId;
use super::{Action, ConnId, Engine};
use crate::bitfield::Bitfield;
use crate::wire::Message;

/// Super-seeding: pieces offered to one peer at a time, so that the first copies spread over
/// many peers.
const SUPER_SEED_PER_CONN: usize = 2;

/// A super-seeding swarm's books: uploads of each piece, and connections each piece is
/// offered to.
#[derive(Debug)]
pub(super) struct SuperSeed {
    served: Vec<u32>,
    offered: Vec<u16>,
    /// Offers out, all connections together.
    out: usize,
    /// Connected peers lacking each piece: a round of offers is over when no one connected
    /// lacks a piece of it.
    lacking: Vec<u32>,
    /// The connection offered to last.
    cursor: usize,
    /// Offers go out in index order from this piece, wrapping around; `None`: the first few
    /// pieces, then the rest at random.
    start: Option<usize>,
}

impl SuperSeed {
    pub fn new(pieces: usize) -> Self {
        SuperSeed {
            served: vec![0; pieces],
            offered: vec![0; pieces],
            out: 0,
            lacking: vec![0; pieces],
            cursor: 0,
            start: None,
        }
    }

    /// Offers start at piece `start` of `pieces`.
    pub fn start_at(&mut self, start: u32, pieces: usize) {
        self.start = (pieces > 0).then(|| start as usize % pieces);
    }

    /// A peer connected whose pieces are `has`.
    pub fn peer_has(&mut self, has: &Bitfield) {
        for (p, l) in self.lacking.iter_mut().enumerate() {
            if !has.get(p) {
                *l += 1;
            }
        }
    }

    /// A connected peer got piece `p`.
    pub fn peer_got(&mut self, p: u32) {
        if let Some(l) = self.lacking.get_mut(p as usize) {
            *l = l.saturating_sub(1);
        }
    }

    /// The connection `c` is gone; `left` connections remain.
    pub fn conn_gone(&mut self, c: &Conn, left: usize) {
        for &p in &c.offered {
            if let Some(o) = self.offered.get_mut(p as usize) {
                *o = o.saturating_sub(1);
            }
        }
        self.out = self.out.saturating_sub(c.offered.len());
        if let Some(has) = &c.has {
            for (p, l) in self.lacking.iter_mut().enumerate() {
                if !has.get(p) {
                    *l = l.saturating_sub(1);
                }
            }
        }
        if self.cursor >= left {
            self.cursor = 0;
        }
    }

    /// Offers out, all connections together.
    #[cfg(test)]
    pub fn offers_out(&self) -> usize {
        self.out
    }
}

impl Engine {
    pub(super) fn on_request(&mut self, now: Instant, id: ConnId, i: u32) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let sw = self.swarms.live(c.swarm);
        c.last_useful = now;
        if c.uploads.contains(&i) {
            return;
        }
        if !sw.have.get(i as usize)
            || c.uploads.len() >= self.cfg.max_uploads_per_conn
            || sw.uploads >= self.cfg.max_upload_queue
        {
            sw.stats.rejects_sent += 1;
            self.totals.rejects_sent += 1;
            self.actions.push_back(Action::Send {
                conn: id,
                msg: Message::Reject(i),
            });
            return;
        }
        c.uploads.push(i);
        sw.uploads += 1;
        sw.last_active = now;
        if let Some(n) = sw
            .phase
            .super_seed_mut()
            .and_then(|ss| ss.served.get_mut(i as usize))
        {
            *n += 1;
        }
        self.actions
            .push_back(Action::Upload { conn: id, index: i });
    }

    /// The peer cancelled a request: its upload is dropped if it has not started.
    pub(super) fn on_cancel(&mut self, id: ConnId, i: u32) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if let Some(pos) = c.uploads.iter().position(|&x| x == i) {
            c.uploads.swap_remove(pos);
            let sw = self.swarms.live(c.swarm);
            sw.uploads = sw.uploads.saturating_sub(1);
            self.actions
                .push_back(Action::CancelUpload { conn: id, index: i });
        }
    }

    pub(super) fn on_uploaded(&mut self, now: Instant, conn: ConnId, index: u32) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let Some(pos) = c.uploads.iter().position(|&i| i == index) else {
            return;
        };
        c.uploads.swap_remove(pos);
        let sw = self.swarms.live(c.swarm);
        sw.uploads = sw.uploads.saturating_sub(1);
        sw.stats.bytes_uploaded += sw.layout.piece_size(index).unwrap_or(0) as u64;
        sw.last_active = now;
        if sw.phase.is_super_seeding() {
            // Sent: offer the next now rather than a round trip later, when the peer's have
            // arrives.
            self.offer_taken(conn, index);
        }
    }

    /// Super-seeding: offers pieces to peers, round robin, until `super_seed_offers` are
    /// out. Only pieces uploaded (or offered) the fewest times are offered, so every piece
    /// goes out once before any goes out twice; each offer is a have.
    pub(super) fn offer(&mut self, s: SwarmId) {
        let cap = self.cfg.super_seed_offers;
        let Some(sw) = self.swarms.get_mut(s) else {
            return;
        };
        if sw.conns.is_empty() {
            return;
        }
        let Some(ss) = sw.phase.super_seed_mut() else {
            return;
        };
        let n = sw.have.len();
        let score = |ss: &SuperSeed, p: usize| ss.served[p] + ss.offered[p] as u32;
        // The round: the fewest times any piece a connected peer lacks has gone out.
        let round = |ss: &SuperSeed| {
            (0..n)
                .filter(|&p| ss.lacking[p] > 0)
                .map(|p| score(ss, p))
                .min()
        };
        let Some(mut round_now) = round(ss) else {
            return;
        };
        let mut idle_pass = 0;
        while ss.out < cap && idle_pass < sw.conns.len() {
            ss.cursor = (ss.cursor + 1) % sw.conns.len();
            let id = sw.conns[ss.cursor];
            let Some(c) = self.conns.get_mut(id) else {
                idle_pass += 1;
                continue;
            };
            let Some(has) = c.has.as_ref() else {
                idle_pass += 1;
                continue;
            };
            if c.offered.len() >= SUPER_SEED_PER_CONN {
                idle_pass += 1;
                continue;
            }
            // With an offer start, in index order from it, so that in-order readers find a
            // growing run on peers and origins starting at different places send disjoint
            // runs. Without: a blob's first few pieces first, so that readers streaming it
            // from the start find them on peers early; the rest at random, so that two
            // origins of a swarm seldom send the same piece.
            let eligible = |p: &usize| !has.get(*p) && score(ss, *p) == round_now;
            let pick = match ss.start {
                Some(start) => (0..n).map(|k| (start + k) % n).find(eligible),
                None => {
                    let start = self.rng.random_range(0..n);
                    (0..n.min(MIN_STREAM_AHEAD))
                        .find(eligible)
                        .or_else(|| (0..n).map(|k| (start + k) % n).find(eligible))
                }
            };
            let Some(p) = pick else {
                idle_pass += 1;
                continue;
            };
            idle_pass = 0;
            c.offered.push(p as u32);
            ss.offered[p] = ss.offered[p].saturating_add(1);
            ss.out += 1;
            self.actions.push_back(Action::Send {
                conn: id,
                msg: Message::Have(p as u32),
            });
            let Some(r) = round(ss) else { return };
            round_now = r;
        }
    }

    /// Super-seeding: the peer on `id` has, or has been sent, piece `p`.
    pub(super) fn offer_taken(&mut self, id: ConnId, p: u32) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let Some(pos) = c.offered.iter().position(|&x| x == p) else {
            return;
        };
        c.offered.swap_remove(pos);
        let s = c.swarm;
        if let Some(ss) = self.swarms.live(s).phase.super_seed_mut() {
            if let Some(o) = ss.offered.get_mut(p as usize) {
                *o = o.saturating_sub(1);
            }
            ss.out = ss.out.saturating_sub(1);
        }
        self.offer(s);
    }
}
