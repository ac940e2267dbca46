//! The crate's error type.

use shoal_core::Digest;
use shoal_core::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("p2p I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("registering p2p metrics: {0}")]
    Metrics(#[from] prometheus::Error),
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
