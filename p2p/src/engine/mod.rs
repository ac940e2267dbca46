//! The swarm engine: a sans-IO state machine for every blob a node downloads or seeds.
//!
//! The engine never reads a clock, a socket or a disk. A driver feeds it [`Event`]s with the
//! time they happened, calls [`Engine::handle_timeout`] when [`Engine::poll_timeout`] says,
//! and carries out the [`Action`]s it pops with [`Engine::poll_action`]. The tokio driver in
//! [`crate::node`] and the simulator in [`crate::sim`] are two such drivers.
//!
//! What it decides:
//! - whom to dial, and whom to accept: connection limits per blob and in all (connections
//!   peers open to this node that turn out useless give up the slots kept for dialling the
//!   peers discovery named), no duplicate connection to one peer, no connection to a shunned address; a
//!   bounded list of known peers per blob that forgets those not heard of for a while;
//! - what to request from whom: rarest first with random ties ([`picker`]); a target number
//!   of requests in flight to peers, sized from the blob's download rate so that links stay
//!   full (requests stuck behind a slow peer's queue stop counting), spread over
//!   connections with a per-connection window sized from that connection's rate; origins
//!   asked only for what no other peer holds, within their own connection windows; endgame
//!   duplicates for the last pieces and a cancel as soon as one copy arrives;
//! - what origins offer: a super-seeding seed shows each downloader a couple of pieces at a
//!   time, those it has sent least, so its upload goes to distinct pieces first;
//! - what to do when things go wrong: a connection that delivers nothing for
//!   `request_timeout` has its requests moved to others; a peer that sends a corrupt piece
//!   it was asked for is dropped and shunned; one that breaks the protocol (a piece nobody
//!   asked for among others) is dropped, and shunned once it has failed
//!   `max_peer_failures` times;
//! - what to serve: requests are queued for upload up to a bound and rejected beyond it, so
//!   that a downloader asks someone less busy instead of waiting in a long queue;
//! - when to announce, when the blob is complete (all pieces written: commit it), and when
//!   a complete blob has been idle long enough to stop seeding it.
//!
//! Pieces are verified by the driver before the engine hears of them (hashing is work, not
//! a decision); the engine only says whether a verified piece is still wanted
//! ([`Action::WritePiece`]) or not ([`Action::DropPiece`]).
//!
//! Identity: a hello's peer id and origin flag are claims anyone can make. The engine
//! blames and shuns only what it can check ([`Blame`]): the address it dialled, the source
//! address of a connection made to it, and an id only when the driver vouches for it
//! ([`Remote::verified`]). A peer is an origin only if discovery said so for the address
//! this node dialled; a connection made to this node never counts as an origin.

mod picker;
mod slab;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_core::Digest;
use shoal_core::peer::{PeerId, PeerInfo};

use crate::bitfield::Bitfield;
use crate::wire::{ErrorCode, Layout, Message};
use picker::{Candidate, Picker};
use slab::Slab;

pub use slab::ConnId;

/// The engine's knobs. The defaults suit hosts on 1–40 Gbit/s links.
#[derive(Debug, Clone)]
pub struct Config {
    /// Connections (open or being dialled) for one blob.
    pub max_conns_per_blob: usize,
    /// Of those, how many this node dials itself; the rest are left for peers that dial
    /// in. Without that reserve, hosts that start together fill each other's slots and the
    /// last to announce find everyone full.
    pub max_outbound_per_blob: usize,
    /// Connections for all blobs together.
    pub max_conns: usize,
    /// Connections a downloader keeps to origins for one blob: origins are seeds of last
    /// resort and serve many swarms.
    pub max_origin_conns_per_blob: usize,
    /// Requests in flight to peers for one blob, at least and at most; between the two the
    /// target is the download rate times `request_queue_time`. Requests to origins have
    /// their own budget (each origin connection's window).
    pub min_in_flight: usize,
    pub max_in_flight: usize,
    /// How much work, in time at the current rate, to keep requested ahead.
    pub request_queue_time: Duration,
    /// Streaming: how many bytes of missing pieces ahead of a reader's position (see
    /// [`Engine::set_focus`]) are requested first, in order, whatever the target in
    /// flight; at least [`MIN_STREAM_AHEAD`] pieces. Everything else stays rarest first.
    pub stream_ahead: u64,
    /// Requests in flight on one connection before its rate is known, and at most.
    pub initial_window: usize,
    pub max_window: usize,
    /// Over how long download rates are averaged.
    pub rate_window: Duration,
    /// Uploads queued for one blob beyond which requests are rejected.
    pub max_upload_queue: usize,
    /// Uploads queued for one connection beyond which its requests are rejected.
    pub max_uploads_per_conn: usize,
    /// A connection with requests out that delivers nothing for this long has them moved.
    pub request_timeout: Duration,
    /// After a reject, how long to leave that connection alone.
    pub reject_backoff: Duration,
    /// Copies of one piece requested at once in endgame.
    pub endgame_copies: u8,
    /// Failures (time-outs, failed dials, broken connections) before a peer is shunned.
    pub max_peer_failures: u32,
    /// How long a shunned address (or verified id) is refused.
    pub shun_for: Duration,
    /// Known peers kept per blob. When the list is full, a peer discovery names displaces
    /// the one heard of least recently that is not connected.
    pub max_known_peers: usize,
    /// A known peer that discovery has not named for this long, and that is not
    /// connected, is forgotten.
    pub forget_peer_after: Duration,
    /// How long a complete blob is seeded after its last upload; `None`: for ever.
    pub seed_idle: Option<Duration>,
    /// Super-seeding for blobs added with [`Engine::seed`]: instead of its whole bitfield, a
    /// seed shows downloaders only this many pieces at a time (a couple each, round robin),
    /// those it has uploaded least, and offers more as they are sent. A seed whose upload is
    /// the swarm's bottleneck (an origin at the start of a swarm) then sends every piece once
    /// before it sends any twice. `0`: show everything.
    pub super_seed_offers: usize,
    /// How often the engine wants [`Engine::handle_timeout`].
    pub tick: Duration,
    /// Wait before re-dialling a peer after its first failure; doubles with each failure.
    pub redial_backoff: Duration,
    /// Wait before announcing again after a failed announce; doubles up to the interval.
    pub announce_retry: Duration,
    /// Announce no more often than this, whatever a tracker says.
    pub min_announce_interval: Duration,
}

impl Config {
    /// What an origin runs with: it serves many swarms, so more connections in all and per
    /// blob than an agent (with fewer per blob, the simulator shows a slower last host: the
    /// first copies reach fewer downloaders), and it super-seeds. Both
    /// [`crate::NodeConfig::origin`] and the simulator use it.
    pub fn origin() -> Self {
        Config {
            max_conns_per_blob: 100,
            max_conns: 4000,
            super_seed_offers: 32,
            seed_idle: Some(Duration::from_secs(600)),
            ..Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_conns_per_blob: 40,
            max_outbound_per_blob: 20,
            max_conns: 400,
            max_origin_conns_per_blob: 2,
            min_in_flight: 4,
            max_in_flight: 64,
            request_queue_time: Duration::from_millis(50),
            stream_ahead: 4 << 20,
            initial_window: 2,
            max_window: 8,
            rate_window: Duration::from_millis(500),
            max_upload_queue: 16,
            max_uploads_per_conn: 8,
            request_timeout: Duration::from_secs(30),
            reject_backoff: Duration::from_millis(20),
            endgame_copies: 2,
            max_peer_failures: 3,
            shun_for: Duration::from_secs(600),
            max_known_peers: 256,
            forget_peer_after: Duration::from_secs(600),
            seed_idle: Some(Duration::from_secs(300)),
            super_seed_offers: 0,
            tick: Duration::from_millis(250),
            redial_backoff: Duration::from_secs(1),
            announce_retry: Duration::from_secs(2),
            min_announce_interval: Duration::from_secs(1),
        }
    }
}

/// Something that happened, fed to [`Engine::handle`].
#[derive(Debug, Clone)]
pub enum Event {
    /// Discovery answered an [`Action::Announce`].
    Announced {
        blob: Digest,
        peers: Vec<PeerInfo>,
        interval: Duration,
    },
    AnnounceFailed {
        blob: Digest,
    },
    /// An [`Action::Connect`] did not produce a connection: the peer was unreachable, or
    /// it answered the hello with an error (`code`).
    DialFailed {
        blob: Digest,
        peer: PeerId,
        code: Option<ErrorCode>,
    },
    /// The connection is gone (closed by the peer, an I/O error, or a protocol error the
    /// driver's decoder caught).
    Closed {
        conn: ConnId,
        reason: CloseReason,
    },
    /// A control message (anything but a piece).
    Message {
        conn: ConnId,
        msg: Message,
    },
    /// A piece arrived and the driver checked it against its hash.
    PieceReceived {
        conn: ConnId,
        index: u32,
        valid: bool,
    },
    /// An [`Action::WritePiece`] finished.
    PieceWritten {
        blob: Digest,
        index: u32,
        ok: bool,
    },
    /// An [`Action::Upload`] finished (sent, or dropped after a cancel).
    Uploaded {
        conn: ConnId,
        index: u32,
    },
    /// An [`Action::Commit`] finished: the whole blob verified and is in the store, or not.
    Committed {
        blob: Digest,
        ok: bool,
    },
}

/// Why a connection ended, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed, or the network failed.
    Disconnected,
    /// The peer broke the protocol (malformed frame, message out of order).
    Protocol,
    /// The peer said why in an error frame.
    Remote(ErrorCode),
}

