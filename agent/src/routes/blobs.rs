//! `GET`/`HEAD /v2/<name>/blobs/<digest>`, with `Range`.

use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG};
use shoal_core::distribution::DOCKER_CONTENT_DIGEST;
use shoal_core::reference::RepoName;
use shoal_core::{ApiError, Digest};

use crate::blobs;
use crate::state::AppState;

pub async fn get(
    st: &AppState,
    name: &str,
    digest: &str,
    range: Option<&str>,
    head: bool,
) -> Result<Response, ApiError> {
    let _name: RepoName = name.parse()?;
    let digest: Digest = digest.parse()?;
    let builder = Response::builder()
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(ACCEPT_RANGES, "bytes")
        .header(DOCKER_CONTENT_DIGEST, digest.to_string())
        .header(ETAG, format!("\"{digest}\""));
    if head {
        // Answered from what is known; a HEAD never starts a download.
        let length = st.blob_length(digest).await?;
        return builder
            .status(StatusCode::OK)
            .header(CONTENT_LENGTH, length)
            .body(Body::empty())
            .map_err(ApiError::internal);
    }
    let read = blobs::read(st, digest, range).await?;
    let mut builder = builder.header(CONTENT_LENGTH, read.span.end - read.span.start);
    builder = if read.partial {
        builder.status(StatusCode::PARTIAL_CONTENT).header(
            CONTENT_RANGE,
            shoal_core::range::content_range(&read.span, read.length),
        )
    } else {
        builder.status(StatusCode::OK)
    };
    builder
        .body(Body::from_stream(read.body))
        .map_err(ApiError::internal)
}
