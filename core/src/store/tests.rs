use super::*;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Bytes in which no two pieces are alike, so that hashing one piece in place of another
/// cannot go unnoticed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn tmp_entries(root: &Path) -> usize {
    std::fs::read_dir(root.join("tmp")).unwrap().count()
}

async fn store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn put_read_stat_list_delete() {
    let (dir, store) = store().await;
    let a = data(1000, 1);
    let b = data(5, 2);
    let da = Digest::sha256_of(&a);
    let info = store.put_bytes(Some(da), &a).await.unwrap();
    assert_eq!(
        info,
        BlobInfo {
            digest: da,
            length: 1000
        }
    );
    let db = store.put_bytes(None, &b).await.unwrap().digest;
    assert_eq!(db, Digest::sha256_of(&b));

    assert_eq!(store.stat(&da).await.unwrap(), Some(1000));
    assert_eq!(store.read_all(&da).await.unwrap(), a);
    let mut listed = store.list().await.unwrap();
    listed.sort_by_key(|i| i.length);
    assert_eq!(
        listed.iter().map(|i| i.digest).collect::<Vec<_>>(),
        vec![db, da]
    );
    assert_eq!(store.total_size().await.unwrap(), 1005);

    assert!(store.delete(&da).await.unwrap());
    assert!(!store.delete(&da).await.unwrap());
    assert_eq!(store.stat(&da).await.unwrap(), None);
    assert!(matches!(
        store.read_all(&da).await,
        Err(StoreError::NotFound(d)) if d == da
    ));
    assert_eq!(tmp_entries(dir.path()).await, 0);
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let (dir, store) = store().await;
    let wrong = Digest::sha256_of(b"something else");
    let err = store.put_bytes(Some(wrong), b"content").await.unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch(m) if m.expected == wrong));
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(tmp_entries(dir.path()).await, 0);
}

#[tokio::test]
async fn declared_length_is_enforced_both_ways() {
    let (dir, store) = store().await;
    let mut w = store.writer(None).await.unwrap();
    w.expect_length(3);
    assert!(matches!(
        w.write(b"four").await,
        Err(StoreError::SizeMismatch {
            expected: 3,
            actual: 4
        })
    ));
    drop(w);
    let mut w = store.writer(None).await.unwrap();
    w.expect_length(10);
    w.write(b"short").await.unwrap();
    assert!(matches!(
        w.commit().await,
        Err(StoreError::SizeMismatch {
            expected: 10,
            actual: 5
        })
    ));
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(tmp_entries(dir.path()).await, 0);
}

