//! Getting a blob's bytes to a client: from the cache, straight from an origin (manifests
//! and small blobs), or from the swarm as its pieces verify.
//!
//! A swarm blob is streamed to the client in order while it downloads, but the response's
//! last chunk is held back until the whole blob has matched its digest: a blob whose pieces
//! all verified against a lying metainfo ends in a broken transfer, never in a completed
//! response with wrong bytes.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::FutureExt;
use futures::{Stream, StreamExt, TryStreamExt};
use shoal_core::signature::Trusted;
use shoal_core::store::StoreError;
use shoal_core::{ApiError, Digest, ErrorCode, Metainfo};
use shoal_p2p::DownloadHandle;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::cache::Hold;
use crate::error::AgentError;
use crate::metrics::Metrics;
use crate::state::{AppState, State, lock};

/// A byte stream for a response body. An error breaks the transfer off.
pub type BodyStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// What a GET of a blob answers with.
pub struct BlobRead {
    /// The whole blob's length.
    pub length: u64,
    /// The bytes this answer carries.
    pub span: Range<u64>,
    /// A `Range` asked for `span` (206), rather than the whole blob (200).
    pub partial: bool,
    pub body: BodyStream,
}

pub fn blob_unknown(digest: &Digest) -> ApiError {
    ApiError::new(ErrorCode::BlobUnknown, format!("blob {digest} is unknown"))
}

impl State {
    /// Whether a blob of this length skips the swarm.
    fn is_direct(&self, length: u64) -> bool {
        length == 0 || length <= self.config.swarm.direct_max.bytes()
    }

    /// The blob's length from what is known (the cache, a download in progress, or its
    /// metainfo), without starting a download.
    pub async fn blob_length(&self, digest: Digest) -> Result<u64, ApiError> {
        if let Some(len) = self.cache.lookup(&digest) {
            return Ok(len);
        }
        if let Some(h) = self.downloads.lock().await.get(&digest) {
            return Ok(h.metainfo().length());
        }
        match self.upstream.metainfo(digest).await? {
            Some(t) => Ok(t.metainfo.length()),
            None => Err(blob_unknown(&digest)),
        }
    }

    /// The swarm download of `digest` this agent runs, if any.
    pub async fn active_download(&self, digest: &Digest) -> Option<DownloadHandle> {
        self.downloads.lock().await.get(digest).cloned()
    }
}

/// Opens a blob for a GET. `range` is the request's `Range` header.
pub async fn read(
    st: &AppState,
    digest: Digest,
    range: Option<&str>,
) -> Result<BlobRead, ApiError> {
    let hold = st.cache.hold(digest);
    if let Some(length) = st.cache.lookup(&digest) {
        match read_cached(st, digest, length, range, hold).await {
            Ok(r) => {
                st.metrics.cache_hits.inc();
                if !st.is_direct(length) {
                    ensure_seeding(st, digest);
                }
                return Ok(r);
            }
            Err(CachedRead::Missing(p)) => {
                st.cache.forget(&digest);
                return fetch(st, digest, range, p).await;
            }
            Err(CachedRead::Api(e)) => return Err(e),
        }
    }
    fetch(st, digest, range, hold).await
}

/// A body stream that keeps its blob from eviction until the body is dropped.
struct Holding {
    inner: BodyStream,
    _hold: Hold,
}

