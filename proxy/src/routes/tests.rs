//! Router tests: the whole app in process (`oneshot`), over an origin on a real socket. The
//! harness is here, the tests by topic in the modules below.

mod edges;
mod manifests;
mod uploads;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shoal_core::digest::Digest;
use shoal_core::telemetry::Readiness;
use shoal_core::testing::{metric_sum, metrics_text};
use shoal_origin::testing::TestCluster;
use tower::ServiceExt;

use crate::config::Config;
use crate::manifest::{OCI_INDEX, OCI_MANIFEST};
use crate::state::AppState;
use crate::testing::test_config;

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
    let mut config = test_config(&origins, spool.path());
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
        let r = self.finish(&loc, &d, Body::empty()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        d
    }

    /// The final `PUT` of the upload session at `loc`, naming `digest`, with `body`.
    async fn finish(&self, loc: &str, digest: &Digest, body: Body) -> Res {
        self.req(Method::PUT, &format!("{loc}?digest={digest}"), &[], body)
            .await
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
        metrics_text(&self.registry)
    }

    /// The blob as the origins have it, or `None` if they do not.
    async fn stored(&self, d: &Digest) -> Option<Bytes> {
        match self.origins.client().get_blob_bytes(d, 1 << 30).await {
            Ok(b) => Some(b),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("reading {d} from the origin: {e}"),
        }
    }

    /// Blob bytes the origin has received, which it counts from the start.
    fn origin_received(&self) -> f64 {
        let text = metrics_text(self.origins.registry(0));
        let series = "shoal_origin_received_bytes_total{proto=\"http\"}";
        assert!(text.contains(series), "{series} missing from:\n{text}");
        metric_sum(
            &text,
            "shoal_origin_received_bytes_total",
            &["proto=\"http\""],
        )
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
