//! The origin's SQLite index, `origin.db` in the data directory:
//!
//! - `blobs`: every blob in the store with its length and metainfo (computed once), and
//!   whether the backend is known to hold it;
//! - `tags`: `name:tag → digest` with a version, deletions kept as tombstones (no digest) so
//!   that an older copy arriving late cannot bring a deleted tag back;
//! - `referrers`: for the referrers API, `(name, subject, referrer) → descriptor` with a
//!   version, deletions kept as tombstones like tags;
//! - `queue`: replica copies and write-backs still to do, each with its retry schedule.
//!
//! One connection behind a mutex, used from blocking threads. The journal is synchronous so
//! a queued copy survives a power cut as well as a crash: an upload is acknowledged only
//! after its queue rows are committed.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use shoal_core::origin_client::{BlobEntry, Referrer};
use shoal_core::{Digest, Metainfo, RepoName, Tag};

use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blobs (
    digest   TEXT PRIMARY KEY,
    length   INTEGER NOT NULL,
    metainfo BLOB NOT NULL,
    backed   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    repo    TEXT NOT NULL,
    tag     TEXT NOT NULL,
    digest  TEXT,
    version INTEGER NOT NULL,
    PRIMARY KEY (repo, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS referrers (
    repo       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    referrer   TEXT NOT NULL,
    descriptor TEXT,
    version    INTEGER NOT NULL,
    PRIMARY KEY (repo, subject, referrer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    target     TEXT NOT NULL DEFAULT '',
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    seq        INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    UNIQUE (kind, key, target)
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (next_at);
";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How far ahead of this origin's clock a version from another origin may be. Versions are
/// milliseconds since the epoch (one more than the held one when writes come faster), so
/// only clock skew puts a real one ahead; a version far in the future would pin the entry
/// until then, and `i64::MAX` for good.
pub const MAX_VERSION_AHEAD_MS: i64 = 60 * 60 * 1000;

/// Whether a tag or referrer version another origin sent can be one this cluster wrote.
pub fn plausible_version(version: i64) -> bool {
    (0..=now_ms().saturating_add(MAX_VERSION_AHEAD_MS)).contains(&version)
}

/// The version of a new local write: past both the clock and the version held, so that it
/// wins over every copy the cluster has seen.
fn next_version(held: Option<i64>) -> Result<i64> {
    let after_held = match held {
        Some(v) => v.checked_add(1).ok_or(Error::VersionOverflow)?,
        None => 0,
    };
    Ok(now_ms().max(after_held))
}

#[derive(Debug, Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection in a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().map_err(|_| Error::Poisoned)?;
            f(&mut c)
        })
        .await?
    }

    // ---- blobs ----

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

    // ---- tags ----

    pub async fn tag(&self, name: RepoName, tag: Tag) -> Result<Option<TagState>> {
        self.call(move |c| tag_in(c, &name, &tag)).await
    }

    /// Writes a tag state if it is newer than the one held; returns whether it was applied.
    /// `tasks` are queued in the same transaction when it was.
    pub async fn put_tag(
        &self,
        name: RepoName,
        tag: Tag,
        state: TagState,
        tasks: Vec<Task>,
    ) -> Result<bool> {
        if !plausible_version(state.version) {
            return Err(Error::ImplausibleVersion(state.version));
        }
        self.call(move |c| {
            let tx = c.transaction()?;
            if tag_in(&tx, &name, &tag)?.is_some_and(|held| !state.newer_than(&held)) {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO tags (repo, tag, digest, version) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, version = excluded.version",
                params![
                    name.as_str(),
                    tag.as_str(),
                    state.digest.map(|d| d.to_string()),
                    state.version
                ],
            )?;
            enqueue_in(&tx, &tasks, now_ms())?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    /// Writes a new local version of a tag: one past both the clock and the version held,
    /// so that it wins over every copy the cluster has seen. Returns the state written and
    /// the one it replaced.
    pub async fn write_tag(
        &self,
        name: RepoName,
        tag: Tag,
        digest: Option<Digest>,
        tasks: Vec<Task>,
    ) -> Result<(TagState, Option<TagState>)> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let held = tag_in(&tx, &name, &tag)?;
            let version = next_version(held.map(|h| h.version))?;
            let state = TagState { digest, version };
            tx.execute(
                "INSERT INTO tags (repo, tag, digest, version) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, version = excluded.version",
                params![
                    name.as_str(),
                    tag.as_str(),
                    digest.map(|d| d.to_string()),
                    version
                ],
            )?;
            enqueue_in(&tx, &tasks, now_ms())?;
            tx.commit()?;
            Ok((state, held))
        })
        .await
    }

    /// Forgets a tag entirely (a copy this origin no longer owns).
    pub async fn drop_tag(&self, name: RepoName, tag: Tag) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM tags WHERE repo = ?1 AND tag = ?2",
                params![name.as_str(), tag.as_str()],
            )?;
            Ok(())
        })
        .await
    }

    /// A page of a repository's live tags, or `None` if it has none at all.
    pub async fn list_tags(
        &self,
        name: RepoName,
        last: Option<String>,
        n: usize,
    ) -> Result<Option<Vec<String>>> {
        self.call(move |c| {
            let any = c
                .query_row(
                    "SELECT 1 FROM tags WHERE repo = ?1 AND digest IS NOT NULL LIMIT 1",
                    [name.as_str()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !any {
                return Ok(None);
            }
            let mut stmt = c.prepare_cached(
                "SELECT tag FROM tags WHERE repo = ?1 AND digest IS NOT NULL AND tag > ?2
                 ORDER BY tag LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![name.as_str(), last.unwrap_or_default(), n as i64],
                |r| r.get::<_, String>(0),
            )?;
            Ok(Some(rows.collect::<rusqlite::Result<_>>()?))
        })
        .await
    }

    /// A page of the repositories with at least one live tag.
    pub async fn list_repositories(&self, last: Option<String>, n: usize) -> Result<Vec<String>> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT repo FROM tags WHERE digest IS NOT NULL AND repo > ?1
                 ORDER BY repo LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![last.unwrap_or_default(), n as i64], |r| {
                r.get::<_, String>(0)
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// A page of every tag entry, tombstones included, in `(name, tag)` order after `last`.
    pub async fn tag_entries(
        &self,
        last: Option<(String, String)>,
        n: usize,
    ) -> Result<Vec<TagEntry>> {
        self.call(move |c| {
            let (lr, lt) = last.unwrap_or_default();
            let mut stmt = c.prepare_cached(
                "SELECT repo, tag, digest, version FROM tags WHERE (repo, tag) > (?1, ?2)
                 ORDER BY repo, tag LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![lr, lt, n as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (repo, tag, digest, version) = row?;
                let digest = match digest.map(|d| d.parse::<Digest>()) {
                    Some(Ok(d)) => Some(d),
                    Some(Err(_)) => continue,
                    None => None,
                };
                out.push(TagEntry {
                    name: repo,
                    tag,
                    digest,
                    version,
                });
            }
            Ok(out)
        })
        .await
    }

    // ---- referrers ----

    pub async fn referrer(
        &self,
        name: RepoName,
        subject: Digest,
        referrer: Digest,
    ) -> Result<Option<ReferrerState>> {
        self.call(move |c| referrer_in(c, &name, &subject, &referrer))
            .await
    }

    /// Writes a referrer's state if it is newer than the one held (a copy from another
    /// origin); returns whether it was applied.
    pub async fn put_referrer(
        &self,
        name: RepoName,
        subject: Digest,
        referrer: Digest,
        state: ReferrerState,
    ) -> Result<bool> {
        if !plausible_version(state.version) {
            return Err(Error::ImplausibleVersion(state.version));
        }
        self.call(move |c| {
            let tx = c.transaction()?;
            if referrer_in(&tx, &name, &subject, &referrer)?
                .is_some_and(|held| !state.newer_than(&held))
            {
                return Ok(false);
            }
            set_referrer_in(&tx, &name, &subject, &referrer, &state)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    /// Writes a new local version of a referrer (a descriptor, or `None` for a deletion),
    /// newer than any the cluster has seen, and queues `tasks` with it.
    pub async fn write_referrer(
        &self,
        name: RepoName,
        subject: Digest,
        referrer: Digest,
        descriptor: Option<Referrer>,
        tasks: Vec<Task>,
    ) -> Result<ReferrerState> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let held = referrer_in(&tx, &name, &subject, &referrer)?;
            let version = next_version(held.map(|h| h.version))?;
            let state = ReferrerState {
                descriptor,
                version,
            };
            set_referrer_in(&tx, &name, &subject, &referrer, &state)?;
            enqueue_in(&tx, &tasks, now_ms())?;
            tx.commit()?;
            Ok(state)
        })
        .await
    }

    /// Every referrer entry of `subject` in `name` held here, tombstones included.
    pub async fn referrer_entries(
        &self,
        name: RepoName,
        subject: Digest,
    ) -> Result<Vec<ReferrerEntry>> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT referrer, descriptor, version FROM referrers
                 WHERE repo = ?1 AND subject = ?2 ORDER BY referrer",
            )?;
            let rows = stmt.query_map(params![name.as_str(), subject.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (referrer, descriptor, version) = row?;
                // Rows that do not parse were not written by us; skip them.
                let Ok(referrer) = referrer.parse() else {
                    continue;
                };
                let Some(state) = parse_referrer_state(descriptor, version) else {
                    continue;
                };
                out.push(ReferrerEntry {
                    referrer,
                    descriptor: state.descriptor,
                    version: state.version,
                });
            }
            Ok(out)
        })
        .await
    }

    // ---- queue ----

    pub async fn enqueue(&self, tasks: Vec<Task>) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        self.call(move |c| {
            let tx = c.transaction()?;
            enqueue_in(&tx, &tasks, now_ms())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Up to `n` tasks due at `now`, oldest schedule first.
    pub async fn due(&self, now: i64, n: usize) -> Result<Vec<QueuedTask>> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, kind, key, target, attempts, seq FROM queue WHERE next_at <= ?1
                 ORDER BY next_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, n as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            let mut bad = Vec::new();
            for row in rows {
                let (id, kind, key, target, attempts, seq) = row?;
                match Task::from_row(&kind, &key, &target) {
                    Some(task) => out.push(QueuedTask {
                        id,
                        task,
                        attempts: attempts as u32,
                        seq,
                    }),
                    None => bad.push(id),
                }
            }
            drop(stmt);
            for id in bad {
                tracing::warn!(id, "dropping a queue row that does not parse");
                c.execute("DELETE FROM queue WHERE id = ?1", [id])?;
            }
            Ok(out)
        })
        .await
    }

    /// When the next task falls due, if any is queued.
    pub async fn next_due(&self) -> Result<Option<i64>> {
        self.call(|c| Ok(c.query_row("SELECT min(next_at) FROM queue", [], |r| r.get(0))?))
            .await
    }

    /// Removes a task that is done, unless it was queued again while it ran (its `seq`
    /// moved on): then what it did may already be stale, and it stays to run again.
    pub async fn finish(&self, task: &QueuedTask) -> Result<()> {
        let (id, seq) = (task.id, task.seq);
        self.call(move |c| {
            c.execute(
                "DELETE FROM queue WHERE id = ?1 AND seq = ?2",
                params![id, seq],
            )?;
            Ok(())
        })
        .await
    }

    /// Schedules another attempt, unless the task was queued again while it ran.
    pub async fn retry(&self, task: &QueuedTask, next_at: i64, error: String) -> Result<()> {
        let (id, seq) = (task.id, task.seq);
        self.call(move |c| {
            c.execute(
                "UPDATE queue SET attempts = attempts + 1, next_at = ?3, last_error = ?4
                 WHERE id = ?1 AND seq = ?2",
                params![id, seq, next_at, error],
            )?;
            Ok(())
        })
        .await
    }

    /// Makes every task due now, or only those aimed at `target`.
    pub async fn make_due(&self, target: Option<String>) -> Result<usize> {
        self.call(move |c| {
            let now = now_ms();
            Ok(match target {
                Some(t) => c.execute(
                    "UPDATE queue SET next_at = ?1 WHERE target = ?2 AND next_at > ?1",
                    params![now, t],
                )?,
                None => c.execute("UPDATE queue SET next_at = ?1 WHERE next_at > ?1", [now])?,
            })
        })
        .await
    }

    /// Queued tasks per queue: (replication, write-back).
    pub async fn queue_depth(&self) -> Result<(u64, u64)> {
        self.call(|c| {
            let mut stmt = c.prepare_cached("SELECT kind, count(*) FROM queue GROUP BY kind")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let (mut repl, mut wb) = (0, 0);
            for row in rows {
                let (kind, n) = row?;
                match kind.as_str() {
                    KIND_WRITE_BACK_BLOB | KIND_WRITE_BACK_TAG => wb += n as u64,
                    _ => repl += n as u64,
                }
            }
            Ok((repl, wb))
        })
        .await
    }
}

