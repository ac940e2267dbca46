//! The tokio driver: a [`Node`] runs the [`Engine`] for every blob a host downloads or seeds,
//! over TCP (with mutual TLS unless the node is set to plaintext), with the blobs in a
//! [`BlobStore`].
//!
//! One task owns the engine and is the only one to touch it; it feeds it what connection
//! tasks, timers and discovery report, and turns its actions into work for them. Bytes never
//! pass through it: a connection's reader verifies a piece (SHA-256 against the metainfo)
//! before the engine hears of it, and the node writes a piece to the partial blob only when
//! the engine says it is still wanted; a connection's writer reads what it uploads from the
//! partial or committed blob and pays the node's egress cap as it writes.
//!
//! Two callers:
//! - an origin, which seeds every blob it holds: [`Node::start`] with a [`MetainfoSource`],
//!   and a connection naming an unknown digest gets the blob's metainfo from it;
//! - an agent, which downloads: [`Node::download`] returns a [`DownloadHandle`] to stream
//!   the blob in order as pieces verify and to learn the outcome; the blob is then seeded
//!   until idle. A handle's streams tell the engine where they read, so the pieces a
//!   reader needs next come first.
//!
//! Either stops serving a blob it deleted with [`Node::unseed`].
//!
//! The parts: the [`Node`] handle and what its tasks share (here); its settings
//! ([`NodeConfig`], `config.rs`); the task that owns the engine (`actor.rs`); accepting
//! connections (`accept.rs`); one connection's reader and writer (`conn.rs`); the TLS
//! handshake and the checks that bind a peer's id to its certificate (`secure.rs`); a
//! connection's stream, plain or TLS (`stream.rs`); a blob's files and the download handle
//! (`blob.rs`); the memory bounds on pieces in transit (`budget.rs`).

mod accept;
mod actor;
mod blob;
mod budget;
mod config;
mod conn;
mod secure;
mod stream;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use prometheus::Registry;
use shoal_core::peer::{PeerId, PeerInfo};
use shoal_core::store::{BlobInfo, BlobStore, StoreError};
use shoal_core::{Digest, Metainfo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bitfield::Bitfield;
use crate::discovery::Discovery;
#[cfg(doc)]
use crate::engine::Engine;
use crate::engine::{Blame, ConnId, Event, SwarmStats};
use crate::error::P2pError;
use crate::metrics::Metrics;
use crate::rate::RateLimiter;
use crate::wire::{ErrorCode, Hello};
use accept::{InboundCounts, InboundSlot, accept_loop};
use actor::Actor;
use blob::DownloadShared;
use budget::{Reservation, WriteBudget};
use conn::ConnSetup;
use secure::PeerTls;
use stream::PeerStream;

pub use blob::{DownloadError, DownloadHandle, Progress};
pub use budget::{DEFAULT_MAX_UNSENT_BYTES, DEFAULT_MAX_UNWRITTEN_BYTES};
pub use config::{DEFAULT_MAX_INBOUND_PER_ADDR, NodeConfig};

/// Where an origin learns the metainfo of a blob a peer asks for. `None`: not served here.
pub trait MetainfoSource: Send + Sync + 'static {
    fn metainfo(&self, digest: Digest) -> BoxFuture<'_, Option<Metainfo>>;
}

