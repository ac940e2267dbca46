//! Serving an axum router on a listener until shutdown, with the bounds every server holds
//! its clients to (the `[server]` table): a header-read timeout, a cap on connections that
//! makes room by closing the oldest idle one, a stall timeout on bodies and a cap on their
//! declared length.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::units::{ByteSize, duration};

/// What every HTTP server holds its clients to: the `[server]` table of every part's
/// config. A few thousand idle sockets, a header sent a byte a minute, a body that stops,
/// or a `Content-Length` of 16 EiB cost a server a bounded amount and nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Connections open at once. At the cap, a new connection closes the oldest one with
    /// no request in flight; while every one is busy, new ones wait in the listen backlog.
    /// Keep it below the process's open-file limit.
    pub max_connections: usize,
    /// A connection must send a request's whole header within this time of opening, or
    /// of its previous answer (the keep-alive idle time), or it is closed.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long is given up on.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// The largest request body. A larger declared `Content-Length` gets 413 before a byte
    /// of the body is read; a body without one is cut off at this size.
    pub max_body: ByteSize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 4096,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(120),
            max_body: ByteSize::gib(64),
        }
    }
}

impl ServerConfig {
    /// Pushes a problem for each bad value; `table` names the config table (`server`).
    pub fn validate(&self, table: &str, problems: &mut Vec<String>) {
        if self.max_connections == 0 {
            problems.push(format!("{table}.max_connections must be at least 1"));
        }
        if self.header_timeout < Duration::from_millis(100) {
            problems.push(format!("{table}.header_timeout must be at least 100ms"));
        }
        if self.body_timeout < Duration::from_millis(100) {
            problems.push(format!("{table}.body_timeout must be at least 100ms"));
        }
        if self.max_body.bytes() == 0 {
            problems.push(format!("{table}.max_body must be more than 0"));
        }
    }
}

/// Why a request body was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body sent nothing for {0:?}")]
    Stalled(Duration),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting, lets
/// requests in flight finish for up to `grace`, and returns. Every connection and request
/// is held to `limits`. Handlers can extract the caller's address with
/// `ConnectInfo<SocketAddr>`. Responses go out without Nagle's delay: registry and tracker
/// answers are small and callers keep their connections.
///
/// With `tls`, every connection is HTTPS: its handshake must finish within the header-read
/// timeout, and one that fails is logged and closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    grace: Duration,
    limits: ServerConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    let conns = Arc::new(Connections::new(limits.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let tasks = tokio_util::task::TaskTracker::new();
    let limits = Arc::new(limits);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most likely: an idle connection gives one back.
                tracing::warn!(%addr, error = %e, "cannot accept a connection");
                conns.evict_idle();
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        tokio::select! {
            () = conns.admit() => {}
            () = shutdown.cancelled() => break,
        }
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let slot = conns.open();
        let service = RequestService {
            app: app.clone(),
            peer,
            limits: limits.clone(),
            in_flight: slot.in_flight.clone(),
        };
        let builder = builder.clone();
        let tls = tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let handshake_timeout = limits.header_timeout;
        tasks.spawn(async move {
            let io = match tls {
                None => Either::Left(tcp),
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => Either::Right(s),
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "no TLS handshake in time");
                            return;
                        }
                    }
                }
            };
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = slot.close.cancelled() => {
                    if slot.in_flight.load(Ordering::Acquire) == 0 {
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    conns.close_all();
    tasks.close();
    tokio::select! {
        () = tasks.wait() => Ok(()),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(%addr, grace_s = grace.as_secs_f64(), "requests still in flight after the grace period; closing them");
            Ok(())
        }
    }
}

/// Errors of one connection that came and went before it was accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The open connections of one server, oldest first, and which of them are idle.
struct Connections {
    max: usize,
    table: std::sync::Mutex<ConnTable>,
    freed: tokio::sync::Notify,
}

#[derive(Default)]
struct ConnTable {
    next_id: u64,
    open: std::collections::BTreeMap<u64, ConnHandle>,
}

