//! The tracker the simulated hosts announce to: the tracker's own handout policy
//! ([`shoal_core::handout`]) over a table of the hosts that announced, each in the class it
//! last announced. Entries do not expire: a run is shorter than a tracker's time to live.

use std::collections::HashMap;

use rand::Rng;
use shoal_core::handout::{self, Caller};
use shoal_core::peer::{PeerId, PeerInfo};

#[derive(Debug, Default)]
pub(super) struct Tracker {
    complete: Vec<PeerInfo>,
    in_progress: Vec<PeerInfo>,
    /// Where each peer is: its class (complete or not) and its place there.
    index: HashMap<PeerId, (bool, usize)>,
    /// Peers in the order they first announced.
    order: Vec<PeerId>,
}

impl Tracker {
    /// Records `me`'s announce, then answers it as the tracker does: up to `want` peers,
    /// with the `origins` (each owns the blob here) in the room left.
    pub fn announce(
        &mut self,
        me: &PeerInfo,
        complete: bool,
        want: usize,
        origins: &[PeerInfo],
        rng: &mut impl Rng,
    ) -> Vec<PeerInfo> {
        self.record(me, complete);
        let swarm = handout::Swarm {
            complete: &self.complete,
            in_progress: &self.in_progress,
        };
        let caller = Caller {
            peer_id: me.peer_id,
            addr: me.addr,
        };
        let exclude: Vec<PeerId> = origins.iter().map(|o| o.peer_id).collect();
        handout::answer(
            swarm,
            &caller,
            want,
            origins.to_vec(),
            &exclude,
            |_| true,
            rng,
        )
    }

    /// Where `peer` first announced among all who did.
    pub fn rank(&self, peer: &PeerId) -> Option<usize> {
        self.order.iter().position(|p| p == peer)
    }

    /// As the tracker's table does: a new peer joins the end of its class; one whose state
    /// changed leaves its place to the last of its old class and joins the end of the new.
    fn record(&mut self, me: &PeerInfo, complete: bool) {
        match self.index.get(&me.peer_id).copied() {
            Some((was, _)) if was == complete => return,
            Some((was, pos)) => {
                let class = self.class(was);
                class.swap_remove(pos);
                if let Some(moved) = class.get(pos).map(|p| p.peer_id) {
                    self.index.insert(moved, (was, pos));
                }
            }
            None => self.order.push(me.peer_id),
        }
        let class = self.class(complete);
        class.push(me.clone());
        let pos = class.len() - 1;
        self.index.insert(me.peer_id, (complete, pos));
    }

    fn class(&mut self, complete: bool) -> &mut Vec<PeerInfo> {
        if complete {
            &mut self.complete
        } else {
            &mut self.in_progress
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    fn host(i: u8, origin: bool) -> PeerInfo {
        PeerInfo {
            peer_id: PeerId([i; 20]),
            addr: SocketAddr::from(([10, 0, 0, i], 7000)),
            complete: origin,
            origin,
        }
    }

    #[test]
    fn a_host_that_completes_is_handed_out_first_and_origins_keep_their_room() {
        let mut t = Tracker::default();
        let mut rng = SmallRng::seed_from_u64(1);
        let origins = [host(100, true)];
        for i in 1..=4 {
            t.announce(&host(i, false), false, 3, &origins, &mut rng);
        }
        t.announce(&host(3, false), true, 3, &origins, &mut rng);
        let got = t.announce(&host(9, false), false, 3, &origins, &mut rng);
        let ids: Vec<PeerId> = got.iter().map(|p| p.peer_id).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[0], PeerId([3; 20]), "the complete host first");
        assert!(got[0].complete && !got[1].complete);
        assert_eq!(ids[2], PeerId([100; 20]), "the origin's slot kept, last");
        assert_eq!(t.rank(&PeerId([3; 20])), Some(2));
        assert_eq!(t.rank(&PeerId([9; 20])), Some(4));
    }
}
