//! The referrers index across three origins: written through any origin, listed the same
//! through every one, kept on its owners, still listed when one owner is down, and
//! deleted with a tombstone that older copies cannot undo.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use shoal_core::origin_client::{Referrer, referrers_key};
use shoal_core::testing::wait_until;
use shoal_core::{Digest, RepoName};
use shoal_origin::testing::TestCluster;

const WAIT: Duration = Duration::from_secs(20);

fn referrer(payload: &[u8], artifact_type: &str) -> Referrer {
    Referrer {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: Digest::sha256_of(payload),
        size: payload.len() as u64,
        artifact_type: Some(artifact_type.into()),
        annotations: None,
    }
}

async fn listed_by(
    auth: &reqwest::Client,
    base: &str,
    name: &RepoName,
    subject: &Digest,
) -> Vec<Referrer> {
    let res = auth
        .get(format!("{base}/v1/referrers/{name}@{subject}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    serde_json::from_value(body["referrers"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_are_kept_like_tags() {
    let mut cluster = TestCluster::builder(3).replicas(2).start().await;
    let auth = cluster.http();
    let client = cluster.client();
    let name: RepoName = "team/app".parse().unwrap();
    let subject = Digest::sha256_of(b"the image");
    let sbom = referrer(b"sbom manifest", "application/vnd.example.sbom");
    let sig = referrer(b"signature manifest", "application/vnd.example.sig");
    client.put_referrer(&name, &subject, &sbom).await.unwrap();
    client.put_referrer(&name, &subject, &sig).await.unwrap();
    // Idempotent.
    client.put_referrer(&name, &subject, &sig).await.unwrap();
    let mut both = vec![sbom.clone(), sig.clone()];
    both.sort_by_key(|r| r.digest);
    for i in 0..3 {
        assert_eq!(
            listed_by(&auth, cluster.url(i), &name, &subject).await,
            both,
            "via {i}"
        );
    }
    assert!(
        client
            .list_referrers(&"team/other".parse().unwrap(), &subject)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        client
            .list_referrers(&name, &Digest::sha256_of(b"x"))
            .await
            .unwrap()
            .is_empty()
    );

    // Both owners hold the entries; with one of them down the list is whole.
    let owners = cluster.owners(&referrers_key(&name, &subject), 2);
    let other = (0..3).find(|i| !owners.contains(i)).unwrap();
    cluster.stop(owners[0]).await;
    cluster.wait_converged().await;
    wait_until("the listing survives an owner's loss", WAIT, || async {
        listed_by(&auth, cluster.url(other), &name, &subject).await == both
    })
    .await;
    cluster.restart(owners[0]).await;
    cluster.wait_converged().await;

    // A deletion is a tombstone: the entry is gone everywhere, and deleting it again is 404.
    client
        .delete_referrer(&name, &subject, &sbom.digest)
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(
            listed_by(&auth, cluster.url(i), &name, &subject).await,
            vec![sig.clone()]
        );
    }
    let e = client
        .delete_referrer(&name, &subject, &sbom.digest)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_referrer_requests() {
    let cluster = TestCluster::builder(1).replicas(1).start().await;
    let auth = cluster.http();
    let base = cluster.url(0);
    let subject = Digest::sha256_of(b"s");
    let cases = [
        (
            "PUT",
            format!("/v1/referrers/a@{subject}"),
            "not json",
            "MANIFEST_INVALID",
        ),
        (
            "PUT",
            format!("/v1/referrers/A@{subject}"),
            "{}",
            "NAME_INVALID",
        ),
        (
            "PUT",
            "/v1/referrers/a@sha256:00".to_string(),
            "{}",
            "DIGEST_INVALID",
        ),
        ("GET", "/v1/referrers/a".to_string(), "", "UNSUPPORTED"),
        (
            "DELETE",
            format!("/v1/referrers/a@{subject}/{subject}"),
            "",
            "MANIFEST_UNKNOWN",
        ),
    ];
    for (method, path, body, code) in cases {
        let res = auth
            .clone()
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_client_error(),
            "{method} {path}: {}",
            res.status()
        );
        assert_eq!(error_code(res).await, code, "{method} {path}");
    }
    cluster.shutdown().await;
}
