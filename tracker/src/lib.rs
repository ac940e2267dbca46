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
//! [`Tracker::start`] serves the API and starts the expiry sweep and the origins' refresh;
//! [`Tracker::wait`] returns once shutdown is over; [`run`] is both (the shape of every
//! part: `shoal_core::lifecycle`). [`App`] is the same tracker serving nothing, for
//! in-process tests.
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use shoal_core::lifecycle::{BindError, bind};
use shoal_core::origin_client::OriginClient;
use shoal_core::tasks::{Running, Tasks};
use shoal_core::telemetry::{Readiness, ops_router};
use shoal_core::tls::Tls;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// A tracker assembled but serving nothing: its state and router. [`Tracker::start`] serves
/// one; in-process tests call its router and start its loops themselves.
pub struct App {
    state: AppState,
    client: Arc<OriginClient>,
    registry: prometheus::Registry,
    ready: Readiness,
    tasks: Tasks,
    interval: Duration,
    origin_refresh: Duration,
    grace: Duration,
    server: shoal_core::telemetry::ServerConfig,
    /// What the API is served with and the origins are verified against; `None`: plaintext.
    tls: Option<Tls>,
}

impl App {
    /// A tracker with the in-memory peer table.
    pub fn new(config: &Config, registry: prometheus::Registry) -> Result<Self, TrackerError> {
        Self::with_store(config, registry, memory_table(config))
    }

    /// A tracker over any peer store (a shared one, for several trackers). Its tasks (the
    /// metainfo fetches, the loops a test starts) end when they are done.
    pub fn with_store(
        config: &Config,
        registry: prometheus::Registry,
        table: Arc<dyn PeerStore>,
    ) -> Result<Self, TrackerError> {
        Self::build(
            config,
            registry,
            table,
            Tasks::new(&CancellationToken::new()),
        )
    }

    /// Refuses ([`TrackerError::NoCredentials`]) a config with no read token unless it
    /// says `insecure = true`, whoever built it.
    fn build(
        config: &Config,
        registry: prometheus::Registry,
        table: Arc<dyn PeerStore>,
        tasks: Tasks,
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
        let tls = Tls::from_config(&config.tls)?;
        let client = Arc::new(OriginClient::new(&config.origins, token, tls.as_ref())?);
        let metainfo = Arc::new(MetainfoCache::new(
            Arc::clone(&client),
            &config.metainfo,
            metrics.clone(),
            tasks.clone(),
        ));
        let state = Arc::new(Shared {
            table,
            origins: Arc::new(Origins::new(
                &config.origins,
                config.replicas,
                tls.is_some(),
            )),
            metainfo,
            metrics,
            handout_size: config.handout_size,
            interval_secs: config.announce_interval.as_secs().max(1),
            trust_announced_addr: config.trust_announced_addr,
            credentials: config.credentials.clone(),
        });
        Ok(App {
            state,
            client,
            registry,
            ready: Readiness::default(),
            tasks,
            interval: config.announce_interval,
            origin_refresh: config.origin_refresh,
            grace: config.shutdown_grace,
            server: config.server.clone(),
            tls,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Every endpoint: the API and `/health`, `/ready`, `/metrics`. Announce needs the
    /// caller's address: serve it with connect info (as [`Tracker::start`] does), or give
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
        let round = move || {
            let state = Arc::clone(&state);
            async move {
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
        };
        let every = self.interval;
        self.tasks.spawn(tracing::info_span!("expiry"), async move {
            shoal_core::tasks::every(every, &shutdown, round).await;
        })
    }

    /// Learns the origins' peer ids and ports now and every `origin_refresh` until
    /// shutdown; the tracker is ready once the first round is over, whatever it found.
    fn spawn_origin_refresh(&self) {
        let origins = Arc::clone(&self.state.origins);
        let client = Arc::clone(&self.client);
        let metrics = self.state.metrics.clone();
        let ready = self.ready.clone();
        self.tasks.every(
            tracing::info_span!("origin_refresh"),
            self.origin_refresh,
            move || {
                let (origins, client) = (Arc::clone(&origins), Arc::clone(&client));
                let (metrics, ready) = (metrics.clone(), ready.clone());
                async move {
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
            },
        );
    }
}

fn memory_table(config: &Config) -> Arc<dyn PeerStore> {
    Arc::new(MemoryTable::new(config.table.clone(), config.peer_ttl()))
}

/// A running tracker. Dropping it stops it.
pub struct Tracker {
    app: App,
    running: Running,
    addr: SocketAddr,
}

impl Tracker {
    /// Serves `config` on `listener` with the in-memory peer table until `shutdown` is
    /// cancelled: the API, the expiry sweep and the origins' refresh. Metrics go to
    /// `registry`.
    pub async fn start(
        config: Config,
        listener: TcpListener,
        registry: prometheus::Registry,
        shutdown: CancellationToken,
    ) -> Result<Self, TrackerError> {
        let app = App::build(
            &config,
            registry,
            memory_table(&config),
            Tasks::new(&shutdown),
        )?;
        let https = app.tls.as_ref().map(Tls::http_server).transpose()?;
        let addr = listener.local_addr()?;
        let mut running = Running::with_tasks(app.tasks.clone());
        app.spawn_expiry(app.tasks.shutdown().clone());
        app.spawn_origin_refresh();
        // Not ready from the moment the drain starts, so balancers stop sending announces.
        app.tasks.unready_on_shutdown(app.ready.clone());
        running.serve(
            tracing::info_span!("http", %addr),
            listener,
            app.router(),
            app.grace,
            app.server.clone(),
            https,
        );
        tracing::info!(
            %addr,
            origins = app.state.origins.members().len(),
            tls = app.tls.is_some(),
            "tracker serving"
        );
        Ok(Tracker { app, running, addr })
    }

    /// Waits until shutdown has been asked for and everything has stopped: the API drains
    /// for up to the grace period, then the loops stop.
    pub async fn wait(mut self) -> Result<(), TrackerError> {
        let served = self.running.drained().await;
        self.running.close().await;
        tracing::info!(addr = %self.addr, "tracker stopped");
        Ok(served?)
    }

    /// Asks the tracker to stop and waits until it has.
    pub async fn stop(self) -> Result<(), TrackerError> {
        self.running.stop();
        self.wait().await
    }

    /// The address the API is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        self.app.state()
    }
}

/// Starts a tracker and waits until `shutdown` is cancelled and it has stopped.
pub async fn run(
    config: Config,
    listener: TcpListener,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
) -> Result<(), TrackerError> {
    Tracker::start(config, listener, registry, shutdown)
        .await?
        .wait()
        .await
}

// The shape every part shares (`shoal_core::lifecycle::Part`), for the `main` they share.
shoal_core::part!(
    Tracker: Config, TcpListener, TrackerError;
    "shoal-tracker", config::ENV_PREFIX, bind_api
);

/// Binds `listen`.
async fn bind_api(config: &Config) -> Result<TcpListener, BindError> {
    bind("the HTTP API", config.listen).await
}