fn tag_in(c: &Connection, name: &RepoName, tag: &Tag) -> Result<Option<TagState>> {
    let row: Option<(Option<String>, i64)> = c
        .query_row(
            "SELECT digest, version FROM tags WHERE repo = ?1 AND tag = ?2",
            params![name.as_str(), tag.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(d, version)| {
        let digest = match d.map(|d| d.parse::<Digest>()) {
            Some(Ok(d)) => Some(d),
            Some(Err(_)) => return None,
            None => None,
        };
        Some(TagState { digest, version })
    }))
}

fn referrer_in(
    c: &Connection,
    name: &RepoName,
    subject: &Digest,
    referrer: &Digest,
) -> Result<Option<ReferrerState>> {
    let row: Option<(Option<String>, i64)> = c
        .query_row(
            "SELECT descriptor, version FROM referrers
             WHERE repo = ?1 AND subject = ?2 AND referrer = ?3",
            params![name.as_str(), subject.to_string(), referrer.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(d, v)| parse_referrer_state(d, v)))
}

fn set_referrer_in(
    c: &Connection,
    name: &RepoName,
    subject: &Digest,
    referrer: &Digest,
    state: &ReferrerState,
) -> Result<()> {
    let descriptor = state
        .descriptor
        .as_ref()
        .and_then(|d| serde_json::to_string(d).ok());
    c.execute(
        "INSERT INTO referrers (repo, subject, referrer, descriptor, version)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (repo, subject, referrer)
         DO UPDATE SET descriptor = excluded.descriptor, version = excluded.version",
        params![
            name.as_str(),
            subject.to_string(),
            referrer.to_string(),
            descriptor,
            state.version
        ],
    )?;
    Ok(())
}

