//! The bounded blob cache: the store the p2p node downloads into and seeds from, an index of
//! what it holds and when each blob was last used, and eviction.
//!
//! Layout under `cache.dir`:
//!
//! ```text
//! blobs/…, tmp/…          the content-addressed BlobStore (complete blobs; downloads)
//! meta/<alg>/<hex>        each swarm blob's metainfo, so it can be seeded after a restart
//! lock                    held while an agent runs, so two never share a directory
//! ```
//!
//! Recency survives a restart as the blob file's modification time, written when a blob is
//! used (at most once a minute per blob, so that hot blobs cost no disk writes).
//!
//! Eviction removes the least recently used blobs that nobody holds a [`Hold`] on (a request
//! being served or fetching) and that the swarm is not seeding, until the blobs and the
//! downloads in flight fit in `max_size`. Every request pins its digest before it looks the
//! blob up, and eviction drops an entry from the index (under the same lock) before it
//! deletes the file; fetches reserve their room, which waits for an eviction in progress to
//! finish its deletions. So a blob a request found is never deleted under it, and a fetch
//! never writes a blob that an eviction is about to remove.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use shoal_core::signature::MetainfoTrust;
use shoal_core::store::BlobStore;
use shoal_core::{Digest, Metainfo};

use crate::error::AgentError;
use crate::metrics::Metrics;

/// How stale a blob's recorded recency may get before it is written to disk again.
const PERSIST_EVERY: Duration = Duration::from_secs(60);

/// Whether the swarm still needs a blob (it is seeding or downloading it).
pub trait Activity: Send + Sync {
    fn is_active(&self, digest: Digest) -> BoxFuture<'_, bool>;
    /// The blob was evicted: the swarm must stop serving it. It was idle when looked at,
    /// but may have been seeded again before the file went; its open file would then keep
    /// the space in use, and peers would be sent pieces of a blob the cache no longer has.
    fn forget(&self, digest: Digest) -> BoxFuture<'_, ()>;
}

impl Activity for shoal_p2p::Node {
    fn is_active(&self, digest: Digest) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.stats(digest).await.is_some() })
    }

    fn forget(&self, digest: Digest) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.unseed(digest).await;
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    length: u64,
    last_used: SystemTime,
    /// The recency last written to the file's mtime.
    persisted: SystemTime,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<Digest, Entry>,
    holds: HashMap<Digest, usize>,
    total: u64,
    reserved: u64,
}

#[derive(Debug)]
pub struct Cache {
    store: BlobStore,
    meta_dir: PathBuf,
    max: u64,
    index: Mutex<Index>,
    /// Held while an eviction runs, and briefly by every fetch reserving room.
    evicting: tokio::sync::Mutex<()>,
    metrics: Metrics,
    _lock: std::fs::File,
}

/// Keeps a blob from being evicted while it is served or fetched.
#[derive(Debug)]
pub struct Hold {
    cache: Arc<Cache>,
    digest: Digest,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut ix = self.cache.lock();
        if let Some(n) = ix.holds.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                ix.holds.remove(&self.digest);
            }
        }
    }
}

/// Room held for a blob being fetched, released when dropped (by then the blob is in the
/// index, or it failed).
#[derive(Debug)]
pub struct Reservation {
    cache: Arc<Cache>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut ix = self.cache.lock();
        ix.reserved = ix.reserved.saturating_sub(self.bytes);
    }
}

