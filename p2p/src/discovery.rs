//! Peer discovery: how a node learns who else holds a blob. A small trait, so that the
//! tracker client here and a gossip/DHT one later are interchangeable; and a fixed list for
//! tests and tiny setups.
//!
//! A tracker is another process on the network, and whoever answers in its place can say
//! anything: [`TrackerDiscovery`] reads a bounded answer and [`Peers::clamped`] bounds what
//! it says (interval, peer count, addresses), so no answer can stall, flood or crash a node.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use shoal_core::Digest;
use shoal_core::peer::{AnnounceRequest, AnnounceResponse, PeerId, PeerInfo};

/// What a node says about itself for one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub digest: Digest,
    pub peer_id: PeerId,
    /// The peer-protocol port this node listens on.
    pub port: u16,
    /// An address to be dialled at instead of the one the tracker sees.
    pub addr: Option<IpAddr>,
    /// Whether this node holds the whole blob.
    pub complete: bool,
}

/// Peers of a blob, and when to ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    pub peers: Vec<PeerInfo>,
    pub interval: Duration,
}

/// Announce no more often than this, whatever a tracker says.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Announce at least this often, whatever a tracker says: a node told to wait for ever
/// would never learn new peers (and `now + interval` must stay a time).
pub const MAX_INTERVAL: Duration = Duration::from_secs(600);
/// Peers kept from one answer; a tracker hands out 50 by default and at most 200.
pub const MAX_PEERS: usize = 200;
/// The longest announce answer read: [`MAX_PEERS`] entries take about 25 KiB.
pub const MAX_ANSWER_BYTES: usize = 256 << 10;

impl Peers {
    /// What a node may act on from an answer: the interval within
    /// [`MIN_INTERVAL`]..=[`MAX_INTERVAL`], at most [`MAX_PEERS`] peers, and none at an
    /// address nobody can dial (port 0, unspecified, multicast, broadcast). Order is kept.
    pub fn clamped(mut self) -> Peers {
        self.interval = self.interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        self.peers.retain(|p| dialable(&p.addr));
        self.peers.truncate(MAX_PEERS);
        self
    }
}

