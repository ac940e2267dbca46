//! Blob operations on this origin's own store and index, shared by the HTTP handlers, the
//! queue and the repair pass.

use std::pin::pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::Digest as _;
use shoal_core::metainfo::{PieceHash, piece_length_for};
use shoal_core::signature::MetainfoSigner;
use shoal_core::store::{BlobInfo, StoreError};
use shoal_core::{Digest, DigestMismatch, Metainfo};

use crate::backend::BackendError;
use crate::db::Task;
use crate::error::{Error, Result};
use crate::state::Shared;

/// Bytes gathered before each write to the store.
const WRITE_SIZE: usize = 1 << 20;

/// Streams a body into the store, checking it against `digest` and the declared length;
/// records the blob with its metainfo and queues `tasks` in the same transaction. Nothing
/// becomes visible unless every check passes. A blob already held is not written again,
/// but the body is still checked, so a wrong body gets its error either way.
pub async fn receive<S, E>(
    st: &Shared,
    digest: Digest,
    declared: Option<u64>,
    body: S,
    backed: bool,
    tasks: Vec<Task>,
) -> Result<BlobInfo>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = pin!(body);
    if st.store.contains(&digest).await? {
        let info = drain_and_check(st, digest, declared, body).await?;
        index(st, digest).await?;
        if !tasks.is_empty() {
            st.db.enqueue(tasks).await?;
            st.queued().await;
        }
        return Ok(info);
    }
    let mut writer = st.store.writer(Some(digest)).await?;
    let mut pieces = declared.map(|n| {
        writer.expect_length(n);
        Pieces::new(n)
    });
    // The body arrives in pieces of a few KiB; each file write is a trip to a blocking
    // thread, so they are gathered into larger writes.
    let mut buf = Vec::with_capacity(WRITE_SIZE);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StoreError::Source(e.into()))?;
        st.metrics.received_http(chunk.len() as u64);
        if let Some(p) = &mut pieces {
            p.update(&chunk);
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= WRITE_SIZE {
            writer.write(&buf).await?;
            buf.clear();
        }
    }
    writer.write(&buf).await?;
    let info = writer.commit().await?;
    let metainfo = match pieces.and_then(|p| p.finish(digest)) {
        Some(m) => m,
        None => compute_metainfo(st, digest)
            .await?
            .ok_or(StoreError::NotFound(digest))?,
    };
    let queued = !tasks.is_empty();
    if st.db.add_blob(&metainfo, backed, tasks).await? {
        st.metrics.blob_added(info.length);
    }
    if queued {
        st.queued().await;
    }
    tracing::debug!(%digest, length = info.length, "blob stored");
    Ok(info)
}

/// Piece hashes of a blob as it streams in. The store's writer already hashes the whole
/// blob to check its digest, so unlike [`shoal_core::metainfo::PieceHasher`] this hashes
/// the pieces only: one pass over the bytes fewer.
struct Pieces {
    length: u64,
    piece_length: u32,
    piece: sha2::Sha256,
    in_piece: u32,
    hashes: Vec<PieceHash>,
}

impl Pieces {
    fn new(length: u64) -> Self {
        let piece_length = piece_length_for(length);
        Pieces {
            length,
            piece_length,
            piece: sha2::Sha256::new(),
            in_piece: 0,
            // The length is the client's word until the body proves it: reserve no more
            // than a modest blob's worth of piece hashes up front.
            hashes: Vec::with_capacity(length.div_ceil(piece_length as u64).min(4096) as usize),
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = ((self.piece_length - self.in_piece) as usize).min(bytes.len());
            self.piece.update(&bytes[..n]);
            self.in_piece += n as u32;
            bytes = &bytes[n..];
            if self.in_piece == self.piece_length {
                self.hashes
                    .push(std::mem::take(&mut self.piece).finalize().into());
                self.in_piece = 0;
            }
        }
    }

    /// The metainfo of a blob the writer has verified to be `digest`; `None` if the piece
    /// count does not fit the length (the writer rejects such a body first).
    fn finish(mut self, digest: Digest) -> Option<Metainfo> {
        if self.in_piece > 0 {
            self.hashes.push(self.piece.finalize().into());
        }
        Metainfo::new(digest, self.length, self.piece_length, self.hashes)
    }
}

/// Reads a body for a blob already held: counted and hashed, not written.
async fn drain_and_check<S, E>(
    st: &Shared,
    digest: Digest,
    declared: Option<u64>,
    mut body: std::pin::Pin<&mut S>,
) -> Result<BlobInfo>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut verifier = digest.verifier();
    let mut seen = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StoreError::Source(e.into()))?;
        st.metrics.received_http(chunk.len() as u64);
        seen += chunk.len() as u64;
        if let Some(expected) = declared.filter(|&n| seen > n) {
            return Err(StoreError::SizeMismatch {
                expected,
                actual: seen,
            }
            .into());
        }
        verifier.update(&chunk);
    }
    if let Some(expected) = declared.filter(|&n| seen != n) {
        return Err(StoreError::SizeMismatch {
            expected,
            actual: seen,
        }
        .into());
    }
    verifier
        .finish()
        .map_err(|m: DigestMismatch| StoreError::DigestMismatch(m))?;
    Ok(BlobInfo {
        digest,
        length: seen,
    })
}

