//! Honest swarms: sharing, streaming in order, caps, shutdown, unseeding.

use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_core::Metainfo;
use shoal_core::peer::PeerId;
use shoal_p2p::wire::{self, Decoder, Hello, Layout, Message, Unpaced};
use shoal_p2p::{DownloadError, NodeConfig};
use tokio_util::sync::CancellationToken;

use crate::support::{TestNode, agent, assert_holds, blob_bytes, empty_list, origin_with, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seeder_eight_leechers_share_32_mib() {
    one_seeder_leechers_share(NodeConfig::origin(), (0..8).map(|_| agent()).collect()).await;
}

/// An origin seeds 32 MiB to the agents `leechers` configures, all at once: each gets the
/// blob whole, and most bytes come from the other agents rather than the origin.
pub async fn one_seeder_leechers_share(origin_cfg: NodeConfig, leechers: Vec<NodeConfig>) {
    let shutdown = CancellationToken::new();
    let discovery = empty_list();
    let data = blob_bytes(32 << 20, 1);
    let (origin, meta) = origin_with(&data, &discovery, &shutdown, origin_cfg).await;
    let mut nodes = Vec::new();
    for cfg in leechers {
        let n = start(cfg, &discovery, &shutdown, false).await;
        discovery.add(n.node.peer_info());
        nodes.push(n);
    }
    let leechers = nodes;
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
            &["source=\"peer\""],
        );
        assert_eq!(n.metric("shoal_agent_pieces_failed_total", &[]), 0.0);
        assert_eq!(
            n.metric("shoal_agent_downloads_total", &["result=\"ok\""]),
            1.0
        );
    }
    // A swarm, not clients of one server: most bytes came from other leechers.
    let sent_by_origin = origin.metric("shoal_origin_peer_bytes_sent_total", &[]);
    assert!(
        sent_by_origin >= data.len() as f64,
        "the origin sent less than one copy"
    );
    assert!(
        from_peers > sent_by_origin,
        "peers sent {from_peers} bytes, the origin {sent_by_origin}"
    );
    // Nobody's certificate or hello was refused (TLS), nor TLS and plaintext mixed.
    for (n, prefix) in leechers
        .iter()
        .map(|n| (n, "shoal_agent"))
        .chain([(&origin, "shoal_origin")])
    {
        for reason in ["tls", "identity", "plaintext", "tls_to_plaintext"] {
            let label = format!("reason=\"{reason}\"");
            let name = format!("{prefix}_peer_connections_refused_total");
            assert_eq!(n.metric(&name, &[&label]), 0.0, "refused for {reason}");
        }
    }
    shutdown.cancel();
    for n in leechers.iter().chain([&origin]) {
        tokio::time::timeout(Duration::from_secs(10), n.node.closed())
            .await
            .expect("node did not stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_and_ingress_caps_hold() {
    let data = blob_bytes(6 << 20, 4);
    let rate = 4u64 << 20;
    for which in ["egress", "ingress"] {
        let shutdown = CancellationToken::new();
        let discovery = empty_list();
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
    let discovery = empty_list();
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
        n.metric("shoal_agent_downloads_total", &["result=\"ok\""]),
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
async fn shutdown_ends_downloads_and_tasks() {
    let shutdown = CancellationToken::new();
    let discovery = empty_list();
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
    let discovery = empty_list();
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
    let discovery = empty_list();
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
