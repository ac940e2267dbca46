//! The HTTP API (`origin/API.md`), one module per resource, and what they share: query
//! parameters, authorization, relaying another origin's answer, and request metrics.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::header::WWW_AUTHENTICATE;
use http::request::Parts;
use http::{HeaderMap, HeaderName, Method, StatusCode};
use serde::Deserialize;
use shoal_core::auth::bearer;
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::telemetry::ops_router;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::remote::FORWARDED;
use crate::state::{AppState, Shared};

pub mod blobs;
pub mod info;
pub mod referrers;
pub mod tags;

/// The whole HTTP surface of one origin.
pub fn router(st: AppState, registry: prometheus::Registry) -> Router {
    Router::new()
        .merge(blobs::routes())
        .merge(tags::routes())
        .merge(referrers::routes())
        .merge(info::routes())
        .fallback(fallback)
        .with_state(st.clone())
        .merge(ops_router(registry, st.ready.clone()))
        .layer(axum::middleware::from_fn_with_state(st.clone(), authorize))
        .layer(axum::middleware::from_fn_with_state(st, observe))
}

/// What a request needs to present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Read,
    Write,
}

/// Every method but GET and HEAD changes something (blob, tag and referrer PUTs, every
/// DELETE, the internal copies); every other request under `/v1/` reads. `/v1/info` and the
/// probes stay open: `/v1/info` names only what the peer port tells whoever connects to it
/// (the peer id, in its hello) and the URL the caller already used, and health checks
/// between origins must not turn a token mismatch into an origin that looks down.
fn need(method: &Method, path: &str) -> Need {
    if !matches!(*method, Method::GET | Method::HEAD) {
        Need::Write
    } else if path.starts_with("/v1/") && path != "/v1/info" {
        Need::Read
    } else {
        Need::Nothing
    }
}

fn unauthorized(message: &'static str) -> Response {
    ApiError::new(ErrorCode::Unauthorized, message)
        .with_header(WWW_AUTHENTICATE, "Bearer realm=\"shoal-origin\"")
        .into_response()
}

/// Decides before anything else looks at the request: a request refused here has had its
/// path and body neither parsed nor read, and changed nothing.
async fn authorize(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let creds = &st.config.credentials;
    let given = bearer(req.headers()).unwrap_or("");
    match need(req.method(), req.uri().path()) {
        Need::Nothing => {}
        // Without a write token the origin only started because its config says
        // `insecure = true`.
        Need::Write if creds.write_token.is_empty() => {}
        Need::Write => {
            if !creds.write_token.matches(given) {
                return unauthorized("this request changes the cluster: it needs the write token");
            }
        }
        Need::Read if creds.read_token.is_empty() => {}
        Need::Read => {
            if !(creds.read_token.matches(given) || creds.write_token.matches(given)) {
                return unauthorized("reads from this origin need the read token");
            }
        }
    }
    next.run(req).await
}

async fn fallback() -> ApiError {
    ApiError::new(ErrorCode::Unsupported, "no such endpoint").with_status(StatusCode::NOT_FOUND)
}

/// A bounded name for the kind of request, for metrics.
fn route_class(path: &str) -> &'static str {
    if path.starts_with("/v1/blobs") {
        if path.ends_with("/metainfo") {
            "metainfo"
        } else {
            "blobs"
        }
    } else if path.starts_with("/v1/tags") || path.starts_with("/v1/repositories") {
        "tags"
    } else if path.starts_with("/v1/referrers") {
        "referrers"
    } else if path == "/v1/info" {
        "info"
    } else if matches!(path, "/health" | "/ready" | "/metrics") {
        "ops"
    } else {
        "other"
    }
}

/// Counts each request by route and status class, inside a span naming it.
async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let class = route_class(req.uri().path());
    let span = tracing::debug_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        forwarded = req.headers().contains_key(FORWARDED),
    );
    let res = next.run(req).instrument(span).await;
    st.metrics.request(class, res.status());
    res
}

