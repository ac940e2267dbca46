//! A swarm's bytes on disk, and the handle a downloader holds.
//!
//! [`BlobIo`] is where pieces are written while a blob downloads (its [`PartialBlob`]) and
//! read from for uploads and for the agent's readers: from the partial blob while it is in
//! progress, from the committed file once it is in the store. Commit takes the partial blob
//! out of its slot, so a reader that finds the slot empty waits for the commit to end.
//!
//! A handle's readers (its streams and piece waits) each hold a [`ReadCursor`]; the lowest
//! position among them goes to the node's task, which tells the engine where to fetch
//! first ([`crate::engine::Engine::set_focus`]).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use futures::Stream;
use shoal_core::Digest;
use shoal_core::Metainfo;
use shoal_core::store::{BlobInfo, BlobStore, PartialBlob, StoreError};
use tokio::sync::{mpsc, watch};

use super::Cmd;
use crate::bitfield::Bitfield;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitState {
    Pending,
    Done,
    Failed,
}

#[derive(Debug)]
pub(crate) struct BlobIo {
    pub metainfo: Arc<Metainfo>,
    store: BlobStore,
    partial: RwLock<Option<PartialBlob>>,
    committed: RwLock<Committed>,
    commit: watch::Sender<CommitState>,
}

/// The committed blob's file, opened at the first read.
#[derive(Debug)]
enum Committed {
    Unopened,
    Open(Arc<File>),
    /// The node stopped serving the blob: nothing is read or opened again.
    Closed,
}

/// Why bytes of a blob could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("piece {0} is out of range")]
    OutOfRange(usize),
    #[error("the blob failed its final check and is gone")]
    Failed,
    #[error("the blob is no longer served here")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the blob: {0}")]
    Io(#[from] io::Error),
}

impl BlobIo {
    pub fn downloading(metainfo: Arc<Metainfo>, store: BlobStore, partial: PartialBlob) -> Self {
        BlobIo {
            metainfo,
            store,
            partial: RwLock::new(Some(partial)),
            committed: RwLock::new(Committed::Unopened),
            commit: watch::Sender::new(CommitState::Pending),
        }
    }

    /// A blob already committed in the store.
    pub fn committed(metainfo: Arc<Metainfo>, store: BlobStore) -> Self {
        BlobIo {
            metainfo,
            store,
            partial: RwLock::new(None),
            committed: RwLock::new(Committed::Unopened),
            commit: watch::Sender::new(CommitState::Done),
        }
    }

    /// Writes a verified piece (blocking). A piece that arrives after the commit is already
    /// in the blob, byte for byte, and is dropped.
    pub fn write_piece(&self, index: usize, data: &[u8]) -> Result<(), StoreError> {
        let slot = self.partial.read().unwrap_or_else(PoisonError::into_inner);
        match slot.as_ref() {
            Some(p) => p.write_piece(index, data),
            None => Ok(()),
        }
    }

    /// Checks the whole blob and moves it into the store (blocking).
    pub fn commit(&self) -> Result<BlobInfo, StoreError> {
        let partial = self
            .partial
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(partial) = partial else {
            return Err(StoreError::Io(io::Error::other("blob committed twice")));
        };
        let r = partial.commit();
        self.commit.send_replace(if r.is_ok() {
            CommitState::Done
        } else {
            CommitState::Failed
        });
        r
    }

    /// Stops all reading: drops the open file (and a partial blob, which removes it), so
    /// that a blob deleted from the store is not kept alive by a handle here. Reads after
    /// this fail with [`ReadError::Closed`].
    pub fn close(&self) {
        *self
            .committed
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Committed::Closed;
        let partial = self
            .partial
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(partial);
        // Readers waiting for a commit that will not come now are let go.
        self.commit.send_if_modified(|s| {
            let pending = *s == CommitState::Pending;
            if pending {
                *s = CommitState::Failed;
            }
            pending
        });
    }

