//! The worker that drains the durable queue: replica copies to other origins and
//! write-backs to the backend.
//!
//! A task stays in SQLite until it is done, so a restart resumes it (every task is made due
//! at start: a restart is a good moment to try again). A failed task is retried after a
//! delay that doubles from `retry_min` up to `retry_max`, with jitter so that many tasks
//! failing together do not retry together. A copy aimed at an origin that is down waits
//! without trying; when membership or liveness changes every task is made due again.

use std::time::Duration;

use futures::StreamExt;
use shoal_core::origin_client::blob_key;
use tokio_util::sync::CancellationToken;

use crate::db::{QueuedTask, Task, now_ms};
use crate::error::Result;
use crate::state::AppState;

/// Tasks read from the database at a time.
const BATCH: usize = 64;
/// The longest the worker sleeps without looking at the queue.
const IDLE: Duration = Duration::from_secs(30);

/// What became of one attempt.
#[derive(Debug)]
enum Outcome {
    Done,
    /// The task no longer makes sense (its blob or target is gone).
    Dropped(&'static str),
    Retry(String),
    /// The target is down: try again later without counting it as a failure worth a
    /// warning (a membership change makes it due again when the target is back).
    Wait(String),
}

/// The delay before retry number `attempts + 1`: doubling from `min`, at most `max`, and
/// drawn from the upper half of that so retries spread out.
pub fn retry_delay(attempts: u32, min: Duration, max: Duration) -> Duration {
    let full = min
        .checked_mul(1u32.checked_shl(attempts.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    full.mul_f64(rand::random_range(0.5..=1.0))
}

pub async fn run(st: AppState, shutdown: CancellationToken) {
    let mut changes = st.cluster.subscribe();
    if let Err(e) = st.db.make_due(None).await {
        tracing::error!(error = %e, "cannot reschedule the queue");
    }
    st.refresh_queue_depth().await;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let due = match st.db.due(now_ms(), BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the queue");
                Vec::new()
            }
        };
        if due.is_empty() {
            let wait = match st.db.next_due().await {
                Ok(Some(at)) => {
                    Duration::from_millis((at - now_ms()).clamp(1, IDLE.as_millis() as i64) as u64)
                }
                _ => IDLE,
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = st.queue_wake.notified() => {}
                r = changes.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if let Err(e) = st.db.make_due(None).await {
                        tracing::error!(error = %e, "cannot reschedule the queue");
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let concurrency = st.config.queue.concurrency;
        let mut work = futures::stream::iter(due)
            .map(|t| {
                let st = st.clone();
                async move { attempt(&st, t).await }
            })
            .buffer_unordered(concurrency);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                next = work.next() => if next.is_none() { break },
            }
        }
        st.refresh_queue_depth().await;
    }
}

async fn attempt(st: &AppState, qt: QueuedTask) {
    let outcome = match process(st, &qt.task).await {
        Ok(o) => o,
        Err(e) => Outcome::Retry(e.to_string()),
    };
    let result = match &outcome {
        Outcome::Done => {
            tracing::debug!(task = ?qt.task, "queued task done");
            st.db.finish(&qt).await
        }
        Outcome::Dropped(why) => {
            tracing::info!(task = ?qt.task, why, "queued task dropped");
            st.db.finish(&qt).await
        }
        Outcome::Retry(error) | Outcome::Wait(error) => {
            let q = &st.config.queue;
            let delay = retry_delay(qt.attempts, q.retry_min, q.retry_max);
            let retry_in_ms = delay.as_millis() as u64;
            if matches!(outcome, Outcome::Retry(_)) {
                tracing::warn!(task = ?qt.task, attempts = qt.attempts + 1, error, retry_in_ms, "queued task failed");
            } else {
                tracing::debug!(task = ?qt.task, error, retry_in_ms, "queued task waits for its target");
            }
            st.db
                .retry(&qt, now_ms() + delay.as_millis() as i64, error.clone())
                .await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot update the queue");
    }
}

async fn process(st: &AppState, task: &Task) -> Result<Outcome> {
    match task {
        Task::CopyBlob { digest, target } => {
            if let Some(o) = check_target(st, target) {
                return Ok(o);
            }
            // Not an owner any more: the repair pass places it where it belongs now.
            if !st.cluster.owners(&blob_key(digest)).contains(target) {
                return Ok(Outcome::Dropped("the target no longer owns the blob"));
            }
            let (file, length) = match st.store.open_blob(digest).await {
                Ok(f) => f,
                Err(shoal_core::store::StoreError::NotFound(_)) => {
                    return Ok(Outcome::Dropped("the blob is gone"));
                }
                Err(e) => return Err(e.into()),
            };
            if st.remote.stat_local(target, digest).await?.is_some() {
                return Ok(Outcome::Done);
            }
            let metrics = st.metrics.clone();
            let body =
                tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).inspect(move |c| {
                    if let Ok(c) = c {
                        metrics.sent_http(c.len() as u64);
                    }
                });
            st.remote
                .put_blob_internal(target, digest, length, body)
                .await?;
            tracing::debug!(%digest, target, "replica copied");
            Ok(Outcome::Done)
        }
        Task::WriteBackBlob { digest } => {
            if !st.backend.stores() {
                return Ok(Outcome::Dropped("no backend"));
            }
            if st.backend.stat_blob(digest).await?.is_none() {
                let (file, length) = match st.store.open_blob(digest).await {
                    Ok(f) => f,
                    Err(shoal_core::store::StoreError::NotFound(_)) => {
                        return Ok(Outcome::Dropped("the blob is gone"));
                    }
                    Err(e) => return Err(e.into()),
                };
                let body = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).boxed();
                st.backend.put_blob(digest, length, body).await?;
                tracing::debug!(%digest, "blob written back");
            }
            st.db.set_backed(*digest).await?;
            Ok(Outcome::Done)
        }
        Task::CopyTag { name, tag, target } => {
            if let Some(o) = check_target(st, target) {
                return Ok(o);
            }
            let Some(state) = st.db.tag(name.clone(), tag.clone()).await? else {
                return Ok(Outcome::Dropped("the tag is gone"));
            };
            st.remote.put_tag_internal(target, name, tag, state).await?;
            Ok(Outcome::Done)
        }
        Task::CopyReferrer {
            name,
            subject,
            referrer,
            target,
        } => {
            if let Some(o) = check_target(st, target) {
                return Ok(o);
            }
            let Some(state) = st.db.referrer(name.clone(), *subject, *referrer).await? else {
                return Ok(Outcome::Dropped("the referrer entry is gone"));
            };
            st.remote
                .put_referrer_internal(target, name, subject, referrer, state)
                .await?;
            Ok(Outcome::Done)
        }
        Task::WriteBackTag { name, tag } => {
            if !st.backend.stores() {
                return Ok(Outcome::Dropped("no backend"));
            }
            match st.db.tag(name.clone(), tag.clone()).await? {
                None => return Ok(Outcome::Dropped("the tag is gone")),
                Some(s) => match s.digest {
                    Some(d) => st.backend.put_tag(name, tag, &d).await?,
                    None => {
                        st.backend.delete_tag(name, tag).await?;
                    }
                },
            }
            Ok(Outcome::Done)
        }
    }
}

/// Whether a copy to `target` can be tried now; `None` if it can.
fn check_target(st: &AppState, target: &str) -> Option<Outcome> {
    if !st.cluster.is_member(target) {
        Some(Outcome::Dropped("the target is no longer a member"))
    } else if st.cluster.is_me(target) {
        Some(Outcome::Dropped("the target is this origin"))
    } else if !st.cluster.is_live(target) {
        Some(Outcome::Wait(format!("{target} is down")))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_cap() {
        let min = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for attempts in 0..100 {
            let full = Duration::from_secs(1u64 << attempts.min(6)).min(max);
            let d = retry_delay(attempts, min, max);
            assert!(d >= full / 2 && d <= full, "{attempts}: {d:?} vs {full:?}");
        }
    }
}
