//! The `tags` and `referrers` tables: versioned entries with tombstones, so that an older
//! copy arriving late cannot bring a deleted one back.

use rusqlite::{Connection, OptionalExtension, params};
use shoal_core::origin_client::Referrer;
use shoal_core::{Digest, RepoName, Tag};

use super::queue::{Task, enqueue_in};
use super::{Db, next_version, now_ms, plausible_version};
use crate::error::{Error, Result};

impl Db {
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
