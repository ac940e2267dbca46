//! The `blobs` table: every blob in the store, its metainfo, and whether the backend holds it.

use rusqlite::{OptionalExtension, params};
use shoal_core::origin_client::BlobEntry;
use shoal_core::{Digest, Metainfo};

use super::queue::{KIND_COPY_BLOB, KIND_WRITE_BACK_BLOB, Task, enqueue_in};
use super::{Db, now_ms};
use crate::error::{Error, Result};

impl Db {
    /// Records a stored blob and queues `tasks` in one transaction; whether the blob is new
    /// to the index.
    pub async fn add_blob(
        &self,
        metainfo: &Metainfo,
        backed: bool,
        tasks: Vec<Task>,
    ) -> Result<bool> {
        let digest = metainfo.digest().to_string();
        let length = metainfo.length() as i64;
        let encoded = metainfo.encode();
        self.call(move |c| {
            let tx = c.transaction()?;
            let known = tx
                .query_row("SELECT 1 FROM blobs WHERE digest = ?1", [&digest], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            tx.execute(
                "INSERT INTO blobs (digest, length, metainfo, backed) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (digest) DO UPDATE SET backed = max(backed, excluded.backed)",
                params![digest, length, encoded, backed],
            )?;
            enqueue_in(&tx, &tasks, now_ms())?;
            tx.commit()?;
            Ok(!known)
        })
        .await
    }

    pub async fn metainfo(&self, digest: Digest) -> Result<Option<Metainfo>> {
        let raw: Option<Vec<u8>> = self
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT metainfo FROM blobs WHERE digest = ?1",
                    [digest.to_string()],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await?;
        raw.map(|r| {
            Metainfo::decode(&r).map_err(|e| Error::BadMetainfo {
                digest,
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    pub async fn has_blob(&self, digest: Digest) -> Result<bool> {
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT 1 FROM blobs WHERE digest = ?1",
                [digest.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
        .await
    }

    /// Forgets a blob and every queued task about it.
    pub async fn remove_blob(&self, digest: Digest) -> Result<bool> {
        self.call(move |c| {
            let d = digest.to_string();
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM blobs WHERE digest = ?1", [&d])?;
            tx.execute(
                "DELETE FROM queue WHERE key = ?1 AND kind IN (?2, ?3)",
                params![d, KIND_COPY_BLOB, KIND_WRITE_BACK_BLOB],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    pub async fn set_backed(&self, digest: Digest) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE blobs SET backed = 1 WHERE digest = ?1",
                [digest.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    /// Up to `n` blobs sorting after `last`, in digest order.
    pub async fn list_blobs(&self, last: Option<String>, n: usize) -> Result<Vec<BlobEntry>> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT digest, length FROM blobs WHERE digest > ?1 ORDER BY digest LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![last.unwrap_or_default(), n as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (d, len) = row?;
                // A row that does not parse was not written by us; skip rather than fail
                // every listing.
                if let Ok(digest) = d.parse() {
                    out.push(BlobEntry {
                        digest,
                        length: len as u64,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    /// Up to `n` blobs that the backend is not known to hold and that have no write-back
    /// queued.
    pub async fn unbacked_blobs(&self, last: Option<String>, n: usize) -> Result<Vec<Digest>> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT digest FROM blobs b WHERE backed = 0 AND digest > ?1
                   AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.kind = ?2 AND q.key = b.digest)
                 ORDER BY digest LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![last.unwrap_or_default(), KIND_WRITE_BACK_BLOB, n as i64],
                |r| r.get::<_, String>(0),
            )?;
            let mut out = Vec::new();
            for row in rows {
                if let Ok(d) = row?.parse() {
                    out.push(d);
                }
            }
            Ok(out)
        })
        .await
    }

    /// How many blobs, and how many bytes.
    pub async fn blob_totals(&self) -> Result<(u64, u64)> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT count(*), coalesce(sum(length), 0) FROM blobs",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?)
        })
        .await
    }
}
