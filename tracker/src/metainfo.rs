//! Metainfo by digest: fetched from the owning origins, kept in a bounded LRU cache, and
//! fetched once however many peers ask for the same blob at the same moment (a fleet
//! pulling one image asks for each layer's metainfo within a second).
//!
//! What is cached and served is the origins' signed answer byte for byte (checked only to
//! be well formed and to name the digest asked for): agents verify the origins' signature,
//! so a tracker cannot choose piece hashes, and neither can whoever answers in its place.
//!
//! A fetch runs in its own task, so it completes and fills the cache even if every asker
//! hangs up; askers that arrive while it runs wait for the same result. Failures are not
//! cached: the next ask tries the origins again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use shoal_core::origin_client::OriginClient;
use shoal_core::tasks::Tasks;
use shoal_core::{ApiError, Digest, ErrorCode};
use tokio::sync::Semaphore;

use crate::config::MetainfoConfig;
use crate::metrics::Metrics;

type Flight = Shared<BoxFuture<'static, Result<Bytes, ApiError>>>;

/// What each cached entry costs beyond its bytes (map and order entries, roughly).
const ENTRY_OVERHEAD: usize = 160;

/// A least-recently-used map bounded by the bytes it holds.
#[derive(Debug)]
struct Lru {
    map: HashMap<Digest, (Bytes, u64)>,
    order: BTreeMap<u64, Digest>,
    tick: u64,
    bytes: usize,
    capacity: usize,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            capacity,
        }
    }

    fn get(&mut self, d: &Digest) -> Option<Bytes> {
        let (bytes, used) = self.map.get_mut(d)?;
        self.order.remove(used);
        self.tick += 1;
        *used = self.tick;
        self.order.insert(self.tick, *d);
        Some(bytes.clone())
    }

    fn put(&mut self, d: Digest, bytes: Bytes) {
        let cost = bytes.len() + ENTRY_OVERHEAD;
        if cost > self.capacity {
            return;
        }
        if let Some((old, used)) = self.map.remove(&d) {
            self.order.remove(&used);
            self.bytes -= old.len() + ENTRY_OVERHEAD;
        }
        while self.bytes + cost > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.map.remove(&oldest) {
                self.bytes -= old.len() + ENTRY_OVERHEAD;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, d);
        self.map.insert(d, (bytes, self.tick));
        self.bytes += cost;
    }
}

#[derive(Debug)]
pub struct MetainfoCache {
    client: Arc<OriginClient>,
    cache: Mutex<Lru>,
    inflight: Mutex<HashMap<Digest, Flight>>,
    fetches: Semaphore,
    timeout: Duration,
    metrics: Metrics,
    /// Where fetches run: they end with the tracker.
    tasks: Tasks,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes a blob's flight off the in-flight map when its fetch ends, however it ends.
struct Landing<'a> {
    cache: &'a MetainfoCache,
    digest: Digest,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        lock(&self.cache.inflight).remove(&self.digest);
    }
}

impl MetainfoCache {
    pub fn new(
        client: Arc<OriginClient>,
        config: &MetainfoConfig,
        metrics: Metrics,
        tasks: Tasks,
    ) -> Self {
        MetainfoCache {
            client,
            cache: Mutex::new(Lru::new(
                usize::try_from(config.cache_size.bytes()).unwrap_or(usize::MAX),
            )),
            inflight: Mutex::new(HashMap::new()),
            fetches: Semaphore::new(config.max_concurrent_fetches),
            timeout: config.fetch_timeout,
            metrics,
            tasks,
        }
    }

    fn cached(&self, digest: &Digest) -> Option<Bytes> {
        let hit = lock(&self.cache).get(digest);
        if hit.is_some() {
            self.metrics.metainfo_hits.inc();
        }
        hit
    }

    /// The blob's metainfo exactly as the origins answered it: signed by them, so that
    /// agents can tell whether anyone changed it on the way; this tracker holds no key and
    /// changes nothing.
    pub async fn get(self: &Arc<Self>, digest: Digest) -> Result<Bytes, ApiError> {
        if let Some(b) = self.cached(&digest) {
            return Ok(b);
        }
        let flight = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&digest) {
                Some(f) => f.clone(),
                None => {
                    // A fetch may have landed between the look-up above and this lock.
                    if let Some(b) = self.cached(&digest) {
                        return Ok(b);
                    }
                    // The task cannot take itself off the map before it is on it: landing
                    // needs the lock held here.
                    let this = Arc::clone(self);
                    let shutdown = self.tasks.shutdown().clone();
                    let task = self.tasks.spawn(tracing::Span::current(), async move {
                        tokio::select! {
                            r = this.fetch(digest) => r,
                            () = shutdown.cancelled() => Err(ApiError::new(
                                ErrorCode::Unavailable,
                                "the tracker is shutting down",
                            )),
                        }
                    });
                    let flight = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(ApiError::internal(format!("metainfo fetch: {e}")))
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(digest, flight.clone());
                    flight
                }
            }
        };
        self.metrics.metainfo_misses.inc();
        flight.await
    }

    async fn fetch(self: Arc<Self>, digest: Digest) -> Result<Bytes, ApiError> {
        let _landing = Landing {
            cache: &self,
            digest,
        };
        // The semaphore is never closed; if it were, fetching unthrottled beats failing.
        let _permit = self.fetches.acquire().await.ok();
        let result =
            match tokio::time::timeout(self.timeout, self.client.metainfo_wire(&digest)).await {
                Ok(Ok(signed)) => Ok(signed),
                Ok(Err(e)) if e.is_not_found() => {
                    self.metrics.metainfo_fetches.unknown.inc();
                    return Err(ApiError::new(
                        ErrorCode::BlobUnknown,
                        format!("blob {digest} is unknown"),
                    ));
                }
                Ok(Err(e)) => Err(ApiError::from(e)),
                Err(_) => Err(ApiError::unavailable(format!(
                    "the origins did not answer for the metainfo of {digest} within {:?}",
                    self.timeout
                ))),
            };
        match &result {
            Ok(b) => {
                self.metrics.metainfo_fetches.ok.inc();
                let mut cache = lock(&self.cache);
                cache.put(digest, b.clone());
                self.metrics.metainfo_cache_bytes.set(cache.bytes as i64);
            }
            Err(_) => self.metrics.metainfo_fetches.failed.inc(),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_keeps_within_its_bytes_and_drops_the_least_recent() {
        let d = |i: u8| Digest::sha256_of(&[i]);
        let item = Bytes::from(vec![0u8; 1000 - ENTRY_OVERHEAD]);
        let mut lru = Lru::new(3000);
        for i in 0..3 {
            lru.put(d(i), item.clone());
        }
        assert_eq!(lru.bytes, 3000);
        assert!(lru.get(&d(0)).is_some(), "0 is now the most recent");
        lru.put(d(3), item.clone());
        assert!(lru.get(&d(1)).is_none(), "1 was the least recent");
        assert!(lru.get(&d(0)).is_some() && lru.get(&d(2)).is_some());
        assert!(lru.bytes <= 3000);
        // Replacing an entry does not count it twice; an entry larger than the cache is
        // never kept.
        lru.put(d(3), item.clone());
        assert_eq!(lru.bytes, 3000);
        lru.put(d(9), Bytes::from(vec![0u8; 5000]));
        assert!(lru.get(&d(9)).is_none());
        assert_eq!(lru.map.len(), lru.order.len());
    }
}
