//! The `queue` table: replica copies and write-backs still to do, each with its retry
//! schedule.

use rusqlite::{Connection, params};
use shoal_core::{Digest, RepoName, Tag};

use super::{Db, now_ms};
use crate::error::Result;

impl Db {
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

pub(super) fn enqueue_in(c: &Connection, tasks: &[Task], now: i64) -> Result<()> {
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

pub(super) const KIND_COPY_BLOB: &str = "copy_blob";
pub(super) const KIND_WRITE_BACK_BLOB: &str = "write_back_blob";
pub(super) const KIND_COPY_TAG: &str = "copy_tag";
pub(super) const KIND_WRITE_BACK_TAG: &str = "write_back_tag";
pub(super) const KIND_COPY_REFERRER: &str = "copy_referrer";

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
