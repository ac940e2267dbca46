//! Seeding: what the peer-protocol side of the origin gets from the rest of it.
//!
//! An origin serves pieces of every blob it holds. The swarm driver (from `shoal-p2p`)
//! needs two things for that, both in [`SeedSource`]: each blob's metainfo (computed once
//! and kept in the index) and the store to read pieces from. [`Seeder`] is the seam: `run`
//! hands the peer listener and a `SeedSource` to whichever seeder it was given.
//! [`RefuseSeeder`] stands in until the driver is wired in: it accepts and closes
//! connections, so a peer learns at once that nothing is served here rather than waiting.

use std::io;

use futures::future::BoxFuture;
use shoal_core::store::BlobStore;
use shoal_core::{Digest, Metainfo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::blobs;
use crate::error::Result;
use crate::metrics::{Metrics, Proto};
use crate::state::AppState;

/// A seeder's view of the origin.
#[derive(Debug, Clone)]
pub struct SeedSource {
    state: AppState,
}

impl SeedSource {
    pub(crate) fn new(state: AppState) -> Self {
        SeedSource { state }
    }

    /// The blob's metainfo, or `None` if this origin does not hold the blob.
    pub async fn metainfo(&self, digest: Digest) -> Result<Option<Metainfo>> {
        blobs::metainfo(&self.state, digest).await
    }

    /// The store to read pieces from ([`BlobStore::open_blob_sync`] for positioned reads).
    pub fn store(&self) -> &BlobStore {
        &self.state.store
    }

    /// Counts bytes moved over the peer protocol.
    pub fn count_sent(&self, n: u64) {
        self.state.metrics.sent(Proto::Peer, n);
    }

    pub fn count_received(&self, n: u64) {
        self.state.metrics.received(Proto::Peer, n);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }
}

/// Serves the peer protocol on a listener until `shutdown`.
pub trait Seeder: Send + 'static {
    fn run(
        self: Box<Self>,
        listener: TcpListener,
        source: SeedSource,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, io::Result<()>>;
}

/// Accepts peer connections and closes them: the peer protocol is not served yet.
#[derive(Debug, Default)]
pub struct RefuseSeeder;

impl Seeder for RefuseSeeder {
    fn run(
        self: Box<Self>,
        listener: TcpListener,
        _source: SeedSource,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    r = listener.accept() => match r {
                        Ok((conn, peer)) => {
                            tracing::debug!(%peer, "peer connection closed: this origin does not seed yet");
                            drop(conn);
                        }
                        // Running out of descriptors must not end the loop.
                        Err(e) => {
                            tracing::warn!(error = %e, "peer accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    },
                }
            }
        })
    }
}
