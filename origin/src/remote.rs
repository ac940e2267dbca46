//! Requests from this origin to the others: forwarding a client's request to an owner,
//! replica copies, and the local-only reads that repair and cluster-wide listings use.
//!
//! A request that cannot even connect takes its target out of placement at once (see
//! [`Cluster::report_unreachable`]); the health checks bring it back.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, HeaderName, Method, StatusCode};
use serde::{Deserialize, Serialize};
use shoal_core::origin_client::{BlobEntry, BlobList, RepositoryList, TagList};
use shoal_core::{Digest, RepoName, Tag};

use crate::cluster::Cluster;
use crate::db::{ReferrerEntry, ReferrerState, TagEntry, TagState};
use crate::error::{Error, Result};

/// Set on a request one origin forwards to another: the receiver serves it as an owner
/// would (its store, then the backend) and never forwards it again, so differing views of
/// the ring cannot make a request go round in circles.
pub const FORWARDED: HeaderName = HeaderName::from_static("shoal-forwarded");

/// The body of an internal tag write: a value or a tombstone, with its version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagCopy {
    pub digest: Option<Digest>,
    pub version: i64,
}

/// `GET /v1/tags`: every tag entry this origin holds, tombstones included.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagEntryList {
    pub tags: Vec<TagEntry>,
}

/// The body of an internal referrer write: a descriptor or a tombstone, with its version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferrerCopy {
    pub descriptor: Option<shoal_core::origin_client::Referrer>,
    pub version: i64,
}

/// `GET /v1/referrers/<name>@<subject>?local=1`: this origin's entries, tombstones included.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferrerEntryList {
    pub entries: Vec<ReferrerEntry>,
}

#[derive(Debug, Clone)]
pub struct Remote {
    http: reqwest::Client,
    token: Option<String>,
    cluster: Arc<Cluster>,
}

impl Remote {
    pub fn new(http: reqwest::Client, token: Option<String>, cluster: Arc<Cluster>) -> Self {
        Remote {
            http,
            token,
            cluster,
        }
    }

    fn request(&self, method: Method, url: String) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send(&self, member: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        req.send().await.map_err(|source| {
            if source.is_connect() {
                self.cluster.report_unreachable(member);
            }
            Error::Member {
                member: member.to_owned(),
                source,
            }
        })
    }

    /// [`Self::send`], and any status but a success is an error.
    async fn send_ok(
        &self,
        member: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let res = self.send(member, req).await?;
        if res.status().is_success() {
            Ok(res)
        } else {
            Err(Self::status_error(member, res.status()))
        }
    }

    fn status_error(member: &str, status: StatusCode) -> Error {
        Error::MemberStatus {
            member: member.to_owned(),
            status,
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        member: &str,
        res: reqwest::Response,
    ) -> Result<T> {
        res.json().await.map_err(|source| Error::Member {
            member: member.to_owned(),
            source,
        })
    }

    /// Forwards a client's request (without a body) to `member`, marked as forwarded.
    pub async fn forward(
        &self,
        member: &str,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .request(method, format!("{member}{path_and_query}"))
            .header(FORWARDED, "1");
        for name in [http::header::RANGE, http::header::ACCEPT] {
            if let Some(v) = headers.get(&name) {
                req = req.header(name, v);
            }
        }
        self.send(member, req).await
    }

    /// Forwards an upload's body as it arrives. A stream can be sent only once, so this is
    /// one attempt.
    pub async fn forward_upload<S>(
        &self,
        member: &str,
        path_and_query: &str,
        length: Option<u64>,
        body: S,
    ) -> Result<reqwest::Response>
    where
        S: futures::TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        let mut req = self
            .request(Method::PUT, format!("{member}{path_and_query}"))
            .header(FORWARDED, "1")
            .body(reqwest::Body::wrap_stream(body));
        if let Some(n) = length {
            req = req.header(http::header::CONTENT_LENGTH, n);
        }
        self.send(member, req).await
    }

    /// Forwards a small request with a body (tag writes), which can be retried elsewhere.
    pub async fn forward_with_body(
        &self,
        member: &str,
        method: Method,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<reqwest::Response> {
        let req = self
            .request(method, format!("{member}{path_and_query}"))
            .header(FORWARDED, "1")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(member, req).await
    }

    /// The blob's length on `member` itself, or `None` if it does not hold it.
    pub async fn stat_local(&self, member: &str, digest: &Digest) -> Result<Option<u64>> {
        let res = self
            .send(
                member,
                self.request(Method::HEAD, format!("{member}/v1/blobs/{digest}?local=1")),
            )
            .await?;
        match res.status() {
            StatusCode::OK => Ok(res.content_length()),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(Self::status_error(member, s)),
        }
    }

    /// Stores a replica on `member`.
    pub async fn put_blob_internal<S>(
        &self,
        member: &str,
        digest: &Digest,
        length: u64,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let req = self
            .request(
                Method::PUT,
                format!("{member}/v1/blobs/{digest}?internal=1"),
            )
            .header(http::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(body));
        self.send_ok(member, req).await.map(drop)
    }

    /// Removes a blob from `member` alone; whether it had it.
    pub async fn delete_blob_internal(&self, member: &str, digest: &Digest) -> Result<bool> {
        let res = self
            .send(
                member,
                self.request(
                    Method::DELETE,
                    format!("{member}/v1/blobs/{digest}?internal=1"),
                ),
            )
            .await?;
        match res.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(Self::status_error(member, s)),
        }
    }