/// Hashes a stored blob's pieces, on every core.
async fn compute_metainfo(st: &Shared, digest: Digest) -> Result<Option<Metainfo>> {
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || {
        let file = match store.open_blob_sync(&digest) {
            Ok(f) => f,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(Metainfo::compute_from_file(&file, digest)?))
    })
    .await?
}

/// Makes sure a stored blob is in the index (it is not if the process died between the
/// rename and the index write); returns its metainfo, or `None` if the blob is not here.
pub async fn index(st: &Shared, digest: Digest) -> Result<Option<Metainfo>> {
    if let Some(m) = st.db.metainfo(digest).await? {
        return Ok(Some(m));
    }
    let Some(m) = compute_metainfo(st, digest).await? else {
        return Ok(None);
    };
    if st.db.add_blob(&m, false, Vec::new()).await? {
        st.metrics.blob_added(m.length());
    }
    Ok(Some(m))
}

/// The key that signs this origin's metainfo, from the config. Without one the origin does
/// not start unless its config is insecure: agents refuse unsigned metainfo.
pub fn metainfo_signer(config: &crate::config::Config) -> Result<Option<MetainfoSigner>> {
    match config.credentials.metainfo_key.get() {
        Some(pem) => {
            let signer = MetainfoSigner::from_pem(pem)?;
            tracing::info!(key_id = %signer.key_id(), "signing metainfo");
            Ok(Some(signer))
        }
        None if config.insecure => {
            tracing::warn!(
                "no credentials.metainfo_key: metainfo is served unsigned, and only agents with insecure = true accept it"
            );
            Ok(None)
        }
        None => Err(Error::NoMetainfoKey),
    }
}

/// A metainfo as this origin answers it: signed with the cluster's key (unsigned only when
/// insecure and keyless).
pub fn metainfo_answer(st: &Shared, m: &Metainfo) -> Vec<u8> {
    match &st.metainfo_signer {
        Some(signer) => signer.sign(m),
        None => m.encode(),
    }
}

/// The metainfo of a blob this origin holds.
pub async fn metainfo(st: &Shared, digest: Digest) -> Result<Option<Metainfo>> {
    if !st.store.contains(&digest).await? {
        return Ok(None);
    }
    index(st, digest).await
}

/// Fetches a blob from the backend into the store; `false` if the backend lacks it too.
/// An owner that reads a blob through queues copies for the other owners.
pub async fn read_through(st: &Shared, digest: Digest) -> Result<bool> {
    let Some(read) = st.backend.get_blob(&digest).await? else {
        return Ok(false);
    };
    st.metrics.read_through.inc();
    let key = shoal_core::origin_client::blob_key(&digest);
    let tasks = if st.cluster.is_owner(&key) {
        st.follow_up(&key, |target| Task::CopyBlob { digest, target }, None)
    } else {
        Vec::new()
    };
    tracing::info!(%digest, length = read.length, backend = st.backend.name(), "reading a blob through from the backend");
    match receive(st, digest, Some(read.length), read.stream, true, tasks).await {
        Ok(_) => Ok(true),
        // The backend gave bytes that are not the blob: its fault, not the client's.
        Err(Error::Store(
            e @ (StoreError::DigestMismatch(_)
            | StoreError::SizeMismatch { .. }
            | StoreError::Source(_)),
        )) => Err(BackendError::Corrupt(format!("blob {digest}: {e}")).into()),
        Err(e) => Err(e),
    }
}

/// Removes a blob from this origin; whether it was here.
pub async fn delete_local(st: &Shared, digest: Digest) -> Result<bool> {
    let length = st.store.stat(&digest).await?;
    let on_disk = st.store.delete(&digest).await?;
    let indexed = st.db.remove_blob(digest).await?;
    // After the file and the index row are gone, so that a peer asking again is refused
    // rather than seeded anew from the index.
    let node = st
        .peer_node
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(node) = node {
        node.unseed(digest).await;
    }
    if indexed {
        st.metrics.blob_removed(length.unwrap_or(0));
    }
    st.refresh_queue_depth().await;
    Ok(on_disk || indexed)
}

/// Brings the index in line with the store after a start: blobs on disk but not indexed
/// get their metainfo; rows whose file is gone are dropped.
pub async fn reconcile(st: &Shared) -> Result<()> {
    let on_disk = st.store.list().await?;
    let mut added = 0usize;
    for b in &on_disk {
        if !st.db.has_blob(b.digest).await? {
            index(st, b.digest).await?;
            added += 1;
        }
    }
    let mut dropped = 0usize;
    let mut last: Option<String> = None;
    loop {
        let page = st.db.list_blobs(last.clone(), 1000).await?;
        let Some(tail) = page.last() else { break };
        last = Some(tail.digest.to_string());
        for e in page {
            if on_disk
                .binary_search_by_key(&e.digest, |b| b.digest)
                .is_err()
            {
                st.db.remove_blob(e.digest).await?;
                dropped += 1;
            }
        }
    }
    let (count, bytes) = st.db.blob_totals().await?;
    st.metrics.blobs.set(count as i64);
    st.metrics.stored_bytes.set(bytes as i64);
    if added + dropped > 0 {
        tracing::info!(added, dropped, "index reconciled with the blob store");
    }
    Ok(())
}
