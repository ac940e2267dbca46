//! `GET /v2/<name>/referrers/<digest>`: the manifests in a repository that name the digest
//! as their `subject`, as an OCI image index, optionally only those of one `artifactType`.
//!
//! An unknown subject has no referrers: the answer is an empty index, not 404.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use shoal_core::error::ApiError;
use shoal_core::reference::RepoName;

use super::blobs::parse_digest;
use super::{OCI_FILTERS_APPLIED, Params, origin_error};
use crate::manifest::OCI_INDEX;
use crate::state::AppState;

pub async fn get(
    s: &AppState,
    name: &RepoName,
    digest: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    let subject = parse_digest(digest)?;
    let mut referrers = s
        .origins
        .list_referrers(name, &subject)
        .await
        .map_err(origin_error)?;
    let filter = params.get("artifactType").filter(|t| !t.is_empty());
    if let Some(t) = filter {
        referrers.retain(|r| r.artifact_type.as_deref() == Some(t));
    }
    // A stable order, whatever order the origins keep them in.
    referrers.sort_by_key(|r| r.digest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": referrers,
    });
    let body = serde_json::to_vec(&index).map_err(ApiError::internal)?;
    s.metrics.bytes_out.inc_by(body.len() as u64);
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if filter.is_some() {
        res.headers_mut().insert(
            OCI_FILTERS_APPLIED,
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(res)
}
