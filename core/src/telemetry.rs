//! Process plumbing every part shares: logging, `/health` `/ready` `/metrics`, serving an
//! axum router until shutdown (`server`: [`serve`] under the bounds of [`ServerConfig`]), and
//! turning SIGTERM/SIGINT into a cancellation.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Sets up `tracing` for the process. `RUST_LOG` overrides `filter` (such as `info` or
/// `shoal_agent=debug,info`). Calling it twice is harmless.
pub fn init_tracing(format: LogFormat, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A latch that `/ready` reports: false until the part can serve, and false again while it
/// drains on shutdown.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>, Arc<std::sync::OnceLock<String>>);

impl Readiness {
    /// A line that `/ready`'s body carries from now on, ready or not: what an operator must
    /// know about how the part serves (such as `insecure = true`). The first one stays.
    pub fn warn(&self, warning: impl Into<String>) {
        let _ = self.1.set(warning.into());
    }

    pub fn warning(&self) -> Option<&str> {
        self.1.get().map(String::as_str)
    }

    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct OpsState {
    registry: prometheus::Registry,
    ready: Readiness,
}

/// `/health` (200 while the process lives), `/ready` (200 once it can serve, else 503) and
/// `/metrics` (Prometheus text format of `registry`).
pub fn ops_router<S: Clone + Send + Sync + 'static>(
    registry: prometheus::Registry,
    ready: Readiness,
) -> Router<S> {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(OpsState { registry, ready })
}

async fn ready_handler(State(s): State<OpsState>) -> Response {
    let (status, state) = if s.ready.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    match s.ready.warning() {
        Some(w) => (status, format!("{state}\nwarning: {w}\n")).into_response(),
        None => (status, format!("{state}\n")).into_response(),
    }
}

async fn metrics_handler(State(s): State<OpsState>) -> Response {
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut buf = Vec::new();
    match encoder.encode(&s.registry.gather(), &mut buf) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                encoder.format_type().to_owned(),
            )],
            buf,
        )
            .into_response(),
        Err(e) => crate::error::ApiError::internal(e).into_response(),
    }
}

pub mod scrape;
mod server;

pub use server::{ServerConfig, serve};

/// Cancels `token` on the first SIGTERM or SIGINT. The task ends when `token` is cancelled,
/// by a signal or otherwise.
pub fn cancel_on_signal(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = term => tracing::info!("SIGTERM: shutting down"),
            r = tokio::signal::ctrl_c() => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "cannot listen for SIGINT");
                    std::future::pending::<()>().await;
                }
                tracing::info!("SIGINT: shutting down");
            }
            () = token.cancelled() => return,
        }
        token.cancel();
    })
}

/// Registers a metric on `registry`, or says which name clashed.
pub fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &prometheus::Registry,
    metric: M,
) -> Result<M, prometheus::Error> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(app: &Router, path: &str) -> (StatusCode, String) {
        let res = app
            .clone()
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_ready_metrics() {
        let registry = prometheus::Registry::new();
        let c = register(
            &registry,
            prometheus::IntCounter::new("shoal_test_things_total", "Things.").unwrap(),
        )
        .unwrap();
        c.inc_by(7);
        let ready = Readiness::default();
        let app: Router = ops_router(registry, ready.clone());
        assert_eq!(get(&app, "/health").await.0, StatusCode::OK);
        assert_eq!(get(&app, "/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
        ready.set(true);
        assert_eq!(get(&app, "/ready").await.0, StatusCode::OK);
        let (status, body) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("shoal_test_things_total 7"), "{body}");
    }
}
