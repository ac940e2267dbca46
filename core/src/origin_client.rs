//! The client of the origins' HTTP API (`origin/API.md`), for proxies, trackers, agents and
//! origins themselves.
//!
//! It knows the ring, so each request goes to the key's owners first, and it moves on to the
//! next origin when one cannot be reached or answers 502/503/504. An origin that refused a
//! connection is tried last for a few seconds.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ApiError, ErrorCode, ErrorEnvelope};
use crate::metainfo::Metainfo;
use crate::reference::{RepoName, Tag};
use crate::ring::Ring;
use crate::store::BlobInfo;

/// How long an origin that failed to answer is put at the back of the line.
const DOWN_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The origin answered with an error envelope.
    #[error("origin answered {status}: {code:?}: {message}")]
    Api {
        status: StatusCode,
        code: ErrorCode,
        message: String,
    },
    /// No origin could be reached or every one failed.
    #[error("no origin could serve the request: {0}")]
    Unavailable(String),
    /// The origin answered something that is not what the API promises.
    #[error("origin answered unexpectedly: {0}")]
    Protocol(String),
    #[error("origin request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl OriginError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            OriginError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, OriginError::Api { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// An origin's client-side error becomes the same error for our client; anything else is
/// our failure to reach storage.
impl From<OriginError> for ApiError {
    fn from(e: OriginError) -> Self {
        match e {
            OriginError::Api {
                status,
                code,
                message,
            } if status.is_client_error() => ApiError::new(code, message).with_status(status),
            OriginError::Unavailable(_) => ApiError::unavailable(e),
            _ => ApiError::internal(e),
        }
    }
}

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginInfo {
    pub member: String,
    pub peer_id: crate::peer::PeerId,
    pub peer_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagBody {
    pub digest: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagList {
    pub name: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryList {
    pub repositories: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobList {
    pub blobs: Vec<BlobEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    pub digest: Digest,
    pub length: u64,
}

/// A manifest that names another as its `subject`, as the referrers API lists it: an OCI
/// descriptor of the referring manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferrerList {
    pub referrers: Vec<Referrer>,
}

/// A blob body on its way from an origin.
pub struct BlobBody {
    /// The bytes in this response (the range's length for a 206).
    pub length: u64,
    /// The whole blob's length.
    pub total: u64,
    pub stream: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>,
}

impl std::fmt::Debug for BlobBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobBody")
            .field("length", &self.length)
            .field("total", &self.total)
            .finish()
    }
}

#[derive(Debug)]
pub struct OriginClient {
    http: reqwest::Client,
    ring: Ring<String>,
    token: Option<String>,
    /// Whether bare `host:port` addresses mean `https://`.
    tls: bool,
    down: Mutex<HashMap<String, Instant>>,
}

/// The blob key on the ring.
pub fn blob_key(digest: &Digest) -> Vec<u8> {
    digest.to_string().into_bytes()
}

/// The tag key on the ring.
pub fn tag_key(name: &RepoName, tag: &Tag) -> Vec<u8> {
    format!("{name}:{tag}").into_bytes()
}

/// The key on the ring of the referrers of `subject` in a repository.
pub fn referrers_key(name: &RepoName, subject: &Digest) -> Vec<u8> {
    format!("{name}@{subject}").into_bytes()
}

/// Normalises an origin address to a base URL: adds the scheme if none is given (`https://`
/// when `tls` is on, `http://` otherwise) and drops a trailing `/`.
pub fn base_url(addr: &str, tls: bool) -> String {
    let a = addr.trim().trim_end_matches('/');
    if a.contains("://") {
        a.to_owned()
    } else if tls {
        format!("https://{a}")
    } else {
        format!("http://{a}")
    }
}

/// Why the URL of another part (`what`, as the config names it) does not fit the TLS mode:
/// `http://` with TLS on, `https://` in plaintext. A bare `host:port` always fits (it takes
/// the mode's scheme, [`base_url`]).
pub fn scheme_problem(what: &str, url: &str, tls: bool) -> Option<String> {
    let scheme = url.trim().split_once("://")?.0.to_ascii_lowercase();
    match (scheme.as_str(), tls) {
        ("http", true) => Some(format!(
            "{what} {url:?} is http:// but TLS is on: write https://, or set tls.plaintext = true \
             for a network that only Shoal's parts can reach"
        )),
        ("https", false) => Some(format!(
            "{what} {url:?} is https:// but tls.plaintext = true: write http://, or turn TLS on \
             (tls.cert, tls.key, tls.ca)"
        )),
        _ => None,
    }
}

impl OriginClient {
    /// A client of the origins at `origins` (base URLs or `host:port`), over HTTPS verified
    /// against `tls.ca` when `tls` is given, plain HTTP otherwise.
    pub fn new(
        origins: &[String],
        token: Option<String>,
        tls: Option<&crate::tls::Tls>,
    ) -> Result<Self, OriginError> {
        if origins.is_empty() {
            return Err(OriginError::Unavailable("no origins configured".into()));
        }
        let http = crate::tls::client_builder(tls)?
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(OriginClient {
            http,
            ring: Ring::new(origins.iter().map(|o| base_url(o, tls.is_some())).collect()),
            token,
            tls: tls.is_some(),
            down: Mutex::new(HashMap::new()),
        })
    }

    pub fn origins(&self) -> &[String] {
        self.ring.members()
    }

    /// The origins in the order to try for `key`: the ring's order, with those that failed
    /// recently moved to the back.
    pub fn ranked(&self, key: &[u8]) -> Vec<String> {
        let ranked = self.ring.ranked(key);
        let now = Instant::now();
        let down = self.down.lock().map(|d| d.clone()).unwrap_or_default();
        let (up, recently_down): (Vec<&String>, Vec<&String>) = ranked
            .into_iter()
            .partition(|o| down.get(*o).is_none_or(|t| now >= *t));
        up.into_iter().chain(recently_down).cloned().collect()
    }

    fn mark(&self, origin: &str, ok: bool) {
        if let Ok(mut d) = self.down.lock() {
            if ok {
                d.remove(origin);
            } else {
                d.insert(origin.to_owned(), Instant::now() + DOWN_FOR);
            }
        }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request built per origin to each origin in turn until one answers with
    /// something other than a gateway error. The answer may still be an error status.
    async fn send(
        &self,
        key: &[u8],
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OriginError> {
        let mut last = String::from("no origin tried");
        for origin in self.ranked(key) {
            match self.auth(build(&self.http, &origin)).send().await {
                Ok(res)
                    if matches!(
                        res.status(),
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    ) =>
                {
                    last = format!("{origin} answered {}", res.status());
                    self.mark(&origin, false);
                }
                Ok(res) => {
                    self.mark(&origin, true);
                    return Ok(res);
                }
                Err(e) => {
                    last = format!("{origin}: {e}");
                    self.mark(&origin, false);
                }
            }
        }
        Err(OriginError::Unavailable(last))
    }

    /// `GET /v1/info` of one origin.
    pub async fn info(&self, origin: &str) -> Result<OriginInfo, OriginError> {
        let res = self
            .http
            .get(format!("{}/v1/info", base_url(origin, self.tls)))
            .send()
            .await?;
        json(res).await
    }

    /// The blob's length, or `None` if no origin has it.
    pub async fn stat_blob(&self, digest: &Digest) -> Result<Option<u64>, OriginError> {
        let res = self
            .send(&blob_key(digest), |c, o| {
                c.head(format!("{o}/v1/blobs/{digest}"))
            })
            .await?;
        match res.status() {
            StatusCode::OK => content_length(&res).map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(OriginError::Protocol(format!("HEAD blob answered {s}"))),
        }
    }

    /// The blob's bytes, or a range of them, as a stream.
    pub async fn get_blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobBody, OriginError> {
        let res = self
            .send(&blob_key(digest), |c, o| {
                let req = c.get(format!("{o}/v1/blobs/{digest}"));
                match &range {
                    Some(r) if r.end > r.start => req.header(
                        http::header::RANGE,
                        format!("bytes={}-{}", r.start, r.end - 1),
                    ),
                    _ => req,
                }
            })
            .await?;
        let res = check(res).await?;
        let length = content_length(&res)?;
        let total = match res.status() {
            StatusCode::PARTIAL_CONTENT => res
                .headers()
                .get(http::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('/').next())
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| OriginError::Protocol("206 without a Content-Range".into()))?,
            _ => length,
        };
        Ok(BlobBody {
            length,
            total,
            stream: Box::pin(res.bytes_stream()),
        })
    }

    /// A small blob (a manifest, a config) read whole and checked against its digest.
    /// Refuses blobs longer than `max` bytes.
    pub async fn get_blob_bytes(&self, digest: &Digest, max: u64) -> Result<Bytes, OriginError> {
        let body = self.get_blob(digest, None).await?;
        if body.length > max {
            return Err(OriginError::Protocol(format!(
                "blob {digest} is {} bytes, more than the {max} expected",
                body.length
            )));
        }
        let bytes: Vec<Bytes> = body.stream.try_collect().await?;
        let bytes = Bytes::from(bytes.concat());
        let mut v = digest.verifier();
        v.update(&bytes);
        v.finish()
            .map_err(|m| OriginError::Protocol(format!("origin sent wrong bytes: {m}")))?;
        Ok(bytes)
    }

    /// Uploads a blob from a stream. A stream can be sent once, so this tries a single
    /// origin: the first owner that is not known to be down.
    pub async fn put_blob<S>(
        &self,
        digest: &Digest,
        length: Option<u64>,
        body: S,
    ) -> Result<BlobInfo, OriginError>
    where
        S: futures::TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        let origin = self
            .ranked(&blob_key(digest))
            .into_iter()
            .next()
            .ok_or_else(|| OriginError::Unavailable("no origins".into()))?;
        let mut req = self
            .http
            .put(format!("{origin}/v1/blobs/{digest}"))
            .body(reqwest::Body::wrap_stream(body));
        if let Some(n) = length {
            req = req.header(http::header::CONTENT_LENGTH, n);
        }
        let res = match self.auth(req).send().await {
            Ok(r) => r,
            Err(e) => {
                self.mark(&origin, false);
                return Err(e.into());
            }
        };
        let entry: BlobEntry = json(res).await?;
        Ok(BlobInfo {
            digest: entry.digest,
            length: entry.length,
        })
    }

    /// Uploads a blob held in memory, trying each origin in turn.
    pub async fn put_blob_bytes(
        &self,
        digest: &Digest,
        bytes: Bytes,
    ) -> Result<BlobInfo, OriginError> {
        let res = self
            .send(&blob_key(digest), |c, o| {
                c.put(format!("{o}/v1/blobs/{digest}")).body(bytes.clone())
            })
            .await?;
        let entry: BlobEntry = json(res).await?;
        Ok(BlobInfo {
            digest: entry.digest,
            length: entry.length,
        })
    }

    pub async fn delete_blob(&self, digest: &Digest) -> Result<(), OriginError> {
        let res = self
            .send(&blob_key(digest), |c, o| {
                c.delete(format!("{o}/v1/blobs/{digest}"))
            })
            .await?;
        check(res).await.map(drop)
    }

    /// The blob's metainfo as the origin answered it (signed, unless the origin is keyless
    /// and insecure), checked to be well formed and to describe the blob asked for, but not
    /// verified: whoever acts on piece hashes checks the signature
    /// ([`crate::signature::MetainfoTrust`]); a tracker passes these bytes on untouched.
    pub async fn metainfo_wire(&self, digest: &Digest) -> Result<Bytes, OriginError> {
        let res = self
            .send(&blob_key(digest), |c, o| {
                c.get(format!("{o}/v1/blobs/{digest}/metainfo"))
            })
            .await?;
        let bytes = check(res).await?.bytes().await?;
        crate::signature::Envelope::parse(&bytes)
            .and_then(|e| e.metainfo_unverified(*digest))
            .map_err(|e| OriginError::Protocol(format!("bad metainfo: {e}")))?;
        Ok(bytes)
    }

    /// The blob's metainfo, checked to describe the blob asked for, its signature not
    /// checked: for tools and tests that trust the origins they name.
    pub async fn metainfo(&self, digest: &Digest) -> Result<Metainfo, OriginError> {
        let bytes = self.metainfo_wire(digest).await?;
        crate::signature::Envelope::parse(&bytes)
            .and_then(|e| e.metainfo_unverified(*digest))
            .map_err(|e| OriginError::Protocol(format!("bad metainfo: {e}")))
    }

    /// What a tag points at, or `None` if the tag does not exist.
    pub async fn get_tag(&self, name: &RepoName, tag: &Tag) -> Result<Option<Digest>, OriginError> {
        let res = self
            .send(&tag_key(name, tag), |c, o| {
                c.get(format!("{o}/v1/tags/{name}:{tag}"))
            })
            .await?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: TagBody = json(res).await?;
        Ok(Some(body.digest))
    }

    pub async fn put_tag(
        &self,
        name: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<(), OriginError> {
        let body = TagBody { digest: *digest };
        let res = self
            .send(&tag_key(name, tag), |c, o| {
                c.put(format!("{o}/v1/tags/{name}:{tag}")).json(&body)
            })
            .await?;
        check(res).await.map(drop)
    }

    pub async fn delete_tag(&self, name: &RepoName, tag: &Tag) -> Result<(), OriginError> {
        let res = self
            .send(&tag_key(name, tag), |c, o| {
                c.delete(format!("{o}/v1/tags/{name}:{tag}"))
            })
            .await?;
        check(res).await.map(drop)
    }

    /// A page of a repository's tags, or `None` if it has none.
    pub async fn list_tags(
        &self,
        name: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Option<TagList>, OriginError> {
        let query = page_query(n, last);
        let res = self
            .send(name.as_str().as_bytes(), |c, o| {
                c.get(format!("{o}/v1/repositories/{name}/tags"))
                    .query(&query)
            })
            .await?;
        if res.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        json(res).await.map(Some)
    }

    /// Records `referrer` as naming `subject` in repository `name` (idempotent).
    pub async fn put_referrer(
        &self,
        name: &RepoName,
        subject: &Digest,
        referrer: &Referrer,
    ) -> Result<(), OriginError> {
        let res = self
            .send(&referrers_key(name, subject), |c, o| {
                c.put(format!("{o}/v1/referrers/{name}@{subject}"))
                    .json(referrer)
            })
            .await?;
        check(res).await.map(drop)
    }

    /// The manifests in repository `name` that name `subject`, in no particular order;
    /// empty when there are none.
    pub async fn list_referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Referrer>, OriginError> {
        let res = self
            .send(&referrers_key(name, subject), |c, o| {
                c.get(format!("{o}/v1/referrers/{name}@{subject}"))
            })
            .await?;
        let list: ReferrerList = json(res).await?;
        Ok(list.referrers)
    }

    /// Forgets that `referrer` names `subject` in repository `name`.
    pub async fn delete_referrer(
        &self,
        name: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<(), OriginError> {
        let res = self
            .send(&referrers_key(name, subject), |c, o| {
                c.delete(format!("{o}/v1/referrers/{name}@{subject}/{referrer}"))
            })
            .await?;
        check(res).await.map(drop)
    }

    pub async fn list_repositories(
        &self,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Vec<String>, OriginError> {
        let query = page_query(n, last);
        let res = self
            .send(b"repositories", |c, o| {
                c.get(format!("{o}/v1/repositories")).query(&query)
            })
            .await?;
        let list: RepositoryList = json(res).await?;
        Ok(list.repositories)
    }
}

fn page_query(n: Option<usize>, last: Option<&str>) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(n) = n {
        q.push(("n", n.to_string()));
    }
    if let Some(l) = last {
        q.push(("last", l.to_owned()));
    }
    q
}

fn content_length(res: &reqwest::Response) -> Result<u64, OriginError> {
    res.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| OriginError::Protocol("answer without a Content-Length".into()))
}

/// Passes a success through; turns an error status into [`OriginError::Api`].
async fn check(res: reqwest::Response) -> Result<reqwest::Response, OriginError> {
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    let body = res.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorEnvelope>(&body) {
        Ok(env) if !env.errors.is_empty() => {
            let first = &env.errors[0];
            Err(OriginError::Api {
                status,
                code: first.code,
                message: first.message.clone(),
            })
        }
        _ => Err(OriginError::Protocol(format!(
            "status {status} without an error envelope"
        ))),
    }
}

async fn json<T: serde::de::DeserializeOwned>(res: reqwest::Response) -> Result<T, OriginError> {
    let res = check(res).await?;
    let bytes = res.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| OriginError::Protocol(format!("bad JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_takes_the_scheme_of_the_tls_mode_and_a_wrong_scheme_is_named() {
        assert_eq!(base_url("o:9000/", true), "https://o:9000");
        assert_eq!(base_url("o:9000", false), "http://o:9000");
        assert_eq!(base_url("http://o:9000", true), "http://o:9000");
        assert!(scheme_problem("m", "o:9000", true).is_none());
        assert!(scheme_problem("m", "https://o:9000", true).is_none());
        assert!(scheme_problem("m", "http://o:9000", false).is_none());
        let p = scheme_problem("origins[0]", "http://o:9000", true).unwrap_or_default();
        assert!(p.contains("origins[0]") && p.contains("https://"), "{p}");
        let p = scheme_problem("origins[0]", "HTTPS://o:9000", false).unwrap_or_default();
        assert!(p.contains("tls.plaintext = true"), "{p}");
    }
}