    /// Whether the blob's file is open here (tests: a closed blob holds no descriptor).
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        matches!(
            *self
                .committed
                .read()
                .unwrap_or_else(PoisonError::into_inner),
            Committed::Open(_)
        ) || self
            .partial
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Reads a byte range within one piece that this node holds.
    pub async fn read(self: &Arc<Self>, range: Range<u64>) -> Result<Bytes, ReadError> {
        loop {
            let me = Arc::clone(self);
            let r = range.clone();
            let got = tokio::task::spawn_blocking(move || me.try_read(r))
                .await
                .map_err(io::Error::other)??;
            if let Some(bytes) = got {
                return Ok(bytes);
            }
            // The partial blob is being committed: wait for the outcome.
            let mut rx = self.commit.subscribe();
            let state = *rx
                .wait_for(|s| *s != CommitState::Pending)
                .await
                .map_err(|_| ReadError::Failed)?;
            if state == CommitState::Failed {
                return Err(self.closed().unwrap_or(ReadError::Failed));
            }
        }
    }

    #[cfg(test)]
    pub async fn read_piece(self: &Arc<Self>, index: usize) -> Result<Bytes, ReadError> {
        let range = self
            .metainfo
            .piece_range(index)
            .ok_or(ReadError::OutOfRange(index))?;
        self.read(range).await
    }

    fn closed(&self) -> Option<ReadError> {
        matches!(
            *self
                .committed
                .read()
                .unwrap_or_else(PoisonError::into_inner),
            Committed::Closed
        )
        .then_some(ReadError::Closed)
    }

    /// The committed file, if it is open or can be opened.
    fn file(&self) -> Result<Option<Arc<File>>, ReadError> {
        match &*self
            .committed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Committed::Open(f) => return Ok(Some(Arc::clone(f))),
            Committed::Closed => return Err(ReadError::Closed),
            Committed::Unopened => {}
        }
        if *self.commit.borrow() != CommitState::Done {
            return Ok(None);
        }
        let mut slot = self
            .committed
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Committed::Open(f) => Ok(Some(Arc::clone(f))),
            Committed::Closed => Err(ReadError::Closed),
            Committed::Unopened => {
                let f = Arc::new(self.store.open_blob_sync(&self.metainfo.digest())?);
                *slot = Committed::Open(Arc::clone(&f));
                Ok(Some(f))
            }
        }
    }

    /// `None`: the partial blob is gone and the committed one is not there yet.
    fn try_read(&self, range: Range<u64>) -> Result<Option<Bytes>, ReadError> {
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        if let Some(f) = self.file()? {
            f.read_exact_at(&mut buf, range.start)?;
            return Ok(Some(buf.into()));
        }
        {
            let slot = self.partial.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = slot.as_ref() {
                p.read_at(&mut buf, range.start)?;
                return Ok(Some(buf.into()));
            }
        }
        match *self.commit.borrow() {
            CommitState::Pending => return Ok(None),
            CommitState::Failed => return Err(self.closed().unwrap_or(ReadError::Failed)),
            CommitState::Done => {}
        }
        // Committed between the two looks.
        match self.file()? {
            Some(f) => {
                f.read_exact_at(&mut buf, range.start)?;
                Ok(Some(buf.into()))
            }
            None => Ok(None),
        }
    }
}

/// How a download ended badly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    #[error("every piece verified but the whole blob did not match its digest")]
    BlobMismatch,
    #[error("storing the blob failed: {0}")]
    Storage(String),
    #[error("the node stopped before the download finished")]
    Stopped,
    #[error("byte range {start}..{end} is outside the blob's {length} bytes")]
    OutOfRange { start: u64, end: u64, length: u64 },
}

/// Where a download stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The pieces verified and written so far.
    pub have: Bitfield,
    /// `Some` once the download has ended: the committed blob, or why it failed.
    pub outcome: Option<Result<BlobInfo, DownloadError>>,
}

