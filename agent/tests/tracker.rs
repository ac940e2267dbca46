//! What a tracker says cannot take an agent down: a hostile tracker's answers (endless
//! intervals, absurd peer lists, lying lengths) and a tracker that is down leave the agent
//! serving blobs from the origins, with `/ready` telling the truth.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use shoal_agent::testing::{TestAgent, agent_config};
use shoal_core::metainfo::piece_length_for;
use shoal_core::peer::{AnnounceResponse, PeerId, PeerInfo};
use shoal_core::testing::wait_until;
use shoal_core::{Digest, Metainfo};
use shoal_origin::testing::TestCluster;
use shoal_tests::data::noise;
use shoal_tracker::testing::TestTracker;
use support::http;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A tracker that lies: every announce is answered with `interval_secs = u64::MAX` and
/// thousands of peers, fake "origins" among them, all at `hole` (which takes connections
/// and drops them) or at addresses nobody can dial, in an answer short enough to be read
/// (so the clamps, not the length bound, deal with it); metainfo of `small` says it is longer
/// than it is; any other metainfo is 503.
struct HostileTracker {
    url: String,
    announces: Arc<AtomicUsize>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Hostile {
    hole: SocketAddr,
    small: Metainfo,
    announces: Arc<AtomicUsize>,
}

async fn hostile_announce(State(h): State<Hostile>) -> Response {
    h.announces.fetch_add(1, Ordering::SeqCst);
    let mut peers: Vec<PeerInfo> = (0..1500u32)
        .map(|i| {
            let mut id = [0xab; 20];
            id[..4].copy_from_slice(&i.to_be_bytes());
            PeerInfo {
                peer_id: PeerId(id),
                addr: h.hole,
                complete: true,
                origin: i % 2 == 0,
            }
        })
        .collect();
    for addr in ["0.0.0.0:7001", "255.255.255.255:7001", "127.0.0.1:0"] {
        peers.insert(
            0,
            PeerInfo {
                peer_id: PeerId::random(),
                addr: addr.parse().unwrap(),
                complete: true,
                origin: true,
            },
        );
    }
    let body = serde_json::to_vec(&AnnounceResponse {
        peers,
        interval_secs: u64::MAX,
    })
    .unwrap();
    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn hostile_metainfo(State(h): State<Hostile>, Path(digest): Path<String>) -> Response {
    if digest == h.small.digest().to_string() {
        return h.small.encode().into_response();
    }
    http::StatusCode::SERVICE_UNAVAILABLE.into_response()
}

impl HostileTracker {
    async fn start(small: Metainfo) -> HostileTracker {
        let stop = CancellationToken::new();
        // The hole: accepts and hangs up at once.
        let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hole_addr = hole.local_addr().unwrap();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    r = hole.accept() => drop(r),
                }
            }
        });
        let announces = Arc::new(AtomicUsize::new(0));
        let state = Hostile {
            hole: hole_addr,
            small,
            announces: Arc::clone(&announces),
        };
        let app = Router::new()
            .route("/v1/announce", post(hostile_announce))
            .route("/v1/metainfo/{digest}", get(hostile_metainfo))
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
        HostileTracker {
            url,
            announces,
            stop,
        }
    }
}

impl Drop for HostileTracker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn get_blob(agent: &str, digest: &Digest, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut req = http().get(format!("{agent}/v2/lib/x/blobs/{digest}"));
    if let Some(r) = range {
        req = req.header(http::header::RANGE, r);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.bytes().await.unwrap().to_vec())
}

