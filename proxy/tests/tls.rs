//! The proxy over TLS: with a certificate of its own it serves the registry API over HTTPS
//! (a registry behind no ingress), and it reaches origins that run over TLS.
#![allow(clippy::unwrap_used)]

use shoal_core::Digest;
use shoal_core::testing::TestPki;
use shoal_proxy::testing::TestProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_https_and_stores_through_origins_over_tls() {
    let pki = TestPki::new();
    let proxy = TestProxy::start_tls(&pki).await;
    assert!(proxy.url("/v2/").starts_with("https://"));
    assert!(
        proxy
            .origins
            .urls()
            .iter()
            .all(|u| u.starts_with("https://"))
    );
    let http = proxy.http();
    let res = http.get(proxy.url("/v2/")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    let blob = b"pushed over HTTPS, stored over HTTPS".repeat(100);
    let digest = Digest::sha256_of(&blob);
    let res = http
        .post(proxy.url(&format!("/v2/team/app/blobs/uploads/?digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    assert!(proxy.stored(&digest).await);
    let res = http
        .get(proxy.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), blob);

    // Plain HTTP to the same port gets nothing, and nor does a client of another CA.
    let plain = shoal_core::tls::client()
        .get(format!("http://{}/v2/", proxy.addr))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "{plain:?}"
    );
    let stranger = TestPki::new();
    let theirs = shoal_core::tls::Tls::from_config(&stranger.client()).unwrap();
    let err = shoal_core::tls::client_builder(theirs.as_ref())
        .unwrap()
        .build()
        .unwrap()
        .get(proxy.url("/v2/"))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("InvalidCertificate"), "{err:?}");
}
