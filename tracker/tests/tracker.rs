//! The tracker as its callers see it: over HTTP, in process where that is enough and on real
//! sockets where addresses and concurrency matter.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use shoal_core::error::ErrorEnvelope;
use shoal_core::origin_client::blob_key;
use shoal_core::peer::{AnnounceRequest, AnnounceResponse, PeerId};
use shoal_core::ring::Ring;
use shoal_core::{Digest, ErrorCode, Metainfo};
use shoal_tracker::{App, Config};
use support::{FakeOrigin, RunningTracker, TOKEN, authed, client_from, metric, wait_until};
use tower::ServiceExt;

fn config(origins: Vec<String>) -> Config {
    let mut c = Config {
        origins,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.credentials.read_token = shoal_core::auth::Secret::new(TOKEN);
    c
}

/// A tracker whose origins are never asked (no background tasks run unless a test starts
/// them), for in-process tests of the announce path.
fn offline(config_edit: impl FnOnce(&mut Config)) -> App {
    let mut c = config(vec!["http://127.0.0.1:9".into()]);
    config_edit(&mut c);
    App::new(&c, prometheus::Registry::new()).unwrap()
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (
        status,
        headers,
        res.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn post_from(source: SocketAddr, body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::post("/v1/announce")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(body.into())
        .unwrap();
    req.extensions_mut().insert(ConnectInfo(source));
    req
}

fn announce_req(digest: Digest, id: PeerId, port: u16, complete: bool) -> AnnounceRequest {
    AnnounceRequest {
        digest,
        peer_id: id,
        port,
        complete,
        addr: None,
    }
}

async fn announce_in(app: &Router, source: SocketAddr, req: &AnnounceRequest) -> AnnounceResponse {
    let (status, _, body) = call(app, post_from(source, serde_json::to_vec(req).unwrap())).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn error_code(body: &[u8]) -> ErrorCode {
    let env: ErrorEnvelope = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "not an error envelope ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    env.errors[0].code
}

fn src(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 40000))
}

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
        if metric(&metrics().await, "shoal_tracker_expired_total") == Some(3.0) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let m = metrics().await;
    assert_eq!(metric(&m, "shoal_tracker_expired_total"), Some(3.0), "{m}");
    assert_eq!(metric(&m, "shoal_tracker_swarms"), Some(0.0));
    assert_eq!(metric(&m, "shoal_tracker_peers"), Some(0.0));
    stop.cancel();
    expiry.await.unwrap();
}

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
    let tracker = RunningTracker::start(c).await;
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

    let m = http
        .get(format!("{}/metrics", tracker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&m, "shoal_tracker_origins_up"), Some(3.0), "{m}");
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
    let tracker = RunningTracker::start(c).await;
    let http = authed();
    let url = format!("{}/v1/metainfo/{d}", tracker.url);
    let metrics = || {
        let http = http.clone();
        let url = format!("{}/metrics", tracker.url);
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };

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
    wait_until("all 32 askers missed the cache", || async {
        metric(
            &metrics().await,
            "shoal_tracker_metainfo_cache_misses_total",
        ) == Some(32.0)
    })
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
    let m = metrics().await;
    assert_eq!(
        metric(&m, "shoal_tracker_metainfo_cache_hits_total"),
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
    let tracker = RunningTracker::start(c).await;
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
    let tracker = RunningTracker::start(c).await;
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

#[test]
fn the_binary_refuses_a_bad_config_with_ex_config() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal-tracker"))
        .args(["--replicas", "0"])
        .env_remove("SHOAL_TRACKER_ORIGINS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(shoal_core::config::EX_CONFIG));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("origins") && err.contains("replicas"), "{err}");
}

#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/tracker.toml");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shoal-tracker"))
        .args([
            "--config",
            example,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--origins", "http://127.0.0.1:9", "--log", "error"])
        .env("SHOAL_TRACKER_ORIGIN_REFRESH", "1s")
        .env("SHOAL_TRACKER_CREDENTIALS__READ_TOKEN", TOKEN)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = authed();
    let url = format!("http://127.0.0.1:{port}");
    wait_until("the binary answers /health", || async {
        matches!(http.get(format!("{url}/health")).send().await, Ok(r) if r.status().is_success())
    })
    .await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

/// An announce to a tracker on a real socket, from `http`'s source address.
async fn announce_over(
    http: &reqwest::Client,
    tracker: &RunningTracker,
    req: &AnnounceRequest,
) -> reqwest::Response {
    http.post(format!("{}/v1/announce", tracker.url))
        .json(req)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_announce_or_metainfo_request_without_the_read_token_gets_401() {
    let origin = FakeOrigin::start(7100, &[]).await;
    let write = "write-token-of-the-whole-cluster";
    let mut c = config(vec![origin.url.clone()]);
    c.replicas = 1;
    c.credentials.write_token = shoal_core::auth::Secret::new(write);
    let tracker = RunningTracker::start(c).await;
    let d = Digest::sha256_of(b"layer");
    let anonymous = client_from(None, None);
    let wrong = client_from(None, Some("not-the-read-token-at-all"));
    let lying = AnnounceRequest {
        addr: Some("10.66.66.66".parse().unwrap()),
        ..announce_req(d, PeerId([6; 20]), 6666, true)
    };

    for (who, http) in [("no token", &anonymous), ("a wrong token", &wrong)] {
        let res = announce_over(http, &tracker, &lying).await;
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "announce with {who}"
        );
        assert!(
            res.headers()[http::header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer "),
            "{who}"
        );
        assert_eq!(
            error_code(&res.bytes().await.unwrap()),
            ErrorCode::Unauthorized
        );
        let res = http
            .get(format!("{}/v1/metainfo/{d}", tracker.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "metainfo with {who}"
        );
    }
    // A token in another scheme is no token.
    let res = anonymous
        .post(format!("{}/v1/announce", tracker.url))
        .header(http::header::AUTHORIZATION, format!("Basic {TOKEN}"))
        .json(&lying)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        origin.requests(),
        0,
        "nothing was asked of the origins for them"
    );

    // Nothing was recorded: a peer with the token sees only the origin.
    let res = announce_over(
        &authed(),
        &tracker,
        &announce_req(d, PeerId([1; 20]), 7001, false),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let peers = res.json::<AnnounceResponse>().await.unwrap().peers;
    assert_eq!(peers.len(), 1);
    assert!(peers[0].origin);
    // The write token passes too; the ops endpoints stay open.
    let with_write = client_from(None, Some(write));
    let res = announce_over(
        &with_write,
        &tracker,
        &announce_req(d, PeerId([2; 20]), 7002, true),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    for path in ["/health", "/ready", "/metrics"] {
        let res = anonymous
            .get(format!("{}{path}", tracker.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let m = anonymous
        .get(format!("{}/metrics", tracker.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&m, "shoal_tracker_unauthorized_total"),
        Some(5.0),
        "{m}"
    );
    tracker.stop().await;
}

#[tokio::test]
async fn a_tracker_without_a_read_token_refuses_to_start_unless_insecure() {
    let mut c = config(vec!["http://127.0.0.1:9".into()]);
    c.credentials.read_token = shoal_core::auth::Secret::default();
    let err = App::new(&c, prometheus::Registry::new()).err().unwrap();
    assert!(
        matches!(err, shoal_tracker::TrackerError::NoCredentials),
        "{err}"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = shoal_tracker::run(
        c.clone(),
        listener,
        prometheus::Registry::new(),
        tokio_util::sync::CancellationToken::new(),
    );
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap(),
        Err(shoal_tracker::TrackerError::NoCredentials)
    ));

    // Said in so many words, it serves anyone.
    c.insecure = true;
    let tracker = RunningTracker::start(c).await;
    let res = announce_over(
        &client_from(None, None),
        &tracker,
        &announce_req(Digest::sha256_of(b"x"), PeerId([1; 20]), 7001, false),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    tracker.stop().await;

    // The binary refuses the example config without a token, naming the key.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/tracker.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal-tracker"))
        .args(["--config", example, "--check-config"])
        .env_remove("SHOAL_TRACKER_CREDENTIALS__READ_TOKEN")
        .env_remove("SHOAL_TRACKER_INSECURE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(shoal_core::config::EX_CONFIG));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("credentials.read_token"), "{err}");
}

#[tokio::test]
async fn three_hundred_announce_ids_from_one_address_are_capped_while_other_hosts_open_swarms() {
    let origin = FakeOrigin::start(7100, &[]).await;
    let mut c = config(vec![origin.url.clone()]);
    c.replicas = 1;
    // Room for 100 swarms in all, 40 entries for any one address.
    c.table.max_swarms = 100;
    c.table.max_entries_per_source = 40;
    let tracker = RunningTracker::start(c).await;
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
    let tracker = RunningTracker::start(c).await;
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
