//! The read-only registry API (OCI distribution spec, pull side), one module per resource.
//!
//! Repository names contain `/`, so `/v2/…` is one wildcard route whose path
//! [`shoal_core::distribution::V2Path`] reads from its end: `<name>/manifests/<reference>`,
//! `<name>/blobs/<digest>`, `<name>/tags/list`.
//! Only `GET` and `HEAD` are served; any write answers `405 UNSUPPORTED`.

mod blobs;
mod manifests;
mod tags;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::{Method, StatusCode};
use shoal_core::distribution::{API_VERSION, API_VERSION_VALUE, Resource, V2Path};
use shoal_core::telemetry::{Readiness, ops_router};
use shoal_core::{ApiError, ErrorCode};
use tracing::Instrument;

use crate::metrics::RouteClass;
use crate::state::AppState;

/// The class of a request path, for metrics.
fn class(path: Option<V2Path>) -> RouteClass {
    match path.map(|p| (p.name, p.resource)) {
        Some((_, Resource::Base)) => RouteClass::Base,
        Some((Some(_), Resource::Manifest(_))) => RouteClass::Manifest,
        Some((Some(_), Resource::Blob(_))) => RouteClass::Blob,
        Some((Some(_), Resource::Tags)) => RouteClass::Tags,
        _ => RouteClass::Other,
    }
}

/// The registry API and `/health`, `/ready`, `/metrics`.
pub fn router(state: AppState, registry: prometheus::Registry, ready: Readiness) -> Router {
    let api = Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state);
    api.merge(ops_router(registry, ready))
}

fn is_read(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

/// Gives every API request a span, and counts it by route class and status class.
async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let class = if is_read(req.method()) {
        class(V2Path::parse(req.uri().path()))
    } else {
        RouteClass::Write
    };
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        route = class.label()
    );
    let res = next.run(req).instrument(span.clone()).await;
    st.metrics.request(class, res.status());
    span.in_scope(|| tracing::debug!(status = res.status().as_u16(), "answered"));
    res
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::Unsupported, "no such endpoint").with_status(StatusCode::NOT_FOUND)
}

async fn dispatch(State(st): State<AppState>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    if !is_read(&parts.method) {
        return ApiError::new(
            ErrorCode::Unsupported,
            "this registry is read-only: push to the proxy",
        )
        .with_header(http::header::ALLOW, "GET, HEAD")
        .into_response();
    }
    if let Some(ns) = namespace(parts.uri.query()) {
        // containerd names the registry it mirrors; content is addressed the same anywhere.
        tracing::debug!(%ns, "mirror request");
    }
    let head = parts.method == Method::HEAD;
    let path = parts.uri.path();
    // A read-only registry serves the base, manifests, blobs and tag lists, each of a named
    // repository; uploads, referrers and the catalog are not here.
    let res = match V2Path::parse(path).map(|p| (p.name, p.resource)) {
        Some((_, Resource::Base)) => Ok(base()),
        Some((Some(name), Resource::Manifest(reference))) => {
            manifests::get(&st, name, reference, head).await
        }
        Some((Some(name), Resource::Blob(digest))) => {
            let range = parts
                .headers
                .get(http::header::RANGE)
                .and_then(|v| v.to_str().ok());
            blobs::get(&st, name, digest, range, head).await
        }
        Some((Some(name), Resource::Tags)) => tags::list(&st, name, parts.uri.query()).await,
        _ => Err(not_found().await),
    };
    let mut res = res.unwrap_or_else(IntoResponse::into_response);
    res.headers_mut().insert(API_VERSION, API_VERSION_VALUE);
    res
}

/// `GET /v2/`: the API version check every client starts with.
fn base() -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

/// The `ns` query parameter containerd adds when it uses the agent as a mirror.
fn namespace(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("ns="))
        .filter(|ns| !ns.is_empty())
}

#[cfg(test)]
mod tests;
