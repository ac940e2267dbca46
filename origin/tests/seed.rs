//! Origins seed over the peer protocol: a swarm node downloads a blob from one origin's
//! peer port alone and it verifies; a peer asking for a blob the origin does not hold (or
//! no longer holds, after a delete) is refused and the origin keeps serving; peer bytes
//! are counted once, under `proto="peer"`; `peer.egress` caps what the origin sends; a
//! silent peer does not hold up shutdown.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use prometheus::Registry;
use reqwest::StatusCode;
use shoal_core::peer::{PeerId, PeerInfo};
use shoal_core::store::BlobStore;
use shoal_core::testing::{metrics_text, registry_sum};
use shoal_core::units::ByteRate;
use shoal_core::{Digest, Metainfo};
use shoal_origin::testing::TestCluster;
use shoal_p2p::wire::{self, Decoder, ErrorCode, Hello, Layout, Message, Unpaced};
use shoal_p2p::{Node, NodeConfig, StaticDiscovery};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

/// A swarm node that knows only `peers`: what an agent is, without the registry API.
struct Downloader {
    node: Node,
    store: BlobStore,
    registry: Registry,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Downloader {
    async fn start(peers: Vec<PeerInfo>) -> Downloader {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let registry = Registry::new();
        let shutdown = CancellationToken::new();
        let node = Node::start(
            NodeConfig::agent(),
            listener,
            store.clone(),
            Arc::new(StaticDiscovery::new(peers, Duration::from_secs(1))),
            None,
            &registry,
            shutdown.clone(),
        )
        .unwrap();
        Downloader {
            node,
            store,
            registry,
            shutdown,
            _dir: dir,
        }
    }

    /// Downloads the blob through the swarm and returns its bytes from the store.
    async fn fetch(&self, metainfo: Metainfo) -> Vec<u8> {
        let digest = metainfo.digest();
        let handle = self.node.download(metainfo).await.unwrap();
        let done = tokio::time::timeout(WAIT, handle.finished()).await;
        let info = done
            .unwrap_or_else(|_| panic!("the download of {digest} did not finish"))
            .unwrap();
        assert_eq!(info.digest, digest);
        self.store.read_all(&digest).await.unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.node.closed().await;
    }
}

/// Says hello for `digest` on an origin's peer port; returns the origin's hello and the
/// first message it sends.
async fn ask(peer: &PeerInfo, digest: Digest, layout: Layout) -> (Hello, Message) {
    let mut s = TcpStream::connect(peer.addr).await.unwrap();
    let hello = Hello {
        digest,
        peer_id: PeerId::random(),
        origin: false,
    };
    wire::write_hello(&mut s, &hello).await.unwrap();
    let theirs = wire::read_hello(&mut s).await.unwrap();
    let first = wire::read_message(&mut s, &Decoder::new(layout), &Unpaced, |_| {})
        .await
        .unwrap();
    (theirs, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_downloads_a_blob_from_one_origins_peer_port_and_it_verifies() {
    let cluster = TestCluster::builder(2).replicas(1).start().await;
    let auth = cluster.http();
    let (data, digest) = blob_owned_by(&cluster, &[0], 1, 3 * MIB + 12_345);
    assert_eq!(
        put_blob(&auth, cluster.url(0), &digest, data.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    let metainfo = cluster.client().metainfo(&digest).await.unwrap();
    assert!(metainfo.piece_count() > 4, "a blob of several pieces");
    let http_sent = registry_sum(
        cluster.registry(0),
        "shoal_origin_sent_bytes_total",
        &["proto=\"http\""],
    );

    // The origin's peer port is the only place the node can get pieces from.
    let d = Downloader::start(vec![cluster.peer_info(0)]).await;
    let got = d.fetch(metainfo).await;
    assert!(got == data, "the downloaded blob differs from the upload");

    // Every piece came from the origin over the peer protocol, counted once.
    let len = data.len() as f64;
    assert_eq!(
        registry_sum(
            &d.registry,
            "shoal_agent_peer_bytes_received_total",
            &["source=\"origin\""]
        ),
        len
    );
    let r = cluster.registry(0);
    assert_eq!(
        registry_sum(r, "shoal_origin_sent_bytes_total", &["proto=\"peer\""]),
        len
    );
    assert_eq!(
        registry_sum(r, "shoal_origin_sent_bytes_total", &["proto=\"http\""]),
        http_sent,
        "no blob bytes went over HTTP"
    );
    // The same in the origin's metrics as /metrics serves them, with the node's own byte
    // families left out.
    let text = metrics_text(cluster.registry(0));
    assert!(
        text.lines()
            .any(|l| l == format!("shoal_origin_sent_bytes_total{{proto=\"peer\"}} {len}")),
        "{text}"
    );
    assert!(
        !text.contains("shoal_origin_peer_bytes_sent_total"),
        "{text}"
    );
    assert!(text.contains("shoal_origin_peer_connections"), "{text}");

    d.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_asking_for_a_blob_the_origin_does_not_hold_is_refused_and_it_keeps_serving() {
    let cluster = TestCluster::builder(2).replicas(1).start().await;
    let auth = cluster.http();
    let (data, digest) = blob_owned_by(&cluster, &[0], 1, MIB);
    assert_eq!(
        put_blob(&auth, cluster.url(0), &digest, data.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    let metainfo = cluster.client().metainfo(&digest).await.unwrap();
    let layout = Layout::of(&metainfo);
    let (origin0, origin1) = (cluster.peer_info(0), cluster.peer_info(1));

    // Origin 1 does not hold the blob (origin 0 does), and nobody holds a made-up one.
    let unknown = Digest::sha256_of(b"held by no one");
    for (peer, d) in [(&origin1, digest), (&origin0, unknown)] {
        let (hello, first) = ask(peer, d, layout).await;
        assert_eq!(hello.digest, d);
        assert_eq!(hello.peer_id, peer.peer_id, "the origin answers as itself");
        assert!(hello.origin);
        assert!(
            matches!(
                first,
                Message::Error {
                    code: ErrorCode::UnknownBlob,
                    ..
                }
            ),
            "{first:?}"
        );
    }
    // Garbage instead of a hello, and a peer that hangs up half way through one.
    for bytes in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0u8; 3][..]] {
        let mut s = TcpStream::connect(origin0.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
    }
    let refused = registry_sum(
        cluster.registry(1),
        "shoal_origin_peer_connections_refused_total",
        &["reason=\"unknown_blob\""],
    );
    assert_eq!(refused, 1.0);

    // The origins still serve both protocols, and a node that lists both gets the blob.
    assert_eq!(
        get_blob(&auth, cluster.url(1), &digest).await.0,
        StatusCode::OK
    );
    let d = Downloader::start(vec![origin1, origin0]).await;
    assert!(d.fetch(metainfo).await == data);
    assert_eq!(
        registry_sum(
            cluster.registry(1),
            "shoal_origin_sent_bytes_total",
            &["proto=\"peer\""]
        ),
        0.0
    );
    d.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_blob_is_no_longer_served_to_peers() {
    let cluster = TestCluster::builder(2).replicas(1).start().await;
    let auth = cluster.http();
    let (data, digest) = blob_owned_by(&cluster, &[0], 1, 3 * MIB);
    assert_eq!(
        put_blob(&auth, cluster.url(0), &digest, data.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    let metainfo = cluster.client().metainfo(&digest).await.unwrap();
    let layout = Layout::of(&metainfo);
    let origin0 = cluster.peer_info(0);
    // A download makes the origin's node seed the blob, its file open.
    let d = Downloader::start(vec![origin0.clone()]).await;
    assert!(d.fetch(metainfo).await == data);
    let (_, first) = ask(&origin0, digest, layout).await;
    assert!(!matches!(first, Message::Error { .. }), "{first:?}");

    let res = auth
        .clone()
        .delete(format!("{}/v1/blobs/{digest}?internal=1", cluster.url(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let (_, first) = ask(&origin0, digest, layout).await;
    assert!(
        matches!(
            first,
            Message::Error {
                code: ErrorCode::UnknownBlob,
                ..
            }
        ),
        "{first:?}"
    );
    d.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_egress_caps_what_the_origin_sends() {
    let rate = 2 * MIB;
    let cluster = TestCluster::builder(1)
        .replicas(1)
        .configure(move |_, c| c.peer.egress = ByteRate(rate as u64))
        .start()
        .await;
    let auth = cluster.http();
    let data = random_bytes(2 * MIB);
    let digest = Digest::sha256_of(&data);
    assert_eq!(
        put_blob(&auth, cluster.url(0), &digest, data.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    let metainfo = cluster.client().metainfo(&digest).await.unwrap();
    let d = Downloader::start(vec![cluster.peer_info(0)]).await;
    let started = Instant::now();
    assert!(d.fetch(metainfo).await == data);
    let took = started.elapsed();
    println!(
        "{} MiB at a {} MiB/s cap took {:.2} s",
        data.len() / MIB,
        rate / MIB,
        took.as_secs_f64()
    );
    // A second's worth of bytes cannot go out much faster than in a second.
    assert!(took >= Duration::from_millis(900), "{took:?}");
    d.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_stops_within_its_grace_with_a_silent_peer_connected() {
    let cluster = TestCluster::builder(1).replicas(1).start().await;
    let peer = cluster.peer_info(0);
    let _silent = TcpStream::connect(peer.addr).await.unwrap();
    // Once a peer that connected after it is answered, the silent one has been accepted.
    let data = random_bytes(1000);
    let m = Metainfo::from_bytes(&data);
    let (_, first) = ask(&peer, m.digest(), Layout::of(&m)).await;
    assert!(matches!(first, Message::Error { .. }), "{first:?}");
    let grace = cluster.config(0).shutdown_grace;
    let started = Instant::now();
    cluster.shutdown().await;
    let took = started.elapsed();
    println!("stopped in {:.2} s", took.as_secs_f64());
    assert!(took < grace + Duration::from_secs(1), "{took:?}");
}