pub(crate) struct DownloadShared {
    pub io: Arc<BlobIo>,
    pub progress: watch::Sender<Progress>,
    readers: Mutex<Readers>,
    /// The node's task, told where the lowest reader is.
    node: Option<mpsc::UnboundedSender<Cmd>>,
}

impl std::fmt::Debug for DownloadShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadShared")
            .field("digest", &self.io.metainfo.digest())
            .field("progress", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

/// The positions of a download's readers, each the piece it reads or waits for.
#[derive(Debug, Default)]
struct Readers {
    next_id: u64,
    at: Vec<(u64, u32)>,
    /// The lowest position the node was last told.
    told: Option<u32>,
}

/// A reader's place in a download, for as long as it lives: the engine fetches the pieces
/// just ahead of the lowest reader first.
#[derive(Debug)]
pub(crate) struct ReadCursor {
    shared: Arc<DownloadShared>,
    id: u64,
}

impl ReadCursor {
    /// The reader moved on to `piece`.
    pub fn move_to(&self, piece: u32) {
        self.shared.update_reader(|r| {
            if let Some(e) = r.at.iter_mut().find(|(id, _)| *id == self.id) {
                e.1 = piece;
            }
        });
    }
}

impl Drop for ReadCursor {
    fn drop(&mut self) {
        let id = self.id;
        self.shared
            .update_reader(|r| r.at.retain(|(other, _)| *other != id));
    }
}

impl DownloadShared {
    /// `node`: where reader positions go; `None` where nobody acts on them (tests).
    pub fn new(
        io: Arc<BlobIo>,
        complete: Option<BlobInfo>,
        node: Option<mpsc::UnboundedSender<Cmd>>,
    ) -> Arc<Self> {
        let n = io.metainfo.piece_count();
        let progress = Progress {
            have: if complete.is_some() {
                Bitfield::full(n)
            } else {
                Bitfield::new(n)
            },
            outcome: complete.map(Ok),
        };
        Arc::new(DownloadShared {
            io,
            progress: watch::Sender::new(progress),
            readers: Mutex::new(Readers::default()),
            node,
        })
    }

    pub fn digest(&self) -> Digest {
        self.io.metainfo.digest()
    }

    /// Registers a reader at `piece`.
    pub fn cursor(self: &Arc<Self>, piece: u32) -> ReadCursor {
        let mut id = 0;
        self.update_reader(|r| {
            id = r.next_id;
            r.next_id += 1;
            r.at.push((id, piece));
        });
        ReadCursor {
            shared: Arc::clone(self),
            id,
        }
    }

    /// Changes the readers' positions and tells the node if the lowest one moved. The
    /// message goes out under the lock, so the node hears the moves in the order they were
    /// made.
    fn update_reader(&self, f: impl FnOnce(&mut Readers)) {
        let mut r = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut r);
        let lowest = r.at.iter().map(|&(_, p)| p).min();
        if lowest == r.told {
            return;
        }
        r.told = lowest;
        if self.progress.borrow().outcome.is_some() {
            return;
        }
        if let Some(node) = &self.node {
            let _ = node.send(Cmd::Focus {
                blob: self.digest(),
                piece: lowest,
            });
        }
    }

    pub fn piece_done(&self, index: usize) {
        self.progress.send_modify(|p| {
            p.have.set(index);
        });
    }

    pub fn finish(&self, outcome: Result<BlobInfo, DownloadError>) {
        self.progress.send_if_modified(|p| {
            if p.outcome.is_some() {
                return false;
            }
            if outcome.is_ok() {
                p.have = Bitfield::full(p.have.len());
            }
            p.outcome = Some(outcome);
            true
        });
    }
}

/// A download in progress or done; cheap to clone. Every caller of
/// [`crate::Node::download`] for one blob gets a handle on the same download.
#[derive(Debug, Clone)]
pub struct DownloadHandle {
    shared: Arc<DownloadShared>,
}

impl DownloadHandle {
    pub(crate) fn new(shared: Arc<DownloadShared>) -> Self {
        DownloadHandle { shared }
    }

