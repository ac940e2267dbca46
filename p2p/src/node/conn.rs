//! One peer connection's tasks: dialling and accepting (the handshake), then a reader that
//! decodes and verifies, and a writer that sends control messages and paced pieces.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use shoal_core::Digest;
use shoal_core::peer::{PeerId, PeerInfo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::blob::{BlobIo, ReadError};
use super::budget::ReadPacer;
use super::secure::{Inbound, Refused, open_inbound, open_outbound, tls_cause};
use super::stream::{PeerRead, PeerStream, PeerWrite};
use super::{Cmd, Ctx, InboundAnswer, InboundSlot};
use crate::bitfield::Bitfield;
use crate::engine::{CloseReason, ConnId, Event};
use crate::wire::{
    self, Decoder, ErrorCode, Hello, Layout, Message, Unpaced, WireError, piece_header,
};

/// Bytes of a piece written between two payments to the egress cap.
const WRITE_CHUNK: usize = wire::READ_CHUNK;

/// Bytes of a piece read from disk at once for an upload, and so held in memory per
/// connection at most: the node's `max_unsent_bytes` is shared out in these.
const UPLOAD_CHUNK: usize = 4 * WRITE_CHUNK;

/// How long a refused connection has to send its hello before it is closed unanswered.
const REFUSAL_HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// What the node tells one connection's writer.
#[derive(Debug)]
pub(crate) enum ConnCmd {
    Send(Message),
    Upload(u32),
    Cancel(u32),
    /// Say why (if given), then close.
    Close(Option<ErrorCode>),
}

/// What a connection needs once the engine has admitted it.
pub(crate) struct ConnSetup {
    pub conn: ConnId,
    pub rx: mpsc::UnboundedReceiver<ConnCmd>,
    pub cancel: CancellationToken,
    pub io: Arc<BlobIo>,
    /// The peer is an origin (its bytes are counted apart).
    pub origin: bool,
}

fn hello(ctx: &Ctx, digest: Digest) -> Hello {
    Hello {
        digest,
        peer_id: ctx.peer_id,
        origin: ctx.cfg.origin,
    }
}

/// How a dial ended without a connection.
enum DialFailure {
    /// No connection, or it broke before the handshake ended.
    Unreachable,
    /// The peer answered and said no.
    Said(ErrorCode),
    /// This node refused the peer (its certificate, mostly).
    Refused(Refused),
}

/// Dials a peer for a blob and hands the connection to the node, or reports the failure.
pub(crate) async fn dial(ctx: Arc<Ctx>, blob: Digest, peer: PeerInfo, layout: Layout) {
    let failure = match handshake_out(&ctx, blob, &peer, layout).await {
        Ok((stream, first, verified)) => {
            let _ = ctx.cmd.send(Cmd::Dialed {
                blob,
                peer,
                first,
                stream,
                verified,
            });
            return;
        }
        Err(f) => f,
    };
    let (reason, code) = match failure {
        DialFailure::Said(ErrorCode::Busy) => ("busy", Some(ErrorCode::Busy)),
        DialFailure::Said(code) => ("refused", Some(code)),
        DialFailure::Unreachable => ("unreachable", None),
        DialFailure::Refused(r) => (r.label(), None),
    };
    refuse_metric(&ctx, reason);
    let _ = ctx.cmd.send(Cmd::Engine(Event::DialFailed {
        blob,
        peer: peer.peer_id,
        code,
    }));
}

/// Connect, secure the connection (TLS), exchange hellos, read the peer's bitfield.
async fn handshake_out(
    ctx: &Ctx,
    blob: Digest,
    peer: &PeerInfo,
    layout: Layout,
) -> Result<(PeerStream, Bitfield, Option<PeerId>), DialFailure> {
    let cfg = &ctx.cfg;
    let tcp = match timeout(cfg.connect_timeout, TcpStream::connect(peer.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(addr = %peer.addr, error = %e, "dial failed");
            return Err(DialFailure::Unreachable);
        }
        Err(_) => {
            tracing::debug!(addr = %peer.addr, "dial timed out");
            return Err(DialFailure::Unreachable);
        }
    };
    let _ = tcp.set_nodelay(true);
    let exchange = async {
        let (mut stream, verified) = open_outbound(ctx, tcp, peer)
            .await
            .map_err(DialFailure::Refused)?;
        let hellos = async {
            wire::write_hello(&mut stream, &hello(ctx, blob)).await?;
            let theirs = wire::read_hello(&mut stream).await?;
            let first =
                wire::read_message(&mut stream, &Decoder::new(layout), &Unpaced, |_| {}).await?;
            Ok::<_, WireError>((theirs, first))
        };
        match hellos.await {
            Ok((theirs, first)) => Ok((stream, verified, theirs, first)),
            Err(WireError::Io(e)) if tls_cause(&e).is_some() => {
                // Under TLS 1.3 the dialler learns that its own certificate was refused
                // only now, from the peer's alert.
                tracing::info!(addr = %peer.addr, error = %e, "peer refused the TLS session");
                Err(DialFailure::Refused(Refused::Tls))
            }
            Err(e) => {
                tracing::debug!(addr = %peer.addr, error = %e, "handshake failed");
                Err(DialFailure::Unreachable)
            }
        }
    };
    let (stream, verified, theirs, first) = match timeout(cfg.handshake_timeout, exchange).await {
        Ok(r) => r?,
        Err(_) => {
            tracing::debug!(addr = %peer.addr, "handshake timed out");
            return Err(DialFailure::Unreachable);
        }
    };
    if theirs.digest != blob || theirs.peer_id != peer.peer_id {
        // Someone else now listens at that address (a restarted peer, a stale handout).
        tracing::debug!(addr = %peer.addr, "peer answered for another blob or id");
        return Err(DialFailure::Unreachable);
    }
    match first {
        Message::Bitfield(b) => Ok((stream, b, verified)),
        Message::Error { code, message } => {
            tracing::debug!(addr = %peer.addr, ?code, %message, "peer refused the connection");
            Err(DialFailure::Said(code))
        }
        other => {
            tracing::debug!(addr = %peer.addr, ?other, "peer did not start with its bitfield");
            Err(DialFailure::Unreachable)
        }
    }
}

/// Handles an incoming connection: secures it (TLS) and reads the hello, asks the node to
/// admit it (fetching the blob's metainfo first if the node does not know the blob yet),
/// then runs it.
///
/// `_slot` counts the connection against its source address until it ends.
pub(crate) async fn accept(ctx: Arc<Ctx>, tcp: TcpStream, addr: SocketAddr, _slot: InboundSlot) {
    let _ = tcp.set_nodelay(true);
    let Inbound {
        stream,
        hello: theirs,
        verified,
    } = match timeout(ctx.cfg.handshake_timeout, open_inbound(&ctx, tcp, addr)).await {
        Ok(Ok(i)) => i,
        Ok(Err(r)) => {
            refuse_metric(&ctx, r.label());
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "no hello in time");
            refuse_metric(&ctx, Refused::Handshake.label());
            return;
        }
    };
    let mut looked_up = false;
    let code = loop {
        let (reply, answer) = oneshot::channel();
        if ctx
            .cmd
            .send(Cmd::Inbound {
                hello: theirs.clone(),
                addr,
                verified,
                reply,
            })
            .is_err()
        {
            break ErrorCode::Shutdown;
        }
        match answer.await {
            Ok(InboundAnswer::Accept(setup)) => {
                let preamble = hello(&ctx, theirs.digest).encode();
                run(ctx, stream, setup, Some(preamble)).await;
                return;
            }
            Ok(InboundAnswer::Unknown) if !looked_up => {
                looked_up = true;
                let Some(source) = ctx.source.clone() else {
                    break ErrorCode::UnknownBlob;
                };
                // An origin serves every blob it holds: learn this one's layout, and seed it.
                let Some(m) = source.metainfo(theirs.digest).await else {
                    break ErrorCode::UnknownBlob;
                };
                if m.digest() != theirs.digest
                    || !matches!(ctx.store.stat(&theirs.digest).await, Ok(Some(len)) if len == m.length())
                {
                    break ErrorCode::UnknownBlob;
                }
                let (reply, done) = oneshot::channel();
                if ctx
                    .cmd
                    .send(Cmd::Seed {
                        metainfo: m,
                        announce: ctx.cfg.announce_seeds,
                        reply,
                    })
                    .is_err()
                {
                    break ErrorCode::Shutdown;
                }
                let _ = done.await;
            }
            Ok(InboundAnswer::Unknown) => break ErrorCode::UnknownBlob,
            Ok(InboundAnswer::Refuse(code)) => break code,
            Err(_) => break ErrorCode::Shutdown,
        }
    };
    refuse_metric(
        &ctx,
        match code {
            ErrorCode::Busy => "busy",
            ErrorCode::UnknownBlob => "unknown_blob",
            _ => "refused",
        },
    );
    answer_refusal(&ctx, stream, theirs.digest, code).await;
}

