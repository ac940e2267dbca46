//! What the swarm tests share: nodes on port 0 with their own store and registry, blobs of
//! test bytes, and a raw peer connection's frames.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use prometheus::Registry;
use shoal_core::store::BlobStore;
use shoal_core::testing::registry_sum;
use shoal_core::tls::{Tls, TlsConfig};
use shoal_core::{Digest, Metainfo};
use shoal_p2p::wire::Message;
use shoal_p2p::{Discovery, MetainfoSource, Node, NodeConfig, StaticDiscovery};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::from_store::FromStore;

/// How long a test waits for a condition before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A static discovery list that names nobody until a test adds nodes to it.
pub fn empty_list() -> StaticDiscovery {
    StaticDiscovery::new(Vec::new(), Duration::from_secs(1))
}

/// Bytes that do not compress and differ per seed.
pub fn blob_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub struct TestNode {
    pub node: Node,
    pub store: BlobStore,
    registry: Registry,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// The sum of a metric's samples whose labels contain each of `labels` (such as
    /// `source="peer"`), as a scrape of the node's `/metrics` shows it; 0 if absent.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        registry_sum(&self.registry, name, labels)
    }
}

/// A node with `discovery`, on a port of its own, with a store in a temporary directory;
/// with `source`, an origin's metainfo source.
pub async fn start(
    cfg: NodeConfig,
    discovery: &StaticDiscovery,
    shutdown: &CancellationToken,
    source: bool,
) -> TestNode {
    start_with(cfg, Arc::new(discovery.clone()), shutdown, source).await
}

/// [`start`] with any discovery.
pub async fn start_with(
    mut cfg: NodeConfig,
    discovery: Arc<dyn Discovery>,
    shutdown: &CancellationToken,
    source: bool,
) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = Registry::new();
    cfg.engine.tick = Duration::from_millis(50);
    let src: Option<Arc<dyn MetainfoSource>> = if source {
        Some(Arc::new(FromStore(store.clone())))
    } else {
        None
    };
    let node = Node::start(
        cfg,
        listener,
        store.clone(),
        discovery,
        src,
        &registry,
        shutdown.child_token(),
    )
    .unwrap();
    TestNode {
        node,
        store,
        registry,
        _dir: dir,
    }
}

/// An origin holding `data`, listed in `discovery`.
pub async fn origin_with(
    data: &[u8],
    discovery: &StaticDiscovery,
    shutdown: &CancellationToken,
    cfg: NodeConfig,
) -> (TestNode, Metainfo) {
    let o = start(cfg, discovery, shutdown, true).await;
    let meta = Metainfo::from_bytes(data);
    o.store.put_bytes(Some(meta.digest()), data).await.unwrap();
    discovery.add(o.node.peer_info());
    (o, meta)
}

pub async fn assert_holds(n: &TestNode, data: &[u8]) {
    let digest = Digest::sha256_of(data);
    let stored = n.store.read_all(&digest).await.unwrap();
    assert!(stored == data, "stored copy differs");
}

pub fn agent() -> NodeConfig {
    NodeConfig::agent()
}

/// `cfg` over mutual TLS with the certificate of `table`, and the peer id it names.
pub fn with_tls(mut cfg: NodeConfig, table: &TlsConfig) -> NodeConfig {
    let tls = Tls::from_config(table).unwrap().unwrap();
    cfg.peer_id = tls.identity().unwrap().id;
    cfg.tls = Some(tls);
    cfg
}

pub async fn send(s: &mut tokio::net::TcpStream, m: Message) {
    let mut frame = BytesMut::new();
    m.encode(&mut frame);
    s.write_all(&frame).await.unwrap();
}
