//! The referrers index, for the registry's referrers API: `/v1/referrers/<name>@<subject>`
//! lists the manifests of repository `name` that name `subject` as their subject, and
//! `/v1/referrers/<name>@<subject>/<referrer>` is one of those entries.
//!
//! Entries are placed on the ring by `<name>@<subject>` and kept the way tags are: each has
//! a version, a deletion is a tombstone, and the owner that takes a write sends it to the
//! other owners at once and queues copies for those it could not reach. A listing merges
//! every live origin's entries, the newest version of each winning, so an entry stays
//! visible while any origin that holds it is up.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::origin_client::{Referrer, ReferrerList, referrers_key};
use shoal_core::{Digest, RepoName};

use super::tags::forward_write;
use super::{Params, bad_request, is_forwarded};
use crate::db::{ReferrerEntry, ReferrerState, Task};
use crate::error::Error;
use crate::remote::{ReferrerCopy, ReferrerEntryList};
use crate::state::{AppState, Shared};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/v1/referrers/{*reference}",
        get(list).put(put).delete(delete),
    )
}

/// `<name>@<subject>` or `<name>@<subject>/<referrer>`: names and digests contain no `@`,
/// and digests no `/`, so the split is unambiguous.
fn parse(reference: &str) -> Result<(RepoName, Digest, Option<Digest>), ApiError> {
    let (name, rest) = reference
        .split_once('@')
        .ok_or_else(|| bad_request("expected <name>@<subject digest>"))?;
    let (subject, referrer) = match rest.split_once('/') {
        Some((s, r)) => (s, Some(r)),
        None => (rest, None),
    };
    Ok((
        name.parse()?,
        subject.parse()?,
        referrer.map(str::parse).transpose()?,
    ))
}

fn copies(st: &Shared, name: &RepoName, subject: &Digest, referrer: &Digest) -> Vec<Task> {
    st.follow_up(
        &referrers_key(name, subject),
        |target| Task::CopyReferrer {
            name: name.clone(),
            subject: *subject,
            referrer: *referrer,
            target,
        },
        None,
    )
}

async fn put(
    State(st): State<AppState>,
    Path(reference): Path<String>,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (name, subject, referrer) = parse(&reference)?;
    if params.internal {
        let referrer =
            referrer.ok_or_else(|| bad_request("an internal write names the referrer"))?;
        let copy: ReferrerCopy = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ErrorCode::ManifestInvalid,
                format!("bad referrer copy: {e}"),
            )
        })?;
        if copy
            .descriptor
            .as_ref()
            .is_some_and(|d| d.digest != referrer)
        {
            return Err(bad_request("the descriptor is not the referrer's"));
        }
        let state = ReferrerState {
            descriptor: copy.descriptor,
            version: copy.version,
        };
        st.db.put_referrer(name, subject, referrer, state).await?;
        return Ok(StatusCode::CREATED.into_response());
    }
    if referrer.is_some() {
        return Err(bad_request(
            "PUT the descriptor to /v1/referrers/<name>@<subject>",
        ));
    }
    let descriptor: Referrer = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::ManifestInvalid,
            format!("expected an OCI descriptor of the referring manifest: {e}"),
        )
    })?;
    let key = referrers_key(&name, &subject);
    if !(is_forwarded(&headers) || st.cluster.is_owner(&key)) {
        let path = format!("/v1/referrers/{name}@{subject}");
        return forward_write(&st, &key, Method::PUT, &path, body).await;
    }
    let referrer = descriptor.digest;
    let tasks = copies(&st, &name, &subject, &referrer);
    let state = st
        .db
        .write_referrer(name.clone(), subject, referrer, Some(descriptor), tasks)
        .await?;
    push(&st, &name, &subject, &referrer, state).await;
    st.queued().await;
    tracing::info!(%name, %subject, %referrer, "referrer recorded");
    Ok(StatusCode::CREATED.into_response())
}

