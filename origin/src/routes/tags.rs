//! Tags: `/v1/tags/<name>:<tag>` (one tag), `/v1/repositories/<name>/tags` and
//! `/v1/repositories` (cluster-wide listings), `/v1/tags` (this origin's entries, for repair).

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::origin_client::{RepositoryList, TagBody, TagList, tag_key};
use shoal_core::{Digest, RepoName, Tag};

use super::{Asked, Params, ask_owners, bad_request, is_forwarded, relay};
use crate::db::{TagState, Task};
use crate::error::Error;
use crate::remote::{TagCopy, TagEntryList};
use crate::state::{AppState, Shared};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tags", get(entries))
        .route(
            "/v1/tags/{*reference}",
            get(get_tag).put(put_tag).delete(delete_tag),
        )
        .route("/v1/repositories", get(list_repositories))
        .route("/v1/repositories/{*path}", get(list_tags))
}

/// `<name>:<tag>`: neither part can contain a colon, so the split is unambiguous.
fn parse_reference(reference: &str) -> Result<(RepoName, Tag), ApiError> {
    let (name, tag) = reference
        .rsplit_once(':')
        .ok_or_else(|| ApiError::new(ErrorCode::NameInvalid, "expected <name>:<tag>"))?;
    Ok((name.parse()?, tag.parse()?))
}

fn manifest_unknown(name: &RepoName, tag: &Tag) -> ApiError {
    ApiError::new(
        ErrorCode::ManifestUnknown,
        format!("tag {name}:{tag} is unknown"),
    )
}

fn found(digest: Digest) -> Response {
    axum::Json(TagBody { digest }).into_response()
}

async fn get_tag(
    State(st): State<AppState>,
    Path(reference): Path<String>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (name, tag) = parse_reference(&reference)?;
    match st.db.tag(name.clone(), tag.clone()).await? {
        Some(TagState {
            digest: Some(d), ..
        }) => return Ok(found(d)),
        // Deleted here: the backend's copy is gone or going, so do not read it back.
        Some(_) => return Err(manifest_unknown(&name, &tag)),
        None => {}
    }
    if params.local {
        return Err(manifest_unknown(&name, &tag));
    }
    let key = tag_key(&name, &tag);
    if !is_forwarded(&headers) {
        let path = format!("/v1/tags/{name}:{tag}");
        match ask_owners(&st, &key, Method::GET, &path, &headers, false).await {
            Asked::Answer(res) => return Ok(res),
            Asked::NotFound if !st.cluster.is_owner(&key) => {
                return Err(manifest_unknown(&name, &tag));
            }
            _ => {}
        }
    }
    match read_through(&st, &name, &tag).await? {
        Some(d) => Ok(found(d)),
        None => Err(manifest_unknown(&name, &tag)),
    }
}

/// Fetches a tag from the backend. It takes the lowest version, so any write the cluster
/// has made since wins over it.
async fn read_through(st: &Shared, name: &RepoName, tag: &Tag) -> Result<Option<Digest>, Error> {
    let Some(digest) = st.backend.get_tag(name, tag).await? else {
        return Ok(None);
    };
    st.metrics.read_through.inc();
    let key = tag_key(name, tag);
    let tasks = if st.cluster.is_owner(&key) {
        st.follow_up(
            &key,
            |target| Task::CopyTag {
                name: name.clone(),
                tag: tag.clone(),
                target,
            },
            None,
        )
    } else {
        Vec::new()
    };
    let state = TagState {
        digest: Some(digest),
        version: 0,
    };
    if st
        .db
        .put_tag(name.clone(), tag.clone(), state, tasks)
        .await?
    {
        st.queued().await;
    }
    tracing::info!(%name, %tag, %digest, "tag read through from the backend");
    Ok(Some(digest))
}

