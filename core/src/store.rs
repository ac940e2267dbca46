//! The content-addressed blob store on disk.
//!
//! Layout under the root:
//!
//! ```text
//! blobs/<algorithm>/<first two hex>/<hex>   complete, verified blobs
//! tmp/<random>                              writes in progress
//! ```
//!
//! A write goes to a fresh file in `tmp/`, is hashed on the way, and is renamed into
//! `blobs/` only once its digest (and length, when one was declared) checks out. Nothing in
//! `blobs/` is ever partial. A writer dropped before it commits removes its file; a process
//! killed mid-write leaves a file in `tmp/`, which the next [`BlobStore::open`] removes.
//! Two writers of one blob each write their own file; the first rename wins and the second
//! finds the blob present and discards its copy, so both succeed and one copy results.

use std::fs::File as StdFile;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::digest::{Algorithm, Digest, DigestMismatch, Hasher, Verifier};
use crate::metainfo::Metainfo;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {0} is not in the store")]
    NotFound(Digest),
    #[error(transparent)]
    DigestMismatch(#[from] DigestMismatch),
    #[error("blob is {actual} bytes, {expected} were declared")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("range {start}..{end} is outside the blob's {length} bytes")]
    RangeNotSatisfiable { start: u64, end: u64, length: u64 },
    #[error("piece {index} does not fit the blob")]
    BadPiece { index: usize },
    #[error("blob store I/O: {0}")]
    Io(#[from] io::Error),
    /// An error from the stream that was being written.
    #[error("upload stream failed: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Takes `dir` (made if need be) for this process: an exclusive lock on `dir/lock`, held
/// while the returned file stays open. `None`: another process holds it.
pub fn lock_dir(dir: &Path) -> io::Result<Option<StdFile>> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// A committed blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub length: u64,
}

/// A handle on a store directory; cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) a store at `root` and removes whatever an earlier process
    /// left half-written. One process owns a store directory at a time.
    pub async fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref();
        let blobs = root.join("blobs");
        let tmp = root.join("tmp");
        fs::create_dir_all(&blobs).await?;
        match fs::remove_dir_all(&tmp).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir_all(&tmp).await?;
        Ok(BlobStore {
            inner: Arc::new(Inner { blobs, tmp }),
        })
    }

    /// Where a committed blob lives. It need not exist.
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.inner
            .blobs
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    fn temp_path(&self) -> PathBuf {
        self.inner.tmp.join(hex::encode(rand::random::<[u8; 12]>()))
    }

    /// The length of a committed blob, or `None` if it is absent.
    pub async fn stat(&self, digest: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.path_of(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn contains(&self, digest: &Digest) -> io::Result<bool> {
        Ok(self.stat(digest).await?.is_some())
    }

    /// Starts a write. With `expected`, the commit checks the content against it; without,
    /// the content is hashed with SHA-256 and named by the result.
    pub async fn writer(&self, expected: Option<Digest>) -> Result<BlobWriter, StoreError> {
        let path = self.temp_path();
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        let algorithm = expected.map_or(Algorithm::Sha256, |d| d.algorithm());
        Ok(BlobWriter {
            store: self.clone(),
            file: Some(file),
            guard: TempGuard(Some(path)),
            hasher: Hasher::new(algorithm),
            expected,
            expected_length: None,
            written: 0,
        })
    }

    /// Writes a whole stream and commits it.
    pub async fn put_stream<S, E>(
        &self,
        expected: Option<Digest>,
        expected_length: Option<u64>,
        stream: S,
    ) -> Result<BlobInfo, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut w = self.writer(expected).await?;
        if let Some(n) = expected_length {
            w.expect_length(n);
        }
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StoreError::Source(e.into()))?;
            w.write(&chunk).await?;
        }
        w.commit().await
    }

    /// Writes bytes held in memory (manifests, small blobs) and commits them.
    pub async fn put_bytes(
        &self,
        expected: Option<Digest>,
        bytes: &[u8],
    ) -> Result<BlobInfo, StoreError> {
        let mut w = self.writer(expected).await?;
        w.expect_length(bytes.len() as u64);
        w.write(bytes).await?;
        w.commit().await
    }

    /// Opens a committed blob for reading; returns the file and its length.
    pub async fn open_blob(&self, digest: &Digest) -> Result<(fs::File, u64), StoreError> {
        match fs::File::open(self.path_of(digest)).await {
            Ok(f) => {
                let len = f.metadata().await?.len();
                Ok((f, len))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound(*digest)),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a committed blob for positioned reads from blocking code (serving pieces).
    pub fn open_blob_sync(&self, digest: &Digest) -> Result<StdFile, StoreError> {
        StdFile::open(self.path_of(digest)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(*digest),
            _ => e.into(),
        })
    }

    /// A reader of `range` of a committed blob. An empty range is allowed anywhere up to
    /// the blob's end; a range past the end is [`StoreError::RangeNotSatisfiable`].
    pub async fn read_range(
        &self,
        digest: &Digest,
        range: Range<u64>,
    ) -> Result<tokio::io::Take<fs::File>, StoreError> {
        let (mut file, length) = self.open_blob(digest).await?;
        if range.start > range.end || range.end > length {
            return Err(StoreError::RangeNotSatisfiable {
                start: range.start,
                end: range.end,
                length,
            });
        }
        file.seek(io::SeekFrom::Start(range.start)).await?;
        Ok(file.take(range.end - range.start))
    }

    /// Reads a whole committed blob into memory. For small things only (manifests).
    pub async fn read_all(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        match fs::read(self.path_of(digest)).await {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound(*digest)),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a blob; `false` if it was not there. Open readers keep their view.
    pub async fn delete(&self, digest: &Digest) -> io::Result<bool> {
        match fs::remove_file(self.path_of(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every committed blob with its length, in digest order. Files that do not look like
    /// blobs are skipped.
    pub async fn list(&self) -> io::Result<Vec<BlobInfo>> {
        let blobs = self.inner.blobs.clone();
        let mut out = tokio::task::spawn_blocking(move || list_sync(&blobs))
            .await
            .map_err(io::Error::other)??;
        out.sort_by_key(|b| b.digest);
        Ok(out)
    }

    /// The bytes held by committed blobs.
    pub async fn total_size(&self) -> io::Result<u64> {
        Ok(self.list().await?.iter().map(|b| b.length).sum())
    }

    /// Starts a blob that arrives piece by piece, in any order, as laid out by `metainfo`.
    pub async fn partial(&self, metainfo: Metainfo) -> Result<PartialBlob, StoreError> {
        let path = self.temp_path();
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let file = StdFile::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            let guard = TempGuard(Some(path));
            file.set_len(metainfo.length())?;
            let pieces = Mutex::new(vec![PieceState::Missing; metainfo.piece_count()]);
            let prefix = Mutex::new(Box::new(Prefix {
                verifier: metainfo.digest().verifier(),
                next: 0,
            }));
            Ok(PartialBlob {
                store,
                file,
                guard,
                metainfo,
                pieces,
                prefix,
            })
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Moves a finished temporary file into place, unless the blob is already there.
    fn install(&self, temp: &Path, digest: &Digest) -> io::Result<()> {
        let dest = self.path_of(digest);
        if dest.exists() {
            return std::fs::remove_file(temp);
        }
        let dir = dest.parent().unwrap_or(&self.inner.blobs);
        std::fs::create_dir_all(dir)?;
        std::fs::rename(temp, &dest)?;
        // The rename is durable only once the directory entry is.
        StdFile::open(dir)?.sync_all()
    }
}

fn list_sync(blobs: &Path) -> io::Result<Vec<BlobInfo>> {
    let mut out = Vec::new();
    for alg in read_dir_or_empty(blobs)? {
        let alg = alg?;
        let Some(alg_name) = alg.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        for fan in read_dir_or_empty(&alg.path())? {
            for blob in read_dir_or_empty(&fan?.path())? {
                let blob = blob?;
                let name = blob.file_name();
                let Some(hex) = name.to_str() else { continue };
                let Ok(digest) = format!("{alg_name}:{hex}").parse::<Digest>() else {
                    continue;
                };
                let meta = blob.metadata()?;
                if meta.is_file() {
                    out.push(BlobInfo {
                        digest,
                        length: meta.len(),
                    });
                }
            }
        }
    }
    Ok(out)
}

fn read_dir_or_empty(dir: &Path) -> io::Result<Vec<io::Result<std::fs::DirEntry>>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Ok(rd.collect()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// Removes a temporary file when dropped, unless disarmed.
#[derive(Debug)]
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A blob being written in order. Dropping it without [`BlobWriter::commit`] discards it.
#[derive(Debug)]
pub struct BlobWriter {
    store: BlobStore,
    file: Option<fs::File>,
    guard: TempGuard,
    hasher: Hasher,
    expected: Option<Digest>,
    expected_length: Option<u64>,
    written: u64,
}

impl BlobWriter {
    /// Declares the length; the commit fails if the content is not exactly that long.
    pub fn expect_length(&mut self, length: u64) {
        self.expected_length = Some(length);
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let new_len = self.written.saturating_add(bytes.len() as u64);
        if let Some(expected) = self.expected_length.filter(|&e| new_len > e) {
            return Err(StoreError::SizeMismatch {
                expected,
                actual: new_len,
            });
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer used after failure"))?;
        self.hasher.update(bytes);
        if let Err(e) = file.write_all(bytes).await {
            self.file = None;
            return Err(e.into());
        }
        self.written = new_len;
        Ok(())
    }

    /// Verifies and moves the blob into place. On any error nothing becomes visible and
    /// the temporary file is removed.
    pub async fn commit(mut self) -> Result<BlobInfo, StoreError> {
        if let Some(expected) = self.expected_length.filter(|&e| e != self.written) {
            return Err(StoreError::SizeMismatch {
                expected,
                actual: self.written,
            });
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("blob writer used after failure"))?;
        let actual = std::mem::replace(&mut self.hasher, Hasher::new(Algorithm::Sha256)).finalize();
        if let Some(expected) = self.expected.filter(|e| *e != actual) {
            return Err(DigestMismatch { expected, actual }.into());
        }
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let store = self.store.clone();
        let temp = self.guard.path().to_owned();
        tokio::task::spawn_blocking(move || store.install(&temp, &actual))
            .await
            .map_err(io::Error::other)??;
        self.guard.disarm();
        Ok(BlobInfo {
            digest: actual,
            length: self.written,
        })
    }
}

/// A blob arriving piece by piece. Pieces may be written in any order and read back before
/// the blob is complete; the caller checks each piece against the metainfo before writing
/// it, and [`PartialBlob::commit`] checks the whole blob before it becomes visible. Dropping
/// it without committing discards it.
///
/// The whole-blob digest is computed while the blob arrives: whenever the pieces from the
/// start are all written, they are hashed, so that a blob that arrived roughly in order (as
/// it does for a reader streaming it) leaves only its tail to hash at the commit. The bytes
/// hashed are the bytes in the file: a piece is written once, and a second write of it is
/// ignored.
#[derive(Debug)]
pub struct PartialBlob {
    store: BlobStore,
    file: StdFile,
    guard: TempGuard,
    metainfo: Metainfo,
    pieces: Mutex<Vec<PieceState>>,
    /// Boxed: a hasher's state is large, and partial blobs travel in messages.
    prefix: Mutex<Box<Prefix>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceState {
    Missing,
    Writing,
    Written,
}

/// The digest of the blob's first `next` pieces, so far.
#[derive(Debug)]
struct Prefix {
    verifier: Verifier,
    next: usize,
}

/// Bytes read back from the file at a time while hashing.
const HASH_CHUNK: usize = 1 << 20;

impl PartialBlob {
    pub fn metainfo(&self) -> &Metainfo {
        &self.metainfo
    }

    /// Writes piece `index` (blocking: call from a blocking context). A piece already
    /// written (or being written) is not written again.
    pub fn write_piece(&self, index: usize, bytes: &[u8]) -> Result<(), StoreError> {
        let range = self
            .metainfo
            .piece_range(index)
            .filter(|r| r.end - r.start == bytes.len() as u64)
            .ok_or(StoreError::BadPiece { index })?;
        {
            let mut pieces = lock(&self.pieces);
            if pieces[index] != PieceState::Missing {
                return Ok(());
            }
            pieces[index] = PieceState::Writing;
        }
        if let Err(e) = self.file.write_all_at(bytes, range.start) {
            lock(&self.pieces)[index] = PieceState::Missing;
            return Err(e.into());
        }
        lock(&self.pieces)[index] = PieceState::Written;
        self.hash_prefix(index, bytes);
        Ok(())
    }

    /// Hashes the written pieces that follow the hashed prefix, if no other writer is doing
    /// it already. `just` is the piece this writer wrote, hashed from memory rather than
    /// read back.
    fn hash_prefix(&self, just: usize, bytes: &[u8]) {
        let written = |i: usize| lock(&self.pieces).get(i) == Some(&PieceState::Written);
        loop {
            let mut prefix = match self.prefix.try_lock() {
                Ok(p) => p,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                // The writer hashing now looks again for this piece once it is done.
                Err(TryLockError::WouldBlock) => return,
            };
            while written(prefix.next) {
                let i = prefix.next;
                if i == just {
                    prefix.verifier.update(bytes);
                } else if let Some(r) = self.metainfo.piece_range(i)
                    && self.hash_range(&mut prefix.verifier, r).is_err()
                {
                    // Part of the piece may be in the hash: start again from nothing, and
                    // leave it to the commit, which reads the file again and reports the
                    // error if it persists.
                    **prefix = Prefix {
                        verifier: self.metainfo.digest().verifier(),
                        next: 0,
                    };
                    return;
                }
                prefix.next += 1;
            }
            let next = prefix.next;
            drop(prefix);
            // A piece written while the prefix was locked found it busy and left it to us.
            if !written(next) {
                return;
            }
        }
    }

    fn hash_range(&self, verifier: &mut Verifier, range: Range<u64>) -> io::Result<()> {
        let mut buf = vec![0u8; HASH_CHUNK.min((range.end - range.start) as usize)];
        let mut pos = range.start;
        while pos < range.end {
            let n = ((range.end - pos) as usize).min(buf.len());
            self.file.read_exact_at(&mut buf[..n], pos)?;
            verifier.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(())
    }

    /// Reads bytes at `offset` (blocking). The caller reads only pieces it has written.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Hashes what is not hashed yet of the file, and if the whole matches the metainfo's
    /// digest, moves it into place (blocking: call from a blocking context).
    pub fn commit(self) -> Result<BlobInfo, StoreError> {
        let digest = self.metainfo.digest();
        let length = self.metainfo.length();
        let PartialBlob {
            store,
            mut guard,
            file,
            metainfo,
            prefix,
            ..
        } = self;
        let Prefix { mut verifier, next } =
            *prefix.into_inner().unwrap_or_else(PoisonError::into_inner);
        let from = metainfo.piece_range(next).map_or(length, |r| r.start);
        let mut buf = vec![0u8; HASH_CHUNK];
        let mut pos = from;
        while pos < length {
            let n = ((length - pos) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], pos)?;
            verifier.update(&buf[..n]);
            pos += n as u64;
        }
        verifier.finish()?;
        file.sync_all()?;
        drop(file);
        store.install(guard.path(), &digest)?;
        guard.disarm();
        Ok(BlobInfo { digest, length })
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