fn parse_referrer_state(descriptor: Option<String>, version: i64) -> Option<ReferrerState> {
    let descriptor = match descriptor {
        Some(text) => Some(serde_json::from_str(&text).ok()?),
        None => None,
    };
    Some(ReferrerState {
        descriptor,
        version,
    })
}

fn enqueue_in(c: &Connection, tasks: &[Task], now: i64) -> Result<()> {
    let mut stmt = c.prepare_cached(
        "INSERT INTO queue (kind, key, target, next_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind, key, target)
         DO UPDATE SET next_at = min(next_at, excluded.next_at), seq = seq + 1",
    )?;
    for t in tasks {
        stmt.execute(params![t.kind(), t.key(), t.target(), now])?;
    }
    Ok(())
}

/// A tag's value on one origin: a digest, or a tombstone (`None`), at a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagState {
    pub digest: Option<Digest>,
    pub version: i64,
}

impl TagState {
    /// The order every origin agrees on: higher version, then (for equal versions written
    /// at once on two origins) a value over a tombstone, then the greater digest.
    pub fn newer_than(&self, other: &TagState) -> bool {
        (self.version, self.digest) > (other.version, other.digest)
    }
}

/// One row of a tag listing between origins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TagEntry {
    pub name: String,
    pub tag: String,
    pub digest: Option<Digest>,
    pub version: i64,
}