impl Cache {
    /// Opens the cache directory, takes its lock, removes what an earlier process left
    /// half-written, and rebuilds the index from the blobs on disk.
    pub async fn open(dir: &Path, max: u64, metrics: Metrics) -> Result<Arc<Cache>, AgentError> {
        let lock = shoal_core::store::lock_dir(dir)?
            .ok_or_else(|| AgentError::CacheLocked(dir.display().to_string()))?;
        let store = BlobStore::open(dir).await?;
        let meta_dir = dir.join("meta");
        tokio::fs::create_dir_all(&meta_dir).await?;
        let blobs = store.list().await?;
        let s = store.clone();
        let md = meta_dir.clone();
        let entries = tokio::task::spawn_blocking(move || -> io::Result<HashMap<Digest, Entry>> {
            let mut entries = HashMap::new();
            for b in blobs {
                let last_used = std::fs::metadata(s.path_of(&b.digest))
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                entries.insert(
                    b.digest,
                    Entry {
                        length: b.length,
                        last_used,
                        persisted: last_used,
                    },
                );
            }
            clean_meta(&md, &entries)?;
            Ok(entries)
        })
        .await
        .map_err(io::Error::other)??;
        let total = entries.values().map(|e| e.length).sum();
        tracing::info!(
            dir = %dir.display(),
            blobs = entries.len(),
            bytes = total,
            max,
            "cache opened"
        );
        let cache = Arc::new(Cache {
            store,
            meta_dir,
            max,
            index: Mutex::new(Index {
                entries,
                total,
                ..Index::default()
            }),
            evicting: tokio::sync::Mutex::new(()),
            metrics,
            _lock: lock,
        });
        cache.update_gauges(&cache.lock());
        Ok(cache)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update_gauges(&self, ix: &Index) {
        self.metrics.cache_max_bytes.set(self.max as i64);
        self.metrics.cache_bytes.set(ix.total as i64);
        self.metrics.cache_blobs.set(ix.entries.len() as i64);
    }

    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    pub fn max_size(&self) -> u64 {
        self.max
    }

    /// Bytes of the blobs in the index.
    pub fn size(&self) -> u64 {
        self.lock().total
    }

    /// Holds `digest` whether or not the cache holds it: a request does this first.
    pub fn hold(self: &Arc<Self>, digest: Digest) -> Hold {
        *self.lock().holds.entry(digest).or_insert(0) += 1;
        Hold {
            cache: Arc::clone(self),
            digest,
        }
    }

    /// The blob's length if the cache holds it, marking it used.
    pub fn lookup(&self, digest: &Digest) -> Option<u64> {
        let now = SystemTime::now();
        let (length, persist) = {
            let mut ix = self.lock();
            let e = ix.entries.get_mut(digest)?;
            e.last_used = now;
            let persist = now
                .duration_since(e.persisted)
                .map_or(true, |d| d >= PERSIST_EVERY);
            if persist {
                e.persisted = now;
            }
            (e.length, persist)
        };
        if persist {
            let path = self.store.path_of(digest);
            tokio::task::spawn_blocking(move || {
                let r = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(now));
                if let Err(e) = r {
                    tracing::debug!(path = %path.display(), error = %e, "cannot record recency");
                }
            });
        }
        Some(length)
    }

