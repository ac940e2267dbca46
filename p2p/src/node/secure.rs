//! The peer protocol over mutual TLS: the handshake on either side of a connection, and the
//! checks that bind a peer's id, and whether it is an origin, to the certificate it
//! presented.
//!
//! With TLS on, a hello's peer id must be its sender's certificate's, and only a certificate
//! that names an origin may say `origin`; the dialling side also checks that the certificate
//! is the one of the peer it meant to dial. A port speaking one mode tells a connection in
//! the other apart by its first byte and says so in one log line, since the cause is a
//! setting on one side (`tls.plaintext`) and nothing on the wire explains it to the other.

use std::io;
use std::net::SocketAddr;

use shoal_core::peer::{PeerId, PeerInfo};
use shoal_core::tls::rustls::pki_types::ServerName;
use shoal_core::tls::tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use shoal_core::tls::{PeerIdentity, Tls, rustls};
use tokio::net::TcpStream;

use super::stream::{PeerStream, TLS_HANDSHAKE_RECORD};
use super::{Ctx, NodeConfig};
use crate::error::P2pError;
use crate::wire::{self, Hello};

/// A node's side of the peer protocol's TLS, made once at start.
pub(crate) struct PeerTls {
    tls: Tls,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl PeerTls {
    /// Checks that the node's settings agree with its certificate: its peer id is the
    /// certificate's, and it is an origin exactly when the certificate names one. Parts
    /// cannot get these wrong, since peers would refuse them on every connection.
    pub(crate) fn new(tls: &Tls, cfg: &NodeConfig) -> Result<PeerTls, P2pError> {
        let me = tls.identity()?;
        if me.id != cfg.peer_id {
            return Err(P2pError::PeerIdNotCertificate {
                configured: cfg.peer_id,
                name: me.name,
                certificate: me.id,
            });
        }
        if me.origin != cfg.origin {
            return Err(P2pError::OriginNotCertificate {
                name: me.name,
                origin: cfg.origin,
            });
        }
        Ok(PeerTls {
            acceptor: TlsAcceptor::from(tls.peer_server()?),
            connector: TlsConnector::from(tls.peer_client()?),
            tls: tls.clone(),
        })
    }

    fn identity(&self, stream: &TlsStream<TcpStream>) -> Result<PeerIdentity, Refused> {
        let (_, session) = stream.get_ref();
        let chain = session.peer_certificates().unwrap_or_default();
        self.tls.peer_identity(chain).map_err(|e| {
            tracing::info!(error = %e, "peer certificate names no peer; refused");
            Refused::Identity
        })
    }
}

/// Why a connection was refused before it opened: the `reason` of the refusals metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No hello in time, or not a hello.
    Handshake,
    /// A plaintext connection to a TLS port.
    Plaintext,
    /// A TLS connection to a plaintext port.
    TlsToPlaintext,
    /// The TLS handshake failed: a certificate from another CA, an expired one, none.
    Tls,
    /// The certificate is not of the peer the hello names, or of the peer dialled, or does
    /// not make it the origin it says it is.
    Identity,
}

impl Refused {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refused::Handshake => "handshake",
            Refused::Plaintext => "plaintext",
            Refused::TlsToPlaintext => "tls_to_plaintext",
            Refused::Tls => "tls",
            Refused::Identity => "identity",
        }
    }
}

