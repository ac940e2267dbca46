//! The repair pass: every blob and tag on as many live owners as it should be.
//!
//! Each origin walks its own index in key order while reading every other live origin's
//! listing in the same order, a merge of sorted streams that needs memory for one page
//! per origin whatever the number of blobs. For each blob it holds it then knows exactly
//! which live origins hold it too, and:
//!
//! - if an owner lacks it, the first holder in ring order queues the copies (so one origin
//!   acts, not every holder);
//! - if this origin is not an owner and every owner holds it, this copy is a stray left by
//!   an earlier membership and is dropped (`repair.drop_strays`);
//! - if the backend is not known to hold it, a write-back is queued (the write-back first
//!   asks the backend, so this costs one lookup per blob, once).
//!
//! Tags go the same way with their versions: the holder of the newest version pushes it to
//! owners with an older one or none, tombstones included.
//!
//! A pass runs `repair.settle` after membership or liveness last changed, at start, and
//! every `repair.interval`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use shoal_core::origin_client::{BlobEntry, blob_key, tag_key};
use shoal_core::{RepoName, Tag};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::blobs;
use crate::db::{TagEntry, TagState, Task};
use crate::error::Result;
use crate::metrics::{REPAIR_COPY, REPAIR_DROP, REPAIR_WRITE_BACK};
use crate::remote::Remote;
use crate::state::{AppState, Shared};

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Blobs this origin held.
    pub blobs: u64,
    /// Blob copies queued for owners that lacked them.
    pub blob_copies: u64,
    /// Stray blob copies dropped.
    pub blobs_dropped: u64,
    /// Write-backs queued.
    pub write_backs: u64,
    pub tags: u64,
    pub tag_copies: u64,
    pub tags_dropped: u64,
}

/// Runs passes until `shutdown`: after each change of membership has settled, and every
/// `repair.interval`. An interval of 0 turns repair off.
pub async fn run(st: AppState, shutdown: CancellationToken) {
    let cfg = &st.config.repair;
    if cfg.interval.is_zero() {
        return;
    }
    let mut changes = st.cluster.subscribe();
    let mut due = Instant::now() + cfg.settle;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                due = Instant::now() + cfg.settle;
            }
            () = tokio::time::sleep_until(due) => {
                match pass(&st).await {
                    Ok(report) => tracing::info!(?report, "repair pass done"),
                    Err(e) => tracing::warn!(error = %e, "repair pass failed; retrying later"),
                }
                due = Instant::now() + cfg.interval.max(Duration::from_secs(1));
            }
        }
    }
}

/// A listing on another origin, read page by page as the walk needs it.
trait Listing {
    type Item;
    type Key: Ord + Clone;
    fn key(item: &Self::Item) -> Self::Key;
    async fn fetch(
        remote: &Remote,
        member: &str,
        last: Option<&Self::Key>,
        n: usize,
    ) -> Result<Vec<Self::Item>>;
}

struct Blobs;

impl Listing for Blobs {
    type Item = BlobEntry;
    type Key = String;

    fn key(item: &BlobEntry) -> String {
        item.digest.to_string()
    }

    async fn fetch(
        remote: &Remote,
        member: &str,
        last: Option<&String>,
        n: usize,
    ) -> Result<Vec<BlobEntry>> {
        remote.list_blobs(member, last.map(String::as_str), n).await
    }
}

struct Tags;

impl Listing for Tags {
    type Item = TagEntry;
    type Key = (String, String);

    fn key(item: &TagEntry) -> (String, String) {
        (item.name.clone(), item.tag.clone())
    }

    async fn fetch(
        remote: &Remote,
        member: &str,
        last: Option<&(String, String)>,
        n: usize,
    ) -> Result<Vec<TagEntry>> {
        remote.list_tag_entries(member, last, n).await
    }
}

struct Cursor<L: Listing> {
    member: String,
    page: VecDeque<L::Item>,
    last: Option<L::Key>,
    done: bool,
}

impl<L: Listing> Cursor<L> {
    fn new(member: String) -> Self {
        Cursor {
            member,
            page: VecDeque::new(),
            last: None,
            done: false,
        }
    }

    /// The member's entry for `key`, if it has one. Keys must be asked in increasing order.
    async fn find(&mut self, remote: &Remote, key: &L::Key, n: usize) -> Result<Option<&L::Item>> {
        loop {
            while self.page.front().is_some_and(|i| L::key(i) < *key) {
                self.page.pop_front();
            }
            if !self.page.is_empty() || self.done {
                break;
            }
            let page = L::fetch(remote, &self.member, self.last.as_ref(), n).await?;
            self.done = page.len() < n;
            if let Some(tail) = page.last() {
                self.last = Some(L::key(tail));
            }
            self.page.extend(page);
        }
        Ok(self.page.front().filter(|i| L::key(i) == *key))
    }
}

