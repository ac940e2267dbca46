//! The HTTP a benchmark speaks: uploads and timed downloads checked against their digest.
//! Registry pushes, and scrapes of `/metrics`, are the cluster launcher's
//! ([`shoal_cluster::registry`], [`shoal_cluster::http`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use shoal_cluster::registry::client;
use shoal_cluster::registry::{Registry, expect, file_body};
use shoal_core::Digest;
use shoal_core::digest::Hasher;

use super::blob::BlobFile;
use super::{BenchError, Result};

/// Uploads a blob through the origin API (`PUT /v1/blobs/<digest>`) with the write token.
pub async fn upload_to_origin(
    client: &reqwest::Client,
    origin: &str,
    write_token: &str,
    blob: &BlobFile,
) -> Result<()> {
    let what = format!("uploading {} to {origin}", blob.digest);
    let res = client
        .put(format!("{origin}/v1/blobs/{}", blob.digest))
        .bearer_auth(write_token)
        .header(reqwest::header::CONTENT_LENGTH, blob.length)
        .body(file_body(&blob.path).await?)
        .send()
        .await
        .map_err(BenchError::http(what.clone()))?;
    expect(res, &[201], &what).await?;
    Ok(())
}

/// Whether this origin itself holds the blob (`HEAD …?local=1`), asked with a token that
/// reads.
pub async fn origin_holds(
    client: &reqwest::Client,
    origin: &str,
    token: &str,
    digest: &Digest,
) -> bool {
    client
        .head(format!("{origin}/v1/blobs/{digest}?local=1"))
        .bearer_auth(token)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Pushes a blob to a registry with the distribution API's monolithic upload (`POST`
/// `/v2/<name>/blobs/uploads/`, then `PUT <location>&digest=…` with the bytes), without a
/// login.
pub async fn push_blob(
    client: &reqwest::Client,
    registry: &str,
    name: &str,
    blob: &BlobFile,
) -> Result<()> {
    Registry::new(client.clone(), registry, None)
        .push_blob(name, &blob.path, &blob.digest, blob.length)
        .await?;
    Ok(())
}

/// One timed GET of a whole blob, in seconds since the moment the caller counts from.
#[derive(Debug, Clone, Copy)]
pub struct Fetch {
    /// The response's headers arrived.
    pub headers_s: f64,
    /// The first byte of the body arrived.
    pub first_byte_s: f64,
    /// The whole body had arrived (and matched its digest, when checked).
    pub done_s: f64,
    pub bytes: u64,
}

/// GETs `url` and reads the whole body; with `expect` the body must be that blob (length and
/// digest), otherwise it is read and dropped. Times count from `t0`.
pub async fn timed_get(
    client: &reqwest::Client,
    url: &str,
    expect_blob: Option<(Digest, u64)>,
    t0: Instant,
) -> Result<Fetch> {
    timed_get_counting(client, url, expect_blob, t0, &AtomicU64::new(0)).await
}

/// [`timed_get`], adding the body's bytes to `received` as they arrive.
async fn timed_get_counting(
    client: &reqwest::Client,
    url: &str,
    expect_blob: Option<(Digest, u64)>,
    t0: Instant,
    received: &AtomicU64,
) -> Result<Fetch> {
    let what = format!("GET {url}");
    let res = client
        .get(url)
        .send()
        .await
        .map_err(BenchError::http(what.clone()))?;
    let mut res = expect(res, &[200], &what).await?;
    let headers_s = t0.elapsed().as_secs_f64();
    let mut first_byte_s = None;
    let mut hasher = expect_blob.map(|(d, _)| Hasher::new(d.algorithm()));
    let mut bytes = 0u64;
    while let Some(chunk) = res.chunk().await.map_err(BenchError::http(what.clone()))? {
        if first_byte_s.is_none() && !chunk.is_empty() {
            first_byte_s = Some(t0.elapsed().as_secs_f64());
        }
        bytes += chunk.len() as u64;
        received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
    }
    let done_s = t0.elapsed().as_secs_f64();
    if let (Some((digest, length)), Some(h)) = (expect_blob, hasher) {
        if bytes != length {
            return Err(BenchError::Check(format!(
                "{what}: {bytes} bytes, not {length}"
            )));
        }
        let got = h.finalize();
        if got != digest {
            return Err(BenchError::Check(format!(
                "{what}: the body hashes to {got}, not {digest}"
            )));
        }
    }
    Ok(Fetch {
        headers_s,
        first_byte_s: first_byte_s.unwrap_or(done_s),
        done_s,
        bytes,
    })
}

/// GETs `path` from every base URL at the same moment, each body checked to be as long as
/// the blob and the first one hashed too; times count from that moment, and the bodies'
/// bytes together are added to `received` as they arrive. Fails on the first failure, or
/// when `limit` passes.
pub async fn fetch_all(
    bases: &[String],
    path: &str,
    blob: (Digest, u64),
    limit: Duration,
    received: Arc<AtomicU64>,
) -> Result<Vec<Fetch>> {
    // A client each, with its connection opened beforehand, so that no request waits for
    // another's connection or pays for its own handshake.
    let mut clients = Vec::with_capacity(bases.len());
    for b in bases {
        let c = client()?;
        let what = format!("GET {b}/v2/");
        let res = c
            .get(format!("{b}/v2/"))
            .send()
            .await
            .map_err(BenchError::http(what.clone()))?;
        expect(res, &[200], &what).await?;
        clients.push(c);
    }
    let t0 = Instant::now();
    // Dropped on an error or the time limit, the set aborts the downloads still running.
    let mut set = tokio::task::JoinSet::new();
    for (i, (b, c)) in bases.iter().zip(clients).enumerate() {
        let url = format!("{b}{path}");
        // The first body is hashed here; the others only counted. An agent sends a blob's
        // last bytes only once the whole blob matched its digest, and hashing every copy
        // would take this program's share of a small machine from the processes it measures.
        let check = (i == 0).then_some(blob);
        let received = Arc::clone(&received);
        set.spawn(async move {
            let f = timed_get_counting(&c, &url, check, t0, &received).await;
            let f = f.and_then(|f| {
                if f.bytes == blob.1 {
                    Ok(f)
                } else {
                    Err(BenchError::Check(format!(
                        "GET {url}: {} bytes, not {}",
                        f.bytes, blob.1
                    )))
                }
            });
            (i, f)
        });
    }
    let all = async {
        let mut out: Vec<Option<Fetch>> = vec![None; bases.len()];
        while let Some(joined) = set.join_next().await {
            let (i, fetch) =
                joined.map_err(|e| BenchError::Check(format!("a download task failed: {e}")))?;
            out[i] = Some(fetch?);
        }
        Ok(out.into_iter().flatten().collect())
    };
    match tokio::time::timeout(limit, all).await {
        Ok(r) => r,
        Err(_) => Err(BenchError::Timeout(format!(
            "every download finishing within {limit:?}"
        ))),
    }
}
