//! Origins over TLS: they find each other, replicate and serve over HTTPS with certificates
//! from the cluster's CA, and a client that trusts another CA gets nothing from them.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

use shoal_core::origin_client::OriginClient;
use shoal_core::testing::TestPki;
use shoal_origin::testing::{TestCluster, client_tls};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_replicate_and_serve_over_https() {
    let pki = TestPki::new();
    let cluster = TestCluster::builder(2).replicas(2).tls(&pki).start().await;
    assert!(cluster.urls().iter().all(|u| u.starts_with("https://")));
    assert!(cluster.origin(0).peer_id() != cluster.origin(1).peer_id());

    let bytes = b"a blob that travels between origins over TLS".repeat(1000);
    let digest = cluster.push(&bytes).await;
    cluster.settle().await;
    assert_eq!(cluster.holders(&digest).await, [0, 1]);
    for i in 0..2 {
        let res = cluster
            .http()
            .get(format!("{}/v1/blobs/{digest}", cluster.url(i)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.bytes().await.unwrap(), bytes);
    }

    // Plain HTTP to the same port is no way in.
    let plain = shoal_core::tls::client()
        .get(format!(
            "http://{}/v1/blobs/{digest}",
            cluster.origin(0).local_addr()
        ))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "{plain:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trusts_another_ca_is_refused() {
    let pki = TestPki::new();
    let cluster = TestCluster::builder(1).replicas(1).tls(&pki).start().await;
    let digest = cluster
        .push(b"only for those who trust the cluster's CA")
        .await;

    let stranger = TestPki::new();
    let theirs = client_tls(&stranger);
    let client = OriginClient::new(
        &cluster.urls(),
        Some(cluster.write_token().to_owned()),
        Some(&theirs),
    )
    .unwrap();
    let err = client.stat_blob(&digest).await.unwrap_err();
    assert!(
        matches!(err, shoal_core::origin_client::OriginError::Unavailable(_)),
        "{err}"
    );
    let http = shoal_core::tls::client_builder(Some(&theirs))
        .unwrap()
        .build()
        .unwrap();
    let err = http
        .get(format!("{}/health", cluster.url(0)))
        .send()
        .await
        .unwrap_err();
    // Both test CAs bear one name: the stranger's sees a signature it cannot verify.
    let chain = format!("{err:?}");
    assert!(chain.contains("InvalidCertificate"), "{chain}");
    // The cluster's own CA is still let in.
    assert_eq!(cluster.client().stat_blob(&digest).await.unwrap(), Some(41));
}