/// Refuses a connection from an address that has too many open already: with `busy` after
/// its hello, so that an honest dialler on a busy host tries again later without holding
/// it against this node; closed unanswered if the hello does not come at once.
pub(crate) async fn refuse_busy(
    ctx: Arc<Ctx>,
    tcp: TcpStream,
    addr: SocketAddr,
    _slot: InboundSlot,
) {
    refuse_metric(&ctx, "per_address");
    let wait = REFUSAL_HELLO_TIMEOUT.min(ctx.cfg.handshake_timeout);
    match timeout(wait, open_inbound(&ctx, tcp, addr)).await {
        Ok(Ok(i)) => {
            tracing::debug!(%addr, "too many connections from one address; busy");
            answer_refusal(&ctx, i.stream, i.hello.digest, ErrorCode::Busy).await;
        }
        _ => tracing::debug!(%addr, "too many connections from one address; closed"),
    }
}

/// Answers a hello with a hello and the reason for the refusal, so that the dialler knows
/// not to count it a fault, then closes.
async fn answer_refusal(ctx: &Ctx, mut stream: PeerStream, digest: Digest, code: ErrorCode) {
    let mut out = hello(ctx, digest).encode();
    let mut frame = BytesMut::new();
    Message::Error {
        code,
        message: String::new(),
    }
    .encode(&mut frame);
    out.extend_from_slice(&frame);
    let _ = timeout(ctx.cfg.handshake_timeout, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await;
}

pub(crate) fn refuse_metric(ctx: &Ctx, reason: &str) {
    ctx.metrics
        .connections_refused
        .with_label_values(&[reason])
        .inc();
}

/// Runs an admitted connection until either side closes it.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    stream: PeerStream,
    setup: ConnSetup,
    preamble: Option<Vec<u8>>,
) {
    let (rd, wr) = stream.into_split();
    let ConnSetup {
        conn,
        rx,
        cancel,
        io,
        origin,
    } = setup;
    let writer = {
        let ctx = Arc::clone(&ctx);
        let io = Arc::clone(&io);
        let cancel = cancel.clone();
        ctx.tasks.clone().spawn(async move {
            let c = cancel.clone();
            tokio::select! {
                () = c.cancelled() => {}
                r = write_loop(&ctx, conn, wr, rx, &io, preamble, &cancel) => {
                    if let Err(e) = r {
                        tracing::debug!(%conn, error = %e, "connection write failed");
                    }
                }
            }
            // Whatever ended the writer ends the reader too.
            cancel.cancel();
        })
    };
    let reason = tokio::select! {
        () = cancel.cancelled() => CloseReason::Disconnected,
        r = read_loop(&ctx, conn, rd, &io, origin) => r,
    };
    cancel.cancel();
    let _ = writer.await;
    let _ = ctx.cmd.send(Cmd::Engine(Event::Closed { conn, reason }));
}

