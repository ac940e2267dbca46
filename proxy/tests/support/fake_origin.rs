//! An origin that keeps everything in memory and speaks `origin/API.md`, for router tests
//! that need no disk and for injecting faults the real origin does not have (answering 503,
//! counting writes).
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test support: a failure is a failed test

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::StreamExt;
use shoal_core::digest::Digest;
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::origin_client::Referrer;
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Data {
    pub blobs: HashMap<Digest, Bytes>,
    /// name -> tag -> digest
    pub tags: BTreeMap<String, BTreeMap<String, Digest>>,
    /// (name, subject) -> referrers
    pub referrers: HashMap<(String, Digest), Vec<Referrer>>,
}

#[derive(Clone, Default)]
pub struct FakeOrigin {
    pub data: Arc<Mutex<Data>>,
    /// Answer 503 to everything.
    pub down: Arc<AtomicBool>,
    /// Blob uploads that arrived (whatever became of them).
    pub blob_puts: Arc<AtomicUsize>,
}

pub struct Running {
    pub url: String,
    pub origin: FakeOrigin,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeOrigin {
    pub async fn start() -> Running {
        let origin = FakeOrigin::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = router(origin.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Running { url, origin, task }
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.data.lock().unwrap().blobs.contains_key(d)
    }

    pub fn blob(&self, d: &Digest) -> Option<Bytes> {
        self.data.lock().unwrap().blobs.get(d).cloned()
    }

    pub fn blob_count(&self) -> usize {
        self.data.lock().unwrap().blobs.len()
    }

    pub fn insert_blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        self.data
            .lock()
            .unwrap()
            .blobs
            .insert(d, Bytes::copy_from_slice(bytes));
        d
    }
}

fn router(origin: FakeOrigin) -> Router {
    Router::new()
        .route("/v1/blobs/{digest}", any(blob))
        .route("/v1/repositories", get(repositories))
        .route("/v1/repositories/{*rest}", any(repository))
        .layer(axum::middleware::from_fn_with_state(
            origin.clone(),
            |State(o): State<FakeOrigin>, req, next: axum::middleware::Next| async move {
                if o.down.load(Ordering::SeqCst) {
                    return ApiError::new(ErrorCode::Unavailable, "down").into_response();
                }
                next.run(req).await
            },
        ))
        .with_state(origin)
}

fn err(code: ErrorCode, msg: &str) -> Response {
    ApiError::new(code, msg.to_owned()).into_response()
}

async fn blob(
    State(o): State<FakeOrigin>,
    Path(digest): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(digest) = digest.parse::<Digest>() else {
        return err(ErrorCode::DigestInvalid, "bad digest");
    };
    match method {
        Method::PUT => {
            o.blob_puts.fetch_add(1, Ordering::SeqCst);
            let mut v = digest.verifier();
            let mut buf = Vec::new();
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else {
                    return err(ErrorCode::BlobUploadInvalid, "body failed");
                };
                v.update(&chunk);
                buf.extend_from_slice(&chunk);
            }
            if let Some(n) = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                && n != buf.len()
            {
                return err(ErrorCode::SizeInvalid, "length");
            }
            if v.finish().is_err() {
                return err(ErrorCode::DigestInvalid, "mismatch");
            }
            let len = buf.len();
            o.data.lock().unwrap().blobs.insert(digest, buf.into());
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({"digest": digest, "length": len})),
            )
                .into_response()
        }
        Method::HEAD | Method::GET => {
            let Some(bytes) = o.blob(&digest) else {
                return err(ErrorCode::BlobUnknown, "unknown");
            };
            let len = bytes.len() as u64;
            let range = shoal_core::range::parse(
                headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
                len,
            );
            let (status, slice, cr) = match range {
                Err(e) => return ApiError::from(e).into_response(),
                Ok(shoal_core::range::RangeRequest::Full) => (StatusCode::OK, bytes, None),
                Ok(shoal_core::range::RangeRequest::Partial(r)) => (
                    StatusCode::PARTIAL_CONTENT,
                    bytes.slice(r.start as usize..r.end as usize),
                    Some(shoal_core::range::content_range(&r, len)),
                ),
            };
            let mut res = if method == Method::HEAD {
                let mut r = (status, Body::empty()).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, slice.len().into());
                r
            } else {
                (status, slice).into_response()
            };
            res.headers_mut()
                .insert("docker-content-digest", digest.to_string().parse().unwrap());
            if let Some(cr) = cr {
                res.headers_mut()
                    .insert(header::CONTENT_RANGE, cr.parse().unwrap());
            }
            res
        }
        Method::DELETE => match o.data.lock().unwrap().blobs.remove(&digest) {
            Some(_) => StatusCode::ACCEPTED.into_response(),
            None => err(ErrorCode::BlobUnknown, "unknown"),
        },
        _ => err(ErrorCode::Unsupported, "method"),
    }
}

