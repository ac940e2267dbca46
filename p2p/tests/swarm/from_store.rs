//! An origin's metainfo source for tests and benchmarks: computes it from the committed
//! blob. (The `rate_cap` benchmark includes this file too.)

use futures::future::BoxFuture;
use shoal_core::store::BlobStore;
use shoal_core::{Digest, Metainfo};
use shoal_p2p::MetainfoSource;

/// An origin's metainfo source: computes it from the committed blob.
pub struct FromStore(pub BlobStore);

impl MetainfoSource for FromStore {
    fn metainfo(&self, digest: Digest) -> BoxFuture<'_, Option<Metainfo>> {
        let store = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let f = store.open_blob_sync(&digest).ok()?;
                Metainfo::compute_from_file(&f, digest).ok()
            })
            .await
            .ok()
            .flatten()
        })
    }
}
