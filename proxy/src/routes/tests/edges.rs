//! The registry's edges: the base endpoint, bad input and its codes, an origin that is down,
//! authentication for pushes, and the metrics that count it all.

use super::*;

#[tokio::test]
async fn base_answers_as_registry_v2() {
    let t = setup().await;
    for path in ["/v2/", "/v2"] {
        let r = t.get(path).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
    }
    assert_eq!(t.get("/health").await.status, StatusCode::OK);
    let r = t.get("/nowhere").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "UNSUPPORTED");
}

#[tokio::test]
async fn bad_input_gets_its_code() {
    let t = setup_with(|c| c.uploads.max_sessions = 2).await;
    let d = Digest::sha256_of(b"absent");
    let cases: Vec<(Method, String, StatusCode, &str)> = vec![
        (
            Method::GET,
            "/v2/Bad/Name/tags/list".into(),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            "/v2/a//b/manifests/x".into(),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            Method::GET,
            "/v2/a/manifests/x".into(),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            Method::GET,
            "/v2/a/manifests/-x".into(),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            Method::GET,
            format!("/v2/a/blobs/{d}"),
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
        ),
        (
            Method::GET,
            "/v2/a/blobs/sha256:123".into(),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            "/v2/a/blobs/md5:abc".into(),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            Method::GET,
            "/v2/a/blobs/uploads/nope".into(),
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            Method::PATCH,
            "/v2/a/blobs/uploads/nope".into(),
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            Method::PUT,
            format!("/v2/a/blobs/uploads/nope?digest={d}"),
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            Method::DELETE,
            "/v2/a/blobs/uploads/nope".into(),
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            Method::POST,
            "/v2/a/tags/list".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
        (
            Method::PUT,
            format!("/v2/a/blobs/{d}"),
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
        ),
    ];
    for (method, path, status, code) in cases {
        let r = t.req(method.clone(), &path, &[], Body::empty()).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{method} {path}"
        );
    }
    // A session of one repository is unknown in another.
    let loc = t.start("a").await;
    let elsewhere = loc.replace("/v2/a/", "/v2/b/");
    assert_eq!(t.get(&elsewhere).await.code(), "BLOB_UPLOAD_UNKNOWN");
    let r = t
        .req(
            Method::PATCH,
            &loc,
            &[("content-range", "nonsense")],
            Body::from("x"),
        )
        .await;
    assert_eq!(r.code(), "BLOB_UPLOAD_INVALID");
    let r = t
        .req(
            Method::PATCH,
            &loc,
            &[("content-range", "0-9"), ("content-length", "3")],
            Body::from("abc"),
        )
        .await;
    assert_eq!(r.code(), "SIZE_INVALID");
    let r = t
        .req(
            Method::PATCH,
            &loc,
            &[("content-range", "0-9")],
            Body::from("abc"),
        )
        .await;
    assert_eq!(r.code(), "SIZE_INVALID");
    // The session limit.
    t.start("a").await;
    let r = t
        .req(Method::POST, "/v2/a/blobs/uploads/", &[], Body::empty())
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS")
    );
    assert!(!r.header("retry-after").is_empty());
}

#[tokio::test]
async fn an_origin_that_is_down_is_unavailable_not_the_clients_fault() {
    let mut t = setup().await;
    let d = t.push_blob("a", b"x").await;
    t.origins.stop(0).await;
    let r = t.get(&format!("/v2/a/blobs/{d}")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
    );
    // The spool keeps a finished upload's bytes for a retry while the origin is away.
    let loc = t.start("a").await;
    t.req(Method::PATCH, &loc, &[], Body::from("retry me"))
        .await;
    let d = Digest::sha256_of(b"retry me");
    let r = t.finish(&loc, &d, Body::empty()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    t.origins.restart(0).await;
    t.origins.wait_converged().await;
    let r = t.finish(&loc, &d, Body::empty()).await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn authentication_for_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(
        &file,
        format!(
            "alice:{}\nbob:{}\n",
            bcrypt::hash("pw", 4).unwrap(),
            bcrypt::hash("pw", 4).unwrap()
        ),
    )
    .unwrap();
    let t = setup_with(|c| {
        c.auth.htpasswd = Some(file.clone());
        c.auth.push_users = vec!["alice".into()];
    })
    .await;
    use base64::Engine as _;
    let basic = |u: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:pw"))
        )
    };
    let r = t.get("/v2/").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    assert_eq!(r.header("www-authenticate"), "Basic realm=\"shoal\"");
    let alice = basic("alice");
    let r = t
        .req(
            Method::GET,
            "/v2/",
            &[("authorization", &alice)],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = t
        .req(Method::POST, "/v2/a/blobs/uploads/", &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), "Basic realm=\"shoal\"");
    let r = t
        .req(
            Method::POST,
            "/v2/a/blobs/uploads/",
            &[("authorization", &basic("bob"))],
            Body::empty(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "DENIED")
    );
    let r = t
        .req(
            Method::POST,
            "/v2/a/blobs/uploads/",
            &[("authorization", &alice)],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // Pulls stay open.
    assert_eq!(t.get("/v2/a/tags/list").await.code(), "NAME_UNKNOWN");
}

#[tokio::test]
async fn metrics_count_routes_statuses_and_bytes() {
    let t = setup().await;
    let d = t.push_blob("a", &[7u8; 1000]).await;
    t.get(&format!("/v2/a/blobs/{d}")).await;
    t.get("/v2/a/blobs/sha256:bad").await;
    let m = t.metrics();
    for line in [
        "shoal_proxy_requests_total{method=\"PATCH\",route=\"upload\",status=\"2xx\"} 1",
        "shoal_proxy_requests_total{method=\"GET\",route=\"blob\",status=\"2xx\"} 1",
        "shoal_proxy_requests_total{method=\"GET\",route=\"blob\",status=\"4xx\"} 1",
        "shoal_proxy_received_bytes_total 1000",
        "shoal_proxy_sent_bytes_total 1000",
        "shoal_proxy_blobs_stored_total 1",
    ] {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
}
