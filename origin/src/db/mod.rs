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

use rusqlite::Connection;

use crate::error::{Error, Result};

mod blobs;
mod queue;
mod tags;

pub use queue::{QueuedTask, Task};
pub use tags::{ReferrerEntry, ReferrerState, TagEntry, TagState};

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
}

#[cfg(test)]
mod tests;