impl Stream for Holding {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

enum CachedRead {
    /// The index listed the blob but its file is gone; the hold comes back for the fetch.
    Missing(Hold),
    Api(ApiError),
}

/// The bytes to send, and whether they answer a `Range`.
fn span_of(range: Option<&str>, length: u64) -> Result<(Range<u64>, bool), ApiError> {
    Ok(match shoal_core::range::parse(range, length)? {
        shoal_core::range::RangeRequest::Full => (0..length, false),
        shoal_core::range::RangeRequest::Partial(r) => (r, true),
    })
}

async fn read_cached(
    st: &AppState,
    digest: Digest,
    length: u64,
    range: Option<&str>,
    hold: Hold,
) -> Result<BlobRead, CachedRead> {
    let (span, partial) = span_of(range, length).map_err(CachedRead::Api)?;
    let mut file = match st.cache.store().open_blob(&digest).await {
        Ok((f, _)) => f,
        Err(StoreError::NotFound(_)) => return Err(CachedRead::Missing(hold)),
        Err(e) => return Err(CachedRead::Api(e.into())),
    };
    file.seek(io::SeekFrom::Start(span.start))
        .await
        .map_err(|e| CachedRead::Api(ApiError::internal(e)))?;
    let reader =
        tokio_util::io::ReaderStream::with_capacity(file.take(span.end - span.start), 256 << 10);
    let metrics = st.metrics.clone();
    let body = reader.inspect_ok(move |c| metrics.client_bytes.inc_by(c.len() as u64));
    Ok(BlobRead {
        length,
        span,
        partial,
        body: Box::pin(Holding {
            inner: Box::pin(body),
            _hold: hold,
        }),
    })
}

/// A cache miss: a small blob from an origin, anything else from the swarm.
async fn fetch(
    st: &AppState,
    digest: Digest,
    range: Option<&str>,
    hold: Hold,
) -> Result<BlobRead, ApiError> {
    st.metrics.cache_misses.inc();
    // A download already running started from verified metainfo; otherwise the metainfo
    // is verified here, before anything else is done with it.
    let (length, start) = match st.active_download(&digest).await {
        Some(h) => (h.metainfo().length(), Start::Join(h)),
        None => {
            let t = st
                .upstream
                .metainfo(digest)
                .await?
                .ok_or_else(|| blob_unknown(&digest))?;
            (t.metainfo.length(), Start::New(t))
        }
    };
    if st.is_direct(length) {
        // The metainfo's length only chooses the road: the answer is sized by the verified
        // bytes, fetched up to the configured bound, never by what the metainfo claims
        // (unsigned metainfo is believed when the agent is insecure).
        let max = st.config.swarm.direct_max.bytes();
        let bytes = direct(st, digest, max).await?;
        return direct_read(st, bytes, range, hold);
    }
    let (span, partial) = span_of(range, length)?;
    let handle = match start {
        Start::Join(h) => h,
        Start::New(t) => swarm(st, t).await?,
    };
    let body = client_stream(
        handle,
        span.clone(),
        hold,
        st.metrics.clone(),
        st.config.swarm.stall_timeout,
    );
    Ok(BlobRead {
        length,
        span,
        partial,
        body: Box::pin(body),
    })
}

/// The answer for a blob fetched whole from an origin: `bytes` verified against the digest,
/// so their length is the blob's.
fn direct_read(
    st: &AppState,
    bytes: Bytes,
    range: Option<&str>,
    hold: Hold,
) -> Result<BlobRead, ApiError> {
    let length = bytes.len() as u64;
    let (span, partial) = span_of(range, length)?;
    let part = bytes.slice(span.start as usize..span.end as usize);
    st.metrics.client_bytes.inc_by(part.len() as u64);
    drop(hold);
    Ok(BlobRead {
        length,
        span,
        partial,
        body: Box::pin(futures::stream::once(async move { Ok(part) })),
    })
}

enum Start {
    Join(DownloadHandle),
    New(Trusted),
}

/// Starts (or joins) the swarm download of a blob from verified metainfo. One digest is
/// started once: later askers get the same handle, and the p2p node shares per digest as
/// well.
async fn swarm(st: &AppState, trusted: Trusted) -> Result<DownloadHandle, ApiError> {
    let Trusted {
        metainfo: meta,
        wire,
    } = trusted;
    let digest = meta.digest();
    let mut downloads = st.downloads.lock().await;
    if let Some(h) = downloads.get(&digest) {
        return Ok(h.clone());
    }
    let reservation = st
        .cache
        .reserve(meta.length(), &st.node)
        .await
        .map_err(ApiError::from)?;
    let handle = st
        .node
        .download(meta.clone())
        .await
        .map_err(|e| ApiError::from(AgentError::from(e)))?;
    downloads.insert(digest, handle.clone());
    drop(downloads);
    let already = handle.progress().borrow().outcome.is_some();
    let started = Instant::now();
    let watcher = {
        let st = Arc::clone(st);
        let handle = handle.clone();
        async move {
            let outcome = handle.finished().await;
            match &outcome {
                Ok(info) => {
                    if let Err(e) = st.cache.save_metainfo(&digest, &wire).await {
                        tracing::warn!(error = %e, "cannot save the metainfo; the blob will not be seeded after a restart");
                    }
                    st.cache.insert(info.digest, info.length);
                    if !already {
                        st.metrics
                            .download_seconds
                            .observe(started.elapsed().as_secs_f64());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "swarm download failed"),
            }
            st.downloads.lock().await.remove(&digest);
            drop(reservation);
            if outcome.is_ok()
                && let Err(e) = st.cache.trim(&st.node).await
            {
                tracing::warn!(error = %e, "cache eviction failed");
            }
        }
    };
    st.tasks
        .spawn(tracing::info_span!("download", %digest), watcher);
    Ok(handle)
}

/// The bytes of `span` from a download, in order as pieces verify; the last chunk only once
/// the whole blob has verified. A stall or a failure breaks the stream off.
fn client_stream(
    handle: DownloadHandle,
    span: Range<u64>,
    hold: Hold,
    metrics: Metrics,
    stall: Duration,
) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    struct S {
        handle: DownloadHandle,
        inner:
            std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, shoal_p2p::DownloadError>> + Send>>,
        held: Option<Bytes>,
        done: bool,
        metrics: Metrics,
        stall: Duration,
        _hold: Hold,
    }
    let inner = Box::pin(handle.stream(span));
    let s = S {
        handle,
        inner,
        held: None,
        done: false,
        metrics,
        stall,
        _hold: hold,
    };
    futures::stream::unfold(s, |mut s| async move {
        if s.done {
            return None;
        }
        let abort = |s: &mut S, why: String| {
            s.done = true;
            s.metrics.aborted.inc();
            tracing::warn!(digest = %s.handle.metainfo().digest(), reason = %why, "client transfer broken off");
            io::Error::other(why)
        };
        loop {
            match tokio::time::timeout(s.stall, s.inner.next()).await {
                Err(_) => {
                    let why = format!("no piece arrived for {:?}", s.stall);
                    let e = abort(&mut s, why);
                    return Some((Err(e), s));
                }
                Ok(Some(Ok(chunk))) => {
                    if let Some(prev) = s.held.replace(chunk) {
                        s.metrics.client_bytes.inc_by(prev.len() as u64);
                        return Some((Ok(prev), s));
                    }
                }
                Ok(Some(Err(e))) => {
                    let e = abort(&mut s, e.to_string());
                    return Some((Err(e), s));
                }
                Ok(None) => {
                    // Everything but the held chunk is out: it follows only a verified blob.
                    return match s.handle.finished().await {
                        Ok(_) => {
                            s.done = true;
                            let last = s.held.take()?;
                            s.metrics.client_bytes.inc_by(last.len() as u64);
                            Some((Ok(last), s))
                        }
                        Err(e) => {
                            let e = abort(&mut s, e.to_string());
                            Some((Err(e), s))
                        }
                    };
                }
            }
        }
    })
}

/// Fetches a blob straight from an origin, checks it against its digest, stores it in the
/// cache and returns it. Concurrent askers of one digest share one fetch. `max` bounds the
/// length accepted; a longer blob is refused.
pub async fn direct(st: &AppState, digest: Digest, max: u64) -> Result<Bytes, ApiError> {
    let fut = {
        let mut direct = lock(&st.direct);
        match direct.get(&digest) {
            Some(f) => f.clone(),
            None => {
                let st2 = Arc::clone(st);
                let f = async move {
                    let r = direct_fetch(&st2, digest, max).await;
                    lock(&st2.direct).remove(&digest);
                    r
                }
                .boxed()
                .shared();
                direct.insert(digest, f.clone());
                f
            }
        }
    };
    fut.await
}

async fn direct_fetch(st: &AppState, digest: Digest, max: u64) -> Result<Bytes, ApiError> {
    let bytes = match fetch_small(st, digest, max).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return Err(ApiError::new(
                ErrorCode::BlobUnknown,
                format!("blob {digest} is longer than {max} bytes"),
            ));
        }
        Err(e) => return Err(e),
    };
    let _reservation = st
        .cache
        .reserve(bytes.len() as u64, &st.node)
        .await
        .map_err(ApiError::from)?;
    let info = st
        .cache
        .store()
        .put_bytes(Some(digest), &bytes)
        .await
        .map_err(ApiError::from)?;
    st.cache.insert(info.digest, info.length);
    Ok(bytes)
}

