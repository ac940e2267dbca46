//! `/v2/<name>/manifests/<reference>`: manifests are blobs on the origins, stored by
//! digest with their bytes exactly as pushed; a tag is an origin record pointing at one.
//!
//! A `PUT` is checked before anything is stored (see [`crate::manifest`]), then every blob
//! or manifest it references must be on the origins. A manifest with a `subject` is added
//! to the subject's referrers in that repository, and the answer says so with `OCI-Subject`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use shoal_core::digest::{Digest, Hasher};
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::reference::{NameError, Reference, RepoName, Tag};

use super::blobs::unsupported_delete;
use super::{
    DOCKER_CONTENT_DIGEST, OCI_SUBJECT, Params, body_stream, content_length, empty, origin_error,
};
use crate::manifest::{self, Checked};
use crate::state::AppState;

/// How many existence checks of referenced blobs run at once.
const CHECKS_AT_ONCE: usize = 8;
/// Tags read per page when looking for those that point at a deleted manifest.
const TAG_PAGE: usize = 1000;

fn unknown(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {what} is unknown"),
    )
}

/// A reference from a URL. A malformed digest is invalid; a malformed tag is unknown on a
/// read (no such manifest can exist) and invalid on a write.
fn parse_reference(r: &str, write: bool) -> Result<Reference, ApiError> {
    r.parse().map_err(|e| match e {
        NameError::Reference(d) => ApiError::new(ErrorCode::DigestInvalid, format!("{r:?}: {d}")),
        _ if write => ApiError::new(ErrorCode::ManifestInvalid, format!("{r:?}: {e}")),
        _ => unknown(r),
    })
}

