//! Upload sessions: where the bytes of a chunked upload wait, on local disk, until the final
//! `PUT` sends them on to an origin.
//!
//! A session's bytes are a spool file plus the length and the SHA-256 state of what was
//! accepted so far; the file may be longer than that after a chunk failed half-way, and is
//! cut back before the next write. A chunk is accepted whole or not at all, so a client
//! that disconnects mid-chunk finds, on `GET`, the upload as it was before that chunk.
//! Writing happens in a task of its own that holds the session's lock until the file is
//! consistent again, even when the request that started it has been dropped.
//!
//! Sessions are this process's alone and temporary: the spool directory is emptied at
//! start, and a session with no request for the idle timeout is removed with its file. A
//! session also has a size cap and an absolute lifetime: a client that keeps one busy by
//! drip-feeding it bytes loses it (and its spool space) when the lifetime ends, even in
//! the middle of a chunk.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use shoal_core::digest::{Algorithm, Hasher};
use shoal_core::error::{ApiError, ErrorCode};
use shoal_core::reference::RepoName;
use shoal_core::tasks::Tasks;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::stream::{BoxError, ByteStream};

/// Bytes read from the spool at a time on the way to an origin, and written to it at a
/// time: every file operation is a trip to a blocking thread, so a few large ones cost far
/// less CPU than one per network frame.
const IO_CHUNK: usize = 1 << 20;

/// The accepted bytes of one session.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    /// Bytes accepted so far.
    pub offset: u64,
    /// SHA-256 of the accepted bytes, ready to go on.
    pub hasher: Hasher,
    /// Set when the session is finished, cancelled or expired; a request that waited for
    /// the lock then finds the session gone.
    pub closed: bool,
}

#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub name: RepoName,
    pub started: Instant,
    last_seen: Mutex<Instant>,
    /// The accepted length, readable while a chunk is being written.
    committed: AtomicU64,
    spool: Arc<tokio::sync::Mutex<Spool>>,
    /// Cancelled when the session outlives its lifetime: a chunk being written stops.
    expired: CancellationToken,
    /// The most bytes the session may hold.
    max_size: u64,
}

impl Session {
    fn touch(&self) {
        if let Ok(mut t) = self.last_seen.lock() {
            *t = Instant::now();
        }
    }

    fn idle_since(&self) -> Instant {
        self.last_seen
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| Instant::now())
    }

    /// Bytes accepted so far, without waiting for a chunk in progress.
    pub fn offset(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Appends one chunk to the spool, whole or not at all. Meant to run in a task of its
    /// own (see the module doc). A body that sends nothing for `stall` fails the chunk.
    pub async fn append<S>(
        self: Arc<Self>,
        body: S,
        range: Option<ChunkRange>,
        content_length: Option<u64>,
        stall: Duration,
    ) -> Result<u64, ChunkError>
    where
        S: Stream<Item = Result<Bytes, BoxError>> + Send + Unpin,
    {
        let spool = self.lock().await?;
        let bounds = Bounds {
            stall,
            max_size: self.max_size,
            expired: self.expired.clone(),
        };
        let offset = append(spool, body, range, content_length, bounds).await?;
        self.committed.store(offset, Ordering::Release);
        self.touch();
        Ok(offset)
    }

    /// Waits for the session's other requests to finish and takes it. Fails when the
    /// session was closed meanwhile.
    pub async fn lock(&self) -> Result<OwnedMutexGuard<Spool>, ApiError> {
        let guard = self.spool.clone().lock_owned().await;
        self.touch();
        if guard.closed {
            return Err(unknown_upload());
        }
        Ok(guard)
    }
}

pub fn unknown_upload() -> ApiError {
    ApiError::new(
        ErrorCode::BlobUploadUnknown,
        "upload session unknown or expired",
    )
}

#[derive(Debug)]
pub struct Sessions {
    dir: PathBuf,
    idle_timeout: Duration,
    max: usize,
    max_size: u64,
    max_lifetime: Duration,
    open: Mutex<HashMap<String, Arc<Session>>>,
    in_flight: prometheus::IntGauge,
}

impl Sessions {
    /// Takes `<spool_dir>/uploads` and removes whatever an earlier process left in it.
    pub async fn open(
        spool_dir: &Path,
        idle_timeout: Duration,
        max: usize,
        in_flight: prometheus::IntGauge,
    ) -> io::Result<Self> {
        let dir = spool_dir.join("uploads");
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        tokio::fs::create_dir_all(&dir).await?;
        in_flight.set(0);
        Ok(Sessions {
            dir,
            idle_timeout,
            max,
            max_size: u64::MAX,
            max_lifetime: Duration::MAX,
            open: Mutex::new(HashMap::new()),
            in_flight,
        })
    }

