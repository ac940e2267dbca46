//! The HTTP API (`tracker/API.md`), one module per resource.

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use shoal_core::{ApiError, ErrorCode};

use crate::AppState;

pub mod announce;
pub mod metainfo;

/// The tracker's own endpoints; [`crate::Tracker::router`] adds `/health`, `/ready` and
/// `/metrics`.
pub fn api(state: AppState) -> Router<AppState> {
    Router::new()
        .merge(announce::router())
        .merge(metainfo::router())
        .route_layer(middleware::from_fn_with_state(state, authorize))
        .fallback(|| async {
            ApiError::new(
                ErrorCode::Unsupported,
                "no such endpoint; see tracker/API.md",
            )
            .with_status(http::StatusCode::NOT_FOUND)
        })
}

/// Every announce and metainfo request carries the cluster's read token (or its write
/// token) as `Authorization: Bearer`; checked before the body is read. A tracker started
/// with `insecure = true` and no token lets everyone through.
async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let c = &s.credentials;
    let open = c.read_token.is_empty() && c.write_token.is_empty();
    if open || c.accepts(shoal_core::auth::bearer(req.headers())) {
        return next.run(req).await;
    }
    s.metrics.unauthorized.inc();
    ApiError::new(
        ErrorCode::Unauthorized,
        "the cluster's read token is required (Authorization: Bearer)",
    )
    .with_header(
        http::header::WWW_AUTHENTICATE,
        "Bearer realm=\"shoal-tracker\"",
    )
    .into_response()
}

/// The fallback of each route's method router: axum's own 405 has no body.
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::Unsupported,
        "method not allowed here; see tracker/API.md",
    )
}
