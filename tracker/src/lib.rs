//! Shoal's tracker: tells each downloader which peers hold the blob it wants, and hands out
//! the blob's metainfo. Its HTTP API is written down in `tracker/API.md`.
//!
//! - [`config`]: the config file's keys, defaults and checks.
//! - [`table`]: the peer table behind the [`table::PeerStore`] trait, its in-memory
//!   implementation and the handout policy.
//! - [`origins`]: each blob's owning origins, placed on the ring as the origins place them.
//! - [`metainfo`]: metainfo fetched from the origins, cached, one fetch per blob at a time.
//! - [`routes`]: the HTTP endpoints, one module per resource; [`answer`] writes the
//!   announce answer fast.
//! - [`metrics`]: the `shoal_tracker_…` Prometheus families.
//! - [`error`]: the crate's error type.
//! - `testing` (feature `testing`, never in a shipped binary): a tracker on a free port, for
//!   tests of any crate.
//!
//! [`run`] is the whole tracker; `main.rs` only parses flags, loads the config and binds.
#![forbid(unsafe_code)]

pub mod answer;
pub mod config;
pub mod error;
pub mod metainfo;
pub mod metrics;
pub mod origins;
pub mod routes;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use shoal_core::origin_client::OriginClient;
use shoal_core::telemetry::{Readiness, ops_router};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::Config;
use config::Credentials;
pub use error::TrackerError;

use metainfo::MetainfoCache;
use metrics::Metrics;
use origins::Origins;
use table::{MemoryTable, PeerStore};

/// How long one origin's `/v1/info` may take before it counts as down.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler shares; one `Arc` so that each request clones one pointer.
pub type AppState = Arc<Shared>;

pub struct Shared {
    pub table: Arc<dyn PeerStore>,
    pub origins: Arc<Origins>,
    pub metainfo: Arc<MetainfoCache>,
    pub metrics: Metrics,
    pub handout_size: usize,
    pub interval_secs: u64,
    pub trust_announced_addr: bool,
    /// The tokens announce and metainfo requests must carry (none: `insecure`).
    pub credentials: Credentials,
}

/// A tracker, assembled but not yet serving.
pub struct Tracker {
    state: AppState,
    client: Arc<OriginClient>,
    registry: prometheus::Registry,
    ready: Readiness,
    interval: Duration,
    origin_refresh: Duration,
    grace: Duration,
    server: shoal_core::telemetry::ServerConfig,
}

impl Tracker {
    /// A tracker with the in-memory peer table.
    pub fn new(config: &Config, registry: prometheus::Registry) -> Result<Self, TrackerError> {
        let table = Arc::new(MemoryTable::new(config.table.clone(), config.peer_ttl()));
        Self::with_store(config, registry, table)
    }

    /// A tracker over any peer store (a shared one, for several trackers). Refuses
    /// ([`TrackerError::NoCredentials`]) a config with no read token unless it says
    /// `insecure = true`, whoever built it.
    pub fn with_store(
        config: &Config,
        registry: prometheus::Registry,
        table: Arc<dyn PeerStore>,
    ) -> Result<Self, TrackerError> {
        if config.credentials.read_token.is_empty() {
            if !config.insecure {
                return Err(TrackerError::NoCredentials);
            }
            tracing::warn!(
                "insecure = true and no credentials.read_token: anyone who reaches this tracker can announce any address and read metainfo"
            );
        }
        let metrics = Metrics::new(&registry)?;
        let token = config.credentials.read_token.get().map(str::to_owned);
        let client = Arc::new(OriginClient::new(&config.origins, token)?);
        let metainfo = Arc::new(MetainfoCache::new(
            Arc::clone(&client),
            &config.metainfo,
            metrics.clone(),
        ));
        let state = Arc::new(Shared {
            table,
            origins: Arc::new(Origins::new(&config.origins, config.replicas)),
            metainfo,
            metrics,
            handout_size: config.handout_size,
            interval_secs: config.announce_interval.as_secs().max(1),
            trust_announced_addr: config.trust_announced_addr,
            credentials: config.credentials.clone(),
        });
        Ok(Tracker {
            state,
            client,
            registry,
            ready: Readiness::default(),
            interval: config.announce_interval,
            origin_refresh: config.origin_refresh,
            grace: config.shutdown_grace,
            server: config.server.clone(),
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Every endpoint: the API and `/health`, `/ready`, `/metrics`. Announce needs the
    /// caller's address: serve it with connect info (as [`Tracker::serve`] does), or give
    /// in-process requests a `MockConnectInfo` layer.
    pub fn router(&self) -> Router {
        routes::api(self.state.clone())
            .with_state(self.state.clone())
            .merge(ops_router(self.registry.clone(), self.ready.clone()))
    }

    /// Drops expired peers every announce interval until `shutdown`, and keeps the table
    /// gauges current.
    pub fn spawn_expiry(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let state = Arc::clone(&self.state);
        let every = self.interval;
        tokio::spawn(
            async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    match state.table.expire().await {
                        Ok(n) => state.metrics.expired.inc_by(n as u64),
                        Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
                    }
                    match state.table.stats().await {
                        Ok(s) => {
                            state.metrics.swarms.set(s.swarms as i64);
                            state.metrics.peers.set(s.peers as i64);
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read the table's size"),
                    }
                }
            }
            .instrument(tracing::info_span!("expiry")),
        )
    }

    /// Learns the origins' peer ids and ports now and every `origin_refresh` until
    /// `shutdown`; the tracker is ready once the first round is over, whatever it found.
    pub fn spawn_origin_refresh(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let origins = Arc::clone(&self.state.origins);
        let client = Arc::clone(&self.client);
        let metrics = self.state.metrics.clone();
        let ready = self.ready.clone();
        let every = self.origin_refresh;
        tokio::spawn(
            async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let up = origins.refresh(&client, INFO_TIMEOUT).await;
                    metrics.origins_up.set(up as i64);
                    if !ready.is_ready() {
                        tracing::info!(
                            up,
                            of = origins.members().len(),
                            "origins looked up; ready"
                        );
                        ready.set(true);
                    }
                }
            }
            .instrument(tracing::info_span!("origin_refresh")),
        )
    }

    /// Serves on `listener` until `shutdown` is cancelled, then drains for up to the
    /// configured grace period.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), TrackerError> {
        let addr = listener.local_addr()?;
        let tasks = shutdown.child_token();
        let expiry = self.spawn_expiry(tasks.clone());
        let refresh = self.spawn_origin_refresh(tasks.clone());
        tracing::info!(%addr, origins = self.state.origins.members().len(), "tracker serving");

        let ready = self.ready.clone();
        let draining = shutdown.clone();
        // Not ready from the moment the drain starts, so balancers stop sending announces.
        tokio::spawn(async move {
            draining.cancelled().await;
            ready.set(false);
        });
        let result = shoal_core::telemetry::serve(
            listener,
            self.router(),
            shutdown,
            self.grace,
            self.server.clone(),
        )
        .await;
        tasks.cancel();
        for task in [expiry, refresh] {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "tracker task failed");
            }
        }
        tracing::info!(%addr, "tracker stopped");
        result.map_err(TrackerError::from)
    }
}

/// The whole tracker: serves `config` on `listener` until `shutdown` is cancelled.
/// Metrics go to `registry`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
) -> Result<(), TrackerError> {
    Tracker::new(&config, registry)?
        .serve(listener, shutdown)
        .await
}
