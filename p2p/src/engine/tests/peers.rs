//! Peers and connections: shunning, connection limits, simultaneous dials, announces.

use super::*;

#[test]
fn repeated_stalls_get_a_peer_shunned() {
    let mut net = Net::new();
    let c = Config {
        endgame_copies: 1,
        request_timeout: Duration::from_secs(1),
        max_peer_failures: 2,
        ..cfg()
    };
    let slow = net.seeder(cfg(), false, Fault::Stall);
    let l = net.leecher(c);
    net.settle();
    for _ in 0..40 {
        net.advance(Duration::from_millis(500));
    }
    assert!(
        net.nodes[l]
            .engine
            .is_shunned(&Blame::Dialled(net.nodes[slow].info.addr), net.now)
    );
    assert_eq!(net.nodes[l].engine.connections(), 0);
}

#[test]
fn corrupt_peer_is_dropped_and_shunned_and_others_finish() {
    let mut net = Net::new();
    let bad = net.seeder(cfg(), false, Fault::Corrupt);
    net.seeder(cfg(), false, Fault::None);
    let l = net.leecher(cfg());
    net.settle();
    assert!(net.completed(l));
    let bad_id = net.nodes[bad].info.peer_id;
    let bad_at = Blame::Dialled(net.nodes[bad].info.addr);
    assert!(net.nodes[l].engine.is_shunned(&bad_at, net.now));
    let stats = net.nodes[l].engine.stats(&blob()).unwrap();
    assert_eq!(stats.bad_pieces, 1, "dropped at the first bad piece");
    // A fresh announce lists the bad peer again; it is not dialled.
    let dials_before = net.nodes[l]
        .log
        .iter()
        .filter(|a| matches!(a, Action::Connect { peer, .. } if peer.peer_id == bad_id))
        .count();
    net.advance(Duration::from_secs(60));
    let dials_after = net.nodes[l]
        .log
        .iter()
        .filter(|a| matches!(a, Action::Connect { peer, .. } if peer.peer_id == bad_id))
        .count();
    assert_eq!(dials_before, dials_after);
    // And it is refused if it dials in.
    let now = net.now;
    let bad_addr = net.nodes[bad].info.addr;
    assert_eq!(
        net.nodes[l]
            .engine
            .open(now, &blob(), Remote::claimed(bad_id, bad_addr), false),
        Err(Refusal::Shunned)
    );
    // Once the shun expires it may come back.
    net.advance(cfg().shun_for);
    assert!(!net.nodes[l].engine.is_shunned(&bad_at, net.now));
}

#[test]
fn connection_limits_per_blob_and_in_all() {
    let mut net = Net::new();
    for _ in 0..10 {
        net.seeder(cfg(), false, Fault::Stall);
    }
    let c = Config {
        max_conns_per_blob: 3,
        max_conns: 4,
        ..cfg()
    };
    let l = net.leecher(c);
    net.settle();
    assert_eq!(net.nodes[l].engine.connections(), 3);
    let other = Digest::sha256_of(b"another blob");
    let now = net.now;
    net.nodes[l]
        .engine
        .seed(now, other, layout(), false)
        .unwrap();
    let stranger = PeerId([200; 20]);
    let addr = SocketAddr::from(([10, 9, 9, 9], 1));
    // The first blob is full.
    assert_eq!(
        net.nodes[l]
            .engine
            .open(now, &blob(), Remote::claimed(stranger, addr), false),
        Err(Refusal::Busy)
    );
    // The other blob has room, but the node has one slot left in all.
    assert!(
        net.nodes[l]
            .engine
            .open(now, &other, Remote::claimed(stranger, addr), false)
            .is_ok()
    );
    assert_eq!(
        net.nodes[l]
            .engine
            .open(now, &other, Remote::claimed(PeerId([201; 20]), addr), false),
        Err(Refusal::Busy)
    );
    assert_eq!(
        net.nodes[l].engine.open(
            now,
            &Digest::sha256_of(b"?"),
            Remote::claimed(stranger, addr),
            false
        ),
        Err(Refusal::UnknownBlob)
    );
}

#[test]
fn simultaneous_dials_keep_exactly_one_connection() {
    let now = Instant::now();
    let a_id = PeerId([1; 20]);
    let b_id = PeerId([2; 20]);
    let addr = SocketAddr::from(([1, 1, 1, 1], 1));
    let mut a = Engine::new(cfg(), a_id, 1);
    let mut b = Engine::new(cfg(), b_id, 2);
    a.download(now, blob(), layout()).unwrap();
    b.download(now, blob(), layout()).unwrap();
    // Both have announced and learn of each other, then both dial.
    for (e, other) in [(&mut a, b_id), (&mut b, a_id)] {
        e.handle(
            now,
            Event::Announced {
                blob: blob(),
                peers: vec![PeerInfo {
                    peer_id: other,
                    addr,
                    complete: false,
                    origin: false,
                }],
                interval: Duration::from_secs(30),
            },
        );
    }
    // Each sees the other's inbound before its own dial completes.
    let a_in = a.open(now, &blob(), Remote::claimed(b_id, addr), false);
    let b_in = b.open(now, &blob(), Remote::claimed(a_id, addr), false);
    let a_out = a.open(now, &blob(), Remote::claimed(b_id, addr), true);
    let b_out = b.open(now, &blob(), Remote::claimed(a_id, addr), true);
    // b has the larger id, so b's dial survives on both ends.
    assert!(a_in.is_ok() && b_out.is_ok());
    assert!(b_in.is_err() && a_out.is_err());
    assert_eq!(a.connections(), 1);
    assert_eq!(b.connections(), 1);
}

#[test]
fn an_endless_announce_interval_from_any_discovery_does_not_panic_and_is_bounded() {
    let mut e = Engine::new(cfg(), PeerId([1; 20]), 0);
    let now = Instant::now();
    e.download(now, blob(), layout()).unwrap();
    e.handle(
        now,
        Event::Announced {
            blob: blob(),
            peers: Vec::new(),
            interval: Duration::MAX,
        },
    );
    while e.poll_action().is_some() {}
    // Within the bound, the node asks again.
    let next = e.poll_timeout().expect("a next announce");
    assert!(next <= now + Duration::from_secs(3600), "{:?}", next - now);
    e.handle_timeout(now + Duration::from_secs(3600));
    let mut announced = false;
    while let Some(a) = e.poll_action() {
        announced |= matches!(a, Action::Announce { .. });
    }
    assert!(announced, "a node must not stop announcing for ever");
}

#[test]
fn a_retired_blobs_connections_no_longer_count_against_the_node() {
    // Room in all for two connections made to this node.
    let mut e = Engine::new(
        Config {
            max_conns: 4,
            ..cfg()
        },
        PeerId([1; 20]),
        0,
    );
    let now = Instant::now();
    for round in 0..3u8 {
        let d = Digest::sha256_of(&[round]);
        e.seed(now, d, layout(), false).unwrap();
        for k in 0..2u8 {
            let addr = SocketAddr::from(([10, 0, round, k], 7000));
            let opened = e.open(now, &d, Remote::claimed(PeerId([10 + k; 20]), addr), false);
            assert!(opened.is_ok(), "round {round}: {opened:?}");
        }
        e.check();
        e.remove(&d);
        e.check();
        assert_eq!(e.connections(), 0);
    }
}
