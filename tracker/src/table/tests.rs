use std::collections::HashSet;

use super::*;

const TTL: Duration = Duration::from_secs(9);

fn table() -> MemoryTable {
    MemoryTable::new(TableConfig::default(), TTL)
}

fn blob(i: u32) -> Digest {
    Digest::sha256_of(&i.to_be_bytes())
}

fn id(i: u32) -> PeerId {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[19] = 0xaa;
    PeerId(b)
}

fn host(i: u32) -> IpAddr {
    IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])
}

fn peer(i: u32, complete: bool) -> Announce {
    Announce {
        digest: blob(0),
        peer_id: id(i),
        addr: SocketAddr::new(host(i), 7000),
        source: host(i),
        complete,
    }
}

fn pick(want: usize) -> Pick<'static> {
    Pick {
        want,
        reserve: 0,
        exclude: &[],
    }
}

fn ids(h: &Handout) -> Vec<PeerId> {
    h.peers.iter().map(|p| p.peer_id).collect()
}

#[test]
fn complete_peers_come_first_and_the_caller_never() {
    let t = table();
    let now = Instant::now();
    for i in 0..5 {
        t.announce_at(&peer(i, false), pick(50), now).unwrap();
    }
    for i in 5..8 {
        t.announce_at(&peer(i, true), pick(50), now).unwrap();
    }
    let h = t.announce_at(&peer(0, false), pick(50), now).unwrap();
    assert_eq!(h.recorded, Recorded::Yes);
    assert_eq!(h.peers.len(), 7, "everyone but the caller");
    assert!(h.peers[..3].iter().all(|p| p.complete));
    assert!(h.peers[3..].iter().all(|p| !p.complete));
    assert!(!ids(&h).contains(&id(0)));
    assert!(h.peers.iter().all(|p| !p.origin));

    // With room for only some, the complete peers win.
    let h = t.announce_at(&peer(1, false), pick(4), now).unwrap();
    assert_eq!(h.peers.len(), 4);
    assert_eq!(h.peers.iter().filter(|p| p.complete).count(), 3);
}

#[test]
fn reserve_leaves_room_for_origins_only_when_complete_peers_do_not_fill_the_answer() {
    let t = table();
    let now = Instant::now();
    for i in 0..20 {
        t.announce_at(&peer(i, false), pick(10), now).unwrap();
    }
    let with_reserve = |want, reserve| Pick {
        want,
        reserve,
        exclude: &[],
    };
    let h = t
        .announce_at(&peer(100, false), with_reserve(10, 3), now)
        .unwrap();
    assert_eq!(h.peers.len(), 7, "3 slots kept for the origins");
    for i in 200..215 {
        t.announce_at(&peer(i, true), pick(10), now).unwrap();
    }
    let h = t
        .announce_at(&peer(100, false), with_reserve(10, 3), now)
        .unwrap();
    assert_eq!(h.peers.len(), 10, "enough seeds: no origins needed");
    assert!(h.peers.iter().all(|p| p.complete));
}

#[test]
fn excluded_ids_and_the_callers_own_address_are_never_handed_out() {
    let t = table();
    let now = Instant::now();
    for i in 0..4 {
        t.announce_at(&peer(i, true), pick(50), now).unwrap();
    }
    // A restarted peer: new id, the same address and port as peer 1's stale entry.
    let restarted = Announce {
        peer_id: id(99),
        ..peer(1, false)
    };
    let exclude = [id(3)];
    let h = t
        .announce_at(
            &restarted,
            Pick {
                want: 50,
                reserve: 0,
                exclude: &exclude,
            },
            now,
        )
        .unwrap();
    assert_eq!(
        ids(&h).into_iter().collect::<HashSet<_>>(),
        HashSet::from([id(0), id(2)])
    );
}

#[test]
fn random_within_a_class() {
    let t = table();
    let now = Instant::now();
    for i in 0..100 {
        t.announce_at(&peer(i, true), pick(5), now).unwrap();
    }
    let mut seen = HashSet::new();
    let mut firsts = HashSet::new();
    for _ in 0..50 {
        let h = t.announce_at(&peer(1000, false), pick(5), now).unwrap();
        assert_eq!(h.peers.len(), 5);
        let distinct: HashSet<_> = ids(&h).into_iter().collect();
        assert_eq!(distinct.len(), 5, "no peer twice in one answer");
        firsts.insert(h.peers[0].peer_id);
        seen.extend(distinct);
    }
    // 250 draws from 100 peers: a fixed order would show only 5.
    assert!(
        seen.len() > 50,
        "only {} distinct peers handed out",
        seen.len()
    );
    assert!(firsts.len() > 10, "the first place is not random");
}

