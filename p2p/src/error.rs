//! The crate's error type.

use shoal_core::Digest;
use shoal_core::peer::PeerId;
use shoal_core::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("p2p I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("registering p2p metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("p2p TLS: {0}")]
    Tls(#[from] shoal_core::tls::TlsError),
    #[error(
        "the node's peer id {configured} is not the one of its certificate ({name}, whose id is \
         {certificate}): with TLS on, a node's peer id is its certificate's"
    )]
    PeerIdNotCertificate {
        configured: PeerId,
        name: String,
        certificate: PeerId,
    },
    #[error(
        "the node's certificate ({name}) does not match its role (origin: {origin}): an origin \
         presents a certificate for <name>.origin.shoal, an agent one for <name>.agent.shoal"
    )]
    OriginNotCertificate { name: String, origin: bool },
    #[error("the p2p node has stopped")]
    Stopped,
    #[error("blob {0} is not in the store")]
    NotInStore(Digest),
    #[error("the store holds {digest} with {actual} bytes where its metainfo says {expected}")]
    LengthMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
}
