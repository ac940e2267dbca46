//! The read-only registry API (OCI distribution spec, pull side), one module per resource.
//!
//! Repository names contain `/`, so `/v2/…` is one wildcard route whose path is parsed from
//! its end: `<name>/manifests/<reference>`, `<name>/blobs/<digest>`, `<name>/tags/list`.
//! Only `GET` and `HEAD` are served; any write answers `405 UNSUPPORTED`.

mod blobs;
mod manifests;
mod tags;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use shoal_core::telemetry::{Readiness, ops_router};
use shoal_core::{ApiError, ErrorCode};
use tracing::Instrument;

use crate::metrics::RouteClass;
use crate::state::AppState;

pub(crate) const DOCKER_CONTENT_DIGEST: HeaderName =
    HeaderName::from_static("docker-content-digest");
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// What a `/v2/…` path asks for, before its parts are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Path<'a> {
    Base,
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    Tags { name: &'a str },
    Unknown,
}

impl<'a> V2Path<'a> {
    /// Parses a request path. The last segments say what is asked for, so a repository
    /// named `a/blobs/b` is still a name.
    pub fn parse(path: &'a str) -> Self {
        let Some(rest) = path.strip_prefix("/v2") else {
            return V2Path::Unknown;
        };
        let rest = match rest {
            "" | "/" => return V2Path::Base,
            r => match r.strip_prefix('/') {
                Some(r) => r,
                None => return V2Path::Unknown,
            },
        };
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return V2Path::Tags { name };
        }
        let Some((head, last)) = rest.rsplit_once('/') else {
            return V2Path::Unknown;
        };
        let Some((name, kind)) = head.rsplit_once('/') else {
            return V2Path::Unknown;
        };
        match kind {
            "manifests" => V2Path::Manifest {
                name,
                reference: last,
            },
            "blobs" => V2Path::Blob { name, digest: last },
            _ => V2Path::Unknown,
        }
    }

    fn class(&self) -> RouteClass {
        match self {
            V2Path::Base => RouteClass::Base,
            V2Path::Manifest { .. } => RouteClass::Manifest,
            V2Path::Blob { .. } => RouteClass::Blob,
            V2Path::Tags { .. } => RouteClass::Tags,
            V2Path::Unknown => RouteClass::Other,
        }
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
        V2Path::parse(req.uri().path()).class()
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
    let res = match V2Path::parse(path) {
        V2Path::Base => Ok(base()),
        V2Path::Manifest { name, reference } => manifests::get(&st, name, reference, head).await,
        V2Path::Blob { name, digest } => {
            let range = parts
                .headers
                .get(http::header::RANGE)
                .and_then(|v| v.to_str().ok());
            blobs::get(&st, name, digest, range, head).await
        }
        V2Path::Tags { name } => tags::list(&st, name, parts.uri.query()).await,
        V2Path::Unknown => Err(not_found().await),
    };
    let mut res = res.unwrap_or_else(IntoResponse::into_response);
    res.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
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
