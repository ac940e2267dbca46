//! The proxy: the write side of Shoal's registry. It speaks the whole OCI distribution API,
//! pushes and pulls, and keeps nothing durable: blobs, manifests (stored as blobs, bytes as
//! sent), tags and the referrers index live on the origins.
//!
//! - [`config`]: the configuration and its checks.
//! - [`path`]: which resource a `/v2/…` path names (repository names contain `/`).
//! - [`routes`]: the HTTP handlers, one module per resource, behind one dispatcher that
//!   authenticates and counts every request.
//! - [`sessions`]: chunked upload sessions spooled on local disk until their final `PUT`.
//! - [`stream`]: digest checking and stall detection on bytes on their way to an origin.
//! - [`manifest`]: what a pushed manifest must be, and what it references.
//! - [`auth`]: htpasswd (bcrypt) basic authentication.
//! - [`metrics`]: the `shoal_proxy_…` families.
//! - [`state`], [`error`]: the shared state, and why the proxy could not start.
//! - `testing` (feature `testing`, never in a shipped binary): a proxy in front of origins,
//!   in process, for tests of any crate.
//!
//! [`Proxy::start`] serves the registry API on the listener it is given; [`Proxy::wait`]
//! returns once shutdown is over; [`run`] is both (the shape of every part:
//! `shoal_core::lifecycle`).
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod error;
pub mod manifest;
pub mod metrics;
pub mod path;
pub mod routes;
pub mod sessions;
pub mod state;
pub mod stream;
#[cfg(feature = "testing")]
pub mod testing;

use std::net::SocketAddr;

use shoal_core::lifecycle::{BindError, bind};
use shoal_core::tasks::Running;
use shoal_core::telemetry::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::ProxyError;
pub use state::AppState;

/// A running proxy. Dropping it stops it.
#[derive(Debug)]
pub struct Proxy {
    state: AppState,
    running: Running,
    addr: SocketAddr,
}

impl Proxy {
    /// Serves the registry API on `listener` until `shutdown` is cancelled. Metrics go on
    /// `registry`, which `/metrics` on the same listener serves.
    pub async fn start(
        config: Config,
        listener: TcpListener,
        registry: prometheus::Registry,
        shutdown: CancellationToken,
    ) -> Result<Self, ProxyError> {
        let grace = config.shutdown_grace;
        let limits = config.server.clone();
        let mut running = Running::new(&shutdown);
        let state = AppState::new(config, &registry, running.tasks().shutdown().clone()).await?;
        // A certificate of its own: HTTPS for clients that reach the proxy directly.
        let https = match &state.tls {
            Some(t) if state.config.tls.cert.is_some() => Some(t.http_server()?),
            _ => None,
        };
        let public = if https.is_some() { "https" } else { "http" };
        let ready = Readiness::default();
        let app = routes::app(state.clone(), registry, ready.clone());
        let addr = listener.local_addr().map_err(ProxyError::Serve)?;
        running.serve(
            tracing::info_span!("http", %addr),
            listener,
            app,
            grace,
            limits,
            https,
        );
        running.tasks().unready_on_shutdown(ready.clone());
        tracing::info!(%addr, public, origins_tls = state.tls.is_some(), "proxy serving");
        ready.set(true);
        Ok(Proxy {
            state,
            running,
            addr,
        })
    }

    /// Waits until shutdown has been asked for and everything has stopped: requests in
    /// flight finish for up to the grace period, then every upload session closes.
    pub async fn wait(mut self) -> Result<(), ProxyError> {
        let served = self.running.drained().await;
        // Uploads cannot outlive the process that holds their sessions.
        self.state.sessions.close_all().await;
        self.running.close().await;
        self.state.tasks.close().await;
        tracing::info!(addr = %self.addr, "proxy stopped");
        served.map_err(ProxyError::Serve)
    }

    /// Asks the proxy to stop and waits until it has.
    pub async fn stop(self) -> Result<(), ProxyError> {
        self.running.stop();
        self.wait().await
    }

    /// The address the registry API is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts a proxy and waits until `shutdown` is cancelled and it has stopped.
pub async fn run(
    config: Config,
    listener: TcpListener,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    Proxy::start(config, listener, registry, shutdown)
        .await?
        .wait()
        .await
}

// The shape every part shares (`shoal_core::lifecycle::Part`), for the `main` they share.
shoal_core::part!(
    Proxy: Config, TcpListener, ProxyError;
    "shoal-proxy", config::ENV_PREFIX, bind_api
);

/// Binds `listen`.
async fn bind_api(config: &Config) -> Result<TcpListener, BindError> {
    bind("the registry API", config.listen).await
}
