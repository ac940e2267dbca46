//! Downloading: what is requested from whom, endgame, time-outs, the commit.

use super::*;

#[test]
fn leecher_fetches_every_piece_once_then_commits() {
    let mut net = Net::new();
    net.seeder(cfg(), false, Fault::None);
    let l = net.leecher(cfg());
    net.settle();
    assert!(net.completed(l));
    let mut written = net.written(l);
    written.sort();
    assert_eq!(written, (0..PIECES).collect::<Vec<_>>());
    let log = &net.nodes[l].log;
    let commit = log
        .iter()
        .position(|a| matches!(a, Action::Commit { .. }))
        .unwrap();
    let last_write = log
        .iter()
        .rposition(|a| matches!(a, Action::WritePiece { .. }))
        .unwrap();
    assert!(
        commit > last_write,
        "committed before every piece was written"
    );
    let stats = net.nodes[l].engine.stats(&blob()).unwrap();
    assert!(stats.complete);
    assert_eq!(stats.duplicate_pieces, 0);
    assert_eq!(stats.have, PIECES as usize);
    // Having completed, it announces itself as a seed.
    assert!(
        log.iter()
            .any(|a| matches!(a, Action::Announce { complete: true, .. }))
    );
}

#[test]
fn in_flight_stays_within_target_and_windows() {
    let mut net = Net::new();
    let c = Config {
        min_in_flight: 3,
        max_in_flight: 3,
        initial_window: 2,
        max_window: 2,
        ..cfg()
    };
    let s = net.seeder(cfg(), false, Fault::Stall);
    let l = net.leecher(c);
    net.settle();
    // The stalling seeder holds every request; nothing arrives, so the leecher stops at
    // its connection window.
    assert_eq!(net.requests_to(l, s).len(), 2);
    assert_eq!(net.nodes[l].engine.stats(&blob()).unwrap().in_flight, 2);
}

#[test]
fn rarest_piece_is_requested_first() {
    let mut net = Net::new();
    let mut nearly = Bitfield::new(PIECES as usize);
    for i in (0..PIECES as usize).filter(|&i| i != 7) {
        nearly.set(i);
    }
    let full = net.seeder(cfg(), false, Fault::Stall);
    // Two peers that hold everything but piece 7, connected by hand.
    let l = net.leecher(Config {
        initial_window: 1,
        ..cfg()
    });
    let now = net.now;
    let (full_id, addr) = (net.nodes[full].info.peer_id, net.nodes[full].info.addr);
    let conn_full = net.nodes[l]
        .engine
        .open(now, &blob(), Remote::claimed(full_id, addr), true)
        .unwrap();
    for k in 0..2u8 {
        let c = net.nodes[l]
            .engine
            .open(
                now,
                &blob(),
                Remote::claimed(PeerId([100 + k; 20]), addr),
                true,
            )
            .unwrap();
        net.nodes[l].engine.handle(
            now,
            Event::Message {
                conn: c,
                msg: Message::Bitfield(nearly.clone()),
            },
        );
    }
    net.nodes[l].engine.handle(
        now,
        Event::Message {
            conn: conn_full,
            msg: Message::Bitfield(Bitfield::full(PIECES as usize)),
        },
    );
    let first_to_full =
        std::iter::from_fn(|| net.nodes[l].engine.poll_action()).find_map(|a| match a {
            Action::Send {
                conn,
                msg: Message::Request(i),
            } if conn == conn_full => Some(i),
            _ => None,
        });
    assert_eq!(first_to_full, Some(7));
}

#[test]
fn a_reader_gets_the_pieces_just_ahead_of_it_before_rarer_ones() {
    let mut e = Engine::new(
        Config {
            // Four pieces ahead; two requests per connection; room in flight for more.
            stream_ahead: 4 * PIECE_LEN as u64,
            initial_window: 2,
            min_in_flight: 16,
            ..cfg()
        },
        PeerId([1; 20]),
        0,
    );
    let now = Instant::now();
    e.download(now, blob(), layout()).unwrap();
    // The reader is at piece 10.
    e.set_focus(now, &blob(), Some(10));
    let requests = |e: &mut Engine| -> Vec<(ConnId, u32)> {
        std::iter::from_fn(|| e.poll_action())
            .filter_map(|a| match a {
                Action::Send {
                    conn,
                    msg: Message::Request(i),
                } => Some((conn, i)),
                _ => None,
            })
            .collect()
    };
    let addr = SocketAddr::from(([1, 1, 1, 1], 1));
    // Two peers hold everything but piece 7, and a third everything: 7 is the rarest.
    let mut nearly = Bitfield::new(PIECES as usize);
    for i in (0..PIECES as usize).filter(|&i| i != 7) {
        nearly.set(i);
    }
    let mut conns = Vec::new();
    for (k, has) in [nearly.clone(), nearly, Bitfield::full(PIECES as usize)]
        .into_iter()
        .enumerate()
    {
        let c = e
            .open(
                now,
                &blob(),
                Remote::claimed(PeerId([10 + k as u8; 20]), addr),
                true,
            )
            .unwrap();
        e.handle(
            now,
            Event::Message {
                conn: c,
                msg: Message::Bitfield(has),
            },
        );
        conns.push(c);
    }
    let asked: Vec<u32> = requests(&mut e).into_iter().map(|(_, i)| i).collect();
    // The reader's pieces first, then rarest first for the rest.
    assert_eq!(asked[..5], [10, 11, 12, 13, 7], "{asked:?}");

    // The reader moves on while every window is full: the next free slot goes to the
    // pieces ahead of its new place.
    e.set_focus(now, &blob(), Some(30));
    assert!(requests(&mut e).is_empty());
    e.handle(
        now,
        Event::PieceReceived {
            conn: conns[0],
            index: 10,
            valid: true,
        },
    );
    let asked = requests(&mut e);
    assert_eq!(asked.first(), Some(&(conns[0], 30)), "{asked:?}");
}