/// The query parameters the API knows.
#[derive(Debug, Default, Clone)]
pub struct Params {
    /// At most this many entries.
    pub n: Option<usize>,
    /// Entries sorting after this one.
    pub last: Option<String>,
    /// A write from another origin: store here, do not forward or replicate.
    pub internal: bool,
    /// A read of this origin's own state only.
    pub local: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        struct Raw {
            n: Option<String>,
            last: Option<String>,
            internal: Option<String>,
            local: Option<String>,
        }
        let Query(raw) = Query::<Raw>::try_from_uri(&parts.uri)
            .map_err(|e| bad_request(format!("bad query string: {e}")))?;
        let n = raw
            .n
            .map(|n| n.parse::<usize>())
            .transpose()
            .map_err(|_| bad_request("n must be a non-negative integer"))?;
        let flag = |v: Option<String>| v.is_some_and(|v| v != "0" && v != "false");
        Ok(Params {
            n,
            last: raw.last.filter(|l| !l.is_empty()),
            internal: flag(raw.internal),
            local: flag(raw.local),
        })
    }
}

impl Params {
    /// The page size: `n`, at most `max_page`.
    pub fn page(&self, st: &Shared) -> usize {
        self.n.unwrap_or(st.config.max_page).min(st.config.max_page)
    }

    /// The query to pass on to other origins for the same page.
    pub fn page_query(&self, st: &Shared) -> Vec<(&'static str, String)> {
        let mut q = vec![("n", self.page(st).to_string())];
        if let Some(l) = &self.last {
            q.push(("last", l.clone()));
        }
        q
    }
}

pub fn bad_request(message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, message).with_status(StatusCode::BAD_REQUEST)
}

pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

const HOP_BY_HOP: [HeaderName; 6] = [
    http::header::CONNECTION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::PROXY_AUTHENTICATE,
];

/// Passes another origin's answer on to our client as it streams in. With `metrics`, the
/// body's bytes count as sent blob bytes.
pub fn relay(res: reqwest::Response, metrics: Option<&Metrics>) -> Response {
    let mut builder = Response::builder().status(res.status());
    for (name, value) in res.headers() {
        if !HOP_BY_HOP.contains(name) && name.as_str() != "keep-alive" {
            builder = builder.header(name, value);
        }
    }
    let metrics = metrics.cloned();
    let stream = res.bytes_stream().inspect(move |c| {
        if let (Some(m), Ok(c)) = (&metrics, c) {
            m.sent_http(c.len() as u64);
        }
    });
    builder
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| ApiError::internal(e).into_response())
}

/// What asking the other owners of a key found.
pub enum Asked {
    /// One of them answered (a success or a client error other than 404).
    Answer(Response),
    /// Those that answered do not have it.
    NotFound,
    /// None of them could answer.
    Unreachable,
}

/// Forwards a read to each other live owner of `key` in turn until one has what was asked.
pub async fn ask_owners(
    st: &Shared,
    key: &[u8],
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    count_bytes: bool,
) -> Asked {
    let mut any_answer = false;
    let me = st.cluster.me();
    for owner in st.cluster.owners(key) {
        if Some(&owner) == me.as_ref() {
            continue;
        }
        match st
            .remote
            .forward(&owner, method.clone(), path_and_query, headers)
            .await
        {
            Ok(res) if res.status() == StatusCode::NOT_FOUND => any_answer = true,
            Ok(res) if !res.status().is_server_error() => {
                return Asked::Answer(relay(res, count_bytes.then_some(&st.metrics)));
            }
            Ok(res) => {
                tracing::warn!(owner, status = %res.status(), "owner failed a forwarded read");
            }
            Err(e) => tracing::warn!(error = %e, "owner unreachable for a forwarded read"),
        }
    }
    if any_answer {
        Asked::NotFound
    } else {
        Asked::Unreachable
    }
}
