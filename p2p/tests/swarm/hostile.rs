//! Peers that corrupt pieces, stall, lie about a blob's digest, or ask for pieces and never
//! read them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use shoal_core::peer::{PeerId, PeerInfo};
use shoal_core::{Digest, Metainfo};
use shoal_p2p::bitfield::Bitfield;
use shoal_p2p::engine::{Blame, Config};
use shoal_p2p::wire::{self, Decoder, Hello, Layout, Message, Unpaced};
use shoal_p2p::{DownloadError, NodeConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{agent, assert_holds, blob_bytes, empty_list, origin_with, send, start};

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

/// A peer that holds "every piece" of `meta`'s blob and answers requests its own way,
/// with `data` for the honest answers.
async fn fake_peer(meta: &Metainfo, data: &[u8], behaviour: Behaviour) -> (PeerInfo, Arc<Seen>) {
    let digest = meta.digest();
    let layout = Layout::of(meta);
    let data = Arc::new(data.to_vec());
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
    let discovery = empty_list();
    let data = blob_bytes(8 << 20, 2);
    let meta = Metainfo::from_bytes(&data);
    // Listed first and not an origin: downloaders prefer it.
    let (bad, seen) = fake_peer(&meta, &data, Behaviour::Corrupt).await;
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
        let failed = n.metric("shoal_agent_pieces_failed_total", &[]);
        if failed > 0.0 {
            caught += 1;
            assert!(n.node.is_shunned(Blame::Dialled(bad.addr)).await);
            // Dropped at its first bad piece: no more bad pieces arrive than were already
            // requested from it when the first one did.
            let window = Config::default().max_window as f64;
            assert!(failed <= window, "{failed} bad pieces reached one node");
            assert_eq!(n.metric("shoal_agent_peers_shunned_total", &[]), 1.0);
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
    let discovery = empty_list();
    let data = blob_bytes(4 << 20, 3);
    let meta = Metainfo::from_bytes(&data);
    let (staller, seen) = fake_peer(&meta, &data, Behaviour::Stall).await;
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
    assert!(n.metric("shoal_agent_peer_request_timeouts_total", &[]) >= 1.0);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_that_fails_its_digest_is_never_visible() {
    let shutdown = CancellationToken::new();
    let discovery = empty_list();
    let data = blob_bytes(2 << 20, 6);
    let honest = Metainfo::from_bytes(&data);
    // Piece hashes of the real bytes under another blob's digest: every piece verifies,
    // the whole does not.
    let wrong = Digest::sha256_of(b"something else");
    let hashes = (0..honest.piece_count())
        .map(|i| *honest.piece_hash(i).unwrap())
        .collect();
    let lying = Metainfo::new(wrong, honest.length(), honest.piece_length(), hashes).unwrap();
    let (peer, _) = fake_peer(&lying, &data, Behaviour::Honest).await;
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
        n.metric("shoal_agent_downloads_total", &["result=\"failed\""]),
        1.0
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_stop_reading_cannot_make_an_origin_hold_more_than_its_upload_budget() {
    let shutdown = CancellationToken::new();
    let data = blob_bytes(8 << 20, 25);
    let discovery = empty_list();
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
            most = most.max(o.metric("shoal_origin_piece_bytes_unsent", &[]));
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
