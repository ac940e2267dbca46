//! Router tests: the whole app in process (`oneshot`), over an in-memory origin on a real
//! socket.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shoal_core::digest::Digest;
use shoal_core::telemetry::Readiness;
use shoal_origin::testing::TestCluster;
use tower::ServiceExt;

use crate::config::Config;
use crate::manifest::{OCI_INDEX, OCI_MANIFEST};
use crate::state::AppState;

struct T {
    app: Router,
    origins: TestCluster,
    registry: prometheus::Registry,
    spool: tempfile::TempDir,
    _shutdown: tokio_util::sync::DropGuard,
}

struct Res {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Res {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn setup_with(f: impl FnOnce(&mut Config)) -> T {
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let spool = tempfile::tempdir().unwrap();
    let mut config = Config {
        origins: origins.urls(),
        ..Config::default()
    };
    config.credentials.write_token = crate::config::Secret::new(origins.write_token());
    config.uploads.spool_dir = spool.path().to_owned();
    f(&mut config);
    let registry = prometheus::Registry::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let state = AppState::new(config, &registry, shutdown.clone())
        .await
        .unwrap();
    let app = super::app(state, registry.clone(), Readiness::default());
    T {
        app,
        origins,
        registry,
        spool,
        _shutdown: shutdown.drop_guard(),
    }
}

async fn setup() -> T {
    setup_with(|_| {}).await
}

impl T {
    async fn req(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Body) -> Res {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res = self
            .app
            .clone()
            .oneshot(b.body(body).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Res {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Res {
        self.req(Method::GET, uri, &[], Body::empty()).await
    }

    /// Pushes a blob the way docker does: POST, one PATCH, empty PUT.
    async fn push_blob(&self, name: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let loc = self.start(name).await;
        let r = self
            .req(Method::PATCH, &loc, &[], Body::from(bytes.to_vec()))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        let r = self
            .req(
                Method::PUT,
                &format!("{loc}?digest={d}"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        d
    }

    async fn start(&self, name: &str) -> String {
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{name}/blobs/uploads/"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        r.header("location").to_owned()
    }

    async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Res {
        self.req(
            Method::PUT,
            &format!("/v2/{name}/manifests/{reference}"),
            &[("content-type", media_type)],
            Body::from(body.to_vec()),
        )
        .await
    }

    fn metrics(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// The blob as the origins have it, or `None` if they do not.
    async fn stored(&self, d: &Digest) -> Option<Bytes> {
        match self.origins.client().get_blob_bytes(d, 1 << 30).await {
            Ok(b) => Some(b),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("reading {d} from the origin: {e}"),
        }
    }

    /// Blob bytes the origin has received.
    fn origin_received(&self) -> f64 {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.origins.registry(0).gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("shoal_origin_received_bytes_total{proto=\"http\"}")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap()
    }

    fn spool_files(&self) -> usize {
        std::fs::read_dir(self.spool.path().join("uploads"))
            .unwrap()
            .count()
    }
}

fn desc(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": Digest::sha256_of(bytes), "size": bytes.len()})
}

/// Pushes a config and a layer and returns an image manifest naming them.
async fn image(t: &T, name: &str, seed: &str) -> Vec<u8> {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}");
    let layer = format!("layer of {seed}").repeat(100);
    t.push_blob(name, config.as_bytes()).await;
    t.push_blob(name, layer.as_bytes()).await;
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config.as_bytes()),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar", layer.as_bytes())],
    }))
    .unwrap()
}

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
async fn monolithic_upload_after_post_streams_straight_through() {
    let t = setup().await;
    let bytes = b"a whole blob in one PUT".to_vec();
    let d = Digest::sha256_of(&bytes);
    let loc = t.start("a/b").await;
    assert!(loc.starts_with("/v2/a/b/blobs/uploads/"), "{loc}");
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Body::from(bytes.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.header("location"), format!("/v2/a/b/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), d.to_string());
    assert_eq!(t.stored(&d).await.unwrap(), bytes);
    assert_eq!(
        t.spool_files(),
        0,
        "a monolithic upload never touches the spool"
    );

    let r = t.get(&format!("/v2/a/b/blobs/{d}")).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::OK, bytes.as_slice())
    );
    let r = t
        .req(
            Method::HEAD,
            &format!("/v2/other/blobs/{d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), bytes.len().to_string());
    let r = t
        .req(
            Method::GET,
            &format!("/v2/a/b/blobs/{d}"),
            &[("range", "bytes=2-6")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body.as_ref(), &bytes[2..7]);
    assert_eq!(
        r.header("content-range"),
        format!("bytes 2-6/{}", bytes.len())
    );
    let r = t
        .req(
            Method::GET,
            &format!("/v2/a/b/blobs/{d}"),
            &[("range", "bytes=100-")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn single_post_with_digest() {
    let t = setup().await;
    let bytes = b"post and done".to_vec();
    let d = Digest::sha256_of(&bytes);
    let r = t
        .req(
            Method::POST,
            &format!("/v2/x/blobs/uploads/?digest={d}"),
            &[],
            Body::from(bytes.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(t.stored(&d).await.unwrap(), bytes);
    // A wrong digest stores nothing.
    let r = t
        .req(
            Method::POST,
            &format!(
                "/v2/x/blobs/uploads/?digest={}",
                Digest::sha256_of(b"other")
            ),
            &[],
            Body::from(bytes.clone()),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    assert!(t.stored(&Digest::sha256_of(b"other")).await.is_none());
}

#[tokio::test]
async fn chunked_upload_with_and_without_content_range() {
    let t = setup().await;
    let loc = t.start("chunky").await;
    let r = t.get(&loc).await;
    assert_eq!(
        (r.status, r.header("range")),
        (StatusCode::NO_CONTENT, "0-0")
    );
    let r = t
        .req(
            Method::PATCH,
            &loc,
            &[("content-range", "0-4"), ("content-length", "5")],
            Body::from("hello"),
        )
        .await;
    assert_eq!((r.status, r.header("range")), (StatusCode::ACCEPTED, "0-4"));
    let loc = r.header("location").to_owned();
    let r = t
        .req(Method::PATCH, &loc, &[], Body::from(" chunked"))
        .await;
    assert_eq!(
        (r.status, r.header("range")),
        (StatusCode::ACCEPTED, "0-12")
    );
    // Out of order: 416, and the upload stays as it was.
    let r = t
        .req(
            Method::PATCH,
            &loc,
            &[("content-range", "5-9")],
            Body::from("xxxxx"),
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("range"), "0-12");
    let r = t
        .req(
            Method::PATCH,
            &loc,
            &[("content-range", "bytes 13-18/*")],
            Body::from(" world"),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = t.get(&loc).await;
    assert_eq!(r.header("range"), "0-18");
    // The final PUT carries the last chunk.
    let all = b"hello chunked world and the end";
    let d = Digest::sha256_of(all);
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Body::from(" and the end"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(t.stored(&d).await.unwrap().as_ref(), all);
    assert_eq!(t.spool_files(), 0);
    let r = t.get(&loc).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );
    let m = t.metrics();
    assert!(m.contains("shoal_proxy_uploads_in_flight 0"), "{m}");
    assert!(
        m.contains("shoal_proxy_upload_duration_seconds_count 1"),
        "{m}"
    );
}

#[tokio::test]
async fn a_wrong_digest_on_the_final_put_stores_nothing() {
    let t = setup().await;
    let loc = t.start("a").await;
    t.req(Method::PATCH, &loc, &[], Body::from("some bytes"))
        .await;
    let wrong = Digest::sha256_of(b"other bytes");
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={wrong}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    assert_eq!(t.origin_received(), 0.0, "no byte went to the origin");
    assert_eq!(t.spool_files(), 0);
    assert_eq!(t.get(&loc).await.code(), "BLOB_UPLOAD_UNKNOWN");

    // With a last chunk in the PUT, the mismatch is found on the way: the origin gets a
    // broken body and keeps nothing.
    let loc = t.start("a").await;
    t.req(Method::PATCH, &loc, &[], Body::from("some bytes"))
        .await;
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={wrong}"),
            &[],
            Body::from(" more"),
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    assert!(t.stored(&wrong).await.is_none());

    // Missing or malformed digests.
    let loc = t.start("a").await;
    let r = t.req(Method::PUT, &loc, &[], Body::empty()).await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest=sha256:zz"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn sha512_digests_are_checked_on_the_way() {
    let t = setup().await;
    let bytes = b"sha512 content";
    let mut h = shoal_core::digest::Hasher::new(shoal_core::Algorithm::Sha512);
    h.update(bytes);
    let d = h.finalize();
    let loc = t.start("a").await;
    t.req(Method::PATCH, &loc, &[], Body::from(&bytes[..]))
        .await;
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(t.stored(&d).await.is_some());
    let loc = t.start("a").await;
    t.req(Method::PATCH, &loc, &[], Body::from("other")).await;
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn a_body_that_breaks_off_leaves_nothing_behind() {
    let t = setup().await;
    let d = Digest::sha256_of(b"never completes");
    let broken = || {
        Body::from_stream(futures::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"never ")),
            Err(std::io::Error::other("client went away")),
        ]))
    };
    let loc = t.start("a").await;
    let r = t
        .req(Method::PUT, &format!("{loc}?digest={d}"), &[], broken())
        .await;
    assert!(r.status.is_client_error(), "{:?}", r.status);
    assert!(t.stored(&d).await.is_none());
    // A broken chunk is not kept either.
    let r = t.req(Method::PATCH, &loc, &[], broken()).await;
    assert_eq!(r.code(), "BLOB_UPLOAD_INVALID");
    assert_eq!(t.get(&loc).await.header("range"), "0-0");
    let r = t.req(Method::DELETE, &loc, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(t.spool_files(), 0);
    assert_eq!(t.get(&loc).await.code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn mount_of_a_present_blob_and_of_a_missing_one() {
    let t = setup().await;
    let d = t.push_blob("from/repo", b"shared layer").await;
    let r = t
        .req(
            Method::POST,
            &format!("/v2/to/repo/blobs/uploads/?mount={d}&from=from/repo"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/to/repo/blobs/{d}"));
    let missing = Digest::sha256_of(b"nope");
    let r = t
        .req(
            Method::POST,
            &format!("/v2/to/repo/blobs/uploads/?mount={missing}&from=from/repo"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(
        r.header("location")
            .starts_with("/v2/to/repo/blobs/uploads/")
    );
    let r = t
        .req(
            Method::POST,
            "/v2/to/repo/blobs/uploads/?mount=sha256:bad&from=x",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn manifests_by_tag_and_digest_are_stored_exactly() {
    let t = setup().await;
    let m = image(&t, "app", "one").await;
    // Unusual but valid formatting must survive byte for byte.
    let mut pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&m).unwrap()).unwrap();
    pretty.extend_from_slice(b"\n\n");
    let d = Digest::sha256_of(&pretty);
    let r = t.put_manifest("app", "v1", OCI_MANIFEST, &pretty).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.header("docker-content-digest"), d.to_string());
    assert_eq!(r.header("location"), format!("/v2/app/manifests/{d}"));
    for reference in ["v1".to_string(), d.to_string()] {
        let r = t.get(&format!("/v2/app/manifests/{reference}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.as_ref(), pretty.as_slice());
        assert_eq!(r.header("content-type"), OCI_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), d.to_string());
        let r = t
            .req(
                Method::HEAD,
                &format!("/v2/app/manifests/{reference}"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-length"), pretty.len().to_string());
        assert_eq!(r.header("content-type"), OCI_MANIFEST);
    }
    // By digest, the URL must name these bytes.
    let r = t
        .put_manifest("app", &d.to_string(), OCI_MANIFEST, &pretty)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = t
        .put_manifest(
            "app",
            &Digest::sha256_of(b"x").to_string(),
            OCI_MANIFEST,
            &pretty,
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    // An index over it, with extra tags from ?tag=.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [desc(OCI_MANIFEST, &pretty)],
    }))
    .unwrap();
    let id = Digest::sha256_of(&index);
    let r = t
        .req(
            Method::PUT,
            &format!("/v2/app/manifests/{id}?tag=multi&tag=latest"),
            &[("content-type", OCI_INDEX)],
            Body::from(index.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = t.get("/v2/app/manifests/latest").await;
    assert_eq!(
        (r.body.as_ref(), r.header("content-type")),
        (index.as_slice(), OCI_INDEX)
    );
}

#[tokio::test]
async fn manifest_checks() {
    let t = setup_with(|c| c.max_manifest_size = shoal_core::units::ByteSize(64 << 10)).await;
    let m = image(&t, "app", "two").await;
    let missing = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", b"{}"),
        "layers": [],
    }))
    .unwrap();
    let r = t.put_manifest("app", "x", OCI_MANIFEST, &missing).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );
    let r = t.put_manifest("app", "x", OCI_MANIFEST, b"{not json").await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    let r = t
        .put_manifest("app", "x", "application/vnd.example+json", &m)
        .await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    let r = t.put_manifest("app", "bad:tag:", OCI_MANIFEST, &m).await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    let r = t.put_manifest("app", "-bad", OCI_MANIFEST, &m).await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    let mut wrong_size: Value = serde_json::from_slice(&m).unwrap();
    wrong_size["layers"][0]["size"] = json!(1);
    let r = t
        .put_manifest(
            "app",
            "x",
            OCI_MANIFEST,
            &serde_json::to_vec(&wrong_size).unwrap(),
        )
        .await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    // Too large: 413, whether Content-Length says so or the body shows it.
    let mut big: Value = serde_json::from_slice(&m).unwrap();
    big["annotations"] = json!({"pad": "x".repeat(70 << 10)});
    let big = serde_json::to_vec(&big).unwrap();
    let r = t.put_manifest("app", "x", OCI_MANIFEST, &big).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID")
    );
    let stream = Body::from_stream(futures::stream::iter(
        big.chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    ));
    let r = t
        .req(
            Method::PUT,
            "/v2/app/manifests/x",
            &[("content-type", OCI_MANIFEST)],
            stream,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing of it was stored: the tag does not exist.
    assert_eq!(
        t.get("/v2/app/manifests/x").await.code(),
        "MANIFEST_UNKNOWN"
    );
    // A blob is not a manifest.
    let layer = Digest::sha256_of("layer of two".repeat(100).as_bytes());
    assert_eq!(
        t.get(&format!("/v2/app/manifests/{layer}")).await.code(),
        "MANIFEST_UNKNOWN"
    );
}

#[tokio::test]
async fn referrers_by_subject_with_artifact_type_filter() {
    let t = setup().await;
    let m = image(&t, "app", "subject").await;
    let r = t.put_manifest("app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let subject = Digest::sha256_of(&m);
    t.push_blob("app", b"{}").await;
    let mut referrer_digests = Vec::new();
    for (kind, payload) in [
        ("application/vnd.example.sbom", "sbom"),
        ("application/vnd.example.sig", "sig"),
    ] {
        let blob = t.push_blob("app", payload.as_bytes()).await;
        let art = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": kind,
            "config": desc("application/vnd.oci.empty.v1+json", b"{}"),
            "layers": [{"mediaType": "application/octet-stream", "digest": blob, "size": payload.len()}],
            "subject": desc(OCI_MANIFEST, &m),
            "annotations": {"org.example.kind": payload},
        }))
        .unwrap();
        let d = Digest::sha256_of(&art);
        let r = t
            .put_manifest("app", &d.to_string(), OCI_MANIFEST, &art)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        assert_eq!(r.header("oci-subject"), subject.to_string());
        referrer_digests.push((kind, d, art.len()));
    }
    let r = t.get(&format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), OCI_INDEX);
    let index = r.json();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    let r = t
        .get(&format!(
            "/v2/app/referrers/{subject}?artifactType=application/vnd.example.sig"
        ))
        .await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    let only = r.json()["manifests"].as_array().unwrap().clone();
    let (kind, d, size) = referrer_digests[1];
    assert_eq!(
        only,
        vec![json!({
            "mediaType": OCI_MANIFEST,
            "digest": d,
            "size": size,
            "artifactType": kind,
            "annotations": {"org.example.kind": "sig"},
        })]
    );
    // Other repositories and unknown subjects: an empty index, not 404.
    let r = t.get(&format!("/v2/other/referrers/{subject}")).await;
    assert_eq!(
        (r.status, r.json()["manifests"].clone()),
        (StatusCode::OK, json!([]))
    );
    assert_eq!(
        t.get("/v2/app/referrers/sha256:nope").await.code(),
        "DIGEST_INVALID"
    );
    // Deleting a referrer takes it out of the list.
    let r = t
        .req(
            Method::DELETE,
            &format!("/v2/app/manifests/{d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = t.get(&format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tag_lists_and_catalog_paginate_with_link() {
    let t = setup_with(|c| c.max_page = 3).await;
    let m = image(&t, "lib/app", "tags").await;
    for tag in ["a", "b", "c", "d", "e"] {
        assert_eq!(
            t.put_manifest("lib/app", tag, OCI_MANIFEST, &m)
                .await
                .status,
            StatusCode::CREATED
        );
    }
    t.put_manifest("zzz", "only", OCI_MANIFEST, &m).await;
    let r = t.get("/v2/lib/app/tags/list?n=2").await;
    assert_eq!(r.json(), json!({"name": "lib/app", "tags": ["a", "b"]}));
    assert_eq!(
        r.header("link"),
        "</v2/lib/app/tags/list?n=2&last=b>; rel=\"next\""
    );
    let r = t.get("/v2/lib/app/tags/list?n=2&last=d").await;
    assert_eq!(r.json()["tags"], json!(["e"]));
    assert_eq!(r.header("link"), "");
    // No n: at most max_page, with a link to the rest.
    let r = t.get("/v2/lib/app/tags/list").await;
    assert_eq!(r.json()["tags"], json!(["a", "b", "c"]));
    assert_eq!(
        r.header("link"),
        "</v2/lib/app/tags/list?n=3&last=c>; rel=\"next\""
    );
    let r = t.get("/v2/lib/app/tags/list?n=0").await;
    assert_eq!(r.json()["tags"], json!([]));
    let r = t.get("/v2/nothing/here/tags/list").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let r = t.get("/v2/lib/app/tags/list?n=lots").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = t.get("/v2/_catalog?n=1").await;
    assert_eq!(r.json(), json!({"repositories": ["lib/app"]}));
    assert_eq!(
        r.header("link"),
        "</v2/_catalog?n=1&last=lib/app>; rel=\"next\""
    );
    let r = t.get("/v2/_catalog?n=1&last=lib/app").await;
    assert_eq!(r.json(), json!({"repositories": ["zzz"]}));
}

#[tokio::test]
async fn deletes_of_tags_manifests_and_blobs() {
    let t = setup().await;
    let m = image(&t, "app", "del").await;
    let d = Digest::sha256_of(&m);
    for tag in ["keep", "v1", "v2"] {
        t.put_manifest("app", tag, OCI_MANIFEST, &m).await;
    }
    let r = t
        .req(Method::DELETE, "/v2/app/manifests/keep", &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        t.get("/v2/app/manifests/keep").await.code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(t.get("/v2/app/manifests/v1").await.status, StatusCode::OK);
    let r = t
        .req(Method::DELETE, "/v2/app/manifests/keep", &[], Body::empty())
        .await;
    assert_eq!(r.code(), "MANIFEST_UNKNOWN");
    // By digest: the manifest and every tag pointing at it.
    let r = t
        .req(
            Method::DELETE,
            &format!("/v2/app/manifests/{d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    for reference in ["v1".to_string(), "v2".to_string(), d.to_string()] {
        assert_eq!(
            t.get(&format!("/v2/app/manifests/{reference}"))
                .await
                .code(),
            "MANIFEST_UNKNOWN"
        );
    }
    let layer = Digest::sha256_of("layer of del".repeat(100).as_bytes());
    let r = t
        .req(
            Method::DELETE,
            &format!("/v2/app/blobs/{layer}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        t.get(&format!("/v2/app/blobs/{layer}")).await.code(),
        "BLOB_UNKNOWN"
    );
    let r = t
        .req(
            Method::DELETE,
            &format!("/v2/app/blobs/{layer}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.code(), "BLOB_UNKNOWN");
}

#[tokio::test]
async fn deletes_can_be_turned_off() {
    let t = setup_with(|c| c.allow_delete = false).await;
    let d = t.push_blob("app", b"kept").await;
    for path in [
        format!("/v2/app/blobs/{d}"),
        "/v2/app/manifests/v1".to_string(),
    ] {
        let r = t.req(Method::DELETE, &path, &[], Body::empty()).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED")
        );
    }
    assert!(t.stored(&d).await.is_some());
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
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    t.origins.restart(0).await;
    t.origins.wait_converged().await;
    let r = t
        .req(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            Body::empty(),
        )
        .await;
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
