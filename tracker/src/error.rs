//! The tracker's one error type, and how each kind answers a client.

use shoal_core::peer::PeerId;
use shoal_core::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// Opening one more swarm would pass `table.max_swarms`.
    #[error("the tracker already holds {max} swarms, its limit")]
    TooManySwarms { max: usize },
    /// The peer id is already in `table.max_swarms_per_peer` swarms.
    #[error("peer {peer} is already in {max} swarms, the most one peer may join")]
    TooManySwarmsForPeer { peer: PeerId, max: usize },
    /// A shared peer store (not the in-memory one) failed.
    #[error("peer store failed: {0}")]
    Store(String),
    #[error("origin client: {0}")]
    Origin(#[from] shoal_core::origin_client::OriginError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

impl From<TrackerError> for ApiError {
    fn from(e: TrackerError) -> Self {
        match e {
            // The table is full for everyone: the tracker, not the caller, is at its limit.
            TrackerError::TooManySwarms { .. } => {
                ApiError::new(ErrorCode::TooManyRequests, e.to_string())
                    .with_status(http::StatusCode::SERVICE_UNAVAILABLE)
            }
            TrackerError::TooManySwarmsForPeer { .. } => {
                ApiError::new(ErrorCode::TooManyRequests, e.to_string())
            }
            TrackerError::Store(_) => ApiError::unavailable(e),
            TrackerError::Origin(o) => o.into(),
            TrackerError::Metrics(_) | TrackerError::Io(_) => ApiError::internal(e),
        }
    }
}