/// The rustls error an I/O error of a TLS stream carries, if any: the peer's alert, or a
/// certificate this side refused.
pub(crate) fn tls_cause(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// An incoming connection whose hello has been read.
pub(crate) struct Inbound {
    pub stream: PeerStream,
    pub hello: Hello,
    /// The id its certificate vouches for (TLS only).
    pub verified: Option<PeerId>,
}

/// Reads the first bytes of a connection made to this node: the TLS handshake if the node
/// speaks TLS, then the hello, checked against the certificate. The caller bounds it in
/// time.
pub(crate) async fn open_inbound(
    ctx: &Ctx,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Result<Inbound, Refused> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) => {}
        Ok(_) => return Err(Refused::Handshake),
        Err(e) => {
            tracing::debug!(%addr, error = %e, "connection lost before its hello");
            return Err(Refused::Handshake);
        }
    }
    let tls_hello = first[0] == TLS_HANDSHAKE_RECORD;
    let Some(tls) = &ctx.tls else {
        if tls_hello {
            tracing::info!(
                %addr,
                "TLS peer connection refused: this port speaks plaintext (tls.plaintext is set \
                 here and not on the dialling side?)"
            );
            return Err(Refused::TlsToPlaintext);
        }
        let mut stream = PeerStream::Plain(tcp);
        let hello = read_hello(&mut stream, addr).await?;
        return Ok(Inbound {
            stream,
            hello,
            verified: None,
        });
    };
    if !tls_hello {
        tracing::info!(
            %addr,
            "plaintext peer connection refused: this port speaks TLS (tls.plaintext is set on \
             the dialling side?)"
        );
        return Err(Refused::Plaintext);
    }
    let tcp = match tls.acceptor.accept(tcp).await {
        Ok(s) => s,
        Err(e) => {
            log_tls_failure(addr, &e, "peer TLS handshake failed; refused");
            return Err(Refused::Tls);
        }
    };
    let tcp = TlsStream::Server(tcp);
    let identity = tls.identity(&tcp)?;
    let mut stream = PeerStream::Tls(Box::new(tcp));
    let hello = read_hello(&mut stream, addr).await?;
    if hello.peer_id != identity.id {
        tracing::info!(
            %addr,
            certificate = %identity.name,
            claimed = %hello.peer_id,
            "peer hello names another id than its certificate; refused"
        );
        return Err(Refused::Identity);
    }
    if hello.origin && !identity.origin {
        tracing::info!(
            %addr,
            certificate = %identity.name,
            "peer says it is an origin without an origin certificate; refused"
        );
        return Err(Refused::Identity);
    }
    Ok(Inbound {
        stream,
        hello,
        verified: Some(identity.id),
    })
}

async fn read_hello(stream: &mut PeerStream, addr: SocketAddr) -> Result<Hello, Refused> {
    wire::read_hello(stream).await.map_err(|e| {
        if let wire::WireError::Io(io) = &e
            && let Some(cause) = tls_cause(io)
        {
            tracing::info!(%addr, error = %cause, "peer TLS session failed; refused");
            return Refused::Tls;
        }
        tracing::debug!(%addr, error = %e, "bad hello");
        Refused::Handshake
    })
}

fn log_tls_failure(addr: SocketAddr, e: &io::Error, what: &'static str) {
    match tls_cause(e) {
        Some(cause) => tracing::info!(%addr, error = %cause, "{what}"),
        // The connection went away: nothing about TLS to tell.
        None => tracing::debug!(%addr, error = %e, "{what}"),
    }
}

/// Makes a dialled connection the peer protocol's: over TLS when the node speaks it, with
/// the certificate checked to be the one of the peer dialled (the id the tracker handed
/// out, and an origin's if it was listed as one). Also what the certificate vouches for.
pub(crate) async fn open_outbound(
    ctx: &Ctx,
    tcp: TcpStream,
    peer: &PeerInfo,
) -> Result<(PeerStream, Option<PeerId>), Refused> {
    let Some(tls) = &ctx.tls else {
        return Ok((PeerStream::Plain(tcp), None));
    };
    let name = ServerName::IpAddress(peer.addr.ip().into());
    let stream = match tls.connector.connect(name, tcp).await {
        Ok(s) => TlsStream::Client(s),
        Err(e) => {
            log_tls_failure(peer.addr, &e, "peer TLS handshake failed");
            return Err(Refused::Tls);
        }
    };
    let identity = tls.identity(&stream)?;
    if identity.id != peer.peer_id {
        tracing::info!(
            addr = %peer.addr,
            certificate = %identity.name,
            dialled = %peer.peer_id,
            "peer presented another peer's certificate than the one dialled; refused"
        );
        return Err(Refused::Identity);
    }
    if peer.origin && !identity.origin {
        tracing::info!(
            addr = %peer.addr,
            certificate = %identity.name,
            "peer listed as an origin has no origin certificate; refused"
        );
        return Err(Refused::Identity);
    }
    Ok((PeerStream::Tls(Box::new(stream)), Some(identity.id)))
}
