//! Why the proxy could not start or stopped. Errors answered to clients are
//! `shoal_core::error::ApiError`s made where they happen.

use crate::auth::HtpasswdError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("auth.htpasswd: {0}")]
    Htpasswd(#[from] HtpasswdError),
    #[error("upload spool {path}: {source}")]
    Spool {
        path: String,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("origins: {0}")]
    Origins(#[from] shoal_core::origin_client::OriginError),
    #[error("tls: {0}")]
    Tls(#[from] shoal_core::tls::TlsError),
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

impl ProxyError {
    /// Whether the config is to blame (the process exits with `EX_CONFIG`).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            ProxyError::Htpasswd(_) | ProxyError::Origins(_) | ProxyError::Tls(_)
        )
    }
}
