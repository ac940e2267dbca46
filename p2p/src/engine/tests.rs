//! Engine tests under a virtual clock: a handful of engines wired together by an in-memory
//! network that delivers every action at once, with hooks for faulty peers.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;

use super::*;

const PIECES: u32 = 40;
const PIECE_LEN: u32 = 1 << 20;

fn layout() -> Layout {
    Layout {
        pieces: PIECES,
        piece_length: PIECE_LEN,
        length: PIECES as u64 * PIECE_LEN as u64 - 1000,
    }
}

fn blob() -> Digest {
    Digest::sha256_of(b"the blob")
}

fn cfg() -> Config {
    Config {
        tick: Duration::from_millis(100),
        ..Config::default()
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Fault {
    #[default]
    None,
    /// Never sends a piece it was asked for.
    Stall,
    /// Sends garbage in place of pieces.
    Corrupt,
}

struct Node {
    engine: Engine,
    info: PeerInfo,
    fault: Fault,
    /// Everything this node's engine asked for, in order.
    log: Vec<Action>,
    /// Uploads a stalling node sits on.
    held: Vec<(ConnId, u32)>,
}

/// Engines joined by a network that delivers instantly; a test drives the clock.
struct Net {
    nodes: Vec<Node>,
    /// (node, conn) -> (node, conn) at the other end.
    links: HashMap<(usize, ConnId), (usize, ConnId)>,
    /// Every link ever made, closed or not.
    history: HashMap<(usize, ConnId), (usize, ConnId)>,
    queue: VecDeque<(usize, Event)>,
    now: Instant,
    /// What the tracker hands out for the blob.
    tracker: Vec<PeerInfo>,
    commit_ok: bool,
}

impl Net {
    fn new() -> Self {
        Net {
            nodes: Vec::new(),
            links: HashMap::new(),
            history: HashMap::new(),
            queue: VecDeque::new(),
            now: Instant::now(),
            tracker: Vec::new(),
            commit_ok: true,
        }
    }

    fn add(&mut self, cfg: Config, origin: bool, fault: Fault) -> usize {
        let n = self.nodes.len();
        let id = PeerId([n as u8 + 1; 20]);
        let info = PeerInfo {
            peer_id: id,
            addr: SocketAddr::from(([10, 0, 0, n as u8 + 1], 7000)),
            complete: false,
            origin,
        };
        self.nodes.push(Node {
            engine: Engine::new(cfg, id, n as u64),
            info,
            fault,
            log: Vec::new(),
            held: Vec::new(),
        });
        n
    }

    fn seeder(&mut self, cfg: Config, origin: bool, fault: Fault) -> usize {
        let n = self.add(cfg, origin, fault);
        let now = self.now;
        self.nodes[n]
            .engine
            .seed(now, blob(), layout(), false)
            .unwrap();
        let mut info = self.nodes[n].info.clone();
        info.complete = true;
        self.tracker.push(info);
        n
    }

    fn leecher(&mut self, cfg: Config) -> usize {
        let n = self.add(cfg, false, Fault::None);
        let now = self.now;
        self.nodes[n]
            .engine
            .download(now, blob(), layout())
            .unwrap();
        n
    }

    fn by_id(&self, id: PeerId) -> usize {
        self.nodes
            .iter()
            .position(|n| n.info.peer_id == id)
            .unwrap()
    }

    /// Runs every action until the network is quiet.
    fn settle(&mut self) {
        for _ in 0..1_000_000 {
            let mut progressed = false;
            for n in 0..self.nodes.len() {
                while let Some(a) = self.nodes[n].engine.poll_action() {
                    progressed = true;
                    self.nodes[n].log.push(a.clone());
                    self.act(n, a);
                }
            }
            while let Some((n, e)) = self.queue.pop_front() {
                progressed = true;
                let now = self.now;
                self.nodes[n].engine.handle(now, e);
            }
            if !progressed {
                return;
            }
        }
        panic!("network never settled");
    }

    fn act(&mut self, n: usize, a: Action) {
        let now = self.now;
        match a {
            Action::Announce { blob, .. } => {
                let peers = self.tracker.clone();
                self.queue.push_back((
                    n,
                    Event::Announced {
                        blob,
                        peers,
                        interval: Duration::from_secs(30),
                    },
                ));
            }
            Action::Connect { blob, peer } => {
                let m = self.by_id(peer.peer_id);
                let me = self.nodes[n].info.clone();
                match self.nodes[m].engine.open(
                    now,
                    &blob,
                    Remote::claimed(me.peer_id, me.addr),
                    false,
                ) {
                    Ok(theirs) => {
                        let ours = self.nodes[n]
                            .engine
                            .open(now, &blob, Remote::claimed(peer.peer_id, peer.addr), true)
                            .unwrap();
                        self.links.insert((n, ours), (m, theirs));
                        self.links.insert((m, theirs), (n, ours));
                        self.history.insert((n, ours), (m, theirs));
                        self.history.insert((m, theirs), (n, ours));
                    }
                    Err(r) => self.queue.push_back((
                        n,
                        Event::DialFailed {
                            blob,
                            peer: peer.peer_id,
                            code: Some(r.code()),
                        },
                    )),
                }
            }
            Action::Send { conn, msg } => {
                if let Some(&(m, theirs)) = self.links.get(&(n, conn)) {
                    self.queue
                        .push_back((m, Event::Message { conn: theirs, msg }));
                }
            }
            Action::Upload { conn, index } => match self.nodes[n].fault {
                Fault::Stall => self.nodes[n].held.push((conn, index)),
                fault => {
                    if let Some(&(m, theirs)) = self.links.get(&(n, conn)) {
                        self.queue.push_back((
                            m,
                            Event::PieceReceived {
                                conn: theirs,
                                index,
                                valid: fault != Fault::Corrupt,
                            },
                        ));
                    }
                    self.queue.push_back((n, Event::Uploaded { conn, index }));
                }
            },
            Action::Close { conn, code } => {
                if let Some((m, theirs)) = self.links.remove(&(n, conn)) {
                    self.links.remove(&(m, theirs));
                    let reason = code.map_or(CloseReason::Disconnected, CloseReason::Remote);
                    self.queue.push_back((
                        m,
                        Event::Closed {
                            conn: theirs,
                            reason,
                        },
                    ));
                }
            }
            Action::WritePiece { blob, index, .. } => {
                self.queue.push_back((
                    n,
                    Event::PieceWritten {
                        blob,
                        index,
                        ok: true,
                    },
                ));
            }
            Action::Commit { blob } => {
                let ok = self.commit_ok;
                self.queue.push_back((n, Event::Committed { blob, ok }));
            }
            Action::CancelUpload { conn, index } => {
                self.nodes[n].held.retain(|&h| h != (conn, index));
            }
            Action::DropPiece { .. }
            | Action::Completed { .. }
            | Action::Failed { .. }
            | Action::Retired { .. }
            | Action::Shunned { .. } => {}
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        for n in &mut self.nodes {
            n.engine.handle_timeout(now);
        }
        self.settle();
    }

    fn completed(&self, n: usize) -> bool {
        self.nodes[n]
            .log
            .iter()
            .any(|a| matches!(a, Action::Completed { .. }))
    }

    /// Requests node `n` sent, by the peer they went to.
    fn requests_to(&self, n: usize, peer: usize) -> Vec<u32> {
        let mut conns_to_peer = BTreeSet::new();
        for (&(a, c), &(b, _)) in &self.history {
            if a == n && b == peer {
                conns_to_peer.insert(c);
            }
        }
        self.nodes[n]
            .log
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    conn,
                    msg: Message::Request(i),
                } if conns_to_peer.contains(conn) => Some(*i),
                _ => None,
            })
            .collect()
    }

    fn written(&self, n: usize) -> Vec<u32> {
        self.nodes[n]
            .log
            .iter()
            .filter_map(|a| match a {
                Action::WritePiece { index, .. } => Some(*index),
                _ => None,
            })
            .collect()
    }
}

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
fn an_origin_with_an_offer_start_offers_in_order_from_it_and_wraps() {
    let mut e = Engine::new(Config::origin(), PeerId([1; 20]), 0);
    let now = Instant::now();
    e.seed(now, blob(), layout(), false).unwrap();
    // Owner 2 of 3 starts two thirds of the way in; a bit further, to see the wrap.
    e.set_offer_start(&blob(), PIECES - 3);
    let addr = SocketAddr::from(([1, 1, 1, 1], 1));
    let mut offered = Vec::new();
    for k in 0..4u8 {
        let c = e
            .open(
                now,
                &blob(),
                Remote::claimed(PeerId([10 + k; 20]), addr),
                false,
            )
            .unwrap();
        e.handle(
            now,
            Event::Message {
                conn: c,
                msg: Message::Bitfield(Bitfield::new(PIECES as usize)),
            },
        );
        offered.extend(
            std::iter::from_fn(|| e.poll_action()).filter_map(|a| match a {
                Action::Send {
                    msg: Message::Have(i),
                    ..
                } => Some(i),
                _ => None,
            }),
        );
    }
    // Two offers per downloader, in index order from the start, each piece once.
    assert_eq!(
        offered,
        [PIECES - 3, PIECES - 2, PIECES - 1, 0, 1, 2, 3, 4],
        "{offered:?}"
    );
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
fn uploads_beyond_the_queue_are_rejected() {
    let mut e = Engine::new(
        Config {
            max_upload_queue: 2,
            ..cfg()
        },
        PeerId([1; 20]),
        0,
    );
    let now = Instant::now();
    e.seed(now, blob(), layout(), false).unwrap();
    let c = e
        .open(
            now,
            &blob(),
            Remote::claimed(PeerId([2; 20]), SocketAddr::from(([1, 1, 1, 1], 1))),
            false,
        )
        .unwrap();
    for i in 0..3 {
        e.handle(
            now,
            Event::Message {
                conn: c,
                msg: Message::Request(i),
            },
        );
    }
    let actions: Vec<Action> = std::iter::from_fn(|| e.poll_action()).collect();
    let uploads = actions
        .iter()
        .filter(|a| matches!(a, Action::Upload { .. }))
        .count();
    assert_eq!(uploads, 2);
    assert!(actions.contains(&Action::Send {
        conn: c,
        msg: Message::Reject(2)
    }));
    // A cancel frees a slot.
    e.handle(
        now,
        Event::Message {
            conn: c,
            msg: Message::Cancel(0),
        },
    );
    e.handle(
        now,
        Event::Message {
            conn: c,
            msg: Message::Request(2),
        },
    );
    let actions: Vec<Action> = std::iter::from_fn(|| e.poll_action()).collect();
    assert_eq!(
        actions,
        vec![
            Action::CancelUpload { conn: c, index: 0 },
            Action::Upload { conn: c, index: 2 }
        ]
    );
}

#[test]
fn seeding_ends_after_idle_time_not_before() {
    let mut net = Net::new();
    net.seeder(cfg(), false, Fault::None);
    let idle = Duration::from_secs(10);
    let l = net.leecher(Config {
        seed_idle: Some(idle),
        ..cfg()
    });
    net.settle();
    assert!(net.completed(l));
    // A later leecher keeps it busy for a while.
    net.advance(Duration::from_secs(8));
    let l2 = net.leecher(cfg());
    net.tracker.push(net.nodes[l].info.clone());
    net.settle();
    net.advance(Duration::from_millis(100));
    assert!(net.completed(l2));
    net.advance(Duration::from_secs(8));
    assert!(net.nodes[l].engine.contains(&blob()));
    net.advance(Duration::from_secs(3));
    assert!(!net.nodes[l].engine.contains(&blob()));
    assert!(
        net.nodes[l]
            .log
            .iter()
            .any(|a| matches!(a, Action::Retired { .. }))
    );
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

mod fuzz {
    //! Arbitrary event sequences, including ones no honest driver or peer would produce:
    //! the engine never panics and its books stay balanced.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Open {
            peer: u8,
            origin: bool,
            outbound: bool,
        },
        Msg {
            conn: u8,
            kind: u8,
            index: u32,
        },
        Piece {
            conn: u8,
            index: u32,
            valid: bool,
        },
        Written {
            index: u32,
            ok: bool,
        },
        Uploaded {
            conn: u8,
            index: u32,
        },
        Closed {
            conn: u8,
            protocol: bool,
        },
        DialFailed {
            peer: u8,
            busy: bool,
        },
        Announced {
            peers: Vec<u8>,
        },
        Committed {
            ok: bool,
        },
        Advance {
            ms: u16,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let idx = 0u32..(PIECES + 3);
        prop_oneof![
            (0u8..12, any::<bool>(), any::<bool>()).prop_map(|(peer, origin, outbound)| Op::Open {
                peer,
                origin,
                outbound
            }),
            (0u8..16, 0u8..8, idx.clone()).prop_map(|(conn, kind, index)| Op::Msg {
                conn,
                kind,
                index
            }),
            (0u8..16, idx.clone(), any::<bool>()).prop_map(|(conn, index, valid)| Op::Piece {
                conn,
                index,
                valid
            }),
            (idx.clone(), any::<bool>()).prop_map(|(index, ok)| Op::Written { index, ok }),
            (0u8..16, idx).prop_map(|(conn, index)| Op::Uploaded { conn, index }),
            (0u8..16, any::<bool>()).prop_map(|(conn, protocol)| Op::Closed { conn, protocol }),
            (0u8..12, any::<bool>()).prop_map(|(peer, busy)| Op::DialFailed { peer, busy }),
            proptest::collection::vec(0u8..12, 0..6).prop_map(|peers| Op::Announced { peers }),
            any::<bool>().prop_map(|ok| Op::Committed { ok }),
            (0u16..40_000).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    fn info(peer: u8, origin: bool) -> PeerInfo {
        PeerInfo {
            peer_id: PeerId([peer + 10; 20]),
            addr: SocketAddr::from(([10, 0, 0, peer], 7000)),
            complete: origin,
            origin,
        }
    }

    fn message(kind: u8, index: u32) -> Message {
        match kind {
            0 => Message::Bitfield(Bitfield::full(PIECES as usize)),
            1 => {
                let mut b = Bitfield::new(PIECES as usize);
                for i in (0..PIECES as usize).step_by(3) {
                    b.set(i);
                }
                Message::Bitfield(b)
            }
            2 => Message::Have(index),
            3 => Message::Request(index),
            4 => Message::Cancel(index),
            5 => Message::Reject(index),
            6 => Message::KeepAlive,
            _ => Message::Error {
                code: ErrorCode::Busy,
                message: String::new(),
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn engine_survives_anything(ops in proptest::collection::vec(op(), 1..250), seeding in any::<bool>(), super_seed in any::<bool>()) {
            let cfg = Config {
                super_seed_offers: if super_seed { 4 } else { 0 },
                max_conns_per_blob: 6,
                max_outbound_per_blob: 3,
                ..cfg()
            };
            let mut e = Engine::new(cfg, PeerId([1; 20]), 9);
            let mut now = Instant::now();
            if seeding {
                e.seed(now, blob(), layout(), true).unwrap();
            } else {
                e.download(now, blob(), layout()).unwrap();
            }
            let mut conns: Vec<ConnId> = Vec::new();
            let pick = |conns: &Vec<ConnId>, k: u8| conns.get(k as usize % conns.len().max(1)).copied();
            for o in ops {
                match o {
                    Op::Open { peer, origin, outbound } => {
                        let i = info(peer, origin);
                        if origin {
                            // Only discovery makes a peer an origin.
                            e.handle(now, Event::Announced { blob: blob(), peers: vec![i.clone()], interval: Duration::from_secs(30) });
                        }
                        if let Ok(c) = e.open(now, &blob(), Remote::claimed(i.peer_id, i.addr), outbound) {
                            conns.push(c);
                        }
                    }
                    Op::Msg { conn, kind, index } => if let Some(c) = pick(&conns, conn) {
                        e.handle(now, Event::Message { conn: c, msg: message(kind, index % PIECES) });
                    },
                    Op::Piece { conn, index, valid } => if let Some(c) = pick(&conns, conn) {
                        e.handle(now, Event::PieceReceived { conn: c, index: index % PIECES, valid });
                    },
                    Op::Written { index, ok } => e.handle(now, Event::PieceWritten { blob: blob(), index: index % PIECES, ok }),
                    Op::Uploaded { conn, index } => if let Some(c) = pick(&conns, conn) {
                        e.handle(now, Event::Uploaded { conn: c, index });
                    },
                    Op::Closed { conn, protocol } => if let Some(c) = pick(&conns, conn) {
                        let reason = if protocol { CloseReason::Protocol } else { CloseReason::Disconnected };
                        e.handle(now, Event::Closed { conn: c, reason });
                    },
                    Op::DialFailed { peer, busy } => e.handle(now, Event::DialFailed {
                        blob: blob(),
                        peer: info(peer, false).peer_id,
                        code: busy.then_some(ErrorCode::Busy),
                    }),
                    Op::Announced { peers } => e.handle(now, Event::Announced {
                        blob: blob(),
                        peers: peers.iter().map(|&p| info(p, p % 4 == 0)).collect(),
                        interval: Duration::from_secs(3),
                    }),
                    Op::Committed { ok } => e.handle(now, Event::Committed { blob: blob(), ok }),
                    Op::Advance { ms } => {
                        now += Duration::from_millis(ms as u64);
                        e.handle_timeout(now);
                    }
                }
                while let Some(a) = e.poll_action() {
                    if let Action::Close { conn, .. } = a {
                        conns.retain(|&c| c != conn);
                    }
                }
                e.check();
            }
        }
    }
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