/// One repair pass over everything this origin holds.
pub async fn pass(st: &Shared) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    let Some(me) = st.cluster.me() else {
        return Ok(report);
    };
    repair_blobs(st, &me, &mut report).await?;
    repair_tags(st, &me, &mut report).await?;
    if st.backend.stores() {
        queue_write_backs(st, &mut report).await?;
    }
    let m = &st.metrics;
    m.repair_action(REPAIR_COPY, report.blob_copies + report.tag_copies);
    m.repair_action(REPAIR_DROP, report.blobs_dropped + report.tags_dropped);
    m.repair_action(REPAIR_WRITE_BACK, report.write_backs);
    st.queued().await;
    Ok(report)
}

async fn repair_blobs(st: &Shared, me: &str, report: &mut RepairReport) -> Result<()> {
    let n = st.config.repair.page;
    let mut cursors: HashMap<String, Cursor<Blobs>> = st
        .cluster
        .others_live()
        .into_iter()
        .map(|m| (m.clone(), Cursor::new(m)))
        .collect();
    let mut last: Option<String> = None;
    loop {
        let page = st.db.list_blobs(last.clone(), n).await?;
        let Some(tail) = page.last() else { break };
        last = Some(tail.digest.to_string());
        let mut tasks = Vec::new();
        for entry in page {
            report.blobs += 1;
            let digest = entry.digest;
            let key = digest.to_string();
            let ranked = st.cluster.ranked(&blob_key(&digest));
            let owners = &ranked[..ranked.len().min(st.cluster.replicas())];
            let mut holders = vec![me.to_owned()];
            for (member, cursor) in cursors.iter_mut() {
                if cursor.find(&st.remote, &key, n).await?.is_some() {
                    holders.push(member.clone());
                }
            }
            let missing: Vec<&String> = owners.iter().filter(|o| !holders.contains(o)).collect();
            if !missing.is_empty() {
                let first = ranked.iter().find(|m| holders.contains(m));
                if first.map(String::as_str) == Some(me) {
                    for target in missing {
                        tasks.push(Task::CopyBlob {
                            digest,
                            target: target.clone(),
                        });
                    }
                }
            } else if !owners.iter().any(|o| o == me) && st.config.repair.drop_strays {
                tracing::info!(%digest, "dropping a stray copy: every owner holds the blob");
                blobs::delete_local(st, digest).await?;
                report.blobs_dropped += 1;
            }
        }
        report.blob_copies += tasks.len() as u64;
        st.db.enqueue(tasks).await?;
    }
    Ok(())
}

async fn repair_tags(st: &Shared, me: &str, report: &mut RepairReport) -> Result<()> {
    let n = st.config.repair.page;
    let mut cursors: HashMap<String, Cursor<Tags>> = st
        .cluster
        .others_live()
        .into_iter()
        .map(|m| (m.clone(), Cursor::new(m)))
        .collect();
    let mut last: Option<(String, String)> = None;
    loop {
        let page = st.db.tag_entries(last.clone(), n).await?;
        let Some(tail) = page.last() else { break };
        last = Some((tail.name.clone(), tail.tag.clone()));
        let mut tasks = Vec::new();
        for entry in page {
            let (Ok(name), Ok(tag)) = (entry.name.parse::<RepoName>(), entry.tag.parse::<Tag>())
            else {
                continue;
            };
            report.tags += 1;
            let mine = entry.state();
            let key = (entry.name.clone(), entry.tag.clone());
            let ranked = st.cluster.ranked(&tag_key(&name, &tag));
            let owners = &ranked[..ranked.len().min(st.cluster.replicas())];
            let mut states: HashMap<String, TagState> = HashMap::from([(me.to_owned(), mine)]);
            for (member, cursor) in cursors.iter_mut() {
                if let Some(e) = cursor.find(&st.remote, &key, n).await? {
                    states.insert(member.clone(), e.state());
                }
            }
            if states.values().any(|s| s.newer_than(&mine)) {
                continue;
            }
            let stale: Vec<&String> = owners
                .iter()
                .filter(|o| states.get(*o).is_none_or(|s| mine.newer_than(s)))
                .collect();
            if !stale.is_empty() {
                let first = ranked.iter().find(|m| states.get(*m) == Some(&mine));
                if first.map(String::as_str) == Some(me) {
                    for target in stale {
                        tasks.push(Task::CopyTag {
                            name: name.clone(),
                            tag: tag.clone(),
                            target: target.clone(),
                        });
                    }
                }
            } else if !owners.iter().any(|o| o == me) && st.config.repair.drop_strays {
                st.db.drop_tag(name, tag).await?;
                report.tags_dropped += 1;
            }
        }
        report.tag_copies += tasks.len() as u64;
        st.db.enqueue(tasks).await?;
    }
    Ok(())
}

async fn queue_write_backs(st: &Shared, report: &mut RepairReport) -> Result<()> {
    let n = st.config.repair.page;
    let mut last: Option<String> = None;
    loop {
        let page = st.db.unbacked_blobs(last.clone(), n).await?;
        let Some(tail) = page.last() else { break };
        last = Some(tail.to_string());
        report.write_backs += page.len() as u64;
        st.db
            .enqueue(
                page.into_iter()
                    .map(|digest| Task::WriteBackBlob { digest })
                    .collect(),
            )
            .await?;
    }
    Ok(())
}
