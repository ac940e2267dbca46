//! The tracker and its origins, on real sockets: the owning origins are handed out with the
//! peers, complete peers first; concurrent metainfo requests cause one fetch from the
//! origins and later ones are answered from the cache; origins that are down are tolerated.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use shoal_core::origin_client::blob_key;
use shoal_core::peer::{AnnounceRequest, AnnounceResponse, PeerId};
use shoal_core::ring::Ring;
use shoal_core::testing::{metric_value, metrics_text, wait_until};
use shoal_core::{Digest, ErrorCode, Metainfo};
use shoal_tracker::testing::TestTracker;
use support::*;

#[tokio::test]
async fn two_peers_find_each_other_and_the_owning_origins() {
    let origins = [
        FakeOrigin::start(7100, &[]).await,
        FakeOrigin::start(7101, &[]).await,
        FakeOrigin::start(7102, &[]).await,
    ];
    let urls: Vec<String> = origins.iter().map(|o| o.url.clone()).collect();
    let mut c = config(urls.clone());
    c.replicas = 2;
    let tracker = TestTracker::start(c).await;
    let http = authed();
    let d = Digest::sha256_of(b"layer");

    let owners: Vec<PeerId> = Ring::new(urls.clone())
        .owners(&blob_key(&d), 2)
        .into_iter()
        .map(|u| origins.iter().find(|o| &o.url == u).unwrap().peer_id)
        .collect();
    let announce = |req: AnnounceRequest| {
        let http = http.clone();
        let url = format!("{}/v1/announce", tracker.url);
        async move {
            let res = http.post(url).json(&req).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<AnnounceResponse>().await.unwrap()
        }
    };
    let (a, b) = (PeerId::random(), PeerId::random());

    // Before anyone else: only the owning origins, in ring order, as origins.
    let first = announce(announce_req(d, a, 7001, false)).await;
    assert_eq!(
        first.peers.iter().map(|p| p.peer_id).collect::<Vec<_>>(),
        owners
    );
    for p in &first.peers {
        let o = origins.iter().find(|o| o.peer_id == p.peer_id).unwrap();
        assert_eq!(p.addr, SocketAddr::from(([127, 0, 0, 1], o.peer_port)));
        assert!(p.origin && p.complete);
    }

    // b joins with the whole blob and learns of a, then the origins.
    let second = announce(announce_req(d, b, 7002, true)).await;
    assert_eq!(second.peers.len(), 3);
    assert_eq!(second.peers[0].peer_id, a);
    assert_eq!(second.peers[0].addr, "127.0.0.1:7001".parse().unwrap());
    assert!(!second.peers[0].complete && !second.peers[0].origin);
    assert!(second.peers[1..].iter().all(|p| p.origin));

    // a, announcing again, sees b first: complete peers before origins.
    let again = announce(announce_req(d, a, 7001, false)).await;
    assert_eq!(again.peers[0].peer_id, b);
    assert!(again.peers[0].complete && !again.peers[0].origin);
    assert_eq!(again.peers.len(), 3);

    let m = metrics_text(&tracker.registry);
    assert_eq!(
        metric_value(&m, "shoal_tracker_origins_up"),
        Some(3.0),
        "{m}"
    );
    assert!(
        m.contains("shoal_tracker_announces_total{result=\"recorded\"} 3"),
        "{m}"
    );
    assert!(m.contains("shoal_tracker_handout_size_count 3"), "{m}");
    tracker.stop().await;
}

#[tokio::test]
async fn concurrent_metainfo_requests_cause_one_origin_fetch() {
    let blob = vec![7u8; 3 << 20];
    let meta = Metainfo::from_bytes(&blob);
    let d = meta.digest();
    let origin = FakeOrigin::start(7100, std::slice::from_ref(&meta)).await;
    let mut c = config(vec![origin.url.clone()]);
    c.replicas = 1;
    let tracker = TestTracker::start(c).await;
    let http = authed();
    let url = format!("{}/v1/metainfo/{d}", tracker.url);

    origin.hold(true);
    let askers: Vec<_> = (0..32)
        .map(|_| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let res = http.get(url).send().await.unwrap();
                assert_eq!(res.status(), StatusCode::OK);
                assert_eq!(
                    res.headers()[http::header::CONTENT_TYPE],
                    "application/octet-stream"
                );
                res.bytes().await.unwrap()
            })
        })
        .collect();
    // Every asker is waiting on the one fetch before the origin answers it.
    wait_until(
        "all 32 askers missed the cache",
        Duration::from_secs(10),
        || async { tracker.metric("shoal_tracker_metainfo_cache_misses_total", &[]) == 32.0 },
    )
    .await;
    assert_eq!(origin.requests(), 1);
    origin.hold(false);
    for a in askers {
        let body = a.await.unwrap();
        assert_eq!(Metainfo::decode(&body).unwrap(), meta);
    }
    assert_eq!(origin.requests(), 1);
    // The tracker presents the read token to the origins.
    assert_eq!(
        *origin.metainfo_auth.lock().unwrap(),
        vec![Some(format!("Bearer {TOKEN}"))]
    );

    // Later askers are answered from the cache.
    let body = http.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(body, meta.encode());
    assert_eq!(origin.requests(), 1);
    let m = metrics_text(&tracker.registry);
    assert_eq!(
        metric_value(&m, "shoal_tracker_metainfo_cache_hits_total"),
        Some(1.0),
        "{m}"
    );

    // An unknown blob is 404 BLOB_UNKNOWN (and not cached: the origins are asked again);
    // a malformed digest is 400 DIGEST_INVALID.
    let unknown = Digest::sha256_of(b"nobody has this");
    for _ in 0..2 {
        let res = http
            .get(format!("{}/v1/metainfo/{unknown}", tracker.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            error_code(&res.bytes().await.unwrap()),
            ErrorCode::BlobUnknown
        );
    }
    assert_eq!(origin.requests(), 3);
    let res = http
        .get(format!("{}/v1/metainfo/sha256:nothex", tracker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_code(&res.bytes().await.unwrap()),
        ErrorCode::DigestInvalid
    );
    tracker.stop().await;
}

#[tokio::test]
async fn origins_that_are_down_are_tolerated() {
    let up = FakeOrigin::start(7100, &[]).await;
    // Nothing listens here: bind a port and let it go.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut c = config(vec![down.clone(), up.url.clone()]);
    c.replicas = 1;
    let tracker = TestTracker::start(c).await;
    let http = authed();
    // Whichever origin the ring prefers, the one that is up owns every blob now.
    for i in 0..8u8 {
        let req = announce_req(Digest::sha256_of(&[i]), PeerId::random(), 7001, false);
        let res: AnnounceResponse = http
            .post(format!("{}/v1/announce", tracker.url))
            .json(&req)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(res.peers.len(), 1);
        assert_eq!(res.peers[0].peer_id, up.peer_id);
    }
    tracker.stop().await;

    // With no origin reachable, the tracker still serves; metainfo is 503 UNAVAILABLE.
    let mut c = config(vec![down]);
    c.replicas = 1;
    let tracker = TestTracker::start(c).await;
    let res = http
        .get(format!(
            "{}/v1/metainfo/{}",
            tracker.url,
            Digest::sha256_of(b"x")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        error_code(&res.bytes().await.unwrap()),
        ErrorCode::Unavailable
    );
    tracker.stop().await;
}