#[test]
fn origins_serve_only_what_peers_lack() {
    let mut e = Engine::new(cfg(), PeerId([1; 20]), 0);
    let now = Instant::now();
    e.download(now, blob(), layout()).unwrap();
    let origin_addr = SocketAddr::from(([1, 1, 1, 1], 1));
    // An origin because discovery says so of the address dialled.
    e.handle(
        now,
        Event::Announced {
            blob: blob(),
            peers: vec![PeerInfo {
                peer_id: PeerId([2; 20]),
                addr: origin_addr,
                complete: true,
                origin: true,
            }],
            interval: Duration::from_secs(30),
        },
    );
    let origin = e
        .open(
            now,
            &blob(),
            Remote::claimed(PeerId([2; 20]), origin_addr),
            true,
        )
        .unwrap();
    let peer_addr = SocketAddr::from(([1, 1, 1, 2], 1));
    let peer = e
        .open(
            now,
            &blob(),
            Remote::claimed(PeerId([3; 20]), peer_addr),
            true,
        )
        .unwrap();
    let mut half = Bitfield::new(PIECES as usize);
    for i in 0..PIECES as usize / 2 {
        half.set(i);
    }
    // The peer's bitfield first: before it arrives, every piece is one only the origin
    // holds.
    for (conn, bf) in [(peer, half), (origin, Bitfield::full(PIECES as usize))] {
        e.handle(
            now,
            Event::Message {
                conn,
                msg: Message::Bitfield(bf),
            },
        );
    }
    let mut to_origin = Vec::new();
    let mut to_peer = Vec::new();
    // Let pieces arrive for a while, always from whoever was asked.
    for _ in 0..200 {
        let Some(a) = e.poll_action() else { break };
        if let Action::Send {
            conn,
            msg: Message::Request(i),
        } = a
        {
            if conn == origin {
                to_origin.push(i);
            } else {
                to_peer.push(i);
            }
            e.handle(
                now,
                Event::PieceReceived {
                    conn,
                    index: i,
                    valid: true,
                },
            );
        }
    }
    assert!(!to_peer.is_empty());
    assert!(!to_origin.is_empty());
    assert!(
        to_origin.iter().all(|&i| i >= PIECES / 2),
        "origin asked for a piece a peer holds: {to_origin:?}"
    );
    let stats = e.stats(&blob()).unwrap();
    let origin_bytes: u64 = to_origin
        .iter()
        .map(|&i| layout().piece_size(i).unwrap() as u64)
        .sum();
    assert_eq!(stats.bytes_from_origins, origin_bytes);
}

#[test]
fn endgame_duplicates_the_last_pieces_and_cancels_the_loser() {
    let mut net = Net::new();
    let slow = net.seeder(cfg(), false, Fault::Stall);
    let fast = net.seeder(cfg(), false, Fault::None);
    let l = net.leecher(cfg());
    net.settle();
    // Completed without any time passing: the stalled requests were duplicated to the
    // good seeder, and cancelled at the staller when the copies arrived.
    assert!(net.completed(l));
    let stalled = net.requests_to(l, slow);
    assert!(!stalled.is_empty());
    let cancels: Vec<u32> = net.nodes[l]
        .log
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                msg: Message::Cancel(i),
                ..
            } => Some(*i),
            _ => None,
        })
        .collect();
    let mut a = stalled.clone();
    a.sort();
    let mut b = cancels.clone();
    b.sort();
    assert_eq!(a, b);
    let _ = fast;
    assert!(
        net.nodes[slow].held.is_empty(),
        "cancels reached the staller"
    );
}

#[test]
fn stalled_requests_move_after_the_timeout() {
    let mut net = Net::new();
    let c = Config {
        // No endgame copies: only the time-out can move a request.
        endgame_copies: 1,
        request_timeout: Duration::from_secs(5),
        ..cfg()
    };
    let slow = net.seeder(cfg(), false, Fault::Stall);
    net.seeder(cfg(), false, Fault::None);
    let l = net.leecher(c);
    net.settle();
    let stalled = net.requests_to(l, slow);
    assert!(!stalled.is_empty());
    assert!(!net.completed(l));
    net.advance(Duration::from_secs(4));
    assert!(!net.completed(l), "moved before the time-out");
    net.advance(Duration::from_millis(1100));
    assert!(net.completed(l));
    assert_eq!(net.nodes[l].engine.stats(&blob()).unwrap().timeouts, 1);
}

#[test]
fn whole_blob_mismatch_fails_the_download() {
    let mut net = Net::new();
    net.commit_ok = false;
    net.seeder(cfg(), false, Fault::None);
    let l = net.leecher(cfg());
    net.settle();
    assert!(!net.completed(l));
    assert!(net.nodes[l].log.contains(&Action::Failed {
        blob: blob(),
        error: SwarmError::BlobMismatch
    }));
    assert!(!net.nodes[l].engine.contains(&blob()));
    assert_eq!(net.nodes[l].engine.connections(), 0);
}

#[test]
fn empty_blob_commits_at_once() {
    let mut e = Engine::new(cfg(), PeerId([1; 20]), 0);
    let now = Instant::now();
    let empty = Layout {
        pieces: 0,
        piece_length: 1 << 18,
        length: 0,
    };
    e.download(now, blob(), empty).unwrap();
    let actions: Vec<Action> = std::iter::from_fn(|| e.poll_action()).collect();
    assert!(actions.contains(&Action::Commit { blob: blob() }));
}