#[tokio::test]
async fn abandoned_write_leaves_nothing() {
    let (dir, store) = store().await;
    let mut w = store.writer(None).await.unwrap();
    w.write(&data(100_000, 3)).await.unwrap();
    assert_eq!(tmp_entries(dir.path()).await, 1);
    drop(w);
    assert_eq!(tmp_entries(dir.path()).await, 0);
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_killed_writer_is_cleaned_up_on_reopen() {
    let (dir, store) = store().await;
    let mut w = store.writer(None).await.unwrap();
    w.write(&data(100_000, 4)).await.unwrap();
    // A killed process runs no destructors: forgetting the writer leaves its file exactly
    // as a crash would.
    std::mem::forget(w);
    assert_eq!(tmp_entries(dir.path()).await, 1);
    assert!(store.list().await.unwrap().is_empty());
    drop(store);
    let reopened = BlobStore::open(dir.path()).await.unwrap();
    assert_eq!(tmp_entries(dir.path()).await, 0);
    assert!(reopened.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn stream_error_mid_way_leaves_nothing() {
    let (dir, store) = store().await;
    let chunks: Vec<Result<Bytes, io::Error>> = vec![
        Ok(Bytes::from_static(b"partial")),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ];
    let err = store
        .put_stream(None, None, futures::stream::iter(chunks))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Source(_)));
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(tmp_entries(dir.path()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_blob_both_succeed() {
    let (dir, store) = store().await;
    let content = data(3 << 20, 5);
    let digest = Digest::sha256_of(&content);
    let writers = (0..4).map(|_| {
        let store = store.clone();
        let content = content.clone();
        tokio::spawn(async move {
            let chunks: Vec<Result<Bytes, io::Error>> = content
                .chunks(64 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            store
                .put_stream(
                    Some(digest),
                    Some(content.len() as u64),
                    futures::stream::iter(chunks),
                )
                .await
        })
    });
    for r in futures::future::join_all(writers).await {
        assert_eq!(r.unwrap().unwrap().digest, digest);
    }
    assert_eq!(store.list().await.unwrap().len(), 1);
    assert_eq!(store.read_all(&digest).await.unwrap(), content);
    assert_eq!(tmp_entries(dir.path()).await, 0);
}

#[tokio::test]
async fn byte_ranges_at_every_edge() {
    let (_dir, store) = store().await;
    let content = data(100, 6);
    let d = store.put_bytes(None, &content).await.unwrap().digest;
    async fn read(store: &BlobStore, d: &Digest, r: Range<u64>) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        store.read_range(d, r).await?.read_to_end(&mut out).await?;
        Ok(out)
    }
    assert_eq!(read(&store, &d, 0..0).await.unwrap(), b"");
    assert_eq!(read(&store, &d, 100..100).await.unwrap(), b"");
    assert_eq!(read(&store, &d, 99..100).await.unwrap(), &content[99..]);
    assert_eq!(read(&store, &d, 0..100).await.unwrap(), content);
    assert_eq!(read(&store, &d, 10..20).await.unwrap(), &content[10..20]);
    assert!(matches!(
        read(&store, &d, 50..101).await,
        Err(StoreError::RangeNotSatisfiable { length: 100, .. })
    ));
    assert!(matches!(
        read(&store, &d, 101..101).await,
        Err(StoreError::RangeNotSatisfiable { .. })
    ));
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 20..10;
    assert!(matches!(
        read(&store, &d, backwards).await,
        Err(StoreError::RangeNotSatisfiable { .. })
    ));
    let missing = Digest::sha256_of(b"missing");
    assert!(matches!(
        read(&store, &missing, 0..0).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn partial_blob_out_of_order_then_commit() {
    let (dir, store) = store().await;
    let content = data((1 << 20) + 1234, 7);
    let meta = Metainfo::from_bytes(&content);
    let partial = store.partial(meta.clone()).await.unwrap();
    let mut order: Vec<usize> = (0..meta.piece_count()).collect();
    order.reverse();
    for i in order {
        let r = meta.piece_range(i).unwrap();
        partial
            .write_piece(i, &content[r.start as usize..r.end as usize])
            .unwrap();
    }
    let mut buf = vec![0u8; 10];
    partial.read_at(&mut buf, 5).unwrap();
    assert_eq!(buf, &content[5..15]);
    assert!(!store.contains(&meta.digest()).await.unwrap());
    assert!(matches!(
        partial.write_piece(0, b"wrong size"),
        Err(StoreError::BadPiece { index: 0 })
    ));
    let info = tokio::task::spawn_blocking(move || partial.commit())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.digest, meta.digest());
    assert_eq!(store.read_all(&meta.digest()).await.unwrap(), content);
    assert_eq!(tmp_entries(dir.path()).await, 0);
}

#[tokio::test]
async fn a_partial_blob_written_in_order_is_hashed_as_it_arrives() {
    let (_dir, store) = store().await;
    let content = noise((3 << 20) + 77, 11);
    let meta = Metainfo::from_bytes(&content);
    let partial = store.partial(meta.clone()).await.unwrap();
    for i in 0..meta.piece_count() {
        let r = meta.piece_range(i).unwrap();
        partial
            .write_piece(i, &content[r.start as usize..r.end as usize])
            .unwrap();
        // Everything written so far is in the running hash: the commit has nothing left.
        assert_eq!(partial.prefix.lock().unwrap().next, i + 1);
    }
    let info = tokio::task::spawn_blocking(move || partial.commit())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.digest, meta.digest());
    assert_eq!(store.read_all(&meta.digest()).await.unwrap(), content);
}

#[tokio::test]
async fn concurrent_writers_in_any_order_commit_the_right_blob() {
    let (dir, store) = store().await;
    let content = Arc::new(noise((5 << 20) + 4321, 12));
    let meta = Metainfo::from_bytes(&content);
    let partial = Arc::new(store.partial(meta.clone()).await.unwrap());
    // Four threads, each taking every fourth piece from its own end, so the prefix is
    // completed by different writers at different times.
    let n = meta.piece_count();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (partial, content, meta) =
                (Arc::clone(&partial), Arc::clone(&content), meta.clone());
            std::thread::spawn(move || {
                let mine: Vec<usize> = (0..n).filter(|i| i % 4 == t).collect();
                let order: Vec<usize> = if t % 2 == 0 {
                    mine
                } else {
                    mine.into_iter().rev().collect()
                };
                for i in order {
                    let r = meta.piece_range(i).unwrap();
                    partial
                        .write_piece(i, &content[r.start as usize..r.end as usize])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let partial = Arc::into_inner(partial).unwrap();
    assert_eq!(
        partial.prefix.lock().unwrap().next,
        n,
        "every piece hashed on the way"
    );
    let info = tokio::task::spawn_blocking(move || partial.commit())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.digest, meta.digest());
    assert_eq!(store.read_all(&meta.digest()).await.unwrap(), *content);
    assert_eq!(tmp_entries(dir.path()).await, 0);
}

#[tokio::test]
async fn a_piece_written_twice_keeps_its_first_bytes() {
    let (_dir, store) = store().await;
    let content = noise(700 << 10, 13);
    let meta = Metainfo::from_bytes(&content);
    let partial = store.partial(meta.clone()).await.unwrap();
    let first = meta.piece_range(0).unwrap();
    let piece = &content[first.start as usize..first.end as usize];
    partial.write_piece(0, piece).unwrap();
    let other = vec![0xa5; piece.len()];
    partial.write_piece(0, &other).unwrap();
    let mut buf = vec![0u8; piece.len()];
    partial.read_at(&mut buf, first.start).unwrap();
    assert_eq!(buf, piece, "the file holds the bytes that were hashed");
    for i in 1..meta.piece_count() {
        let r = meta.piece_range(i).unwrap();
        partial
            .write_piece(i, &content[r.start as usize..r.end as usize])
            .unwrap();
    }
    let info = tokio::task::spawn_blocking(move || partial.commit())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.digest, meta.digest());
}

#[tokio::test]
async fn partial_blob_with_bad_content_never_becomes_visible() {
    let (dir, store) = store().await;
    let content = data(600 << 10, 8);
    let meta = Metainfo::from_bytes(&content);
    let partial = store.partial(meta.clone()).await.unwrap();
    for i in 0..meta.piece_count() {
        let r = meta.piece_range(i).unwrap();
        let mut piece = content[r.start as usize..r.end as usize].to_vec();
        if i == 1 {
            piece[0] ^= 1;
        }
        partial.write_piece(i, &piece).unwrap();
    }
    let err = tokio::task::spawn_blocking(move || partial.commit())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch(_)));
    assert!(!store.contains(&meta.digest()).await.unwrap());
    assert_eq!(tmp_entries(dir.path()).await, 0);
}

#[tokio::test]
async fn junk_in_the_blob_tree_is_not_listed() {
    let (dir, store) = store().await;
    let d = store.put_bytes(None, b"real").await.unwrap().digest;
    std::fs::write(dir.path().join("blobs/sha256/not-hex"), b"x").unwrap();
    std::fs::create_dir_all(dir.path().join("blobs/md5/ab")).unwrap();
    std::fs::write(dir.path().join("blobs/md5/ab/abcd"), b"x").unwrap();
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].digest, d);
}