async fn read_loop(
    ctx: &Ctx,
    conn: ConnId,
    mut rd: PeerRead,
    io: &Arc<BlobIo>,
    origin: bool,
) -> CloseReason {
    let decoder = Decoder::new(Layout::of(&io.metainfo));
    let pacer = ReadPacer::new(&ctx.ingress, &ctx.unwritten);
    loop {
        let msg = match timeout(
            ctx.cfg.idle_timeout,
            wire::read_message(&mut rd, &decoder, &pacer, |_| {}),
        )
        .await
        {
            Ok(Ok(m)) => m,
            Ok(Err(WireError::Io(e))) => {
                tracing::debug!(%conn, error = %e, "connection lost");
                return CloseReason::Disconnected;
            }
            Ok(Err(e)) => {
                tracing::info!(%conn, error = %e, "peer broke the protocol");
                return CloseReason::Protocol;
            }
            Err(_) => {
                tracing::debug!(%conn, "connection idle too long");
                return CloseReason::Disconnected;
            }
        };
        match msg {
            Message::Piece { index, data } => {
                let reservation = pacer.take();
                ctx.metrics.received(origin, data.len() as u64);
                let m = Arc::clone(&io.metainfo);
                let d = data.clone();
                // Hashing a piece takes milliseconds: off the async threads.
                let valid = tokio::task::spawn_blocking(move || m.verify_piece(index as usize, &d))
                    .await
                    .unwrap_or(false);
                if valid {
                    ctx.metrics.pieces_verified.inc();
                } else {
                    ctx.metrics.pieces_failed.inc();
                    tracing::warn!(%conn, index, "piece failed its hash check");
                }
                let _ = ctx.cmd.send(Cmd::PieceArrived {
                    conn,
                    index,
                    data: valid.then_some(data),
                    reservation,
                });
            }
            Message::Error { code, message } => {
                tracing::debug!(%conn, ?code, %message, "peer closed with an error");
                return CloseReason::Remote(code);
            }
            Message::KeepAlive => {}
            other => {
                let _ = ctx
                    .cmd
                    .send(Cmd::Engine(Event::Message { conn, msg: other }));
            }
        }
    }
}

