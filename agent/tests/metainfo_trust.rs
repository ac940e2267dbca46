//! Metainfo trust, attacked for real: a tracker (or whoever answers for it, or for the
//! origins, on plain HTTP) hands out metainfo with the right digest and length but the
//! piece hashes of other bytes, and peers serve pieces that match those lying hashes. No
//! byte of it may reach a client; honest blobs keep coming.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use prometheus::Registry;
use shoal_agent::testing::{TestAgent, agent_config};
use shoal_agent::{Agent, Listeners};
use shoal_core::peer::{AnnounceResponse, PeerId, PeerInfo};
use shoal_core::signature::{KeyPairPem, MetainfoSigner};
use shoal_core::{Digest, Metainfo};
use shoal_origin::testing::TestCluster;
use shoal_p2p::bitfield::Bitfield;
use shoal_p2p::wire::{self, Decoder, Hello, Layout, Message, Unpaced};
use shoal_tests::data::noise;
use support::http;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Past the agent's `swarm.direct_max`, so it goes through the swarm: five pieces.
const LEN: usize = (1 << 20) + 12_345;

/// How the lying metainfo is dressed.
#[derive(Clone, Copy)]
enum Lie {
    /// Bare, as a tracker that holds no key would have to send it.
    Unsigned,
    /// Signed properly, by a key the agents were never given.
    ForeignKey,
    /// The origins' real signed answer with the piece hashes swapped.
    TamperedSignature,
}

/// The lying metainfo for `honest`'s digest: its length, the piece hashes of `other`.
fn lie(honest: &[u8], other: &[u8], signed: &Bytes, how: Lie) -> Bytes {
    let truth = Metainfo::from_bytes(honest);
    let theirs = Metainfo::from_bytes(other);
    let hashes = (0..theirs.piece_count())
        .map(|i| *theirs.piece_hash(i).unwrap())
        .collect();
    let lying =
        Metainfo::new(truth.digest(), truth.length(), truth.piece_length(), hashes).unwrap();
    match how {
        Lie::Unsigned => lying.encode().into(),
        Lie::ForeignKey => {
            let foreign = KeyPairPem::generate().unwrap();
            MetainfoSigner::from_pem(&foreign.private_pem)
                .unwrap()
                .sign(&lying)
                .into()
        }
        Lie::TamperedSignature => {
            // The signed form ends with the metainfo's encoding: keep the origins' header
            // and signature, put the lying encoding behind them.
            let enc = lying.encode();
            let mut out = signed[..signed.len() - enc.len()].to_vec();
            out.extend_from_slice(&enc);
            assert_eq!(out.len(), signed.len());
            assert_ne!(&out[..], &signed[..]);
            out.into()
        }
    }
}

#[derive(Clone)]
struct Liar {
    /// Metainfo answers by digest: lies for the attacked blob, the origins' own signed
    /// answers passed through for the rest.
    answers: Arc<HashMap<Digest, Bytes>>,
    peers: Arc<Vec<PeerInfo>>,
}

async fn answer(State(l): State<Liar>, Path(digest): Path<String>) -> Response {
    let Ok(d) = digest.parse::<Digest>() else {
        return http::StatusCode::BAD_REQUEST.into_response();
    };
    match l.answers.get(&d) {
        Some(b) => b.clone().into_response(),
        None => http::StatusCode::NOT_FOUND.into_response(),
    }
}

async fn announce(State(l): State<Liar>) -> Response {
    axum::Json(AnnounceResponse {
        peers: l.peers.as_ref().clone(),
        interval_secs: 1,
    })
    .into_response()
}