struct ConnHandle {
    in_flight: Arc<AtomicUsize>,
    close: CancellationToken,
}

/// One connection's place in [`Connections`], given back when the connection ends.
struct Slot {
    id: u64,
    conns: Arc<Connections>,
    in_flight: Arc<AtomicUsize>,
    close: CancellationToken,
}

impl Connections {
    fn new(max: usize) -> Self {
        Connections {
            max: max.max(1),
            table: Default::default(),
            freed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once there is room for one more connection, closing the oldest idle one
    /// when the table is full.
    async fn admit(&self) {
        loop {
            let freed = self.freed.notified();
            {
                let table = self.lock();
                if table.open.len() < self.max {
                    return;
                }
                let closing = table.open.values().any(|c| c.close.is_cancelled());
                drop(table);
                if !closing {
                    self.evict_idle();
                }
            }
            freed.await;
        }
    }

    /// Closes the oldest connection with no request in flight; false if there is none.
    fn evict_idle(&self) -> bool {
        let table = self.lock();
        let idle = table
            .open
            .values()
            .find(|c| !c.close.is_cancelled() && c.in_flight.load(Ordering::Acquire) == 0);
        match idle {
            Some(c) => {
                c.close.cancel();
                true
            }
            None => false,
        }
    }

    fn open(self: &Arc<Self>) -> Slot {
        let mut table = self.lock();
        let id = table.next_id;
        table.next_id += 1;
        let handle = ConnHandle {
            in_flight: Arc::new(AtomicUsize::new(0)),
            close: CancellationToken::new(),
        };
        let slot = Slot {
            id,
            conns: self.clone(),
            in_flight: handle.in_flight.clone(),
            close: handle.close.clone(),
        };
        table.open.insert(id, handle);
        slot
    }

    fn close_all(&self) {
        for c in self.lock().open.values() {
            c.close.cancel();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().open.remove(&self.id);
        self.conns.freed.notify_one();
    }
}

/// Hands each request of one connection to the router, with the caller's address, the
/// body bounded by [`ServerConfig`], and the request counted as in flight until its
/// answer is sent.
#[derive(Clone)]
struct RequestService {
    app: Router,
    peer: std::net::SocketAddr,
    limits: Arc<ServerConfig>,
    in_flight: Arc<AtomicUsize>,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for RequestService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send + 'static>,
    >;

    fn call(&self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let guard = InFlight::new(self.in_flight.clone());
        let max_body = self.limits.max_body.bytes();
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            let res = crate::error::ApiError::new(
                crate::error::ErrorCode::SizeInvalid,
                format!("the request body is larger than the {max_body} bytes this server takes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            .into_response();
            return Box::pin(async move { Ok(guard.hold(res)) });
        }
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let req = req.map(|body| {
            axum::body::Body::new(BoundedBody {
                inner: body,
                stall: self.limits.body_timeout,
                timer: None,
                waiting: false,
                left: max_body,
            })
        });
        let app = self.app.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            let res = match app.oneshot(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            };
            Ok(guard.hold(res))
        })
    }
}

/// Counts one request as in flight on its connection until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(counter)
    }