async fn write_loop(
    ctx: &Ctx,
    conn: ConnId,
    mut wr: PeerWrite,
    mut rx: mpsc::UnboundedReceiver<ConnCmd>,
    io: &Arc<BlobIo>,
    preamble: Option<Vec<u8>>,
    cancel: &CancellationToken,
) -> Result<(), WireError> {
    if let Some(p) = preamble {
        wr.write_all(&p).await?;
    }
    let keepalive = ctx.cfg.idle_timeout / 3;
    let mut uploads: VecDeque<u32> = VecDeque::new();
    let mut out = BytesMut::new();
    loop {
        // Take every command that is waiting, so control messages go out together and a
        // cancel reaches a queued upload before it starts.
        let mut closing = None;
        loop {
            match rx.try_recv() {
                Ok(ConnCmd::Send(m)) => m.encode(&mut out),
                Ok(ConnCmd::Upload(i)) => uploads.push_back(i),
                Ok(ConnCmd::Cancel(i)) => uploads.retain(|&u| u != i),
                Ok(ConnCmd::Close(code)) => {
                    closing = Some(code);
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closing = Some(None);
                    break;
                }
            }
        }
        if let Some(code) = closing {
            if let Some(code) = code {
                Message::Error {
                    code,
                    message: String::new(),
                }
                .encode(&mut out);
            }
            wr.write_all(&out).await?;
            let _ = wr.shutdown().await;
            cancel.cancel();
            return Ok(());
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
        if let Some(index) = uploads.pop_front() {
            send_piece(ctx, conn, &mut wr, io, index).await?;
            continue;
        }
        // Nothing more to send for now: what a TLS session still holds goes out before the
        // wait (a no-op on plain TCP, which holds nothing).
        wr.flush().await?;
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(ConnCmd::Send(m)) => m.encode(&mut out),
                Some(ConnCmd::Upload(i)) => uploads.push_back(i),
                Some(ConnCmd::Cancel(i)) => uploads.retain(|&u| u != i),
                Some(ConnCmd::Close(code)) => {
                    if let Some(code) = code {
                        Message::Error { code, message: String::new() }.encode(&mut out);
                    }
                    wr.write_all(&out).await?;
                    let _ = wr.shutdown().await;
                    cancel.cancel();
                    return Ok(());
                }
                None => return Ok(()),
            },
            () = tokio::time::sleep(keepalive) => Message::KeepAlive.encode(&mut out),
        }
    }
}

