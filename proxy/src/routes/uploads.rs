//! `/v2/<name>/blobs/uploads/…`: every way the spec lets a client push a blob.
//!
//! - `POST ?mount=&from=`: 201 if the blob is already on the origins, else a session.
//! - `POST ?digest=` with a body: the whole blob in one request, streamed straight on.
//! - `POST`, then `PUT ?digest=` with the body: no spool either, the body goes straight on.
//! - `POST`, `PATCH`… (with or without `Content-Range`), `PUT ?digest=`: chunks are spooled
//!   (and hashed as they arrive); the final `PUT` sends spool and last chunk to an origin.
//! - `GET` says how far an upload is; `DELETE` drops it.
//!
//! A blob's digest is checked while it streams to the origin: a mismatch ends the stream
//! with an error, so the origin never sees a whole body and stores nothing, and the client
//! gets `DIGEST_INVALID`. With an empty final `PUT` (what docker and podman send) the
//! SHA-256 kept while spooling answers before any byte leaves. `201` is sent only once an
//! origin has acknowledged the blob.

use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use shoal_core::digest::{Algorithm, Digest};
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::reference::RepoName;

use super::blobs::parse_digest;
use super::{
    DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, Params, body_stream, content_length, empty,
    origin_error,
};
use crate::sessions::{self, ChunkError, Session};
use crate::state::AppState;
use crate::stream::{ByteStream, Verdict, Verify, read_verdict};

fn location(name: &RepoName, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn blob_location(name: &RepoName, digest: &Digest) -> String {
    format!("/v2/{name}/blobs/{digest}")
}

/// The `Range` header of an upload: what the registry holds, `0-<last byte>`. An empty
/// upload says `0-0`, as the reference registry does.
fn range_value(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn session_headers(name: &RepoName, id: &str, offset: u64) -> Vec<(http::HeaderName, String)> {
    vec![
        (header::LOCATION, location(name, id)),
        (header::RANGE, range_value(offset)),
        (DOCKER_UPLOAD_UUID, id.to_owned()),
    ]
}

fn created(name: &RepoName, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        vec![
            (header::LOCATION, blob_location(name, digest)),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
        ],
    )
}

/// Whether a request certainly has no body.
fn has_no_body(headers: &HeaderMap, body: &Body) -> bool {
    content_length(headers) == Some(0) || body.size_hint().exact() == Some(0)
}

pub async fn start(
    s: &AppState,
    name: RepoName,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(mount) = params.get("mount") {
        let digest = parse_digest(mount)?;
        if let Some(from) = params.get("from") {
            from.parse::<RepoName>().map_err(|e| {
                ApiError::new(
                    ErrorCode::NameInvalid,
                    format!("invalid repository name in from: {e}"),
                )
            })?;
        }
        // Blobs belong to the whole cluster, so any repository can mount any blob that is
        // there; one that is not gets an ordinary session, as the spec asks.
        if s.origins
            .stat_blob(&digest)
            .await
            .map_err(origin_error)?
            .is_some()
        {
            tracing::info!(%name, %digest, "blob mounted");
            return Ok(created(&name, &digest));
        }
    } else if let Some(digest) = params.get("digest") {
        let digest = parse_digest(digest)?;
        let started = tokio::time::Instant::now();
        let stream = body_stream(s, body);
        store(
            s,
            &digest,
            Verify::new(stream, digest),
            content_length(headers),
        )
        .await?;
        s.metrics
            .upload_seconds
            .observe(started.elapsed().as_secs_f64());
        return Ok(created(&name, &digest));
    }
    let session = s.sessions.create(name)?;
    tracing::debug!(upload = %session.id, name = %session.name, "upload started");
    Ok(empty(
        StatusCode::ACCEPTED,
        session_headers(&session.name, &session.id, 0),
    ))
}

pub async fn status(s: &AppState, name: &RepoName, id: &str) -> Result<Response, ApiError> {
    let session = s.sessions.get(name, id)?;
    Ok(empty(
        StatusCode::NO_CONTENT,
        session_headers(name, id, session.offset()),
    ))
}

pub async fn patch(
    s: &AppState,
    name: &RepoName,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let session = s.sessions.get(name, id)?;
    let range = match headers.get(header::CONTENT_RANGE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(sessions::parse_content_range)
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::BlobUploadInvalid, "unreadable Content-Range")
                })?,
        ),
    };
    let stream = body_stream(s, body);
    // The chunk is written by a task of its own, so that a client going away mid-chunk
    // cannot leave the spool half-updated (see `sessions`).
    let task = s.tasks.spawn(
        tracing::Span::current(),
        session.clone().append(
            stream,
            range,
            content_length(headers),
            s.config.uploads.body_timeout,
        ),
    );
    match task.await {
        Ok(Ok(offset)) => Ok(empty(
            StatusCode::ACCEPTED,
            session_headers(name, id, offset),
        )),
        Ok(Err(ChunkError::OutOfOrder { offset })) => {
            let mut e = ApiError::new(
                ErrorCode::RangeInvalid,
                format!("chunks must be sent in order: this upload holds {offset} bytes"),
            );
            for (h, v) in session_headers(name, id, offset) {
                e = e.with_header(h, v);
            }
            Err(e)
        }
        Ok(Err(ChunkError::Api(e))) => Err(e),
        Err(e) => Err(ApiError::internal(format!("chunk writer failed: {e}"))),
    }
}

