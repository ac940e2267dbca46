//! Who may use the tracker: announces and metainfo requests need the read token (or the
//! write token), the ops endpoints stay open, and a tracker without a read token refuses to
//! start unless it is told it may; the binary turns a bad config into exit 64.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use http::StatusCode;
use shoal_core::peer::{AnnounceRequest, AnnounceResponse, PeerId};
use shoal_core::testing::{metric_value, metrics_text};
use shoal_core::{Digest, ErrorCode};
use shoal_tracker::App;
use shoal_tracker::testing::TestTracker;
use support::*;

#[tokio::test]
async fn an_announce_or_metainfo_request_without_the_read_token_gets_401() {
    let origin = FakeOrigin::start(7100, &[]).await;
    let write = "write-token-of-the-whole-cluster";
    let mut c = config(vec![origin.url.clone()]);
    c.replicas = 1;
    c.credentials.write_token = shoal_core::auth::Secret::new(write);
    let tracker = TestTracker::start(c).await;
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
    let m = metrics_text(&tracker.registry);
    assert_eq!(
        metric_value(&m, "shoal_tracker_unauthorized_total"),
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
    let tracker = TestTracker::start(c).await;
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