async fn put_tag(
    State(st): State<AppState>,
    Path(reference): Path<String>,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (name, tag) = parse_reference(&reference)?;
    if params.internal {
        let copy: TagCopy = serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, format!("bad tag copy: {e}")))?;
        let state = TagState {
            digest: copy.digest,
            version: copy.version,
        };
        st.db.put_tag(name, tag, state, Vec::new()).await?;
        return Ok(StatusCode::CREATED.into_response());
    }
    let digest = parse_tag_body(&body)?;
    let key = tag_key(&name, &tag);
    if is_forwarded(&headers) || st.cluster.is_owner(&key) {
        let tasks = follow_up(&st, &name, &tag);
        let (state, _) = st
            .db
            .write_tag(name.clone(), tag.clone(), Some(digest), tasks)
            .await?;
        push(&st, &name, &tag, state).await;
        st.queued().await;
        tracing::info!(%name, %tag, %digest, "tag set");
        return Ok((StatusCode::CREATED, axum::Json(TagBody { digest })).into_response());
    }
    let path = format!("/v1/tags/{name}:{tag}");
    forward_write(&st, &key, Method::PUT, &path, body).await
}

/// `{"digest": "sha256:…"}`: a body that is not that is an invalid manifest reference; a
/// digest that does not parse is an invalid digest.
fn parse_tag_body(body: &[u8]) -> Result<Digest, ApiError> {
    #[derive(Deserialize)]
    struct Raw {
        digest: String,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::ManifestInvalid,
            format!("expected {{\"digest\": \"sha256:…\"}}: {e}"),
        )
    })?;
    Ok(raw.digest.parse()?)
}

fn follow_up(st: &Shared, name: &RepoName, tag: &Tag) -> Vec<Task> {
    st.follow_up(
        &tag_key(name, tag),
        |target| Task::CopyTag {
            name: name.clone(),
            tag: tag.clone(),
            target,
        },
        Some(Task::WriteBackTag {
            name: name.clone(),
            tag: tag.clone(),
        }),
    )
}

/// Sends a new tag state to the other live owners before answering, so that a read through
/// any owner sees the write at once. The queued copies stay: they retry whatever fails
/// here, and repeat the rest harmlessly (an owner ignores a version it already has).
async fn push(st: &Shared, name: &RepoName, tag: &Tag, state: TagState) {
    let me = st.cluster.me();
    let owners: Vec<String> = st
        .cluster
        .owners(&tag_key(name, tag))
        .into_iter()
        .filter(|o| Some(o) != me.as_ref())
        .collect();
    let limit = st.config.cluster.connect_timeout;
    futures::future::join_all(owners.iter().map(|o| async move {
        match tokio::time::timeout(limit, st.remote.put_tag_internal(o, name, tag, state)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "tag copy left to the queue"),
            Err(_) => tracing::debug!(owner = o, "tag copy timed out; left to the queue"),
        }
    }))
    .await;
}

/// Sends a tag (or referrer) write to the first owner that answers.
pub(super) async fn forward_write(
    st: &Shared,
    key: &[u8],
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    for owner in st.cluster.owners(key) {
        match st
            .remote
            .forward_with_body(&owner, method.clone(), path, body.clone())
            .await
        {
            Ok(res) if !res.status().is_server_error() => return Ok(relay(res, None)),
            Ok(res) => {
                tracing::warn!(owner, status = %res.status(), "owner failed a forwarded tag write")
            }
            Err(e) => tracing::warn!(error = %e, "owner unreachable for a forwarded tag write"),
        }
    }
    Err(ApiError::unavailable(
        "no owner of the tag could take the write",
    ))
}

