//! The tokio driver: a [`Node`] runs the [`Engine`] for every blob a host downloads or seeds,
//! over TCP, with the blobs in a [`BlobStore`].
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

mod blob;
mod budget;
mod conn;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use prometheus::Registry;
use shoal_core::peer::{PeerId, PeerInfo};
use shoal_core::store::{BlobInfo, BlobStore, StoreError};
use shoal_core::{Digest, Metainfo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bitfield::Bitfield;
use crate::discovery::{Announce, Discovery};
use crate::engine::{self, Action, Blame, ConnId, Engine, Event, Remote, SwarmError, SwarmStats};
use crate::error::P2pError;
use crate::metrics::Metrics;
use crate::rate::RateLimiter;
use crate::wire::{ErrorCode, Hello, Layout};
use blob::{BlobIo, DownloadShared};
use budget::{Reservation, WriteBudget};
use conn::{ConnCmd, ConnSetup};

pub use blob::{DownloadError, DownloadHandle, Progress};
pub use budget::{DEFAULT_MAX_UNSENT_BYTES, DEFAULT_MAX_UNWRITTEN_BYTES};

/// What [`NodeConfig::max_inbound_per_addr`] is for an agent unless set: one host pulling
/// that many blobs from this one at once, with room to spare.
pub const DEFAULT_MAX_INBOUND_PER_ADDR: usize = 64;

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub peer_id: PeerId,
    pub engine: engine::Config,
    /// This node is an origin: it says so in its hello, and peers ask it only for what no
    /// one else holds.
    pub origin: bool,
    /// Whether blobs this node seeds without having downloaded them (through
    /// [`Node::seed`] or a [`MetainfoSource`]) are announced. Trackers list origins without
    /// being told.
    pub announce_seeds: bool,
    /// Caps on the bytes per second of pieces sent and received by all connections
    /// together; `None`: no cap.
    pub egress_rate: Option<u64>,
    pub ingress_rate: Option<u64>,
    /// Piece bytes the node holds in memory between receiving and writing them, for all
    /// blobs and connections together; while that much waits for the disk, connections
    /// stop reading pieces (the senders slow down) rather than the node buffering more.
    pub max_unwritten_bytes: u64,
    /// Piece bytes the node holds in memory between reading them from disk and writing
    /// them to peers (the seeding path), for all connections together; while that much
    /// waits for slow sockets, other uploads wait rather than the node reading more.
    pub max_unsent_bytes: u64,
    /// Connections made to this node from one source address (in their handshake or open,
    /// all blobs together). Beyond it a connection is answered `busy`, and beyond twice it
    /// is closed unanswered.
    pub max_inbound_per_addr: usize,
    /// The address to announce, when the tracker should not use the request's source.
    pub advertise_addr: Option<IpAddr>,
    /// The port to announce; `None`: the listener's.
    pub advertise_port: Option<u16>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// A connection silent for this long is closed; keep-alives go out at a third of it.
    pub idle_timeout: Duration,
    /// Prefix of the metric names (`shoal_agent`, `shoal_origin`).
    pub metrics_prefix: String,
}

impl NodeConfig {
    /// An agent: downloads, seeds what it downloaded until idle, announces everything.
    pub fn agent() -> Self {
        NodeConfig {
            peer_id: PeerId::random(),
            engine: engine::Config::default(),
            origin: false,
            announce_seeds: true,
            egress_rate: None,
            ingress_rate: None,
            max_unwritten_bytes: DEFAULT_MAX_UNWRITTEN_BYTES,
            max_unsent_bytes: DEFAULT_MAX_UNSENT_BYTES,
            max_inbound_per_addr: DEFAULT_MAX_INBOUND_PER_ADDR,
            advertise_addr: None,
            advertise_port: None,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: crate::wire::DEFAULT_IDLE_TIMEOUT,
            metrics_prefix: "shoal_agent".into(),
        }
    }

