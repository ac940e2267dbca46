use shoal_core::origin_client::Referrer;
use shoal_core::{Digest, Metainfo, RepoName, Tag};

use super::*;

fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("origin.db")).unwrap();
    (dir, db)
}

#[tokio::test]
async fn blobs_queue_and_listing() {
    let (_dir, db) = db();
    let m = Metainfo::from_bytes(b"abc");
    let d = m.digest();
    let copy = Task::CopyBlob {
        digest: d,
        target: "http://b:1".into(),
    };
    db.add_blob(
        &m,
        false,
        vec![copy.clone(), Task::WriteBackBlob { digest: d }],
    )
    .await
    .unwrap();
    // Queuing the same task twice keeps one row.
    db.enqueue(vec![copy.clone()]).await.unwrap();
    assert_eq!(db.queue_depth().await.unwrap(), (1, 1));
    assert_eq!(db.metainfo(d).await.unwrap(), Some(m.clone()));
    assert_eq!(db.list_blobs(None, 10).await.unwrap().len(), 1);
    assert!(
        db.list_blobs(Some(d.to_string()), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due = db.due(now_ms(), 10).await.unwrap();
    assert_eq!(due.len(), 2);
    db.retry(&due[0], now_ms() + 60_000, "nope".into())
        .await
        .unwrap();
    assert_eq!(db.due(now_ms(), 10).await.unwrap().len(), 1);
    db.make_due(None).await.unwrap();
    assert_eq!(db.due(now_ms(), 10).await.unwrap().len(), 2);
    assert!(db.unbacked_blobs(None, 10).await.unwrap().is_empty());
    // Queued again while it ran: finishing the old run leaves it queued.
    let running = db.due(now_ms(), 10).await.unwrap().remove(0);
    db.enqueue(vec![running.task.clone()]).await.unwrap();
    db.finish(&running).await.unwrap();
    assert_eq!(db.due(now_ms(), 10).await.unwrap().len(), 2);
    let again = db.due(now_ms(), 10).await.unwrap().remove(0);
    db.finish(&again).await.unwrap();
    assert_eq!(db.due(now_ms(), 10).await.unwrap().len(), 1);
    assert!(db.remove_blob(d).await.unwrap());
    assert_eq!(db.queue_depth().await.unwrap(), (0, 0));
    assert_eq!(db.blob_totals().await.unwrap(), (0, 0));
}

#[tokio::test]
async fn referrer_versions_tombstones_and_their_copy_task() {
    let (_dir, db) = db();
    let name: RepoName = "a/b".parse().unwrap();
    let subject = Digest::sha256_of(b"subject");
    let r1 = Digest::sha256_of(b"r1");
    let desc = Referrer {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: r1,
        size: 5,
        artifact_type: Some("application/vnd.example".into()),
        annotations: None,
    };
    let copy = Task::CopyReferrer {
        name: name.clone(),
        subject,
        referrer: r1,
        target: "http://b:1".into(),
    };
    let s1 = db
        .write_referrer(
            name.clone(),
            subject,
            r1,
            Some(desc.clone()),
            vec![copy.clone()],
        )
        .await
        .unwrap();
    let due = db.due(now_ms(), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].task, copy, "the task survives its row encoding");
    // An older copy loses; a tombstone written later wins.
    let older = ReferrerState {
        descriptor: None,
        version: s1.version - 1,
    };
    assert!(
        !db.put_referrer(name.clone(), subject, r1, older)
            .await
            .unwrap()
    );
    let entries = db.referrer_entries(name.clone(), subject).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].descriptor, Some(desc));
    let s2 = db
        .write_referrer(name.clone(), subject, r1, None, vec![])
        .await
        .unwrap();
    assert!(s2.version > s1.version);
    assert_eq!(
        db.referrer(name.clone(), subject, r1).await.unwrap(),
        Some(s2)
    );
    assert!(
        db.referrer_entries("other".parse().unwrap(), subject)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn tag_versions_and_tombstones() {
    let (_dir, db) = db();
    let name: RepoName = "a/b".parse().unwrap();
    let tag: Tag = "v1".parse().unwrap();
    let d1 = Digest::sha256_of(b"1");
    let d2 = Digest::sha256_of(b"2");
    let (s1, held) = db
        .write_tag(name.clone(), tag.clone(), Some(d1), vec![])
        .await
        .unwrap();
    assert_eq!(held, None);
    // An older copy does not win; a newer one does.
    let older = TagState {
        digest: Some(d2),
        version: s1.version - 1,
    };
    assert!(
        !db.put_tag(name.clone(), tag.clone(), older, vec![])
            .await
            .unwrap()
    );
    let (s2, _) = db
        .write_tag(name.clone(), tag.clone(), None, vec![])
        .await
        .unwrap();
    assert!(s2.version > s1.version);
    assert_eq!(db.tag(name.clone(), tag.clone()).await.unwrap(), Some(s2));
    assert_eq!(db.list_tags(name.clone(), None, 10).await.unwrap(), None);
    assert!(db.list_repositories(None, 10).await.unwrap().is_empty());
    assert_eq!(db.tag_entries(None, 10).await.unwrap().len(), 1);
    db.write_tag(name.clone(), "v2".parse().unwrap(), Some(d2), vec![])
        .await
        .unwrap();
    assert_eq!(
        db.list_tags(name.clone(), None, 10).await.unwrap(),
        Some(vec!["v2".to_string()])
    );
    assert_eq!(db.list_repositories(None, 10).await.unwrap(), vec!["a/b"]);
    let page = db
        .tag_entries(Some(("a/b".into(), "v1".into())), 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].tag, "v2");
}