#[test]
fn a_peer_that_completes_moves_class_and_is_not_counted_twice() {
    let t = table();
    let now = Instant::now();
    t.announce_at(&peer(0, false), pick(50), now).unwrap();
    t.announce_at(&peer(1, false), pick(50), now).unwrap();
    t.announce_at(&peer(2, false), pick(50), now).unwrap();
    t.announce_at(&peer(1, true), pick(50), now).unwrap();
    let h = t.announce_at(&peer(0, false), pick(50), now).unwrap();
    assert_eq!(ids(&h)[0], id(1));
    assert!(h.peers[0].complete);
    assert_eq!(h.peers.len(), 2);
    assert_eq!(
        t.stats_now(),
        TableStats {
            swarms: 1,
            peers: 3
        }
    );
    assert_eq!(t.entries_of(&host(1)), 1);
}

#[test]
fn expired_peers_are_not_handed_out_and_are_swept() {
    let t = table();
    let start = Instant::now();
    t.announce_at(&peer(0, true), pick(50), start).unwrap();
    t.announce_at(&peer(1, true), pick(50), start + Duration::from_secs(5))
        .unwrap();
    let later = start + TTL;
    let h = t.announce_at(&peer(2, false), pick(50), later).unwrap();
    assert_eq!(ids(&h), vec![id(1)], "peer 0 is past its time to live");

    assert_eq!(t.expire_at(later), 1);
    assert_eq!(
        t.stats_now(),
        TableStats {
            swarms: 1,
            peers: 2
        }
    );
    assert_eq!(t.entries_of(&host(0)), 0);
    assert_eq!(t.expire_at(later + TTL), 2);
    assert_eq!(t.stats_now(), TableStats::default());
    assert_eq!(t.entries_of(&host(2)), 0);
}

#[test]
fn a_swarm_at_its_bound_answers_without_recording() {
    let t = MemoryTable::new(
        TableConfig {
            max_peers_per_swarm: 3,
            ..TableConfig::default()
        },
        TTL,
    );
    let now = Instant::now();
    for i in 0..3 {
        assert_eq!(
            t.announce_at(&peer(i, true), pick(50), now)
                .unwrap()
                .recorded,
            Recorded::Yes
        );
    }
    let h = t.announce_at(&peer(3, false), pick(50), now).unwrap();
    assert_eq!(h.recorded, Recorded::SwarmFull);
    assert_eq!(h.peers.len(), 3, "the newcomer still learns whom to ask");
    assert_eq!(t.stats_now().peers, 3);
    assert_eq!(t.entries_of(&host(3)), 0);
    // Known peers still refresh.
    assert_eq!(
        t.announce_at(&peer(0, true), pick(50), now)
            .unwrap()
            .recorded,
        Recorded::Yes
    );
}

#[test]
fn the_table_bounds_hold() {
    let t = MemoryTable::new(
        TableConfig {
            max_swarms: 2,
            max_peers: 3,
            ..TableConfig::default()
        },
        TTL,
    );
    let now = Instant::now();
    let at = |i: u32, d: u32| Announce {
        digest: blob(d),
        ..peer(i, false)
    };
    t.announce_at(&at(0, 0), pick(50), now).unwrap();
    t.announce_at(&at(1, 1), pick(50), now).unwrap();
    let err = t.announce_at(&at(2, 2), pick(50), now).unwrap_err();
    assert!(
        matches!(err, TrackerError::TooManySwarms { max: 2 }),
        "{err}"
    );
    assert_eq!(t.entries_of(&host(2)), 0, "a refusal records nothing");

    t.announce_at(&at(2, 1), pick(50), now).unwrap();
    let h = t.announce_at(&at(3, 1), pick(50), now).unwrap();
    assert_eq!(h.recorded, Recorded::TableFull);
    assert_eq!(h.peers.len(), 2);
    assert_eq!(
        t.stats_now(),
        TableStats {
            swarms: 2,
            peers: 3
        }
    );

    // Expiry makes room again.
    t.expire_at(now + TTL);
    assert_eq!(t.stats_now(), TableStats::default());
    t.announce_at(&at(2, 2), pick(50), now + TTL).unwrap();
    assert_eq!(
        t.stats_now(),
        TableStats {
            swarms: 1,
            peers: 1
        }
    );
}