    /// Caps each session at `max_size` bytes and `max_lifetime` from its start.
    pub fn bounded(mut self, max_size: u64, max_lifetime: Duration) -> Self {
        self.max_size = max_size;
        self.max_lifetime = max_lifetime;
        self
    }

    fn map(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>>, ApiError> {
        self.open
            .lock()
            .map_err(|_| ApiError::internal("upload session table lock poisoned"))
    }

    /// Opens a session for repository `name`.
    pub fn create(&self, name: RepoName) -> Result<Arc<Session>, ApiError> {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let now = Instant::now();
        let session = Arc::new(Session {
            id: id.clone(),
            name,
            started: now,
            last_seen: Mutex::new(now),
            committed: AtomicU64::new(0),
            expired: CancellationToken::new(),
            max_size: self.max_size,
            spool: Arc::new(tokio::sync::Mutex::new(Spool {
                path: self.dir.join(&id),
                offset: 0,
                hasher: Hasher::new(Algorithm::Sha256),
                closed: false,
            })),
        });
        let mut map = self.map()?;
        if map.len() >= self.max {
            return Err(ApiError::new(
                ErrorCode::TooManyRequests,
                "too many uploads in progress; retry later",
            )
            .with_header(http::header::RETRY_AFTER, "10"));
        }
        map.insert(id, session.clone());
        self.in_flight.set(map.len() as i64);
        Ok(session)
    }

    /// The session `id` of repository `name`.
    pub fn get(&self, name: &RepoName, id: &str) -> Result<Arc<Session>, ApiError> {
        let session = self
            .map()?
            .get(id)
            .filter(|s| s.name == *name)
            .cloned()
            .ok_or_else(unknown_upload)?;
        session.touch();
        Ok(session)
    }

    /// Ends a session whose lock the caller holds and removes its bytes.
    pub async fn close(&self, id: &str, spool: &mut Spool) {
        spool.closed = true;
        if let Ok(mut map) = self.open.lock() {
            map.remove(id);
            self.in_flight.set(map.len() as i64);
        }
        remove_file(&spool.path).await;
    }

    /// Closes every session idle for longer than the timeout, except those busy with a
    /// request, and every session older than its lifetime, busy or not (a chunk being
    /// written stops and gives the session up). Returns how many were closed.
    pub async fn expire(&self) -> usize {
        let now = Instant::now();
        let candidates: Vec<Arc<Session>> = match self.open.lock() {
            Ok(map) => map
                .values()
                .filter(|s| {
                    if now.saturating_duration_since(s.started) >= self.max_lifetime {
                        s.expired.cancel();
                        return true;
                    }
                    now.saturating_duration_since(s.idle_since()) >= self.idle_timeout
                })
                .cloned()
                .collect(),
            Err(_) => return 0,
        };
        let mut closed = 0;
        for s in candidates {
            // A session busy with a long chunk is not idle, however long ago it began; one
            // past its lifetime has been told to stop, and is closed on a later round,
            // once the chunk has given it up.
            let Ok(mut spool) = s.spool.clone().try_lock_owned() else {
                continue;
            };
            if spool.closed {
                continue;
            }
            tracing::info!(upload = %s.id, name = %s.name, "upload session expired");
            self.close(&s.id, &mut spool).await;
            closed += 1;
        }
        closed
    }

    /// Closes every session not busy with a request; at shutdown, the next start removes
    /// what a request still held. Never waits, so a stalled client cannot hold up an exit.
    pub async fn close_all(&self) {
        let all: Vec<Arc<Session>> = match self.open.lock() {
            Ok(map) => map.values().cloned().collect(),
            Err(_) => return,
        };
        for s in all {
            if let Ok(mut spool) = s.spool.clone().try_lock_owned()
                && !spool.closed
            {
                self.close(&s.id, &mut spool).await;
            }
        }
    }

    /// Expires idle sessions now and then, on `tasks`, until they stop.
    pub fn spawn_reaper(self: &Arc<Self>, tasks: &Tasks) {
        let sessions = self.clone();
        let every = (self.idle_timeout.min(self.max_lifetime) / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        tasks.every(tracing::info_span!("reaper"), every, move || {
            let sessions = sessions.clone();
            async move {
                sessions.expire().await;
            }
        });
    }

    pub fn len(&self) -> usize {
        self.open.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn remove_file(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove spool file"),
    }
}

/// The declared place of a chunk: `Content-Range` start and end (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

/// Reads a PATCH `Content-Range`: the spec's `<start>-<end>`, and the `bytes <start>-<end>/<total>`
/// form of RFC 9110 that some clients send. `None` for a header that is unreadable.
pub fn parse_content_range(value: &str) -> Option<ChunkRange> {
    let v = value.trim();
    let v = v
        .strip_prefix("bytes ")
        .or_else(|| v.strip_prefix("bytes="))
        .unwrap_or(v)
        .trim();
    let v = v.split('/').next().unwrap_or(v);
    let (a, b) = v.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (start, end) = (num(a)?, num(b)?);
    (end >= start).then_some(ChunkRange { start, end })
}

/// Why a chunk was refused.
#[derive(Debug)]
pub enum ChunkError {
    /// It does not start where the upload stands.
    OutOfOrder {
        offset: u64,
    },
    Api(ApiError),
}

impl From<ApiError> for ChunkError {
    fn from(e: ApiError) -> Self {
        ChunkError::Api(e)
    }
}

/// What one chunk is held to.
struct Bounds {
    /// The body may send nothing for this long.
    stall: Duration,
    /// The session may hold no more than this.
    max_size: u64,
    /// The session's lifetime has ended.
    expired: CancellationToken,
}

async fn append<S>(
    mut spool: OwnedMutexGuard<Spool>,
    body: S,
    range: Option<ChunkRange>,
    content_length: Option<u64>,
    bounds: Bounds,
) -> Result<u64, ChunkError>
where
    S: Stream<Item = Result<Bytes, BoxError>> + Send + Unpin,
{
    let Bounds {
        stall,
        max_size,
        expired,
    } = bounds;
    let offset = spool.offset;
    if let Some(r) = range
        && r.start != offset
    {
        return Err(ChunkError::OutOfOrder { offset });
    }
    let too_large = || {
        ApiError::new(
            ErrorCode::SizeInvalid,
            format!("an upload may hold at most {max_size} bytes"),
        )
        .with_status(http::StatusCode::PAYLOAD_TOO_LARGE)
    };
    // `parse_content_range` makes end >= start, so this cannot wrap; a range ending at
    // u64::MAX would overflow the `+ 1`, hence the checked form.
    let declared = match range {
        Some(r) => Some((r.end - r.start).checked_add(1).ok_or_else(too_large)?),
        None => None,
    };
    if let (Some(d), Some(c)) = (declared, content_length)
        && d != c
    {
        return Err(size_invalid(format!(
            "Content-Range covers {d} bytes but Content-Length is {c}"
        ))
        .into());
    }
    let expected = declared.or(content_length);
    if expected.is_some_and(|e| offset.saturating_add(e) > max_size) {
        return Err(too_large().into());
    }
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&spool.path)
        .await
        .map_err(ApiError::internal)?;
    // Whatever a failed chunk left past the accepted bytes goes.
    file.set_len(offset).await.map_err(ApiError::internal)?;
    let mut file = file;
    file.seek(io::SeekFrom::Start(offset))
        .await
        .map_err(ApiError::internal)?;
    let mut file = tokio::io::BufWriter::with_capacity(IO_CHUNK, file);
    let mut hasher = spool.hasher.clone();
    let mut n: u64 = 0;
    let mut body = body;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(stall, body.next()) => next.map_err(|_| {
                ApiError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!("the chunk's body sent nothing for {stall:?}"),
                )
            })?,
            () = expired.cancelled() => return Err(unknown_upload().into()),
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::BlobUploadInvalid,
                format!("the chunk's body failed: {e}"),
            )
        })?;
        n = n.saturating_add(chunk.len() as u64);
        if offset.saturating_add(n) > max_size {
            return Err(too_large().into());
        }
        if let Some(e) = expected
            && n > e
        {
            return Err(
                size_invalid(format!("the chunk is longer than the {e} bytes declared")).into(),
            );
        }
        file.write_all(&chunk).await.map_err(ApiError::internal)?;
        hasher.update(&chunk);
    }
    if let Some(e) = expected
        && n != e
    {
        return Err(size_invalid(format!("the chunk is {n} bytes, {e} were declared")).into());
    }
    // The write is complete only once flushed; the lock is held until then.
    file.flush().await.map_err(ApiError::internal)?;
    spool.offset = offset + n;
    spool.hasher = hasher;
    Ok(spool.offset)
}

