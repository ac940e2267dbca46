//! Seeding: the origin serves pieces of every blob it holds over the peer protocol.
//!
//! [`PeerSeeder`], the default, runs a `shoal_p2p` node configured as an origin on the peer
//! listener: it seeds without announcing (trackers list origins from their `/v1/info`), and
//! a peer naming a blob the node does not seed yet gets it looked up in the origin's index
//! through [`SeedSource`]. A blob this origin does not hold is refused with the protocol's
//! `unknown blob` error, and the connection closes. Pieces go out of the store as they are:
//! it holds only blobs verified against their digest, and the metainfo was computed from
//! those very bytes.
//!
//! [`Seeder`] is the seam: `Origin::start_with_seeder` takes any implementation, so a test
//! can stand a different one in.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus::Registry;
use shoal_core::peer::PeerId;
use shoal_core::store::BlobStore;
use shoal_core::{Digest, Metainfo};
use shoal_p2p::{MetainfoSource, Node, NodeConfig, StaticDiscovery};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::blobs;
use crate::config::PeerConfig;
use crate::error::Result;
use crate::metrics::PEER_PREFIX;
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

    /// The store to read pieces from.
    pub fn store(&self) -> &BlobStore {
        &self.state.store
    }

    /// The origin's peer id, as `/v1/info` gives it and trackers hand it out.
    pub fn peer_id(&self) -> PeerId {
        self.state.cluster.peer_id()
    }

    /// The origin's TLS, for the peer protocol (`None`: plaintext).
    pub fn tls(&self) -> Option<shoal_core::tls::Tls> {
        self.state.tls.clone()
    }

    /// The `peer` section of the config: caps on the peer protocol's bytes.
    pub fn peer_config(&self) -> &PeerConfig {
        &self.state.config.peer
    }

    /// The node that seeds the origin's blobs (`None` once it stopped): a deleted blob
    /// then stops being served at once, with `Node::unseed`.
    pub fn set_node(&self, node: Option<Node>) {
        *self
            .state
            .peer_node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = node;
    }

    /// How long a seeder may take to stop after shutdown is asked for.
    pub fn shutdown_grace(&self) -> Duration {
        self.state.config.shutdown_grace
    }

    /// Where a seeder registers its metric families, under [`PEER_PREFIX`]: the origin
    /// shows them, its piece-byte counters as `shoal_origin_{sent,received}_bytes_total`
    /// with `proto="peer"` (see `metrics`).
    pub fn peer_registry(&self) -> &Registry {
        self.state.metrics.peer_registry()
    }
}

/// Serves the peer protocol on a listener until `shutdown`.
pub trait Seeder: Send + 'static {
    /// Starts serving `listener`. An error fails the origin's start. The returned future
    /// ends once the seeder has stopped after `shutdown` is cancelled.
    fn start(
        self: Box<Self>,
        listener: TcpListener,
        source: SeedSource,
        shutdown: CancellationToken,
    ) -> Result<BoxFuture<'static, ()>>;
}

/// Seeds every blob the origin holds over the peer protocol, with a `shoal_p2p` node.
#[derive(Debug, Clone, Default)]
pub struct PeerSeeder {
    node: Option<NodeConfig>,
}

impl PeerSeeder {
    /// A node as [`NodeConfig::origin`] describes it.
    pub fn new() -> Self {
        PeerSeeder::default()
    }

    /// Starts from `node` instead of [`NodeConfig::origin`] (tests tune the engine's timers
    /// this way). The origin's peer id and TLS, its `peer` caps and the metric prefix are set
    /// over it, and it is always an origin that does not announce.
    pub fn with_node_config(node: NodeConfig) -> Self {
        PeerSeeder { node: Some(node) }
    }
}

/// Looks up what peers ask for in the origin's index.
struct Index(SeedSource);

impl MetainfoSource for Index {
    fn metainfo(&self, digest: Digest) -> BoxFuture<'_, Option<Metainfo>> {
        Box::pin(async move {
            match self.0.metainfo(digest).await {
                Ok(m) => {
                    if m.is_none() {
                        tracing::debug!(%digest, "a peer asked for a blob this origin does not hold");
                    }
                    m
                }
                Err(e) => {
                    // The peer is told the blob is unknown here and asks someone else.
                    tracing::warn!(%digest, error = %e, "cannot look up a blob a peer asked for");
                    None
                }
            }
        })
    }
}

impl Seeder for PeerSeeder {
    fn start(
        self: Box<Self>,
        listener: TcpListener,
        source: SeedSource,
        shutdown: CancellationToken,
    ) -> Result<BoxFuture<'static, ()>> {
        let mut cfg = self.node.unwrap_or_else(NodeConfig::origin);
        cfg.peer_id = source.peer_id();
        cfg.tls = source.tls();
        cfg.origin = true;
        cfg.announce_seeds = false;
        cfg.egress_rate = source.peer_config().egress.per_second();
        cfg.ingress_rate = source.peer_config().ingress.per_second();
        cfg.max_unsent_bytes = source.peer_config().max_unsent.bytes();
        cfg.max_inbound_per_addr = source.peer_config().max_inbound_per_addr;
        cfg.metrics_prefix = PEER_PREFIX.into();
        // Nothing is announced, so discovery is never asked; it only has to exist.
        let discovery = Arc::new(StaticDiscovery::new(Vec::new(), Duration::from_secs(60)));
        let node = Node::start(
            cfg,
            listener,
            source.store().clone(),
            discovery,
            Some(Arc::new(Index(source.clone()))),
            source.peer_registry(),
            shutdown.clone(),
        )?;
        source.set_node(Some(node.clone()));
        let grace = source.shutdown_grace();
        Ok(Box::pin(async move {
            shutdown.cancelled().await;
            source.set_node(None);
            // A connection still waiting for its hello when shutdown came holds the node
            // until the handshake times out; the origin does not wait that long for it.
            if tokio::time::timeout(grace, node.closed()).await.is_err() {
                tracing::warn!(
                    grace_s = grace.as_secs_f64(),
                    "peer connections still open after the shutdown grace; left behind"
                );
            }
        }))
    }
}