    pub fn metainfo(&self) -> &Metainfo {
        &self.shared.io.metainfo
    }

    /// Watches progress: the verified pieces, then the outcome.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.shared.progress.subscribe()
    }

    /// Waits for the end: the committed blob (verified against its digest), or why not.
    pub async fn finished(&self) -> Result<BlobInfo, DownloadError> {
        let mut rx = self.progress();
        let p = rx
            .wait_for(|p| p.outcome.is_some())
            .await
            .map_err(|_| DownloadError::Stopped)?;
        p.outcome.clone().unwrap_or(Err(DownloadError::Stopped))
    }

    /// Waits until piece `index` is verified and written (or the download fails).
    pub async fn wait_piece(&self, index: usize) -> Result<(), DownloadError> {
        let n = self.metainfo().piece_count();
        if index >= n {
            let length = self.metainfo().length();
            return Err(DownloadError::OutOfRange {
                start: index as u64 * self.metainfo().piece_length() as u64,
                end: length.max(index as u64 * self.metainfo().piece_length() as u64),
                length,
            });
        }
        let mut rx = self.progress();
        let waits = {
            let p = rx.borrow();
            !p.have.get(index) && p.outcome.is_none()
        };
        // A waiter is a reader: while it waits, the engine fetches from here first.
        let _cursor = waits.then(|| self.shared.cursor(index as u32));
        let p = rx
            .wait_for(|p| p.have.get(index) || p.outcome.is_some())
            .await
            .map_err(|_| DownloadError::Stopped)?;
        match &p.outcome {
            Some(Err(e)) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// The bytes of `range`, in order, each piece as soon as it is verified: what an agent
    /// streams to a client while the blob is still arriving. Holds one piece in memory at
    /// a time. From its creation until it is dropped or ends, the stream is a reader of the
    /// download: the pieces just ahead of it are fetched before the rest.
    pub fn stream(
        &self,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, DownloadError>> + Send + 'static {
        let me = self.clone();
        let length = me.metainfo().length();
        let bad =
            (range.start > range.end || range.end > length).then_some(DownloadError::OutOfRange {
                start: range.start,
                end: range.end,
                length,
            });
        let cursor = match (&bad, me.metainfo().piece_at(range.start)) {
            (None, Some(first)) if range.start < range.end => Some(me.shared.cursor(first as u32)),
            _ => None,
        };
        futures::stream::unfold(
            (me, range.start, range.end, bad, cursor),
            |(me, pos, end, bad, cursor)| async move {
                if let Some(e) = bad {
                    return Some((Err(e), (me, end, end, None, None)));
                }
                if pos >= end {
                    return None;
                }
                let m = me.metainfo();
                let index = m.piece_at(pos)?;
                let piece = m.piece_range(index)?;
                let upto = piece.end.min(end);
                if let Some(c) = &cursor {
                    c.move_to(index as u32);
                }
                let item = me.read_range(index, pos..upto).await;
                let next = if item.is_ok() { upto } else { end };
                Some((item, (me, next, end, None, cursor)))
            },
        )
    }

    async fn read_range(&self, index: usize, range: Range<u64>) -> Result<Bytes, DownloadError> {
        self.wait_piece(index).await?;
        self.shared.io.read(range).await.map_err(|e| match e {
            ReadError::Failed => DownloadError::BlobMismatch,
            ReadError::Closed => DownloadError::Stopped,
            other => DownloadError::Storage(other.to_string()),
        })
    }

    /// Piece `index`, once verified.
    pub async fn read_piece(&self, index: usize) -> Result<Bytes, DownloadError> {
        let range = self
            .metainfo()
            .piece_range(index)
            .ok_or(DownloadError::OutOfRange {
                start: index as u64 * self.metainfo().piece_length() as u64,
                end: index as u64 * self.metainfo().piece_length() as u64,
                length: self.metainfo().length(),
            })?;
        self.read_range(index, range).await
    }
}
