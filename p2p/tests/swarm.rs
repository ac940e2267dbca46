//! Nodes over real TCP on 127.0.0.1, in one process: honest swarms, and adversarial peers
//! (written here against the wire module) that corrupt pieces, stall, or lie about a blob.
// Helpers here are test code too; clippy's test exemption covers only `#[test]` functions.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::StreamExt;
use futures::future::BoxFuture;
use prometheus::{Encoder, Registry};
use shoal_core::peer::{PeerId, PeerInfo};
use shoal_core::store::BlobStore;
use shoal_core::{Digest, Metainfo};
use shoal_p2p::bitfield::Bitfield;
use shoal_p2p::engine::{Blame, Config};
use shoal_p2p::wire::{self, Decoder, Hello, Layout, Message, Unpaced};
use shoal_p2p::{DownloadError, MetainfoSource, Node, NodeConfig, StaticDiscovery};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Bytes that do not compress and differ per seed.
fn blob_bytes(len: usize, seed: u64) -> Vec<u8> {
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

/// An origin's metainfo source: computes it from the committed blob.
struct FromStore(BlobStore);

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

struct TestNode {
    node: Node,
    store: BlobStore,
    registry: Registry,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// A sample's value from the node's `/metrics` text (0 if absent).
    fn metric(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let key = match label {
            Some((k, v)) => format!("{name}{{{k}=\"{v}\"}}"),
            None => name.to_owned(),
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

async fn start(
    mut cfg: NodeConfig,
    discovery: &StaticDiscovery,
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
        Arc::new(discovery.clone()),
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
async fn origin_with(
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

async fn assert_holds(n: &TestNode, data: &[u8]) {
    let digest = Digest::sha256_of(data);
    let stored = n.store.read_all(&digest).await.unwrap();
    assert!(stored == data, "stored copy differs");
}

fn agent() -> NodeConfig {
    NodeConfig::agent()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seeder_eight_leechers_share_32_mib() {
    let shutdown = CancellationToken::new();
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let data = blob_bytes(32 << 20, 1);
    let (origin, meta) = origin_with(&data, &discovery, &shutdown, NodeConfig::origin()).await;
    let mut leechers = Vec::new();
    for _ in 0..8 {
        let n = start(agent(), &discovery, &shutdown, false).await;
        discovery.add(n.node.peer_info());
        leechers.push(n);
    }
    let handles: Vec<_> =
        futures::future::join_all(leechers.iter().map(|n| n.node.download(meta.clone())))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    for h in &handles {
        let info = tokio::time::timeout(Duration::from_secs(60), h.finished())
            .await
            .expect("download did not finish in time")
            .unwrap();
        assert_eq!(info.digest, meta.digest());
        assert_eq!(info.length, data.len() as u64);
    }
    let mut from_peers = 0.0;
    for n in &leechers {
        assert_holds(n, &data).await;
        from_peers += n.metric(
            "shoal_agent_peer_bytes_received_total",
            Some(("source", "peer")),
        );
        assert_eq!(n.metric("shoal_agent_pieces_failed_total", None), 0.0);
        assert_eq!(
            n.metric("shoal_agent_downloads_total", Some(("result", "ok"))),
            1.0
        );
    }
    // A swarm, not eight clients of one server: most bytes came from other leechers.
    let sent_by_origin = origin.metric("shoal_origin_peer_bytes_sent_total", None);
    assert!(
        sent_by_origin >= data.len() as f64,
        "the origin sent less than one copy"
    );
    assert!(
        from_peers > sent_by_origin,
        "peers sent {from_peers} bytes, the origin {sent_by_origin}"
    );
    shutdown.cancel();
    for n in leechers.iter().chain([&origin]) {
        tokio::time::timeout(Duration::from_secs(10), n.node.closed())
            .await
            .expect("node did not stop");
    }
}

/// What an adversarial peer does when asked for a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Sends bytes of the right length that are not the piece.
    Corrupt,
    /// Never answers.
    Stall,
    /// Sends the real bytes (with a lying metainfo, see the test).
    Honest,
}

#[derive(Default)]
struct Seen {
    conns: AtomicUsize,
    requests: Mutex<Vec<u32>>,
    cancels: Mutex<Vec<u32>>,
}

/// A peer that holds "every piece" of a blob and answers requests its own way.
async fn fake_peer(
    digest: Digest,
    layout: Layout,
    data: Arc<Vec<u8>>,
    behaviour: Behaviour,
) -> (PeerInfo, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let id = PeerId::random();
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let s = Arc::clone(&s);
            let data = Arc::clone(&data);
            tokio::spawn(async move {
                let Ok(h) = wire::read_hello(&mut stream).await else {
                    return;
                };
                assert_eq!(h.digest, digest);
                s.conns.fetch_add(1, Ordering::SeqCst);
                let mut out = Hello {
                    digest,
                    peer_id: id,
                    origin: false,
                }
                .encode();
                let mut frame = BytesMut::new();
                Message::Bitfield(Bitfield::full(layout.pieces as usize)).encode(&mut frame);
                out.extend_from_slice(&frame);
                if stream.write_all(&out).await.is_err() {
                    return;
                }
                let decoder = Decoder::new(layout);
                loop {
                    let Ok(m) = wire::read_message(&mut stream, &decoder, &Unpaced, |_| {}).await
                    else {
                        return;
                    };
                    match m {
                        Message::Request(i) => {
                            s.requests.lock().unwrap().push(i);
                            let start = i as usize * layout.piece_length as usize;
                            let size = layout.piece_size(i).unwrap() as usize;
                            let bytes = match behaviour {
                                Behaviour::Stall => continue,
                                Behaviour::Honest => data[start..start + size].to_vec(),
                                Behaviour::Corrupt => vec![0xee; size],
                            };
                            let mut frame = BytesMut::new();
                            Message::Piece {
                                index: i,
                                data: bytes.into(),
                            }
                            .encode(&mut frame);
                            if stream.write_all(&frame).await.is_err() {
                                return;
                            }
                        }
                        Message::Cancel(i) => s.cancels.lock().unwrap().push(i),
                        _ => {}
                    }
                }
            });
        }
    });
    (
        PeerInfo {
            peer_id: id,
            addr,
            complete: true,
            origin: false,
        },
        seen,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_peer_is_shunned_and_the_rest_complete() {
    let shutdown = CancellationToken::new();
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let data = blob_bytes(8 << 20, 2);
    let meta = Metainfo::from_bytes(&data);
    // Listed first and not an origin: downloaders prefer it.
    let (bad, seen) = fake_peer(
        meta.digest(),
        Layout::of(&meta),
        Arc::new(data.clone()),
        Behaviour::Corrupt,
    )
    .await;
    discovery.add(bad.clone());
    let (_origin, _) = origin_with(&data, &discovery, &shutdown, NodeConfig::origin()).await;
    let mut leechers = Vec::new();
    for _ in 0..3 {
        let n = start(agent(), &discovery, &shutdown, false).await;
        discovery.add(n.node.peer_info());
        leechers.push(n);
    }
    for n in &leechers {
        let h = n.node.download(meta.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), h.finished())
            .await
            .expect("download did not finish")
            .unwrap();
    }
    let mut caught = 0;
    for n in &leechers {
        assert_holds(n, &data).await;
        let failed = n.metric("shoal_agent_pieces_failed_total", None);
        if failed > 0.0 {
            caught += 1;
            assert!(n.node.is_shunned(Blame::Dialled(bad.addr)).await);
            // Dropped at its first bad piece: no more bad pieces arrive than were already
            // requested from it when the first one did.
            let window = Config::default().max_window as f64;
            assert!(failed <= window, "{failed} bad pieces reached one node");
            assert_eq!(n.metric("shoal_agent_peers_shunned_total", None), 1.0);
        }
    }
    assert!(caught > 0, "no node asked the corrupt peer for anything");
    // Each node that caught it dialled it once and never again.
    assert!(seen.conns.load(Ordering::SeqCst) <= leechers.len());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_peer_has_its_requests_moved() {
    let shutdown = CancellationToken::new();
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let data = blob_bytes(4 << 20, 3);
    let meta = Metainfo::from_bytes(&data);
    let (staller, seen) = fake_peer(
        meta.digest(),
        Layout::of(&meta),
        Arc::new(data.clone()),
        Behaviour::Stall,
    )
    .await;
    discovery.add(staller.clone());
    let (_origin, _) = origin_with(&data, &discovery, &shutdown, NodeConfig::origin()).await;
    let mut cfg = agent();
    cfg.engine = Config {
        request_timeout: Duration::from_millis(500),
        // No endgame copies: only the time-out can move a request.
        endgame_copies: 1,
        ..cfg.engine
    };
    let n = start(cfg, &discovery, &shutdown, false).await;
    let h = n.node.download(meta.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), h.finished())
        .await
        .expect("download did not finish")
        .unwrap();
    assert_holds(&n, &data).await;
    let requested = seen.requests.lock().unwrap().clone();
    let cancelled = seen.cancels.lock().unwrap().clone();
    assert!(!requested.is_empty(), "the staller was never asked");
    // Every piece asked of the staller was cancelled there and fetched elsewhere.
    let mut r = requested.clone();
    r.sort();
    let mut c = cancelled.clone();
    c.sort();
    c.dedup();
    r.dedup();
    assert_eq!(r, c);
    let stats = n.node.stats(meta.digest()).await.unwrap();
    assert!(stats.timeouts >= 1);
    assert!(n.metric("shoal_agent_peer_request_timeouts_total", None) >= 1.0);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_and_ingress_caps_hold() {
    let data = blob_bytes(6 << 20, 4);
    let rate = 4u64 << 20;
    for which in ["egress", "ingress"] {
        let shutdown = CancellationToken::new();
        let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
        let mut ocfg = NodeConfig::origin();
        let mut acfg = agent();
        if which == "egress" {
            ocfg.egress_rate = Some(rate);
        } else {
            acfg.ingress_rate = Some(rate);
        }
        let (_origin, meta) = origin_with(&data, &discovery, &shutdown, ocfg).await;
        let n = start(acfg, &discovery, &shutdown, false).await;
        let t0 = Instant::now();
        let h = n.node.download(meta.clone()).await.unwrap();
        h.finished().await.unwrap();
        let took = t0.elapsed().as_secs_f64();
        let floor = data.len() as f64 / rate as f64;
        // Loosely: at least size/rate (less the burst allowance), and not wildly slower.
        assert!(
            took >= floor * 0.9,
            "{which}: {took:.2}s for a {floor:.2}s floor"
        );
        assert!(
            took <= floor * 3.0 + 2.0,
            "{which}: {took:.2}s for a {floor:.2}s floor"
        );
        assert_holds(&n, &data).await;
        shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_streams_in_order_and_concurrent_calls_share_a_download() {
    let shutdown = CancellationToken::new();
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let data = blob_bytes((3 << 20) + 12345, 5);
    let mut ocfg = NodeConfig::origin();
    // Slow enough that the stream runs while pieces arrive.
    ocfg.egress_rate = Some(8 << 20);
    let (_origin, meta) = origin_with(&data, &discovery, &shutdown, ocfg).await;
    let n = start(agent(), &discovery, &shutdown, false).await;
    let (a, b) = tokio::join!(n.node.download(meta.clone()), n.node.download(meta.clone()));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut whole = Box::pin(a.stream(0..meta.length()));
    let part = b.stream(1_000_000..2_500_000);
    let first = whole.next().await.unwrap().unwrap();
    // The first bytes come while the rest are still on their way.
    assert!(
        a.progress().borrow().outcome.is_none(),
        "the stream waited for the whole blob"
    );
    let mut got = first.to_vec();
    while let Some(chunk) = whole.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == data);
    let part: Vec<u8> = part.map(|r| r.unwrap().to_vec()).concat().await;
    assert!(part == data[1_000_000..2_500_000]);
    assert_eq!(a.finished().await.unwrap(), b.finished().await.unwrap());
    assert_eq!(
        n.metric("shoal_agent_downloads_total", Some(("result", "ok"))),
        1.0
    );
    // A range past the end is an error, not a panic.
    let bad: Vec<_> = a.stream(0..meta.length() + 1).collect().await;
    assert!(matches!(bad[..], [Err(DownloadError::OutOfRange { .. })]));
    // A later call finds the blob in the store: complete at once.
    let again = n.node.download(meta.clone()).await.unwrap();
    assert_eq!(again.finished().await.unwrap().digest, meta.digest());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_that_fails_its_digest_is_never_visible() {
    let shutdown = CancellationToken::new();
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let data = blob_bytes(2 << 20, 6);
    let honest = Metainfo::from_bytes(&data);
    // Piece hashes of the real bytes under another blob's digest: every piece verifies,
    // the whole does not.
    let wrong = Digest::sha256_of(b"something else");
    let hashes = (0..honest.piece_count())
        .map(|i| *honest.piece_hash(i).unwrap())
        .collect();
    let lying = Metainfo::new(wrong, honest.length(), honest.piece_length(), hashes).unwrap();
    let (peer, _) = fake_peer(
        wrong,
        Layout::of(&lying),
        Arc::new(data.clone()),
        Behaviour::Honest,
    )
    .await;
    discovery.add(peer);
    let n = start(agent(), &discovery, &shutdown, false).await;
    let h = n.node.download(lying).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), h.finished())
        .await
        .expect("download did not end");
    assert_eq!(r, Err(DownloadError::BlobMismatch));
    assert!(!n.store.contains(&wrong).await.unwrap());
    assert!(n.store.list().await.unwrap().is_empty());
    assert_eq!(
        n.metric("shoal_agent_downloads_total", Some(("result", "failed"))),
        1.0
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_downloads_and_tasks() {
    let shutdown = CancellationToken::new();
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let data = blob_bytes(2 << 20, 7);
    let meta = Metainfo::from_bytes(&data);
    // Nobody holds the blob, so the download waits for peers for ever.
    let n = start(agent(), &discovery, &shutdown, false).await;
    let h = n.node.download(meta).await.unwrap();
    shutdown.cancel();
    assert_eq!(h.finished().await, Err(DownloadError::Stopped));
    tokio::time::timeout(Duration::from_secs(10), n.node.closed())
        .await
        .expect("node did not stop");
}

/// What a node first tells a peer asking it for `meta`'s blob.
async fn ask(n: &TestNode, meta: &Metainfo) -> Message {
    let mut s = tokio::net::TcpStream::connect(n.node.peer_info().addr)
        .await
        .unwrap();
    let hello = Hello {
        digest: meta.digest(),
        peer_id: PeerId::random(),
        origin: false,
    };
    wire::write_hello(&mut s, &hello).await.unwrap();
    wire::read_hello(&mut s).await.unwrap();
    wire::read_message(&mut s, &Decoder::new(Layout::of(meta)), &Unpaced, |_| {})
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_from_the_end_gets_its_first_piece_early() {
    let shutdown = CancellationToken::new();
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let data = blob_bytes(16 << 20, 8);
    let mut ocfg = NodeConfig::origin();
    // Slow enough that the order of pieces shows.
    ocfg.egress_rate = Some(8 << 20);
    let (_origin, meta) = origin_with(&data, &discovery, &shutdown, ocfg).await;
    let n = start(agent(), &discovery, &shutdown, false).await;
    let h = n.node.download(meta.clone()).await.unwrap();
    let pieces = meta.piece_count();
    let last = meta.piece_range(pieces - 1).unwrap();
    let mut tail = Box::pin(h.stream(last.clone()));
    let first = tail.next().await.unwrap().unwrap();
    assert!(first[..] == data[last.start as usize..]);
    // The origin hands out pieces in the order asked; rarest first alone would ask for the
    // last piece after half the others, on average.
    let before = h.progress().borrow().have.count();
    assert!(
        before <= pieces / 4,
        "{before} of {pieces} pieces arrived before the reader's first"
    );
    h.finished().await.unwrap();
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unseed_refuses_peers_and_stops_a_running_download() {
    let shutdown = CancellationToken::new();
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let data = blob_bytes(8 << 20, 9);
    let mut ocfg = NodeConfig::origin();
    // A download that takes a few seconds, to be stopped half way.
    ocfg.egress_rate = Some(2 << 20);
    let (_origin, meta) = origin_with(&data, &discovery, &shutdown, ocfg).await;

    // A seeding blob: served, then refused.
    let small = blob_bytes(1 << 20, 10);
    let small_meta = Metainfo::from_bytes(&small);
    let n = start(agent(), &discovery, &shutdown, false).await;
    n.store.put_bytes(None, &small).await.unwrap();
    n.node.seed(small_meta.clone()).await.unwrap();
    assert!(matches!(ask(&n, &small_meta).await, Message::Bitfield(_)));
    n.store.delete(&small_meta.digest()).await.unwrap();
    assert!(n.node.unseed(small_meta.digest()).await);
    assert!(matches!(
        ask(&n, &small_meta).await,
        Message::Error {
            code: wire::ErrorCode::UnknownBlob,
            ..
        }
    ));
    assert!(n.node.stats(small_meta.digest()).await.is_none());
    assert!(!n.node.unseed(small_meta.digest()).await, "unseeded twice");

    // A download in progress: its handle ends with Stopped, and reads fail.
    let h = n.node.download(meta.clone()).await.unwrap();
    let mut rx = h.progress();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|p| p.have.count() > 0))
        .await
        .expect("no piece arrived")
        .unwrap();
    assert!(n.node.unseed(meta.digest()).await);
    assert_eq!(h.finished().await, Err(DownloadError::Stopped));
    let whole: Vec<_> = h.stream(0..meta.length()).collect().await;
    assert!(
        matches!(whole[..], [Err(DownloadError::Stopped)]),
        "{whole:?}"
    );
    assert!(!n.store.contains(&meta.digest()).await.unwrap());
    assert!(matches!(
        ask(&n, &meta).await,
        Message::Error {
            code: wire::ErrorCode::UnknownBlob,
            ..
        }
    ));
    shutdown.cancel();
}

// Attacks on identity: peers that claim to be someone else, idle connections, floods of
// connections and of listed peers. Each hostile peer below is hand-written against the wire
// module and talks to a real node over TCP.

/// A hostile peer's connection to `to`: dialled from `from` (any loopback address), with a
/// hello claiming `claimed` (and the origin flag if `origin`), the node's answer read.
/// Returns the stream and the node's first message (its bitfield, or an error).
async fn dial_claiming(
    to: SocketAddr,
    from: std::net::IpAddr,
    meta: &Metainfo,
    claimed: PeerId,
    origin: bool,
) -> (tokio::net::TcpStream, Message) {
    try_dial_claiming(to, from, meta, claimed, origin)
        .await
        .expect("the node closed the connection unanswered")
}

/// [`dial_claiming`], `None` if the node closes the connection without an answer.
async fn try_dial_claiming(
    to: SocketAddr,
    from: std::net::IpAddr,
    meta: &Metainfo,
    claimed: PeerId,
    origin: bool,
) -> Option<(tokio::net::TcpStream, Message)> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = socket.connect(to).await.ok()?;
    let hello = Hello {
        digest: meta.digest(),
        peer_id: claimed,
        origin,
    };
    wire::write_hello(&mut s, &hello).await.ok()?;
    wire::read_hello(&mut s).await.ok()?;
    let first = wire::read_message(&mut s, &Decoder::new(Layout::of(meta)), &Unpaced, |_| {})
        .await
        .ok()?;
    Some((s, first))
}

async fn send(s: &mut tokio::net::TcpStream, m: Message) {
    let mut frame = BytesMut::new();
    m.encode(&mut frame);
    s.write_all(&frame).await.unwrap();
}

/// Reads until the node asks for a piece; returns the pieces asked so far.
async fn wait_for_requests(s: &mut tokio::net::TcpStream, meta: &Metainfo) -> Vec<u32> {
    let decoder = Decoder::new(Layout::of(meta));
    let mut asked = Vec::new();
    loop {
        let m = tokio::time::timeout(
            Duration::from_secs(10),
            wire::read_message(s, &decoder, &Unpaced, |_| {}),
        )
        .await
        .expect("the node asked for nothing")
        .unwrap();
        if let Message::Request(i) = m {
            asked.push(i);
            return asked;
        }
    }
}

/// Waits for the node to close the connection (an error frame, then the end).
async fn wait_closed(s: &mut tokio::net::TcpStream, meta: &Metainfo) -> Option<wire::ErrorCode> {
    let decoder = Decoder::new(Layout::of(meta));
    let mut code = None;
    loop {
        match tokio::time::timeout(
            Duration::from_secs(10),
            wire::read_message(s, &decoder, &Unpaced, |_| {}),
        )
        .await
        .expect("the node kept the connection open")
        {
            Ok(Message::Error { code: c, .. }) => code = Some(c),
            Ok(_) => {}
            Err(_) => return code,
        }
    }
}

/// Whether a node's first answer turned the connection away as busy.
fn is_busy(m: &Message) -> bool {
    matches!(
        m,
        Message::Error {
            code: wire::ErrorCode::Busy,
            ..
        }
    )
}

async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_claiming_an_origins_id_and_sending_garbage_does_not_cut_the_agent_off_the_origin() {
    let shutdown = CancellationToken::new();
    let data = blob_bytes(4 << 20, 21);
    // The agent hears of the origin only once the hostile peer has done its worst.
    let origins = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let (origin, meta) = origin_with(&data, &origins, &shutdown, NodeConfig::origin()).await;
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let a = start(agent(), &discovery, &shutdown, false).await;
    let h = a.node.download(meta.clone()).await.unwrap();
    let at = a.node.local_addr();
    let pieces = meta.piece_count();
    let origin_id = origin.node.peer_id();

    // First: a piece nobody asked for. The connection is closed, and nobody is blamed.
    let (mut s, first) = dial_claiming(at, LOCAL, &meta, origin_id, true).await;
    assert!(matches!(first, Message::Bitfield(_)), "{first:?}");
    send(&mut s, Message::Bitfield(Bitfield::full(pieces))).await;
    let asked = wait_for_requests(&mut s, &meta).await;
    let unasked = (0..pieces as u32)
        .rev()
        .find(|i| !asked.contains(i))
        .unwrap();
    let size = Layout::of(&meta).piece_size(unasked).unwrap() as usize;
    send(
        &mut s,
        Message::Piece {
            index: unasked,
            data: vec![0xee; size].into(),
        },
    )
    .await;
    assert_eq!(
        wait_closed(&mut s, &meta).await,
        Some(wire::ErrorCode::Protocol)
    );
    assert!(!a.node.is_shunned(Blame::Source(LOCAL)).await);
    assert!(
        !a.node
            .is_shunned(Blame::Dialled(origin.node.local_addr()))
            .await
    );

    // Then: garbage for a piece it was asked for. Its address is shunned, not the id it
    // claims.
    let (mut s, first) = dial_claiming(at, LOCAL, &meta, origin_id, true).await;
    assert!(matches!(first, Message::Bitfield(_)), "{first:?}");
    send(&mut s, Message::Bitfield(Bitfield::full(pieces))).await;
    let asked = wait_for_requests(&mut s, &meta).await;
    let size = Layout::of(&meta).piece_size(asked[0]).unwrap() as usize;
    send(
        &mut s,
        Message::Piece {
            index: asked[0],
            data: vec![0xee; size].into(),
        },
    )
    .await;
    wait_closed(&mut s, &meta).await;
    assert!(a.node.is_shunned(Blame::Source(LOCAL)).await);
    assert!(
        !a.node
            .is_shunned(Blame::Dialled(origin.node.local_addr()))
            .await
    );
    assert_eq!(a.metric("shoal_agent_peers_shunned_total", None), 1.0);

    // The real origin is still dialled and serves the blob.
    discovery.add(origin.node.peer_info());
    tokio::time::timeout(Duration::from_secs(30), h.finished())
        .await
        .expect("the agent never got the blob from the real origin")
        .unwrap();
    assert_holds(&a, &data).await;
    let stats = a.node.stats(meta.digest()).await.unwrap();
    assert_eq!(stats.bytes_from_origins, data.len() as u64);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_fake_origins_do_not_stop_the_agent_dialling_real_ones() {
    let shutdown = CancellationToken::new();
    let data = blob_bytes(2 << 20, 22);
    let origins = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let (origin, meta) = origin_with(&data, &origins, &shutdown, NodeConfig::origin()).await;
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let a = start(agent(), &discovery, &shutdown, false).await;
    let h = a.node.download(meta.clone()).await.unwrap();
    let at = a.node.local_addr();
    let pieces = meta.piece_count();

    // Idle connections that say they are origins (two with the real origin's id), with
    // empty bitfields, as many as the agent takes in: every slot of the blob.
    let room = Config::default().max_conns_per_blob;
    let mut idle = Vec::new();
    for k in 0..room {
        let claimed = if k < 2 {
            origin.node.peer_id()
        } else {
            PeerId::random()
        };
        let (mut s, first) = dial_claiming(at, LOCAL, &meta, claimed, true).await;
        assert!(
            matches!(first, Message::Bitfield(_)),
            "connection {k}: {first:?}"
        );
        send(&mut s, Message::Bitfield(Bitfield::new(pieces))).await;
        idle.push(s);
    }
    // One more is turned away.
    let (_s, first) = dial_claiming(at, LOCAL, &meta, PeerId::random(), true).await;
    assert!(is_busy(&first), "{first:?}");

    // Discovery names the real origin: useless connections give up their slots, and the
    // agent dials it and gets the blob.
    discovery.add(origin.node.peer_info());
    tokio::time::timeout(Duration::from_secs(30), h.finished())
        .await
        .expect("the agent never dialled the real origin")
        .unwrap();
    assert_holds(&a, &data).await;
    let stats = a.node.stats(meta.digest()).await.unwrap();
    assert_eq!(stats.bytes_from_origins, data.len() as u64);
    drop(idle);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_cap_are_refused_while_another_address_connects() {
    let shutdown = CancellationToken::new();
    let data = blob_bytes(1 << 20, 23);
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let mut cfg = NodeConfig::origin();
    cfg.max_inbound_per_addr = 3;
    let (o, meta) = origin_with(&data, &discovery, &shutdown, cfg).await;
    let at = o.node.local_addr();
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();

    let mut open = Vec::new();
    for k in 0..3 {
        let (s, first) = dial_claiming(at, LOCAL, &meta, PeerId::random(), false).await;
        assert!(
            matches!(first, Message::Bitfield(_)),
            "connection {k}: {first:?}"
        );
        open.push(s);
    }
    // The fourth from the same address is refused, politely.
    let (_s, first) = dial_claiming(at, LOCAL, &meta, PeerId::random(), false).await;
    assert!(is_busy(&first), "{first:?}");
    // Another address still gets in.
    let (_o2, first) = dial_claiming(at, other, &meta, PeerId::random(), false).await;
    assert!(matches!(first, Message::Bitfield(_)), "{first:?}");
    // Sockets that never say hello count too, and far beyond the cap are closed unanswered.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(at).await.unwrap());
    }
    let mut extra = tokio::net::TcpStream::connect(at).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut extra, &mut buf),
    )
    .await
    .expect("a connection far beyond the cap was kept open");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        o.metric(
            "shoal_origin_peer_connections_refused_total",
            Some(("reason", "per_address"))
        ) >= 2.0
    );
    // Once the address's connections end, it is let in again.
    drop(silent);
    drop(open);
    wait_until("the address is let in again", || async {
        try_dial_claiming(at, LOCAL, &meta, PeerId::random(), false)
            .await
            .is_some_and(|(_, first)| matches!(first, Message::Bitfield(_)))
    })
    .await;
    shutdown.cancel();
}

/// Discovery whose answer a test changes at will.
#[derive(Clone, Default)]
struct Listed(Arc<Mutex<Vec<PeerInfo>>>);

impl shoal_p2p::Discovery for Listed {
    fn announce(
        &self,
        _: shoal_p2p::discovery::Announce,
    ) -> BoxFuture<'_, Result<shoal_p2p::discovery::Peers, shoal_p2p::discovery::DiscoveryError>>
    {
        let peers = self.0.lock().unwrap().clone();
        Box::pin(async move {
            Ok(shoal_p2p::discovery::Peers {
                peers,
                interval: Duration::from_secs(1),
            })
        })
    }
}

/// Peers at addresses where nothing listens.
async fn dead_peers(n: usize) -> Vec<PeerInfo> {
    let mut out = Vec::new();
    for _ in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        out.push(PeerInfo {
            peer_id: PeerId::random(),
            addr: l.local_addr().unwrap(),
            complete: true,
            origin: false,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_peer_list_stays_bounded_and_takes_new_peers_when_full() {
    let shutdown = CancellationToken::new();
    let data = blob_bytes(1 << 20, 24);
    let origins = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let (origin, meta) = origin_with(&data, &origins, &shutdown, NodeConfig::origin()).await;
    let listed = Listed::default();
    *listed.0.lock().unwrap() = dead_peers(8).await;
    let mut cfg = agent();
    cfg.engine.max_known_peers = 8;
    cfg.engine.forget_peer_after = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).await.unwrap();
    let registry = Registry::new();
    cfg.engine.tick = Duration::from_millis(50);
    let node = Node::start(
        cfg,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        store.clone(),
        Arc::new(listed.clone()),
        None,
        &registry,
        shutdown.child_token(),
    )
    .unwrap();
    let h = node.download(meta.clone()).await.unwrap();
    let known = || async { node.stats(meta.digest()).await.unwrap().known_peers };
    wait_until("the list is full", || async { known().await == 8 }).await;
    // A flood of new names, more than the list holds: it stays bounded.
    *listed.0.lock().unwrap() = dead_peers(40).await;
    for _ in 0..30 {
        assert!(known().await <= 8);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Then discovery names the origin: it displaces a stale entry and is dialled.
    *listed.0.lock().unwrap() = vec![origin.node.peer_info()];
    tokio::time::timeout(Duration::from_secs(30), h.finished())
        .await
        .expect("the origin named to a full list was never dialled")
        .unwrap();
    assert!(known().await <= 8);
    // Peers no longer named are forgotten.
    wait_until("stale peers are forgotten", || async { known().await == 1 }).await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_stop_reading_cannot_make_an_origin_hold_more_than_its_upload_budget() {
    let shutdown = CancellationToken::new();
    let data = blob_bytes(8 << 20, 25);
    let discovery = StaticDiscovery::new(Vec::new(), Duration::from_secs(1));
    let budget = 512u64 << 10;
    let mut cfg = NodeConfig::origin();
    cfg.max_unsent_bytes = budget;
    // A peer that reads nothing for this long is dropped, and its share of the budget
    // given back.
    cfg.idle_timeout = Duration::from_secs(2);
    let (o, meta) = origin_with(&data, &discovery, &shutdown, cfg).await;
    let at = o.node.local_addr();
    let pieces = meta.piece_count() as u32;
    // Peers that ask for many pieces each, with tiny receive windows, and never read.
    let mut hogs = Vec::new();
    for k in 0..4u32 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(at).await.unwrap();
        let hello = Hello {
            digest: meta.digest(),
            peer_id: PeerId::random(),
            origin: false,
        };
        wire::write_hello(&mut s, &hello).await.unwrap();
        wire::read_hello(&mut s).await.unwrap();
        send(&mut s, Message::Bitfield(Bitfield::new(pieces as usize))).await;
        for i in 0..8 {
            send(&mut s, Message::Request((k * 8 + i) % pieces)).await;
        }
        hogs.push(s);
    }
    // Meanwhile an honest agent downloads; the origin's bytes in memory stay in budget.
    let a = start(agent(), &discovery, &shutdown, false).await;
    let h = a.node.download(meta.clone()).await.unwrap();
    let mut most = 0.0f64;
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        let mut finished = std::pin::pin!(h.finished());
        loop {
            most = most.max(o.metric("shoal_origin_piece_bytes_unsent", None));
            tokio::select! {
                r = &mut finished => return r,
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    })
    .await
    .expect("the honest agent never got the blob");
    done.unwrap();
    assert_holds(&a, &data).await;
    assert!(most <= budget as f64, "{most} bytes unsent in memory");
    assert!(most > 0.0, "the gauge never moved");
    drop(hogs);
    shutdown.cancel();
}
