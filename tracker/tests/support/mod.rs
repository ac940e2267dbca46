//! A fake origin and small helpers for the tracker's tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_core::origin_client::OriginInfo;
use shoal_core::peer::PeerId;
use shoal_core::{ApiError, Digest, ErrorCode, Metainfo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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

/// A tracker serving on a real socket until dropped.
pub struct RunningTracker {
    pub addr: SocketAddr,
    pub url: String,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningTracker {
    pub async fn start(config: shoal_tracker::Config) -> RunningTracker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(shoal_tracker::run(
            config,
            listener,
            prometheus::Registry::new(),
            stop.clone(),
        ));
        let task = tokio::spawn(async move { task.await.unwrap().unwrap() });
        let t = RunningTracker {
            addr,
            url: format!("http://{addr}"),
            stop,
            task: Some(task),
        };
        let http = authed();
        let ready = format!("{}/ready", t.url);
        wait_until("the tracker is ready", || {
            let http = http.clone();
            let ready = ready.clone();
            async move { matches!(http.get(&ready).send().await, Ok(r) if r.status().is_success()) }
        })
        .await;
        t
    }

    /// Stops the tracker and waits for it to finish.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for RunningTracker {
    fn drop(&mut self) {
        self.stop.cancel();
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
    reqwest::Client::builder()
        .local_address(source)
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Polls `condition` until it holds, failing the test after ten seconds.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