    /// Keeps the request in flight until `res`'s body has been sent or dropped.
    fn hold(self, res: Response) -> Response {
        res.map(|inner| {
            axum::body::Body::new(HeldBody {
                inner,
                _guard: self,
            })
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct HeldBody {
    inner: axum::body::Body,
    _guard: InFlight,
}

impl hyper::body::Body for HeldBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails when it sends nothing for `stall` while someone waits on it,
/// or when it grows past `left` bytes.
struct BoundedBody {
    inner: hyper::body::Incoming,
    stall: Duration,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
    left: u64,
}

impl hyper::body::Body for BoundedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if !this.waiting {
            // The stall clock runs only while the reader waits, so a handler that pauses
            // between reads is not taken for a stalled client.
            let deadline = tokio::time::Instant::now() + this.stall;
            match &mut this.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            this.waiting = true;
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.left {
                        return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge(this.left)))));
                    }
                    this.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let stalled = this
                    .timer
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if stalled {
                    Poll::Ready(Some(Err(Box::new(BodyError::Stalled(this.stall)))))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Readiness, ops_router};
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn serve_stops_on_cancel() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let app: Router = ops_router(prometheus::Registry::new(), Readiness::default());
        let server = tokio::spawn(serve(
            listener,
            app,
            token.clone(),
            Duration::from_secs(5),
            ServerConfig::default(),
            None,
        ));
        let body = crate::tls::client()
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok\n");
        token.cancel();
        server.await.unwrap().unwrap();
        assert!(
            crate::tls::client()
                .get(format!("http://{addr}/health"))
                .send()
                .await
                .is_err()
        );
    }

    /// Serves a router with one echoing route under `limits`; returns its address.
    async fn start(limits: ServerConfig) -> (std::net::SocketAddr, CancellationToken) {
        use axum::routing::put;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let app: Router = ops_router(prometheus::Registry::new(), Readiness::default()).route(
            "/echo",
            put(|body: axum::body::Body| async move {
                match body.collect().await {
                    Ok(b) => (StatusCode::OK, b.to_bytes()).into_response(),
                    Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                }
            }),
        );
        tokio::spawn(serve(
            listener,
            app,
            token.clone(),
            Duration::from_secs(1),
            limits,
            None,
        ));
        (addr, token)
    }

    /// Reads until the server closes; what it sent.
    async fn read_to_close(s: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
            Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn a_connection_that_sends_no_header_is_closed_after_the_header_timeout() {
        use tokio::io::AsyncWriteExt;
        let limits = ServerConfig {
            header_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        };
        let (addr, token) = start(limits).await;
        let started = tokio::time::Instant::now();
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /health HTTP/1.1\r\nHo").await.unwrap();
        assert!(
            read_to_close(&mut idle, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert!(
            read_to_close(&mut slow, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        // A request that comes in time is answered.
        let body = crate::tls::client()
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok\n");
        token.cancel();
    }

    #[tokio::test]
    async fn at_the_connection_cap_the_oldest_idle_connection_makes_room() {
        let limits = ServerConfig {
            max_connections: 3,
            ..ServerConfig::default()
        };
        let (addr, token) = start(limits).await;
        let mut idle = Vec::new();
        for _ in 0..10 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let res = tokio::time::timeout(
            Duration::from_secs(1),
            crate::tls::client()
                .get(format!("http://{addr}/health"))
                .send(),
        )
        .await
        .expect("answered within a second")
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // All but the newest two idle connections were closed to make room.
        let mut closed = 0;
        for s in &mut idle {
            if read_to_close(s, Duration::from_millis(200)).await.is_some() {
                closed += 1;
            }
        }
        assert!(closed >= 8, "{closed} of 10 idle connections closed");
        token.cancel();
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_gets_413_before_the_body() {
        use tokio::io::AsyncWriteExt;
        let limits = ServerConfig {
            max_body: ByteSize(1000),
            ..ServerConfig::default()
        };
        let (addr, token) = start(limits).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551612\r\n\r\n",
        )
        .await
        .unwrap();
        let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("SIZE_INVALID"), "{answer}");
        // A body without a length is cut off at the cap.
        let client = crate::tls::client();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(vec![b'a'; 800]), Ok(vec![b'a'; 800])];
        let res = client
            .put(format!("http://{addr}/echo"))
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await;
        // The refusal, or a connection closed on the rest of the body: never the echo.
        if let Ok(res) = res {
            assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        }
        let res = client
            .put(format!("http://{addr}/echo"))
            .body(vec![b'a'; 1000])
            .send()
            .await
            .unwrap();
        assert_eq!(res.bytes().await.unwrap().len(), 1000);
        token.cancel();
    }

    #[tokio::test]
    async fn a_body_that_stalls_is_given_up_on() {
        use tokio::io::AsyncWriteExt;
        let limits = ServerConfig {
            body_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        };
        let (addr, token) = start(limits).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap();
        let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("sent nothing"), "{answer}");
        token.cancel();
    }
}
