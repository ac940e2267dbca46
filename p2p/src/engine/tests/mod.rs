//! Engine tests under a virtual clock: a handful of engines wired together by an in-memory
//! network that delivers every action at once, with hooks for faulty peers. The books are
//! checked ([`Engine::check`]) after every step the network takes.

mod download;
mod fuzz;
mod peers;
mod upload;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_core::Digest;
use shoal_core::peer::{PeerId, PeerInfo};

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
                self.nodes[n].engine.check();
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
            n.engine.check();
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
