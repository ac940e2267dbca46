//! The tracker's one error type, and how each kind answers a client.

use std::net::IpAddr;

use shoal_core::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// Opening one more swarm would pass `table.max_swarms`.
    #[error("the tracker already holds {max} swarms, its limit")]
    TooManySwarms { max: usize },
    /// Announces from this source address already hold `table.max_entries_per_source`
    /// entries, whatever peer ids they used.
    #[error("announces from {addr} already hold {max} entries, the most one address may")]
    TooManyEntriesForSource { addr: IpAddr, max: usize },
    /// No `credentials.read_token` and no `insecure = true`: the tracker would let anyone
    /// announce.
    #[error(
        "no credentials.read_token is configured; set one, or `insecure = true` to serve \
         announces and metainfo to anyone who reaches the tracker"
    )]
    NoCredentials,
    /// A shared peer store (not the in-memory one) failed.
    #[error("peer store failed: {0}")]
    Store(String),
    /// The `[tls]` table's files cannot be used.
    #[error("tls: {0}")]
    Tls(#[from] shoal_core::tls::TlsError),
    #[error("origin client: {0}")]
    Origin(#[from] shoal_core::origin_client::OriginError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

impl TrackerError {
    /// Whether the config is to blame (the process exits with `EX_CONFIG`).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            TrackerError::NoCredentials | TrackerError::Tls(_) | TrackerError::Origin(_)
        )
    }
}

impl From<TrackerError> for ApiError {
    fn from(e: TrackerError) -> Self {
        match e {
            // The table is full for everyone: the tracker, not the caller, is at its limit.
            TrackerError::TooManySwarms { .. } => {
                ApiError::new(ErrorCode::TooManyRequests, e.to_string())
                    .with_status(http::StatusCode::SERVICE_UNAVAILABLE)
            }
            TrackerError::TooManyEntriesForSource { .. } => {
                ApiError::new(ErrorCode::TooManyRequests, e.to_string())
            }
            TrackerError::Store(_) => ApiError::unavailable(e),
            TrackerError::Origin(o) => o.into(),
            TrackerError::Metrics(_)
            | TrackerError::Io(_)
            | TrackerError::Tls(_)
            | TrackerError::NoCredentials => ApiError::internal(e),
        }
    }
}
