//! The node's task: the only one to touch the engine. It feeds the engine what connection
//! tasks, timers and discovery report, and turns the engine's actions into work for them.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use shoal_core::Digest;
use shoal_core::store::{BlobInfo, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::blob::{BlobIo, DownloadShared};
use super::budget::Reservation;
use super::conn::{self, ConnCmd, ConnSetup};
use super::{Cmd, Ctx, DownloadError, InboundAnswer};
use crate::discovery::{Announce, Discovery};
use crate::engine::{self, Action, ConnId, Engine, Event, Remote, SwarmError};
use crate::wire::{ErrorCode, Layout};

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

/// The node's task.
pub(super) struct Actor {
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
    /// The task of a node whose peer port is announced as `port`; `seed` seeds the engine's
    /// random choices.
    pub fn new(ctx: Arc<Ctx>, discovery: Arc<dyn Discovery>, port: u16, seed: u64) -> Self {
        Actor {
            engine: Engine::new(ctx.cfg.engine.clone(), ctx.peer_id, seed),
            port,
            ctx,
            discovery,
            blobs: HashMap::new(),
            conns: HashMap::new(),
            pending: HashMap::new(),
            totals: engine::Totals::default(),
        }
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
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
            Cmd::Inbound {
                hello,
                addr,
                verified,
                reply,
            } => {
                let Some(entry) = self.blobs.get(&hello.digest) else {
                    let _ = reply.send(InboundAnswer::Unknown);
                    return;
                };
                let io = Arc::clone(&entry.io);
                // The hello's origin flag is the peer's claim: a connection made to this node
                // never counts as an origin's.
                let remote = Remote {
                    peer: hello.peer_id,
                    addr,
                    verified,
                };
                match self.engine.open(now(), &hello.digest, remote, false) {
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
                verified,
            } => {
                let Some(io) = self.blobs.get(&blob).map(|e| Arc::clone(&e.io)) else {
                    // The blob retired while the dial was under way.
                    self.ctx
                        .tasks
                        .spawn(conn::goodbye(stream, ErrorCode::Shutdown));
                    return;
                };
                let remote = Remote {
                    peer: peer.peer_id,
                    addr: peer.addr,
                    verified,
                };
                match self.engine.open(now(), &blob, remote, true) {
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
