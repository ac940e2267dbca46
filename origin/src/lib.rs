//! The origin: Shoal's durable blob and tag store, and the first seeder of every swarm.
//!
//! - [`config`]: every config key, its default and its checks.
//! - [`cluster`]: the member list, health checks, and who owns what on the ring.
//! - [`routes`]: the HTTP API of `origin/API.md`, one module per resource.
//! - [`blobs`]: storing (verified, with metainfo), reading through and deleting blobs.
//! - [`db`]: the SQLite index: blobs with their metainfo, tags, referrers, and the durable
//!   queue.
//! - [`queue`]: the worker that makes replica copies and write-backs, with back-off.
//! - [`repair`]: the pass that puts every blob and tag back on as many owners as it needs.
//! - [`backend`]: where blobs and tags are written back to and read through from.
//! - [`remote`]: requests from this origin to the others.
//! - [`seed`]: serving pieces of every blob held here over the peer protocol.
//! - [`metrics`]: the `shoal_origin_…` families.
//! - [`state`]: what the handlers and background tasks of one origin share.
//! - [`error`]: the crate's error type and its HTTP answers.
//! - `testing` (feature `testing`, never in a shipped binary): starting origins and clusters
//!   of them in process, for tests of any crate.
//!
//! [`Origin::start`] opens the data directory, serves the listeners it is given and starts
//! the background tasks; [`Origin::wait`] returns once shutdown is over; [`run`] is both
//! (the shape of every part: `shoal_core::lifecycle`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::Registry;
use shoal_core::lifecycle::{BindError, bind};
use shoal_core::peer::PeerId;
use shoal_core::store::BlobStore;
use shoal_core::tasks::Running;
use shoal_core::telemetry::Readiness;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod backend;
pub mod blobs;
pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
pub mod metrics;
pub mod queue;
pub mod remote;
pub mod repair;
pub mod routes;
pub mod seed;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::Config;
pub use error::Error;
pub use repair::RepairReport;
pub use seed::{PeerSeeder, SeedSource, Seeder};

use backend::{Backend, NoBackend, fs::FsBackend};
use cluster::Cluster;
use config::BackendKind;
use db::Db;
use metrics::Metrics;
use remote::Remote;
use state::{AppState, Shared};

/// The sockets an origin serves, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP API, `/health`, `/ready` and `/metrics`.
    pub http: TcpListener,
    /// The peer protocol; `None` serves no peers.
    pub peer: Option<TcpListener>,
}

impl Listeners {
    /// Binds `listen` and `peer.listen`.
    pub async fn bind(config: &Config) -> Result<Self, BindError> {
        Ok(Listeners {
            http: bind("the HTTP API", config.listen).await?,
            peer: Some(bind("the peer protocol", config.peer.listen).await?),
        })
    }
}

/// A running origin. Dropping it stops it.
#[derive(Debug)]
pub struct Origin {
    state: AppState,
    running: Running,
    addr: SocketAddr,
    _lock: std::fs::File,
}

/// Starts an origin and waits until `shutdown` is cancelled and it has stopped.
pub async fn run(
    config: Config,
    listeners: Listeners,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    Origin::start(config, listeners, registry, shutdown)
        .await?
        .wait()
        .await
}

// The shape every part shares (`shoal_core::lifecycle::Part`), for the `main` they share.
shoal_core::part!(
    Origin: Config, Listeners, Error;
    "shoal-origin", config::ENV_PREFIX, Listeners::bind
);