impl TagEntry {
    pub fn state(&self) -> TagState {
        TagState {
            digest: self.digest,
            version: self.version,
        }
    }
}

/// A referrer's state on one origin: its descriptor, or a tombstone (`None`), at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerState {
    pub descriptor: Option<Referrer>,
    pub version: i64,
}

impl ReferrerState {
    /// Higher version first, then (for equal versions written at once on two origins) a
    /// value over a tombstone, so every origin settles on the same state.
    pub fn newer_than(&self, other: &ReferrerState) -> bool {
        (self.version, self.descriptor.is_some()) > (other.version, other.descriptor.is_some())
    }
}

/// One referrer entry between origins, tombstones included.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReferrerEntry {
    pub referrer: Digest,
    pub descriptor: Option<Referrer>,
    pub version: i64,
}

impl ReferrerEntry {
    pub fn state(&self) -> ReferrerState {
        ReferrerState {
            descriptor: self.descriptor.clone(),
            version: self.version,
        }
    }
}

const KIND_COPY_BLOB: &str = "copy_blob";
const KIND_WRITE_BACK_BLOB: &str = "write_back_blob";
const KIND_COPY_TAG: &str = "copy_tag";
const KIND_WRITE_BACK_TAG: &str = "write_back_tag";
const KIND_COPY_REFERRER: &str = "copy_referrer";

