//! The peer protocol over mutual TLS: a swarm over it, and the attacks it stops, each made
//! for real on real sockets: a certificate from another CA, an expired one, a certificate
//! held for one peer used to claim another's id (both ways), an agent's certificate saying
//! origin, plaintext to a TLS port and TLS to a plaintext one; and a certificate renewed
//! under a running node.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use prometheus::Registry;
use shoal_core::Metainfo;
use shoal_core::peer::{PeerId, PeerInfo};
use shoal_core::store::BlobStore;
use shoal_core::testing::{TestPki, wait_until};
use shoal_core::tls::issue::{Validity, agent_name};
use shoal_core::tls::rustls::pki_types::{CertificateDer, ServerName};
use shoal_core::tls::tokio_rustls::client::TlsStream;
use shoal_core::tls::tokio_rustls::{TlsAcceptor, TlsConnector};
use shoal_core::tls::{PeerIdentity, Tls, TlsConfig, load_certs};
use shoal_p2p::bitfield::Bitfield;
use shoal_p2p::wire::{self, Hello, Layout, Message};
use shoal_p2p::{Node, NodeConfig, P2pError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::honest::one_seeder_leechers_share;
use crate::support::{
    PATIENCE, TestNode, agent, assert_holds, blob_bytes, empty_list, origin_with, start, with_tls,
};

/// Connections a node refused for `reason`, whichever part it is.
fn refused(n: &TestNode, reason: &str) -> f64 {
    let label = format!("reason=\"{reason}\"");
    n.metric("shoal_agent_peer_connections_refused_total", &[&label])
        + n.metric("shoal_origin_peer_connections_refused_total", &[&label])
}

/// A fresh TLS session to `addr` as the holder of `table`'s certificate (never resumed, so
/// the peer presents its certificate every time).
async fn tls_dial(table: &TlsConfig, addr: SocketAddr) -> io::Result<TlsStream<TcpStream>> {
    let tls = Tls::from_config(table).unwrap().unwrap();
    let connector = TlsConnector::from(tls.peer_client().unwrap());
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// Sends `hello` and reads whatever comes back until the node closes the connection.
async fn answer_to<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, hello: &Hello) -> Vec<u8> {
    // The node may have closed already; what it sent is what counts.
    let _ = stream.write_all(&hello.encode()).await;
    let _ = stream.flush().await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .expect("the node kept the connection open");
    got
}

fn hello(meta: &Metainfo, peer_id: PeerId, origin: bool) -> Hello {
    Hello {
        digest: meta.digest(),
        peer_id,
        origin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_over_tls_shares_a_blob_byte_exact() {
    let pki = TestPki::new();
    let origin = with_tls(NodeConfig::origin(), &pki.origin("origin-0"));
    let agents = (0..3)
        .map(|i| with_tls(agent(), &pki.agent(&format!("agent-{i}"))))
        .collect();
    one_seeder_leechers_share(origin, agents).await;
}

/// A stranger whose certificate the cluster must not accept, though it trusts the cluster's
/// CA itself: the cluster's origin refuses it when it dials, and a cluster agent refuses it
/// when dialling it. No byte of the blob crosses either way.
async fn refused_both_ways(pki: &TestPki, stranger: &TlsConfig) {
    let shutdown = CancellationToken::new();
    let data = blob_bytes(1 << 20, 21);
    let list = empty_list();
    let origin_cfg = with_tls(NodeConfig::origin(), &pki.origin("origin"));
    let (origin, meta) = origin_with(&data, &list, &shutdown, origin_cfg).await;
    let s = start(with_tls(agent(), stranger), &list, &shutdown, false).await;
    let _download = s.node.download(meta.clone()).await.unwrap();
    wait_until("the origin refuses the stranger", PATIENCE, || async {
        refused(&origin, "tls") >= 1.0
    })
    .await;
    wait_until("the stranger hears it was refused", PATIENCE, || async {
        refused(&s, "tls") >= 1.0
    })
    .await;
    assert_eq!(
        origin.metric("shoal_origin_peer_bytes_sent_total", &[]),
        0.0
    );
    assert_eq!(s.metric("shoal_agent_pieces_verified_total", &[]), 0.0);

    let seeder = start(with_tls(agent(), stranger), &empty_list(), &shutdown, false).await;
    seeder
        .store
        .put_bytes(Some(meta.digest()), &data)
        .await
        .unwrap();
    seeder.node.seed(meta.clone()).await.unwrap();
    let list = empty_list();
    list.add(seeder.node.peer_info());
    let a = start(with_tls(agent(), &pki.agent("a")), &list, &shutdown, false).await;
    let _download = a.node.download(meta.clone()).await.unwrap();
    wait_until(
        "the agent refuses the stranger it dialled",
        PATIENCE,
        || async { refused(&a, "tls") >= 1.0 },
    )
    .await;
    assert_eq!(a.metric("shoal_agent_pieces_verified_total", &[]), 0.0);
    assert_eq!(seeder.metric("shoal_agent_peer_bytes_sent_total", &[]), 0.0);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_certificate_from_another_ca_is_refused_both_ways() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let mut stranger = other.agent("stranger");
    stranger.ca = Some(pki.ca_path().to_owned());
    refused_both_ways(&pki, &stranger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_both_ways() {
    let pki = TestPki::new();
    let expired = pki.issue(
        "expired",
        &[&agent_name("expired"), "127.0.0.1"],
        Validity::expired(),
    );
    refused_both_ways(&pki, &expired).await;
}

/// A TLS peer holding `table`'s certificate that says it is `claimed` in its hello and
/// holds every piece of `meta`'s blob. Counts the hellos it is sent.
async fn impostor(
    table: &TlsConfig,
    meta: &Metainfo,
    claimed: PeerId,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let tls = Tls::from_config(table).unwrap().unwrap();
    let acceptor = TlsAcceptor::from(tls.peer_server().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hellos = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&hellos);
    let digest = meta.digest();
    let pieces = Layout::of(meta).pieces as usize;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                if wire::read_hello(&mut s).await.is_err() {
                    return;
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let mut out = Hello {
                    digest,
                    peer_id: claimed,
                    origin: false,
                }
                .encode();
                let mut frame = BytesMut::new();
                Message::Bitfield(Bitfield::full(pieces)).encode(&mut frame);
                out.extend_from_slice(&frame);
                let _ = s.write_all(&out).await;
                let _ = s.flush().await;
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            });
        }
    });
    (addr, hellos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_one_peer_cannot_claim_another_peers_id() {
    let pki = TestPki::new();
    let shutdown = CancellationToken::new();
    let data = blob_bytes(1 << 20, 22);
    let list = empty_list();
    let origin_cfg = with_tls(NodeConfig::origin(), &pki.origin("origin"));
    let (origin, meta) = origin_with(&data, &list, &shutdown, origin_cfg).await;
    let addr = origin.node.local_addr();
    let mallory = pki.agent("mallory");
    let mallory_id = PeerIdentity::id_of(&agent_name("mallory"));
    let victim = PeerIdentity::id_of(&agent_name("victim"));

    // As herself, Mallory is answered: her session and her hello are sound.
    let mut s = tls_dial(&mallory, addr).await.unwrap();
    s.write_all(&hello(&meta, mallory_id, false).encode())
        .await
        .unwrap();
    let theirs = wire::read_hello(&mut s).await.unwrap();
    assert_eq!(theirs.peer_id, origin.node.peer_id());
    drop(s);

    // Saying she is the victim, she is refused without a word.
    let mut s = tls_dial(&mallory, addr).await.unwrap();
    let answer = answer_to(&mut s, &hello(&meta, victim, false)).await;
    assert!(answer.is_empty(), "the origin answered an impostor");
    wait_until("the origin counts the impostor", PATIENCE, || async {
        refused(&origin, "identity") >= 1.0
    })
    .await;

    // Listening as the victim, she is refused by the agent that dials her, before its hello.
    let (at, hellos) = impostor(&mallory, &meta, victim).await;
    let list = empty_list();
    list.add(PeerInfo {
        peer_id: victim,
        addr: at,
        complete: true,
        origin: false,
    });
    let a = start(with_tls(agent(), &pki.agent("a")), &list, &shutdown, false).await;
    let _download = a.node.download(meta.clone()).await.unwrap();
    wait_until(
        "the agent refuses the impostor it dialled",
        PATIENCE,
        || async { refused(&a, "identity") >= 1.0 },
    )
    .await;
    assert_eq!(
        hellos.load(Ordering::SeqCst),
        0,
        "the agent spoke to an impostor"
    );
    assert_eq!(a.metric("shoal_agent_pieces_verified_total", &[]), 0.0);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_certificate_cannot_say_origin() {
    let pki = TestPki::new();
    let shutdown = CancellationToken::new();
    let data = blob_bytes(1 << 20, 23);
    let list = empty_list();
    let seeder_cfg = with_tls(agent(), &pki.agent("seeder"));
    let seeder = start(seeder_cfg, &list, &shutdown, false).await;
    let meta = Metainfo::from_bytes(&data);
    seeder
        .store
        .put_bytes(Some(meta.digest()), &data)
        .await
        .unwrap();
    seeder.node.seed(meta.clone()).await.unwrap();
    let pretender = pki.agent("pretender");
    let id = PeerIdentity::id_of(&agent_name("pretender"));
    let addr = seeder.node.local_addr();

    let mut s = tls_dial(&pretender, addr).await.unwrap();
    let answer = answer_to(&mut s, &hello(&meta, id, true)).await;
    assert!(answer.is_empty(), "a pretended origin was answered");
    wait_until("the seeder counts the pretender", PATIENCE, || async {
        refused(&seeder, "identity") >= 1.0
    })
    .await;
    // Not saying it, the same certificate is answered.
    let mut s = tls_dial(&pretender, addr).await.unwrap();
    s.write_all(&hello(&meta, id, false).encode())
        .await
        .unwrap();
    assert_eq!(
        wire::read_hello(&mut s).await.unwrap().peer_id,
        seeder.node.peer_id()
    );
    shutdown.cancel();
}

/// Log lines written while a test runs on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let w = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish()
    }

    /// The lines that contain every one of `needles`.
    fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

// On one thread, so that the node's tasks log to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn plaintext_and_tls_do_not_mix_and_the_log_says_which_side_is_set_how() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let pki = TestPki::new();
    let shutdown = CancellationToken::new();
    let data = blob_bytes(1 << 20, 24);
    let list = empty_list();
    let origin_cfg = with_tls(NodeConfig::origin(), &pki.origin("origin"));
    let (origin, meta) = origin_with(&data, &list, &shutdown, origin_cfg).await;

    // A plaintext hello to the TLS port: closed unanswered, and the line names the cause.
    let mut tcp = TcpStream::connect(origin.node.local_addr()).await.unwrap();
    let from = tcp.local_addr().unwrap().to_string();
    let answer = answer_to(&mut tcp, &hello(&meta, PeerId::random(), false)).await;
    assert!(answer.is_empty(), "a plaintext hello was answered");
    wait_until(
        "the origin counts the plaintext hello",
        PATIENCE,
        || async { refused(&origin, "plaintext") >= 1.0 },
    )
    .await;
    let lines = logs.lines_with(&[
        "plaintext peer connection refused: this port speaks TLS",
        "tls.plaintext",
        &from,
    ]);
    assert_eq!(lines.len(), 1, "{lines:?}");

    // A plaintext agent dialling it is refused the same way, and gets nothing.
    let a = start(agent(), &list, &shutdown, false).await;
    let _download = a.node.download(meta.clone()).await.unwrap();
    wait_until(
        "the origin refuses the plaintext agent",
        PATIENCE,
        || async { refused(&origin, "plaintext") >= 2.0 },
    )
    .await;
    assert_eq!(
        origin.metric("shoal_origin_peer_bytes_sent_total", &[]),
        0.0
    );

    // And TLS to a plaintext port: refused with the line the other way round.
    let plain = start(agent(), &empty_list(), &shutdown, false).await;
    let dial = tls_dial(&pki.agent("b"), plain.node.local_addr()).await;
    assert!(dial.is_err(), "a plaintext port finished a TLS handshake");
    wait_until(
        "the plaintext node counts the TLS hello",
        PATIENCE,
        || async { refused(&plain, "tls_to_plaintext") >= 1.0 },
    )
    .await;
    let lines = logs.lines_with(&["TLS peer connection refused: this port speaks plaintext"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_presented_without_a_restart() {
    let pki = TestPki::new();
    let shutdown = CancellationToken::new();
    let table = pki.agent("renewing");
    let cert_file = table.cert.clone().unwrap();
    let n = start(with_tls(agent(), &table), &empty_list(), &shutdown, false).await;
    let probe = pki.agent("probe");
    let presented = || async {
        let s = tls_dial(&probe, n.node.local_addr()).await.unwrap();
        s.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    let first: CertificateDer<'static> = presented().await;
    assert_eq!(first, load_certs(&cert_file).unwrap()[0]);

    let name = agent_name("renewing");
    pki.issue("renewing", &[&name, "127.0.0.1"], Validity::days(30));
    let renewed = load_certs(&cert_file).unwrap()[0].clone();
    assert_ne!(renewed, first);
    wait_until(
        "the node presents the renewed certificate",
        PATIENCE,
        || async { presented().await == renewed },
    )
    .await;
    // Its holder, and so the node's id, is the same.
    assert_eq!(PeerIdentity::of(&renewed).unwrap().id, n.node.peer_id());

    // And peers still download from it.
    let data = blob_bytes(1 << 20, 25);
    let meta = Metainfo::from_bytes(&data);
    n.store.put_bytes(Some(meta.digest()), &data).await.unwrap();
    n.node.seed(meta.clone()).await.unwrap();
    let list = empty_list();
    list.add(n.node.peer_info());
    let a = start(with_tls(agent(), &pki.agent("a")), &list, &shutdown, false).await;
    let h = a.node.download(meta).await.unwrap();
    tokio::time::timeout(PATIENCE, h.finished())
        .await
        .expect("download did not finish in time")
        .unwrap();
    assert_holds(&a, &data).await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_node_whose_settings_differ_from_its_certificate_does_not_start() {
    let pki = TestPki::new();
    let start_with = |cfg: NodeConfig| async move {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Node::start(
            cfg,
            listener,
            store,
            Arc::new(empty_list()),
            None,
            &Registry::new(),
            CancellationToken::new(),
        )
        .map(|_| ())
    };
    let mut other_id = with_tls(agent(), &pki.agent("a"));
    other_id.peer_id = PeerId::random();
    let e = start_with(other_id).await.unwrap_err();
    assert!(matches!(e, P2pError::PeerIdNotCertificate { .. }), "{e}");
    assert!(e.to_string().contains("a.agent.shoal"), "{e}");

    let with_agent_cert = with_tls(agent(), &pki.agent("o"));
    let agent_as_origin = NodeConfig {
        peer_id: with_agent_cert.peer_id,
        tls: with_agent_cert.tls,
        ..NodeConfig::origin()
    };
    let e = start_with(agent_as_origin).await.unwrap_err();
    assert!(matches!(e, P2pError::OriginNotCertificate { .. }), "{e}");

    let origin_as_agent = with_tls(agent(), &pki.origin("p"));
    let e = start_with(origin_as_agent).await.unwrap_err();
    assert!(matches!(e, P2pError::OriginNotCertificate { .. }), "{e}");
}
