//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`: blobs stream from the origins, ranges
//! included.
//!
//! Blobs are content-addressed across the whole cluster, so a blob pushed through any
//! repository can be read through every one.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use shoal_core::digest::Digest;
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::range::{self, RangeRequest};
use shoal_core::reference::RepoName;

use super::{DOCKER_CONTENT_DIGEST, empty, origin_error, unsupported};
use crate::state::AppState;

pub fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse()
        .map_err(|e| ApiError::new(ErrorCode::DigestInvalid, format!("{s:?}: {e}")))
}

fn blob_unknown(digest: &Digest) -> ApiError {
    ApiError::new(ErrorCode::BlobUnknown, format!("blob {digest} is unknown"))
}

pub async fn get(
    s: &AppState,
    _name: &RepoName,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let digest = parse_digest(digest)?;
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    if head {
        let length = s
            .origins
            .stat_blob(&digest)
            .await
            .map_err(origin_error)?
            .ok_or_else(|| blob_unknown(&digest))?;
        return Ok(empty_with_length(StatusCode::OK, &digest, length));
    }
    // The length is needed to read a range only; a whole blob takes one request.
    let wanted = match range_header {
        None => None,
        Some(h) => {
            let length = s
                .origins
                .stat_blob(&digest)
                .await
                .map_err(origin_error)?
                .ok_or_else(|| blob_unknown(&digest))?;
            match range::parse(Some(h), length)? {
                RangeRequest::Full => None,
                RangeRequest::Partial(r) => Some(r),
            }
        }
    };
    let body = s
        .origins
        .get_blob(&digest, wanted.clone())
        .await
        .map_err(|e| {
            if e.is_not_found() {
                blob_unknown(&digest)
            } else {
                origin_error(e)
            }
        })?;
    let counter = s.metrics.bytes_out.clone();
    let stream = body
        .stream
        .map(move |r| r.inspect(|b| counter.inc_by(b.len() as u64)));
    let mut res = Body::from_stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.length));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert(DOCKER_CONTENT_DIGEST, v);
    }
    if let Some(r) = wanted {
        if let Ok(v) = HeaderValue::from_str(&range::content_range(&r, body.total)) {
            res.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(res)
}

/// The head of a blob answer: length, digest, no body.
fn empty_with_length(status: StatusCode, digest: &Digest, length: u64) -> Response {
    let mut res = empty(
        status,
        vec![
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
            (header::ACCEPT_RANGES, "bytes".into()),
            (header::CONTENT_TYPE, "application/octet-stream".into()),
        ],
    );
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    res
}

pub async fn delete(s: &AppState, _name: &RepoName, digest: &str) -> Result<Response, ApiError> {
    if !s.config.allow_delete {
        return Err(unsupported_delete());
    }
    let digest = parse_digest(digest)?;
    s.origins.delete_blob(&digest).await.map_err(|e| {
        if e.is_not_found() {
            blob_unknown(&digest)
        } else {
            origin_error(e)
        }
    })?;
    tracing::info!(%digest, "blob deleted");
    Ok(empty(
        StatusCode::ACCEPTED,
        vec![(DOCKER_CONTENT_DIGEST, digest.to_string())],
    ))
}

pub fn unsupported_delete() -> ApiError {
    let mut e = unsupported();
    e.message = "deletes are turned off on this registry".into();
    e
}