/// Work for the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Copy a blob to another origin.
    CopyBlob {
        digest: Digest,
        target: String,
    },
    WriteBackBlob {
        digest: Digest,
    },
    /// Send this origin's state of a tag (a value or a tombstone) to another origin.
    CopyTag {
        name: RepoName,
        tag: Tag,
        target: String,
    },
    WriteBackTag {
        name: RepoName,
        tag: Tag,
    },
    /// Send this origin's state of a referrer entry to another origin.
    CopyReferrer {
        name: RepoName,
        subject: Digest,
        referrer: Digest,
        target: String,
    },
}

impl Task {
    fn kind(&self) -> &'static str {
        match self {
            Task::CopyBlob { .. } => KIND_COPY_BLOB,
            Task::WriteBackBlob { .. } => KIND_WRITE_BACK_BLOB,
            Task::CopyTag { .. } => KIND_COPY_TAG,
            Task::WriteBackTag { .. } => KIND_WRITE_BACK_TAG,
            Task::CopyReferrer { .. } => KIND_COPY_REFERRER,
        }
    }

    fn key(&self) -> String {
        match self {
            Task::CopyBlob { digest, .. } | Task::WriteBackBlob { digest } => digest.to_string(),
            Task::CopyTag { name, tag, .. } | Task::WriteBackTag { name, tag } => {
                format!("{name}:{tag}")
            }
            // Neither names nor digests contain an `@`.
            Task::CopyReferrer {
                name,
                subject,
                referrer,
                ..
            } => format!("{name}@{subject}@{referrer}"),
        }
    }

    pub fn target(&self) -> &str {
        match self {
            Task::CopyBlob { target, .. }
            | Task::CopyTag { target, .. }
            | Task::CopyReferrer { target, .. } => target,
            _ => "",
        }
    }

    pub fn is_write_back(&self) -> bool {
        matches!(self, Task::WriteBackBlob { .. } | Task::WriteBackTag { .. })
    }

    fn from_row(kind: &str, key: &str, target: &str) -> Option<Task> {
        let tag_key = || -> Option<(RepoName, Tag)> {
            // Neither names nor tags contain a colon.
            let (n, t) = key.split_once(':')?;
            Some((n.parse().ok()?, t.parse().ok()?))
        };
        Some(match kind {
            KIND_COPY_BLOB => Task::CopyBlob {
                digest: key.parse().ok()?,
                target: target.to_owned(),
            },
            KIND_WRITE_BACK_BLOB => Task::WriteBackBlob {
                digest: key.parse().ok()?,
            },
            KIND_COPY_TAG => {
                let (name, tag) = tag_key()?;
                Task::CopyTag {
                    name,
                    tag,
                    target: target.to_owned(),
                }
            }
            KIND_WRITE_BACK_TAG => {
                let (name, tag) = tag_key()?;
                Task::WriteBackTag { name, tag }
            }
            KIND_COPY_REFERRER => {
                let mut parts = key.split('@');
                let (name, subject, referrer) = (parts.next()?, parts.next()?, parts.next()?);
                Task::CopyReferrer {
                    name: name.parse().ok()?,
                    subject: subject.parse().ok()?,
                    referrer: referrer.parse().ok()?,
                    target: target.to_owned(),
                }
            }
            _ => return None,
        })
    }
}

/// A task read back from the queue.
#[derive(Debug, Clone)]
pub struct QueuedTask {
    pub id: i64,
    pub task: Task,
    pub attempts: u32,
    /// Bumped each time the task is queued again; see [`Db::finish`].
    pub seq: i64,
}

#[cfg(test)]
mod tests {
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
}