    /// Whether the cache holds the blob, without marking it used.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.lock().entries.contains_key(digest)
    }

    /// Records a blob committed to the store.
    pub fn insert(&self, digest: Digest, length: u64) {
        let now = SystemTime::now();
        let mut ix = self.lock();
        let ix = &mut *ix;
        if ix.entries.contains_key(&digest) {
            return;
        }
        ix.entries.insert(
            digest,
            Entry {
                length,
                last_used: now,
                persisted: now,
            },
        );
        ix.total += length;
        self.update_gauges(ix);
    }

    /// Forgets a blob whose file turned out to be missing.
    pub fn forget(&self, digest: &Digest) {
        let mut ix = self.lock();
        if let Some(e) = ix.entries.remove(digest) {
            ix.total -= e.length;
            tracing::warn!(%digest, "a cached blob's file was missing");
        }
        self.update_gauges(&ix);
    }

    fn meta_path(&self, digest: &Digest) -> PathBuf {
        self.meta_dir
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Keeps a swarm blob's metainfo beside it, in the signed form it arrived in, so that it
    /// can be seeded after a restart without asking anyone.
    pub async fn save_metainfo(&self, digest: &Digest, wire: &[u8]) -> io::Result<()> {
        let path = self.meta_path(digest);
        let bytes = wire.to_vec();
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(io::Error::other)?
    }

    /// The metainfo saved for a cached blob, if it is there and still verifies: a file
    /// changed on disk, or signed by a key since taken out of the config, is not used.
    pub async fn load_metainfo(&self, digest: &Digest, trust: &MetainfoTrust) -> Option<Metainfo> {
        let bytes = tokio::fs::read(self.meta_path(digest)).await.ok()?;
        match trust.accept(bytes.into(), *digest) {
            Ok(t) => Some(t.metainfo),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "the saved metainfo does not verify; it is fetched again");
                None
            }
        }
    }

    /// Reserves `bytes` for a blob about to be fetched, evicting what it must (and can) so
    /// that the cache, the downloads in flight and this one fit in `max_size`.
    pub async fn reserve(
        self: &Arc<Self>,
        bytes: u64,
        activity: &dyn Activity,
    ) -> Result<Reservation, AgentError> {
        let _evicting = self.evicting.lock().await;
        self.evict_locked(bytes, activity).await?;
        self.lock().reserved += bytes;
        Ok(Reservation {
            cache: Arc::clone(self),
            bytes,
        })
    }

    /// Evicts until the cache fits again (after an insert, and now and then, since seeding
    /// blobs become evictable once the swarm lets them go).
    pub async fn trim(&self, activity: &dyn Activity) -> Result<(), AgentError> {
        let _evicting = self.evicting.lock().await;
        self.evict_locked(0, activity).await
    }

    async fn evict_locked(&self, extra: u64, activity: &dyn Activity) -> Result<(), AgentError> {
        let (mut over, candidates) = {
            let ix = self.lock();
            let want = ix.total + ix.reserved + extra;
            if want <= self.max {
                return Ok(());
            }
            let mut c: Vec<(Digest, SystemTime)> = ix
                .entries
                .iter()
                .filter(|(d, _)| !ix.holds.contains_key(*d))
                .map(|(d, e)| (*d, e.last_used))
                .collect();
            c.sort_by_key(|&(_, t)| t);
            (want - self.max, c)
        };
        for (digest, _) in candidates {
            if over == 0 {
                break;
            }
            if activity.is_active(digest).await {
                continue;
            }
            let removed = {
                let mut ix = self.lock();
                if ix.holds.contains_key(&digest) {
                    None
                } else if let Some(e) = ix.entries.remove(&digest) {
                    ix.total -= e.length;
                    self.update_gauges(&ix);
                    Some(e.length)
                } else {
                    None
                }
            };
            let Some(length) = removed else { continue };
            self.store.delete(&digest).await?;
            activity.forget(digest).await;
            match tokio::fs::remove_file(self.meta_path(&digest)).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            self.metrics.cache_evictions.inc();
            tracing::info!(%digest, length, "evicted from the cache");
            over = over.saturating_sub(length);
        }
        if over > 0 {
            tracing::debug!(
                over,
                "cache stays over its size: every other blob is in use or seeding"
            );
        }
        Ok(())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes metainfo files of blobs that are gone and temporary files a crash left.
fn clean_meta(meta_dir: &Path, entries: &HashMap<Digest, Entry>) -> io::Result<()> {
    let Ok(algs) = std::fs::read_dir(meta_dir) else {
        return Ok(());
    };
    for alg in algs {
        let alg = alg?;
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(alg.path()) else {
            continue;
        };
        for f in files {
            let f = f?;
            let name = f.file_name().to_string_lossy().into_owned();
            let keep = format!("{alg_name}:{name}")
                .parse::<Digest>()
                .is_ok_and(|d| entries.contains_key(&d));
            if !keep {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    struct Busy(Mutex<HashSet<Digest>>);

    impl Activity for Busy {
        fn is_active(&self, digest: Digest) -> BoxFuture<'_, bool> {
            let busy = self.0.lock().unwrap().contains(&digest);
            Box::pin(async move { busy })
        }

        fn forget(&self, _: Digest) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    fn idle() -> Busy {
        Busy(Mutex::new(HashSet::new()))
    }

    async fn open(dir: &Path, max: u64) -> Arc<Cache> {
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        Cache::open(dir, max, metrics).await.unwrap()
    }

    async fn put(c: &Cache, fill: u8, len: usize) -> Digest {
        let bytes = vec![fill; len];
        let info = c.store().put_bytes(None, &bytes).await.unwrap();
        c.insert(info.digest, info.length);
        info.digest
    }

    /// Makes `d` look used at `secs` past the epoch, in the index and on disk.
    fn age(c: &Cache, d: &Digest, secs: u64) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        c.lock().entries.get_mut(d).unwrap().last_used = t;
        std::fs::File::options()
            .write(true)
            .open(c.store().path_of(d))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[tokio::test]
    async fn evicts_least_recently_used_first_and_spares_pinned_and_seeding() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), 1000).await;
        let a = put(&c, 1, 300).await;
        let b = put(&c, 2, 300).await;
        let d = put(&c, 3, 300).await;
        age(&c, &a, 10);
        age(&c, &b, 20);
        age(&c, &d, 30);
        assert_eq!(c.size(), 900);

        // Room for 200 more: `a`, the oldest, goes.
        let busy = idle();
        let r = c.reserve(200, &busy).await.unwrap();
        assert!(!c.contains(&a) && c.contains(&b) && c.contains(&d));
        assert!(!c.store().contains(&a).await.unwrap());
        drop(r);

        // `b` and `e` are being served and `d` is seeding: nothing can go, and the cache
        // stays over.
        let pin = c.hold(b);
        busy.0.lock().unwrap().insert(d);
        let e = put(&c, 4, 500).await;
        let _serving = c.hold(e);
        c.trim(&busy).await.unwrap();
        assert!(c.contains(&b) && c.contains(&d) && c.contains(&e));
        assert_eq!(c.size(), 1100);

        // Unpinned, `b` is the oldest that may go.
        drop(pin);
        c.trim(&busy).await.unwrap();
        assert!(!c.contains(&b) && c.contains(&d) && c.contains(&e));
        assert_eq!(c.size(), 800);
    }

    #[tokio::test]
    async fn a_used_blob_outlives_an_older_unused_one() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), 700).await;
        let a = put(&c, 1, 300).await;
        let b = put(&c, 2, 300).await;
        age(&c, &a, 10);
        age(&c, &b, 20);
        assert_eq!(c.lookup(&a), Some(300));
        put(&c, 3, 300).await;
        c.trim(&idle()).await.unwrap();
        assert!(c.contains(&a) && !c.contains(&b));
    }

    #[tokio::test]
    async fn the_index_and_recency_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let pair = shoal_core::signature::KeyPairPem::generate().unwrap();
        let signer = shoal_core::signature::MetainfoSigner::from_pem(&pair.private_pem).unwrap();
        let trust = MetainfoTrust::of_signers([&signer]);
        let (a, b, meta) = {
            let c = open(dir.path(), 10_000).await;
            let a = put(&c, 1, 300).await;
            let b = put(&c, 2, 400).await;
            age(&c, &a, 1_000);
            age(&c, &b, 2_000);
            let data = vec![2u8; 400];
            let meta = Metainfo::from_bytes(&data);
            c.save_metainfo(&b, &signer.sign(&meta)).await.unwrap();
            // A metainfo whose blob is gone is cleaned up at the next start.
            let orphan = Metainfo::from_bytes(b"orphan");
            c.save_metainfo(&orphan.digest(), &signer.sign(&orphan))
                .await
                .unwrap();
            (a, b, meta)
        };
        let c = open(dir.path(), 10_000).await;
        assert_eq!(c.size(), 700);
        assert_eq!(c.lookup(&b), Some(400));
        assert_eq!(c.load_metainfo(&b, &trust).await, Some(meta.clone()));
        let orphan = Digest::sha256_of(b"orphan");
        assert_eq!(c.load_metainfo(&orphan, &trust).await, None);
        // The saved form is verified again at each load: a key no longer trusted, or a file
        // changed on disk, is not believed.
        let other = shoal_core::signature::KeyPairPem::generate().unwrap();
        let rotated = MetainfoTrust::from_pem(&other.public_pem, false).unwrap();
        assert_eq!(c.load_metainfo(&b, &rotated).await, None);
        let path = c.meta_path(&b);
        let mut saved = std::fs::read(&path).unwrap();
        let last = saved.len() - 1;
        saved[last] ^= 1;
        std::fs::write(&path, saved).unwrap();
        assert_eq!(c.load_metainfo(&b, &trust).await, None);
        // `a` was used longer ago than `b`, and it is what goes first.
        let r = c.reserve(9_500, &idle()).await.unwrap();
        assert!(!c.contains(&a) && c.contains(&b));
        drop(r);
    }

    #[tokio::test]
    async fn a_second_agent_cannot_take_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _c = open(dir.path(), 100).await;
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        assert!(matches!(
            Cache::open(dir.path(), 100, metrics).await,
            Err(AgentError::CacheLocked(_))
        ));
    }

    /// Looks idle to eviction while the node seeds the blob: the race between the check
    /// and the deletion.
    struct Racing(shoal_p2p::Node);

    impl Activity for Racing {
        fn is_active(&self, _: Digest) -> BoxFuture<'_, bool> {
            Box::pin(async { false })
        }

        fn forget(&self, digest: Digest) -> BoxFuture<'_, ()> {
            self.0.forget(digest)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_evicted_blob_is_no_longer_served_to_peers() {
        use shoal_core::peer::PeerId;
        use shoal_p2p::wire::{self, Decoder, ErrorCode, Hello, Layout, Message, Unpaced};

        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), 1 << 20).await;
        let bytes = vec![7u8; 600 << 10];
        let meta = Metainfo::from_bytes(&bytes);
        let info = c.store().put_bytes(None, &bytes).await.unwrap();
        c.insert(info.digest, info.length);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let node = shoal_p2p::Node::start(
            shoal_p2p::NodeConfig::agent(),
            listener,
            c.store().clone(),
            Arc::new(shoal_p2p::StaticDiscovery::new(
                Vec::new(),
                Duration::from_secs(60),
            )),
            None,
            &prometheus::Registry::new(),
            shutdown.clone(),
        )
        .unwrap();
        node.seed(meta.clone()).await.unwrap();
        // What a peer asking for the blob is first told.
        let ask = || async {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let hello = Hello {
                digest: meta.digest(),
                peer_id: PeerId::random(),
                origin: false,
            };
            wire::write_hello(&mut s, &hello).await.unwrap();
            wire::read_hello(&mut s).await.unwrap();
            wire::read_message(&mut s, &Decoder::new(Layout::of(&meta)), &Unpaced, |_| {})
                .await
                .unwrap()
        };
        assert!(matches!(ask().await, Message::Bitfield(_)));

        // Room for a new blob needs this one gone.
        let racing = Racing(node.clone());
        drop(c.reserve(1 << 20, &racing).await.unwrap());
        assert!(!c.store().contains(&meta.digest()).await.unwrap());
        assert!(node.stats(meta.digest()).await.is_none());
        assert!(matches!(
            ask().await,
            Message::Error {
                code: ErrorCode::UnknownBlob,
                ..
            }
        ));
        shutdown.cancel();
        node.closed().await;
    }
}
