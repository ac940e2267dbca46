//! `/v1/blobs`: upload, download (with ranges), metainfo, listing and deletion.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use http::{HeaderMap, Method, StatusCode};
use shoal_core::Digest;
use shoal_core::distribution::DOCKER_CONTENT_DIGEST;
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::origin_client::{BlobEntry, BlobList, blob_key};
use shoal_core::range::{self, RangeRequest};
use shoal_core::store::StoreError;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Asked, Params, ask_owners, is_forwarded, relay};
use crate::blobs;
use crate::db::Task;
use crate::state::{AppState, Shared};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/blobs", get(list))
        .route(
            "/v1/blobs/{digest}",
            get(download).head(head).put(upload).delete(remove),
        )
        .route("/v1/blobs/{digest}/metainfo", get(metainfo))
}

fn blob_unknown(digest: &Digest) -> ApiError {
    ApiError::new(ErrorCode::BlobUnknown, format!("blob {digest} is unknown"))
}

fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::SizeInvalid, "Content-Length is not a number")
                })
        })
        .transpose()
}

async fn upload(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let digest: Digest = digest.parse()?;
    let declared = declared_length(&headers)?;
    // The server refuses such a request before it gets here; this keeps the handler safe
    // behind any other server too, since the length sizes what `receive` prepares.
    let max = st.config.server.max_body.bytes();
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::new(
            ErrorCode::SizeInvalid,
            format!("a blob may be at most {max} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE));
    }
    let stream = body.into_data_stream();
    if params.internal {
        let info = blobs::receive(&st, digest, declared, stream, false, Vec::new()).await?;
        return Ok(created(info.digest, info.length));
    }
    let key = blob_key(&digest);
    if is_forwarded(&headers) || st.cluster.is_owner(&key) {
        let tasks = st.follow_up(
            &key,
            |target| Task::CopyBlob { digest, target },
            Some(Task::WriteBackBlob { digest }),
        );
        let info = blobs::receive(&st, digest, declared, stream, false, tasks).await?;
        tracing::info!(%digest, length = info.length, "blob uploaded");
        return Ok(created(info.digest, info.length));
    }
    let Some(owner) = st.cluster.owners(&key).into_iter().next() else {
        return Err(ApiError::unavailable("no live owner for the blob"));
    };
    // When the forward fails, this tells the client's broken body apart from a failing
    // owner: the first is the client's error, the second ours.
    let client_failed = Arc::new(AtomicBool::new(false));
    let flag = client_failed.clone();
    let stream = stream.inspect(move |c| {
        if c.is_err() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    match st
        .remote
        .forward_upload(&owner, &format!("/v1/blobs/{digest}"), declared, stream)
        .await
    {
        Ok(res) => Ok(relay(res, None)),
        Err(_) if client_failed.load(Ordering::Relaxed) => Err(ApiError::new(
            ErrorCode::BlobUploadInvalid,
            "the upload body ended before it was complete",
        )),
        Err(e) => Err(e.into()),
    }
}

fn created(digest: Digest, length: u64) -> Response {
    (
        StatusCode::CREATED,
        [
            (LOCATION, format!("/v1/blobs/{digest}")),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
        ],
        axum::Json(BlobEntry { digest, length }),
    )
        .into_response()
}

/// Answers from this origin's store, or `None` if the blob is not here.
async fn serve_local(
    st: &Shared,
    digest: Digest,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Option<Response>, ApiError> {
    let (mut file, length) = match st.store.open_blob(&digest).await {
        Ok(f) => f,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(crate::error::Error::from(e).into()),
    };
    let header = headers.get(RANGE).and_then(|v| v.to_str().ok());
    let (status, span) = match range::parse(header, length)? {
        RangeRequest::Full => (StatusCode::OK, 0..length),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
    };
    let mut res = Response::builder()
        .status(status)
        .header(CONTENT_LENGTH, span.end - span.start)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(ACCEPT_RANGES, "bytes")
        .header(DOCKER_CONTENT_DIGEST, digest.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        res = res.header(CONTENT_RANGE, range::content_range(&span, length));
    }
    let body = if with_body {
        file.seek(std::io::SeekFrom::Start(span.start))
            .await
            .map_err(ApiError::internal)?;
        let metrics = st.metrics.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(
            file.take(span.end - span.start),
            256 << 10,
        )
        .inspect(move |c| {
            if let Ok(c) = c {
                metrics.sent_http(c.len() as u64);
            }
        });
        Body::from_stream(stream)
    } else {
        Body::empty()
    };
    res.body(body).map(Some).map_err(ApiError::internal)
}

async fn download(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let digest: Digest = digest.parse()?;
    read(&st, digest, &params, &headers, true).await
}

async fn head(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let digest: Digest = digest.parse()?;
    read(&st, digest, &params, &headers, false).await
}

/// GET and HEAD: this origin's store, then the other owners, then the backend. A HEAD
/// that has to go to the backend only asks it, without copying the blob in.
async fn read(
    st: &Shared,
    digest: Digest,
    params: &Params,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Response, ApiError> {
    if let Some(res) = serve_local(st, digest, headers, with_body).await? {
        return Ok(res);
    }
    if params.local {
        return Err(blob_unknown(&digest));
    }
    let key = blob_key(&digest);
    if !is_forwarded(headers) {
        let method = if with_body { Method::GET } else { Method::HEAD };
        let path = format!("/v1/blobs/{digest}");
        match ask_owners(st, &key, method, &path, headers, with_body).await {
            Asked::Answer(res) => return Ok(res),
            // The owners looked in the backend themselves.
            Asked::NotFound if !st.cluster.is_owner(&key) => return Err(blob_unknown(&digest)),
            _ => {}
        }
    }
    if with_body {
        if blobs::read_through(st, digest).await?
            && let Some(res) = serve_local(st, digest, headers, true).await?
        {
            return Ok(res);
        }
    } else if let Some(length) = st
        .backend
        .stat_blob(&digest)
        .await
        .map_err(crate::error::Error::from)?
    {
        return Ok((
            StatusCode::OK,
            [
                (CONTENT_LENGTH, length.to_string()),
                (ACCEPT_RANGES, "bytes".to_owned()),
                (DOCKER_CONTENT_DIGEST, digest.to_string()),
            ],
        )
            .into_response());
    }
    Err(blob_unknown(&digest))
}

async fn metainfo(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let digest: Digest = digest.parse()?;
    // Signed here rather than stored signed, so that a new key takes effect at once and
    // every answer (an owner's relayed one too) carries the cluster's signature.
    let answer = |m: shoal_core::Metainfo| {
        (
            [(CONTENT_TYPE, "application/octet-stream")],
            blobs::metainfo_answer(&st, &m),
        )
            .into_response()
    };
    if let Some(m) = blobs::metainfo(&st, digest).await? {
        return Ok(answer(m));
    }
    if params.local {
        return Err(blob_unknown(&digest));
    }
    let key = blob_key(&digest);
    if !is_forwarded(&headers) {
        let path = format!("/v1/blobs/{digest}/metainfo");
        match ask_owners(&st, &key, Method::GET, &path, &headers, false).await {
            Asked::Answer(res) => return Ok(res),
            Asked::NotFound if !st.cluster.is_owner(&key) => return Err(blob_unknown(&digest)),
            _ => {}
        }
    }
    if blobs::read_through(&st, digest).await?
        && let Some(m) = blobs::metainfo(&st, digest).await?
    {
        return Ok(answer(m));
    }
    Err(blob_unknown(&digest))
}

/// Removes a blob from this origin (`internal=1`) or from every live origin and the
/// backend. An origin that is down keeps its copy.
async fn remove(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let digest: Digest = digest.parse()?;
    let mut found = blobs::delete_local(&st, digest).await?;
    if !params.internal {
        let others = st.cluster.others_live();
        let results = futures::future::join_all(
            others
                .iter()
                .map(|m| st.remote.delete_blob_internal(m, &digest)),
        )
        .await;
        for r in results {
            found |= r?;
        }
        found |= st
            .backend
            .delete_blob(&digest)
            .await
            .map_err(crate::error::Error::from)?;
    }
    if found {
        tracing::info!(%digest, internal = params.internal, "blob deleted");
        Ok(StatusCode::ACCEPTED.into_response())
    } else {
        Err(blob_unknown(&digest))
    }
}

/// The blobs this origin holds, in digest order.
async fn list(State(st): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let last = match &params.last {
        Some(l) => Some(l.parse::<Digest>()?.to_string()),
        None => None,
    };
    let blobs = st.db.list_blobs(last, params.page(&st)).await?;
    Ok(axum::Json(BlobList { blobs }).into_response())
}
