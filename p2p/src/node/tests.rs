//! The download side's bookkeeping, without sockets: reads across the commit, and what a
//! handle reports.

use std::sync::Arc;

use shoal_core::Metainfo;
use shoal_core::store::BlobStore;

use super::blob::{BlobIo, DownloadShared};
use super::{DownloadError, DownloadHandle};

fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

async fn partial_io(data: &[u8]) -> (tempfile::TempDir, BlobStore, Arc<BlobIo>) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).await.unwrap();
    let meta = Metainfo::from_bytes(data);
    let partial = store.partial(meta.clone()).await.unwrap();
    let io = Arc::new(BlobIo::downloading(Arc::new(meta), store.clone(), partial));
    (dir, store, io)
}

fn write_all(io: &BlobIo, data: &[u8]) {
    let m = Arc::clone(&io.metainfo);
    for i in 0..m.piece_count() {
        let r = m.piece_range(i).unwrap();
        io.write_piece(i, &data[r.start as usize..r.end as usize])
            .unwrap();
    }
}

#[tokio::test]
async fn reads_come_from_the_partial_blob_then_the_committed_one() {
    let data = bytes((1 << 20) + 5);
    let (_dir, store, io) = partial_io(&data).await;
    write_all(&io, &data);
    let before = io.read_piece(1).await.unwrap();
    assert_eq!(&before[..], &data[256 << 10..512 << 10]);
    let c = Arc::clone(&io);
    let info = tokio::task::spawn_blocking(move || c.commit())
        .await
        .unwrap()
        .unwrap();
    assert!(store.contains(&info.digest).await.unwrap());
    let after = io.read_piece(4).await.unwrap();
    assert_eq!(&after[..], &data[1 << 20..]);
    // A late duplicate of a piece is already in the blob, byte for byte.
    io.write_piece(0, &data[..256 << 10]).unwrap();
    assert!(io.commit().is_err(), "a second commit must fail");
}

#[tokio::test]
async fn a_read_racing_the_commit_gets_the_bytes() {
    let data = bytes(3 << 20);
    let (_dir, _store, io) = partial_io(&data).await;
    write_all(&io, &data);
    let c = Arc::clone(&io);
    let commit = tokio::task::spawn_blocking(move || c.commit());
    let read = io.read_piece(11).await.unwrap();
    assert_eq!(&read[..], &data[11 << 18..12 << 18]);
    commit.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_failed_commit_fails_readers() {
    let data = bytes(1 << 20);
    let (_dir, store, io) = partial_io(&data).await;
    // Every piece but the last as it should be; the last one wrong.
    let mut wrong = data.clone();
    let n = wrong.len();
    wrong[n - 1] ^= 0xff;
    write_all(&io, &wrong);
    let c = Arc::clone(&io);
    assert!(
        tokio::task::spawn_blocking(move || c.commit())
            .await
            .unwrap()
            .is_err()
    );
    assert!(io.read_piece(0).await.is_err());
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_handle_reports_progress_and_one_outcome() {
    let data = bytes(1 << 20);
    let (_dir, _store, io) = partial_io(&data).await;
    let shared = DownloadShared::new(io, None, None);
    let h = DownloadHandle::new(Arc::clone(&shared));
    assert!(matches!(
        h.wait_piece(99).await,
        Err(DownloadError::OutOfRange { .. })
    ));
    shared.piece_done(2);
    h.wait_piece(2).await.unwrap();
    assert_eq!(h.progress().borrow().have.count(), 1);
    shared.finish(Err(DownloadError::BlobMismatch));
    // The first outcome stands.
    shared.finish(Err(DownloadError::Stopped));
    assert_eq!(h.finished().await, Err(DownloadError::BlobMismatch));
    assert_eq!(h.wait_piece(0).await, Err(DownloadError::BlobMismatch));
}

#[tokio::test]
async fn a_closed_blob_drops_its_file_and_fails_its_readers() {
    let data = bytes(1 << 20);
    let (_dir, _store, io) = partial_io(&data).await;
    write_all(&io, &data);
    let c = Arc::clone(&io);
    tokio::task::spawn_blocking(move || c.commit())
        .await
        .unwrap()
        .unwrap();
    let shared = DownloadShared::new(Arc::clone(&io), None, None);
    shared.piece_done(0);
    let h = DownloadHandle::new(Arc::clone(&shared));
    io.read_piece(0).await.unwrap();
    assert!(io.is_open());
    io.close();
    assert!(!io.is_open(), "the blob's file is still open");
    assert!(matches!(
        io.read_piece(0).await,
        Err(super::blob::ReadError::Closed)
    ));
    // A stream over it ends with the download's own error, not a storage one.
    let got: Vec<_> = futures::StreamExt::collect(h.stream(0..10)).await;
    assert!(matches!(got[..], [Err(DownloadError::Stopped)]), "{got:?}");
}