/// Something the driver must do, popped from [`Engine::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask discovery for peers of a blob, saying whether this node holds all of it.
    Announce {
        blob: Digest,
        complete: bool,
    },
    /// Dial a peer and handshake for a blob, then [`Engine::open`] the connection (or report
    /// [`Event::DialFailed`]).
    Connect {
        blob: Digest,
        peer: PeerInfo,
    },
    Send {
        conn: ConnId,
        msg: Message,
    },
    /// Read piece `index` and send it on `conn`.
    Upload {
        conn: ConnId,
        index: u32,
    },
    /// Forget a queued [`Action::Upload`] if it has not started.
    CancelUpload {
        conn: ConnId,
        index: u32,
    },
    /// Close the connection, telling the peer why if `code` is given.
    Close {
        conn: ConnId,
        code: Option<ErrorCode>,
    },
    /// Write the verified piece that arrived on `conn` into the partial blob, then report
    /// [`Event::PieceWritten`].
    WritePiece {
        blob: Digest,
        conn: ConnId,
        index: u32,
    },
    /// The verified piece that arrived on `conn` is not needed (another copy won).
    DropPiece {
        conn: ConnId,
        index: u32,
    },
    /// Every piece is written: verify the whole blob and make it visible, then report
    /// [`Event::Committed`].
    Commit {
        blob: Digest,
    },
    /// The blob is complete and committed.
    Completed {
        blob: Digest,
    },
    /// The download failed for good.
    Failed {
        blob: Digest,
        error: SwarmError,
    },
    /// The engine has forgotten the blob (seeding went idle, the download failed, or it was
    /// removed); its connections have been closed.
    Retired {
        blob: Digest,
    },
    /// An address (or verified id) is shunned until `until` (for metrics and logs; its
    /// connections are closed by their own actions).
    Shunned {
        who: Blame,
        until: Instant,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SwarmError {
    #[error("every piece verified but the whole blob did not match its digest")]
    BlobMismatch,
    #[error("pieces could not be written to disk")]
    Storage,
}

/// Why [`Engine::open`] refused a connection. The driver tells the peer with the matching
/// error code and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("blob is not served here")]
    UnknownBlob,
    #[error("connection limit reached")]
    Busy,
    #[error("address is shunned")]
    Shunned,
    #[error("a connection to this peer already exists")]
    Duplicate,
    #[error("a node does not connect to itself")]
    SelfConnection,
}

impl Refusal {
    pub fn code(self) -> ErrorCode {
        match self {
            Refusal::UnknownBlob => ErrorCode::UnknownBlob,
            Refusal::Busy => ErrorCode::Busy,
            Refusal::Shunned | Refusal::Duplicate | Refusal::SelfConnection => ErrorCode::Refused,
        }
    }
}

/// Who is at the other end of a connection, as far as this node can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// The id the peer's hello claims. It tells connections apart and breaks ties between
    /// two peers dialling each other; it is never blamed, never trusted to be an origin.
    pub peer: PeerId,
    /// The address dialled, or the source address of a connection made to this node.
    pub addr: SocketAddr,
    /// An id something vouches for (the certificate the peer presented, once the peer
    /// protocol runs over TLS): blamed, and shunned, along with the address. `None`: only
    /// the address is known for sure.
    pub verified: Option<PeerId>,
}

impl Remote {
    /// A peer known only by the id it claims and the address of the connection.
    pub fn claimed(peer: PeerId, addr: SocketAddr) -> Self {
        Remote {
            peer,
            addr,
            verified: None,
        }
    }
}

/// What a misbehaving connection is held against: only what this node can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Blame {
    /// An address this node dialled: it is not dialled again, whatever id is listed there.
    Dialled(SocketAddr),
    /// The source of connections made to this node (its port is an ephemeral one, so the
    /// host): connections from it are refused.
    Source(IpAddr),
    /// An id something vouched for ([`Remote::verified`]).
    Verified(PeerId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("blob is already in the engine")]
    AlreadyPresent,
}

/// Counters over every swarm the engine has run, retired ones included: what a driver
/// exports as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Connections whose requests timed out and were moved.
    pub timeouts: u64,
    pub rejects_sent: u64,
    pub rejects_received: u64,
}

/// Counters of one swarm, for tests, the simulator and status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwarmStats {
    pub pieces: usize,
    pub have: usize,
    pub connections: usize,
    pub in_flight: usize,
    pub bytes_from_peers: u64,
    pub bytes_from_origins: u64,
    pub bytes_uploaded: u64,
    /// Verified pieces that arrived when another copy already had (endgame, races).
    pub duplicate_pieces: u64,
    pub bad_pieces: u64,
    pub timeouts: u64,
    pub rejects_sent: u64,
    pub rejects_received: u64,
    /// Peers on the blob's known list (named by discovery, or connected).
    pub known_peers: usize,
    pub complete: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Downloading,
    Committing,
    Seeding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KnownState {
    Idle,
    Dialing,
    Connected(ConnId),
}

/// A peer this node has heard of for one blob.
#[derive(Debug, Clone)]
struct Known {
    info: PeerInfo,
    state: KnownState,
    failures: u32,
    next_try: Instant,
    /// When discovery last named it, or a connection to it last ended.
    heard: Instant,
}

/// A byte rate averaged with exponential decay over a window: cheap to update per piece.
#[derive(Debug, Clone, Copy)]
struct Rate {
    value: f64,
    at: Option<Instant>,
}

impl Rate {
    const fn new() -> Self {
        Rate {
            value: 0.0,
            at: None,
        }
    }

    fn decayed(&self, now: Instant, window: Duration) -> f64 {
        match self.at {
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                self.value * (-dt / window.as_secs_f64()).exp()
            }
            None => 0.0,
        }
    }

    fn add(&mut self, now: Instant, bytes: u64, window: Duration) {
        self.value = self.decayed(now, window) + bytes as f64 / window.as_secs_f64();
        self.at = Some(now);
    }
}

#[derive(Debug)]
struct Swarm {
    digest: Digest,
    layout: Layout,
    have: Bitfield,
    /// Present while downloading: the pieces still wanted.
    picker: Option<Picker>,
    phase: Phase,
    conns: Vec<ConnId>,
    known: Vec<Known>,
    known_index: HashMap<PeerId, usize>,
    dialing: usize,
    /// Connections this node dialled, open or being dialled.
    outbound: usize,
    /// Origin connections, open or being dialled.
    origin_conns: usize,
    in_flight: usize,
    in_flight_to_peers: usize,
    uploads: usize,
    announce: bool,
    announcing: bool,
    next_announce: Option<Instant>,
    announce_failures: u32,
    last_active: Instant,
    rate: Rate,
    write_failures: u32,
    cursor: usize,
    /// Streaming: the lowest piece a reader waits for.
    focus: Option<u32>,
    /// Connections by local slot, so that per-piece bookkeeping is a bit set over slots
    /// rather than a walk through every connection's own state.
    slots: Vec<Option<ConnId>>,
    /// Per slot: pieces the peer holds that this node does not (not yet written).
    slot_interesting: Vec<u32>,
    /// Per slot: the peer is an origin.
    slot_origin: Vec<bool>,
    /// While downloading, per piece, the slots whose peer holds it:
    /// `holders[piece * holder_words + slot / 64]`.
    holders: Vec<u64>,
    holder_words: usize,
    /// Super-seeding: uploads of each piece, and connections each piece is offered to.
    super_seed: bool,
    served: Vec<u32>,
    offered: Vec<u16>,
    offers_out: usize,
    /// Connected peers lacking each piece: a round of offers is over when no one connected
    /// lacks a piece of it.
    lacking: Vec<u32>,
    offer_cursor: usize,
    /// Super-seeding: offers go out in index order from this piece, wrapping around;
    /// `None`: the first few pieces, then the rest at random.
    offer_start: Option<usize>,
    stats: SwarmStats,
}

#[derive(Debug)]
struct Conn {
    swarm: usize,
    /// The id the peer claims (see [`Remote`]).
    peer: PeerId,
    addr: SocketAddr,
    /// The id something vouched for, if anything did.
    verified: Option<PeerId>,
    /// Discovery listed the address this node dialled as an origin's.
    origin: bool,
    outbound: bool,
    /// The connection is the known peer of its claimed id (dialled, or made to this node
    /// from that peer's host); its failures count there.
    linked: bool,
    /// Pieces this node cancelled here: one may still arrive, having crossed the cancel.
    cancelled: VecDeque<u32>,
    /// The peer's pieces; `None` until its bitfield arrives.
    has: Option<Bitfield>,
    /// The connection's place in its swarm's slot table.
    slot: usize,
    /// Pieces requested from the peer and not yet arrived.
    requests: Vec<Req>,
    /// Pieces the peer requested and this node has queued or is sending.
    uploads: Vec<u32>,
    window: usize,
    /// Super-seeding: pieces offered to the peer that it does not hold yet.
    offered: Vec<u32>,
    backoff_until: Option<Instant>,
    /// When the peer last delivered, or when it was last given work while idle.
    last_progress: Instant,
    /// When the peer last sent a piece or asked for one (or connected).
    last_useful: Instant,
    rate: Rate,
}

/// A request out to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Req {
    pub piece: u32,
    pub at: Instant,
}

/// Super-seeding: pieces offered to one peer at a time, so that the first copies spread over
/// many peers.
const SUPER_SEED_PER_CONN: usize = 2;