    /// An origin: seeds every blob it holds, super-seeding (every piece once before any
    /// twice), to more peers per blob than an agent, without announcing.
    pub fn origin() -> Self {
        NodeConfig {
            origin: true,
            announce_seeds: false,
            engine: engine::Config::origin(),
            // One agent opens a connection per blob it pulls (two to origins at most).
            max_inbound_per_addr: 4 * DEFAULT_MAX_INBOUND_PER_ADDR,
            metrics_prefix: "shoal_origin".into(),
            ..NodeConfig::agent()
        }
    }
}

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
        reply: oneshot::Sender<InboundAnswer>,
    },
    Dialed {
        blob: Digest,
        peer: PeerInfo,
        first: Bitfield,
        stream: TcpStream,
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
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            cfg: config,
        });
        let seed = rand::random::<u64>();
        let actor = Actor {
            engine: Engine::new(ctx.cfg.engine.clone(), ctx.peer_id, seed),
            port: ctx.cfg.advertise_port.unwrap_or(local_addr.port()),
            ctx: Arc::clone(&ctx),
            discovery,
            blobs: HashMap::new(),
            conns: HashMap::new(),
            pending: HashMap::new(),
            totals: engine::Totals::default(),
        };
        tasks.spawn(actor.run(rx));
        tasks.spawn(accept_loop(Arc::clone(&ctx), listener));
        tasks.close();
        tracing::info!(peer_id = %ctx.peer_id, addr = %local_addr, origin = ctx.cfg.origin, "p2p node started");
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

