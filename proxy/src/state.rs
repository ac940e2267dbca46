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
        let origins = OriginClient::new(
            &config.origins,
            config.credentials.write_token.get().map(str::to_owned),
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
            config,
            origins,
            sessions,
            auth,
            metrics,
            tasks,
        })))
    }
}
