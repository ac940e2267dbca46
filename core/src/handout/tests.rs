use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::*;

fn id(i: u8) -> PeerId {
    PeerId([i; 20])
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7000))
}

fn entry(i: u8, at: u8, complete: bool, origin: bool) -> PeerInfo {
    PeerInfo {
        peer_id: id(i),
        addr: addr(at),
        complete,
        origin,
    }
}

/// A swarm, a caller and what it asks for: ids 1.. for complete peers, then the ones in
/// progress, 200.. for origins; addresses drawn from a few, so some are shared.
#[derive(Debug, Clone)]
struct Case {
    complete: Vec<PeerInfo>,
    in_progress: Vec<PeerInfo>,
    caller: Caller,
    want: usize,
    owners: Vec<PeerInfo>,
    /// Every origin's id, and a few peers' besides.
    exclude: Vec<PeerId>,
    stale: HashSet<PeerId>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(0u8..12, 0..30),
        proptest::collection::vec(0u8..12, 0..30),
        (0u8..64, 0u8..12),
        0usize..24,
        proptest::collection::vec(0u8..12, 0..4),
        proptest::collection::vec(0u8..64, 0..4),
        proptest::collection::vec(0u8..64, 0..12),
        any::<u64>(),
    )
        .prop_map(
            |(complete, in_progress, caller, want, owners, excluded, stale, seed)| {
                let nc = complete.len() as u8;
                let owners: Vec<PeerInfo> = owners
                    .iter()
                    .enumerate()
                    .map(|(k, &at)| entry(200 + k as u8, at, true, true))
                    .collect();
                let mut exclude: Vec<PeerId> = owners.iter().map(|o| o.peer_id).collect();
                exclude.extend(excluded.into_iter().map(id));
                Case {
                    complete: complete
                        .iter()
                        .enumerate()
                        .map(|(k, &at)| entry(1 + k as u8, at, true, false))
                        .collect(),
                    in_progress: in_progress
                        .iter()
                        .enumerate()
                        .map(|(k, &at)| entry(1 + nc + k as u8, at, false, false))
                        .collect(),
                    caller: Caller {
                        peer_id: id(caller.0),
                        addr: addr(caller.1),
                    },
                    want,
                    owners,
                    exclude,
                    stale: stale.into_iter().map(id).collect(),
                    seed,
                }
            },
        )
}

impl Case {
    fn eligible(&self, e: &PeerInfo) -> bool {
        e.peer_id != self.caller.peer_id
            && e.addr != self.caller.addr
            && !self.exclude.contains(&e.peer_id)
            && !self.stale.contains(&e.peer_id)
    }

    fn answer(&self) -> Vec<PeerInfo> {
        let swarm = Swarm {
            complete: &self.complete,
            in_progress: &self.in_progress,
        };
        let mut rng = SmallRng::seed_from_u64(self.seed);
        answer(
            swarm,
            &self.caller,
            self.want,
            self.owners.clone(),
            &self.exclude,
            |e| !self.stale.contains(&e.peer_id),
            &mut rng,
        )
    }
}

proptest! {
    #[test]
    fn the_answer_follows_the_policy(c in case()) {
        let got = c.answer();
        // Never the caller, by id or by address, origins included.
        prop_assert!(got
            .iter()
            .all(|p| p.peer_id != c.caller.peer_id && p.addr != c.caller.addr));
        // Never more than asked, nobody twice.
        prop_assert!(got.len() <= c.want);
        let distinct: HashSet<PeerId> = got.iter().map(|p| p.peer_id).collect();
        prop_assert_eq!(distinct.len(), got.len());
        // Complete peers, then peers in progress, then origins.
        let rank = |p: &PeerInfo| match (p.origin, p.complete) {
            (false, true) => 0,
            (false, false) => 1,
            (true, _) => 2,
        };
        prop_assert!(got.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])), "{got:?}");
        // Each peer from its class, eligible; each origin an owner.
        for p in &got {
            let listed = match rank(p) {
                0 => c.complete.contains(p) && c.eligible(p),
                1 => c.in_progress.contains(p) && c.eligible(p),
                _ => c.owners.contains(p),
            };
            prop_assert!(listed, "{p:?}");
        }
        // As many of each as the policy allows: complete peers fill what they can; if they
        // leave room, the origins keep theirs; peers in progress take the rest.
        let complete = c.complete.iter().filter(|p| c.eligible(p)).count().min(c.want);
        let origins = c
            .owners
            .iter()
            .filter(|o| o.peer_id != c.caller.peer_id && o.addr != c.caller.addr)
            .count();
        let reserve = if complete < c.want { origins } else { 0 };
        let in_progress = c
            .in_progress
            .iter()
            .filter(|p| c.eligible(p))
            .count()
            .min(c.want.saturating_sub(complete).saturating_sub(reserve));
        let count = |r| got.iter().filter(|p| rank(p) == r).count();
        prop_assert_eq!(count(0), complete);
        prop_assert_eq!(count(1), in_progress);
        prop_assert_eq!(count(2), origins.min(c.want - complete - in_progress));
    }
}

#[test]
fn the_origins_come_best_first_in_the_room_left() {
    let in_progress: Vec<PeerInfo> = (1..=10).map(|i| entry(i, i, false, false)).collect();
    let owners = vec![entry(200, 200, true, true), entry(201, 201, true, true)];
    let caller = Caller {
        peer_id: id(99),
        addr: addr(99),
    };
    let swarm = Swarm {
        complete: &[],
        in_progress: &in_progress,
    };
    let mut rng = SmallRng::seed_from_u64(1);
    let got = answer(swarm, &caller, 5, owners.clone(), &[], |_| true, &mut rng);
    assert_eq!(got.len(), 5);
    assert_eq!(got[3..], owners[..], "two slots kept, best owner first");
    // An origin announcing is not handed itself.
    let caller = Caller {
        peer_id: id(200),
        addr: addr(200),
    };
    let got = answer(swarm, &caller, 5, owners.clone(), &[], |_| true, &mut rng);
    assert_eq!(got[4..], owners[1..]);
}

#[test]
fn positions_are_distinct_and_uniformly_ordered() {
    let mut rng = rand::rng();
    let mut counts = HashMap::new();
    for _ in 0..12_000 {
        let p = positions(&mut rng, 4, 2);
        assert_eq!(p.len(), 2);
        assert!(p[0] != p[1] && p[0] < 4 && p[1] < 4);
        *counts.entry((p[0], p[1])).or_insert(0) += 1;
    }
    // 12 ordered pairs, about 1,000 each.
    assert_eq!(counts.len(), 12);
    assert!(
        counts.values().all(|&c| (800..1200).contains(&c)),
        "{counts:?}"
    );
    assert_eq!(
        positions(&mut rng, 5, 5)
            .into_iter()
            .collect::<HashSet<_>>()
            .len(),
        5
    );
    assert!(positions(&mut rng, 0, 0).is_empty());
}