/// A tracker that lies, answering on the origins' metainfo path too (as whoever sits on a
/// plain-HTTP path to either would). Its announce hands out `peers`.
async fn lying_tracker(answers: HashMap<Digest, Bytes>, peers: Vec<PeerInfo>) -> String {
    let app = Router::new()
        .route("/v1/metainfo/{digest}", get(answer))
        .route("/v1/blobs/{digest}/metainfo", get(answer))
        .route("/v1/announce", post(announce))
        .with_state(Liar {
            answers: Arc::new(answers),
            peers: Arc::new(peers),
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A peer that holds every piece of `digest` and serves `data` for it: pieces that match
/// the lying hashes. Counts the pieces it sent.
async fn lying_peer(digest: Digest, data: Arc<Vec<u8>>) -> (PeerInfo, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let id = PeerId::random();
    let layout = Layout::of(&Metainfo::from_bytes(&data));
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (data, sent) = (Arc::clone(&data), Arc::clone(&counter));
            tokio::spawn(async move {
                let Ok(h) = wire::read_hello(&mut stream).await else {
                    return;
                };
                if h.digest != digest {
                    return;
                }
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
                while let Ok(m) = wire::read_message(&mut stream, &decoder, &Unpaced, |_| {}).await
                {
                    if let Message::Request(i) = m {
                        let start = i as usize * layout.piece_length as usize;
                        let size = layout.piece_size(i).unwrap() as usize;
                        let mut frame = BytesMut::new();
                        Message::Piece {
                            index: i,
                            data: Bytes::copy_from_slice(&data[start..start + size]),
                        }
                        .encode(&mut frame);
                        if stream.write_all(&frame).await.is_err() {
                            return;
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
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
        sent,
    )
}

/// The origin's own peer entry, as an honest tracker would hand it out.
async fn origin_peer(origins: &TestCluster) -> PeerInfo {
    let info = origins.client().info(origins.url(0)).await.unwrap();
    let http: SocketAddr = origins
        .url(0)
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    PeerInfo {
        peer_id: info.peer_id,
        addr: SocketAddr::new(http.ip(), info.peer_port),
        complete: true,
        origin: true,
    }
}

/// GET of a blob: the status and whatever body bytes arrived before the transfer ended.
async fn get_blob(agent: &TestAgent, digest: &Digest) -> (u16, Vec<u8>) {
    let mut res = http()
        .get(format!("{}/v2/library/x/blobs/{digest}", agent.url))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        body.extend_from_slice(&chunk);
    }
    (status, body)
}

struct Scene {
    origins: TestCluster,
    honest: Vec<u8>,
    other: Vec<u8>,
    bystander: Vec<u8>,
    digest: Digest,
    liar_url: String,
    liar_sent: Arc<AtomicUsize>,
}

/// One origin holding the attacked blob and a bystander blob; a lying tracker that lies
/// about the first, passes the origins' signed answer for the second through, and hands
/// out a lying peer and the real origin.
async fn scene(how: Lie) -> Scene {
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let honest = noise(1, LEN);
    let other = noise(2, LEN);
    let bystander = noise(3, LEN);
    let digest = origins.push(&honest).await;
    let bystander_digest = origins.push(&bystander).await;
    let client = origins.client();
    let signed = client.metainfo_wire(&digest).await.unwrap();
    let answers = HashMap::from([
        (digest, lie(&honest, &other, &signed, how)),
        (
            bystander_digest,
            client.metainfo_wire(&bystander_digest).await.unwrap(),
        ),
    ]);
    let (peer, liar_sent) = lying_peer(digest, Arc::new(other.clone())).await;
    let liar_url = lying_tracker(answers, vec![peer, origin_peer(&origins).await]).await;
    Scene {
        origins,
        honest,
        other,
        bystander,
        digest,
        liar_url,
        liar_sent,
    }
}

/// An agent that asks the liar for metainfo and peers, and reaches the origins only
/// through `origins` (the liar too, or the real ones).
async fn agent(s: &Scene, dir: &std::path::Path, origins: Vec<String>) -> TestAgent {
    let mut c = agent_config(dir, &s.origins, None);
    c.tracker = s.liar_url.clone();
    c.origins = origins;
    c.swarm.stall_timeout = Duration::from_secs(5);
    TestAgent::start(c).await
}

/// The lie refused with nothing served, the liar's peer never asked, the honest blob
/// still coming whole when the real origins can be reached.
async fn refused_and_still_working(how: Lie) {
    let s = scene(how).await;

    // Every metainfo source this agent has is the liar: the blob is refused outright.
    let dir = tempfile::tempdir().unwrap();
    let a = agent(&s, dir.path(), vec![s.liar_url.clone()]).await;
    let (status, body) = get_blob(&a, &s.digest).await;
    assert_eq!(status, 503, "the lie was served: {} body bytes", body.len());
    assert!(
        !body
            .windows(64)
            .any(|w| s.other.windows(64).next() == Some(w))
    );
    assert_eq!(s.liar_sent.load(Ordering::SeqCst), 0, "no download started");
    assert!(!a.agent.cache().store().contains(&s.digest).await.unwrap());
    // A blob whose signed metainfo the liar passes on unchanged is served.
    let bystander = Digest::sha256_of(&s.bystander);
    let (status, body) = get_blob(&a, &bystander).await;
    assert_eq!((status, body == s.bystander), (200, true));
    a.stop().await;

    // With the real origins reachable, the origins' signed metainfo is used instead of the
    // tracker's, and the liar's pieces fail against it: the client gets the real blob.
    let dir = tempfile::tempdir().unwrap();
    let a = agent(&s, dir.path(), s.origins.urls()).await;
    let (status, body) = get_blob(&a, &s.digest).await;
    assert_eq!(status, 200);
    assert!(body == s.honest, "the client got other bytes than the blob");
    a.stop().await;
    s.origins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_tracker_with_matching_peers_gets_no_byte_to_a_client() {
    refused_and_still_working(Lie::Unsigned).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metainfo_signed_by_a_foreign_key_is_refused() {
    refused_and_still_working(Lie::ForeignKey).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_signature_is_refused() {
    refused_and_still_working(Lie::TamperedSignature).await;
}

/// Starts an agent on port 0 with `config`, or says why it would not start.
async fn try_start(config: shoal_agent::Config) -> Result<Agent, shoal_agent::AgentError> {
    Agent::start(
        config,
        Listeners {
            http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            peer: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            ops: None,
        },
        Registry::new(),
        CancellationToken::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_metainfo_is_refused_unless_insecure() {
    // An origin without a key serves metainfo unsigned, and starts only when insecure.
    let keyless = |_: usize, c: &mut shoal_origin::Config| {
        c.credentials.metainfo_key = Default::default();
    };
    let dir = tempfile::tempdir().unwrap();
    let config = {
        let mut c = shoal_origin::testing::test_config(dir.path().join("o"));
        keyless(0, &mut c);
        c
    };
    let refused = shoal_origin::testing::TestOrigin::start(
        config,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await;
    assert!(
        refused.unwrap_err().to_string().contains("metainfo_key"),
        "a keyless origin must not start unless insecure"
    );
    let cluster = shoal_origin::testing::TestCluster::builder(1)
        .replicas(1)
        .configure(move |i, c| {
            keyless(i, c);
            c.insecure = true;
        })
        .start()
        .await;
    let data = noise(4, LEN);
    let digest = Digest::sha256_of(&data);
    cluster
        .client()
        .put_blob_bytes(&digest, Bytes::from(data.clone()))
        .await
        .unwrap();

    let base = |dir: &std::path::Path| {
        let mut c = shoal_agent::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            tracker: String::new(),
            origins: cluster.urls(),
            shutdown_grace: Duration::from_secs(2),
            tls: shoal_core::tls::TlsConfig::plaintext(),
            ..shoal_agent::Config::default()
        };
        c.peer.listen = "127.0.0.1:0".parse().unwrap();
        c.cache.dir = dir.to_owned();
        c.swarm.stall_timeout = Duration::from_secs(5);
        c.credentials.read_token = shoal_core::auth::Secret::new(cluster.read_token());
        c
    };

    // No keys and not insecure: the agent does not start.
    let dir = tempfile::tempdir().unwrap();
    let err = try_start(base(dir.path())).await.unwrap_err();
    assert!(err.to_string().contains("metainfo_keys"), "{err}");

    // With the cluster's keys, the unsigned metainfo is refused and nothing is served.
    let dir = tempfile::tempdir().unwrap();
    let mut strict = base(dir.path());
    strict.credentials.metainfo_keys = shoal_origin::testing::metainfo_keys().public_pem.clone();
    let a = TestAgent::start(strict).await;
    let (status, body) = get_blob(&a, &digest).await;
    assert_eq!(
        status,
        503,
        "unsigned metainfo was used: {} body bytes",
        body.len()
    );
    assert!(!a.agent.cache().contains(&digest));
    a.stop().await;

    // Insecure, it is accepted (with a warning) and the blob is served.
    let dir = tempfile::tempdir().unwrap();
    let mut insecure = base(dir.path());
    insecure.insecure = true;
    let a = TestAgent::start(insecure).await;
    let (status, body) = get_blob(&a, &digest).await;
    assert_eq!((status, body == data), (200, true));
    a.stop().await;
    cluster.shutdown().await;
}
