//! The HTTP API (`tracker/API.md`), one module per resource.

use axum::Router;
use shoal_core::{ApiError, ErrorCode};

use crate::AppState;

pub mod announce;
pub mod metainfo;

/// The tracker's own endpoints; [`crate::Tracker::router`] adds `/health`, `/ready` and
/// `/metrics`.
pub fn api() -> Router<AppState> {
    Router::new()
        .merge(announce::router())
        .merge(metainfo::router())
        .fallback(|| async {
            ApiError::new(
                ErrorCode::Unsupported,
                "no such endpoint; see tracker/API.md",
            )
            .with_status(http::StatusCode::NOT_FOUND)
        })
}

/// The fallback of each route's method router: axum's own 405 has no body.
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::Unsupported,
        "method not allowed here; see tracker/API.md",
    )
}
