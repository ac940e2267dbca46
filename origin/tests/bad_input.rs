//! Every bad input gets its error, leaves nothing behind, and the origins keep serving.
#![allow(clippy::unwrap_used)] // test helpers fail the test on any error

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use shoal_core::Digest;
use shoal_core::testing::wait_until;
use shoal_origin::testing::{TestCluster, TestOrigin, idle_connections_possible, test_config};

const WAIT: Duration = Duration::from_secs(20);

/// Nothing stored on any origin and no upload left half-written.
async fn nothing_left(cluster: &TestCluster, digest: &Digest) {
    wait_until("no temporary upload files remain", WAIT, || async {
        (0..cluster.len()).all(|i| temp_files(&cluster.data_dir(i)) == 0)
    })
    .await;
    assert!(cluster.holders(digest).await.is_empty());
    for i in 0..cluster.len() {
        let res = cluster
            .http()
            .head(format!("{}/v1/blobs/{digest}", cluster.url(i)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}

/// Sends a raw HTTP upload: headers declaring `declared` bytes, then `body`, then either
/// half-closes and reads the answer, or hangs up at once. Returns the status line, if any.
fn raw_upload(
    token: &str,
    base: &str,
    digest: &Digest,
    declared: usize,
    body: &[u8],
    hang_up: bool,
) -> Option<String> {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "PUT /v1/blobs/{digest} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {declared}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    if hang_up {
        drop(s);
        return None;
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().map(str::to_owned)
}

async fn still_serves(cluster: &TestCluster) {
    let auth = cluster.http();
    let data = random_bytes(5000);
    let digest = Digest::sha256_of(&data);
    for i in 0..cluster.len() {
        assert_eq!(
            put_blob(&auth, cluster.url(i), &digest, data.clone())
                .await
                .status(),
            StatusCode::CREATED
        );
        let (status, bytes) = get_blob(&auth, cluster.url(i), &digest).await;
        assert_eq!((status, bytes.as_ref()), (StatusCode::OK, &data[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_match_its_digest_is_refused_and_not_stored() {
    let cluster = TestCluster::builder(3).replicas(2).start().await;
    let auth = cluster.http();
    let (data, digest) = blob_owned_by(&cluster, &[0, 1], 2, 100_000);
    let mut wrong = data.clone();
    wrong[50_000] ^= 0xff;
    for via in [0, 2] {
        let res = put_blob(&auth, cluster.url(via), &digest, wrong.clone()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "via {via}");
        assert_eq!(error_code(res).await, "DIGEST_INVALID");
    }
    nothing_left(&cluster, &digest).await;
    // A wrong body for a blob that is already there is refused too.
    assert_eq!(
        put_blob(&auth, cluster.url(0), &digest, data)
            .await
            .status(),
        StatusCode::CREATED
    );
    let res = put_blob(&auth, cluster.url(0), &digest, wrong).await;
    assert_eq!(error_code(res).await, "DIGEST_INVALID");
    still_serves(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_shorter_or_longer_than_declared_and_hang_ups_leave_nothing() {
    let cluster = TestCluster::builder(3).replicas(2).start().await;
    let auth = cluster.http();
    let (data, digest) = blob_owned_by(&cluster, &[0, 1], 2, 200_000);
    for via in [0, 2] {
        let base = cluster.url(via).to_owned();
        let token = cluster.write_token().to_owned();
        let (d, short) = (digest, data.clone());
        // Shorter than declared: the body ends before Content-Length is reached.
        let status = tokio::task::spawn_blocking(move || {
            raw_upload(&token, &base, &d, 300_000, &short, false)
        })
        .await
        .unwrap();
        assert!(
            status.as_deref().is_none_or(|s| s.contains(" 400 ")),
            "short body via {via}: {status:?}"
        );
        nothing_left(&cluster, &digest).await;

        // Longer than declared: only the declared bytes are the body, and they are not
        // the blob.
        let base = cluster.url(via).to_owned();
        let token = cluster.write_token().to_owned();
        let long = data.clone();
        let status = tokio::task::spawn_blocking(move || {
            raw_upload(&token, &base, &d, 100_000, &long, false)
        })
        .await
        .unwrap();
        assert!(
            status.as_deref().is_some_and(|s| s.contains(" 400 ")),
            "long body via {via}: {status:?}"
        );
        nothing_left(&cluster, &digest).await;

        // The client hangs up half way.
        let base = cluster.url(via).to_owned();
        let token = cluster.write_token().to_owned();
        let half = data[..100_000].to_vec();
        tokio::task::spawn_blocking(move || raw_upload(&token, &base, &d, 200_000, &half, true))
            .await
            .unwrap();
        nothing_left(&cluster, &digest).await;
    }
    // A declared length that is right but a digest that is wrong.
    let res = auth
        .clone()
        .put(format!(
            "{}/v1/blobs/{}",
            cluster.url(0),
            Digest::sha256_of(b"other")
        ))
        .header("content-length", data.len())
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res).await, "DIGEST_INVALID");
    still_serves(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_and_malformed_requests_get_their_codes() {
    let cluster = TestCluster::builder(3).replicas(2).start().await;
    let auth = cluster.http();
    let base = cluster.url(1);
    let unknown = Digest::sha256_of(b"unknown");
    let get = |path: String| {
        let auth = auth.clone();
        async move { auth.get(format!("{base}{path}")).send().await.unwrap() }
    };

    for (path, status, code) in [
        (format!("/v1/blobs/{unknown}"), 404, "BLOB_UNKNOWN"),
        (format!("/v1/blobs/{unknown}/metainfo"), 404, "BLOB_UNKNOWN"),
        (
            "/v1/tags/library/alpine:latest".to_owned(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v1/repositories/library/alpine/tags".to_owned(),
            404,
            "NAME_UNKNOWN",
        ),
        ("/v1/blobs/sha256:1234".to_owned(), 400, "DIGEST_INVALID"),
        (
            "/v1/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(),
            400,
            "DIGEST_INVALID",
        ),
        ("/v1/tags/Bad/Name:latest".to_owned(), 400, "NAME_INVALID"),
        (
            "/v1/tags/library/alpine:.bad".to_owned(),
            400,
            "MANIFEST_INVALID",
        ),
        ("/v1/blobs?n=many".to_owned(), 400, "UNSUPPORTED"),
        ("/v1/nothing/here".to_owned(), 404, "UNSUPPORTED"),
    ] {
        let res = get(path.clone()).await;
        assert_eq!(res.status().as_u16(), status, "{path}");
        assert_eq!(error_code(res).await, code, "{path}");
    }
    let res = auth
        .clone()
        .head(format!("{base}/v1/blobs/{unknown}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let put_tag = |body: &'static str| {
        let auth = auth.clone();
        async move {
            auth.put(format!("{base}/v1/tags/library/alpine:latest"))
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        error_code(put_tag("not json").await).await,
        "MANIFEST_INVALID"
    );
    assert_eq!(
        error_code(put_tag("{\"digest\":\"sha256:00\"}").await).await,
        "DIGEST_INVALID"
    );
    assert_eq!(
        auth.clone()
            .get(format!("{base}/v1/tags/library/alpine:latest"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    let data = random_bytes(1000);
    let digest = Digest::sha256_of(&data);
    assert_eq!(
        put_blob(&auth, base, &digest, data).await.status(),
        StatusCode::CREATED
    );
    let res = auth
        .clone()
        .get(format!("{base}/v1/blobs/{digest}"))
        .header("range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(res.headers()["content-range"], "bytes */1000");
    assert_eq!(error_code(res).await, "RANGE_INVALID");
    let res = auth
        .clone()
        .get(format!("{base}/v1/blobs/{digest}"))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(res.bytes().await.unwrap().len(), 10);
    let res = auth
        .clone()
        .head(format!("{base}/v1/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-length"], "1000");
    assert_eq!(res.headers()["docker-content-digest"], digest.to_string());

    // The empty blob is a blob like any other.
    let empty = Digest::sha256_of(b"");
    assert_eq!(
        put_blob(&auth, base, &empty, Vec::new()).await.status(),
        StatusCode::CREATED
    );
    let (status, bytes) = get_blob(&auth, cluster.url(0), &empty).await;
    assert_eq!((status, bytes.len()), (StatusCode::OK, 0));
    let m = cluster.client().metainfo(&empty).await.unwrap();
    assert_eq!((m.length(), m.piece_count()), (0, 0));
    cluster.shutdown().await;
}

/// One origin, and the write token its config was given.
async fn start_one(
    configure: impl FnOnce(&mut shoal_origin::Config),
) -> (TestOrigin, String, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path().to_owned());
    configure(&mut config);
    let token = config.credentials.write_token.0.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let origin = TestOrigin::start(config, listener).await.unwrap();
    (origin, base, dir, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_18446744073709551612_gets_a_4xx_at_once_and_the_origin_lives() {
    let (_origin, base, _dir, token) = start_one(|_| {}).await;
    let auth = TestCluster::http_with_token(&token);
    let digest = Digest::sha256_of(b"never sent");
    let started = std::time::Instant::now();
    let answer = tokio::task::spawn_blocking({
        let base = base.clone();
        let token = token.clone();
        move || raw_upload(&token, &base, &digest, 18446744073709551612, b"", false)
    })
    .await
    .unwrap();
    let status = answer.expect("an answer, not a closed connection");
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered late");
    // The origin lives, and takes a real upload.
    let data = random_bytes(10_000);
    let d = Digest::sha256_of(&data);
    assert_eq!(
        put_blob(&auth, &base, &d, data.clone()).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(get_blob(&auth, &base, &d).await.1.as_ref(), &data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_do_not_starve_the_origin() {
    use tokio::io::AsyncReadExt;
    let header_timeout = Duration::from_secs(2);
    let (_origin, base, _dir, token) = start_one(|c| {
        // Below the number of idle connections: the cap makes room by closing idle ones.
        c.server.max_connections = 500;
        c.server.header_timeout = header_timeout;
    })
    .await;
    let auth = TestCluster::http_with_token(&token);
    let addr = base.trim_start_matches("http://").to_owned();
    let n = idle_connections_possible(2000);
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let data = random_bytes(10_000);
    let d = Digest::sha256_of(&data);
    let res = tokio::time::timeout(
        Duration::from_secs(1),
        put_blob(&auth, &base, &d, data.clone()),
    )
    .await
    .expect("a real request is answered within a second");
    assert_eq!(res.status(), StatusCode::CREATED);
    // Those that never sent a header are gone once the header timeout has passed.
    let deadline = tokio::time::Instant::now() + header_timeout + Duration::from_secs(5);
    for (i, mut s) in idle.into_iter().enumerate() {
        let mut buf = [0u8; 64];
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("idle connection {i} was sent {n} bytes"),
            Err(_) => panic!("idle connection {i} still open after the header timeout"),
        }
    }
    assert_eq!(get_blob(&auth, &base, &d).await.1.as_ref(), &data[..]);
}
