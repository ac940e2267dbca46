//! What crosses the engine's boundary: the events a driver feeds it, the actions it returns,
//! who a connection is and what it is blamed on, its errors and its counters.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shoal_core::Digest;
use shoal_core::peer::{PeerId, PeerInfo};

use super::ConnId;
#[cfg(doc)]
use super::Engine;
use crate::wire::{ErrorCode, Message};

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
    /// An id something vouches for (the certificate the peer presented, when the peer
    /// protocol runs over TLS; it is then also `peer`): blamed, and shunned, along with the
    /// address. `None`: only the address is known for sure.
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