/// Whether a node can dial `addr` at all (loopback is fine: a cluster on one machine).
pub fn dialable(addr: &std::net::SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("tracker request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("tracker answered {status}: {body}")]
    Status {
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("tracker's answer is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("tracker's answer is not an announce answer: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The `[tls]` material cannot make a client.
    #[error("tracker client TLS: {0}")]
    Tls(String),
}

/// A way to find the peers of a blob.
pub trait Discovery: Send + Sync + 'static {
    fn announce(&self, announce: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>>;
}

impl<D: Discovery + ?Sized> Discovery for Arc<D> {
    fn announce(&self, announce: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>> {
        (**self).announce(announce)
    }
}

/// The tracker client: `POST {base}/v1/announce` with an [`AnnounceRequest`], answered by an
/// [`AnnounceResponse`] (see `tracker/API.md`).
#[derive(Clone)]
pub struct TrackerDiscovery {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl std::fmt::Debug for TrackerDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerDiscovery")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Error bodies from a tracker are kept in errors up to this many bytes.
const MAX_ERROR_BODY: usize = 512;

impl TrackerDiscovery {
    /// A client of the tracker at `base` (`https://tracker:7070`), with a request timeout;
    /// over HTTPS verified against `tls.ca` when `tls` is given, plain HTTP otherwise.
    pub fn new(
        base: &str,
        timeout: Duration,
        tls: Option<&shoal_core::tls::Tls>,
    ) -> Result<Self, DiscoveryError> {
        let client = shoal_core::tls::client_builder(tls)
            .map_err(|e| DiscoveryError::Tls(e.to_string()))?
            .timeout(timeout)
            .build()?;
        Ok(TrackerDiscovery {
            client,
            url: format!("{}/v1/announce", base.trim_end_matches('/')),
            token: None,
        })
    }

    /// Presents `token` (the cluster's read token) as `Authorization: Bearer` on every
    /// announce; `None` or empty: no header.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }
}

/// Reads at most `max` bytes of a body; `Err(TooLong)` past that, whatever the
/// `Content-Length` said.
pub async fn read_bounded(
    res: &mut reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, DiscoveryError> {
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        if out.len() + chunk.len() > max {
            return Err(DiscoveryError::TooLong { max });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

impl Discovery for TrackerDiscovery {
    fn announce(&self, a: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>> {
        Box::pin(async move {
            let req = AnnounceRequest {
                digest: a.digest,
                peer_id: a.peer_id,
                port: a.port,
                complete: a.complete,
                addr: a.addr,
            };
            let mut post = self.client.post(&self.url).json(&req);
            if let Some(t) = &self.token {
                post = post.bearer_auth(t);
            }
            let mut res = post.send().await?;
            let status = res.status();
            if !status.is_success() {
                // The first bytes say what went wrong; the rest is not read.
                let mut body = Vec::new();
                while body.len() < MAX_ERROR_BODY {
                    match res.chunk().await {
                        Ok(Some(c)) => body.extend_from_slice(&c),
                        _ => break,
                    }
                }
                body.truncate(MAX_ERROR_BODY);
                return Err(DiscoveryError::Status {
                    status,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
            }
            let body = read_bounded(&mut res, MAX_ANSWER_BYTES).await?;
            let r: AnnounceResponse = serde_json::from_slice(&body)?;
            Ok(Peers {
                peers: r.peers,
                interval: Duration::from_secs(r.interval_secs.min(MAX_INTERVAL.as_secs())),
            }
            .clamped())
        })
    }
}

/// A fixed list of peers, for tests and setups without a tracker.
#[derive(Debug, Clone, Default)]
pub struct StaticDiscovery {
    peers: Arc<std::sync::RwLock<Vec<PeerInfo>>>,
    interval: Duration,
}

impl StaticDiscovery {
    pub fn new(peers: Vec<PeerInfo>, interval: Duration) -> Self {
        StaticDiscovery {
            peers: Arc::new(std::sync::RwLock::new(peers)),
            interval,
        }
    }

    /// Adds a peer to the list (a node started later in a test).
    pub fn add(&self, peer: PeerInfo) {
        self.peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(peer);
    }
}

impl Discovery for StaticDiscovery {
    fn announce(&self, a: Announce) -> BoxFuture<'_, Result<Peers, DiscoveryError>> {
        let peers = self
            .peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|p| p.peer_id != a.peer_id)
            .cloned()
            .collect();
        let interval = self.interval;
        Box::pin(async move { Ok(Peers { peers, interval }) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server that records the request and answers with `status` and `body`.
    async fn serve_once(
        status: &'static str,
        body: String,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        serve_raw(head.into_bytes(), body.into_bytes()).await
    }

    /// A one-shot HTTP server that records the request and answers with the bytes of `head`
    /// then `body`, whatever they say, and closes.
    async fn serve_raw(head: Vec<u8>, body: Vec<u8>) -> (String, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then as much body as Content-Length says.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            // The client may hang up before reading everything: that is its right.
            let _ = s.write_all(&head).await;
            let _ = s.write_all(&body).await;
            String::from_utf8_lossy(&req).to_string()
        });
        (format!("http://{addr}"), task)
    }

    fn announce() -> Announce {
        Announce {
            digest: Digest::sha256_of(b"blob"),
            peer_id: PeerId([3; 20]),
            port: 7001,
            addr: None,
            complete: false,
        }
    }

    #[tokio::test]
    async fn tracker_client_posts_and_parses() {
        let peer = PeerInfo {
            peer_id: PeerId([9; 20]),
            addr: SocketAddr::from(([10, 0, 0, 9], 7001)),
            complete: true,
            origin: true,
        };
        let body = serde_json::to_string(&AnnounceResponse {
            peers: vec![peer.clone()],
            interval_secs: 3,
        })
        .unwrap();
        let (base, server) = serve_once("200 OK", body).await;
        let t = TrackerDiscovery::new(&format!("{base}/"), Duration::from_secs(5), None).unwrap();
        let got = t.announce(announce()).await.unwrap();
        assert_eq!(got.peers, vec![peer]);
        assert_eq!(got.interval, Duration::from_secs(3));
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /v1/announce HTTP/1.1"), "{req}");
        let json = &req[req.find("\r\n\r\n").unwrap() + 4..];
        let sent: AnnounceRequest = serde_json::from_str(json).unwrap();
        assert_eq!(sent.peer_id, PeerId([3; 20]));
        assert_eq!(sent.port, 7001);
        assert!(!sent.complete);
    }

    #[tokio::test]
    async fn tracker_errors_are_reported() {
        let (base, _server) = serve_once(
            "429 Too Many Requests",
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.into(),
        )
        .await;
        let t = TrackerDiscovery::new(&base, Duration::from_secs(5), None).unwrap();
        match t.announce(announce()).await {
            Err(DiscoveryError::Status { status, body }) => {
                assert_eq!(status.as_u16(), 429);
                assert!(body.contains("slow down"));
            }
            other => panic!("{other:?}"),
        }
    }

    fn peer(i: u32, addr: SocketAddr) -> PeerInfo {
        let mut id = [0u8; 20];
        id[..4].copy_from_slice(&i.to_be_bytes());
        PeerInfo {
            peer_id: PeerId(id),
            addr,
            complete: false,
            origin: false,
        }
    }

    #[tokio::test]
    async fn a_hostile_answer_with_an_endless_interval_and_absurd_peer_counts_is_clamped() {
        let mut peers = vec![
            peer(0, "0.0.0.0:7001".parse().unwrap()),
            peer(1, "10.0.0.1:0".parse().unwrap()),
            peer(2, "224.0.0.1:7001".parse().unwrap()),
            peer(3, "255.255.255.255:7001".parse().unwrap()),
        ];
        peers.extend((10..2010).map(|i| {
            peer(
                i,
                SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 7001)),
            )
        }));
        let body = serde_json::to_string(&AnnounceResponse {
            peers,
            interval_secs: u64::MAX,
        })
        .unwrap();
        assert!(body.len() < MAX_ANSWER_BYTES);
        let (base, server) = serve_once("200 OK", body).await;
        let t = TrackerDiscovery::new(&base, Duration::from_secs(5), None)
            .unwrap()
            .with_token(Some("read-token-0123456789".into()));
        let got = t.announce(announce()).await.unwrap();
        assert_eq!(got.interval, MAX_INTERVAL);
        assert_eq!(got.peers.len(), MAX_PEERS);
        assert!(got.peers.iter().all(|p| dialable(&p.addr)));
        assert_eq!(
            got.peers[0].addr,
            "10.1.0.10:7001".parse().unwrap(),
            "order is kept"
        );
        // The read token went with the announce.
        let req = server.await.unwrap().to_ascii_lowercase();
        assert!(
            req.contains("authorization: bearer read-token-0123456789"),
            "{req}"
        );

        // A zero interval is no reason to hammer the tracker either.
        let body = serde_json::to_string(&AnnounceResponse {
            peers: vec![],
            interval_secs: 0,
        })
        .unwrap();
        let (base, _server) = serve_once("200 OK", body).await;
        let t = TrackerDiscovery::new(&base, Duration::from_secs(5), None).unwrap();
        assert_eq!(t.announce(announce()).await.unwrap().interval, MIN_INTERVAL);
    }

    #[tokio::test]
    async fn answers_with_lying_or_endless_lengths_are_errors_not_allocations() {
        let head = |len: &str| {
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n").into_bytes()
        };
        let t = |base: &str| TrackerDiscovery::new(base, Duration::from_secs(5), None).unwrap();
        // Far more than an answer can be, honestly declared.
        let huge = vec![b' '; MAX_ANSWER_BYTES + 1];
        let (base, _s) = serve_raw(head(&huge.len().to_string()), huge).await;
        assert!(matches!(
            t(&base).announce(announce()).await,
            Err(DiscoveryError::TooLong { .. })
        ));
        // A length of 2^63 - 1 with a few bytes behind it.
        let (base, _s) = serve_raw(head("9223372036854775807"), b"{}".to_vec()).await;
        assert!(t(&base).announce(announce()).await.is_err());
        // A length shorter than the body: the answer is cut and does not parse.
        let body = br#"{"peers":[],"interval_secs":3}"#.to_vec();
        let (base, _s) = serve_raw(head("5"), body).await;
        assert!(matches!(
            t(&base).announce(announce()).await,
            Err(DiscoveryError::Malformed(_))
        ));
        // No length at all and an endless body: read up to the bound, no further.
        let endless =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
                .as_bytes()
                .to_vec();
        let (base, _s) = serve_raw(endless, vec![b'['; 4 * MAX_ANSWER_BYTES]).await;
        assert!(matches!(
            t(&base).announce(announce()).await,
            Err(DiscoveryError::TooLong { .. })
        ));
        // An error with an endless body keeps only its first bytes.
        let err_head = b"HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\n\r\n".to_vec();
        let (base, _s) = serve_raw(err_head, vec![b'x'; 4 * MAX_ANSWER_BYTES]).await;
        match t(&base).announce(announce()).await {
            Err(DiscoveryError::Status { status, body }) => {
                assert_eq!(status.as_u16(), 500);
                assert!(body.len() <= MAX_ERROR_BODY);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn static_list_leaves_out_the_caller() {
        let me = PeerInfo {
            peer_id: PeerId([3; 20]),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            complete: false,
            origin: false,
        };
        let other = PeerInfo {
            peer_id: PeerId([4; 20]),
            ..me.clone()
        };
        let d = StaticDiscovery::new(vec![me], Duration::from_secs(1));
        d.add(other.clone());
        assert_eq!(d.announce(announce()).await.unwrap().peers, vec![other]);
    }
}
