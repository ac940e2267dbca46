//! Known peers: the bounded list of peers each blob has heard of, and whom to dial next.

use std::collections::HashMap;
use std::ops::{Index, IndexMut};
use std::time::{Duration, Instant};

use shoal_core::Digest;
use shoal_core::peer::{PeerId, PeerInfo};

use super::swarm::{Phase, Swarm, SwarmId};
use super::{Action, Blame, ConnId, Engine};
use crate::wire::ErrorCode;

/// A connection made to this node that has neither sent nor asked for a piece for this long,
/// and holds nothing this node lacks, is useless: while downloading, it gives its slot up to
/// a peer discovery named (if it is beyond the share of slots for connections made to it).
const USELESS_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KnownState {
    Idle,
    Dialing,
    Connected(ConnId),
}

/// A peer this node has heard of for one blob.
#[derive(Debug, Clone)]
pub(super) struct Known {
    pub info: PeerInfo,
    pub state: KnownState,
    pub failures: u32,
    pub next_try: Instant,
    /// When discovery last named it, or a connection to it last ended.
    pub heard: Instant,
}

impl Known {
    /// A peer just heard of, to be tried at once.
    pub fn new(info: PeerInfo, state: KnownState, now: Instant) -> Self {
        Known {
            info,
            state,
            failures: 0,
            next_try: now,
            heard: now,
        }
    }
}

/// A blob's known peers, with an index by peer id.
#[derive(Debug, Default)]
pub(super) struct KnownPeers {
    list: Vec<Known>,
    index: HashMap<PeerId, usize>,
}

impl Index<usize> for KnownPeers {
    type Output = Known;

    fn index(&self, k: usize) -> &Known {
        &self.list[k]
    }
}

impl IndexMut<usize> for KnownPeers {
    fn index_mut(&mut self, k: usize) -> &mut Known {
        &mut self.list[k]
    }
}

impl KnownPeers {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn find(&self, peer: &PeerId) -> Option<usize> {
        self.index.get(peer).copied()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Known> {
        self.list.iter()
    }

    pub fn push(&mut self, known: Known) -> usize {
        self.index.insert(known.info.peer_id, self.list.len());
        self.list.push(known);
        self.list.len() - 1
    }

    /// Lists a peer discovery named and this node did not know. When the list is full, it
    /// takes the place of the one not connected that was heard of least recently (the most
    /// failed among equals), unless every one was named just now: then it is not listed.
    pub fn learn(&mut self, info: PeerInfo, now: Instant, max: usize) -> Option<usize> {
        if self.list.len() < max {
            return Some(self.push(Known::new(info, KnownState::Idle, now)));
        }
        let (k, _) = self
            .list
            .iter()
            .enumerate()
            .filter(|(_, k)| k.state == KnownState::Idle && k.heard < now)
            .min_by_key(|(_, k)| (k.heard, std::cmp::Reverse(k.failures)))?;
        self.index.remove(&self.list[k].info.peer_id);
        self.index.insert(info.peer_id, k);
        self.list[k] = Known::new(info, KnownState::Idle, now);
        Some(k)
    }

    /// Forgets the peers `stale` holds for.
    fn forget(&mut self, stale: impl Fn(&Known) -> bool) {
        if !self.list.iter().any(&stale) {
            return;
        }
        self.list.retain(|k| !stale(k));
        self.index = self
            .list
            .iter()
            .enumerate()
            .map(|(i, k)| (k.info.peer_id, i))
            .collect();
    }
}

impl Swarm {
    /// A dial of `peer` ended without a connection: the peer is idle again, and an origin's
    /// dial no longer counts. Returns its place on the list if it was being dialled.
    pub(super) fn undial(&mut self, peer: &PeerId) -> Option<usize> {
        let k = self.known.find(peer)?;
        let known = &mut self.known[k];
        if known.state != KnownState::Dialing {
            return None;
        }
        known.state = KnownState::Idle;
        if known.info.origin {
            self.origin_conns = self.origin_conns.saturating_sub(1);
        }
        Some(k)
    }
}

impl Engine {
    /// Forgets the known peers of a blob that discovery has not named for a while and that
    /// are not connected.
    pub(super) fn forget_stale(&mut self, now: Instant, s: SwarmId) {
        let after = self.cfg.forget_peer_after;
        let Some(sw) = self.swarms.get_mut(s) else {
            return;
        };
        sw.known.forget(|k| {
            k.state == KnownState::Idle && now.saturating_duration_since(k.heard) >= after
        });
    }

