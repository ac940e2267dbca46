//! The announce path as peers see it: malformed announces and unknown paths get their
//! errors, source addresses are handed out (announced ones only when trusted, and never one
//! nobody can dial), bounds answer 429 or 503, missed intervals expire peers, and one host's
//! flood of ids takes no room from the others.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::json;
use shoal_core::peer::{AnnounceRequest, AnnounceResponse, PeerId};
use shoal_core::testing::metric_value;
use shoal_core::{Digest, ErrorCode};
use shoal_tracker::testing::TestTracker;
use support::*;

#[tokio::test]
async fn malformed_announces_get_a_clear_400_and_store_nothing() {
    let t = offline(|_| {});
    let app = t.router();
    let d = Digest::sha256_of(b"blob");
    let good = serde_json::to_value(announce_req(d, PeerId([1; 20]), 7001, false)).unwrap();
    let with = |k: &str, v: serde_json::Value| {
        let mut j = good.clone();
        j[k] = v;
        j.to_string()
    };
    let cases: Vec<(String, StatusCode, ErrorCode, &str)> = vec![
        (
            "not json".into(),
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            "malformed",
        ),
        (
            "{}".into(),
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            "missing field",
        ),
        (
            with("digest", json!("sha256:xyz")),
            StatusCode::BAD_REQUEST,
            ErrorCode::DigestInvalid,
            "digest",
        ),
        (
            with("peer_id", json!("short")),
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            "peer_id",
        ),
        (
            with("port", json!(0)),
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            "port",
        ),
        (
            with("port", json!(70000)),
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            "port",
        ),
        (
            with("complete", json!("yes")),
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            "complete",
        ),
        (
            with("addr", json!("not-an-ip")),
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            "addr",
        ),
        (
            with("surprise", json!(1)),
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            "surprise",
        ),
        (
            format!("{good} {good}"),
            StatusCode::BAD_REQUEST,
            ErrorCode::Unsupported,
            "trailing",
        ),
        (
            "x".repeat(100_000),
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::SizeInvalid,
            "length limit",
        ),
    ];
    for (body, status, code, needle) in cases {
        let (got, _, res) = call(&app, post_from(src(1), body.clone())).await;
        assert_eq!(got, status, "{body:.80}");
        assert_eq!(error_code(&res), code, "{body:.80}");
        let message = String::from_utf8_lossy(&res);
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    // Nothing was recorded: the next peer of that blob finds nobody.
    let res = announce_in(&app, src(2), &announce_req(d, PeerId([2; 20]), 7002, false)).await;
    assert!(res.peers.is_empty(), "{:?}", res.peers);
    let (_, _, metrics) = call(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("shoal_tracker_announces_total{result=\"invalid\"} 11"),
        "{metrics}"
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_envelope() {
    let app = offline(|_| {}).router();
    let (status, _, body) = call(&app, Request::get("/v1/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), ErrorCode::Unsupported);
    // A known path is checked for the token before anything else.
    let (status, _, _) = call(
        &app,
        Request::get("/v1/announce").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = call(
        &app,
        Request::get("/v1/announce")
            .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body:?}");
    assert_eq!(error_code(&body), ErrorCode::Unsupported);
    let (status, _, _) = call(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_source_address_is_used_unless_announced_addresses_are_trusted() {
    let d = Digest::sha256_of(b"blob");
    let claimed = announce_req(d, PeerId([1; 20]), 7001, true);
    let claimed = AnnounceRequest {
        addr: Some("192.168.9.9".parse().unwrap()),
        ..claimed
    };
    let asker = announce_req(d, PeerId([2; 20]), 7002, false);

    let app = offline(|_| {}).router();
    announce_in(&app, src(1), &claimed).await;
    let res = announce_in(&app, src(2), &asker).await;
    assert_eq!(res.peers[0].addr, "10.0.0.1:7001".parse().unwrap());
    assert_eq!(res.interval_secs, 3);

    let app = offline(|c| c.trust_announced_addr = true).router();
    announce_in(&app, src(1), &claimed).await;
    let res = announce_in(&app, src(2), &asker).await;
    assert_eq!(res.peers[0].addr, "192.168.9.9:7001".parse().unwrap());
    // Trusted or not, an address nobody can dial is refused.
    let unspecified = AnnounceRequest {
        addr: Some("0.0.0.0".parse().unwrap()),
        ..asker.clone()
    };
    let (status, _, _) = call(
        &app,
        post_from(src(3), serde_json::to_vec(&unspecified).unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A dual-stack listener's IPv4-mapped source is handed out as plain IPv4.
    let app = offline(|_| {}).router();
    let mapped: SocketAddr = "[::ffff:10.1.2.3]:5555".parse().unwrap();
    announce_in(&app, mapped, &announce_req(d, PeerId([1; 20]), 7001, true)).await;
    let res = announce_in(&app, src(2), &asker).await;
    assert_eq!(res.peers[0].addr, "10.1.2.3:7001".parse().unwrap());
}

#[tokio::test]
async fn bounds_answer_with_too_many_requests() {
    let app = offline(|c| {
        c.table.max_swarms = 1;
        c.table.max_entries_per_source = 1;
    })
    .router();
    let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
    announce_in(&app, src(1), &announce_req(a, PeerId([1; 20]), 7001, false)).await;

    // The table is full for everyone: 503, try again in an interval.
    let req = announce_req(b, PeerId([2; 20]), 7002, false);
    let (status, headers, body) =
        call(&app, post_from(src(2), serde_json::to_vec(&req).unwrap())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), ErrorCode::TooManyRequests);
    assert_eq!(headers[http::header::RETRY_AFTER], "3");

    // One address holding too many entries: 429 for that address alone, whatever id it
    // says it is.
    let app = offline(|c| c.table.max_entries_per_source = 1).router();
    announce_in(&app, src(1), &announce_req(a, PeerId([1; 20]), 7001, false)).await;
    let req = announce_req(b, PeerId([3; 20]), 7001, false);
    let (status, _, body) = call(&app, post_from(src(1), serde_json::to_vec(&req).unwrap())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&body), ErrorCode::TooManyRequests);
    announce_in(&app, src(2), &announce_req(b, PeerId([2; 20]), 7002, false)).await;
}

#[tokio::test(start_paused = true)]
async fn peers_expire_after_missed_intervals() {
    let t = offline(|_| {});
    let app = t.router();
    let stop = tokio_util::sync::CancellationToken::new();
    let expiry = t.spawn_expiry(stop.clone());
    let d = Digest::sha256_of(b"blob");
    let (a, b, c) = (PeerId([1; 20]), PeerId([2; 20]), PeerId([3; 20]));

    announce_in(&app, src(1), &announce_req(d, a, 7001, true)).await;
    let res = announce_in(&app, src(2), &announce_req(d, b, 7002, false)).await;
    assert_eq!(res.peers.len(), 1);

    // a keeps announcing every interval; b stops.
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(3)).await;
        announce_in(&app, src(1), &announce_req(d, a, 7001, true)).await;
    }
    let res = announce_in(&app, src(3), &announce_req(d, c, 7003, false)).await;
    let ids: Vec<PeerId> = res.peers.iter().map(|p| p.peer_id).collect();
    assert_eq!(ids, vec![a], "b missed three intervals");

    // Everyone stops: the sweep empties the table.
    tokio::time::advance(Duration::from_secs(10)).await;
    let metrics = || async {
        let (_, _, m) = call(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
        String::from_utf8_lossy(&m).into_owned()
    };
    for _ in 0..100 {
        if metric_value(&metrics().await, "shoal_tracker_expired_total") == Some(3.0) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let m = metrics().await;
    assert_eq!(
        metric_value(&m, "shoal_tracker_expired_total"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(metric_value(&m, "shoal_tracker_swarms"), Some(0.0));
    assert_eq!(metric_value(&m, "shoal_tracker_peers"), Some(0.0));
    stop.cancel();
    expiry.await.unwrap();
}

#[tokio::test]
async fn three_hundred_announce_ids_from_one_address_are_capped_while_other_hosts_open_swarms() {
    let origin = FakeOrigin::start(7100, &[]).await;
    let mut c = config(vec![origin.url.clone()]);
    c.replicas = 1;
    // Room for 100 swarms in all, 40 entries for any one address.
    c.table.max_swarms = 100;
    c.table.max_entries_per_source = 40;
    let tracker = TestTracker::start(c).await;
    let attacker = client_from(Some("127.0.0.1".parse().unwrap()), Some(TOKEN));

    // 300 self-chosen ids from one address, each opening a swarm of its own.
    let mut answered = 0;
    let mut refused = 0;
    for i in 0..300u32 {
        let mut id = [0xee; 20];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let req = announce_req(
            Digest::sha256_of(format!("attack {i}").as_bytes()),
            PeerId(id),
            7001,
            false,
        );
        let res = announce_over(&attacker, &tracker, &req).await;
        match res.status() {
            StatusCode::OK => answered += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(
                    error_code(&res.bytes().await.unwrap()),
                    ErrorCode::TooManyRequests
                );
                refused += 1;
            }
            s => panic!("announce {i}: {s}"),
        }
    }
    assert_eq!((answered, refused), (40, 260));

    // Real hosts, each from its own address, still open new swarms and find each other.
    let d = Digest::sha256_of(b"a real layer");
    for (n, host) in ["127.0.0.2", "127.0.0.3"].into_iter().enumerate() {
        let http = client_from(Some(host.parse().unwrap()), Some(TOKEN));
        let own = Digest::sha256_of(host.as_bytes());
        let res = announce_over(
            &http,
            &tracker,
            &announce_req(own, PeerId::random(), 7001, true),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "{host} opens a swarm");
        let res = announce_over(
            &http,
            &tracker,
            &announce_req(d, PeerId::random(), 7001, true),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        let peers = res.json::<AnnounceResponse>().await.unwrap().peers;
        let others: Vec<SocketAddr> = peers.iter().filter(|p| !p.origin).map(|p| p.addr).collect();
        if n == 1 {
            assert_eq!(
                others,
                vec!["127.0.0.2:7001".parse::<SocketAddr>().unwrap()]
            );
        }
    }
    tracker.stop().await;
}

#[tokio::test]
async fn an_announced_loopback_or_metadata_address_is_not_handed_out() {
    let origin = FakeOrigin::start(7100, &[]).await;
    let mut c = config(vec![origin.url.clone()]);
    c.replicas = 1;
    c.trust_announced_addr = true;
    let tracker = TestTracker::start(c).await;
    let http = authed();
    let d = Digest::sha256_of(b"layer");
    for (i, addr) in [
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "169.254.169.254",
        "fd00:ec2::254",
        "fe80::1",
        "0.0.0.0",
        "255.255.255.255",
        "239.1.2.3",
    ]
    .into_iter()
    .enumerate()
    {
        let req = AnnounceRequest {
            addr: Some(addr.parse().unwrap()),
            ..announce_req(d, PeerId([i as u8 + 1; 20]), 7001, true)
        };
        let res = announce_over(&http, &tracker, &req).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{addr}");
        let body = res.bytes().await.unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains("not an address the tracker hands out"),
            "{addr}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // An address peers can use is still honoured.
    let good = AnnounceRequest {
        addr: Some("10.9.9.9".parse().unwrap()),
        ..announce_req(d, PeerId([99; 20]), 7001, true)
    };
    assert_eq!(
        announce_over(&http, &tracker, &good).await.status(),
        StatusCode::OK
    );
    let res = announce_over(
        &http,
        &tracker,
        &announce_req(d, PeerId([100; 20]), 7002, false),
    )
    .await;
    let peers = res.json::<AnnounceResponse>().await.unwrap().peers;
    let handed: Vec<SocketAddr> = peers.iter().filter(|p| !p.origin).map(|p| p.addr).collect();
    assert_eq!(handed, vec!["10.9.9.9:7001".parse::<SocketAddr>().unwrap()]);
    tracker.stop().await;
}
