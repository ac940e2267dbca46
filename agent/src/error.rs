//! The crate's error type.

use shoal_core::origin_client::OriginError;
use shoal_core::store::StoreError;
use shoal_core::{ApiError, Digest, ErrorCode};
use shoal_p2p::{DownloadError, P2pError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    P2p(#[from] P2pError),
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("tracker request failed: {0}")]
    Tracker(String),
    /// A value of the config that start-up cannot use.
    #[error("{0}")]
    Config(String),
    #[error("blob {0} is unknown to the origins")]
    BlobUnknown(Digest),
    #[error("metainfo for {digest} is bad: {reason}")]
    BadMetainfo { digest: Digest, reason: String },
    #[error("credentials.metainfo_keys: {0}")]
    MetainfoKeys(String),
    #[error("cache directory {0} is in use by another agent")]
    CacheLocked(String),
}

impl AgentError {
    /// Whether the config is to blame (the process exits with `EX_CONFIG`).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            AgentError::MetainfoKeys(_) | AgentError::Config(_) | AgentError::Origin(_)
        )
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::BlobUnknown(d) => {
                ApiError::new(ErrorCode::BlobUnknown, format!("blob {d} is unknown"))
            }
            AgentError::Origin(o) => o.into(),
            AgentError::Store(s) => s.into(),
            // Nothing trustworthy to check pieces against: the blob cannot be served now.
            AgentError::Tracker(_) | AgentError::BadMetainfo { .. } => ApiError::unavailable(e),
            other => ApiError::internal(other),
        }
    }
}
