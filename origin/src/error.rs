//! The origin's error type and how it becomes an HTTP answer.

use std::io;

use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::store::StoreError;

use crate::backend::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("index database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("request to origin {member} failed: {source}")]
    Member {
        member: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("origin {member} answered {status}")]
    MemberStatus {
        member: String,
        status: http::StatusCode,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("peer protocol: {0}")]
    Peer(#[from] shoal_p2p::P2pError),
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The config would serve writes to anyone ([`crate::Config::credentials_problem`]).
    #[error("refusing to start: {0}")]
    Insecure(String),
    /// The `[tls]` table cannot be used (`crate::Config::peer_tls`).
    #[error("refusing to start: {0}")]
    Tls(String),
    /// A tag or referrer copy whose version no origin of this cluster could have written.
    #[error("version {0} is negative or too far ahead of this origin's clock")]
    ImplausibleVersion(i64),
    /// The held version is the largest there is: no write can be newer.
    #[error("the entry's version cannot grow any further")]
    VersionOverflow,
    #[error("the index database lock is poisoned")]
    Poisoned,
    #[error("credentials.metainfo_key: {0}")]
    MetainfoKey(#[from] shoal_core::signature::KeyError),
    #[error(
        "credentials.metainfo_key is empty: agents refuse unsigned metainfo (generate a key with `openssl genpkey -algorithm ed25519`, or set insecure = true)"
    )]
    NoMetainfoKey,
    #[error("stored metainfo of {digest} is corrupt: {reason}")]
    BadMetainfo {
        digest: shoal_core::Digest,
        reason: String,
    },
}

impl Error {
    /// Whether the config is to blame (the process exits with `EX_CONFIG`).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::Insecure(_) | Error::Tls(_) | Error::MetainfoKey(_) | Error::NoMetainfoKey
        )
    }

    /// The disk (or the file system under it) is full.
    pub fn is_storage_full(&self) -> bool {
        let io = match self {
            Error::Io(e) | Error::Store(StoreError::Io(e)) => e,
            Error::Db(rusqlite::Error::SqliteFailure(f, _)) => {
                return f.code == rusqlite::ErrorCode::DiskFull;
            }
            _ => return false,
        };
        io.kind() == io::ErrorKind::StorageFull || io.raw_os_error() == Some(28)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        if e.is_storage_full() {
            tracing::warn!(error = %e, "storage full");
            return ApiError::new(ErrorCode::Unavailable, "this origin's storage is full");
        }
        match e {
            Error::Store(s) => s.into(),
            Error::Member { .. } | Error::MemberStatus { .. } => ApiError::unavailable(e),
            Error::Backend(BackendError::Unavailable(_)) => ApiError::unavailable(e),
            Error::ImplausibleVersion(_) => ApiError::new(ErrorCode::Unsupported, e.to_string())
                .with_status(http::StatusCode::BAD_REQUEST),
            other => ApiError::internal(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