#[derive(serde::Deserialize)]
struct Page {
    n: Option<usize>,
    last: Option<String>,
}

fn page(all: impl Iterator<Item = String>, p: &Page) -> Vec<String> {
    all.filter(|t| p.last.as_ref().is_none_or(|l| t > l))
        .take(p.n.unwrap_or(usize::MAX))
        .collect()
}

async fn repositories(State(o): State<FakeOrigin>, Query(p): Query<Page>) -> Response {
    let data = o.data.lock().unwrap();
    let names = page(
        data.tags
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(n, _)| n.clone()),
        &p,
    );
    axum::Json(serde_json::json!({ "repositories": names })).into_response()
}

async fn repository(
    State(o): State<FakeOrigin>,
    Path(rest): Path<String>,
    Query(p): Query<Page>,
    method: Method,
    body: Bytes,
) -> Response {
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name_upto = |k: usize| segs[..n - k].join("/");
    let mut data = o.data.lock().unwrap();
    if segs[n - 1] == "tags" {
        let name = name_upto(1);
        let Some(tags) = data.tags.get(&name).filter(|t| !t.is_empty()) else {
            return err(ErrorCode::NameUnknown, "no tags");
        };
        let tags = page(tags.keys().cloned(), &p);
        return axum::Json(serde_json::json!({"name": name, "tags": tags})).into_response();
    }
    if n >= 3 && segs[n - 2] == "tags" {
        let name = name_upto(2);
        let tag = segs[n - 1].to_owned();
        return match method {
            Method::PUT => {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    return err(ErrorCode::ManifestInvalid, "body");
                };
                let Some(d) = v["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) else {
                    return err(ErrorCode::DigestInvalid, "digest");
                };
                data.tags.entry(name).or_default().insert(tag, d);
                StatusCode::CREATED.into_response()
            }
            Method::GET => match data.tags.get(&name).and_then(|t| t.get(&tag)) {
                Some(d) => axum::Json(serde_json::json!({ "digest": d })).into_response(),
                None => err(ErrorCode::ManifestUnknown, "tag"),
            },
            Method::DELETE => match data.tags.get_mut(&name).and_then(|t| t.remove(&tag)) {
                Some(_) => StatusCode::ACCEPTED.into_response(),
                None => err(ErrorCode::ManifestUnknown, "tag"),
            },
            _ => err(ErrorCode::Unsupported, "method"),
        };
    }
    if n >= 3 && segs[n - 2] == "referrers" {
        let name = name_upto(2);
        let Ok(subject) = segs[n - 1].parse::<Digest>() else {
            return err(ErrorCode::DigestInvalid, "subject");
        };
        return match method {
            Method::PUT => {
                let Ok(r) = serde_json::from_slice::<Referrer>(&body) else {
                    return err(ErrorCode::ManifestInvalid, "referrer");
                };
                let list = data.referrers.entry((name, subject)).or_default();
                list.retain(|x| x.digest != r.digest);
                list.push(r);
                StatusCode::CREATED.into_response()
            }
            Method::GET => {
                let list = data
                    .referrers
                    .get(&(name, subject))
                    .cloned()
                    .unwrap_or_default();
                axum::Json(serde_json::json!({ "referrers": list })).into_response()
            }
            _ => err(ErrorCode::Unsupported, "method"),
        };
    }
    if n >= 4 && segs[n - 3] == "referrers" && method == Method::DELETE {
        let name = name_upto(3);
        let (Ok(subject), Ok(r)) = (segs[n - 2].parse::<Digest>(), segs[n - 1].parse::<Digest>())
        else {
            return err(ErrorCode::DigestInvalid, "digest");
        };
        let list = data.referrers.entry((name, subject)).or_default();
        let before = list.len();
        list.retain(|x| x.digest != r);
        return if list.len() < before {
            StatusCode::ACCEPTED.into_response()
        } else {
            err(ErrorCode::ManifestUnknown, "referrer")
        };
    }
    err(ErrorCode::Unsupported, "path")
}
