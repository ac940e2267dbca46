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

use shoal_core::telemetry::{self, Readiness};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::ProxyError;
pub use state::AppState;

/// Serves the registry API on `listener` until `shutdown` is cancelled. Metrics go on
/// `registry`, which `/metrics` on the same listener serves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    let grace = config.shutdown_grace;
    let limits = config.server.clone();
    let state = AppState::new(config, &registry, shutdown.clone()).await?;
    let ready = Readiness::default();
    let sessions = state.sessions.clone();
    let app = routes::app(state, registry, ready.clone());
    let addr = listener.local_addr().map_err(ProxyError::Serve)?;
    tracing::info!(%addr, "proxy serving");
    ready.set(true);
    let served = telemetry::serve(listener, app, shutdown, grace, limits).await;
    ready.set(false);
    // Uploads cannot outlive the process that holds their sessions.
    sessions.close_all().await;
    served.map_err(ProxyError::Serve)
}
