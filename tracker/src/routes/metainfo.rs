//! `GET /v1/metainfo/<digest>`: the blob's metainfo as the origins signed it.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_core::{ApiError, Digest};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/metainfo/{digest}",
        get(metainfo).fallback(super::method_not_allowed),
    )
}

async fn metainfo(
    State(s): State<AppState>,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    let digest: Digest = digest.parse()?;
    let bytes = s.metainfo.get(digest).await?;
    Ok((
        [(http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}