async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener) {
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let cap = ctx.cfg.max_inbound_per_addr;
                    let (slot, before) = ctx.inbound.take(addr.ip());
                    if before < cap {
                        ctx.tasks.spawn(conn::accept(Arc::clone(&ctx), stream, addr, slot));
                    } else if before < cap.saturating_mul(2) {
                        ctx.tasks.spawn(conn::refuse_busy(Arc::clone(&ctx), stream, addr, slot));
                    } else {
                        tracing::debug!(%addr, "too many connections from one address; closed");
                        conn::refuse_metric(&ctx, "per_address");
                        drop((stream, slot));
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Connections made to this node, per source address: what
/// [`NodeConfig::max_inbound_per_addr`] bounds.
#[derive(Debug, Default, Clone)]
pub(crate) struct InboundCounts(Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>);

impl InboundCounts {
    /// Counts one more connection from `ip` until the slot is dropped; also says how many
    /// there were before it.
    fn take(&self, ip: IpAddr) -> (InboundSlot, usize) {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        let before = *n;
        *n += 1;
        (
            InboundSlot {
                counts: self.clone(),
                ip,
            },
            before,
        )
    }
}

/// One connection counted against its source address; dropped when the connection ends.
pub(crate) struct InboundSlot {
    counts: InboundCounts,
    ip: IpAddr,
}

impl Drop for InboundSlot {
    fn drop(&mut self) {
        let mut m = self
            .counts
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// One blob's I/O side.
struct BlobEntry {
    io: Arc<BlobIo>,
    layout: Layout,
    /// The download, while one runs (and after, for late callers until it retires).
    download: Option<Arc<DownloadShared>>,
    /// Set when the commit succeeded, reported when the engine says the blob is complete.
    committed: Option<BlobInfo>,
    /// Why the commit failed, if it did for a reason other than a digest mismatch.
    commit_error: Option<String>,
}

struct ConnEntry {
    tx: mpsc::UnboundedSender<ConnCmd>,
    cancel: CancellationToken,
}

struct Actor {
    engine: Engine,
    ctx: Arc<Ctx>,
    discovery: Arc<dyn Discovery>,
    port: u16,
    blobs: HashMap<Digest, BlobEntry>,
    conns: HashMap<ConnId, ConnEntry>,
    /// Verified pieces waiting for the engine to say whether to write them.
    pending: HashMap<(ConnId, u32), (Bytes, Option<Reservation>)>,
    /// The engine's counters as last exported.
    totals: engine::Totals,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let shutdown = self.ctx.shutdown.clone();
        loop {
            let deadline = self.engine.poll_timeout();
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd),
                    None => break,
                },
                () = timer => self.engine.handle_timeout(now()),
            }
            self.drain();
        }
        // Stop: close every connection and end every download still running.
        let blobs: Vec<Digest> = self.blobs.keys().copied().collect();
        for b in blobs {
            self.engine.remove(&b);
        }
        self.drain();
        for (_, c) in self.conns.drain() {
            c.cancel.cancel();
            self.ctx.metrics.connections.dec();
        }
        tracing::info!("p2p node stopped");
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Download {
                metainfo,
                partial,
                reply,
            } => {
                let digest = metainfo.digest();
                if let Some(e) = self.blobs.get_mut(&digest) {
                    // Another caller got here first (or the blob is seeding): share it. The
                    // new partial file is dropped, which removes it.
                    let shared = e.download.clone().unwrap_or_else(|| {
                        let d = DownloadShared::new(
                            Arc::clone(&e.io),
                            e.committed,
                            Some(self.ctx.cmd.clone()),
                        );
                        e.download = Some(Arc::clone(&d));
                        d
                    });
                    let _ = reply.send(shared);
                    return;
                }
                let layout = Layout::of(&metainfo);
                let io = Arc::new(BlobIo::downloading(
                    Arc::clone(&metainfo),
                    self.ctx.store.clone(),
                    partial,
                ));
                let shared = DownloadShared::new(Arc::clone(&io), None, Some(self.ctx.cmd.clone()));
                if let Err(e) = self.engine.download(now(), digest, layout) {
                    tracing::warn!(blob = %digest, error = %e, "engine refused a download");
                }
                self.ctx.metrics.downloads_in_flight.inc();
                tracing::info!(blob = %digest, pieces = layout.pieces, "download started");
                self.blobs.insert(
                    digest,
                    BlobEntry {
                        io,
                        layout,
                        download: Some(Arc::clone(&shared)),
                        committed: None,
                        commit_error: None,
                    },
                );
                let _ = reply.send(shared);
            }
            Cmd::Seed {
                metainfo,
                announce,
                reply,
            } => {
                let digest = metainfo.digest();
                let info = BlobInfo {
                    digest,
                    length: metainfo.length(),
                };
                if let Some(e) = self.blobs.get_mut(&digest) {
                    let d = e.download.clone().unwrap_or_else(|| {
                        DownloadShared::new(
                            Arc::clone(&e.io),
                            e.committed.or(Some(info)),
                            Some(self.ctx.cmd.clone()),
                        )
                    });
                    let _ = reply.send(Some(d));
                    return;
                }
                let layout = Layout::of(&metainfo);
                let io = Arc::new(BlobIo::committed(
                    Arc::new(metainfo),
                    self.ctx.store.clone(),
                ));
                if let Err(e) = self.engine.seed(now(), digest, layout, announce) {
                    tracing::warn!(blob = %digest, error = %e, "engine refused a seed");
                }
                tracing::debug!(blob = %digest, "seeding");
                let shared = DownloadShared::new(Arc::clone(&io), Some(info), None);
                self.blobs.insert(
                    digest,
                    BlobEntry {
                        io,
                        layout,
                        download: None,
                        committed: Some(info),
                        commit_error: None,
                    },
                );
                let _ = reply.send(Some(shared));
            }
            Cmd::Inbound { hello, addr, reply } => {
                let Some(entry) = self.blobs.get(&hello.digest) else {
                    let _ = reply.send(InboundAnswer::Unknown);
                    return;
                };
                let io = Arc::clone(&entry.io);
                // The hello's origin flag is the peer's claim: a connection made to this node
                // never counts as an origin's.
                match self.engine.open(
                    now(),
                    &hello.digest,
                    Remote::claimed(hello.peer_id, addr),
                    false,
                ) {
                    Ok(conn) => {
                        let setup = self.register(conn, io, false);
                        let _ = reply.send(InboundAnswer::Accept(setup));
                    }
                    Err(r) => {
                        tracing::debug!(%addr, peer = ?hello.peer_id, refusal = %r, "inbound refused");
                        let _ = reply.send(InboundAnswer::Refuse(r.code()));
                    }
                }
            }
            Cmd::Dialed {
                blob,
                peer,
                first,
                stream,
            } => {
                let Some(io) = self.blobs.get(&blob).map(|e| Arc::clone(&e.io)) else {
                    // The blob retired while the dial was under way.
                    self.ctx
                        .tasks
                        .spawn(conn::goodbye(stream, ErrorCode::Shutdown));
                    return;
                };
                match self
                    .engine
                    .open(now(), &blob, Remote::claimed(peer.peer_id, peer.addr), true)
                {
                    Ok(conn) => {
                        let setup = self.register(conn, io, peer.origin);
                        let ctx = Arc::clone(&self.ctx);
                        self.ctx.tasks.spawn(conn::run(ctx, stream, setup, None));
                        self.engine.handle(
                            now(),
                            Event::Message {
                                conn,
                                msg: crate::wire::Message::Bitfield(first),
                            },
                        );
                    }
                    Err(r) => {
                        tracing::debug!(peer = ?peer.peer_id, refusal = %r, "dialled connection not kept");
                        self.ctx.tasks.spawn(conn::goodbye(stream, r.code()));
                    }
                }
            }
            Cmd::Engine(event) => self.on_event(event),
            Cmd::PieceArrived {
                conn,
                index,
                data,
                reservation,
            } => {
                let valid = data.is_some();
                if let Some(d) = data {
                    self.pending.insert((conn, index), (d, reservation));
                }
                self.engine
                    .handle(now(), Event::PieceReceived { conn, index, valid });
            }
            Cmd::Committed { blob, result } => {
                let ok = match result {
                    Ok(info) => {
                        if let Some(e) = self.blobs.get_mut(&blob) {
                            e.committed = Some(info);
                        }
                        true
                    }
                    Err(StoreError::DigestMismatch(m)) => {
                        tracing::warn!(%blob, actual = %m.actual, "blob failed its digest check");
                        false
                    }
                    Err(e) => {
                        tracing::warn!(%blob, error = %e, "commit failed");
                        if let Some(entry) = self.blobs.get_mut(&blob) {
                            entry.commit_error = Some(e.to_string());
                        }
                        false
                    }
                };
                self.engine.handle(now(), Event::Committed { blob, ok });
            }
            Cmd::Stats { blob, reply } => {
                let _ = reply.send(self.engine.stats(&blob));
            }
            Cmd::Focus { blob, piece } => self.engine.set_focus(now(), &blob, piece),
            Cmd::Unseed { blob, reply } => {
                let known = match self.blobs.get(&blob) {
                    Some(e) => {
                        e.io.close();
                        true
                    }
                    None => false,
                };
                if self.engine.contains(&blob) {
                    // Retiring closes the connections and drops the entry (see `Retired`).
                    self.engine.remove(&blob);
                } else if known {
                    // An entry the engine never took (it refused the seed): drop it here.
                    self.act(Action::Retired { blob });
                }
                if known {
                    tracing::info!(%blob, "no longer serving the blob");
                }
                let _ = reply.send(known);
            }
            Cmd::IsShunned { who, reply } => {
                let _ = reply.send(self.engine.is_shunned(&who, now()));
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match &event {
            Event::Closed { conn, .. } => {
                if let Some(c) = self.conns.remove(conn) {
                    c.cancel.cancel();
                    self.ctx.metrics.connections.dec();
                }
                self.pending.retain(|(c, _), _| c != conn);
            }
            Event::PieceWritten {
                blob,
                index,
                ok: true,
            } => {
                if let Some(d) = self.blobs.get(blob).and_then(|e| e.download.as_ref()) {
                    d.piece_done(*index as usize);
                }
            }
            _ => {}
        }
        self.engine.handle(now(), event);
    }

    fn register(&mut self, conn: ConnId, io: Arc<BlobIo>, origin: bool) -> ConnSetup {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = self.ctx.shutdown.child_token();
        self.conns.insert(
            conn,
            ConnEntry {
                tx,
                cancel: cancel.clone(),
            },
        );
        self.ctx.metrics.connections.inc();
        ConnSetup {
            conn,
            rx,
            cancel,
            io,
            origin,
        }
    }

    fn to_conn(&self, conn: ConnId, cmd: ConnCmd) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(cmd);
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.engine.poll_action() {
            self.act(a);
        }
        let totals = self.engine.totals();
        if totals != self.totals {
            self.ctx.metrics.engine_totals(&self.totals, &totals);
            self.totals = totals;
        }
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Announce { blob, complete } => {
                let announce = Announce {
                    digest: blob,
                    peer_id: self.ctx.peer_id,
                    port: self.port,
                    addr: self.ctx.cfg.advertise_addr,
                    complete,
                };
                let d = Arc::clone(&self.discovery);
                let ctx = Arc::clone(&self.ctx);
                self.ctx.tasks.spawn(async move {
                    let event = match d.announce(announce).await {
                        Ok(p) => Event::Announced {
                            blob,
                            peers: p.peers,
                            interval: p.interval,
                        },
                        Err(e) => {
                            tracing::warn!(%blob, error = %e, "announce failed");
                            Event::AnnounceFailed { blob }
                        }
                    };
                    let _ = ctx.cmd.send(Cmd::Engine(event));
                });
            }
            Action::Connect { blob, peer } => {
                let Some(layout) = self.blobs.get(&blob).map(|e| e.layout) else {
                    self.engine.handle(
                        now(),
                        Event::DialFailed {
                            blob,
                            peer: peer.peer_id,
                            code: None,
                        },
                    );
                    return;
                };
                let ctx = Arc::clone(&self.ctx);
                self.ctx.tasks.spawn(conn::dial(ctx, blob, peer, layout));
            }
            Action::Send { conn, msg } => self.to_conn(conn, ConnCmd::Send(msg)),
            Action::Upload { conn, index } => self.to_conn(conn, ConnCmd::Upload(index)),
            Action::CancelUpload { conn, index } => self.to_conn(conn, ConnCmd::Cancel(index)),
            Action::Close { conn, code } => {
                if let Some(c) = self.conns.remove(&conn) {
                    let _ = c.tx.send(ConnCmd::Close(code));
                    self.ctx.metrics.connections.dec();
                }
                self.pending.retain(|(c, _), _| *c != conn);
            }
            Action::WritePiece { blob, conn, index } => {
                let data = self.pending.remove(&(conn, index));
                let io = self.blobs.get(&blob).map(|e| Arc::clone(&e.io));
                let (Some((data, reservation)), Some(io)) = (data, io) else {
                    self.engine.handle(
                        now(),
                        Event::PieceWritten {
                            blob,
                            index,
                            ok: false,
                        },
                    );
                    return;
                };
                let ctx = Arc::clone(&self.ctx);
                self.ctx.tasks.spawn(async move {
                    let r = tokio::task::spawn_blocking(move || {
                        let r = io.write_piece(index as usize, &data);
                        drop((data, reservation));
                        r
                    })
                    .await;
                    let ok = match r {
                        Ok(Ok(())) => true,
                        Ok(Err(e)) => {
                            tracing::warn!(%blob, index, error = %e, "writing a piece failed");
                            false
                        }
                        Err(e) => {
                            tracing::warn!(%blob, index, error = %e, "piece writer panicked");
                            false
                        }
                    };
                    let _ = ctx
                        .cmd
                        .send(Cmd::Engine(Event::PieceWritten { blob, index, ok }));
                });
            }
            Action::DropPiece { conn, index } => {
                self.pending.remove(&(conn, index));
            }
            Action::Commit { blob } => {
                let Some(io) = self.blobs.get(&blob).map(|e| Arc::clone(&e.io)) else {
                    return;
                };
                let ctx = Arc::clone(&self.ctx);
                self.ctx.tasks.spawn(async move {
                    let result = tokio::task::spawn_blocking(move || io.commit())
                        .await
                        .unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e))));
                    let _ = ctx.cmd.send(Cmd::Committed { blob, result });
                });
            }
            Action::Completed { blob } => {
                let Some(e) = self.blobs.get_mut(&blob) else {
                    return;
                };
                let info = e.committed.unwrap_or(BlobInfo {
                    digest: blob,
                    length: e.io.metainfo.length(),
                });
                // Counted before the waiters hear of it, so whoever sees the outcome sees it
                // counted.
                self.ctx.metrics.downloads_in_flight.dec();
                self.ctx.metrics.downloads.with_label_values(&["ok"]).inc();
                if let Some(d) = &e.download {
                    d.finish(Ok(info));
                }
                tracing::info!(%blob, length = info.length, "download complete");
            }
            Action::Failed { blob, error } => {
                let Some(e) = self.blobs.get_mut(&blob) else {
                    return;
                };
                let err = match (error, e.commit_error.take()) {
                    (_, Some(msg)) => DownloadError::Storage(msg),
                    (SwarmError::BlobMismatch, None) => DownloadError::BlobMismatch,
                    (SwarmError::Storage, None) => {
                        DownloadError::Storage("pieces could not be written".into())
                    }
                };
                self.ctx.metrics.downloads_in_flight.dec();
                self.ctx
                    .metrics
                    .downloads
                    .with_label_values(&["failed"])
                    .inc();
                if let Some(d) = &e.download {
                    d.finish(Err(err.clone()));
                }
                tracing::warn!(%blob, error = %err, "download failed");
            }
            Action::Retired { blob } => {
                if let Some(e) = self.blobs.remove(&blob)
                    && let Some(d) = e.download
                    && d.progress.borrow().outcome.is_none()
                {
                    // Removed before it finished: the node is stopping, or the blob was
                    // unseeded.
                    d.finish(Err(DownloadError::Stopped));
                    self.ctx.metrics.downloads_in_flight.dec();
                }
                tracing::debug!(%blob, "swarm retired");
            }
            Action::Shunned { who, .. } => {
                self.ctx.metrics.peers_shunned.inc();
                tracing::info!(?who, "shunned");
            }
        }
    }
}
