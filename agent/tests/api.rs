//! The registry API's edges: OCI errors for bad input, 405 for writes, ranges, media types,
//! and a blob that fails its final check.

// Helpers here are test code too; clippy's test exemption covers only `#[test]` functions.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use futures::StreamExt;
use futures::future::BoxFuture;
use prometheus::Registry;
use shoal_agent::testing::{TestAgent, agent_config};
use shoal_core::peer::{AnnounceResponse, PeerInfo};
use shoal_core::store::BlobStore;
use shoal_core::{Digest, Metainfo};
use shoal_origin::testing::TestCluster;
use shoal_p2p::{MetainfoSource, Node, NodeConfig, StaticDiscovery};
use shoal_tests::data::noise;
use support::http;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The error code of an OCI envelope.
async fn code_of(res: reqwest::Response) -> String {
    let v: serde_json::Value = res.json().await.unwrap();
    v["errors"][0]["code"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_oci_errors_and_writes_get_405() {
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let layer = noise(21, 300 << 10);
    let layer_d = origins.push(&layer).await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [],
    }))
    .unwrap();
    let index_d = origins.push(&index).await;
    origins.tag("multi/arch", "v2", &index_d).await;
    let dir = tempfile::tempdir().unwrap();
    let a = TestAgent::start(agent_config(dir.path(), &origins, None)).await;
    let http = http();
    let url = |p: &str| format!("{}{p}", a.url);

    let res = http.get(url("/v2/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert_eq!(res.text().await.unwrap(), "{}");

    for (method, path) in [
        (reqwest::Method::POST, "/v2/a/blobs/uploads/".to_string()),
        (reqwest::Method::PUT, "/v2/a/manifests/latest".into()),
        (reqwest::Method::PATCH, "/v2/a/blobs/uploads/123".into()),
        (reqwest::Method::DELETE, format!("/v2/a/blobs/{layer_d}")),
        (reqwest::Method::DELETE, "/v2/a/manifests/v1".into()),
    ] {
        let res = http
            .request(method.clone(), url(&path))
            .body("ignored")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(code_of(res).await, "UNSUPPORTED");
    }
    // Nothing was written anywhere.
    assert!(!a.agent.cache().contains(&layer_d));

    let unknown = Digest::sha256_of(b"nobody pushed this");
    for (path, status, code) in [
        (
            "/v2/Upper/manifests/latest".to_string(),
            400,
            "NAME_INVALID",
        ),
        ("/v2/a//b/manifests/latest".into(), 400, "NAME_INVALID"),
        ("/v2/a/manifests/bad%20tag".into(), 400, "MANIFEST_INVALID"),
        ("/v2/a/manifests/sha256:abc".into(), 400, "MANIFEST_INVALID"),
        ("/v2/a/blobs/sha256:abc".into(), 400, "DIGEST_INVALID"),
        (
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".into(),
            400,
            "DIGEST_INVALID",
        ),
        ("/v2/a/blobs/latest".into(), 400, "DIGEST_INVALID"),
        (format!("/v2/a/blobs/{unknown}"), 404, "BLOB_UNKNOWN"),
        ("/v2/a/manifests/nope".into(), 404, "MANIFEST_UNKNOWN"),
        (
            format!("/v2/a/manifests/{unknown}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        // A layer is not a manifest.
        (
            format!("/v2/a/manifests/{layer_d}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        ("/v2/nobody/tags/list".into(), 404, "NAME_UNKNOWN"),
        ("/v2/a/layers/x".into(), 404, "UNSUPPORTED"),
        ("/v2/_catalog".into(), 404, "UNSUPPORTED"),
        ("/elsewhere".into(), 404, "UNSUPPORTED"),
    ] {
        let res = http.get(url(&path)).send().await.unwrap();
        assert_eq!(res.status(), status, "{path}");
        assert_eq!(res.headers()["content-type"], "application/json", "{path}");
        assert_eq!(code_of(res).await, code, "{path}");
    }

    // Ranges: one inside, one past the end.
    let blob = url(&format!("/v2/a/blobs/{layer_d}"));
    let res = http
        .get(&blob)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 10-19/{}", layer.len()).as_str()
    );
    assert!(res.bytes().await.unwrap() == layer[10..20]);
    let res = http
        .get(&blob)
        .header("range", "bytes=99999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 416);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes */{}", layer.len()).as_str()
    );
    assert_eq!(code_of(res).await, "RANGE_INVALID");

    // A manifest list passes through with its own media type; HEAD has no body.
    let res = http
        .head(url("/v2/multi/arch/manifests/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(
        res.headers()["content-length"],
        index.len().to_string().as_str()
    );
    assert_eq!(
        res.headers()["docker-content-digest"],
        index_d.to_string().as_str()
    );
    assert!(res.bytes().await.unwrap().is_empty());
    let res = http
        .get(url(&format!("/v2/multi/arch/manifests/{index_d}")))
        .send()
        .await
        .unwrap();
    assert!(res.bytes().await.unwrap() == index);

    let res = http
        .get(url("/v2/multi/arch/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tags: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        tags,
        serde_json::json!({"name": "multi/arch", "tags": ["v2"]})
    );

    assert_eq!(
        a.metric("shoal_agent_requests_total", &["route=\"write\""]),
        5.0
    );
    assert!(a.metric("shoal_agent_requests_total", &["status=\"4xx\""]) >= 20.0);

    a.stop().await;
    origins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_origins_are_a_503_not_a_client_error() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let mut config = agent_config(dir.path(), &origins, None);
    config.origins = vec![dead_url];
    let a = TestAgent::start(config).await;
    let res = http()
        .get(format!("{}/v2/a/manifests/latest", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(code_of(res).await, "UNAVAILABLE");
    a.stop().await;
    origins.shutdown().await;
}

/// Serves what a lying metainfo says: pieces of `data` under another blob's digest.
struct Lying(Metainfo);

impl MetainfoSource for Lying {
    fn metainfo(&self, digest: Digest) -> BoxFuture<'_, Option<Metainfo>> {
        let m = (digest == self.0.digest()).then(|| self.0.clone());
        Box::pin(async move { m })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_fails_its_digest_breaks_the_transfer_off() {
    let shutdown = CancellationToken::new();
    // Piece hashes of real bytes under another blob's digest: every piece verifies, the
    // whole does not.
    let data = noise(31, 2 << 20);
    let honest = Metainfo::from_bytes(&data);
    let wrong = Digest::sha256_of(b"what the client asked for");
    let hashes = (0..honest.piece_count())
        .map(|i| *honest.piece_hash(i).unwrap())
        .collect();
    let lying = Metainfo::new(wrong, honest.length(), honest.piece_length(), hashes).unwrap();

    // A seeder holding those bytes under the wrong name.
    let seed_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(seed_dir.path()).await.unwrap();
    let path = store.path_of(&wrong);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &data).unwrap();
    let seeder = Node::start(
        NodeConfig::origin(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        store,
        Arc::new(StaticDiscovery::new(Vec::new(), Duration::from_secs(1))),
        Some(Arc::new(Lying(lying.clone()))),
        &Registry::new(),
        shutdown.child_token(),
    )
    .unwrap();

    // A tracker that hands out the lying metainfo and the seeder.
    let peer = PeerInfo {
        complete: true,
        ..seeder.peer_info()
    };
    let encoded = lying.encode();
    let app = Router::new()
        .route(
            "/v1/announce",
            post(move || {
                let peer = peer.clone();
                async move {
                    axum::Json(AnnounceResponse {
                        peers: vec![peer],
                        interval_secs: 1,
                    })
                }
            }),
        )
        .route(
            "/v1/metainfo/{digest}",
            get(move |Path(_d): Path<String>| {
                let body = encoded.clone();
                async move { body }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tracker_url = format!("http://{}", listener.local_addr().unwrap());
    let token = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .unwrap();
    });

    let origins = TestCluster::builder(1).replicas(1).start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = agent_config(dir.path(), &origins, None);
    config.tracker = tracker_url;
    // Signed metainfo refuses this lie outright (`tests/metainfo_trust.rs`); an insecure
    // agent takes it, and the whole-blob check is then what stands between the lie and a
    // completed response.
    config.insecure = true;
    let a = TestAgent::start(config).await;
    let res = http()
        .get(format!("{}/v2/a/blobs/{wrong}", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-length"],
        data.len().to_string().as_str()
    );
    let mut body = res.bytes_stream();
    let mut received = 0;
    let mut broken = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => received += c.len(),
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    assert!(broken, "the transfer completed with unverified bytes");
    assert!(received < data.len());
    println!(
        "{received} of {} bytes were sent before the transfer broke off",
        data.len()
    );
    assert_eq!(a.metric("shoal_agent_responses_aborted_total", &[]), 1.0);
    assert!(!a.agent.cache().contains(&wrong));
    assert!(!a.agent.cache().store().contains(&wrong).await.unwrap());

    a.stop().await;
    origins.shutdown().await;
    shutdown.cancel();
    seeder.closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_also_answer_on_the_ops_address() {
    let origins = TestCluster::builder(1).replicas(1).start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), &origins, None);
    let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops_url = format!("http://{}", ops.local_addr().unwrap());
    let http_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", http_l.local_addr().unwrap());
    let agent = shoal_agent::Agent::start(
        config,
        shoal_agent::Listeners {
            http: http_l,
            peer: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            ops: Some(ops),
        },
        Registry::new(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let http = http();
    for base in [&ops_url, &api_url] {
        assert_eq!(
            http.get(format!("{base}/health"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            http.get(format!("{base}/ready"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("shoal_agent_cache_max_bytes"), "{text}");
        assert!(text.contains("shoal_agent_downloads_in_flight"), "{text}");
    }
    // The ops address serves nothing else.
    assert_eq!(
        http.get(format!("{ops_url}/v2/"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    agent.stop().await.unwrap();
    assert!(http.get(format!("{ops_url}/health")).send().await.is_err());
    origins.shutdown().await;
}