    /// Sends a tag's state to `member`, which keeps it if it is newer than its own.
    pub async fn put_tag_internal(
        &self,
        member: &str,
        name: &RepoName,
        tag: &Tag,
        state: TagState,
    ) -> Result<()> {
        let body = TagCopy {
            digest: state.digest,
            version: state.version,
        };
        let req = self
            .request(
                Method::PUT,
                format!("{member}/v1/tags/{name}:{tag}?internal=1"),
            )
            .json(&body);
        self.send_ok(member, req).await.map(drop)
    }

    /// Whether `member` itself holds a live value for the tag.
    pub async fn tag_local(&self, member: &str, name: &RepoName, tag: &Tag) -> Result<bool> {
        let res = self
            .send(
                member,
                self.request(
                    Method::GET,
                    format!("{member}/v1/tags/{name}:{tag}?local=1"),
                ),
            )
            .await?;
        match res.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(Self::status_error(member, s)),
        }
    }

    /// Sends a referrer entry's state to `member`, which keeps it if it is newer.
    pub async fn put_referrer_internal(
        &self,
        member: &str,
        name: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        state: ReferrerState,
    ) -> Result<()> {
        let body = ReferrerCopy {
            descriptor: state.descriptor,
            version: state.version,
        };
        let req = self
            .request(
                Method::PUT,
                format!("{member}/v1/referrers/{name}@{subject}/{referrer}?internal=1"),
            )
            .json(&body);
        self.send_ok(member, req).await.map(drop)
    }

    /// `member`'s own referrer entries of `subject` in `name`, tombstones included.
    pub async fn referrer_entries_local(
        &self,
        member: &str,
        name: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerEntry>> {
        let req = self.request(
            Method::GET,
            format!("{member}/v1/referrers/{name}@{subject}?local=1"),
        );
        let res = self.send_ok(member, req).await?;
        Ok(Self::json::<ReferrerEntryList>(member, res).await?.entries)
    }

    /// A page of the blobs `member` holds.
    pub async fn list_blobs(
        &self,
        member: &str,
        last: Option<&str>,
        n: usize,
    ) -> Result<Vec<BlobEntry>> {
        let mut q = vec![("n", n.to_string())];
        if let Some(l) = last {
            q.push(("last", l.to_owned()));
        }
        let req = self
            .request(Method::GET, format!("{member}/v1/blobs"))
            .query(&q);
        let res = self.send_ok(member, req).await?;
        Ok(Self::json::<BlobList>(member, res).await?.blobs)
    }

    /// A page of every tag entry `member` holds, tombstones included.
    pub async fn list_tag_entries(
        &self,
        member: &str,
        last: Option<&(String, String)>,
        n: usize,
    ) -> Result<Vec<TagEntry>> {
        let mut q = vec![("n", n.to_string())];
        if let Some((name, tag)) = last {
            q.push(("last", format!("{name}:{tag}")));
        }
        let req = self
            .request(Method::GET, format!("{member}/v1/tags"))
            .query(&q);
        let res = self.send_ok(member, req).await?;
        Ok(Self::json::<TagEntryList>(member, res).await?.tags)
    }

    /// `member`'s own page of a repository's tags; `None` if it holds none.
    pub async fn list_tags_local(
        &self,
        member: &str,
        name: &RepoName,
        query: &[(&'static str, String)],
    ) -> Result<Option<Vec<String>>> {
        let req = self
            .request(Method::GET, format!("{member}/v1/repositories/{name}/tags"))
            .query(&[("local", "1")])
            .query(query);
        let res = self.send(member, req).await?;
        match res.status() {
            StatusCode::OK => Ok(Some(Self::json::<TagList>(member, res).await?.tags)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(Self::status_error(member, s)),
        }
    }

    /// `member`'s own page of repositories.
    pub async fn list_repositories_local(
        &self,
        member: &str,
        query: &[(&'static str, String)],
    ) -> Result<Vec<String>> {
        let req = self
            .request(Method::GET, format!("{member}/v1/repositories"))
            .query(&[("local", "1")])
            .query(query);
        let res = self.send_ok(member, req).await?;
        Ok(Self::json::<RepositoryList>(member, res)
            .await?
            .repositories)
    }
}