/// Reads a piece and sends it, a chunk at a time: each chunk is counted against the node's
/// unsent-bytes budget from before it is read until it is written, and pays the egress cap
/// as it goes out. A peer that stops reading for the idle time-out is dropped, so it cannot
/// hold its share of the budget for ever.
async fn send_piece(
    ctx: &Ctx,
    conn: ConnId,
    wr: &mut PeerWrite,
    io: &Arc<BlobIo>,
    index: u32,
) -> Result<(), WireError> {
    let r = send_chunks(ctx, wr, io, index).await;
    // Sent, or not: either way the upload is over (a failure closes the connection, and
    // the peer asks someone else).
    let _ = ctx.cmd.send(Cmd::Engine(Event::Uploaded { conn, index }));
    if let Err(e) = &r {
        tracing::debug!(%conn, index, error = %e, "upload failed");
    }
    r
}

async fn send_chunks(
    ctx: &Ctx,
    wr: &mut PeerWrite,
    io: &Arc<BlobIo>,
    index: u32,
) -> Result<(), WireError> {
    let Some(range) = io.metainfo.piece_range(index as usize) else {
        let e = ReadError::OutOfRange(index as usize);
        return Err(WireError::Io(std::io::Error::other(e.to_string())));
    };
    let stalled = || {
        WireError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer stopped reading",
        ))
    };
    let len = range.end - range.start;
    let mut at = range.start;
    let mut first = true;
    while at < range.end || first {
        let n = (range.end - at).min(UPLOAD_CHUNK as u64);
        let _held = ctx.unsent.reserve(n as usize).await;
        let data = match io.read(at..at + n).await {
            Ok(d) => d,
            Err(e) => {
                // A local fault, not the peer's.
                tracing::warn!(index, error = %e, "cannot read a piece to upload");
                return Err(WireError::Io(std::io::Error::other(e.to_string())));
            }
        };
        if first {
            timeout(
                ctx.cfg.idle_timeout,
                wr.write_all(&piece_header(index, len as u32)),
            )
            .await
            .map_err(|_| stalled())??;
            first = false;
        }
        for chunk in data.chunks(WRITE_CHUNK) {
            ctx.egress.acquire(chunk.len()).await;
            timeout(ctx.cfg.idle_timeout, wr.write_all(chunk))
                .await
                .map_err(|_| stalled())??;
        }
        at += n;
    }
    ctx.metrics.bytes_sent.inc_by(len);
    Ok(())
}

/// How long to wait for a refused connection's goodbye to be written.
pub(crate) const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// Tells a dialled peer the engine would not have it, then closes.
pub(crate) async fn goodbye(mut stream: PeerStream, code: ErrorCode) {
    let mut frame = BytesMut::new();
    Message::Error {
        code,
        message: String::new(),
    }
    .encode(&mut frame);
    let _ = timeout(GOODBYE_TIMEOUT, async {
        stream.write_all(&frame).await?;
        stream.shutdown().await
    })
    .await;
}