#[test]
fn a_flood_from_one_address_stays_bounded_whatever_ids_it_uses() {
    let t = MemoryTable::new(
        TableConfig {
            max_entries_per_source: 10,
            ..TableConfig::default()
        },
        TTL,
    );
    let now = Instant::now();
    let mut refused = 0;
    for d in 0..1000 {
        // A fresh id for every announce, all from host 7.
        let a = Announce {
            digest: blob(d),
            peer_id: id(10_000 + d),
            ..peer(7, false)
        };
        match t.announce_at(&a, pick(50), now) {
            Ok(_) => {}
            Err(TrackerError::TooManyEntriesForSource { max: 10, .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(t.entries_of(&host(7)), 10);
    // Many ids in one swarm count the same way.
    for i in 0..50 {
        let a = Announce {
            digest: blob(0),
            peer_id: id(20_000 + i),
            ..peer(7, false)
        };
        assert!(t.announce_at(&a, pick(50), now).is_err());
    }
    assert_eq!(refused, 990);
    assert_eq!(
        t.stats_now(),
        TableStats {
            swarms: 10,
            peers: 10
        }
    );
    // The same id announcing the same blob over and over is one entry.
    let first = Announce {
        peer_id: id(10_000),
        ..peer(7, true)
    };
    for _ in 0..1000 {
        t.announce_at(&first, pick(50), now).unwrap();
    }
    assert_eq!(
        t.stats_now(),
        TableStats {
            swarms: 10,
            peers: 10
        }
    );
    // Another host is not held back by the flooder.
    let a = Announce {
        digest: blob(500),
        ..peer(8, false)
    };
    assert!(t.announce_at(&a, pick(50), now).is_ok());
}

#[test]
fn an_id_announced_from_another_address_does_not_take_over_its_entry() {
    let t = table();
    let now = Instant::now();
    t.announce_at(&peer(1, true), pick(50), now).unwrap();
    // Host 9 claims host 1's id, pointing peers at itself.
    let thief = Announce {
        addr: SocketAddr::new(host(9), 6666),
        source: host(9),
        ..peer(1, true)
    };
    let h = t.announce_at(&thief, pick(50), now).unwrap();
    assert_eq!(h.recorded, Recorded::IdInUse);
    let h = t.announce_at(&peer(2, false), pick(50), now).unwrap();
    assert_eq!(h.peers.len(), 1);
    assert_eq!(h.peers[0].addr, SocketAddr::new(host(1), 7000));
    assert_eq!(t.entries_of(&host(9)), 0);
    // Once the entry has expired, the id is free again.
    let later = now + TTL;
    t.expire_at(later);
    assert_eq!(
        t.announce_at(&thief, pick(50), later).unwrap().recorded,
        Recorded::Yes
    );
}

#[test]
fn a_swarm_of_ten_thousand_answers_quickly() {
    let t = table();
    let now = Instant::now();
    for i in 0..10_000 {
        t.announce_at(&peer(i, i % 2 == 0), pick(50), now).unwrap();
    }
    assert_eq!(
        t.stats_now(),
        TableStats {
            swarms: 1,
            peers: 10_000
        }
    );
    let rounds = 2_000u32;
    let started = std::time::Instant::now();
    for r in 0..rounds {
        let i = r * 5 % 10_000;
        let h = t.announce_at(&peer(i, false), pick(50), now).unwrap();
        assert_eq!(h.peers.len(), 50);
        assert!(h.peers.iter().all(|p| p.complete && p.peer_id != id(i)));
    }
    let each = started.elapsed() / rounds;
    eprintln!("announce into a swarm of 10,000: {each:?} each");

    // Half the swarm gone stale: the sample still finds 50 live peers.
    let later = now + Duration::from_secs(5);
    for i in (0..10_000).step_by(4) {
        t.announce_at(&peer(i, true), pick(50), later).unwrap();
    }
    let h = t
        .announce_at(
            &peer(1, false),
            pick(50),
            now + TTL + Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(h.peers.len(), 50);
}

#[test]
fn the_fallback_pass_finds_the_few_live_peers() {
    let t = table();
    let start = Instant::now();
    for i in 0..1000 {
        t.announce_at(&peer(i, true), pick(50), start).unwrap();
    }
    let later = start + Duration::from_secs(5);
    for i in [17, 500, 999] {
        t.announce_at(&peer(i, true), pick(50), later).unwrap();
    }
    let h = t
        .announce_at(&peer(5000, false), pick(50), start + TTL)
        .unwrap();
    assert_eq!(
        ids(&h).into_iter().collect::<HashSet<_>>(),
        HashSet::from([id(17), id(500), id(999)])
    );
}