pub async fn finish(
    s: &AppState,
    name: &RepoName,
    id: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let session = s.sessions.get(name, id)?;
    let digest = params.get("digest").ok_or_else(|| {
        ApiError::new(
            ErrorCode::DigestInvalid,
            "the final PUT of an upload needs ?digest=",
        )
    })?;
    let digest = parse_digest(digest)?;
    let mut spool = session.lock().await?;
    let offset = spool.offset;
    let no_body = has_no_body(headers, &body);

    let verified = if no_body && digest.algorithm() == Algorithm::Sha256 {
        // Hashed while spooling: a wrong digest is refused before a byte moves.
        let actual = spool.hasher.clone().finalize();
        if actual != digest {
            s.sessions.close(id, &mut spool).await;
            return Err(mismatch(&digest, &actual));
        }
        let stream = sessions::read(&spool).await.map_err(ApiError::internal)?;
        Verified::Already(stream)
    } else {
        let spooled = sessions::read(&spool).await.map_err(ApiError::internal)?;
        let stream: ByteStream = Box::pin(spooled.chain(body_stream(s, body)));
        Verified::OnTheWay(Box::new(if digest.algorithm() == Algorithm::Sha256 {
            Verify::resume(stream, digest, spool.hasher.clone(), offset)
        } else {
            Verify::new(stream, digest)
        }))
    };
    let length = if no_body {
        Some(offset)
    } else {
        content_length(headers).map(|n| offset + n)
    };
    let result = match verified {
        Verified::Already(stream) => match s.origins.put_blob(&digest, length, stream).await {
            Ok(info) => {
                stored(s, info.length);
                Ok(())
            }
            Err(e) => Err(origin_error(e)),
        },
        Verified::OnTheWay(v) => store(s, &digest, *v, length).await,
    };
    match result {
        Ok(()) => {
            s.sessions.close(id, &mut spool).await;
            s.metrics
                .upload_seconds
                .observe(session.started.elapsed().as_secs_f64());
            tracing::info!(upload = %id, %name, %digest, "blob uploaded");
            Ok(created(name, &digest))
        }
        Err(e) => {
            // The client's data was wrong: there is nothing left to resume. Anything else
            // (an origin away, the last chunk cut off) leaves the spool for a retry.
            if matches!(e.code, ErrorCode::DigestInvalid | ErrorCode::SizeInvalid) {
                s.sessions.close(id, &mut spool).await;
            }
            Err(e)
        }
    }
}

enum Verified {
    Already(ByteStream),
    OnTheWay(Box<Verify>),
}

fn mismatch(expected: &Digest, actual: &Digest) -> ApiError {
    ApiError::new(
        ErrorCode::DigestInvalid,
        format!("the uploaded content is {actual}, not {expected}"),
    )
}

/// Streams a checked blob to its owning origin and says whose fault a failure was.
async fn store(
    s: &AppState,
    digest: &Digest,
    verify: Verify,
    length: Option<u64>,
) -> Result<(), ApiError> {
    let verdict = verify.verdict();
    let result = s.origins.put_blob(digest, length, verify).await;
    match (result, read_verdict(&verdict)) {
        (_, Verdict::Mismatch { actual }) => Err(mismatch(digest, &actual)),
        (Ok(info), _) => {
            stored(s, info.length);
            Ok(())
        }
        (Err(_), Verdict::SourceFailed) => Err(ApiError::new(
            ErrorCode::BlobUploadInvalid,
            "the upload's body broke off before its end",
        )),
        (Err(e), _) => Err(origin_error(e)),
    }
}

fn stored(s: &AppState, length: u64) {
    s.metrics.blobs_stored.inc();
    s.metrics.blob_bytes_stored.inc_by(length);
}

pub async fn cancel(s: &AppState, name: &RepoName, id: &str) -> Result<Response, ApiError> {
    let session: std::sync::Arc<Session> = s.sessions.get(name, id)?;
    let mut spool = session.lock().await?;
    s.sessions.close(id, &mut spool).await;
    tracing::debug!(upload = %id, %name, "upload cancelled");
    Ok(empty(StatusCode::NO_CONTENT, Vec::new()))
}
