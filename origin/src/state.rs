//! What every handler and background task of one origin shares.

use std::sync::{Arc, Mutex};

use shoal_core::store::BlobStore;
use shoal_core::telemetry::Readiness;
use tokio::sync::Notify;

use crate::backend::Backend;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::db::{Db, Task};
use crate::metrics::Metrics;
use crate::remote::Remote;

#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub store: BlobStore,
    pub db: Db,
    pub cluster: Arc<Cluster>,
    pub backend: Arc<dyn Backend>,
    pub metrics: Metrics,
    pub remote: Remote,
    pub peer_port: u16,
    /// This origin's TLS (`None`: plaintext), for the peer protocol's node.
    pub tls: Option<shoal_core::tls::Tls>,
    /// Signs every metainfo this origin serves; `None` only when the config is insecure.
    pub metainfo_signer: Option<shoal_core::signature::MetainfoSigner>,
    pub ready: Readiness,
    /// Wakes the queue worker when tasks were added.
    pub queue_wake: Notify,
    /// The swarm node seeding this origin's blobs while a seeder runs one: a blob deleted
    /// here must stop being served to peers (its open file closed). Cleared when the seeder
    /// stops, since the node holds this state in turn.
    pub peer_node: Mutex<Option<shoal_p2p::Node>>,
}

pub type AppState = Arc<Shared>;

impl Shared {
    /// The tasks that follow a write this origin accepted as an owner: a copy for every
    /// other live owner, and a write-back.
    pub fn follow_up(
        &self,
        key: &[u8],
        copy: impl Fn(String) -> Task,
        write_back: Option<Task>,
    ) -> Vec<Task> {
        let me = self.cluster.me();
        let mut tasks: Vec<Task> = self
            .cluster
            .owners(key)
            .into_iter()
            .filter(|o| Some(o) != me.as_ref())
            .map(copy)
            .collect();
        if self.backend.stores() {
            tasks.extend(write_back);
        }
        tasks
    }

    /// Updates the queue gauges; a failure only costs a stale gauge.
    pub async fn refresh_queue_depth(&self) {
        match self.db.queue_depth().await {
            Ok((r, w)) => self.metrics.set_queue_depth(r, w),
            Err(e) => tracing::warn!(error = %e, "cannot read the queue depth"),
        }
    }

    /// Wakes the queue worker after tasks were added.
    pub async fn queued(&self) {
        self.queue_wake.notify_one();
        self.refresh_queue_depth().await;
    }
}