/// Sends a new state to the other live owners before answering, as tag writes do; the
/// queued copies retry whatever fails here.
async fn push(
    st: &Shared,
    name: &RepoName,
    subject: &Digest,
    referrer: &Digest,
    state: ReferrerState,
) {
    let me = st.cluster.me();
    let owners: Vec<String> = st
        .cluster
        .owners(&referrers_key(name, subject))
        .into_iter()
        .filter(|o| Some(o) != me.as_ref())
        .collect();
    let limit = st.config.cluster.connect_timeout;
    futures::future::join_all(owners.iter().map(|o| {
        let state = state.clone();
        async move {
            let copy = st
                .remote
                .put_referrer_internal(o, name, subject, referrer, state);
            match tokio::time::timeout(limit, copy).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "referrer copy left to the queue"),
                Err(_) => tracing::debug!(owner = o, "referrer copy timed out; left to the queue"),
            }
        }
    }))
    .await;
}

/// Every live origin's entries for `subject` in `name`, the newest state of each.
async fn cluster_entries(
    st: &Shared,
    name: &RepoName,
    subject: &Digest,
) -> Result<HashMap<Digest, ReferrerEntry>, Error> {
    let mut merged: HashMap<Digest, ReferrerEntry> = HashMap::new();
    let mut keep = |e: ReferrerEntry| match merged.get(&e.referrer) {
        Some(held) if !e.state().newer_than(&held.state()) => {}
        _ => {
            merged.insert(e.referrer, e);
        }
    };
    for e in st.db.referrer_entries(name.clone(), *subject).await? {
        keep(e);
    }
    let others = st.cluster.others_live();
    let answers = futures::future::join_all(
        others
            .iter()
            .map(|m| st.remote.referrer_entries_local(m, name, subject)),
    )
    .await;
    for a in answers {
        match a {
            Ok(entries) => entries.into_iter().for_each(&mut keep),
            // Entries are on several origins; the others' cover this one's.
            Err(e) => tracing::warn!(error = %e, "an origin could not list referrers"),
        }
    }
    Ok(merged)
}

async fn list(
    State(st): State<AppState>,
    Path(reference): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let (name, subject, referrer) = parse(&reference)?;
    if referrer.is_some() {
        return Err(ApiError::new(ErrorCode::Unsupported, "no such endpoint")
            .with_status(StatusCode::NOT_FOUND));
    }
    if params.local {
        let entries = st.db.referrer_entries(name, subject).await?;
        return Ok(axum::Json(ReferrerEntryList { entries }).into_response());
    }
    let mut referrers: Vec<Referrer> = cluster_entries(&st, &name, &subject)
        .await?
        .into_values()
        .filter_map(|e| e.descriptor)
        .collect();
    referrers.sort_by_key(|r| r.digest);
    Ok(axum::Json(ReferrerList { referrers }).into_response())
}

async fn delete(
    State(st): State<AppState>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (name, subject, referrer) = parse(&reference)?;
    let referrer = referrer.ok_or_else(|| bad_request("name the referrer to delete"))?;
    let key = referrers_key(&name, &subject);
    if !(is_forwarded(&headers) || st.cluster.is_owner(&key)) {
        let path = format!("/v1/referrers/{name}@{subject}/{referrer}");
        return forward_write(&st, &key, Method::DELETE, &path, Bytes::new()).await;
    }
    let live = cluster_entries(&st, &name, &subject)
        .await?
        .get(&referrer)
        .is_some_and(|e| e.descriptor.is_some());
    if !live {
        return Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("{referrer} is not a referrer of {subject} in {name}"),
        ));
    }
    let tasks = copies(&st, &name, &subject, &referrer);
    let state = st
        .db
        .write_referrer(name.clone(), subject, referrer, None, tasks)
        .await?;
    push(&st, &name, &subject, &referrer, state).await;
    st.queued().await;
    tracing::info!(%name, %subject, %referrer, "referrer removed");
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let s = Digest::sha256_of(b"s");
        let r = Digest::sha256_of(b"r");
        let (n, subject, referrer) = parse(&format!("a/b@{s}")).unwrap();
        assert_eq!((n.as_str(), subject, referrer), ("a/b", s, None));
        let (_, _, referrer) = parse(&format!("a/b@{s}/{r}")).unwrap();
        assert_eq!(referrer, Some(r));
        assert_eq!(parse("a/b").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(
            parse(&format!("A@{s}")).unwrap_err().code,
            ErrorCode::NameInvalid
        );
        assert_eq!(
            parse("a@sha256:00").unwrap_err().code,
            ErrorCode::DigestInvalid
        );
    }
}
