//! A peer connection's byte stream: plain TCP, or TLS over it. Both split into a reader and a
//! writer that run in tasks of their own; plain TCP splits without a lock, as before TLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use shoal_core::tls::tokio_rustls::TlsStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The first byte of a TLS record carrying a handshake message (a ClientHello). A Shoal
/// hello starts with the protocol's name, so the two are told apart by one byte.
pub(crate) const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A connection to a peer.
pub(crate) enum PeerStream {
    Plain(TcpStream),
    /// Boxed: a TLS session's state is large, and most of a node's time is spent on the
    /// halves, not on this.
    Tls(Box<TlsStream<TcpStream>>),
}

/// The half a connection's reader owns.
pub(crate) enum PeerRead {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Box<TlsStream<TcpStream>>>),
}

/// The half a connection's writer owns.
pub(crate) enum PeerWrite {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Box<TlsStream<TcpStream>>>),
}

impl PeerStream {
    pub(crate) fn into_split(self) -> (PeerRead, PeerWrite) {
        match self {
            PeerStream::Plain(s) => {
                let (r, w) = s.into_split();
                (PeerRead::Plain(r), PeerWrite::Plain(w))
            }
            PeerStream::Tls(s) => {
                // One TLS session serves both directions, so the halves share it behind
                // tokio's split lock.
                let (r, w) = tokio::io::split(s);
                (PeerRead::Tls(r), PeerWrite::Tls(w))
            }
        }
    }
}

/// Forwards the `AsyncRead` of an enum to whichever stream it holds (all are `Unpin`).
macro_rules! forward_read {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

/// Forwards the `AsyncWrite` of an enum to whichever stream it holds.
macro_rules! forward_write {
    ($t:ty) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Plain(s) => s.is_write_vectored(),
                    Self::Tls(s) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

forward_read!(PeerStream);
forward_read!(PeerRead);
forward_write!(PeerStream);
forward_write!(PeerWrite);