/// A blob of at most `max` bytes from an origin, verified; `None` if it is longer.
async fn fetch_small(st: &State, digest: Digest, max: u64) -> Result<Option<Bytes>, ApiError> {
    let body = st
        .upstream
        .origins()
        .get_blob(&digest, None)
        .await
        .map_err(ApiError::from)?;
    if body.length > max {
        return Ok(None);
    }
    // The declared length is the origin's word; the buffer grows with what arrives.
    let mut buf = Vec::with_capacity(body.length.min(64 << 10) as usize);
    let mut stream = body.stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ApiError::unavailable)?;
        if (buf.len() + chunk.len()) as u64 > max {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    st.metrics.origin_http_bytes.inc_by(buf.len() as u64);
    let mut v = digest.verifier();
    v.update(&buf);
    if let Err(m) = v.finish() {
        return Err(ApiError::internal(format!(
            "an origin sent wrong bytes: {m}"
        )));
    }
    Ok(Some(Bytes::from(buf)))
}

/// Starts seeding a cached swarm blob again (after a restart, or once the swarm let it go),
/// in the background: the client's answer does not wait for it.
fn ensure_seeding(st: &AppState, digest: Digest) {
    if !lock(&st.seeding).insert(digest) {
        return;
    }
    let st2 = Arc::clone(st);
    st.tasks
        .spawn(tracing::info_span!("seed", %digest), async move {
            // Pinned before the check, so an eviction cannot remove the blob under the seed.
            let _hold = st2.cache.hold(digest);
            if st2.cache.contains(&digest) && st2.node.stats(digest).await.is_none() {
                match seed_metainfo(&st2, digest).await {
                    Some(m) => match st2.node.seed(m).await {
                        Ok(()) => tracing::debug!("seeding a cached blob again"),
                        Err(e) => tracing::warn!(error = %e, "cannot seed a cached blob"),
                    },
                    None => tracing::debug!("no metainfo; the blob is served but not seeded"),
                }
            }
            lock(&st2.seeding).remove(&digest);
        });
}

/// The metainfo to seed a cached blob with: the one saved beside it (verified again, as at
/// every start), or (if a crash lost it, or it no longer verifies) the upstream's, which is
/// saved for next time.
async fn seed_metainfo(st: &State, digest: Digest) -> Option<Metainfo> {
    if let Some(m) = st.cache.load_metainfo(&digest, st.upstream.trust()).await {
        return Some(m);
    }
    let t = match st.upstream.metainfo(digest).await {
        Ok(Some(t)) => t,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(error = %e, "no metainfo to seed with");
            return None;
        }
    };
    if let Err(e) = st.cache.save_metainfo(&digest, &t.wire).await {
        tracing::warn!(error = %e, "cannot save the metainfo");
    }
    Some(t.metainfo)
}