async fn ready(agent: &str) -> u16 {
    http()
        .get(format!("{agent}/ready"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_tracker_with_endless_intervals_absurd_peer_counts_and_lying_lengths_leaves_the_agent_serving_from_the_origins()
 {
    let origins = TestCluster::builder(2).replicas(2).start().await;
    let small = noise(1, 5000);
    let large = noise(2, 3 << 20);
    let small_d = origins.push(&small).await;
    let large_d = origins.push(&large).await;
    origins.settle().await;

    // The small blob's metainfo claims 60,000 bytes (still "small", so it comes straight
    // from an origin), with the right digest.
    let claimed = 60_000u64;
    let pl = piece_length_for(claimed);
    let pieces = claimed.div_ceil(u64::from(pl)) as usize;
    let lie = Metainfo::new(small_d, claimed, pl, vec![[0u8; 32]; pieces]).unwrap();
    let tracker = HostileTracker::start(lie).await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = agent_config(dir.path(), &origins, None);
    config.tracker = tracker.url.clone();
    let agent = TestAgent::start(config).await;

    // The lying length: the whole blob, its true length, and a range past its real end.
    let (status, body) = get_blob(&agent.url, &small_d, None).await;
    assert_eq!(status, 200);
    assert_eq!(body, small);
    let (status, body) = get_blob(&agent.url, &small_d, Some("bytes=100-199")).await;
    assert_eq!((status, body.as_slice()), (206, &small[100..200]));
    let (status, _) = get_blob(&agent.url, &small_d, Some("bytes=50000-50100")).await;
    assert_eq!(status, 416, "past the real end, whatever the metainfo said");

    // A swarm blob: the tracker answers every announce with an endless interval and
    // thousands of useless peers; the agent still gets the blob from the origins.
    let (status, body) = get_blob(&agent.url, &large_d, None).await;
    assert_eq!(status, 200);
    assert!(body == large, "the large blob arrived intact");
    assert!(tracker.announces.load(Ordering::SeqCst) >= 1);
    assert!(
        agent.metric(
            "shoal_agent_peer_bytes_received_total",
            &["source=\"origin\""]
        ) >= large.len() as f64
    );

    // The swarm is alive after all that (an endless interval once killed it), and /ready
    // says so truthfully.
    assert_eq!(ready(&agent.url).await, 200);
    let more = noise(3, 2 << 20);
    let more_d = origins.push(&more).await;
    let (status, body) = get_blob(&agent.url, &more_d, None).await;
    assert_eq!(status, 200);
    assert!(body == more);
    assert!(agent.agent.node().stats(more_d).await.is_some());
    assert_eq!(ready(&agent.url).await, 200);

    agent.stop().await;
    origins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_whose_tracker_is_down_still_pulls_from_the_origins_and_keeps_asking_it() {
    let origins = TestCluster::builder(2).replicas(1).start().await;
    let large = noise(7, 3 << 20);
    let d = origins.push(&large).await;
    origins.settle().await;

    // Nothing listens at the tracker's address: bind a port and let it go.
    let tracker_addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = agent_config(dir.path(), &origins, None);
    config.tracker = format!("http://{tracker_addr}");
    let agent = TestAgent::start(config).await;

    let (status, body) = get_blob(&agent.url, &d, None).await;
    assert_eq!(status, 200);
    assert!(body == large, "the blob arrived intact");
    assert!(
        agent.metric(
            "shoal_agent_peer_bytes_received_total",
            &["source=\"origin\""]
        ) >= large.len() as f64
    );
    assert_eq!(ready(&agent.url).await, 200);

    // The tracker comes up where it was expected: the seeding agent announces to it.
    let listener = TcpListener::bind(tracker_addr).await.unwrap();
    let tracker_config = shoal_tracker::Config {
        listen: tracker_addr,
        origins: origins.urls(),
        replicas: 1,
        insecure: true,
        tls: shoal_core::tls::TlsConfig::plaintext(),
        ..shoal_tracker::Config::default()
    };
    let tracker = TestTracker::start_on(tracker_config, listener).await;
    wait_until(
        "the agent announces to the tracker that came back",
        Duration::from_secs(30),
        || {
            let n = tracker.metric("shoal_tracker_announces_total", &["result=\"recorded\""]);
            async move { n >= 1.0 }
        },
    )
    .await;
    tracker.stop().await;
    agent.stop().await;
    origins.shutdown().await;
}
