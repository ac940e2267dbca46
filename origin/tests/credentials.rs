//! The origins' credentials, attacked over real sockets: every write without the write
//! token (or with a wrong one, or with the read token) is refused with 401 and changes
//! nothing; reads need the read token once one is set; internal copies cannot choose an
//! absurd version; and an origin without a write token does not start unless told to.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use shoal_core::origin_client::Referrer;
use shoal_core::{Digest, RepoName, Tag};
use shoal_origin::testing::{TestCluster, TestOrigin, test_config};
use shoal_origin::{Error, Listeners};

fn descriptor(payload: &[u8]) -> Referrer {
    Referrer {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: Digest::sha256_of(payload),
        size: payload.len() as u64,
        artifact_type: Some("application/example".into()),
        annotations: None,
    }
}

/// The credentials an attacker might present: none, a made-up one, and the read token
/// (which must not be enough to write).
fn wrong_credentials(cluster: &TestCluster) -> Vec<(&'static str, reqwest::Client)> {
    vec![
        ("no token", http()),
        (
            "a wrong token",
            TestCluster::http_with_token("0123456789abcdef-not-the-token"),
        ),
        (
            "the read token",
            TestCluster::http_with_token(cluster.read_token()),
        ),
    ]
}

async fn assert_unauthorized(res: reqwest::Response, what: &str) {
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer realm="),
        "{what}: {challenge}"
    );
    assert_eq!(error_code(res).await, "UNAUTHORIZED", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_the_write_token_get_401_and_change_nothing() {
    let cluster = TestCluster::builder(3).replicas(2).start().await;
    let client = cluster.client();
    let name: RepoName = "library/nginx".parse().unwrap();
    let tag: Tag = "latest".parse().unwrap();

    // What the fleet runs today: a blob, a tag pointing at it, a referrer of it.
    let kept = random_bytes(20_000);
    let kept_digest = Digest::sha256_of(&kept);
    client
        .put_blob_bytes(&kept_digest, kept.clone().into())
        .await
        .unwrap();
    client.put_tag(&name, &tag, &kept_digest).await.unwrap();
    let signature = descriptor(b"signature");
    client
        .put_referrer(&name, &kept_digest, &signature)
        .await
        .unwrap();

    let evil = random_bytes(10_000);
    let evil_digest = Digest::sha256_of(&evil);
    let evil_tag = serde_json::json!({ "digest": evil_digest }).to_string();
    let evil_copy = serde_json::json!({ "digest": evil_digest, "version": i64::MAX }).to_string();
    let evil_referrer = serde_json::to_string(&descriptor(b"evil")).unwrap();
    let evil_referrer_copy =
        serde_json::json!({ "descriptor": descriptor(b"evil"), "version": 1 }).to_string();
    let evil_ref = descriptor(b"evil").digest;
    let sig = signature.digest;

    let writes: Vec<(Method, String, Vec<u8>)> = vec![
        (
            Method::PUT,
            format!("/v1/blobs/{evil_digest}"),
            evil.clone(),
        ),
        (
            Method::PUT,
            format!("/v1/blobs/{evil_digest}?internal=1"),
            evil.clone(),
        ),
        // Authorised before the path is parsed: no 400 tells the attacker anything.
        (Method::PUT, "/v1/blobs/not-a-digest".into(), evil.clone()),
        (
            Method::PUT,
            format!("/v1/tags/{name}:{tag}"),
            evil_tag.clone().into(),
        ),
        (
            Method::PUT,
            format!("/v1/tags/{name}:{tag}?internal=1"),
            evil_copy.clone().into(),
        ),
        (
            Method::PUT,
            format!("/v1/referrers/{name}@{kept_digest}"),
            evil_referrer.clone().into(),
        ),
        (
            Method::PUT,
            format!("/v1/referrers/{name}@{kept_digest}/{evil_ref}?internal=1"),
            evil_referrer_copy.clone().into(),
        ),
        (Method::DELETE, format!("/v1/blobs/{kept_digest}"), vec![]),
        (
            Method::DELETE,
            format!("/v1/blobs/{kept_digest}?internal=1"),
            vec![],
        ),
        (Method::DELETE, format!("/v1/tags/{name}:{tag}"), vec![]),
        (
            Method::DELETE,
            format!("/v1/referrers/{name}@{kept_digest}/{sig}"),
            vec![],
        ),
        (
            Method::POST,
            format!("/v1/blobs/{evil_digest}"),
            evil.clone(),
        ),
    ];

    for (who, http) in wrong_credentials(&cluster) {
        for i in 0..cluster.len() {
            for (method, path, body) in &writes {
                let res = http
                    .request(method.clone(), format!("{}{path}", cluster.url(i)))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_unauthorized(res, &format!("{method} {path} to origin {i} with {who}"))
                    .await;
            }
        }
    }

    // Nothing changed: the tag still resolves to the old digest, the blob is absent, the
    // referrer list is the same, nothing was deleted, no upload was even started.
    let reader = cluster.reader();
    assert_eq!(
        reader.get_tag(&name, &tag).await.unwrap(),
        Some(kept_digest)
    );
    assert!(cluster.holders(&evil_digest).await.is_empty());
    assert_eq!(reader.stat_blob(&evil_digest).await.unwrap(), None);
    assert_eq!(
        reader.get_blob_bytes(&kept_digest, 1 << 20).await.unwrap(),
        kept
    );
    assert_eq!(
        reader.list_referrers(&name, &kept_digest).await.unwrap(),
        vec![signature]
    );
    for i in 0..cluster.len() {
        assert_eq!(temp_files(&cluster.data_dir(i)), 0);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_declaring_an_absurd_length_without_a_token_is_refused_at_once() {
    use std::io::{Read, Write};
    let cluster = TestCluster::builder(1).replicas(1).start().await;
    let base = cluster.url(0).to_owned();
    let digest = Digest::sha256_of(b"x");
    let answer = tokio::task::spawn_blocking(move || {
        let addr = base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "PUT /v1/blobs/{digest} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 18446744073709551612\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut answer = vec![0u8; 4096];
        let n = s.read(&mut answer).unwrap_or(0);
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .unwrap();
    // Refused before a byte of the body is read: for its length or for the missing token.
    assert!(
        answer.starts_with("HTTP/1.1 413") || answer.starts_with("HTTP/1.1 401"),
        "{answer}"
    );
    // The origin lives and serves.
    let (status, _) = get_blob(&cluster.http(), cluster.url(0), &digest).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_without_the_read_token_get_401() {
    let cluster = TestCluster::builder(2).replicas(2).start().await;
    let client = cluster.client();
    let name: RepoName = "team/app".parse().unwrap();
    let tag: Tag = "v1".parse().unwrap();
    let data = random_bytes(5_000);
    let digest = Digest::sha256_of(&data);
    client.put_blob_bytes(&digest, data.into()).await.unwrap();
    client.put_tag(&name, &tag, &digest).await.unwrap();

    let reads = [
        format!("/v1/blobs/{digest}"),
        format!("/v1/blobs/{digest}/metainfo"),
        "/v1/blobs".to_owned(),
        format!("/v1/tags/{name}:{tag}"),
        "/v1/tags".to_owned(),
        format!("/v1/repositories/{name}/tags"),
        "/v1/repositories".to_owned(),
        format!("/v1/referrers/{name}@{digest}"),
    ];
    let strangers = [
        ("no token", http()),
        (
            "a wrong token",
            TestCluster::http_with_token("0123456789abcdef-not-the-token"),
        ),
    ];
    let holders = [
        (
            "the read token",
            TestCluster::http_with_token(cluster.read_token()),
        ),
        ("the write token", cluster.http()),
    ];
    for i in 0..cluster.len() {
        let base = cluster.url(i);
        for path in &reads {
            for (who, http) in &strangers {
                for method in [Method::GET, Method::HEAD] {
                    let res = http
                        .request(method.clone(), format!("{base}{path}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        res.status(),
                        StatusCode::UNAUTHORIZED,
                        "{method} {path} on {i} with {who}"
                    );
                }
            }
            for (who, http) in &holders {
                let res = http.get(format!("{base}{path}")).send().await.unwrap();
                assert_eq!(res.status(), StatusCode::OK, "{path} on {i} with {who}");
            }
        }
        // Probes and the origins' own discovery stay open.
        for path in ["/health", "/ready", "/metrics", "/v1/info"] {
            let res = http().get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path} on {i}");
        }
    }
    assert!(
        cluster
            .anonymous()
            .get_tag(&name, &tag)
            .await
            .unwrap_err()
            .to_string()
            .contains("401")
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_tag_copy_with_an_absurd_version_is_refused() {
    let cluster = TestCluster::builder(2).replicas(2).start().await;
    let client = cluster.client();
    let auth = cluster.http();
    let name: RepoName = "library/alpine".parse().unwrap();
    let tag: Tag = "3".parse().unwrap();
    let old = Digest::sha256_of(b"old");
    let new = Digest::sha256_of(b"new");
    let evil = Digest::sha256_of(b"evil");
    client.put_tag(&name, &tag, &old).await.unwrap();

    let far_ahead = shoal_origin::db::now_ms() + 24 * 3600 * 1000;
    for version in [i64::MAX, far_ahead, -1] {
        for i in 0..cluster.len() {
            let res = auth
                .put(format!(
                    "{}/v1/tags/{name}:{tag}?internal=1",
                    cluster.url(i)
                ))
                .json(&serde_json::json!({ "digest": evil, "version": version }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "version {version}");
            let res = auth
                .put(format!(
                    "{}/v1/referrers/{name}@{old}/{}?internal=1",
                    cluster.url(i),
                    descriptor(b"evil").digest
                ))
                .json(&serde_json::json!({ "descriptor": descriptor(b"evil"), "version": version }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "version {version}");
        }
    }
    // Not pinned: the tag still reads the old value, and the next ordinary write wins.
    assert_eq!(client.get_tag(&name, &tag).await.unwrap(), Some(old));
    client.put_tag(&name, &tag, &new).await.unwrap();
    for i in 0..cluster.len() {
        let res = auth
            .get(format!("{}/v1/tags/{name}:{tag}?local=1", cluster.url(i)))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["digest"], new.to_string(), "origin {i}");
    }
    assert!(client.list_referrers(&name, &old).await.unwrap().is_empty());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_without_a_write_token_refuses_to_start_and_insecure_warns_in_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path().join("origin"));
    config.credentials.write_token = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = shoal_origin::Origin::start(
        config.clone(),
        Listeners {
            http: listener,
            peer: None,
        },
        prometheus::Registry::new(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(refused, Error::Insecure(_)), "{refused}");
    assert!(refused.to_string().contains("write_token"), "{refused}");

    config.insecure = true;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let origin = TestOrigin::start(config, listener).await.unwrap();
    let res = http().get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.text().await.unwrap();
    assert!(body.contains("insecure"), "{body}");
    // As it says: anyone can write.
    let data = random_bytes(1000);
    let digest = Digest::sha256_of(&data);
    assert_eq!(
        put_blob(&http(), &base, &digest, data).await.status(),
        StatusCode::CREATED
    );
    origin.stop().await;
}
