//! `GET`/`HEAD /v2/<name>/manifests/<tag|digest>`: the stored bytes, unchanged.

use axum::body::Body;
use axum::response::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use shoal_core::ApiError;
use shoal_core::distribution::DOCKER_CONTENT_DIGEST;
use shoal_core::reference::{Reference, RepoName};

use crate::manifests;
use crate::state::AppState;

pub async fn get(
    st: &AppState,
    name: &str,
    reference: &str,
    head: bool,
) -> Result<Response, ApiError> {
    let name: RepoName = name.parse()?;
    let reference: Reference = reference.parse()?;
    let m = manifests::get(st, &name, &reference).await?;
    let length = m.bytes.len();
    let body = if head {
        Body::empty()
    } else {
        st.metrics.client_bytes.inc_by(length as u64);
        Body::from(m.bytes)
    };
    Response::builder()
        .header(CONTENT_TYPE, m.media_type)
        .header(CONTENT_LENGTH, length)
        .header(DOCKER_CONTENT_DIGEST, m.digest.to_string())
        .header(ETAG, format!("\"{}\"", m.digest))
        .body(body)
        .map_err(ApiError::internal)
}
