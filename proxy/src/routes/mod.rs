//! The registry API over HTTP.
//!
//! Repository names contain `/`, so instead of a route per resource there is one wildcard
//! under `/v2/`, read by [`crate::path::parse`], and a dispatcher that authenticates and then
//! calls the resource's handler: [`blobs`], [`uploads`], [`manifests`], [`tags`] (tags and
//! the catalog) and [`referrers`]. A middleware around everything counts and times each
//! request and adds the `Docker-Distribution-API-Version` header clients look for.

pub mod blobs;
pub mod manifests;
pub mod referrers;
pub mod tags;
pub mod uploads;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::StreamExt;
use shoal_core::distribution::{API_VERSION, API_VERSION_VALUE};
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::origin_client::OriginError;
use shoal_core::telemetry::{Readiness, ops_router};
use tracing::Instrument;

use crate::auth::Access;
use crate::path::{self, Route};
use crate::state::AppState;
use crate::stream::{BoxError, ByteStream, Stall};

pub use shoal_core::distribution::{
    DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, OCI_FILTERS_APPLIED, OCI_SUBJECT,
};

/// The whole proxy: the registry API, `/health`, `/ready` and `/metrics`.
pub fn app(state: AppState, registry: prometheus::Registry, ready: Readiness) -> Router {
    let api = Router::new()
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .route("/v2/{*path}", any(dispatch))
        .fallback(|| async {
            ApiError::new(ErrorCode::Unsupported, "no such endpoint")
                .with_status(StatusCode::NOT_FOUND)
        })
        .with_state(state.clone());
    Router::new()
        .merge(ops_router(registry, ready))
        .merge(api)
        .layer(middleware::from_fn_with_state(state, observe))
}

/// Counts, times and logs every request, and marks every answer as registry API v2.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let class = path::classify(req.uri().path());
    let method = req.method().clone();
    let span = tracing::info_span!("request", %method, path = %req.uri().path());
    let started = Instant::now();
    let mut res = next.run(req).instrument(span).await;
    res.headers_mut().insert(API_VERSION, API_VERSION_VALUE);
    let status = res.status();
    s.metrics
        .requests
        .with_label_values(&[
            class.as_str(),
            crate::metrics::method_label(&method),
            crate::metrics::status_class(status),
        ])
        .inc();
    s.metrics
        .request_seconds
        .with_label_values(&[class.as_str()])
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(route = class.as_str(), %method, status = status.as_u16(), "request");
    res
}

async fn base(State(s): State<AppState>, method: Method, headers: HeaderMap) -> Response {
    if !matches!(method, Method::GET | Method::HEAD) {
        return unsupported().into_response();
    }
    if let Some(auth) = &s.auth
        && let Err(e) = auth.check(&headers, Access::Ping).await
    {
        return e.into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

/// Query parameters, in order, repeated ones included (`?tag=a&tag=b`).
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

async fn dispatch(
    State(s): State<AppState>,
    method: Method,
    Path(rest): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let access = match method {
            Method::GET | Method::HEAD => Access::Pull,
            _ => Access::Push,
        };
        if let Some(auth) = &s.auth {
            auth.check(&headers, access).await?;
        }
        let route = match path::parse(&rest) {
            None => {
                return Err(ApiError::new(ErrorCode::Unsupported, "no such endpoint")
                    .with_status(StatusCode::NOT_FOUND));
            }
            Some(r) => r?,
        };
        let params = match query {
            Ok(Query(q)) => Params(q),
            Err(e) => {
                return Err(ApiError::new(
                    ErrorCode::Unsupported,
                    format!("unreadable query string: {e}"),
                )
                .with_status(StatusCode::BAD_REQUEST));
            }
        };
        let head = method == Method::HEAD;
        match (route, method) {
            (Route::Base, _) => Ok(StatusCode::OK.into_response()),
            (Route::Catalog, Method::GET) => tags::catalog(&s, &params).await,
            (Route::Tags(name), Method::GET) => tags::list(&s, &name, &params).await,
            (Route::Manifest(name, r), Method::GET | Method::HEAD) => {
                manifests::get(&s, &name, &r, head).await
            }
            (Route::Manifest(name, r), Method::PUT) => {
                manifests::put(&s, &name, &r, &params, &headers, body).await
            }
            (Route::Manifest(name, r), Method::DELETE) => manifests::delete(&s, &name, &r).await,
            (Route::Blob(name, d), Method::GET | Method::HEAD) => {
                blobs::get(&s, &name, &d, &headers, head).await
            }
            (Route::Blob(name, d), Method::DELETE) => blobs::delete(&s, &name, &d).await,
            (Route::UploadStart(name), Method::POST) => {
                uploads::start(&s, name, &params, &headers, body).await
            }
            (Route::Upload(name, id), Method::GET) => uploads::status(&s, &name, &id).await,
            (Route::Upload(name, id), Method::PATCH) => {
                uploads::patch(&s, &name, &id, &headers, body).await
            }
            (Route::Upload(name, id), Method::PUT) => {
                uploads::finish(&s, &name, &id, &params, &headers, body).await
            }
            (Route::Upload(name, id), Method::DELETE) => uploads::cancel(&s, &name, &id).await,
            (Route::Referrers(name, d), Method::GET) => {
                referrers::get(&s, &name, &d, &params).await
            }
            _ => Err(unsupported()),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub fn unsupported() -> ApiError {
    ApiError::new(
        ErrorCode::Unsupported,
        "the method is not supported on this resource",
    )
}

/// An origin's answer as our client's: client errors pass through (a blob that is unknown
/// is unknown to the client too), but an origin refusing the proxy itself is the proxy's
/// problem, not the client's.
pub fn origin_error(e: OriginError) -> ApiError {
    match &e {
        OriginError::Api { status, .. }
            if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN =>
        {
            ApiError::internal(format!(
                "an origin refused the proxy (check credentials.write_token): {e}"
            ))
        }
        OriginError::Api { status, .. }
            if matches!(
                *status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ) =>
        {
            ApiError::unavailable(e)
        }
        OriginError::Http(source) if source.is_connect() || source.is_timeout() => {
            ApiError::unavailable(e)
        }
        _ => ApiError::from(e),
    }
}

/// A response with no body and the given headers.
pub fn empty(status: StatusCode, headers: Vec<(HeaderName, String)>) -> Response {
    let mut res = (status, Body::empty()).into_response();
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            res.headers_mut().insert(name, v);
        }
    }
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    res
}

pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A client's request body as a stream: counted as it arrives, failed if it stalls.
pub fn body_stream(s: &AppState, body: Body) -> ByteStream {
    let counter = s.metrics.bytes_in.clone();
    let inner = body.into_data_stream().map(move |r| {
        r.inspect(|b| counter.inc_by(b.len() as u64))
            .map_err(|e| Box::new(e) as BoxError)
    });
    Box::pin(Stall::new(Box::pin(inner), s.config.uploads.body_timeout))
}

#[cfg(test)]
mod tests;