/// A connection made to this node that has neither sent nor asked for a piece for this long,
/// and holds nothing this node lacks, is useless: while downloading, it gives its slot up to
/// a peer discovery named (if it is beyond the share of slots for connections made to it).
const USELESS_AFTER: Duration = Duration::from_secs(5);

/// Cancelled requests remembered per connection; a piece arriving for an older one is
/// one nobody asked for.
const MAX_CANCELLED: usize = 64;

/// The longest wait between announces whatever discovery answers (the tracker's own answers
/// are clamped tighter by `discovery::Peers::clamped`).
const MAX_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(3600);

/// Streaming: pieces ahead of a reader fetched first, at least, whatever their size: one to
/// read and a few behind it in flight, so a reader keeps moving at the download's pace.
pub const MIN_STREAM_AHEAD: usize = 4;

/// The engine: every swarm of one node.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    me: PeerId,
    rng: SmallRng,
    swarms: Vec<Option<Swarm>>,
    by_digest: HashMap<Digest, usize>,
    conns: Slab<Conn>,
    dialing: usize,
    /// Open connections made to this node, all blobs together.
    inbound: usize,
    shunned: HashMap<Blame, Instant>,
    actions: VecDeque<Action>,
    next_tick: Option<Instant>,
    totals: Totals,
}

