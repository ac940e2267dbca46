//! What the tracker's tests share: a fake origin, clients with and without the read token,
//! and requests to the router in process or to a tracker on a real socket.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use shoal_core::error::ErrorEnvelope;
use shoal_core::origin_client::OriginInfo;
use shoal_core::peer::{AnnounceRequest, AnnounceResponse, PeerId};
use shoal_core::{ApiError, Digest, ErrorCode, Metainfo};
use shoal_tracker::App;
use shoal_tracker::testing::{TestTracker, test_config};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// An origin that serves `/v1/info` and `/v1/blobs/<d>/metainfo` (origin/API.md) and counts
/// metainfo requests. While `hold` is set, metainfo answers wait for it to clear.
pub struct FakeOrigin {
    pub url: String,
    pub peer_id: PeerId,
    pub peer_port: u16,
    pub metainfo_requests: Arc<AtomicUsize>,
    /// The `Authorization` header of each metainfo request, in order.
    pub metainfo_auth: Arc<Mutex<Vec<Option<String>>>>,
    hold: watch::Sender<bool>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct OriginState {
    info: OriginInfo,
    blobs: Arc<HashMap<Digest, Metainfo>>,
    requests: Arc<AtomicUsize>,
    auth: Arc<Mutex<Vec<Option<String>>>>,
    hold: watch::Receiver<bool>,
}

impl FakeOrigin {
    pub async fn start(peer_port: u16, blobs: &[Metainfo]) -> FakeOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let peer_id = PeerId::random();
        let (hold, hold_rx) = watch::channel(false);
        let requests = Arc::new(AtomicUsize::new(0));
        let auth = Arc::new(Mutex::new(Vec::new()));
        let state = OriginState {
            info: OriginInfo {
                member: url.clone(),
                peer_id,
                peer_port,
            },
            blobs: Arc::new(blobs.iter().map(|m| (m.digest(), m.clone())).collect()),
            requests: Arc::clone(&requests),
            auth: Arc::clone(&auth),
            hold: hold_rx,
        };
        let app = Router::new()
            .route(
                "/v1/info",
                get(|State(s): State<OriginState>| async move { axum::Json(s.info) }),
            )
            .route("/v1/blobs/{digest}/metainfo", get(metainfo))
            .with_state(state);
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
        FakeOrigin {
            url,
            peer_id,
            peer_port,
            metainfo_requests: requests,
            metainfo_auth: auth,
            hold,
            stop,
        }
    }

    pub fn hold(&self, on: bool) {
        self.hold.send_replace(on);
    }

    pub fn requests(&self) -> usize {
        self.metainfo_requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeOrigin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn metainfo(
    State(mut s): State<OriginState>,
    Path(digest): Path<String>,
    headers: http::HeaderMap,
) -> Response {
    s.auth.lock().unwrap().push(
        headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned()),
    );
    s.requests.fetch_add(1, Ordering::SeqCst);
    let _ = s.hold.wait_for(|held| !held).await;
    let Ok(digest) = digest.parse::<Digest>() else {
        return ApiError::new(ErrorCode::DigestInvalid, "bad digest").into_response();
    };
    match s.blobs.get(&digest) {
        Some(m) => (
            [(http::header::CONTENT_TYPE, "application/octet-stream")],
            m.encode(),
        )
            .into_response(),
        None => ApiError::new(ErrorCode::BlobUnknown, "blob unknown").into_response(),
    }
}

/// The read token of the trackers these tests start.
pub const TOKEN: &str = "read-token-for-the-tracker-tests";

/// A client that presents [`TOKEN`].
pub fn authed() -> reqwest::Client {
    client_from(None, Some(TOKEN))
}

/// A client whose connections come from `source` (any 127.x.y.z is this host's loopback),
/// presenting `token` if given.
pub fn client_from(source: Option<std::net::IpAddr>, token: Option<&str>) -> reqwest::Client {
    let mut headers = http::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
    }
    shoal_core::tls::plain_client_builder()
        .local_address(source)
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The config of the trackers these tests start: `origins`, asking for [`TOKEN`].
pub fn config(origins: Vec<String>) -> shoal_tracker::Config {
    test_config(origins, TOKEN)
}

/// A tracker whose origins are never asked (no background tasks run unless a test starts
/// them), for in-process tests of the announce path.
pub fn offline(config_edit: impl FnOnce(&mut shoal_tracker::Config)) -> App {
    let mut c = config(vec!["http://127.0.0.1:9".into()]);
    config_edit(&mut c);
    App::new(&c, prometheus::Registry::new()).unwrap()
}

pub async fn call(app: &Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (
        status,
        headers,
        res.into_body().collect().await.unwrap().to_bytes(),
    )
}

pub fn post_from(source: SocketAddr, body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::post("/v1/announce")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(body.into())
        .unwrap();
    req.extensions_mut().insert(ConnectInfo(source));
    req
}

pub fn announce_req(digest: Digest, id: PeerId, port: u16, complete: bool) -> AnnounceRequest {
    AnnounceRequest {
        digest,
        peer_id: id,
        port,
        complete,
        addr: None,
    }
}

pub async fn announce_in(
    app: &Router,
    source: SocketAddr,
    req: &AnnounceRequest,
) -> AnnounceResponse {
    let (status, _, body) = call(app, post_from(source, serde_json::to_vec(req).unwrap())).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

pub fn error_code(body: &[u8]) -> ErrorCode {
    let env: ErrorEnvelope = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "not an error envelope ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    env.errors[0].code
}

pub fn src(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 40000))
}

/// An announce to a tracker on a real socket, from `http`'s source address.
pub async fn announce_over(
    http: &reqwest::Client,
    tracker: &TestTracker,
    req: &AnnounceRequest,
) -> reqwest::Response {
    http.post(format!("{}/v1/announce", tracker.url))
        .json(req)
        .send()
        .await
        .unwrap()
}
