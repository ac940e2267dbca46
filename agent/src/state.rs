//! What the handlers and background tasks of one agent share.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures::future::{BoxFuture, Shared as SharedFuture};
use shoal_core::tasks::Tasks;
use shoal_core::{ApiError, Digest};
use shoal_p2p::{DownloadHandle, Node};

use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// A fetch straight from an origin that every concurrent asker of one digest awaits.
pub(crate) type DirectFetch = SharedFuture<BoxFuture<'static, Result<Bytes, ApiError>>>;

pub struct State {
    pub config: Config,
    pub cache: Arc<Cache>,
    pub node: Node,
    pub upstream: Upstream,
    pub metrics: Metrics,
    /// Swarm downloads this agent started and has not yet seen end. Held across the start
    /// of a download, so that one digest is started once.
    pub(crate) downloads: tokio::sync::Mutex<HashMap<Digest, DownloadHandle>>,
    /// Fetches straight from an origin in flight (manifests, small blobs).
    pub(crate) direct: Mutex<HashMap<Digest, DirectFetch>>,
    /// The digest each `name:tag` last resolved to, for when no origin answers.
    pub(crate) tags: Mutex<HashMap<String, Digest>>,
    /// Cached blobs whose seeding is being started.
    pub(crate) seeding: Mutex<HashSet<Digest>>,
    /// Downloads' watchers and seeds started in the background; they end with the agent.
    pub(crate) tasks: Tasks,
}

pub type AppState = Arc<State>;

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("node", &self.node)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
