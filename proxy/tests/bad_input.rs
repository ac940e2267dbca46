//! Bad input over real sockets: every error code of the spec that applies, each from the
//! request that should cause it, and clients that go away mid-upload leaving nothing.
#![allow(clippy::unwrap_used)] // helpers of tests: a failure is a failed test

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shoal_core::Digest;
use shoal_proxy::testing::TestProxy;
use shoal_tests::oci::{OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptor};
use tokio::io::AsyncWriteExt;

struct Client {
    http: reqwest::Client,
    base: String,
    auth: Option<String>,
}

impl Client {
    fn new(c: &TestProxy, user: Option<&str>) -> Self {
        Client {
            http: shoal_core::tls::client(),
            base: c.url(""),
            auth: user.map(|u| {
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:secret"));
                format!("Basic {token}")
            }),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.body(body).send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn upload(&self, name: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let (status, _, body) = self
            .send(
                Method::POST,
                &format!("/v2/{name}/blobs/uploads/?digest={d}"),
                &[],
                bytes.to_vec(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        d
    }

    async fn start(&self, name: &str) -> String {
        let (status, headers, _) = self
            .send(
                Method::POST,
                &format!("/v2/{name}/blobs/uploads/"),
                &[],
                Vec::new(),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        headers["location"].to_str().unwrap().to_owned()
    }
}

fn code(body: &Value) -> &str {
    body["errors"][0]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spec_error_code_from_the_request_that_causes_it() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = |pw: &str| bcrypt::hash(pw, 4).unwrap();
    std::fs::write(
        &htpasswd,
        format!("writer:{}\nreader:{}\n", hash("secret"), hash("secret")),
    )
    .unwrap();
    let c = TestProxy::start_with(|config| {
        config.auth.htpasswd = Some(htpasswd.clone());
        config.auth.push_users = vec!["writer".into()];
        config.uploads.max_sessions = 2;
        config.max_manifest_size = shoal_core::units::ByteSize(16 << 10);
    })
    .await;
    let w = Client::new(&c, Some("writer"));
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"a layer".to_vec();
    w.upload("app", config).await;
    w.upload("app", &layer).await;
    let manifest = |layers: Vec<Value>| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": layers,
        }))
        .unwrap()
    };
    let good = manifest(vec![descriptor(OCI_LAYER, &layer)]);
    let oci = [("content-type", OCI_MANIFEST)];
    let absent = Digest::sha256_of(b"absent");
    let loc = w.start("app").await;

    let mut seen = Vec::new();
    let mut expect = |what: &str,
                      got: (StatusCode, reqwest::header::HeaderMap, Value),
                      status: u16,
                      wanted: &str| {
        assert_eq!(
            (got.0.as_u16(), code(&got.2)),
            (status, wanted),
            "{what}: {}",
            got.2
        );
        seen.push(wanted.to_owned());
        got.1
    };

    expect(
        "bad name",
        w.send(Method::GET, "/v2/App/tags/list", &[], vec![]).await,
        400,
        "NAME_INVALID",
    );
    expect(
        "no such repository",
        w.send(Method::GET, "/v2/nothing/tags/list", &[], vec![])
            .await,
        404,
        "NAME_UNKNOWN",
    );
    expect(
        "not JSON",
        w.send(Method::PUT, "/v2/app/manifests/v1", &oci, b"{oops".to_vec())
            .await,
        400,
        "MANIFEST_INVALID",
    );
    let big = manifest(vec![
        json!({"mediaType": OCI_LAYER, "digest": absent, "size": 1, "annotations": {"pad": "x".repeat(20 << 10)}}),
    ]);
    expect(
        "too large",
        w.send(Method::PUT, "/v2/app/manifests/v1", &oci, big).await,
        413,
        "MANIFEST_INVALID",
    );
    expect(
        "missing layer",
        w.send(
            Method::PUT,
            "/v2/app/manifests/v1",
            &oci,
            manifest(vec![descriptor(OCI_LAYER, b"never pushed")]),
        )
        .await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );
    expect(
        "unknown tag",
        w.send(Method::GET, "/v2/app/manifests/nope", &[], vec![])
            .await,
        404,
        "MANIFEST_UNKNOWN",
    );
    expect(
        "unknown blob",
        w.send(Method::GET, &format!("/v2/app/blobs/{absent}"), &[], vec![])
            .await,
        404,
        "BLOB_UNKNOWN",
    );
    expect(
        "unknown upload",
        w.send(Method::GET, "/v2/app/blobs/uploads/0123", &[], vec![])
            .await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    expect(
        "bad Content-Range",
        w.send(
            Method::PATCH,
            &loc,
            &[("content-range", "x-y")],
            b"abc".to_vec(),
        )
        .await,
        400,
        "BLOB_UPLOAD_INVALID",
    );
    expect(
        "wrong digest",
        w.send(
            Method::PUT,
            &format!("{loc}?digest={absent}"),
            &[],
            b"not absent".to_vec(),
        )
        .await,
        400,
        "DIGEST_INVALID",
    );
    let loc = w.start("app").await;
    expect(
        "chunk shorter than its range",
        w.send(
            Method::PATCH,
            &loc,
            &[("content-range", "0-99")],
            b"abc".to_vec(),
        )
        .await,
        400,
        "SIZE_INVALID",
    );
    let headers = expect(
        "chunk out of order",
        w.send(
            Method::PATCH,
            &loc,
            &[("content-range", "5-7")],
            b"abc".to_vec(),
        )
        .await,
        416,
        "RANGE_INVALID",
    );
    assert_eq!(headers["range"], "0-0");
    let anonymous = Client::new(&c, None);
    let headers = expect(
        "no credentials",
        anonymous
            .send(Method::POST, "/v2/app/blobs/uploads/", &[], vec![])
            .await,
        401,
        "UNAUTHORIZED",
    );
    assert_eq!(headers["www-authenticate"], "Basic realm=\"shoal\"");
    let reader = Client::new(&c, Some("reader"));
    expect(
        "not a writer",
        reader
            .send(Method::POST, "/v2/app/blobs/uploads/", &[], vec![])
            .await,
        403,
        "DENIED",
    );
    expect(
        "no PUT on a blob",
        w.send(Method::PUT, &format!("/v2/app/blobs/{absent}"), &[], vec![])
            .await,
        405,
        "UNSUPPORTED",
    );
    w.start("app").await;
    expect(
        "too many uploads",
        w.send(Method::POST, "/v2/app/blobs/uploads/", &[], vec![])
            .await,
        429,
        "TOOMANYREQUESTS",
    );

    // The good manifest still goes through, and pulls need no credentials.
    let (status, _, body) = w
        .send(Method::PUT, "/v2/app/manifests/v1", &oci, good.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let res = shoal_core::tls::client()
        .get(c.url("/v2/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.bytes().await.unwrap().as_ref(), good.as_slice());
    let (status, headers, _) = w
        .send(Method::HEAD, "/v2/app/manifests/v1", &[], vec![])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], good.len().to_string().as_str());
    assert_eq!(headers["content-type"], OCI_MANIFEST);
    // No answer above was a 5xx, and none was counted as one.
    assert_eq!(
        c.metric(
            "shoal_proxy_requests_total",
            &["method=\"GET\"", "route=\"manifest\"", "status=\"5xx\""]
        ),
        0.0
    );
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 15, "{seen:?}");
}

/// Sends the head of a request and part of its body on a raw socket, then hangs up.
async fn hang_up_mid_body(addr: &str, method: &str, path: &str, declared: usize, sent: usize) {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {declared}\r\n\r\n");
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&vec![b'z'; sent]).await.unwrap();
    sock.flush().await.unwrap();
    drop(sock);
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_upload_leaves_nothing_behind() {
    let c =
        TestProxy::start_with(|config| config.uploads.idle_timeout = Duration::from_secs(1)).await;
    let w = Client::new(&c, None);
    let whole = vec![b'z'; 1 << 20];
    let d = Digest::sha256_of(&whole);

    // A monolithic PUT cut off, and a chunk cut off after an accepted one.
    let loc = w.start("app").await;
    hang_up_mid_body(
        &c.addr,
        "PUT",
        &format!("{loc}?digest={d}"),
        whole.len(),
        300_000,
    )
    .await;
    let loc = w.start("app").await;
    let (status, _, _) = w.send(Method::PATCH, &loc, &[], vec![b'z'; 1000]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    hang_up_mid_body(&c.addr, "PATCH", &loc, 500_000, 200_000).await;

    wait_for("the abandoned sessions to expire", || {
        c.metric("shoal_proxy_uploads_in_flight", &[]) == 0.0 && c.spool_files() == 0
    })
    .await;
    assert!(!c.stored(&d).await, "a cut-off upload reached an origin");
    let (status, _, _) = w
        .send(Method::HEAD, &format!("/v2/app/blobs/{d}"), &[], vec![])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The same blob, sent whole, goes through.
    w.upload("app", &whole).await;
    assert!(c.stored(&d).await);
    let (status, headers, _) = w
        .send(Method::HEAD, &format!("/v2/app/blobs/{d}"), &[], vec![])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], whole.len().to_string().as_str());
}

/// Opens `n` connections that never send a byte.
async fn open_idle(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        socks.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    socks
}

/// Every socket is closed by the server (end of stream or a reset) before `within`.
async fn all_closed(socks: Vec<tokio::net::TcpStream>, within: Duration) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    for (i, mut s) in socks.into_iter().enumerate() {
        let mut buf = [0u8; 64];
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("idle connection {i} was sent {n} bytes"),
            Err(_) => panic!("idle connection {i} still open after {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_do_not_starve_the_proxy() {
    let header_timeout = Duration::from_secs(2);
    let c = TestProxy::start_with(|config| {
        // Below the number of idle connections: the cap makes room by closing idle ones.
        config.server.max_connections = 500;
        config.server.header_timeout = header_timeout;
    })
    .await;
    let idle = open_idle(
        &c.addr,
        shoal_origin::testing::idle_connections_possible(2000),
    )
    .await;
    let res = tokio::time::timeout(
        Duration::from_secs(1),
        shoal_core::tls::client().get(c.url("/v2/")).send(),
    )
    .await
    .expect("a real request is answered within a second")
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Those that never sent a header are gone once the header timeout has passed.
    all_closed(idle, header_timeout + Duration::from_secs(5)).await;
    let res = shoal_core::tls::client()
        .get(c.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drip_fed_upload_session_expires_and_its_space_is_freed() {
    let c = TestProxy::start_with(|config| {
        config.uploads.max_lifetime = Duration::from_secs(2);
        config.uploads.idle_timeout = Duration::from_secs(600);
        config.uploads.body_timeout = Duration::from_secs(60);
    })
    .await;
    let w = Client::new(&c, None);
    let loc = w.start("app").await;
    let (status, _, _) = w.send(Method::PATCH, &loc, &[], vec![b'z'; 100_000]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(c.spool_files(), 1);

    // A chunk that never ends: a byte every 100 ms keeps it from stalling or going idle.
    let mut sock = tokio::net::TcpStream::connect(&c.addr).await.unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000000\r\n\r\n",
        c.addr
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let drip = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if sock.write_all(b"z").await.is_err() {
                return;
            }
        }
    });
    wait_for("the drip-fed session to expire and its spool to go", || {
        c.metric("shoal_proxy_uploads_in_flight", &[]) == 0.0 && c.spool_files() == 0
    })
    .await;
    let (status, _, body) = w.send(Method::GET, &loc, &[], vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "BLOB_UPLOAD_UNKNOWN");
    drip.abort();
    // New uploads are unaffected.
    w.upload("app", b"after the drip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_order_chunk_gets_416_with_the_range_held() {
    let c = TestProxy::start().await;
    let w = Client::new(&c, None);
    let blob = vec![b'q'; 3000];
    let loc = w.start("app").await;
    let chunk = |r: &str, from: usize, to: usize| {
        (
            vec![("content-range", r.to_owned())],
            blob[from..to].to_vec(),
        )
    };
    let patch = |(h, b): (Vec<(&'static str, String)>, Vec<u8>)| {
        let w = &w;
        let loc = loc.clone();
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            w.send(Method::PATCH, &loc, &h, b).await
        }
    };
    let (status, headers, _) = patch(chunk("0-999", 0, 1000)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers["range"], "0-999");
    // The same chunk again, and one that skips ahead.
    for (r, from, to) in [("0-999", 0, 1000), ("2000-2999", 2000, 3000)] {
        let (status, headers, body) = patch(chunk(r, from, to)).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{r}");
        assert_eq!(code(&body), "RANGE_INVALID");
        assert_eq!(headers["range"], "0-999");
        assert!(headers.contains_key("location"));
    }
    // The session is as it was: the next chunk in order continues it.
    let (status, headers, _) = patch(chunk("1000-2999", 1000, 3000)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers["range"], "0-2999");
    let d = Digest::sha256_of(&blob);
    let (status, _, _) = w
        .send(Method::PUT, &format!("{loc}?digest={d}"), &[], vec![])
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_manifest_client_reads_its_413() {
    let c = TestProxy::start().await;
    let big = vec![b' '; 5 << 20];
    let url = c.url("/v2/app/manifests/latest");
    let http = shoal_core::tls::client();
    // Declared up front, and streamed without a length.
    let declared = http
        .put(&url)
        .header("content-type", OCI_MANIFEST)
        .body(big.clone())
        .send()
        .await
        .expect("the client reads an answer, not a reset");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let streamed = http
        .put(&url)
        .header("content-type", OCI_MANIFEST)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("the client reads an answer, not a reset");
    for res in [declared, streamed] {
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body: Value = res.json().await.unwrap();
        assert_eq!(code(&body), "MANIFEST_INVALID");
    }
}