/// The manifest a digest names and its media type, or `None` when there is no such blob or
/// the blob is not a manifest.
pub async fn fetch(
    s: &AppState,
    digest: &Digest,
) -> Result<Option<(Bytes, &'static str)>, ApiError> {
    let max = s.config.max_manifest_size.bytes();
    let body = match s.origins.get_blob(digest, None).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(origin_error(e)),
    };
    if body.length > max {
        return Ok(None);
    }
    let mut buf = BytesMut::with_capacity(body.length as usize);
    let mut stream = body.stream;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::unavailable(format!("reading manifest {digest}: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(ApiError::internal(format!(
                "origin sent more than the length of {digest}"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    let mut v = digest.verifier();
    v.update(&buf);
    v.finish()
        .map_err(|m| ApiError::internal(format!("origin sent wrong bytes: {m}")))?;
    let bytes = buf.freeze();
    Ok(manifest::served_media_type(&bytes).map(|t| (bytes, t)))
}

pub async fn get(
    s: &AppState,
    name: &RepoName,
    reference: &str,
    head: bool,
) -> Result<Response, ApiError> {
    let digest = match parse_reference(reference, false)? {
        Reference::Digest(d) => d,
        Reference::Tag(t) => s
            .origins
            .get_tag(name, &t)
            .await
            .map_err(origin_error)?
            .ok_or_else(|| unknown(format!("{name}:{t}")))?,
    };
    let (bytes, media_type) = fetch(s, &digest).await?.ok_or_else(|| unknown(digest))?;
    let length = bytes.len();
    let mut res = if head {
        Body::empty().into_response()
    } else {
        s.metrics.bytes_out.inc_by(length as u64);
        Body::from(bytes).into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        h.insert(DOCKER_CONTENT_DIGEST, v.clone());
        h.insert(header::ETAG, v);
    }
    Ok(res)
}

/// What a client may still send after its manifest was found too large, read and
/// dropped so that it reads the 413 rather than a connection reset under its feet; a
/// client sending more, or slower, than this has its connection closed.
const DRAIN_BYTES: u64 = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a manifest body, refusing more than the configured size with 413.
async fn read_body(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let max = s.config.max_manifest_size.bytes();
    let too_large = || {
        ApiError::new(
            ErrorCode::ManifestInvalid,
            format!("manifests may be at most {max} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let mut stream = body_stream(s, body);
    if content_length(headers).is_some_and(|n| n > max) {
        drain(&mut stream).await;
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::ManifestInvalid,
                format!("the manifest body failed: {e}"),
            )
        })?;
        if (buf.len() as u64).saturating_add(chunk.len() as u64) > max {
            drain(&mut stream).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Reads and drops the rest of a body, up to [`DRAIN_BYTES`] and [`DRAIN_TIME`].
async fn drain(stream: &mut crate::stream::ByteStream) {
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// Every blob and manifest `checked` references must be on the origins, with the size its
/// descriptor says.
async fn check_references(s: &AppState, checked: &Checked) -> Result<(), ApiError> {
    // Owned items and a cloned state keep the futures free of borrowed lifetimes, which
    // the handler's `Send` bound cannot express.
    let mut results = futures::stream::iter(checked.needed.clone())
        .map(|n| {
            let s = s.clone();
            async move {
                let found = s.origins.stat_blob(&n.digest).await;
                (n, found)
            }
        })
        .buffered(CHECKS_AT_ONCE);
    while let Some((n, found)) = results.next().await {
        let what = if n.manifest { "manifest" } else { "blob" };
        match found.map_err(origin_error)? {
            None => {
                return Err(ApiError::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!(
                        "the manifest references {what} {}, which is not in the registry",
                        n.digest
                    ),
                )
                .with_detail(serde_json::json!({ "digest": n.digest })));
            }
            Some(len) if len != n.size => {
                return Err(ApiError::new(
                    ErrorCode::ManifestInvalid,
                    format!(
                        "the manifest says {what} {} is {} bytes; it is {len}",
                        n.digest, n.size
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub async fn put(
    s: &AppState,
    name: &RepoName,
    reference: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let reference = parse_reference(reference, true)?;
    // `?tag=` on a push by digest tags it too (distribution spec 1.1).
    let mut tags: Vec<Tag> = params
        .all("tag")
        .map(|t| {
            t.parse::<Tag>()
                .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, format!("tag {t:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let bytes = read_body(s, headers, body).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let checked = manifest::check(&bytes, content_type)?;
    let digest = match &reference {
        Reference::Digest(expected) => {
            let mut h = Hasher::new(expected.algorithm());
            h.update(&bytes);
            let actual = h.finalize();
            if actual != *expected {
                return Err(ApiError::new(
                    ErrorCode::DigestInvalid,
                    format!("the manifest is {actual}, not {expected}"),
                ));
            }
            actual
        }
        Reference::Tag(t) => {
            tags.push(t.clone());
            Digest::sha256_of(&bytes)
        }
    };
    check_references(s, &checked).await?;
    let size = bytes.len() as u64;
    s.origins
        .put_blob_bytes(&digest, bytes)
        .await
        .map_err(origin_error)?;
    s.metrics.blobs_stored.inc();
    s.metrics.blob_bytes_stored.inc_by(size);
    for tag in &tags {
        s.origins
            .put_tag(name, tag, &digest)
            .await
            .map_err(origin_error)?;
    }
    let mut extra = Vec::new();
    if let Some(subject) = checked.subject {
        s.origins
            .put_referrer(name, &subject, &checked.referrer(digest, size))
            .await
            .map_err(origin_error)?;
        extra.push((OCI_SUBJECT, subject.to_string()));
    }
    tracing::info!(%name, %digest, tags = ?tags, media_type = checked.media_type, "manifest pushed");
    let mut headers = vec![
        (header::LOCATION, format!("/v2/{name}/manifests/{digest}")),
        (DOCKER_CONTENT_DIGEST, digest.to_string()),
    ];
    headers.extend(extra);
    Ok(empty(StatusCode::CREATED, headers))
}

pub async fn delete(s: &AppState, name: &RepoName, reference: &str) -> Result<Response, ApiError> {
    if !s.config.allow_delete {
        return Err(unsupported_delete());
    }
    let digest = match parse_reference(reference, false)? {
        Reference::Tag(t) => {
            s.origins.delete_tag(name, &t).await.map_err(|e| {
                if e.is_not_found() {
                    unknown(format!("{name}:{t}"))
                } else {
                    origin_error(e)
                }
            })?;
            tracing::info!(%name, tag = %t, "tag deleted");
            return Ok(empty(StatusCode::ACCEPTED, Vec::new()));
        }
        Reference::Digest(d) => d,
    };
    let (bytes, media_type) = fetch(s, &digest).await?.ok_or_else(|| unknown(digest))?;
    for tag in tags_pointing_at(s, name, &digest).await? {
        match s.origins.delete_tag(name, &tag).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(origin_error(e)),
        }
    }
    if let Ok(checked) = manifest::check(&bytes, Some(media_type))
        && let Some(subject) = checked.subject
    {
        match s.origins.delete_referrer(name, &subject, &digest).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(origin_error(e)),
        }
    }
    match s.origins.delete_blob(&digest).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(origin_error(e)),
    }
    tracing::info!(%name, %digest, "manifest deleted");
    Ok(empty(StatusCode::ACCEPTED, Vec::new()))
}

/// The tags of `name` that point at `digest`.
async fn tags_pointing_at(
    s: &AppState,
    name: &RepoName,
    digest: &Digest,
) -> Result<Vec<Tag>, ApiError> {
    let mut found = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let Some(page) = s
            .origins
            .list_tags(name, Some(TAG_PAGE), last.as_deref())
            .await
            .map_err(origin_error)?
        else {
            break;
        };
        let tags: Vec<Tag> = page.tags.iter().filter_map(|t| t.parse().ok()).collect();
        let mut lookups = futures::stream::iter(tags)
            .map(|t| {
                let (s, name) = (s.clone(), name.clone());
                async move {
                    let d = s.origins.get_tag(&name, &t).await;
                    (t, d)
                }
            })
            .buffered(CHECKS_AT_ONCE);
        while let Some((t, d)) = lookups.next().await {
            if d.map_err(origin_error)? == Some(*digest) {
                found.push(t);
            }
        }
        if page.tags.len() < TAG_PAGE {
            break;
        }
        last = page.tags.last().cloned();
    }
    Ok(found)
}
