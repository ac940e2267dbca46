//! Attacks on identity and on the node's bounds: peers that claim to be someone else, idle
//! connections, floods of connections and of listed peers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use shoal_core::Metainfo;
use shoal_core::peer::{PeerId, PeerInfo};
use shoal_core::testing::wait_until;
use shoal_p2p::bitfield::Bitfield;
use shoal_p2p::discovery::{Announce, DiscoveryError, Peers};
use shoal_p2p::engine::{Blame, Config};
use shoal_p2p::wire::{self, Decoder, Hello, Layout, Message, Unpaced};
use shoal_p2p::{Discovery, NodeConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::{
    PATIENCE, agent, assert_holds, blob_bytes, empty_list, origin_with, send, start, start_with,
};

/// A hostile peer's connection to `to`: dialled from `from` (any loopback address), with a
/// hello claiming `claimed` (and the origin flag if `origin`), the node's answer read.
/// Returns the stream and the node's first message (its bitfield, or an error).
async fn dial_claiming(
    to: SocketAddr,
    from: IpAddr,
    meta: &Metainfo,
    claimed: PeerId,
    origin: bool,
) -> (TcpStream, Message) {
    try_dial_claiming(to, from, meta, claimed, origin)
        .await
        .expect("the node closed the connection unanswered")
}

/// [`dial_claiming`], `None` if the node closes the connection without an answer.
async fn try_dial_claiming(
    to: SocketAddr,
    from: IpAddr,
    meta: &Metainfo,
    claimed: PeerId,
    origin: bool,
) -> Option<(TcpStream, Message)> {
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

/// Reads until the node asks for a piece; returns the pieces asked so far.
async fn wait_for_requests(s: &mut TcpStream, meta: &Metainfo) -> Vec<u32> {
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
async fn wait_closed(s: &mut TcpStream, meta: &Metainfo) -> Option<wire::ErrorCode> {
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

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_claiming_an_origins_id_and_sending_garbage_does_not_cut_the_agent_off_the_origin() {
    let shutdown = CancellationToken::new();
    let data = blob_bytes(4 << 20, 21);
    // The agent hears of the origin only once the hostile peer has done its worst.
    let origins = empty_list();
    let (origin, meta) = origin_with(&data, &origins, &shutdown, NodeConfig::origin()).await;
    let discovery = empty_list();
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
    assert_eq!(a.metric("shoal_agent_peers_shunned_total", &[]), 1.0);

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
    let origins = empty_list();
    let (origin, meta) = origin_with(&data, &origins, &shutdown, NodeConfig::origin()).await;
    let discovery = empty_list();
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
    let discovery = empty_list();
    let mut cfg = NodeConfig::origin();
    cfg.max_inbound_per_addr = 3;
    let (o, meta) = origin_with(&data, &discovery, &shutdown, cfg).await;
    let at = o.node.local_addr();
    let other: IpAddr = "127.0.0.2".parse().unwrap();

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
        silent.push(TcpStream::connect(at).await.unwrap());
    }
    let mut extra = TcpStream::connect(at).await.unwrap();
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
            &["reason=\"per_address\""]
        ) >= 2.0
    );
    // Once the address's connections end, it is let in again.
    drop(silent);
    drop(open);
    wait_until("the address is let in again", PATIENCE, || async {
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

impl Discovery for Listed {
    fn announce(&self, _: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>> {
        let peers = self.0.lock().unwrap().clone();
        Box::pin(async move {
            Ok(Peers {
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
    let origins = empty_list();
    let (origin, meta) = origin_with(&data, &origins, &shutdown, NodeConfig::origin()).await;
    let listed = Listed::default();
    *listed.0.lock().unwrap() = dead_peers(8).await;
    let mut cfg = agent();
    cfg.engine.max_known_peers = 8;
    cfg.engine.forget_peer_after = Duration::from_secs(3);
    let a = start_with(cfg, Arc::new(listed.clone()), &shutdown, false).await;
    let node = &a.node;
    let h = node.download(meta.clone()).await.unwrap();
    let known = || async { node.stats(meta.digest()).await.unwrap().known_peers };
    wait_until("the list is full", PATIENCE, || async {
        known().await == 8
    })
    .await;
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
    wait_until("stale peers are forgotten", PATIENCE, || async {
        known().await == 1
    })
    .await;
    shutdown.cancel();
}