impl Engine {
    /// An engine for the node `me`; `seed` seeds its random choices (a simulator passes a
    /// fixed one to be deterministic).
    pub fn new(cfg: Config, me: PeerId, seed: u64) -> Self {
        Engine {
            cfg,
            me,
            rng: SmallRng::seed_from_u64(seed),
            swarms: Vec::new(),
            by_digest: HashMap::new(),
            conns: Slab::default(),
            dialing: 0,
            inbound: 0,
            shunned: HashMap::new(),
            actions: VecDeque::new(),
            next_tick: None,
            totals: Totals::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    /// Starts downloading a blob, which begins with an announce.
    pub fn download(
        &mut self,
        now: Instant,
        digest: Digest,
        layout: Layout,
    ) -> Result<(), EngineError> {
        let have = Bitfield::new(layout.pieces as usize);
        self.add(now, digest, layout, have, true, true)
    }

    /// Starts seeding a complete blob; `announce` says whether to tell discovery about it
    /// (an origin need not: trackers know the origins).
    pub fn seed(
        &mut self,
        now: Instant,
        digest: Digest,
        layout: Layout,
        announce: bool,
    ) -> Result<(), EngineError> {
        let have = Bitfield::full(layout.pieces as usize);
        self.add(now, digest, layout, have, announce, false)
    }

    fn add(
        &mut self,
        now: Instant,
        digest: Digest,
        layout: Layout,
        have: Bitfield,
        announce: bool,
        downloading: bool,
    ) -> Result<(), EngineError> {
        if self.by_digest.contains_key(&digest) {
            return Err(EngineError::AlreadyPresent);
        }
        let picker = downloading.then(|| Picker::new(&have));
        // Room for every slot a blob can use: its limit, plus one for a connection that
        // replaces another (a simultaneous dial) before the other is gone.
        let holder_words = (self.cfg.max_conns_per_blob + 1).div_ceil(64).max(1);
        let super_seed = !downloading && self.cfg.super_seed_offers > 0;
        let pieces = if super_seed {
            layout.pieces as usize
        } else {
            0
        };
        // A blob of no pieces goes straight to the whole-blob check.
        let commit_now = downloading && have.is_full();
        let swarm = Swarm {
            digest,
            layout,
            stats: SwarmStats {
                pieces: layout.pieces as usize,
                have: have.count(),
                complete: !downloading,
                ..SwarmStats::default()
            },
            have,
            picker,
            phase: match (downloading, commit_now) {
                (false, _) => Phase::Seeding,
                (true, false) => Phase::Downloading,
                (true, true) => Phase::Committing,
            },
            conns: Vec::new(),
            known: Vec::new(),
            known_index: HashMap::new(),
            dialing: 0,
            outbound: 0,
            origin_conns: 0,
            in_flight: 0,
            in_flight_to_peers: 0,
            uploads: 0,
            announce,
            announcing: false,
            next_announce: announce.then_some(now),
            announce_failures: 0,
            last_active: now,
            rate: Rate::new(),
            write_failures: 0,
            cursor: 0,
            focus: None,
            slots: Vec::new(),
            slot_interesting: Vec::new(),
            slot_origin: Vec::new(),
            holders: if downloading {
                vec![0; layout.pieces as usize * holder_words]
            } else {
                Vec::new()
            },
            holder_words,
            super_seed,
            served: vec![0; pieces],
            offered: vec![0; pieces],
            offers_out: 0,
            lacking: vec![0; pieces],
            offer_cursor: 0,
            offer_start: None,
        };
        let slot = match self.swarms.iter().position(Option::is_none) {
            Some(i) => {
                self.swarms[i] = Some(swarm);
                i
            }
            None => {
                self.swarms.push(Some(swarm));
                self.swarms.len() - 1
            }
        };
        self.by_digest.insert(digest, slot);
        if commit_now {
            self.actions.push_back(Action::Commit { blob: digest });
        }
        if self.next_tick.is_none() {
            self.next_tick = Some(now);
        }
        self.announce_if_due(slot, now);
        Ok(())
    }

    /// Forgets a blob: closes its connections and reports [`Action::Retired`].
    pub fn remove(&mut self, digest: &Digest) {
        if let Some(&s) = self.by_digest.get(digest) {
            self.retire(s, ErrorCode::Shutdown);
        }
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.by_digest.contains_key(digest)
    }

    /// Streaming: `piece` is the lowest piece a reader of the blob waits for (or is reading);
    /// `None`: nobody reads in order. The missing pieces just ahead of it
    /// ([`Config::stream_ahead`]) are then requested before anything else, so a reader's
    /// first bytes wait for a piece or two rather than for rarest first to reach them.
    pub fn set_focus(&mut self, now: Instant, digest: &Digest, piece: Option<u32>) {
        let Some(&s) = self.by_digest.get(digest) else {
            return;
        };
        let sw = slot(&mut self.swarms, s);
        let piece = piece.filter(|&p| p < sw.layout.pieces);
        if sw.focus == piece {
            return;
        }
        sw.focus = piece;
        if piece.is_some() {
            self.fill(now, s);
        }
    }

    /// Super-seeding: offer a blob's pieces in index order from `start`, wrapping around,
    /// rather than the first few and then the rest at random. An origin that is owner `k`
    /// of `r` of a blob starts at piece `k * n / r`: the origins then send disjoint runs,
    /// and the run from piece 0 reaches in-order readers early.
    pub fn set_offer_start(&mut self, digest: &Digest, start: u32) {
        let Some(&s) = self.by_digest.get(digest) else {
            return;
        };
        let sw = slot(&mut self.swarms, s);
        let n = sw.layout.pieces as usize;
        sw.offer_start = (n > 0).then(|| start as usize % n);
    }

    /// The pieces held of a blob in the engine.
    pub fn have(&self, digest: &Digest) -> Option<&Bitfield> {
        self.swarm_of(digest).map(|s| &s.have)
    }

    pub fn stats(&self, digest: &Digest) -> Option<SwarmStats> {
        self.swarm_of(digest).map(|s| SwarmStats {
            connections: s.conns.len(),
            in_flight: s.in_flight,
            known_peers: s.known.len(),
            ..s.stats.clone()
        })
    }

    /// The peers at the other end of a blob's connections.
    pub fn peers(&self, digest: &Digest) -> Vec<PeerId> {
        self.swarm_of(digest)
            .map(|s| {
                s.conns
                    .iter()
                    .filter_map(|&c| self.conns.get(c).map(|c| c.peer))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    pub fn is_shunned(&self, who: &Blame, now: Instant) -> bool {
        self.shunned.get(who).is_some_and(|&until| until > now)
    }

    /// Whether a peer discovery lists at `addr` as `peer` is not to be dialled.
    fn is_listed_shunned(&self, peer: &PeerId, addr: SocketAddr, now: Instant) -> bool {
        self.is_shunned(&Blame::Dialled(addr), now) || self.is_shunned(&Blame::Verified(*peer), now)
    }

    /// Open connections, all blobs together.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Checks that the books balance: counters against the connections they count.
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let mut seen = 0;
        for sw in self.swarms.iter().flatten() {
            let mut in_flight = 0;
            let mut to_peers = 0;
            let mut uploads = 0;
            let mut offers = 0;
            let mut requested = vec![0u8; sw.layout.pieces as usize];
            for &id in &sw.conns {
                let c = self.conns.get(id).expect("swarm lists a closed connection");
                assert_eq!(
                    self.swarms[c.swarm].as_ref().map(|s| s.digest),
                    Some(sw.digest)
                );
                in_flight += c.requests.len();
                if !c.origin {
                    to_peers += c.requests.len();
                }
                uploads += c.uploads.len();
                offers += c.offered.len();
                for r in &c.requests {
                    requested[r.piece as usize] += 1;
                }
                assert_eq!(sw.slots[c.slot], Some(id));
                if let (Some(has), Some(_)) = (&c.has, &sw.picker) {
                    let lacking = has.ones().filter(|&p| !sw.have.get(p)).count();
                    assert_eq!(
                        sw.slot_interesting[c.slot] as usize, lacking,
                        "interesting count of {id}"
                    );
                }
                for p in 0..sw.layout.pieces as usize {
                    let held = c.has.as_ref().is_some_and(|h| h.get(p));
                    let listed = sw
                        .holders
                        .get(p * sw.holder_words + c.slot / 64)
                        .is_some_and(|h| h & (1u64 << (c.slot % 64)) != 0);
                    if sw.phase == Phase::Downloading {
                        assert_eq!(held, listed, "holders of piece {p}");
                    }
                }
            }
            seen += sw.conns.len();
            assert_eq!(sw.slots.iter().flatten().count(), sw.conns.len());
            assert_eq!(sw.in_flight, in_flight);
            assert_eq!(sw.in_flight_to_peers, to_peers);
            assert_eq!(sw.uploads, uploads);
            assert_eq!(sw.offers_out, offers);
            if let Some(pk) = &sw.picker {
                pk.check();
                for (p, &r) in requested.iter().enumerate() {
                    assert_eq!(pk.requested(p as u32), r, "requests for piece {p}");
                }
            }
        }
        assert_eq!(seen, self.conns.len());
    }

    fn swarm_of(&self, digest: &Digest) -> Option<&Swarm> {
        self.by_digest
            .get(digest)
            .and_then(|&s| self.swarms[s].as_ref())
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the engine next wants [`Engine::handle_timeout`]; `None` while it holds no blob.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.by_digest.is_empty() {
            None
        } else {
            self.next_tick
        }
    }

    /// Admits a connection whose handshake named `blob`: an inbound one, or the result of an
    /// [`Action::Connect`] (`outbound`). On success the connection's first action, sending
    /// this node's bitfield, is queued.
    ///
    /// The connection is an origin's only if it is outbound and discovery listed the
    /// address dialled as an origin's; a connection made to this node never is (origins only
    /// seed, so they never dial).
    pub fn open(
        &mut self,
        now: Instant,
        blob: &Digest,
        remote: Remote,
        outbound: bool,
    ) -> Result<ConnId, Refusal> {
        let Some(&s) = self.by_digest.get(blob) else {
            return Err(Refusal::UnknownBlob);
        };
        let peer = remote.peer;
        if outbound {
            // The dial this answers is over, whatever happens next.
            self.dialing = self.dialing.saturating_sub(1);
            if let Some(sw) = self.swarms[s].as_mut() {
                sw.dialing = sw.dialing.saturating_sub(1);
            }
        }
        let result = self.admit(now, s, remote, outbound);
        if result.is_err() && outbound {
            let sw = slot(&mut self.swarms, s);
            sw.outbound = sw.outbound.saturating_sub(1);
            if let Some(&k) = sw.known_index.get(&peer)
                && sw.known[k].state == KnownState::Dialing
            {
                sw.known[k].state = KnownState::Idle;
                sw.known[k].next_try = now + self.cfg.redial_backoff;
                if sw.known[k].info.origin {
                    sw.origin_conns = sw.origin_conns.saturating_sub(1);
                }
            }
        }
        result
    }

    /// What a connection is held against if it misbehaves.
    fn blames(c: &Conn) -> impl Iterator<Item = Blame> {
        let by_addr = if c.outbound {
            Blame::Dialled(c.addr)
        } else {
            Blame::Source(c.addr.ip())
        };
        std::iter::once(by_addr).chain(c.verified.map(Blame::Verified))
    }

    fn admit(
        &mut self,
        now: Instant,
        s: usize,
        remote: Remote,
        outbound: bool,
    ) -> Result<ConnId, Refusal> {
        let Remote {
            peer,
            addr,
            verified,
        } = remote;
        if peer == self.me || verified == Some(self.me) {
            return Err(Refusal::SelfConnection);
        }
        let by_addr = if outbound {
            Blame::Dialled(addr)
        } else {
            Blame::Source(addr.ip())
        };
        if self.is_shunned(&by_addr, now)
            || verified.is_some_and(|v| self.is_shunned(&Blame::Verified(v), now))
        {
            return Err(Refusal::Shunned);
        }
        let me = self.me;
        let total = self.conns.len() + self.dialing;
        let sw = slot(&mut self.swarms, s);
        // The known peer this connection is: for a dial, the entry dialled; for a connection
        // made to this node, the entry of the id it claims, but only from that peer's own host
        // and never an origin's, so a stranger cannot take another peer's place by naming it.
        let known = sw.known_index.get(&peer).copied().filter(|&k| {
            let info = &sw.known[k].info;
            if outbound {
                info.addr == addr
            } else {
                !info.origin && info.addr.ip() == addr.ip()
            }
        });
        let origin = outbound && known.is_some_and(|k| sw.known[k].info.origin);
        let listed_addr = known.map(|k| sw.known[k].info.addr);
        if let Some(a) = listed_addr
            && self.is_listed_shunned(&peer, a, now)
        {
            return Err(Refusal::Shunned);
        }
        let sw = slot(&mut self.swarms, s);
        let mut replace = None;
        if let Some(k) = known
            && let KnownState::Connected(existing) = sw.known[k].state
        {
            // Both ends may dial each other at once. Both keep the connection dialled by the
            // larger peer id, so they agree on which one survives.
            let existing_out = self.conns.get(existing).is_some_and(|c| c.outbound);
            if existing_out == outbound {
                return Err(Refusal::Duplicate);
            }
            let initiator = |out: bool| if out { me } else { peer };
            if initiator(outbound) < initiator(existing_out) {
                return Err(Refusal::Duplicate);
            }
            replace = Some(existing);
        }
        let sw = slot(&mut self.swarms, s);
        if !outbound && replace.is_none() {
            // Connections made to this node may take any free slot; while it downloads,
            // those beyond their share that turn out useless give theirs back when a peer
            // discovery named waits to be dialled (see `dial`).
            let full = sw.conns.len() + sw.dialing >= self.cfg.max_conns_per_blob;
            // And in all, at least one blob's dialling share is kept.
            let kept = self.cfg.max_outbound_per_blob.min(self.cfg.max_conns / 2);
            if full || total >= self.cfg.max_conns || self.inbound >= self.cfg.max_conns - kept {
                return Err(Refusal::Busy);
            }
            if sw.phase != Phase::Seeding
                && known.is_some_and(|k| sw.known[k].state == KnownState::Dialing && peer < me)
            {
                // Our own dial to this peer is under way and will be the one kept.
                return Err(Refusal::Duplicate);
            }
        }
        if let Some(old) = replace {
            self.drop_conn(now, old, Some(ErrorCode::Refused));
        }
        let sw = slot(&mut self.swarms, s);
        let free = sw.slots.iter().position(Option::is_none);
        let slot_index = match free {
            Some(i) => i,
            None if sw.slots.len() < sw.holder_words * 64 => {
                sw.slots.push(None);
                sw.slot_interesting.push(0);
                sw.slot_origin.push(false);
                sw.slots.len() - 1
            }
            None => return Err(Refusal::Busy),
        };
        sw.slot_interesting[slot_index] = 0;
        sw.slot_origin[slot_index] = origin;
        let conn = Conn {
            swarm: s,
            peer,
            addr,
            verified,
            origin,
            outbound,
            linked: known.is_some(),
            cancelled: VecDeque::new(),
            has: None,
            slot: slot_index,
            requests: Vec::new(),
            uploads: Vec::new(),
            window: self.cfg.initial_window,
            offered: Vec::new(),
            backoff_until: None,
            last_progress: now,
            last_useful: now,
            rate: Rate::new(),
        };
        let id = self.conns.insert(conn);
        if !outbound {
            self.inbound += 1;
        }
        let sw = self.swarms[s]
            .as_mut()
            .unwrap_or_else(|| unreachable!("swarm index {s} is stale"));
        sw.conns.push(id);
        sw.slots[slot_index] = Some(id);
        sw.last_active = now;
        if let Some(k) = known {
            // An outbound origin connection was counted when its dial began.
            let counted = outbound && sw.known[k].state == KnownState::Dialing;
            if origin && !counted {
                sw.origin_conns += 1;
            }
            sw.known[k].state = KnownState::Connected(id);
        } else if outbound && sw.known.len() < self.cfg.max_known_peers {
            // Dialled without being listed (a driver's own choice): known from now on.
            sw.known_index.insert(peer, sw.known.len());
            sw.known.push(Known {
                info: PeerInfo {
                    peer_id: peer,
                    addr,
                    complete: false,
                    origin: false,
                },
                state: KnownState::Connected(id),
                failures: 0,
                next_try: now,
                heard: now,
            });
            if let Some(c) = self.conns.get_mut(id) {
                c.linked = true;
            }
        }
        // A super-seed shows nothing at first; it offers pieces once it knows what the peer
        // holds.
        let shown = if sw.super_seed {
            Bitfield::new(sw.have.len())
        } else {
            sw.have.clone()
        };
        self.actions.push_back(Action::Send {
            conn: id,
            msg: Message::Bitfield(shown),
        });
        tracing::debug!(conn = %id, peer = ?peer, %addr, outbound, origin, "peer connected");
        Ok(id)
    }

    /// Feeds one event.
    pub fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::Announced {
                blob,
                peers,
                interval,
            } => self.on_announced(now, &blob, peers, interval),
            Event::AnnounceFailed { blob } => {
                let Some(&s) = self.by_digest.get(&blob) else {
                    return;
                };
                let retry = self.cfg.announce_retry;
                let sw = slot(&mut self.swarms, s);
                sw.announcing = false;
                sw.announce_failures += 1;
                let backoff = retry.saturating_mul(1 << sw.announce_failures.min(5));
                sw.next_announce = Some(now + backoff.min(Duration::from_secs(60)));
            }
            Event::DialFailed { blob, peer, code } => self.on_dial_failed(now, &blob, peer, code),
            Event::Closed { conn, reason } => self.on_closed(now, conn, reason),
            Event::Message { conn, msg } => self.on_message(now, conn, msg),
            Event::PieceReceived { conn, index, valid } => self.on_piece(now, conn, index, valid),
            Event::PieceWritten { blob, index, ok } => self.on_written(now, &blob, index, ok),
            Event::Uploaded { conn, index } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                let Some(pos) = c.uploads.iter().position(|&i| i == index) else {
                    return;
                };
                c.uploads.swap_remove(pos);
                let s = c.swarm;
                let sw = slot(&mut self.swarms, s);
                sw.uploads = sw.uploads.saturating_sub(1);
                sw.stats.bytes_uploaded += sw.layout.piece_size(index).unwrap_or(0) as u64;
                sw.last_active = now;
                if sw.super_seed {
                    // Sent: offer the next now rather than a round trip later, when the
                    // peer's have arrives.
                    self.offer_taken(conn, index);
                }
            }
            Event::Committed { blob, ok } => self.on_committed(now, &blob, ok),
        }
    }

    /// Runs periodic work: request time-outs, dialling, announcing, the end of seeding.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.next_tick else { return };
        if now < due {
            return;
        }
        self.next_tick = Some(now + self.cfg.tick);
        self.shunned.retain(|_, until| *until > now);
        for s in 0..self.swarms.len() {
            let Some(sw) = self.swarms[s].as_ref() else {
                continue;
            };
            let timeout = self.cfg.request_timeout;
            let stalled: Vec<ConnId> = sw
                .conns
                .iter()
                .copied()
                .filter(|&c| {
                    self.conns.get(c).is_some_and(|c| {
                        !c.requests.is_empty()
                            && now.saturating_duration_since(c.last_progress) >= timeout
                    })
                })
                .collect();
            for c in stalled {
                self.on_stall(now, c);
            }
            let Some(sw) = self.swarms[s].as_ref() else {
                continue;
            };
            if sw.phase == Phase::Seeding
                && sw.uploads == 0
                && self
                    .cfg
                    .seed_idle
                    .is_some_and(|idle| now.saturating_duration_since(sw.last_active) >= idle)
            {
                tracing::debug!(blob = %sw.digest, "seeding idle; retiring");
                self.retire(s, ErrorCode::Shutdown);
                continue;
            }
            // Connection windows follow each connection's rate.
            let ids = sw.conns.clone();
            for c in ids {
                self.update_window(now, c);
            }
            self.forget_stale(now, s);
            self.announce_if_due(s, now);
            self.dial(now, s);
            self.fill(now, s);
        }
    }

