//! The tracker over TLS: it serves HTTPS with its certificate, and a client that does not
//! trust the cluster's CA, or speaks plain HTTP, gets nothing.
#![allow(clippy::unwrap_used)]

mod support;

use shoal_core::testing::TestPki;
use shoal_core::tls::Tls;
use shoal_tracker::testing::{TestTracker, tls_config};
use support::TOKEN;

#[tokio::test]
async fn the_tracker_serves_https_to_those_who_trust_its_ca_only() {
    let pki = TestPki::new();
    let tracker =
        TestTracker::start(tls_config(vec!["https://127.0.0.1:9".into()], TOKEN, &pki)).await;
    assert!(tracker.url.starts_with("https://"), "{}", tracker.url);
    let ours = Tls::from_config(&pki.client()).unwrap();
    let http = shoal_core::tls::client_builder(ours.as_ref())
        .unwrap()
        .build()
        .unwrap();
    let res = http
        .get(format!("{}/health", tracker.url))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());

    let stranger = TestPki::new();
    let theirs = Tls::from_config(&stranger.client()).unwrap();
    let http = shoal_core::tls::client_builder(theirs.as_ref())
        .unwrap()
        .build()
        .unwrap();
    let err = http
        .get(format!("{}/health", tracker.url))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("InvalidCertificate"), "{err:?}");

    let plain = shoal_core::tls::client()
        .get(format!("http://{}/health", tracker.addr))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "{plain:?}"
    );
    tracker.stop().await;
}