    pub(super) fn on_dial_failed(
        &mut self,
        now: Instant,
        blob: &Digest,
        peer: PeerId,
        code: Option<ErrorCode>,
    ) {
        let Some(s) = self.swarms.find(blob) else {
            return;
        };
        self.dialing = self.dialing.saturating_sub(1);
        let backoff = self.cfg.redial_backoff;
        let max_failures = self.cfg.max_peer_failures;
        let sw = self.swarms.live(s);
        sw.dialing = sw.dialing.saturating_sub(1);
        sw.outbound = sw.outbound.saturating_sub(1);
        let mut shun = None;
        if let Some(k) = sw.undial(&peer) {
            let known = &mut sw.known[k];
            // A busy peer is healthy, only full: try it again later without holding it
            // against it.
            if code == Some(ErrorCode::Busy) {
                known.next_try = now + backoff.saturating_mul(4);
            } else {
                known.failures += 1;
                known.next_try = now + backoff.saturating_mul(1 << known.failures.min(8));
                shun = (known.failures >= max_failures).then_some(known.info.addr);
            }
        }
        if let Some(addr) = shun {
            self.shun(now, Blame::Dialled(addr), None);
        }
        self.dial(now, s);
    }

    /// Dials known peers until the blob's connection budget is used.
    pub(super) fn dial(&mut self, now: Instant, s: SwarmId) {
        let max_blob = self.cfg.max_conns_per_blob;
        let max_all = self.cfg.max_conns;
        let max_origins = self.cfg.max_origin_conns_per_blob;
        let max_out = self.cfg.max_outbound_per_blob;
        loop {
            let total = self.conns.len() + self.dialing;
            let Some(sw) = self.swarms.get_mut(s) else {
                return;
            };
            let Phase::Downloading(dl) = &sw.phase else {
                return;
            };
            if sw.outbound >= max_out || total >= max_all {
                return;
            }
            let shunned = &self.shunned;
            let is_shunned = |who: Blame| shunned.get(&who).is_some_and(|&until| until > now);
            let ready = |k: &Known| {
                k.state == KnownState::Idle
                    && k.next_try <= now
                    && !is_shunned(Blame::Dialled(k.info.addr))
                    && !is_shunned(Blame::Verified(k.info.peer_id))
            };
            if sw.conns.len() + sw.dialing >= max_blob {
                // Full. If a peer discovery named waits, a useless connection made to this
                // node beyond its share makes room: idle ones cannot crowd out dialling.
                let waiting = sw
                    .known
                    .iter()
                    .any(|k| ready(k) && (!k.info.origin || sw.origin_conns < max_origins));
                let share = max_blob.saturating_sub(max_out);
                let conns = &self.conns;
                let inbound = sw
                    .conns
                    .iter()
                    .filter(|&&id| conns.get(id).is_some_and(|c| !c.outbound))
                    .count();
                let victim = sw.conns.iter().copied().find(|&id| {
                    conns.get(id).is_some_and(|c| {
                        !c.outbound
                            && dl.holders.interesting(c.slot) == 0
                            && c.requests.is_empty()
                            && c.uploads.is_empty()
                            && now.saturating_duration_since(c.last_useful) >= USELESS_AFTER
                    })
                });
                match victim {
                    Some(id) if waiting && inbound > share => {
                        tracing::debug!(conn = %id, "dropping a useless connection to dial a listed peer");
                        self.drop_conn(now, id, Some(ErrorCode::Busy));
                        continue;
                    }
                    _ => return,
                }
            }
            // Peers first, in the order discovery gave them; origins only as a last resort
            // and only a few.
            let pick = sw
                .known
                .iter()
                .position(|k| !k.info.origin && ready(k))
                .or_else(|| {
                    (sw.origin_conns < max_origins)
                        .then(|| sw.known.iter().position(|k| k.info.origin && ready(k)))
                        .flatten()
                });
            let Some(k) = pick else { return };
            let known = &mut sw.known[k];
            known.state = KnownState::Dialing;
            if known.info.origin {
                sw.origin_conns += 1;
            }
            sw.dialing += 1;
            sw.outbound += 1;
            self.dialing += 1;
            self.actions.push_back(Action::Connect {
                blob: sw.digest,
                peer: known.info.clone(),
            });
        }
    }
}