    fn announce_if_due(&mut self, s: usize, now: Instant) {
        let sw = slot(&mut self.swarms, s);
        if sw.announce && !sw.announcing && sw.next_announce.is_some_and(|t| t <= now) {
            sw.announcing = true;
            let a = Action::Announce {
                blob: sw.digest,
                complete: sw.phase == Phase::Seeding,
            };
            self.actions.push_back(a);
        }
    }

    fn on_announced(
        &mut self,
        now: Instant,
        blob: &Digest,
        peers: Vec<PeerInfo>,
        interval: Duration,
    ) {
        let Some(&s) = self.by_digest.get(blob) else {
            return;
        };
        let me = self.me;
        let min = self.cfg.min_announce_interval;
        let max_known = self.cfg.max_known_peers;
        let shunned: Vec<bool> = peers
            .iter()
            .map(|p| self.is_listed_shunned(&p.peer_id, p.addr, now))
            .collect();
        let sw = slot(&mut self.swarms, s);
        sw.announcing = false;
        sw.announce_failures = 0;
        // Whatever discovery said: `now + interval` must stay a time, and a node must not
        // stop asking for ever.
        sw.next_announce = Some(now + interval.clamp(min, MAX_ANNOUNCE_INTERVAL.max(min)));
        for (p, shunned) in peers.into_iter().zip(shunned) {
            if p.peer_id == me || shunned {
                continue;
            }
            if let Some(&k) = sw.known_index.get(&p.peer_id) {
                let known = &mut sw.known[k];
                known.heard = now;
                if known.state == KnownState::Idle {
                    known.info = p;
                }
                continue;
            }
            let k = if sw.known.len() < max_known {
                sw.known.push(Known {
                    info: p.clone(),
                    state: KnownState::Idle,
                    failures: 0,
                    next_try: now,
                    heard: now,
                });
                sw.known.len() - 1
            } else {
                // Full: the new peer takes the place of the one not connected that was heard
                // of least recently (the most failed among equals), unless every one was
                // named just now.
                let stale = sw
                    .known
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.state == KnownState::Idle && k.heard < now)
                    .min_by_key(|(_, k)| (k.heard, std::cmp::Reverse(k.failures)))
                    .map(|(i, _)| i);
                let Some(k) = stale else { continue };
                sw.known_index.remove(&sw.known[k].info.peer_id);
                sw.known[k] = Known {
                    info: p.clone(),
                    state: KnownState::Idle,
                    failures: 0,
                    next_try: now,
                    heard: now,
                };
                k
            };
            sw.known_index.insert(p.peer_id, k);
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

    /// Forgets the known peers of a blob that discovery has not named for a while and that
    /// are not connected.
    fn forget_stale(&mut self, now: Instant, s: usize) {
        let after = self.cfg.forget_peer_after;
        let Some(sw) = self.swarms[s].as_mut() else {
            return;
        };
        let stale = |k: &Known| {
            k.state == KnownState::Idle && now.saturating_duration_since(k.heard) >= after
        };
        if !sw.known.iter().any(stale) {
            return;
        }
        sw.known.retain(|k| !stale(k));
        sw.known_index = sw
            .known
            .iter()
            .enumerate()
            .map(|(i, k)| (k.info.peer_id, i))
            .collect();
    }

    fn on_dial_failed(
        &mut self,
        now: Instant,
        blob: &Digest,
        peer: PeerId,
        code: Option<ErrorCode>,
    ) {
        let Some(&s) = self.by_digest.get(blob) else {
            return;
        };
        self.dialing = self.dialing.saturating_sub(1);
        let backoff = self.cfg.redial_backoff;
        let max_failures = self.cfg.max_peer_failures;
        let sw = slot(&mut self.swarms, s);
        sw.dialing = sw.dialing.saturating_sub(1);
        sw.outbound = sw.outbound.saturating_sub(1);
        let mut shun = None;
        if let Some(&k) = sw.known_index.get(&peer)
            && sw.known[k].state == KnownState::Dialing
        {
            let known = &mut sw.known[k];
            known.state = KnownState::Idle;
            if known.info.origin {
                sw.origin_conns = sw.origin_conns.saturating_sub(1);
            }
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

    fn on_closed(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let (s, peer, linked) = (c.swarm, c.peer, c.linked);
        tracing::debug!(%conn, ?peer, ?reason, "connection closed");
        self.drop_conn(now, conn, None);
        match reason {
            CloseReason::Protocol => self.fail_peer(now, s, peer, linked),
            CloseReason::Remote(ErrorCode::Protocol) | CloseReason::Disconnected => {
                // Not necessarily the peer's fault (it may have stopped seeding), so no
                // failure is counted; the redial back-off in `drop_conn` applies.
            }
            CloseReason::Remote(_) => {}
        }
        if self.swarms[s].is_some() {
            self.dial(now, s);
            self.fill(now, s);
        }
    }

    /// Counts a failure against the known peer of a linked connection (the address this
    /// node dials it at) and shuns that address once it has failed too often. Connections
    /// that are no known peer's are only closed: their claimed id is nobody's to blame.
    fn fail_peer(&mut self, now: Instant, s: usize, peer: PeerId, linked: bool) {
        if !linked {
            return;
        }
        let max = self.cfg.max_peer_failures;
        let Some(sw) = self.swarms[s].as_mut() else {
            return;
        };
        let Some(&k) = sw.known_index.get(&peer) else {
            return;
        };
        sw.known[k].failures += 1;
        if sw.known[k].failures >= max {
            let addr = sw.known[k].info.addr;
            self.shun(now, Blame::Dialled(addr), Some(ErrorCode::Protocol));
        }
    }

    /// Drops every connection `who` covers and refuses it for `shun_for`.
    fn shun(&mut self, now: Instant, who: Blame, code: Option<ErrorCode>) {
        tracing::info!(?who, for_s = self.cfg.shun_for.as_secs(), "shunning");
        let until = now + self.cfg.shun_for;
        self.shunned.insert(who, until);
        self.actions.push_back(Action::Shunned { who, until });
        let ids: Vec<ConnId> = self
            .conns
            .ids()
            .filter(|&c| {
                self.conns
                    .get(c)
                    .is_some_and(|c| Self::blames(c).any(|b| b == who))
            })
            .collect();
        let mut touched = Vec::new();
        for c in ids {
            if let Some(conn) = self.conns.get(c) {
                touched.push(conn.swarm);
            }
            self.drop_conn(now, c, Some(code.unwrap_or(ErrorCode::Refused)));
        }
        for s in touched {
            if self.swarms[s].is_some() {
                self.fill(now, s);
            }
        }
    }

    /// Forgets a connection; with `code`, the engine is the one closing it and tells the
    /// driver to.
    fn drop_conn(&mut self, now: Instant, id: ConnId, code: Option<ErrorCode>) {
        let Some(c) = self.conns.remove(id) else {
            return;
        };
        if code.is_some() {
            self.actions.push_back(Action::Close { conn: id, code });
        }
        if !c.outbound {
            self.inbound = self.inbound.saturating_sub(1);
        }
        let backoff = self.cfg.redial_backoff;
        let Some(sw) = self.swarms[c.swarm].as_mut() else {
            return;
        };
        if let Some(pos) = sw.conns.iter().position(|&x| x == id) {
            sw.conns.swap_remove(pos);
        }
        for r in &c.requests {
            if let Some(pk) = sw.picker.as_mut() {
                pk.on_unrequest(r.piece);
            }
        }
        sw.in_flight -= c.requests.len();
        if !c.origin {
            sw.in_flight_to_peers -= c.requests.len();
        }
        sw.uploads = sw.uploads.saturating_sub(c.uploads.len());
        for &p in &c.offered {
            if let Some(o) = sw.offered.get_mut(p as usize) {
                *o = o.saturating_sub(1);
            }
        }
        sw.offers_out = sw.offers_out.saturating_sub(c.offered.len());
        if let Some(has) = &c.has
            && sw.super_seed
        {
            for (p, l) in sw.lacking.iter_mut().enumerate() {
                if !has.get(p) {
                    *l = l.saturating_sub(1);
                }
            }
        }
        if sw.offer_cursor >= sw.conns.len() {
            sw.offer_cursor = 0;
        }
        if let (Some(has), Some(pk)) = (&c.has, sw.picker.as_mut())
            && !c.origin
        {
            for p in has.ones() {
                pk.dec(p as u32);
            }
        }
        if let Some(has) = &c.has {
            let (w, b) = (c.slot / 64, 1u64 << (c.slot % 64));
            for p in has.ones() {
                if let Some(h) = sw.holders.get_mut(p * sw.holder_words + w) {
                    *h &= !b;
                }
            }
        }
        if let Some(slot) = sw.slots.get_mut(c.slot) {
            *slot = None;
        }
        if c.origin {
            sw.origin_conns = sw.origin_conns.saturating_sub(1);
        }
        if c.outbound {
            sw.outbound = sw.outbound.saturating_sub(1);
        }
        if let Some(&k) = sw.known_index.get(&c.peer)
            && sw.known[k].state == KnownState::Connected(id)
        {
            sw.known[k].state = KnownState::Idle;
            sw.known[k].next_try = now + backoff;
            sw.known[k].heard = now;
        }
        if !c.offered.is_empty() {
            self.offer(c.swarm);
        }
    }

    fn on_stall(&mut self, now: Instant, id: ConnId) {
        let timeout = self.cfg.request_timeout;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let requests = std::mem::take(&mut c.requests);
        c.window = 1;
        c.backoff_until = Some(now + timeout);
        let (s, peer, origin, linked) = (c.swarm, c.peer, c.origin, c.linked);
        for r in &requests {
            remember_cancel(c, r.piece);
        }
        tracing::info!(conn = %id, ?peer, addr = %c.addr, moved = requests.len(), "requests timed out; moving them");
        let sw = slot(&mut self.swarms, s);
        sw.stats.timeouts += 1;
        self.totals.timeouts += 1;
        sw.in_flight -= requests.len();
        if !origin {
            sw.in_flight_to_peers -= requests.len();
        }
        for r in &requests {
            if let Some(pk) = sw.picker.as_mut() {
                pk.on_unrequest(r.piece);
            }
            self.actions.push_back(Action::Send {
                conn: id,
                msg: Message::Cancel(r.piece),
            });
        }
        self.fail_peer(now, s, peer, linked);
        if self.swarms[s].is_some() {
            self.fill(now, s);
        }
    }

    fn on_message(&mut self, now: Instant, id: ConnId, msg: Message) {
        let Some(c) = self.conns.get(id) else {
            return;
        };
        let s = c.swarm;
        match msg {
            Message::KeepAlive => {}
            Message::Bitfield(bf) => self.on_bitfield(now, id, bf),
            Message::Have(i) => self.on_have(now, id, i),
            Message::Request(i) => self.on_request(now, id, i),
            Message::Cancel(i) => {
                let Some(c) = self.conns.get_mut(id) else {
                    return;
                };
                if let Some(pos) = c.uploads.iter().position(|&x| x == i) {
                    c.uploads.swap_remove(pos);
                    let sw = slot(&mut self.swarms, s);
                    sw.uploads = sw.uploads.saturating_sub(1);
                    self.actions
                        .push_back(Action::CancelUpload { conn: id, index: i });
                }
            }
            Message::Reject(i) => {
                let backoff = self.cfg.reject_backoff;
                let Some(c) = self.conns.get_mut(id) else {
                    return;
                };
                let Some(pos) = c.requests.iter().position(|r| r.piece == i) else {
                    return;
                };
                c.requests.swap_remove(pos);
                c.backoff_until = Some(now + backoff);
                let origin = c.origin;
                let sw = slot(&mut self.swarms, s);
                sw.stats.rejects_received += 1;
                self.totals.rejects_received += 1;
                sw.in_flight -= 1;
                if !origin {
                    sw.in_flight_to_peers -= 1;
                }
                if let Some(pk) = sw.picker.as_mut() {
                    pk.on_unrequest(i);
                }
                self.fill(now, s);
            }
            Message::Error { code, message } => {
                tracing::debug!(conn = %id, ?code, %message, "peer closed with an error");
                self.on_closed(now, id, CloseReason::Remote(code));
            }
            Message::Piece { index, .. } => {
                // Pieces reach the engine as `PieceReceived`, after verification; a piece
                // here is a driver bug, not the peer's fault.
                tracing::warn!(conn = %id, index, "unverified piece handed to the engine; ignored");
            }
        }
    }

    /// A protocol violation the engine sees (a message out of order): the peer is dropped
    /// and the failure counted.
    fn violation(&mut self, now: Instant, id: ConnId, what: &'static str) {
        let Some(c) = self.conns.get(id) else { return };
        let (s, peer, linked) = (c.swarm, c.peer, c.linked);
        tracing::info!(conn = %id, ?peer, addr = %c.addr, what, "protocol violation");
        self.drop_conn(now, id, Some(ErrorCode::Protocol));
        self.fail_peer(now, s, peer, linked);
        if self.swarms[s].is_some() {
            self.dial(now, s);
            self.fill(now, s);
        }
    }

    fn on_bitfield(&mut self, now: Instant, id: ConnId, bf: Bitfield) {
        let Some(c) = self.conns.get(id) else { return };
        let s = c.swarm;
        if c.has.is_some() {
            return self.violation(now, id, "second bitfield");
        }
        let sw = self.swarms[s]
            .as_mut()
            .unwrap_or_else(|| unreachable!("connection of a retired swarm"));
        if bf.len() != sw.layout.pieces as usize {
            return self.violation(now, id, "bitfield of the wrong length");
        }
        let mut interesting = 0;
        if let Some(pk) = sw.picker.as_mut() {
            let (w, b) = (c.slot / 64, 1u64 << (c.slot % 64));
            for p in bf.ones() {
                if !c.origin {
                    pk.inc(p as u32);
                }
                if !sw.have.get(p) {
                    interesting += 1;
                }
                if let Some(h) = sw.holders.get_mut(p * sw.holder_words + w) {
                    *h |= b;
                }
            }
        }
        sw.slot_interesting[c.slot] = interesting;
        if sw.super_seed {
            for (p, l) in sw.lacking.iter_mut().enumerate() {
                if !bf.get(p) {
                    *l += 1;
                }
            }
        }
        let both_complete = sw.phase == Phase::Seeding && bf.is_full();
        if let Some(c) = self.conns.get_mut(id) {
            c.has = Some(bf);
        }
        if both_complete {
            // Two seeds have nothing to say to each other; free the slot.
            self.drop_conn(now, id, Some(ErrorCode::Shutdown));
            return;
        }
        self.offer(s);
        self.fill(now, s);
    }

    fn on_have(&mut self, now: Instant, id: ConnId, i: u32) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let s = c.swarm;
        let Some(has) = c.has.as_mut() else {
            return self.violation(now, id, "have before bitfield");
        };
        if !has.set(i as usize) {
            return;
        }
        let peer_complete = has.is_full();
        let origin = c.origin;
        let sw = self.swarms[s]
            .as_mut()
            .unwrap_or_else(|| unreachable!("connection of a retired swarm"));
        if let Some(l) = sw.lacking.get_mut(i as usize) {
            *l = l.saturating_sub(1);
        }
        if sw.phase == Phase::Seeding && peer_complete {
            self.drop_conn(now, id, Some(ErrorCode::Shutdown));
            return;
        }
        if sw.super_seed {
            self.offer_taken(id, i);
            return;
        }
        let ahead = stream_ahead(&self.cfg, sw);
        let Some(pk) = sw.picker.as_mut() else {
            return;
        };
        if !origin {
            pk.inc(i);
        }
        if let Some(h) = sw
            .holders
            .get_mut(i as usize * sw.holder_words + c.slot / 64)
        {
            *h |= 1u64 << (c.slot % 64);
        }
        if sw.have.get(i as usize) {
            return;
        }
        sw.slot_interesting[c.slot] += 1;
        if !pk.is_wanted(i) {
            // Arrived and being written.
            return;
        }
        if origin || sw.focus.is_some_and(|f| pk.in_focus(i, f, ahead)) {
            // An origin offering a piece (super-seeding), or a piece a reader is about to
            // need: worth a look at once.
            self.fill(now, s);
            return;
        }
        // The cheap path: a newly announced piece nobody is fetching yet, from a connection
        // with room, while the blob is short of requests. Most haves end here or above.
        if pk.requested(i) == 0
            && c.requests.len() < c.window
            && c.backoff_until.is_none_or(|t| t <= now)
            && sw.in_flight_to_peers < target_in_flight(&self.cfg, sw, now)
        {
            request(sw, c, id, i, now, &mut self.actions);
        }
    }

    fn on_request(&mut self, now: Instant, id: ConnId, i: u32) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let sw = self.swarms[c.swarm]
            .as_mut()
            .unwrap_or_else(|| unreachable!("connection of a retired swarm"));
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
        if let Some(n) = sw.served.get_mut(i as usize) {
            *n += 1;
        }
        self.actions
            .push_back(Action::Upload { conn: id, index: i });
    }

    fn on_piece(&mut self, now: Instant, id: ConnId, index: u32, valid: bool) {
        let Some(c) = self.conns.get_mut(id) else {
            self.actions
                .push_back(Action::DropPiece { conn: id, index });
            return;
        };
        let s = c.swarm;
        let peer = c.peer;
        let origin = c.origin;
        let rate_window = self.cfg.rate_window;
        let asked = c.requests.iter().position(|r| r.piece == index);
        let crossed = c.cancelled.iter().position(|&p| p == index);
        if asked.is_none() && crossed.is_none() {
            // Nobody asked for it: a protocol error on this connection, not evidence against
            // whoever the peer claims to be.
            self.actions
                .push_back(Action::DropPiece { conn: id, index });
            return self.violation(now, id, "piece never requested");
        }
        if let Some(pos) = crossed {
            c.cancelled.remove(pos);
        }
        let sw = self.swarms[s]
            .as_mut()
            .unwrap_or_else(|| unreachable!("connection of a retired swarm"));
        if let Some(pos) = asked {
            c.requests.swap_remove(pos);
            sw.in_flight -= 1;
            if !origin {
                sw.in_flight_to_peers -= 1;
            }
            if let Some(pk) = sw.picker.as_mut() {
                pk.on_unrequest(index);
            }
        }
        if !valid {
            // A piece it was asked for, and it lied: what can be verified of the sender is
            // shunned (its address; its id only if something vouched for it).
            sw.stats.bad_pieces += 1;
            tracing::warn!(conn = %id, ?peer, addr = %c.addr, index, "peer sent a corrupt piece");
            self.actions
                .push_back(Action::DropPiece { conn: id, index });
            let blames: Vec<Blame> = Self::blames(c).collect();
            for who in blames {
                self.shun(now, who, Some(ErrorCode::Protocol));
            }
            return;
        }
        let size = sw.layout.piece_size(index).unwrap_or(0) as u64;
        c.last_progress = now;
        c.last_useful = now;
        c.rate.add(now, size, rate_window);
        sw.rate.add(now, size, rate_window);
        sw.last_active = now;
        if origin {
            sw.stats.bytes_from_origins += size;
        } else {
            sw.stats.bytes_from_peers += size;
        }
        let wanted = sw.picker.as_ref().is_some_and(|pk| pk.is_wanted(index));
        if !wanted {
            sw.stats.duplicate_pieces += 1;
            self.actions
                .push_back(Action::DropPiece { conn: id, index });
        } else {
            let mut outstanding = 0;
            if let Some(pk) = sw.picker.as_mut() {
                pk.remove(index);
                outstanding = pk.requested(index);
            }
            self.actions.push_back(Action::WritePiece {
                blob: sw.digest,
                conn: id,
                index,
            });
            // Endgame: other copies are on their way; stop them.
            for &other in sw.conns.iter().filter(|_| outstanding > 0) {
                let Some(oc) = self.conns.get_mut(other) else {
                    continue;
                };
                if let Some(pos) = oc.requests.iter().position(|r| r.piece == index) {
                    oc.requests.swap_remove(pos);
                    remember_cancel(oc, index);
                    sw.in_flight -= 1;
                    if !oc.origin {
                        sw.in_flight_to_peers -= 1;
                    }
                    if let Some(pk) = sw.picker.as_mut() {
                        pk.on_unrequest(index);
                    }
                    self.actions.push_back(Action::Send {
                        conn: other,
                        msg: Message::Cancel(index),
                    });
                }
            }
        }
        self.update_window(now, id);
        self.fill(now, s);
    }

    fn update_window(&mut self, now: Instant, id: ConnId) {
        let cfg = &self.cfg;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let Some(sw) = self.swarms[c.swarm].as_ref() else {
            return;
        };
        let rate = c.rate.decayed(now, cfg.rate_window);
        let ahead = rate * cfg.request_queue_time.as_secs_f64() / sw.layout.piece_length as f64;
        c.window = (1 + ahead.ceil() as usize).clamp(cfg.initial_window, cfg.max_window);
    }

    fn on_written(&mut self, now: Instant, blob: &Digest, index: u32, ok: bool) {
        let Some(&s) = self.by_digest.get(blob) else {
            return;
        };
        let sw = slot(&mut self.swarms, s);
        if sw.phase != Phase::Downloading || sw.have.get(index as usize) {
            return;
        }
        if !ok {
            sw.write_failures += 1;
            if sw.write_failures >= 3 {
                let blob = sw.digest;
                tracing::warn!(%blob, "pieces cannot be written; giving up");
                self.actions.push_back(Action::Failed {
                    blob,
                    error: SwarmError::Storage,
                });
                self.retire(s, ErrorCode::Shutdown);
                return;
            }
            if let Some(pk) = sw.picker.as_mut() {
                pk.insert(index);
            }
            self.fill(now, s);
            return;
        }
        sw.have.set(index as usize);
        sw.stats.have = sw.have.count();
        // Once per piece per neighbour: the swarm's own tables say who holds it, so no
        // connection's state is touched.
        let row = index as usize * sw.holder_words;
        for (k, slot_conn) in sw.slots.iter().enumerate() {
            let Some(id) = *slot_conn else { continue };
            let holds = sw
                .holders
                .get(row + k / 64)
                .is_some_and(|h| h & (1u64 << (k % 64)) != 0);
            if holds {
                sw.slot_interesting[k] = sw.slot_interesting[k].saturating_sub(1);
            }
            // Peers that hold the piece learn nothing from hearing of it, except origins:
            // a super-seeding origin may show a piece it holds as offered and needs the have
            // to offer the next.
            if sw.slot_origin[k] || !holds {
                self.actions.push_back(Action::Send {
                    conn: id,
                    msg: Message::Have(index),
                });
            }
        }
        if sw.have.is_full() {
            sw.phase = Phase::Committing;
            let blob = sw.digest;
            self.actions.push_back(Action::Commit { blob });
        }
    }

    fn on_committed(&mut self, now: Instant, blob: &Digest, ok: bool) {
        let Some(&s) = self.by_digest.get(blob) else {
            return;
        };
        let sw = slot(&mut self.swarms, s);
        if sw.phase != Phase::Committing {
            return;
        }
        let blob = sw.digest;
        if !ok {
            tracing::warn!(%blob, "every piece verified but the blob did not");
            self.actions.push_back(Action::Failed {
                blob,
                error: SwarmError::BlobMismatch,
            });
            self.retire(s, ErrorCode::Shutdown);
            return;
        }
        sw.phase = Phase::Seeding;
        sw.picker = None;
        sw.holders = Vec::new();
        sw.stats.complete = true;
        sw.last_active = now;
        sw.next_announce = Some(now);
        sw.announcing = false;
        self.actions.push_back(Action::Completed { blob });
        let seeds: Vec<ConnId> = sw
            .conns
            .iter()
            .copied()
            .filter(|&c| {
                // Seeds, and origins (which never download), have nothing left to say.
                self.conns
                    .get(c)
                    .is_some_and(|c| c.origin || c.has.as_ref().is_some_and(Bitfield::is_full))
            })
            .collect();
        for c in seeds {
            self.drop_conn(now, c, Some(ErrorCode::Shutdown));
        }
        self.announce_if_due(s, now);
    }

    fn retire(&mut self, s: usize, code: ErrorCode) {
        let Some(sw) = self.swarms[s].take() else {
            return;
        };
        self.by_digest.remove(&sw.digest);
        self.dialing = self.dialing.saturating_sub(sw.dialing);
        for c in sw.conns {
            if self.conns.remove(c).is_some() {
                self.actions.push_back(Action::Close {
                    conn: c,
                    code: Some(code),
                });
            }
        }
        self.actions.push_back(Action::Retired { blob: sw.digest });
    }

    /// Super-seeding: offers pieces to peers, round robin, until `super_seed_offers` are
    /// out. Only pieces uploaded (or offered) the fewest times are offered, so every piece
    /// goes out once before any goes out twice; each offer is a have.
    fn offer(&mut self, s: usize) {
        let cap = self.cfg.super_seed_offers;
        let Some(sw) = self.swarms[s].as_mut() else {
            return;
        };
        if !sw.super_seed || sw.conns.is_empty() {
            return;
        }
        let n = sw.have.len();
        let score = |sw: &Swarm, p: usize| sw.served[p] + sw.offered[p] as u32;
        // The round: the fewest times any piece a connected peer lacks has gone out.
        let round = |sw: &Swarm| {
            (0..n)
                .filter(|&p| sw.lacking[p] > 0)
                .map(|p| score(sw, p))
                .min()
        };
        let Some(mut round_now) = round(sw) else {
            return;
        };
        let mut idle_pass = 0;
        while sw.offers_out < cap && idle_pass < sw.conns.len() {
            sw.offer_cursor = (sw.offer_cursor + 1) % sw.conns.len();
            let id = sw.conns[sw.offer_cursor];
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
            let eligible = |p: &usize| !has.get(*p) && score(sw, *p) == round_now;
            let pick = match sw.offer_start {
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
            sw.offered[p] = sw.offered[p].saturating_add(1);
            sw.offers_out += 1;
            self.actions.push_back(Action::Send {
                conn: id,
                msg: Message::Have(p as u32),
            });
            let Some(r) = round(sw) else { return };
            round_now = r;
        }
    }

    /// Super-seeding: the peer on `id` has, or has been sent, piece `p`.
    fn offer_taken(&mut self, id: ConnId, p: u32) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        let Some(pos) = c.offered.iter().position(|&x| x == p) else {
            return;
        };
        c.offered.swap_remove(pos);
        let s = c.swarm;
        let sw = slot(&mut self.swarms, s);
        if let Some(o) = sw.offered.get_mut(p as usize) {
            *o = o.saturating_sub(1);
        }
        sw.offers_out = sw.offers_out.saturating_sub(1);
        self.offer(s);
    }

    /// Dials known peers until the blob's connection budget is used.
    fn dial(&mut self, now: Instant, s: usize) {
        let max_blob = self.cfg.max_conns_per_blob;
        let max_all = self.cfg.max_conns;
        let max_origins = self.cfg.max_origin_conns_per_blob;
        let max_out = self.cfg.max_outbound_per_blob;
        loop {
            let total = self.conns.len() + self.dialing;
            let Some(sw) = self.swarms[s].as_mut() else {
                return;
            };
            if sw.phase != Phase::Downloading || sw.outbound >= max_out || total >= max_all {
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
                            && sw.slot_interesting[c.slot] == 0
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

    /// Requests pieces: from peers, round robin, each up to its window, until the blob has
    /// its target in flight; from origins, what no peer holds, up to each origin
    /// connection's window whatever the target (an origin's offer is the swarm's scarcest
    /// upload and should never wait); then endgame copies.
    fn fill(&mut self, now: Instant, s: usize) {
        let Engine {
            cfg,
            rng,
            swarms,
            conns,
            actions,
            ..
        } = self;
        let Some(sw) = swarms[s].as_mut() else { return };
        if sw.phase != Phase::Downloading || sw.conns.is_empty() {
            return;
        }
        fill_focus(cfg, sw, conns, actions, now);
        let target = target_in_flight(cfg, sw, now);
        // Requests waiting far longer than a piece takes at this blob's rate (queued behind
        // a slow peer's other uploads) do not count against the target: otherwise a few
        // slow peers hold a host to their pace, and its rate, and so its target, stay low.
        let rate = sw.rate.decayed(now, cfg.rate_window);
        let piece_time = Duration::try_from_secs_f64(sw.layout.piece_length as f64 / rate)
            .unwrap_or(Duration::MAX);
        let late_after = piece_time
            .saturating_mul(3)
            .max(cfg.request_queue_time.saturating_mul(2));
        let late = sw
            .conns
            .iter()
            .filter_map(|&id| conns.get(id))
            .filter(|c| !c.origin)
            .flat_map(|c| &c.requests)
            .filter(|r| now.saturating_duration_since(r.at) > late_after)
            .count();
        let n = sw.conns.len();
        for pass in 0..3 {
            let Some(pk) = sw.picker.as_ref() else { return };
            let room = |sw: &Swarm| match pass {
                0 => sw.in_flight_to_peers < target + late,
                1 => true,
                _ => sw.in_flight < target,
            };
            if !room(sw) || pass == 2 && pk.unrequested() > 0 {
                continue;
            }
            // Origins serve pieces peers hold only when no peer can be asked for anything.
            let fallback = sw.in_flight_to_peers == 0
                && !sw.conns.iter().any(|&id| {
                    conns.get(id).is_some_and(|c| {
                        !c.origin
                            && sw.slot_interesting[c.slot] > 0
                            && c.backoff_until.is_none_or(|t| t <= now)
                    })
                });
            for k in 0..n {
                let at = (sw.cursor + k) % n;
                let id = sw.conns[at];
                let Some(c) = conns.get_mut(id) else { continue };
                // Pass 0 asks peers, pass 1 origins, pass 2 (endgame) peers again, and
                // origins only if no peer is of use: an origin's upload is the scarcest.
                let wrong_kind = match pass {
                    0 => c.origin,
                    1 => !c.origin,
                    _ => c.origin && !fallback,
                };
                if wrong_kind
                    || sw.slot_interesting[c.slot] == 0
                    || c.requests.len() >= c.window
                    || c.backoff_until.is_some_and(|t| t > now)
                {
                    continue;
                }
                while c.requests.len() < c.window && room(sw) {
                    let (Some(pk), Some(has)) = (sw.picker.as_ref(), c.has.as_ref()) else {
                        break;
                    };
                    let cand = Candidate {
                        has,
                        asked: &c.requests,
                    };
                    let p = match pass {
                        0 => pk.pick(&cand, rng),
                        1 => pk.pick_from_origin(&cand, fallback, rng),
                        _ => pk.pick_duplicate(&cand, cfg.endgame_copies),
                    };
                    let Some(p) = p else { break };
                    request(sw, c, id, p, now, actions);
                }
                if !room(sw) {
                    sw.cursor = (at + 1) % n;
                    break;
                }
            }
        }
    }
}

/// The swarm in slot `s`. Callers hold an index taken from `by_digest` or a live connection
/// within the same call, and swarms leave only through `retire`, which drops both.
fn slot(swarms: &mut [Option<Swarm>], s: usize) -> &mut Swarm {
    swarms[s]
        .as_mut()
        .unwrap_or_else(|| unreachable!("swarm index {s} is stale"))
}

/// Streaming: how many missing pieces ahead of a reader are fetched first.
fn stream_ahead(cfg: &Config, sw: &Swarm) -> usize {
    let pieces = cfg
        .stream_ahead
        .div_ceil(sw.layout.piece_length.max(1) as u64);
    usize::try_from(pieces)
        .unwrap_or(usize::MAX)
        .max(MIN_STREAM_AHEAD)
}

/// Streaming: requests the missing pieces just ahead of a reader that nobody has been asked
/// for, in order, before the rest and whatever the target in flight (there are only a
/// few). Each goes to the connection that will likely deliver it soonest: a peer before an
/// origin, then the one with the fewest requests queued; so consecutive pieces spread over
/// connections and arrive side by side.
///
/// An origin is asked only for pieces it offered, as for everything else, unless no peer
/// is connected at all: a swarm's readers all wait at the same place, and if each asked an
/// origin for the pieces nobody holds yet, the origin would send every piece once per
/// host. Its offers (super-seeding) put each piece with one host, and the readers take it
/// from there.
fn fill_focus(
    cfg: &Config,
    sw: &mut Swarm,
    conns: &mut Slab<Conn>,
    actions: &mut VecDeque<Action>,
    now: Instant,
) {
    let Some(from) = sw.focus else { return };
    let ahead = stream_ahead(cfg, sw);
    let only_origins = sw.conns.len() <= sw.origin_conns;
    let Some(pk) = sw.picker.as_ref() else { return };
    let free: Vec<u32> = pk
        .focus(from, ahead)
        .filter(|&p| pk.requested(p) == 0)
        .collect();
    for p in free {
        let mut best: Option<((bool, usize), ConnId)> = None;
        for &id in &sw.conns {
            let Some(c) = conns.get(id) else { continue };
            let Some(has) = c.has.as_ref() else { continue };
            if c.requests.len() >= c.window
                || c.backoff_until.is_some_and(|t| t > now)
                || !(has.get(p as usize) || c.origin && only_origins)
            {
                continue;
            }
            let key = (c.origin, c.requests.len());
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, id));
            }
        }
        let Some((_, id)) = best else { continue };
        if let Some(c) = conns.get_mut(id) {
            request(sw, c, id, p, now, actions);
        }
    }
}

/// A request of `piece` on `c` is being cancelled: the piece may still come, having crossed
/// the cancel, and is then no protocol error.
fn remember_cancel(c: &mut Conn, piece: u32) {
    if c.cancelled.len() >= MAX_CANCELLED {
        c.cancelled.pop_front();
    }
    c.cancelled.push_back(piece);
}

fn target_in_flight(cfg: &Config, sw: &Swarm, now: Instant) -> usize {
    let rate = sw.rate.decayed(now, cfg.rate_window);
    let ahead = rate * cfg.request_queue_time.as_secs_f64() / sw.layout.piece_length.max(1) as f64;
    (ahead.ceil() as usize).clamp(cfg.min_in_flight, cfg.max_in_flight)
}

fn request(
    sw: &mut Swarm,
    c: &mut Conn,
    id: ConnId,
    p: u32,
    now: Instant,
    actions: &mut VecDeque<Action>,
) {
    if c.requests.is_empty() {
        // The stall clock runs from when an idle connection is given work.
        c.last_progress = now;
    }
    c.requests.push(Req { piece: p, at: now });
    if let Some(pk) = sw.picker.as_mut() {
        pk.on_request(p);
    }
    sw.in_flight += 1;
    if !c.origin {
        sw.in_flight_to_peers += 1;
    }
    actions.push_back(Action::Send {
        conn: id,
        msg: Message::Request(p),
    });
}
