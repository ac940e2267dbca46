//! What every handler shares.

use std::sync::Arc;

use shoal_core::origin_client::OriginClient;
use shoal_core::tasks::Tasks;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::config::Config;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::sessions::Sessions;

#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub config: Config,
    /// The `[tls]` table made ready: the origins are verified with it, and the registry
    /// API is served with its certificate when it has one. `None`: plaintext.
    pub tls: Option<shoal_core::tls::Tls>,
    pub origins: OriginClient,
    pub sessions: Arc<Sessions>,
    pub auth: Option<Auth>,
    pub metrics: Metrics,
    /// The upload reaper and chunk writers; they end with the proxy.
    pub tasks: Tasks,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the shared state: registers the metrics on `registry`, reads the htpasswd
    /// file, takes the spool directory and starts expiring idle uploads until `shutdown`
    /// (on [`Inner::tasks`]).
    pub async fn new(
        config: Config,
        registry: &prometheus::Registry,
        shutdown: CancellationToken,
    ) -> Result<Self, ProxyError> {
        let metrics = Metrics::new(registry)?;
        let auth = Auth::from_config(&config.auth)?;
        let tls = shoal_core::tls::Tls::from_config(&config.tls)?;
        let origins = OriginClient::new(
            &config.origins,
            config.credentials.write_token.get().map(str::to_owned),
            tls.as_ref(),
        )?;
        let sessions = Sessions::open(
            &config.uploads.spool_dir,
            config.uploads.idle_timeout,
            config.uploads.max_sessions,
            metrics.uploads_in_flight.clone(),
        )
        .await
        .map_err(|source| ProxyError::Spool {
            path: config.uploads.spool_dir.display().to_string(),
            source,
        })?
        .bounded(config.uploads.max_size.bytes(), config.uploads.max_lifetime);
        let sessions = Arc::new(sessions);
        let tasks = Tasks::new(&shutdown);
        sessions.spawn_reaper(&tasks);
        Ok(AppState(Arc::new(Inner {
            tls,
            config,
            origins,
            sessions,
            auth,
            metrics,
            tasks,
        })))
    }
}