/// A running node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    ctx: Arc<Ctx>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.ctx.peer_id)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// What the node's tasks share.
pub(crate) struct Ctx {
    cmd: mpsc::UnboundedSender<Cmd>,
    cfg: NodeConfig,
    peer_id: PeerId,
    metrics: Metrics,
    egress: RateLimiter,
    ingress: RateLimiter,
    unwritten: WriteBudget,
    /// Piece bytes read for uploads and not yet sent.
    unsent: WriteBudget,
    /// Connections made to this node, per source address.
    inbound: InboundCounts,
    store: BlobStore,
    source: Option<Arc<dyn MetainfoSource>>,
    /// The peer protocol's TLS; `None`: plaintext.
    tls: Option<PeerTls>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// What the node's task is told.
pub(crate) enum Cmd {
    Download {
        metainfo: Arc<Metainfo>,
        partial: shoal_core::store::PartialBlob,
        reply: oneshot::Sender<Arc<DownloadShared>>,
    },
    Seed {
        metainfo: Metainfo,
        announce: bool,
        reply: oneshot::Sender<Option<Arc<DownloadShared>>>,
    },
    Inbound {
        hello: Hello,
        addr: SocketAddr,
        /// The id the peer's certificate vouches for (TLS only).
        verified: Option<PeerId>,
        reply: oneshot::Sender<InboundAnswer>,
    },
    Dialed {
        blob: Digest,
        peer: PeerInfo,
        first: Bitfield,
        stream: PeerStream,
        /// The id the peer's certificate vouches for (TLS only).
        verified: Option<PeerId>,
    },
    Engine(Event),
    PieceArrived {
        conn: ConnId,
        index: u32,
        /// `None`: the piece failed its hash check.
        data: Option<Bytes>,
        /// The piece's bytes against the write budget, given back once written or dropped.
        reservation: Option<Reservation>,
    },
    Committed {
        blob: Digest,
        result: Result<BlobInfo, StoreError>,
    },
    Stats {
        blob: Digest,
        reply: oneshot::Sender<Option<SwarmStats>>,
    },
    /// The lowest piece a reader of the blob waits for changed.
    Focus {
        blob: Digest,
        piece: Option<u32>,
    },
    Unseed {
        blob: Digest,
        reply: oneshot::Sender<bool>,
    },
    IsShunned {
        who: Blame,
        reply: oneshot::Sender<bool>,
    },
}

pub(crate) enum InboundAnswer {
    Accept(ConnSetup),
    /// The engine does not hold the blob (the caller may look it up and seed it).
    Unknown,
    Refuse(ErrorCode),
}

impl Node {
    /// Starts a node serving `listener` (bound by the caller, so tests can use port 0) with
    /// blobs in `store`. Its metric families are registered on `registry` under
    /// `config.metrics_prefix`. It runs until `shutdown` is cancelled; [`Node::closed`]
    /// then waits for its tasks to end.
    pub fn start(
        config: NodeConfig,
        listener: TcpListener,
        store: BlobStore,
        discovery: Arc<dyn Discovery>,
        metainfo: Option<Arc<dyn MetainfoSource>>,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> Result<Node, P2pError> {
        let local_addr = listener.local_addr()?;
        let tls = match &config.tls {
            Some(t) => Some(PeerTls::new(t, &config)?),
            None => None,
        };
        let metrics = Metrics::register(registry, &config.metrics_prefix)?;
        let unwritten = WriteBudget::new(
            config.max_unwritten_bytes,
            Some(metrics.unwritten_bytes.clone()),
        );
        let unsent = WriteBudget::new(config.max_unsent_bytes, Some(metrics.unsent_bytes.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        let tasks = TaskTracker::new();
        let ctx = Arc::new(Ctx {
            unsent,
            inbound: InboundCounts::default(),
            cmd: tx,
            peer_id: config.peer_id,
            metrics,
            egress: RateLimiter::new(config.egress_rate),
            ingress: RateLimiter::new(config.ingress_rate),
            unwritten,
            store,
            source: metainfo,
            tls,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            cfg: config,
        });
        let seed = rand::random::<u64>();
        let port = ctx.cfg.advertise_port.unwrap_or(local_addr.port());
        let actor = Actor::new(Arc::clone(&ctx), discovery, port, seed);
        tasks.spawn(actor.run(rx));
        tasks.spawn(accept_loop(Arc::clone(&ctx), listener));
        tasks.close();
        tracing::info!(
            peer_id = %ctx.peer_id,
            addr = %local_addr,
            origin = ctx.cfg.origin,
            tls = ctx.tls.is_some(),
            "p2p node started"
        );
        Ok(Node { ctx, local_addr })
    }

    pub fn peer_id(&self) -> PeerId {
        self.ctx.peer_id
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How other peers should list this node (tests and static discovery).
    pub fn peer_info(&self) -> PeerInfo {
        PeerInfo {
            peer_id: self.ctx.peer_id,
            addr: self.local_addr,
            complete: false,
            origin: self.ctx.cfg.origin,
        }
    }

    /// Fetches a blob through the swarm. Concurrent calls for one digest share one download;
    /// a blob already in the store is complete at once (and seeded). Every piece is verified
    /// before it is written or announced, and the whole blob against its digest before it
    /// becomes visible in the store.
    pub async fn download(&self, metainfo: Metainfo) -> Result<DownloadHandle, P2pError> {
        let digest = metainfo.digest();
        if self.ctx.store.stat(&digest).await?.is_some() {
            let (reply, rx) = oneshot::channel();
            self.send(Cmd::Seed {
                metainfo,
                announce: true,
                reply,
            })?;
            let shared = rx.await.map_err(|_| P2pError::Stopped)?;
            return shared.map(DownloadHandle::new).ok_or(P2pError::Stopped);
        }
        let partial = self.ctx.store.partial(metainfo.clone()).await?;
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Download {
            metainfo: Arc::new(metainfo),
            partial,
            reply,
        })?;
        let shared = rx.await.map_err(|_| P2pError::Stopped)?;
        Ok(DownloadHandle::new(shared))
    }

    /// Seeds a blob already committed in the store (an agent that restarted, an origin that
    /// wants a blob warm).
    pub async fn seed(&self, metainfo: Metainfo) -> Result<(), P2pError> {
        let digest = metainfo.digest();
        match self.ctx.store.stat(&digest).await? {
            Some(len) if len == metainfo.length() => {}
            Some(actual) => {
                return Err(P2pError::LengthMismatch {
                    digest,
                    expected: metainfo.length(),
                    actual,
                });
            }
            None => return Err(P2pError::NotInStore(digest)),
        }
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Seed {
            metainfo,
            announce: self.ctx.cfg.announce_seeds,
            reply,
        })?;
        rx.await.map_err(|_| P2pError::Stopped)?;
        Ok(())
    }

    /// Stops serving a blob (deleted from the store, or evicted): its swarm ends, its
    /// connections close with `shutting down`, and its open file is dropped, so the space
    /// of a deleted file is freed. Peers asking for it afterwards are refused as for any
    /// blob not served here (an origin's [`MetainfoSource`] must no longer list it). A
    /// download of it still running ends with [`DownloadError::Stopped`], and reads through
    /// its handles fail. Returns whether the node had the blob.
    pub async fn unseed(&self, blob: Digest) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.send(Cmd::Unseed { blob, reply }).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// The engine's counters for a blob, if it is in the engine.
    pub async fn stats(&self, blob: Digest) -> Option<SwarmStats> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Stats { blob, reply }).ok()?;
        rx.await.ok().flatten()
    }

    /// Whether this node currently refuses an address (or verified id) for misbehaving.
    pub async fn is_shunned(&self, who: Blame) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.send(Cmd::IsShunned { who, reply }).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Waits until the node has stopped (after its shutdown token is cancelled) and every
    /// task of it has ended.
    pub async fn closed(&self) {
        self.ctx.tasks.wait().await;
    }

    /// Waits until the node's task has ended: after shutdown, or because it died. A caller
    /// that reports readiness watches this.
    pub async fn stopped(&self) {
        self.ctx.cmd.closed().await;
    }

    fn send(&self, cmd: Cmd) -> Result<(), P2pError> {
        self.ctx.cmd.send(cmd).map_err(|_| P2pError::Stopped)
    }
}