async fn delete_tag(
    State(st): State<AppState>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (name, tag) = parse_reference(&reference)?;
    let key = tag_key(&name, &tag);
    if !(is_forwarded(&headers) || st.cluster.is_owner(&key)) {
        let path = format!("/v1/tags/{name}:{tag}");
        return forward_write(&st, &key, Method::DELETE, &path, Bytes::new()).await;
    }
    let live_here = matches!(
        st.db.tag(name.clone(), tag.clone()).await?,
        Some(TagState {
            digest: Some(_),
            ..
        })
    );
    if !live_here && !held_elsewhere(&st, &key, &name, &tag).await? {
        return Err(manifest_unknown(&name, &tag));
    }
    let tasks = follow_up(&st, &name, &tag);
    let (state, _) = st
        .db
        .write_tag(name.clone(), tag.clone(), None, tasks)
        .await?;
    push(&st, &name, &tag, state).await;
    st.queued().await;
    tracing::info!(%name, %tag, "tag deleted");
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Whether another live owner, or the backend, holds a value for the tag.
async fn held_elsewhere(
    st: &Shared,
    key: &[u8],
    name: &RepoName,
    tag: &Tag,
) -> Result<bool, Error> {
    for owner in st.cluster.owners(key) {
        if st.cluster.is_me(&owner) {
            continue;
        }
        match st.remote.tag_local(&owner, name, tag).await {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot ask an owner about a tag"),
        }
    }
    Ok(st.backend.get_tag(name, tag).await?.is_some())
}

/// `/v1/repositories/<name>/tags`: this origin's tags of the repository with `local=1`,
/// otherwise every live origin's, merged.
async fn list_tags(
    State(st): State<AppState>,
    Path(path): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let name: RepoName = path
        .strip_suffix("/tags")
        .ok_or_else(|| {
            ApiError::new(ErrorCode::Unsupported, "no such endpoint")
                .with_status(StatusCode::NOT_FOUND)
        })?
        .parse()?;
    let n = params.page(&st);
    let local = st
        .db
        .list_tags(name.clone(), params.last.clone(), n)
        .await?;
    let mut pages = vec![local];
    if !params.local {
        let query = params.page_query(&st);
        let others = st.cluster.others_live();
        let answers = futures::future::join_all(
            others
                .iter()
                .map(|m| st.remote.list_tags_local(m, &name, &query)),
        )
        .await;
        for a in answers {
            match a {
                Ok(page) => pages.push(page),
                // Tags are on several origins; the others' pages cover this one's.
                Err(e) => tracing::warn!(error = %e, "an origin could not list tags"),
            }
        }
    }
    if pages.iter().all(Option::is_none) {
        return Err(ApiError::new(
            ErrorCode::NameUnknown,
            format!("repository {name} has no tags"),
        ));
    }
    let tags = merge(pages.into_iter().flatten(), n);
    let link = next_link(
        &format!("/v1/repositories/{name}/tags"),
        &tags,
        n,
        params.local,
    );
    Ok((
        link,
        axum::Json(TagList {
            name: name.to_string(),
            tags,
        }),
    )
        .into_response())
}

async fn list_repositories(
    State(st): State<AppState>,
    params: Params,
) -> Result<Response, ApiError> {
    let n = params.page(&st);
    let mut pages = vec![st.db.list_repositories(params.last.clone(), n).await?];
    if !params.local {
        let query = params.page_query(&st);
        let others = st.cluster.others_live();
        let answers = futures::future::join_all(
            others
                .iter()
                .map(|m| st.remote.list_repositories_local(m, &query)),
        )
        .await;
        for a in answers {
            match a {
                Ok(page) => pages.push(page),
                Err(e) => tracing::warn!(error = %e, "an origin could not list repositories"),
            }
        }
    }
    let repositories = merge(pages, n);
    let link = next_link("/v1/repositories", &repositories, n, params.local);
    Ok((link, axum::Json(RepositoryList { repositories })).into_response())
}

/// The first `n` of the union of sorted pages. Each origin's page holds its first `n`
/// entries after `last`, so the union's first `n` are the cluster's.
fn merge(pages: impl IntoIterator<Item = Vec<String>>, n: usize) -> Vec<String> {
    let mut all: Vec<String> = pages.into_iter().flatten().collect();
    all.sort();
    all.dedup();
    all.truncate(n);
    all
}

/// A `Link` to the next page when this one is full, as the distribution spec does.
fn next_link(
    path: &str,
    page: &[String],
    n: usize,
    local: bool,
) -> AppendHeaders<Option<(http::HeaderName, String)>> {
    AppendHeaders(page.last().filter(|_| page.len() == n).map(|last| {
        let local = if local { "&local=1" } else { "" };
        (
            http::header::LINK,
            format!("<{path}?n={n}&last={last}{local}>; rel=\"next\""),
        )
    }))
}

/// This origin's tag entries, tombstones included, in `(name, tag)` order.
async fn entries(State(st): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let last = match &params.last {
        Some(l) => {
            let (name, tag) = l
                .split_once(':')
                .ok_or_else(|| bad_request("last must be <name>:<tag>"))?;
            Some((name.to_owned(), tag.to_owned()))
        }
        None => None,
    };
    let tags = st.db.tag_entries(last, params.page(&st)).await?;
    Ok(axum::Json(TagEntryList { tags }).into_response())
}