impl Origin {
    /// Opens the data directory, brings the index in line with the store, and starts
    /// serving HTTP, the peer protocol (with a [`PeerSeeder`]) and the background tasks.
    pub async fn start(
        config: Config,
        listeners: Listeners,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> Result<Origin, Error> {
        Self::start_with_seeder(
            config,
            listeners,
            registry,
            shutdown,
            Box::new(PeerSeeder::new()),
        )
        .await
    }

    /// [`Origin::start`] with another seeder on the peer listener.
    pub async fn start_with_seeder(
        config: Config,
        listeners: Listeners,
        registry: Registry,
        shutdown: CancellationToken,
        seeder: Box<dyn Seeder>,
    ) -> Result<Origin, Error> {
        let metainfo_signer = blobs::metainfo_signer(&config)?;
        if let Some(problem) = config.credentials_problem() {
            return Err(Error::Insecure(problem));
        }
        let tls = config.peer_tls().map_err(Error::Tls)?;
        let peer_id = match &tls {
            Some((_, me)) => me.id,
            None => config.peer_id().unwrap_or_else(PeerId::random),
        };
        let tls = tls.map(|(tls, _)| tls);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let https = match &tls {
            Some(t) => Some(t.http_server().map_err(|e| Error::Tls(e.to_string()))?),
            None => None,
        };
        // A second origin on the directory would wipe the first one's uploads in progress.
        let lock = shoal_core::store::lock_dir(&config.data_dir)?.ok_or_else(|| {
            Error::Io(std::io::Error::other(format!(
                "data directory {} is in use by another origin",
                config.data_dir.display()
            )))
        })?;
        let store = BlobStore::open(&config.data_dir).await?;
        let db_path = config.data_dir.join("origin.db");
        let db = tokio::task::spawn_blocking(move || Db::open(&db_path)).await??;
        let metrics = Metrics::register(&registry)?;
        let backend: Arc<dyn Backend> = match config.backend.kind {
            BackendKind::None => Arc::new(NoBackend),
            BackendKind::Filesystem => Arc::new(FsBackend::open(config.backend_path()).await?),
        };
        let peer_port = match (config.peer.port, &listeners.peer) {
            (0, Some(l)) => l.local_addr()?.port(),
            (0, None) => config.peer.listen.port(),
            (p, _) => p,
        };
        let addr = listeners.http.local_addr()?;
        let cluster = Arc::new(Cluster::new(
            &config,
            peer_id,
            format!("{scheme}://{addr}"),
            metrics.clone(),
            tls.as_ref(),
        )?);
        let http = shoal_core::tls::client_builder(tls.as_ref())
            .map_err(|e| Error::Tls(e.to_string()))?
            .connect_timeout(config.cluster.connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(Error::Client)?;
        let remote = Remote::new(
            http,
            config.credentials.write_token.get().map(str::to_owned),
            cluster.clone(),
        );
        let state: AppState = Arc::new(Shared {
            config,
            store,
            db,
            cluster,
            backend,
            metrics,
            remote,
            peer_port,
            tls,
            metainfo_signer,
            ready: Readiness::default(),
            queue_wake: Notify::new(),
            peer_node: std::sync::Mutex::new(None),
        });
        blobs::reconcile(&state).await?;

        let mut running = Running::new(&shutdown);
        let tasks = running.tasks().clone();
        // First, so that a seeder that cannot start fails the start with nothing running.
        if let Some(peer) = listeners.peer {
            let seeding = {
                let _span = tracing::info_span!("peer").entered();
                seeder.start(
                    peer,
                    SeedSource::new(state.clone()),
                    tasks.shutdown().clone(),
                )?
            };
            tasks.spawn(tracing::info_span!("peer"), seeding);
        }
        let app = routes::router(state.clone(), registry);
        running.serve(
            tracing::info_span!("http", %addr),
            listeners.http,
            app,
            state.config.shutdown_grace,
            state.config.server.clone(),
            https,
        );
        {
            let st = state.clone();
            let token = tasks.shutdown().clone();
            tasks.spawn(tracing::info_span!("health"), async move {
                let ready = st.ready.clone();
                st.cluster.run(token, |c| ready.set(c.me().is_some())).await;
            });
        }
        let token = tasks.shutdown();
        tasks.spawn(
            tracing::info_span!("queue"),
            queue::run(state.clone(), token.clone()),
        );
        tasks.spawn(
            tracing::info_span!("repair"),
            repair::run(state.clone(), token.clone()),
        );
        tasks.unready_on_shutdown(state.ready.clone());
        if state.config.credentials.write_token.is_empty() {
            tracing::warn!(
                "insecure = true and no credentials.write_token: anyone who reaches this origin \
                 can change what the fleet runs"
            );
            state.ready.warn(
                "insecure: no write token, anyone who reaches this origin can write to the cluster",
            );
        }
        state.ready.set(state.cluster.me().is_some());
        tracing::info!(
            %addr,
            member = state.cluster.me().as_deref().unwrap_or("(finding itself)"),
            %peer_id,
            peer_port,
            tls = state.tls.is_some(),
            replicas = state.config.replicas,
            backend = state.backend.name(),
            "origin started"
        );
        Ok(Origin {
            state,
            running,
            addr,
            _lock: lock,
        })
    }

    /// Waits until shutdown has been asked for and everything has stopped: the HTTP API
    /// drains first (for up to the grace period), then the background tasks stop.
    pub async fn wait(mut self) -> Result<(), Error> {
        let served = self.running.drained().await;
        self.running.close().await;
        tracing::info!(addr = %self.addr, "origin stopped");
        Ok(served?)
    }

    /// Asks the origin to stop and waits until it has.
    pub async fn stop(self) -> Result<(), Error> {
        self.running.stop();
        self.wait().await
    }

    /// The address the HTTP API is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// This origin's URL as the member list has it, once known.
    pub fn member(&self) -> Option<String> {
        self.state.cluster.me()
    }

    pub fn peer_id(&self) -> PeerId {
        self.state.cluster.peer_id()
    }

    pub fn peer_port(&self) -> u16 {
        self.state.peer_port
    }

    /// The members this origin sees alive, itself included.
    pub fn live_members(&self) -> Vec<String> {
        self.state.cluster.live()
    }

    /// The blob store (what a seeder reads from).
    pub fn store(&self) -> &BlobStore {
        &self.state.store
    }

    pub fn seed_source(&self) -> SeedSource {
        SeedSource::new(self.state.clone())
    }

    /// Runs a repair pass now.
    pub async fn repair(&self) -> Result<RepairReport, Error> {
        repair::pass(&self.state).await
    }

    /// Queued tasks: (replication, write-back).
    pub async fn queue_depth(&self) -> Result<(u64, u64), Error> {
        self.state.db.queue_depth().await
    }

    /// Runs one round of health checks now.
    pub async fn check_members(&self) {
        self.state.cluster.check_all().await;
    }
}
