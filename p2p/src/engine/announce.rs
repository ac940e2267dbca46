//! Announces: when to ask discovery for peers, and what to make of its answer.

use std::time::{Duration, Instant};

use shoal_core::Digest;
use shoal_core::peer::PeerInfo;

use super::known::KnownState;
use super::swarm::SwarmId;
use super::{Action, Engine};

/// The longest wait between announces whatever discovery answers (the tracker's own answers
/// are clamped tighter by `discovery::Peers::clamped`).
const MAX_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(3600);

/// The longest wait after failed announces.
const MAX_ANNOUNCE_RETRY: Duration = Duration::from_secs(60);

/// One swarm's announces.
#[derive(Debug)]
pub(super) struct Announcing {
    /// Whether the blob is announced at all.
    enabled: bool,
    /// An announce is out.
    pending: bool,
    next: Option<Instant>,
    failures: u32,
}

impl Announcing {
    /// The first announce, if any, is due at once.
    pub fn new(enabled: bool, now: Instant) -> Self {
        Announcing {
            enabled,
            pending: false,
            next: enabled.then_some(now),
            failures: 0,
        }
    }

    /// Whether an announce is due; if so it is out from now on.
    fn start_if_due(&mut self, now: Instant) -> bool {
        let due = self.enabled && !self.pending && self.next.is_some_and(|t| t <= now);
        if due {
            self.pending = true;
        }
        due
    }

    /// Announce again at once, whatever is out (the blob just completed).
    pub fn again_now(&mut self, now: Instant) {
        self.next = Some(now);
        self.pending = false;
    }
}

impl Engine {
    pub(super) fn announce_if_due(&mut self, s: SwarmId, now: Instant) {
        let sw = self.swarms.live(s);
        if sw.announce.start_if_due(now) {
            let a = Action::Announce {
                blob: sw.digest,
                complete: sw.phase.is_seeding(),
            };
            self.actions.push_back(a);
        }
    }

    pub(super) fn on_announce_failed(&mut self, now: Instant, blob: &Digest) {
        let Some(s) = self.swarms.find(blob) else {
            return;
        };
        let retry = self.cfg.announce_retry;
        let a = &mut self.swarms.live(s).announce;
        a.pending = false;
        a.failures += 1;
        let backoff = retry.saturating_mul(1 << a.failures.min(5));
        a.next = Some(now + backoff.min(MAX_ANNOUNCE_RETRY));
    }

    pub(super) fn on_announced(
        &mut self,
        now: Instant,
        blob: &Digest,
        peers: Vec<PeerInfo>,
        interval: Duration,
    ) {
        let Some(s) = self.swarms.find(blob) else {
            return;
        };
        let me = self.me;
        let min = self.cfg.min_announce_interval;
        let max_known = self.cfg.max_known_peers;
        let shunned: Vec<bool> = peers
            .iter()
            .map(|p| self.is_listed_shunned(&p.peer_id, p.addr, now))
            .collect();
        let sw = self.swarms.live(s);
        let a = &mut sw.announce;
        a.pending = false;
        a.failures = 0;
        // Whatever discovery said: `now + interval` must stay a time, and a node must not
        // stop asking for ever.
        a.next = Some(now + interval.clamp(min, MAX_ANNOUNCE_INTERVAL.max(min)));
        for (p, shunned) in peers.into_iter().zip(shunned) {
            if p.peer_id == me || shunned {
                continue;
            }
            if let Some(k) = sw.known.find(&p.peer_id) {
                let known = &mut sw.known[k];
                known.heard = now;
                if known.state == KnownState::Idle {
                    known.info = p;
                }
                continue;
            }
            let Some(k) = sw.known.learn(p.clone(), now, max_known) else {
                continue;
            };
            // A peer already connected to this node from its own host is that connection.
            if !p.origin
                && let Some(&id) = sw.conns.iter().find(|&&id| {
                    self.conns.get(id).is_some_and(|c| {
                        !c.outbound
                            && !c.linked
                            && c.peer == p.peer_id
                            && c.addr.ip() == p.addr.ip()
                    })
                })
                && let Some(c) = self.conns.get_mut(id)
            {
                c.linked = true;
                sw.known[k].state = KnownState::Connected(id);
            }
        }
        self.dial(now, s);
    }
}