fn size_invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::SizeInvalid, message)
}

/// The accepted bytes of a spool as a stream (nothing at all when none were accepted).
pub async fn read(spool: &Spool) -> io::Result<ByteStream> {
    if spool.offset == 0 {
        return Ok(Box::pin(futures::stream::empty()));
    }
    let file = tokio::fs::File::open(&spool.path).await?;
    let reader = tokio::io::AsyncReadExt::take(file, spool.offset);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, IO_CHUNK)
        .map(|r| r.map_err(|e| Box::new(e) as BoxError));
    Ok(Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn a_stalled_chunk_fails_and_frees_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path(), Duration::from_secs(60), 10).await;
        let session = s.create("a".parse().unwrap()).unwrap();
        let stalled = futures::stream::iter(vec![Ok::<_, BoxError>(Bytes::from_static(b"ab"))])
            .chain(futures::stream::pending());
        let e = session
            .clone()
            .append(Box::pin(stalled), None, None, STALL)
            .await;
        assert!(matches!(e, Err(ChunkError::Api(ref a)) if a.code == ErrorCode::BlobUploadInvalid));
        assert_eq!(session.offset(), 0);
        assert!(session.lock().await.is_ok());
    }

    fn gauge() -> prometheus::IntGauge {
        prometheus::IntGauge::new("g", "g").unwrap()
    }

    fn body(
        parts: Vec<Result<&'static [u8], &'static str>>,
    ) -> impl Stream<Item = Result<Bytes, BoxError>> + Send + Unpin {
        futures::stream::iter(parts.into_iter().map(|p| {
            p.map(Bytes::from_static)
                .map_err(|e| Box::new(io::Error::other(e)) as BoxError)
        }))
    }

    async fn sessions(dir: &Path, idle: Duration, max: usize) -> Arc<Sessions> {
        Arc::new(Sessions::open(dir, idle, max, gauge()).await.unwrap())
    }

    async fn collect(spool: &Spool) -> Vec<u8> {
        let mut s = read(spool).await.unwrap();
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[test]
    fn content_ranges() {
        let r = |s, e| Some(ChunkRange { start: s, end: e });
        assert_eq!(parse_content_range("0-99"), r(0, 99));
        assert_eq!(parse_content_range("bytes 100-199/*"), r(100, 199));
        assert_eq!(parse_content_range("bytes=5-5"), r(5, 5));
        assert_eq!(parse_content_range(" 7-9 "), r(7, 9));
        for bad in ["", "5", "9-7", "a-b", "-5", "5-", "1-2-3"] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn chunks_append_in_order_and_failures_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path(), Duration::from_secs(60), 10).await;
        let name: RepoName = "a".parse().unwrap();
        let session = s.create(name.clone()).unwrap();

        let add = |parts, range, len| session.clone().append(body(parts), range, len, STALL);
        let off = add(
            vec![Ok(b"hello ")],
            Some(ChunkRange { start: 0, end: 5 }),
            Some(6),
        )
        .await
        .unwrap();
        assert_eq!(off, 6);

        // Out of order: refused, nothing changes.
        let e = add(vec![Ok(b"x")], Some(ChunkRange { start: 3, end: 3 }), None).await;
        assert!(matches!(e, Err(ChunkError::OutOfOrder { offset: 6 })));

        // A body that breaks half-way: the half that arrived is not kept.
        let e = add(vec![Ok(b"wor"), Err("gone")], None, None).await;
        assert!(matches!(e, Err(ChunkError::Api(ref a)) if a.code == ErrorCode::BlobUploadInvalid));

        // Longer than declared: refused.
        let e = add(
            vec![Ok(b"world!!")],
            Some(ChunkRange { start: 6, end: 10 }),
            None,
        )
        .await;
        assert!(matches!(e, Err(ChunkError::Api(ref a)) if a.code == ErrorCode::SizeInvalid));
        assert_eq!(session.offset(), 6);

        let off = add(vec![Ok(b"wor"), Ok(b"ld")], None, None).await.unwrap();
        assert_eq!(off, 11);
        assert_eq!(session.offset(), 11);

        let g = session.lock().await.unwrap();
        assert_eq!(collect(&g).await, b"hello world");
        assert_eq!(
            g.hasher.clone().finalize(),
            shoal_core::Digest::sha256_of(b"hello world")
        );
        assert_eq!(s.get(&name, &session.id).unwrap().id, session.id);
        assert!(s.get(&"b".parse().unwrap(), &session.id).is_err());
    }

    #[tokio::test]
    async fn the_limit_on_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path(), Duration::from_secs(60), 2).await;
        let a = s.create("a".parse().unwrap()).unwrap();
        s.create("a".parse().unwrap()).unwrap();
        let e = s.create("a".parse().unwrap()).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooManyRequests);
        let mut g = a.lock().await.unwrap();
        s.close(&a.id, &mut g).await;
        drop(g);
        assert!(a.lock().await.is_err());
        s.create("a".parse().unwrap()).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_expire_with_their_bytes_but_busy_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path(), Duration::from_secs(60), 10).await;
        let idle = s.create("a".parse().unwrap()).unwrap();
        let busy = s.create("a".parse().unwrap()).unwrap();
        idle.clone()
            .append(body(vec![Ok(b"data")]), None, None, STALL)
            .await
            .unwrap();
        let spool_file = dir.path().join("uploads").join(&idle.id);
        assert!(spool_file.exists());
        let held = busy.lock().await.unwrap();

        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(s.expire().await, 0);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(s.expire().await, 1);
        assert!(!spool_file.exists());
        assert!(s.get(&"a".parse().unwrap(), &idle.id).is_err());
        drop(held);
        assert_eq!(s.len(), 1);
    }

    #[tokio::test]
    async fn close_all_removes_every_spool_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path(), Duration::from_secs(60), 10).await;
        for _ in 0..3 {
            let session = s.create("a".parse().unwrap()).unwrap();
            session
                .append(body(vec![Ok(b"x")]), None, None, STALL)
                .await
                .unwrap();
        }
        s.close_all().await;
        assert!(s.is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("uploads"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn start_empties_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("uploads")).unwrap();
        std::fs::write(dir.path().join("uploads/leftover"), b"x").unwrap();
        std::fs::write(dir.path().join("mine"), b"x").unwrap();
        sessions(dir.path(), Duration::from_secs(60), 10).await;
        assert!(!dir.path().join("uploads/leftover").exists());
        assert!(
            dir.path().join("mine").exists(),
            "only uploads/ belongs to the proxy"
        );
    }

    #[tokio::test]
    async fn a_session_holds_no_more_than_its_size_cap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(
            Sessions::open(dir.path(), Duration::from_secs(60), 10, gauge())
                .await
                .unwrap()
                .bounded(5, Duration::from_secs(3600)),
        );
        let session = s.create("a".parse().unwrap()).unwrap();
        let ok = session
            .clone()
            .append(body(vec![Ok(&b"abc"[..])]), None, None, STALL);
        assert_eq!(ok.await.unwrap(), 3);
        // Declared past the cap: refused before a byte is read.
        let declared = session
            .clone()
            .append(body(vec![Ok(&b"abc"[..])]), None, Some(3), STALL)
            .await;
        assert!(
            matches!(declared, Err(ChunkError::Api(ref e)) if e.status == http::StatusCode::PAYLOAD_TOO_LARGE)
        );
        // Undeclared, cut off where it passes the cap; the session is as it was.
        let streamed = session
            .clone()
            .append(body(vec![Ok(&b"ab"[..]), Ok(&b"c"[..])]), None, None, STALL)
            .await;
        assert!(
            matches!(streamed, Err(ChunkError::Api(ref e)) if e.status == http::StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(session.offset(), 3);
        let range = Some(ChunkRange {
            start: 3,
            end: u64::MAX,
        });
        let huge = session
            .clone()
            .append(body(vec![]), range, None, STALL)
            .await;
        assert!(matches!(huge, Err(ChunkError::Api(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drip_fed_session_expires_at_its_lifetime_and_its_file_goes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(
            Sessions::open(dir.path(), Duration::from_secs(600), 10, gauge())
                .await
                .unwrap()
                .bounded(u64::MAX, Duration::from_secs(10)),
        );
        let session = s.create("a".parse().unwrap()).unwrap();
        let drip = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, BoxError>(Bytes::from_static(b"z")), ()))
        });
        let chunk = tokio::spawn(session.clone().append(Box::pin(drip), None, None, STALL));
        let mut rounds = 0;
        while !s.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            s.expire().await;
            rounds += 1;
            assert!(rounds < 20, "the session outlived its lifetime");
        }
        assert!(rounds >= 9, "expired after {rounds}s, before its lifetime");
        assert!(
            matches!(chunk.await.unwrap(), Err(ChunkError::Api(ref e)) if e.code == ErrorCode::BlobUploadUnknown)
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("uploads"))
                .unwrap()
                .count(),
            0
        );
    }
}
